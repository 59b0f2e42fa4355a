"""ConsumeQueue entries held in memory and written by their bound, the flush tick
(``write_queue_entries``) or a reader: readers never see around them, fsyncs write them
first, a kill -9 loses them like any unsynced tail and recovery rebuilds them."""

from __future__ import annotations

import os
from pathlib import Path

from broker.store.config import StoreConfig
from broker.store.consumequeue import CQ_ENTRY_BYTES, PENDING_MAX_ENTRIES, ConsumeQueue
from broker.store.pull import GetMessageStatus as S
from broker.store.store import MessageStore
from protocol.message import MessageRecord, iter_records

CFG = StoreConfig(
    segment_bytes=64 * 1024,
    cq_entries_per_file=40,
    index_slots=64,
    index_entries=300,
    min_free_disk_bytes=0,
)


def msg(i: int, *, queue_id: int = 0) -> MessageRecord:
    return MessageRecord(
        topic="T",
        body=f"body-{i}".encode() * 20,
        queue_id=queue_id,
        born_timestamp_ms=1_700_000_000_000,
        born_host=("192.168.0.9", 5555),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"TAGS": "A", "UNIQ_KEY": f"U{i:031d}"},
    )


def on_disk(store: MessageStore, queue_id: int) -> list[tuple[int, int, int]]:
    """The queue's entries as another process would read its files now (zeros included)."""
    directory = store.store_dir / "consumequeue" / "T" / str(queue_id)
    data = b"".join((directory / name).read_bytes() for name in sorted(os.listdir(directory)))
    rows = [
        (int.from_bytes(data[i : i + 8], "big"), int.from_bytes(data[i + 8 : i + 12], "big"))
        for i in range(0, len(data), CQ_ENTRY_BYTES)
    ]
    return [(q, phys, size) for q, (phys, size) in enumerate(rows) if size]


def bodies(store: MessageStore, queue_id: int) -> list[bytes]:
    out: list[bytes] = []
    offset = store.min_offset("T", queue_id)
    while True:
        res = store.get_messages("g", "T", queue_id, offset, max_count=32, max_bytes=10**6)
        if res.status is not S.FOUND:
            return out
        out += [r.body for r in iter_records(res.body)]
        offset = res.next_begin_offset


async def test_entries_are_held_until_written_and_readers_never_miss_them(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    results = [store.put_message(msg(i, queue_id=i % 2)) for i in range(50)]
    # Nothing of this read's 50 entries is in the files yet (the first queue file of each
    # queue was created, empty); the offsets already count them.
    assert on_disk(store, 0) == on_disk(store, 1) == []
    assert store.max_offset("T", 0) == store.max_offset("T", 1) == 25
    store.write_queue_entries()
    expected = [(r.queue_offset, r.physical_offset, r.wrote_bytes) for r in results]
    assert on_disk(store, 0) == expected[0::2]  # one pwrite each, all there
    assert on_disk(store, 1) == expected[1::2]
    # Held again; a reader writes them before it reads: it sees all 26 of queue 0.
    store.put_message(msg(50, queue_id=0))
    assert len(on_disk(store, 0)) == 25
    assert bodies(store, 0) == [msg(i).body for i in range(0, 51, 2)]
    assert len(on_disk(store, 0)) == 26
    await store.close()


async def test_a_checkpoint_writes_held_entries_before_its_fsync(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    for i in range(30):
        store.put_message(msg(i))
    assert on_disk(store, 0) == []
    ckpt = await store.checkpoint()
    assert len(on_disk(store, 0)) == 30
    assert ckpt.dispatched_offset == store.max_physical_offset
    await store.close()


async def test_entries_lost_with_the_process_are_rebuilt_from_the_commitlog(
    tmp_path: Path,
) -> None:
    store = MessageStore.open(tmp_path, CFG)
    for i in range(40):
        store.put_message(msg(i, queue_id=i % 2))
    await store.checkpoint()
    for i in range(40, 100):
        store.put_message(msg(i, queue_id=i % 2))
    held = sum(cq.pending_entries for cq in store._cqs.values())
    assert 0 < held < 60  # some crossed a file boundary (40 a file) and were written
    # kill -9: the held entries vanish with the process, no flush, no checkpoint.
    for cq in store._cqs.values():
        cq._pending.clear()
    store._close_files()
    assert len(on_disk(store, 0)) < 50
    store = MessageStore.open(tmp_path, CFG)
    assert store.recovery_report is not None and store.recovery_report.abnormal_shutdown
    assert bodies(store, 0) == [msg(i).body for i in range(0, 100, 2)]
    assert bodies(store, 1) == [msg(i).body for i in range(1, 100, 2)]
    assert store.put_message(msg(100, queue_id=0)).queue_offset == 50
    await store.close()


def test_a_queue_writes_in_one_file_at_a_time_and_at_most_its_bound(tmp_path: Path) -> None:
    cq = ConsumeQueue(tmp_path, "T", 0, entries_per_file=PENDING_MAX_ENTRIES * 2 + 10)
    started = [cq.append(q, 1000 + q * 10, 10, 0) for q in range(PENDING_MAX_ENTRIES + 5)]
    # The first append starts holding; reaching the bound writes them all at once.
    assert started[0] and not any(started[1:PENDING_MAX_ENTRIES])
    assert cq.pending_entries == 5
    assert started[PENDING_MAX_ENTRIES]
    entries = cq.read_entries(0, PENDING_MAX_ENTRIES + 5)
    assert entries is not None and len(entries) == PENDING_MAX_ENTRIES + 5
    assert [e.physical_offset for e in entries] == [1000 + q * 10 for q in range(len(entries))]
    assert cq.pending_entries == 0
    # A cut drops held entries past it too.
    cq.append(cq.max_offset, 99_999, 10, 0)
    cq.truncate_to_offset(10)
    assert cq.max_offset == 10 and cq.read_entries(9, 5) is not None
    assert cq.entry_at(10) is None
    cq.close()


async def test_queues_held_again_are_listed_once_until_the_flush_tick(tmp_path: Path) -> None:
    """A queue that wrote its held run itself (a new file, or its bound) and holds again
    is listed once for the flush tick's ``write_queue_entries``, however many times."""
    store = MessageStore.open(tmp_path, CFG)
    for i in range(3 * CFG.cq_entries_per_file + 5):  # three new files on queue 0
        store.put_message(msg(i))
    store.put_message(msg(0, queue_id=1))
    assert list(store._unwritten_cqs) == [store._cqs[("T", 0)], store._cqs[("T", 1)]]
    store.write_queue_entries()
    assert not store._unwritten_cqs
    assert len(on_disk(store, 0)) == 3 * CFG.cq_entries_per_file + 5
    assert len(on_disk(store, 1)) == 1
    await store.close()
