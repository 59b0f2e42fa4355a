"""Retention deletes old segments with the queue entries and index files pointing into them."""

from __future__ import annotations

from pathlib import Path

from broker.clock import ManualClock
from broker.store.config import StoreConfig
from broker.store.pull import GetMessageStatus as S
from broker.store.store import MessageStore
from protocol.message import MessageRecord, iter_records

SEG = 16 * 1024
HOUR_MS = 3600 * 1000
CFG = StoreConfig(
    segment_bytes=SEG,
    cq_entries_per_file=10,
    index_slots=16,
    index_entries=40,
    min_free_disk_bytes=0,
    file_reserved_time_s=72 * 3600,
    max_segments_deleted_per_round=3,
)


def msg(i: int) -> MessageRecord:
    return MessageRecord(
        topic="T",
        body=bytes([i % 256]) * 1000,
        queue_id=0,
        born_timestamp_ms=1,
        born_host=("1.2.3.4", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"KEYS": f"k{i}"},
    )


def fixed_clock() -> ManualClock:
    return ManualClock(now_ms=1_000 * HOUR_MS)


async def test_old_segments_go_with_their_queue_entries(tmp_path: Path) -> None:
    clock = fixed_clock()
    store = MessageStore.open(tmp_path, CFG, clock=clock)
    old = [store.put_message(msg(i)) for i in range(60)]  # about 4 segments, 100 h ago
    clock.now_ms += 28 * HOUR_MS
    young = [store.put_message(msg(i)) for i in range(60, 100)]
    await store.flush()
    segments_before = store.statistics().segment_count
    cq_files_before = store._cqs[("T", 0)].file_count
    index_files_before = store.statistics().index_file_count
    # 71 h after the old ones: nothing is old enough.
    assert store.delete_expired(clock.now_ms + 43 * HOUR_MS) == 0
    now = clock.now_ms + 60 * HOUR_MS  # 88 h after the old, 60 h after the young ones
    deleted = 0
    while (n := store.delete_expired(now)) > 0:
        assert n <= 3  # bounded per round
        deleted += n
    assert deleted > 0
    new_min = store.min_physical_offset
    assert new_min > 0 and store.statistics().segment_count == segments_before - deleted
    # Every message of a deleted segment is older than 72 h; the young ones are all kept.
    assert all(r.physical_offset < new_min for r in old[: len(old) - 15])
    assert all(r.physical_offset >= new_min for r in young)
    min_q = store.min_offset("T", 0)
    assert old[min_q].physical_offset >= new_min > old[min_q - 1].physical_offset
    res = store.get_messages("g", "T", 0, 0, max_count=32, max_bytes=10**6)
    assert (res.status, res.next_begin_offset) == (S.OFFSET_TOO_SMALL, min_q)
    res = store.get_messages("g", "T", 0, min_q, max_count=1, max_bytes=10**6)
    assert res.status is S.FOUND
    assert next(iter_records(res.body)).physical_offset == old[min_q].physical_offset
    assert store._cqs[("T", 0)].file_count < cq_files_before
    assert store.statistics().index_file_count < index_files_before
    assert store.query_index("T", "k0", 5, 0, 2**62) == []
    assert store.max_offset("T", 0) == 100
    await store.close()
    store = MessageStore.open(tmp_path, CFG, clock=clock)
    assert (store.min_physical_offset, store.min_offset("T", 0)) == (new_min, min_q)
    await store.close()


async def test_everything_old_keeps_the_active_segment_and_the_queue_max(tmp_path: Path) -> None:
    clock = fixed_clock()
    store = MessageStore.open(tmp_path, CFG, clock=clock)
    for i in range(50):
        store.put_message(msg(i))
    await store.flush()
    far = clock.now_ms + 1000 * HOUR_MS
    while store.delete_expired(far):
        pass
    assert store.statistics().segment_count == 1
    assert store.max_offset("T", 0) == 50
    await store.close()
    store = MessageStore.open(tmp_path, CFG, clock=clock)
    assert store.max_offset("T", 0) == 50
    assert store.put_message(msg(50)).queue_offset == 50
    await store.close()


async def test_unflushed_segments_are_kept(tmp_path: Path) -> None:
    clock = fixed_clock()
    store = MessageStore.open(tmp_path, CFG, clock=clock)
    for i in range(50):
        store.put_message(msg(i))
    assert store.delete_expired(clock.now_ms + 1000 * HOUR_MS) == 0  # nothing fsynced yet
    await store.close()
