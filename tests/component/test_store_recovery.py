"""Opening a store again: clean restarts, crashes, rebuilt queues, torn tails, corruption."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import attrs
import pytest

from broker.store.checkpoint import Checkpoint
from broker.store.config import StoreConfig
from broker.store.pull import GetMessageStatus as S
from broker.store.store import MessageStore
from protocol.errors import CorruptRecord
from protocol.message import MessageRecord, encode_record, iter_records

SEG = 64 * 1024
CFG = StoreConfig(
    segment_bytes=SEG,
    cq_entries_per_file=40,
    index_slots=64,
    index_entries=300,
    min_free_disk_bytes=0,
)


def msg(i: int, *, queue_id: int = 0) -> MessageRecord:
    return MessageRecord(
        topic="T",
        body=f"body-{i}".encode() * 100,
        queue_id=queue_id,
        born_timestamp_ms=1_700_000_000_000,
        born_host=("192.168.0.9", 5555),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"TAGS": "A", "KEYS": f"k{i}", "UNIQ_KEY": f"U{i:031d}"},
    )


def all_bodies(store: MessageStore, queue_id: int = 0) -> list[bytes]:
    out: list[bytes] = []
    offset = store.min_offset("T", queue_id)
    while True:
        res = store.get_messages("g", "T", queue_id, offset, max_count=32, max_bytes=10**6)
        if res.status is not S.FOUND:
            return out
        out += [r.body for r in iter_records(res.body)]
        offset = res.next_begin_offset


def crash(store: MessageStore) -> None:
    """Drop the store like a killed process: no flush, no checkpoint, abort marker stays."""
    store._close_files()


def fill(store: MessageStore, n: int, start: int = 0) -> list[int]:
    return [
        store.put_message(msg(i, queue_id=i % 2)).physical_offset for i in range(start, start + n)
    ]


async def test_clean_restart_keeps_everything(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    fill(store, 150)
    end = store.max_physical_offset
    await store.close()
    assert not (tmp_path / "abort").exists()
    store = MessageStore.open(tmp_path, CFG)
    rep = store.recovery_report
    assert rep is not None
    assert (rep.end_offset, rep.truncated_bytes, rep.redispatched_count) == (end, 0, 0)
    assert not rep.abnormal_shutdown and rep.checkpoint_valid
    # A clean close still re-verifies the last segments below the checkpoint.
    assert rep.scanned_from < end and rep.scanned_from % CFG.segment_bytes == 0
    assert all_bodies(store, 0) == [msg(i).body for i in range(0, 150, 2)]
    # Queue offsets continue where they were.
    assert store.put_message(msg(150)).queue_offset == 75
    await store.close()
    trusting = MessageStore.open(tmp_path, attrs.evolve(CFG, verify_segments_on_open=0))
    assert trusting.recovery_report is not None
    assert trusting.recovery_report.scanned_from == trusting.max_physical_offset
    await trusting.close()


async def test_crash_without_checkpoint_of_recent_writes(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    fill(store, 30)
    await store.checkpoint()
    fill(store, 70, start=30)
    end = store.max_physical_offset
    crash(store)
    assert (tmp_path / "abort").exists()
    store = MessageStore.open(tmp_path, CFG)
    rep = store.recovery_report
    assert rep is not None and rep.abnormal_shutdown
    assert rep.end_offset == end and rep.truncated_bytes == 0
    assert all_bodies(store, 1) == [msg(i).body for i in range(1, 100, 2)]
    assert store.put_message(msg(100)).queue_offset == 50
    assert store.query_messages("T", "k99", 5, 0, 2**62).physical_offsets
    await store.close()


async def test_consume_queues_and_index_rebuilt_after_deleting_them(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    offsets = fill(store, 120)
    await store.close()
    shutil.rmtree(tmp_path / "consumequeue")
    shutil.rmtree(tmp_path / "index")
    store = MessageStore.open(tmp_path, CFG)
    rep = store.recovery_report
    assert rep is not None and rep.redispatched_count == 120
    assert all_bodies(store, 0) == [msg(i).body for i in range(0, 120, 2)]
    assert store.max_offset("T", 1) == 60
    assert store.query_index("T", "k7", 5, 0, 2**62) == [offsets[7]]
    assert store.query_index("T", f"U{77:031d}", 5, 0, 2**62) == [offsets[77]]
    await store.close()
    # And a restart after that rebuild re-dispatches nothing (no duplicate index keys).
    store = MessageStore.open(tmp_path, CFG)
    assert store.recovery_report is not None
    assert store.recovery_report.redispatched_count == 0
    assert store.query_index("T", "k7", 5, 0, 2**62) == [offsets[7]]
    await store.close()


async def test_index_of_another_geometry_is_rebuilt(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    offsets = fill(store, 40)
    await store.close()
    other = StoreConfig(
        segment_bytes=SEG,
        cq_entries_per_file=40,
        index_slots=32,
        index_entries=100,
        min_free_disk_bytes=0,
    )
    store = MessageStore.open(tmp_path, other)
    assert store.query_index("T", "k3", 5, 0, 2**62) == [offsets[3]]
    await store.close()


async def test_torn_tail_is_cut_and_kept(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    fill(store, 50)
    end = store.max_physical_offset
    seg_path = store._clog.segments[-1].path
    seg_start = store._clog.segments[-1].start
    await store.close()
    # A half-written record after the last one, as a crash mid-write leaves it.
    half = encode_record(msg(50))[:300]
    fd = os.open(seg_path, os.O_RDWR)
    os.pwrite(fd, half, end - seg_start)
    os.close(fd)
    store = MessageStore.open(tmp_path, CFG)
    rep = store.recovery_report
    assert rep is not None
    assert rep.end_offset == end
    assert rep.truncated_bytes == 300
    assert rep.broken_file == seg_path.with_name(seg_path.name + ".broken")
    assert rep.broken_file.read_bytes() == half
    assert all_bodies(store, 0) == [msg(i).body for i in range(0, 50, 2)]
    assert store.put_message(msg(50)).physical_offset == end
    await store.close()
    store = MessageStore.open(tmp_path, CFG)
    assert store.max_offset("T", 0) == 26
    await store.close()


async def test_torn_tail_after_a_crash_with_a_stale_checkpoint(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    fill(store, 20)
    await store.checkpoint()
    fill(store, 20, start=20)
    end = store.max_physical_offset
    seg = store._clog.segments[-1]
    garbage = encode_record(msg(99))
    os.pwrite(seg.fd, garbage[: len(garbage) // 2] + b"\x55" * 7, end - seg.start)
    crash(store)
    store = MessageStore.open(tmp_path, CFG)
    rep = store.recovery_report
    assert rep is not None and rep.end_offset == end and rep.truncated_bytes > 0
    assert len(all_bodies(store, 0)) == 20
    await store.close()


async def test_corrupt_record_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    offsets = fill(store, 60)
    await store.checkpoint()
    seg = store._clog.segment_for(offsets[10])
    assert seg is not None
    path, pos = seg.path, offsets[10] - seg.start + 100  # inside the body: CRC breaks
    crash(store)
    # Make the checkpoint claim less than the data so the walk covers record 10 ...
    data = bytearray(path.read_bytes())
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    (tmp_path / "checkpoint").write_bytes(b"torn")
    with pytest.raises(CorruptRecord) as info:
        MessageStore.open(tmp_path, CFG)
    text = str(info.value)
    assert str(path) in text and str(offsets[10]) in text
    assert "valid record follows" in text
    # ... and the store is still closed (lock released), so a second attempt says the same.
    with pytest.raises(CorruptRecord):
        MessageStore.open(tmp_path, CFG)


async def test_bad_bytes_below_the_fsynced_offset_refuse_to_start(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    offsets = fill(store, 20)
    await store.close()
    ckpt = Checkpoint.decode((tmp_path / "checkpoint").read_bytes())
    assert ckpt is not None and ckpt.flushed_offset == store.max_physical_offset
    # Zero the last record: with nothing valid after it, only the checkpoint tells that
    # these bytes had been fsynced, so this is loss, not a torn tail.
    seg = tmp_path / "commitlog" / f"{0:020d}"
    data = bytearray(seg.read_bytes())
    start = offsets[-1] % SEG
    data[start:] = bytes(len(data) - start)
    seg.write_bytes(bytes(data))
    ck = Checkpoint(flushed_offset=ckpt.flushed_offset, dispatched_offset=offsets[-1])
    (tmp_path / "checkpoint").write_bytes(ck.encode())
    with pytest.raises(CorruptRecord, match=rf"{seg}.*below the fsynced offset"):
        MessageStore.open(tmp_path, CFG)


async def test_torn_checkpoint_recovers_from_the_beginning(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    fill(store, 90)
    end = store.max_physical_offset
    await store.close()
    (tmp_path / "checkpoint").write_bytes(b"\x00" * 10)
    store = MessageStore.open(tmp_path, CFG)
    rep = store.recovery_report
    assert rep is not None and not rep.checkpoint_valid
    assert rep.scanned_from == 0 and rep.end_offset == end
    # Queues were intact: entries checked, none rewritten; the newest indexed record is
    # indexed again (RocketMQ re-indexes from the index's end offset inclusive).
    assert rep.redispatched_count <= 1
    assert len(all_bodies(store, 0)) == 45
    await store.close()


async def test_consume_queue_entries_past_the_end_are_dropped(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    offsets = fill(store, 30)
    await store.close()
    # Cut the CommitLog back by hand (as a lost page cache would) and fix the checkpoint.
    seg = tmp_path / "commitlog" / f"{0:020d}"
    data = bytearray(seg.read_bytes())
    cut = offsets[25] % SEG
    data[cut:] = bytes(len(data) - cut)
    seg.write_bytes(bytes(data))
    (tmp_path / "checkpoint").write_bytes(
        Checkpoint(flushed_offset=offsets[20], dispatched_offset=offsets[20]).encode()
    )
    store = MessageStore.open(tmp_path, CFG)
    rep = store.recovery_report
    assert rep is not None and rep.end_offset == offsets[25]
    assert rep.dropped_cq_entries == 5
    assert rep.dropped_index_entries == 10  # UNIQ_KEY + KEYS of 5 records
    assert store.max_offset("T", 0) + store.max_offset("T", 1) == 25
    # No queue offset is handed out twice (apache/rocketmq#7689).
    assert store.put_message(msg(25, queue_id=1)).queue_offset == 12
    assert store.query_index("T", "k27", 5, 0, 2**62) == []
    await store.close()


async def test_torn_record_at_the_start_of_a_fresh_segment(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    while len(store._clog.segments) < 2:
        store.put_message(msg(0))
    # Cut back to the roll point: the new segment is empty, the old one ends with a blank.
    second = store._clog.segments[1].start
    await store.truncate_to(second)
    count = store.max_offset("T", 0)
    await store.close()
    seg = tmp_path / "commitlog" / f"{second:020d}"
    fd = os.open(seg, os.O_RDWR)
    os.pwrite(fd, encode_record(msg(5))[:200], 0)
    os.close(fd)
    store = MessageStore.open(tmp_path, CFG)
    rep = store.recovery_report
    assert rep is not None and (rep.end_offset, rep.truncated_bytes) == (second, 200)
    assert store.max_offset("T", 0) == count
    assert store.put_message(msg(6)).physical_offset == second
    await store.close()


async def test_a_missing_segment_file_refuses_to_start(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    while len(store._clog.segments) < 3:
        store.put_message(msg(0))
    await store.close()
    (tmp_path / "commitlog" / f"{SEG:020d}").unlink()
    with pytest.raises(CorruptRecord, match="missing"):
        MessageStore.open(tmp_path, CFG)
