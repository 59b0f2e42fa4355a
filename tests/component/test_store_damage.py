"""Store damage found at open (issue 13 row 8), on real files in one process: damaged
ConsumeQueues rebuilt, damaged CommitLog ranges refused or skipped and never served."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import attrs
import pytest

from broker.store.config import StoreConfig
from broker.store.consumequeue import CQ_ENTRY, CQ_ENTRY_BYTES
from broker.store.files import UnreadableFile
from broker.store.pull import GetMessageStatus as S
from broker.store.recovery import DamagedSegment
from broker.store.store import MessageStore
from protocol.errors import CorruptRecord, StorageError
from protocol.message import MessageRecord, iter_records

SEG = 16 * 1024
CFG = StoreConfig(
    segment_bytes=SEG,
    cq_entries_per_file=40,
    index_slots=64,
    index_entries=400,
    min_free_disk_bytes=0,
)
SKIP = attrs.evolve(CFG, skip_damaged_segments=True)


def msg(i: int, *, queue_id: int) -> MessageRecord:
    return MessageRecord(
        topic="T",
        body=f"{i:05d}".encode() * 60,
        queue_id=queue_id,
        born_timestamp_ms=1,
        born_host=("1.2.3.4", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"KEYS": f"k{i}"},
    )


async def build(path: Path, n: int = 160) -> dict[int, tuple[int, int]]:
    """``n`` messages over two queues, store closed cleanly; {i: (physical offset, size)}."""
    store = MessageStore.open(path, CFG)
    placed = {}
    for i in range(n):
        r = store.put_message(msg(i, queue_id=i % 2))
        placed[i] = (r.physical_offset, r.wrote_bytes)
    await store.close()
    return placed


def served(store: MessageStore, queue_id: int) -> list[int]:
    """Message numbers a consumer of the queue receives, walking to the queue's end."""
    out: list[int] = []
    offset = store.min_offset("T", queue_id)
    while offset < store.max_offset("T", queue_id):
        res = store.get_messages("g", "T", queue_id, offset, max_count=8, max_bytes=10**6)
        out += [int(r.body[:5]) for r in iter_records(res.body, check_crc=True)]
        assert res.next_begin_offset > offset, res
        offset = res.next_begin_offset
    return out


def cq_path(path: Path, queue_id: int, file_index: int = 0) -> Path:
    return sorted((path / "consumequeue" / "T" / str(queue_id)).iterdir())[file_index]


def pwrite(path: Path, data: bytes, pos: int) -> None:
    with path.open("r+b") as f:
        f.seek(pos)
        f.write(data)


def garbage(n: int) -> bytes:
    """The same ``n`` random bytes every run: ~1 % of random tails read as entries past
    the end rather than damage (the test below covers that path on purpose)."""
    return random.Random(7).randbytes(n)


EVEN = list(range(0, 160, 2))


@pytest.mark.parametrize(
    "damage",
    [
        "last file truncated",
        "tail garbage",
        "middle garbage",
        "zeros inside",
        "file missing",
        "entries after end",
    ],
)
async def test_a_damaged_consume_queue_is_rebuilt(tmp_path: Path, damage: str) -> None:
    await build(tmp_path, 260)  # queue 0: 130 entries in files of 40
    last = cq_path(tmp_path, 0, 3)
    if damage == "last file truncated":
        os.truncate(last, 15 * CQ_ENTRY_BYTES + 3)
    elif damage == "tail garbage":
        pwrite(last, garbage(30 * CQ_ENTRY_BYTES), 5 * CQ_ENTRY_BYTES)
    elif damage == "middle garbage":
        pwrite(cq_path(tmp_path, 0, 1), garbage(10 * CQ_ENTRY_BYTES), 10 * CQ_ENTRY_BYTES)
    elif damage == "zeros inside":
        pwrite(last, bytes(5 * CQ_ENTRY_BYTES), 2 * CQ_ENTRY_BYTES)
    elif damage == "file missing":
        cq_path(tmp_path, 0, 1).unlink()
    else:  # a zeroed stretch makes the end look earlier than it is
        last = cq_path(tmp_path, 0, 2)
        pwrite(last, bytes(25 * CQ_ENTRY_BYTES), 0)
    store = MessageStore.open(tmp_path, CFG)
    try:
        assert store.recovery_report is not None
        assert store.recovery_report.rebuilt_queues == ("T/0",)
        assert served(store, 0) == list(range(0, 260, 2))
        assert served(store, 1) == list(range(1, 260, 2))
    finally:
        await store.close()
    store = MessageStore.open(tmp_path, CFG)  # durable: nothing to rebuild the second time
    try:
        assert store.recovery_report is not None and store.recovery_report.rebuilt_queues == ()
        assert served(store, 0) == list(range(0, 260, 2))
    finally:
        await store.close()


async def test_entries_past_the_end_that_hide_stored_records_are_redispatched(
    tmp_path: Path,
) -> None:
    """Damage that looks like a crash's dirty tail (entries pointing past the CommitLog's
    end) over entries whose records are stored: the records are dispatched again."""
    await build(tmp_path, 260)  # queue 0: 130 entries in files of 40; the last file 10
    past_end = CQ_ENTRY.pack(10**12, 1000, 0)
    pwrite(cq_path(tmp_path, 0, 3), past_end * 5, 5 * CQ_ENTRY_BYTES)  # entries 125-129
    store = MessageStore.open(tmp_path, CFG)
    try:
        assert store.recovery_report is not None
        assert store.recovery_report.dropped_cq_entries == 5
        assert served(store, 0) == list(range(0, 260, 2))
        assert served(store, 1) == list(range(1, 260, 2))
    finally:
        await store.close()


async def test_an_entry_pointing_at_another_record_is_found(tmp_path: Path) -> None:
    """Well-formed entries that lead to the wrong records: the deep check walks back."""
    await build(tmp_path)
    last = cq_path(tmp_path, 0, 1)
    entries = last.read_bytes()
    # Queue 0's last three entries now point at queue 1's records (the entries of queue 1).
    other = cq_path(tmp_path, 1, 1).read_bytes()
    pwrite(last, other[37 * CQ_ENTRY_BYTES : 40 * CQ_ENTRY_BYTES], 37 * CQ_ENTRY_BYTES)
    assert last.read_bytes() != entries
    store = MessageStore.open(tmp_path, CFG)
    try:
        assert store.recovery_report is not None
        assert store.recovery_report.rebuilt_queues == ("T/0",)
        assert served(store, 0) == EVEN
    finally:
        await store.close()


def zero_in_first_segment(path: Path, placed: dict[int, tuple[int, int]]) -> set[int]:
    """Zero 2 KiB from a record start in the middle of the oldest segment; the message
    numbers whose records start there (the bytes a CRC would not cover, a record's
    properties, are not what this damage is about)."""
    at = min(phys for phys, _ in placed.values() if phys >= 6000)
    length = 2048
    pwrite(path / "commitlog" / f"{0:020d}", bytes(length), at)
    return {i for i, (phys, _) in placed.items() if at <= phys < at + length}


async def test_damage_in_an_old_segment_refuses_open_naming_file_and_offset(tmp_path: Path) -> None:
    placed = await build(tmp_path, 400)
    hit = zero_in_first_segment(tmp_path, placed)
    first = min(placed[i][0] for i in hit)
    with pytest.raises(DamagedSegment) as info:
        MessageStore.open(tmp_path, CFG)
    assert isinstance(info.value, UnreadableFile) and isinstance(info.value, CorruptRecord)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'commitlog' / f'{0:020d}'}: damaged at offset {first}")
    assert "--skip-damaged-segments" in text
    # Without the old-segment walk the damage goes unseen at open (the former behaviour),
    # but is still never served.
    store = MessageStore.open(tmp_path, attrs.evolve(CFG, check_old_segments_on_open=False))
    try:
        got = served(store, 0) + served(store, 1)
        assert set(got) == set(range(400)) - hit
    finally:
        await store.close()


async def test_skipped_damage_is_never_served_and_queues_rebuild_across_it(tmp_path: Path) -> None:
    placed = await build(tmp_path, 400)
    hit = zero_in_first_segment(tmp_path, placed)
    store = MessageStore.open(tmp_path, SKIP)
    try:
        report = store.recovery_report
        assert report is not None and len(report.skipped_damage) == 1
        damage = report.skipped_damage[0]
        assert damage.offset == min(placed[i][0] for i in hit)
        after = max(placed[i][0] for i in hit) + 1
        assert damage.end_offset == min(phys for phys, _ in placed.values() if phys >= after)
        got = served(store, 0) + served(store, 1)
        assert sorted(got) == sorted(set(range(400)) - hit)
        assert store.read_record(damage.offset) is None
        with pytest.raises(StorageError, match="cannot replicate"):
            store.read_raw(damage.offset, 4096)
        before = store.read_raw(0, 1 << 20)
        assert len(before) == damage.offset  # a slave gets everything up to the damage
        max_offsets = [store.max_offset("T", q) for q in (0, 1)]
    finally:
        await store.close()
    # Rebuilding every queue from the CommitLog jumps the damage and keeps the offsets.
    shutil.rmtree(tmp_path / "consumequeue")
    store = MessageStore.open(tmp_path, SKIP)
    try:
        assert [store.max_offset("T", q) for q in (0, 1)] == max_offsets
        got = served(store, 0) + served(store, 1)
        assert sorted(got) == sorted(set(range(400)) - hit)
        res = store.get_messages("g", "T", 0, min(hit) // 2, max_count=1, max_bytes=10**6)
        assert res.status in (S.FOUND, S.MESSAGE_WAS_REMOVING)
        assert all(int(r.body[:5]) not in hit for r in iter_records(res.body))
    finally:
        await store.close()
