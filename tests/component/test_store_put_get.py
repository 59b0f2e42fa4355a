"""MessageStore put/get round trips on real files: segment rolls, batches, filters, ids."""

from __future__ import annotations

import itertools
from pathlib import Path

import attrs
import pytest

from broker.clock import ManualClock
from broker.store.config import StoreConfig
from broker.store.pull import GetMessageStatus as S
from broker.store.results import SCHEDULE_TOPIC, PutStatus
from broker.store.store import MessageStore
from protocol.message import (
    BLANK_MAGIC,
    SYSFLAG_TRANSACTION_PREPARED_TYPE,
    MessageRecord,
    decode_record,
    encode_record,
    iter_records,
    offset_msg_id,
    peek_record_header,
    tags_code,
)

SEG = 64 * 1024
CFG = StoreConfig(
    segment_bytes=SEG,
    cq_entries_per_file=50,
    index_slots=64,
    index_entries=400,
    min_free_disk_bytes=0,
    store_host=("10.1.2.3", 10911),
)


def msg(
    i: int, *, topic: str = "T", queue_id: int = 0, size: int = 1000, tags: str = "A"
) -> MessageRecord:
    return MessageRecord(
        topic=topic,
        body=bytes([i % 251]) * size,
        queue_id=queue_id,
        born_timestamp_ms=1_700_000_000_000 + i,
        born_host=("192.168.0.9", 5555),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"TAGS": tags, "KEYS": f"k{i} shared", "UNIQ_KEY": f"UNIQ{i:028d}"},
    )


def ticking_clock() -> ManualClock:
    """A wall clock one millisecond further at every read."""
    return ManualClock(now_ms=1_700_000_000_001, step_ms=1)


async def test_put_get_round_trip_across_segment_rolls(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    results = [store.put_message(msg(i)) for i in range(200)]
    assert all(r.ok for r in results)
    assert [r.queue_offset for r in results] == list(range(200))
    # Records are contiguous except where a blank marker pads a segment end.
    stats = store.statistics()
    assert stats.segment_count >= 3
    for a, b in itertools.pairwise(results):
        if b.physical_offset != a.end_offset:
            assert b.physical_offset % SEG == 0
            pad = store._clog.read(a.end_offset, 8)
            assert pad is not None
            size, magic = peek_record_header(pad, 0)
            assert magic == BLANK_MAGIC and size == b.physical_offset - a.end_offset
        else:
            assert b.physical_offset == a.end_offset
    got: list[MessageRecord] = []
    offset = 0
    while True:
        res = store.get_messages("g", "T", 0, offset, max_count=32, max_bytes=256 * 1024)
        if res.status is not S.FOUND:
            assert res.status is S.OFFSET_OVERFLOW_ONE
            break
        got.extend(iter_records(res.body))
        assert res.queue_offsets == tuple(range(offset, res.next_begin_offset))
        offset = res.next_begin_offset
    assert [r.queue_offset for r in got] == list(range(200))
    for r, res in zip(got, results, strict=True):
        assert r.physical_offset == res.physical_offset
        assert r.store_host == ("10.1.2.3", 10911)
        assert r.store_timestamp_ms == res.store_timestamp_ms
        assert res.msg_id == offset_msg_id("10.1.2.3", 10911, res.physical_offset)
        assert r.body == msg(r.queue_offset).body
    await store.close()


async def test_record_bytes_equal_a_full_encode(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    store.put_message(msg(0))
    m = msg(1, queue_id=3)
    r = store.put_message(m)
    stored = store.read_record(r.physical_offset)
    expected = encode_record(
        attrs.evolve(
            m,
            queue_offset=0,
            physical_offset=r.physical_offset,
            store_timestamp_ms=r.store_timestamp_ms,
            store_host=("10.1.2.3", 10911),
        )
    )
    assert stored == expected
    assert store.read_record(r.physical_offset + 1) is None
    assert store.read_record(10**9) is None
    await store.close()


async def test_batch_gets_consecutive_queue_offsets(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    store.put_message(msg(0))
    r = store.put_messages([msg(i) for i in range(1, 6)])
    assert r.ok and r.message_count == 5 and r.queue_offset == 1
    ids = r.msg_id.split(",")
    assert len(ids) == 5
    res = store.get_messages("g", "T", 0, 1, max_count=10, max_bytes=10**6)
    recs = list(iter_records(res.body))
    assert [x.queue_offset for x in recs] == [1, 2, 3, 4, 5]
    assert recs[0].physical_offset == r.physical_offset
    assert sum(len(b) for b in res.records) == r.wrote_bytes
    assert ids == [offset_msg_id("10.1.2.3", 10911, x.physical_offset) for x in recs]
    mixed = store.put_messages([msg(1), msg(2, queue_id=1)])
    assert mixed.status is PutStatus.MESSAGE_ILLEGAL
    assert store.put_messages([]).status is PutStatus.MESSAGE_ILLEGAL
    await store.close()


async def test_batch_rolls_as_one_unit(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    while store.max_physical_offset < SEG - 5000:
        store.put_message(msg(1))
    r = store.put_messages([msg(i) for i in range(8)])
    assert r.ok and r.physical_offset == SEG
    await store.close()


async def test_size_limits(tmp_path: Path) -> None:
    cfg = attrs.evolve(CFG, max_message_bytes=2000)
    store = MessageStore.open(tmp_path, cfg, clock=ticking_clock())
    assert store.put_message(msg(0, size=2000)).ok
    r = store.put_message(msg(0, size=2001))
    assert r.status is PutStatus.MESSAGE_ILLEGAL and "2001" in r.remark
    assert (
        store.put_messages([msg(0, size=1500), msg(1, size=1500)]).status
        is PutStatus.MESSAGE_ILLEGAL
    )
    big = attrs.evolve(CFG, max_message_bytes=10**6)
    await store.close()
    store = MessageStore.open(tmp_path, big, clock=ticking_clock())
    r = store.put_message(msg(0, size=SEG))
    assert r.status is PutStatus.MESSAGE_ILLEGAL
    long_props = attrs.evolve(msg(0), properties={"KEYS": "x" * 40000})
    assert store.put_message(long_props).status is PutStatus.PROPERTIES_SIZE_EXCEEDED
    assert store.max_physical_offset > 0  # the legal one stayed
    await store.close()


async def test_tag_filter_and_statuses(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    for i in range(10):
        store.put_message(msg(i, tags="A" if i % 3 == 0 else "B"))
    only_a = frozenset({tags_code("A")})
    res = store.get_messages("g", "T", 0, 0, max_count=32, max_bytes=10**6, tag_codes=only_a)
    assert res.status is S.FOUND
    assert res.queue_offsets == (0, 3, 6, 9)
    assert res.next_begin_offset == 10
    res = store.get_messages(
        "g", "T", 0, 1, max_count=32, max_bytes=10**6, tag_codes=frozenset({1})
    )
    assert (res.status, res.next_begin_offset, res.records) == (S.NO_MATCHED_MESSAGE, 10, ())
    res = store.get_messages("g", "T", 0, 10, max_count=32, max_bytes=10**6)
    assert (res.status, res.next_begin_offset) == (S.OFFSET_OVERFLOW_ONE, 10)
    res = store.get_messages("g", "T", 0, 11, max_count=32, max_bytes=10**6)
    assert (res.status, res.next_begin_offset) == (S.OFFSET_OVERFLOW_BADLY, 10)
    res = store.get_messages("g", "T", 7, 0, max_count=32, max_bytes=10**6)
    assert (res.status, res.next_begin_offset) == (S.NO_MATCHED_LOGIC_QUEUE, 0)
    assert (res.min_offset, res.max_offset) == (0, 0)
    res = store.get_messages("g", "T", 0, 2, max_count=3, max_bytes=10**6)
    assert res.queue_offsets == (2, 3, 4) and res.next_begin_offset == 5
    assert (res.min_offset, res.max_offset) == (0, 10)
    await store.close()


async def test_queues_are_independent_and_listeners_hear_arrivals(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    heard: list[tuple[str, int, int, int]] = []
    store.add_arrival_listener(lambda t, q, end, code: heard.append((t, q, end, code)))
    for i in range(6):
        store.put_message(msg(i, topic="T" if i < 4 else "U", queue_id=i % 2))
    assert store.topics() == {"T": [0, 1], "U": [0, 1]}
    assert store.max_offset("T", 0) == 2 and store.max_offset("U", 1) == 1
    assert heard[0] == ("T", 0, 1, tags_code("A"))
    assert heard[-1] == ("U", 1, 1, tags_code("A"))
    assert len(heard) == 6
    await store.close()


async def test_a_listener_for_one_topic_hears_only_that_topic(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    everywhere: list[str] = []
    only_u: list[str] = []

    def hear_u(t: str, q: int, end: int, code: int) -> None:
        only_u.append(t)

    store.add_arrival_listener(lambda t, q, end, code: everywhere.append(t))
    store.add_arrival_listener(hear_u, topic="U")
    for i in range(4):
        store.put_message(msg(i, topic="T" if i % 2 else "U"))
    assert everywhere == ["U", "T", "U", "T"] and only_u == ["U", "U"]
    store.remove_arrival_listener(hear_u, topic="U")
    store.put_message(msg(4, topic="U"))
    assert everywhere[-1] == "U" and only_u == ["U", "U"]
    await store.close()


async def test_a_waiting_listener_hears_only_topics_it_waits_on(tmp_path: Path) -> None:
    """``waiting_on``: the listener is called for a topic only while the topic is in its
    container (a long poll's topics with waiters) when the record is dispatched: at put
    time, or in a run a confirm releases (``dispatch_confirmed_only``)."""
    store = MessageStore.open(tmp_path / "a", CFG, clock=ticking_clock())
    waiting: dict[str, int] = {}
    heard: list[tuple[str, int]] = []
    store.add_arrival_listener(lambda t, q, end, code: heard.append((t, end)), waiting_on=waiting)
    store.put_message(msg(0, topic="T"))  # nobody waits: not called
    waiting["T"] = 1
    store.put_message(msg(1, topic="T"))
    store.put_message(msg(2, topic="U"))  # another topic: not called
    del waiting["T"]
    store.put_message(msg(3, topic="T"))
    assert heard == [("T", 2)]
    with pytest.raises(ValueError, match="does not listen"):
        store.remove_arrival_listener(heard.append)
    await store.close()

    confirmed = MessageStore.open(
        tmp_path / "b", attrs.evolve(CFG, dispatch_confirmed_only=True), clock=ticking_clock()
    )
    waiting.clear()
    heard.clear()
    confirmed.add_arrival_listener(
        lambda t, q, end, code: heard.append((t, end)), waiting_on=waiting
    )
    ends = [confirmed.put_message(msg(i, topic=t)).end_offset for i, t in enumerate("TUT")]
    waiting["T"] = 1
    confirmed.set_confirm_offset(ends[-1])  # the three dispatched as one run
    assert confirmed.dispatched_offset == ends[-1]
    assert heard == [("T", 1), ("T", 2)]
    await confirmed.close()


async def test_prepared_transactions_get_no_queue_entry(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    store.put_message(msg(0))
    half = attrs.evolve(msg(1), sys_flag=SYSFLAG_TRANSACTION_PREPARED_TYPE)
    r = store.put_message(half)
    assert r.ok and r.queue_offset == 0
    assert store.max_offset("T", 0) == 1
    assert store.put_message(msg(2)).queue_offset == 1
    rec, _ = decode_record(store.read_record(r.physical_offset) or b"")
    assert rec.queue_offset == 0
    # Prepared messages are still indexed by key (only rollbacks are not).
    assert store.query_index("T", "k1", 10, 0, 2**62) == [r.physical_offset]
    await store.close()


async def test_schedule_topic_tag_code_is_the_delivery_time(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    m = attrs.evolve(msg(0, topic=SCHEDULE_TOPIC, queue_id=2), properties={"DELAY": "3"})
    r = store.put_message(m)
    cq = store._cqs[(SCHEDULE_TOPIC, 2)]
    entry = cq.entry_at(0)
    assert entry is not None
    assert entry.tags_code == r.store_timestamp_ms + 10_000
    await store.close()


async def test_offset_by_time_and_earliest_store_time(tmp_path: Path) -> None:
    clock = ManualClock(now_ms=1_000_000)
    store = MessageStore.open(tmp_path, CFG, clock=clock)
    stamps = []
    for i in range(20):
        clock.now_ms = 1_000_000 + (i // 2) * 1000  # two messages per second
        stamps.append(store.put_message(msg(i)).store_timestamp_ms)
    from broker.store.consumequeue import BoundaryType

    assert store.earliest_store_time_ms("T", 0) == stamps[0]
    assert store.earliest_store_time_ms("T", 5) == -1
    assert store.offset_by_time("T", 0, stamps[4]) == 4
    assert store.offset_by_time("T", 0, stamps[4] + 500) == 6
    assert store.offset_by_time("T", 0, stamps[4] + 500, BoundaryType.UPPER) == 5
    assert store.offset_by_time("T", 0, 0) == 0
    assert store.offset_by_time("T", 0, 10**13) == 20
    assert store.offset_by_time("T", 0, 10**13, BoundaryType.UPPER) == 19
    assert store.offset_by_time("nope", 0, 5) == 0
    await store.close()


async def test_a_second_process_cannot_open_the_store(tmp_path: Path) -> None:
    from protocol.errors import StorageError

    store = MessageStore.open(tmp_path, CFG)
    with pytest.raises(StorageError, match="in use"):
        MessageStore.open(tmp_path, CFG)
    await store.close()
    MessageStore.open(tmp_path, CFG)._close_files()


async def test_closed_store_refuses_puts(tmp_path: Path) -> None:
    from protocol.errors import StorageError

    store = MessageStore.open(tmp_path, CFG)
    await store.close()
    with pytest.raises(StorageError):
        store.put_message(msg(0))
    assert await store.wait_flushed(10, 0.1) is False


@pytest.mark.parametrize("topic", ["../escaped", "a/b", "..", "x" * 256])
async def test_a_name_that_is_no_directory_is_refused_before_writing(
    tmp_path: Path, topic: str
) -> None:
    store = MessageStore.open(tmp_path / "store", CFG)
    try:
        for put in (store.put_message, lambda m: store.put_messages([m, m])):
            result = put(msg(0, topic=topic))  # type: ignore[operator]
            assert result.status is PutStatus.MESSAGE_ILLEGAL, result
            assert "refusing" in result.remark
        assert store.put_message(msg(1, queue_id=-1)).status is PutStatus.MESSAGE_ILLEGAL
        assert store.max_physical_offset == 0
    finally:
        await store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


async def test_a_logged_record_with_an_unsafe_topic_gets_no_queue(tmp_path: Path) -> None:
    """An older version could store such a record: recovery keeps it in the CommitLog but
    creates no directory for it."""
    store_dir = tmp_path / "store"
    store = MessageStore.open(store_dir, CFG)
    store.put_message(msg(0))
    end = store.max_physical_offset
    await store.close()
    bad = encode_record(attrs.evolve(msg(1, topic="../../escaped"), physical_offset=end))
    segment = store_dir / "commitlog" / f"{0:020d}"
    with segment.open("r+b") as f:
        f.seek(end)
        f.write(bad)
    (store_dir / "checkpoint").unlink()  # recover from the oldest segment
    store = MessageStore.open(store_dir, CFG)
    try:
        assert store.max_physical_offset == end + len(bad)
        assert store.topics() == {"T": [0]}
    finally:
        await store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


@pytest.mark.parametrize("queues", [2, 4, 8])
async def test_a_pull_of_interleaved_queues_returns_each_queues_records(
    tmp_path: Path, queues: int
) -> None:
    """Single puts spread over several queues lie with other queues' records between
    them; a pull reads runs of them together (up to a bound on the bytes read in
    between, then one by one) and across segment ends, and returns exactly its
    queue's records, in order, cut at their boundaries."""
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    # Sizes vary so a record cut at the wrong place could not pass for another.
    for i in range(240):
        assert store.put_message(msg(i, queue_id=i % queues, size=700 + (i * 37) % 600)).ok
    for q in range(queues):
        expected = [i for i in range(240) if i % queues == q]
        got: list[MessageRecord] = []
        offset = 0
        while True:
            res = store.get_messages("g", "T", q, offset, max_count=32, max_bytes=1 << 20)
            if res.status is not S.FOUND:
                break
            assert list(res.queue_offsets) == list(range(offset, offset + len(res.records)))
            got += [decode_record(r)[0] for r in res.records]
            offset = res.next_begin_offset
        assert [m.body for m in got] == [msg(i, size=700 + (i * 37) % 600).body for i in expected]
        assert [m.properties["UNIQ_KEY"] for m in got] == [f"UNIQ{i:028d}" for i in expected]
    await store.close()
