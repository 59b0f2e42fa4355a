"""The consumer's pure core: queue allocation, in-flight offsets, pull answers.

- ``allocate_averagely`` against the worked rule of AllocateMessageQueueAveragely
  (wire.md §4.5) and, with Hypothesis, the properties every allocation must have: the
  clients' shares partition the queues, each share is a consecutive run of the sorted
  queues, sizes differ by at most one, and the input order does not matter.
- ``InflightOffsets``: the committable offset is the lowest unfinished one.
- ``parse_pull_response`` / ``accepts`` / ``pull_target``: codes, tag re-filter, addresses.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.consumer import (
    InflightOffsets,
    PullResult,
    PullStatus,
    accepts,
    allocate_averagely,
    check_pull_offsets,
    parse_pull_response,
    pull_target,
)
from client.routes import TopicInfo
from protocol.bodies import parse_subscription
from protocol.codes import ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import ProtocolError, SubscriptionGroupNotExist
from protocol.headers import PullMessageResponseHeader
from protocol.message import MessageRecord, encode_record
from protocol.route import BrokerData, MessageQueue, TopicRouteData

# --- allocation ----------------------------------------------------------------------------


def mqs(n: int, topic: str = "T") -> list[MessageQueue]:
    """n queues over two brokers, in MessageQueue order (broker-a's first)."""
    half = (n + 1) // 2
    out = [MessageQueue(topic=topic, broker_name="broker-a", queue_id=i) for i in range(half)]
    out += [MessageQueue(topic=topic, broker_name="broker-b", queue_id=i) for i in range(n - half)]
    return sorted(out)


def cids(n: int) -> list[str]:
    return [f"10.0.0.{i}@{i}" for i in range(n)]


@pytest.mark.parametrize(
    ("queues", "clients", "expected"),
    [
        # Q % C == 0: equal consecutive slices.
        (8, 4, [[0, 1], [2, 3], [4, 5], [6, 7]]),
        # Q=8, C=3: mod 2 -> sizes 3, 3, 2; the last starts at 2*2 + 2 = 6.
        (8, 3, [[0, 1, 2], [3, 4, 5], [6, 7]]),
        # Q=10, C=4: mod 2 -> sizes 3, 3, 2, 2; starts 0, 3, 6, 8.
        (10, 4, [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]),
        # Q < C: the first Q clients get one queue each, the others none.
        (3, 5, [[0], [1], [2], [], []]),
        (4, 4, [[0], [1], [2], [3]]),
        (1, 2, [[0], []]),
        (5, 1, [[0, 1, 2, 3, 4]]),
    ],
)
def test_allocation_follows_the_worked_rule(
    queues: int, clients: int, expected: list[list[int]]
) -> None:
    all_queues = mqs(queues)
    ids = cids(clients)
    for i, cid in enumerate(ids):
        got = allocate_averagely(all_queues, ids, cid)
        assert got == [all_queues[k] for k in expected[i]], (queues, clients, cid)


def test_clients_are_ranked_by_sorted_id_not_by_list_order() -> None:
    queues = mqs(4)
    ids = ["b@2", "a@1"]
    assert allocate_averagely(queues, ids, "a@1") == queues[:2]
    assert allocate_averagely(queues, ids, "b@2") == queues[2:]


def test_a_client_not_in_the_list_and_an_empty_topic_get_nothing() -> None:
    assert allocate_averagely(mqs(4), cids(2), "stranger@1") == []
    assert allocate_averagely([], cids(2), cids(2)[0]) == []


@given(
    n_queues=st.integers(min_value=0, max_value=40),
    n_clients=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_allocation_partitions_the_queues(n_queues: int, n_clients: int, seed: int) -> None:
    queues = mqs(n_queues)
    ids = cids(n_clients)
    rng = random.Random(seed)
    shares: list[list[MessageQueue]] = []
    for cid in sorted(ids):  # in rank order
        shuffled_q, shuffled_c = queues[:], ids[:]
        rng.shuffle(shuffled_q)
        rng.shuffle(shuffled_c)
        share = allocate_averagely(shuffled_q, shuffled_c, cid)
        assert share == allocate_averagely(queues, ids, cid), "input order matters"
        shares.append(share)
    flat = [q for share in shares for q in share]
    assert sorted(flat) == queues, "every queue exactly once"
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1
    for share in shares:
        if share:
            start = queues.index(share[0])
            assert share == queues[start : start + len(share)], "share is consecutive"
    # Bigger shares go to the lower-ranked clients.
    assert sizes == sorted(sizes, reverse=True)


# --- in-flight offsets -------------------------------------------------------------------


def test_committable_offset_is_the_lowest_unfinished() -> None:
    t = InflightOffsets(next_offset=10)
    assert (t.committable(), t.count) == (10, 0)
    t.add([10, 11, 12])
    t.advance(13)
    assert (t.committable(), t.count, t.next_offset) == (10, 3, 13)
    assert t.finish(12, t.generation)
    assert (t.committable(), t.count) == (10, 2)  # 10 and 11 still out
    assert t.finish(10, t.generation)
    assert (t.committable(), t.count) == (11, 1)
    assert not t.finish(10, t.generation), "finishing twice changes nothing"
    assert t.finish(11, t.generation)
    assert (t.committable(), t.count, t.max_count_seen) == (13, 0, 3)


def test_filtered_gaps_and_empty_pulls_move_the_committable_offset() -> None:
    t = InflightOffsets(next_offset=0)
    t.add([2, 5])  # 0, 1, 3, 4 filtered out by tag
    t.advance(8)
    assert t.committable() == 2
    t.finish(5, t.generation)
    assert t.committable() == 2
    t.finish(2, t.generation)
    assert t.committable() == 8
    t.advance(8)  # PULL_NOT_FOUND at the same offset
    t.advance(11)  # PULL_RETRY_IMMEDIATELY past filtered entries
    assert (t.committable(), t.next_offset) == (11, 11)


def test_reset_starts_a_new_generation_and_may_go_backwards() -> None:
    t = InflightOffsets(next_offset=100)
    t.add([100, 101])
    t.advance(102)
    old = t.generation
    t.reset(40)  # PULL_OFFSET_MOVED
    assert (t.committable(), t.count, t.next_offset) == (40, 0, 40)
    assert not t.finish(100, old), "a finish of the old generation is ignored"
    t.add([40])
    assert not t.finish(40, old)
    assert t.finish(40, t.generation)


def test_offsets_must_be_added_in_increasing_order() -> None:
    t = InflightOffsets(next_offset=5)
    with pytest.raises(AssertionError):
        t.add([4])
    t.add([5, 7])
    with pytest.raises(AssertionError):
        t.add([6])
    assert (t.committable(), t.count) == (5, 2), "a refused add leaves the state as it was"


@given(st.lists(st.integers(min_value=0, max_value=30), unique=True), st.randoms())
def test_committable_matches_a_naive_model(offsets: list[int], rng: random.Random) -> None:
    offsets.sort()
    t = InflightOffsets(next_offset=0)
    t.add(offsets)
    end = (offsets[-1] + 1) if offsets else 0
    t.advance(end)
    open_ = set(offsets)
    order = offsets[:]
    rng.shuffle(order)
    for offset in order:
        t.finish(offset, t.generation)
        open_.discard(offset)
        assert t.committable() == (min(open_) if open_ else end)
        assert t.count == len(open_)


# --- pull answers --------------------------------------------------------------------------


def record(offset: int, tags: str | None, body: bytes = b"x", sys_flag: int = 0) -> bytes:
    props = {"UNIQ_KEY": f"ID{offset}"}
    if tags is not None:
        props["TAGS"] = tags
    return encode_record(
        MessageRecord(
            topic="T",
            body=body,
            queue_id=1,
            born_timestamp_ms=1,
            born_host=("10.0.0.1", 1),
            store_timestamp_ms=2,
            store_host=("10.0.0.2", 10911),
            queue_offset=offset,
            physical_offset=1000 + offset,
            sys_flag=sys_flag,
            properties=props,
        )
    )


def answer(code: int, body: bytes = b"", next_offset: int = 7) -> RemotingCommand:
    header = PullMessageResponseHeader(
        suggest_which_broker_id=1, next_begin_offset=next_offset, min_offset=0, max_offset=9
    )
    return RemotingCommand(code=code, ext_fields=header.to_ext_fields(), body=body, flag=1)


QUEUE = MessageQueue(topic="T", broker_name="broker-a", queue_id=1)


def test_found_is_decoded_and_refiltered_by_exact_tag() -> None:
    # "Aa" and "BB" have the same Java hashCode: the broker cannot tell them apart.
    body = record(3, "Aa") + record(4, "BB") + record(5, None) + record(6, "Aa")
    result = parse_pull_response(
        answer(ResponseCode.SUCCESS, body), QUEUE, parse_subscription("Aa", topic="T")
    )
    assert result.status is PullStatus.FOUND
    assert [m.queue_offset for m in result.messages] == [3, 6]
    assert all(m.queue == QUEUE and m.msg_id.startswith("ID") for m in result.messages)
    assert (result.next_begin_offset, result.min_offset, result.max_offset) == (7, 0, 9)
    assert result.suggest_which_broker_id == 1
    everything = parse_pull_response(
        answer(ResponseCode.SUCCESS, body), QUEUE, parse_subscription("*", topic="T")
    )
    assert [m.queue_offset for m in everything.messages] == [3, 4, 5, 6]


def test_found_with_nothing_left_after_the_refilter_is_no_matched() -> None:
    result = parse_pull_response(
        answer(ResponseCode.SUCCESS, record(3, "BB")), QUEUE, parse_subscription("Aa")
    )
    assert (result.status, result.messages, result.next_begin_offset) == (
        PullStatus.NO_MATCHED_MSG,
        (),
        7,
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ResponseCode.PULL_NOT_FOUND, PullStatus.NO_NEW_MSG),
        (ResponseCode.PULL_RETRY_IMMEDIATELY, PullStatus.NO_MATCHED_MSG),
        (ResponseCode.PULL_OFFSET_MOVED, PullStatus.OFFSET_ILLEGAL),
    ],
)
def test_empty_answers_carry_the_next_offset(code: int, status: PullStatus) -> None:
    result = parse_pull_response(answer(code, next_offset=4), QUEUE, parse_subscription("*"))
    assert (result.status, result.next_begin_offset, result.messages) == (status, 4, ())


def test_other_codes_raise_their_error() -> None:
    bad = RemotingCommand(code=ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST, remark="no group", flag=1)
    with pytest.raises(SubscriptionGroupNotExist, match="no group"):
        parse_pull_response(bad, QUEUE, parse_subscription("*"))
    # Bad records in a FOUND body are skipped, not raised: tests/unit/test_sdk_records.py.


def test_accepts_only_exact_tags_unless_subscribed_to_all() -> None:
    msg = parse_pull_response(
        answer(ResponseCode.SUCCESS, record(1, "TagA")), QUEUE, parse_subscription("*")
    ).messages[0]
    assert accepts(parse_subscription("TagA || TagB"), msg)
    assert not accepts(parse_subscription("TagB"), msg)
    assert accepts(parse_subscription(""), msg)


def test_pull_target_prefers_the_suggested_broker_then_the_master() -> None:
    route = TopicRouteData(
        broker_datas=[
            BrokerData(cluster="c", broker_name="a", broker_addrs={0: "m:1", 1: "s1:1"}),
            BrokerData(cluster="c", broker_name="b", broker_addrs={2: "s2:1"}),
        ]
    )
    info = TopicInfo(topic="T", route=route, publish=(), subscribe=())
    assert pull_target(info, "a", 1) == "s1:1"
    assert pull_target(info, "a", 7) == "m:1"  # suggested id not in the route
    assert pull_target(info, "b", 0) == "s2:1"  # no master: any replica
    with pytest.raises(Exception, match="no address"):
        pull_target(info, "zzz", 0)


def found(offsets: list[int], next_offset: int) -> PullResult:
    body = b"".join(record(o, None) for o in offsets)
    return parse_pull_response(
        answer(ResponseCode.SUCCESS, body, next_offset), QUEUE, parse_subscription("*")
    )


def test_sane_pull_offsets_pass() -> None:
    check_pull_offsets(found([3, 4, 6], 7), 3)
    check_pull_offsets(found([5], 9), 3)  # entries 3 and 4 filtered by the broker
    empty = parse_pull_response(
        answer(ResponseCode.PULL_NOT_FOUND, next_offset=4), QUEUE, parse_subscription("*")
    )
    check_pull_offsets(empty, 4)
    moved = parse_pull_response(
        answer(ResponseCode.PULL_OFFSET_MOVED, next_offset=0), QUEUE, parse_subscription("*")
    )
    check_pull_offsets(moved, 50)  # OFFSET_ILLEGAL may go backwards


@pytest.mark.parametrize(
    ("result_offsets", "next_offset", "requested", "why"),
    [
        ([2, 3], 4, 3, "before the requested offset"),
        ([3, 3], 4, 3, "not increasing"),
        ([5, 4], 6, 3, "not increasing"),
        ([3, 4], 4, 3, "next offset not past the last message"),
    ],
)
def test_insane_pull_offsets_are_protocol_errors(
    result_offsets: list[int], next_offset: int, requested: int, why: str
) -> None:
    with pytest.raises(ProtocolError):
        check_pull_offsets(found(result_offsets, next_offset), requested)


def test_an_empty_answer_that_moves_backwards_is_a_protocol_error() -> None:
    back = parse_pull_response(
        answer(ResponseCode.PULL_NOT_FOUND, next_offset=2), QUEUE, parse_subscription("*")
    )
    with pytest.raises(ProtocolError, match="next offset 2"):
        check_pull_offsets(back, 5)
