"""Pure pop logic: the receipt handle codec, checkpoint/ack records, revive decisions and
the order table (broker/pop/checkpoint.py, broker/pop/orderly.py, protocol/pop.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from broker.pop.checkpoint import Ack, CheckPoint, ReviveQueue
from broker.pop.orderly import OrderTable
from protocol.errors import MalformedBody
from protocol.pop import (
    MAX_BATCH_ACK_BITS,
    BatchAckEntry,
    MalformedHandle,
    PopMessageResponseHeader,
    ReceiptHandle,
    decode_batch_ack_body,
    encode_batch_ack_body,
    encode_msg_offsets,
    encode_start_offsets,
    handles_for,
    parse_msg_offsets,
    parse_start_offsets,
    pop_retry_topic,
    real_topic,
    retry_mark,
)

longs = st.integers(0, 2**63 - 1)
ints = st.integers(0, 2**31 - 1)
names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=20)


@given(longs, longs, longs, ints, st.sampled_from(["0", "1", "2"]), names, ints, longs)
def test_receipt_handle_round_trips(
    ck: int, pop: int, inv: int, rq: int, retry: str, broker: str, qid: int, qo: int
) -> None:
    handle = ReceiptHandle(
        ck_offset=ck,
        pop_time_ms=pop,
        invisible_time_ms=inv,
        revive_qid=rq,
        retry=retry,
        broker_name=broker,
        queue_id=qid,
        queue_offset=qo,
    )
    assert ReceiptHandle.decode(handle.encode()) == handle


@given(st.text(max_size=80))
def test_any_text_decodes_or_raises_malformed_handle(text: str) -> None:
    try:
        handle = ReceiptHandle.decode(text, offset=3)
    except MalformedHandle:
        return
    assert ReceiptHandle.decode(handle.encode()) == handle


def test_handle_parts_are_range_checked() -> None:
    for bad in (
        "1 2 3 4 0 b 0",  # 7 parts without an offset
        "1 2 3 4 9 b 0 5",  # retry mark
        "1 2 3 99999999999 0 b 0 5",  # revive qid past int32
        "-1 2 3 4 0 b 0 5",
        "1 2 3 4 0  0 5",  # empty broker name
        "1 2 3 4 0 b 0 1_0",
    ):
        with pytest.raises(MalformedHandle):
            ReceiptHandle.decode(bad)
    assert ReceiptHandle.decode("1 2 3 4 0 b 0", offset=7).queue_offset == 7


def test_handles_from_a_pop_answer_as_the_java_client_builds_them() -> None:
    retry = pop_retry_topic("T", "G")
    header = PopMessageResponseHeader(
        pop_time=1000,
        invisible_time=30000,
        revive_qid=3,
        rest_num=0,
        start_offset_info=encode_start_offsets([("T", 1, 10), (retry, 0, 4)]),
        msg_offset_info=encode_msg_offsets([("T", 1, [10, 12]), (retry, 0, [4])]),
    )
    assert header.start_offset_info == "0 1 10;1 0 4"
    assert header.msg_offset_info == "0 1 10,12;1 0 4"
    assert parse_start_offsets(header.start_offset_info) == {"0@1": 10, "1@0": 4}
    assert parse_msg_offsets(header.msg_offset_info) == {"0@1": [10, 12], "1@0": [4]}
    handles = handles_for([("T", 1, 12), (retry, 0, 4)], header, "broker-a")
    assert [h.encode() for h in handles] == [
        "10 1000 30000 3 0 broker-a 1 12",
        "4 1000 30000 3 1 broker-a 0 4",
    ]
    assert real_topic("T", "G", handles[1].retry) == retry == "%RETRY%G_T"
    assert retry_mark("%RETRY%G+T") == "2"
    with pytest.raises(MalformedHandle):
        parse_start_offsets("0 1 2;0 1 3")


def ck(offsets: list[int], pop: int = 1000, inv: int = 5000) -> CheckPoint:
    return CheckPoint.of(
        group="G", topic="T", queue_id=0, offsets=offsets, pop_time_ms=pop, invisible_time_ms=inv
    )


def ack(point: CheckPoint, offset: int) -> Ack:
    return Ack(
        group=point.group,
        topic=point.topic,
        queue_id=point.queue_id,
        start_offset=point.start_offset,
        pop_time_ms=point.pop_time_ms,
        ack_offsets=(offset,),
    )


def test_checkpoint_and_ack_round_trip_with_rocketmq_keys() -> None:
    point = ck([5, 7, 9])
    assert CheckPoint.from_json(point.to_json()) == point
    assert b'"so":5' in point.to_json() and b'"d":[0,2,4]' in point.to_json()
    a = ack(point, 7)
    assert Ack.from_json(a.to_json()) == a
    for bad in (
        b"[]",
        b"{",
        b'{"so":1}',
        b'{"so":1,"d":[2,1],"c":"G","t":"T","q":0,"pt":1,"it":1}',
    ):
        with pytest.raises(MalformedBody):
            CheckPoint.from_json(bad)


def test_revive_queue_closes_fully_acked_and_revives_the_rest() -> None:
    q = ReviveQueue()
    one, two = ck([0, 1, 2]), ck([3, 4], pop=2000)
    q.add_checkpoint(0, one)
    q.add_checkpoint(1, two)
    q.add_ack(2, ack(one, 1))
    for o in (3, 4):
        q.add_ack(3 + o - 3, ack(two, o))
    assert q.closed_acked == 1 and list(q.open) == [one.key]
    assert q.commit_offset() == 0  # the open checkpoint is at revive offset 0
    assert q.due(5999) == []
    (due,) = q.due(6000)
    assert due.unacked == (0, 2)
    q.finish(one.key)
    assert q.open == {} and q.commit_offset() == q.read_offset == 5
    # An ack of a finished checkpoint changes nothing.
    q.add_ack(5, ack(one, 0))
    assert q.open == {} and q.read_offset == 6


def test_revive_queue_read_again_from_its_commit_offset_knows_the_same() -> None:
    """What a restart does: read from the committed offset, get the same open set."""
    log = [("ck", ck([0, 1])), ("ck", ck([2], pop=3000)), ("ack", ack(ck([0, 1]), 0))]
    first = ReviveQueue()
    for i, (kind, value) in enumerate(log):
        if kind == "ck":
            assert isinstance(value, CheckPoint)
            first.add_checkpoint(i, value)
        else:
            assert isinstance(value, Ack)
            first.add_ack(i, value)
    again = ReviveQueue(read_offset=first.commit_offset())
    for i, (_kind, value) in enumerate(log[first.commit_offset() :], start=first.commit_offset()):
        if isinstance(value, CheckPoint):
            again.add_checkpoint(i, value)
        else:
            again.add_ack(i, value)
    assert {k: p.unacked for k, p in again.open.items()} == {
        k: p.unacked for k, p in first.open.items()
    }


def test_order_table_holds_until_acked_and_counts_attempts() -> None:
    t = OrderTable()
    key = ("G", "T", 0)
    assert t.popped(key, [3, 4], next_offset=6, pop_time_ms=100, invisible_time_ms=50) == {
        3: 1,
        4: 1,
    }
    assert t.held(key, 149) and not t.held(key, 150)
    assert t.popped(key, [3, 4], next_offset=6, pop_time_ms=150, invisible_time_ms=50) == {
        3: 2,
        4: 2,
    }
    assert t.ack(key, 3, 100) is None  # stale: that batch was handed out again
    assert t.ack(key, 4, 150) is None  # 3 is still out: the offset stays
    assert t.held(key, 160)
    assert t.ack(key, 3, 150) == 6  # past the filtered offset 5 as well
    assert not t.held(key, 160) and t.attempts_of(key, 3) == 0
    t.popped(key, [6], next_offset=7, pop_time_ms=200, invisible_time_ms=10)
    assert t.change_invisible(key, 6, 200, now_ms=205, invisible_ms=100)
    assert t.held(key, 300) and not t.held(key, 305)


@given(
    st.integers(0, 2**40),
    st.sets(st.integers(0, MAX_BATCH_ACK_BITS - 1), max_size=40),
    st.sampled_from(["0", "1", "2"]),
)
def test_batch_ack_body_round_trips(start: int, diffs: set[int], retry: str) -> None:
    entry = BatchAckEntry(
        group="G",
        topic="T",
        retry=retry,
        start_offset=start,
        queue_id=3,
        revive_qid=2,
        pop_time_ms=1000,
        invisible_time_ms=30000,
        offsets=tuple(sorted(start + d for d in diffs)),
    )
    assert decode_batch_ack_body(encode_batch_ack_body("broker-a", [entry])) == (
        "broker-a",
        [entry],
    )


def test_batch_ack_bits_as_java_writes_them() -> None:
    # BitSet {0, 2, 9}.toByteArray() = [0x05, 0x02], base64 "BQI=".
    body = (
        b'{"brokerName":"b","acks":[{"c":"G","t":"T","r":"0","so":10,"q":0,"rq":1,'
        b'"pt":5,"it":6,"b":"BQI="}]}'
    )
    (_, [entry]) = decode_batch_ack_body(body)
    assert entry.offsets == (10, 12, 19)
    for bad in (
        b"[]",
        b'{"acks":[{"c":"G"}]}',
        b'{"acks":[{"c":"G","t":"T","r":"0","so":1,"q":0,"rq":1,"pt":5,"it":6,"b":"!!"}]}',
        b'{"acks":[{"c":"G","t":"T","r":"9","so":1,"q":0,"rq":1,"pt":5,"it":6,"b":"AQ=="}]}',
        b'{"acks":[{"c":"G","t":"T","r":"0","so":1,"q":0,"rq":1,"pt":5,"it":6,"b":"'
        + b"A" * 400
        + b'"}]}',
    ):
        with pytest.raises(MalformedBody):
            decode_batch_ack_body(bad)


def test_batch_ack_record_closes_the_checkpoint() -> None:
    q = ReviveQueue()
    point = ck([4, 5, 6])
    q.add_checkpoint(0, point)
    batch = Ack(
        group="G", topic="T", queue_id=0, start_offset=4, pop_time_ms=1000, ack_offsets=(4, 6)
    )
    assert Ack.from_json(batch.to_json()) == batch and b'"aol":[4,6]' in batch.to_json()
    q.add_ack(1, batch)
    assert q.open[point.key].unacked == (5,)
    q.add_ack(2, ack(point, 5))
    assert q.open == {} and q.closed_acked == 1


class ReviveLogMachine(RuleBasedStateMachine):
    """ReviveQueue against its log: checkpoints, acks, revive rounds and restarts (a new
    queue read from the committed offset). Nothing open is ever forgotten by a restart,
    no acked offset is ever due, and a checkpoint is due only after its invisible time."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[CheckPoint | Ack] = []
        self.queue = ReviveQueue()
        self.now_ms = 0
        self.acked: dict[tuple[object, ...], set[int]] = {}
        self.next_offset = 0

    def _feed(self, queue: ReviveQueue, start: int) -> None:
        for i, item in enumerate(self.log[start:], start=start):
            if isinstance(item, CheckPoint):
                queue.add_checkpoint(i, item)
            else:
                queue.add_ack(i, item)

    @rule(count=st.integers(1, 4), invisible_ms=st.integers(1, 50))
    def pop(self, count: int, invisible_ms: int) -> None:
        offsets = list(range(self.next_offset, self.next_offset + count))
        self.next_offset += count
        point = ck(offsets, pop=self.now_ms, inv=invisible_ms)
        self.log.append(point)
        self.queue.add_checkpoint(len(self.log) - 1, point)

    @rule(data=st.data())
    def ack_one(self, data: st.DataObject) -> None:
        if not self.queue.open:
            return
        key = data.draw(st.sampled_from(sorted(self.queue.open)))
        point = self.queue.open[key]
        offset = data.draw(st.sampled_from(point.ck.offsets))
        item = ack(point.ck, offset)
        self.log.append(item)
        self.acked.setdefault(key, set()).add(offset)
        self.queue.add_ack(len(self.log) - 1, item)

    @rule(step_ms=st.integers(0, 30))
    def revive_round(self, step_ms: int) -> None:
        self.now_ms += step_ms
        for point in self.queue.due(self.now_ms):
            assert point.ck.revive_time_ms <= self.now_ms
            assert not set(point.unacked) & self.acked.get(point.ck.key, set())
            self.queue.finish(point.ck.key)

    @rule()
    def restart(self) -> None:
        again = ReviveQueue(read_offset=self.queue.commit_offset())
        self._feed(again, again.read_offset)
        for key, point in self.queue.open.items():
            assert key in again.open, "an open checkpoint was forgotten"
            assert again.open[key].unacked == point.unacked, "an ack was forgotten"
        self.queue = again

    @invariant()
    def commit_offset_never_passes_an_open_checkpoint(self) -> None:
        for point in self.queue.open.values():
            assert self.queue.commit_offset() <= point.revive_offset


TestReviveLog = ReviveLogMachine.TestCase
