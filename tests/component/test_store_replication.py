"""What replication needs from the store: raw reads and appends, truncation, confirm offset."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from broker.store.checkpoint import write_checkpoint
from broker.store.config import StoreConfig
from broker.store.pull import GetMessageStatus as S
from broker.store.store import MessageStore
from protocol.errors import CorruptRecord, StorageError
from protocol.message import MessageRecord, iter_records

SEG = 32 * 1024
CFG = StoreConfig(
    segment_bytes=SEG,
    cq_entries_per_file=30,
    index_slots=32,
    index_entries=200,
    min_free_disk_bytes=0,
)


def msg(i: int, *, queue_id: int = 0) -> MessageRecord:
    return MessageRecord(
        topic="T",
        body=bytes([i % 256]) * 900,
        queue_id=queue_id,
        born_timestamp_ms=1,
        born_host=("1.2.3.4", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"KEYS": f"k{i}", "TAGS": "A"},
    )


def replicate(master: MessageStore, slave: MessageStore, chunk: int = 5000) -> int:
    pieces = 0
    while slave.max_physical_offset < master.max_physical_offset:
        data = master.read_raw(slave.max_physical_offset, chunk)
        assert data
        slave.append_raw(data, slave.max_physical_offset)
        pieces += 1
    return pieces


def log_bytes(store: MessageStore) -> bytes:
    return b"".join(
        store._clog.read(s.start, min(s.size, store.max_physical_offset - s.start)) or b""
        for s in store._clog.segments
    )


async def test_slave_copies_the_log_byte_for_byte(tmp_path: Path) -> None:
    master = MessageStore.open(tmp_path / "m", CFG)
    slave = MessageStore.open(tmp_path / "s", CFG)
    for i in range(100):
        master.put_message(msg(i, queue_id=i % 3))
    assert replicate(master, slave) > 5
    assert slave.max_physical_offset == master.max_physical_offset
    assert log_bytes(slave) == log_bytes(master)
    for q in range(3):
        assert slave.max_offset("T", q) == master.max_offset("T", q)
        a = master.get_messages("g", "T", q, 0, max_count=50, max_bytes=10**6)
        b = slave.get_messages("g", "T", q, 0, max_count=50, max_bytes=10**6)
        assert a.body == b.body and a.status is S.FOUND
    assert slave.query_index("T", "k42", 5, 0, 2**62) == master.query_index("T", "k42", 5, 0, 2**62)
    # A promoted slave continues the queue offsets.
    assert slave.put_message(msg(100, queue_id=1)).queue_offset == 33
    await master.close()
    await slave.close()


async def test_append_raw_checks(tmp_path: Path) -> None:
    master = MessageStore.open(tmp_path / "m", CFG)
    slave = MessageStore.open(tmp_path / "s", CFG)
    for i in range(5):
        master.put_message(msg(i))
    data = master.read_raw(0, 10**6)
    with pytest.raises(CorruptRecord, match="segment boundary"):
        slave.append_raw(data, 100)
    with pytest.raises(CorruptRecord):
        slave.append_raw(data[:-1], 0)  # a partial record
    bad = bytearray(data)
    bad[200] ^= 1  # a body byte: CRC mismatch
    with pytest.raises(CorruptRecord, match="CRC"):
        slave.append_raw(bytes(bad), 0)
    assert slave.max_physical_offset == 0  # nothing was written by the failed calls
    first = master.read_raw(0, 10)  # at least one whole record
    assert len(first) > 10
    assert slave.append_raw(first, 0) == len(first)
    with pytest.raises(CorruptRecord, match="says it lies at 0"):
        slave.append_raw(first, len(first))  # records carry their own offset
    with pytest.raises(CorruptRecord, match="starts at 5"):
        slave.append_raw(first, 5)
    with pytest.raises(StorageError, match="boundary"):
        master.read_raw(3, 100)
    await master.close()
    await slave.close()


async def test_empty_slave_starts_at_the_masters_segment(tmp_path: Path) -> None:
    master = MessageStore.open(tmp_path / "m", CFG)
    for i in range(80):
        master.put_message(msg(i))
    start = master._clog.segments[-1].start
    assert start > 0
    slave = MessageStore.open(tmp_path / "s", CFG)
    with pytest.raises(CorruptRecord, match="segment boundary"):
        slave.append_raw(master.read_raw(start, 100), start + 1)
    slave.append_raw(master.read_raw(start, 10**6), start)
    assert slave.min_physical_offset == start
    assert slave.max_physical_offset == master.max_physical_offset
    first_q = master.get_messages("g", "T", 0, 0, max_count=1, max_bytes=1).next_begin_offset
    res = slave.get_messages("g", "T", 0, 0, max_count=100, max_bytes=10**6)
    assert res.status is S.OFFSET_TOO_SMALL
    assert res.next_begin_offset == slave.min_offset("T", 0) > first_q
    await slave.close()
    slave = MessageStore.open(tmp_path / "s", CFG)
    assert slave.min_physical_offset == start
    assert slave.max_offset("T", 0) == 80
    await master.close()
    await slave.close()


async def test_read_raw_of_the_last_put_is_its_bytes_without_a_read(tmp_path: Path) -> None:
    """A streamer asking for exactly the last put gets the put's own bytes (no pread),
    equal to the log; anything else (more puts since, a smaller limit, a cut and other
    bytes at the same offset) is read from the log as before."""
    master = MessageStore.open(tmp_path / "m", CFG)
    slave = MessageStore.open(tmp_path / "s", CFG)
    clog = master._clog
    segments = len(clog.segments)
    for i in range(60):  # crosses segments: a blank marker pads each one
        r = master.put_message(msg(i, queue_id=i % 2))
        data = master.read_raw(r.physical_offset, 5000)
        assert clog.last_append is not None and data is clog.last_append[1]
        assert data == clog.read(r.physical_offset, r.wrote_bytes)
        assert len(data) == r.wrote_bytes
    assert len(clog.segments) > segments + 1
    assert replicate(master, slave) > 5
    assert log_bytes(slave) == log_bytes(master)
    # More puts since: one read returns them together, as before.
    a = master.put_message(msg(70))
    b = master.put_message(msg(71))
    both = master.read_raw(a.physical_offset, 5000)
    assert len(both) == a.wrote_bytes + b.wrote_bytes
    # A limit below the put (a batch of two records): whole records from the log.
    batch = master.put_messages([msg(72), msg(73)])
    first = master.read_raw(batch.physical_offset, batch.wrote_bytes - 1)
    assert len(first) == batch.wrote_bytes // 2
    # A cut, then other bytes written raw at the same offset: those are read.
    cut = b.physical_offset
    await master.truncate_to(cut)
    assert clog.last_append is None
    other = MessageStore.open(tmp_path / "o", CFG)
    for i in range(60):
        other.put_message(msg(i, queue_id=i % 2))
    other.put_message(msg(70))
    o = other.put_message(msg(99))
    assert o.physical_offset == cut
    master.append_raw(other.read_raw(cut, 5000), cut)
    assert master.read_raw(cut, 5000) == other.read_raw(cut, 5000) != both[a.wrote_bytes :]
    for store in (master, slave, other):
        await store.close()


async def test_read_raw_of_a_held_put_is_a_copy_of_its_bytes(tmp_path: Path) -> None:
    """A held put's bytes are kept as handed over (no copy per put); a streamer asking
    for exactly that put gets them as bytes, once they are in the file."""
    store = MessageStore.open(tmp_path, CFG)
    r = store.put_messages([msg(1)], hold=True)
    assert store._clog.last_append is not None
    assert type(store._clog.last_append[1]) is bytearray
    data = store.read_raw(r.physical_offset, 5000)  # commits the held bytes first
    assert type(data) is bytes
    assert data == store._clog.read(r.physical_offset, r.wrote_bytes) != b""
    await store.close()


async def test_a_large_put_is_not_kept_and_reads_from_the_log(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, attrs.evolve(CFG, segment_bytes=1024 * 1024))
    big = store.put_messages([msg(i) for i in range(80)])  # ~78 KiB in one append
    assert big.wrote_bytes > 64 * 1024 and store._clog.last_append is None
    data = store.read_raw(big.physical_offset, 2 * big.wrote_bytes)
    assert data == store._clog.read(big.physical_offset, big.wrote_bytes)
    small = store.put_message(msg(1))
    assert store._clog.last_append == (
        small.physical_offset,
        store.read_raw(small.physical_offset, 5000),
    )
    await store.close()


async def test_truncate_to_drops_records_queue_entries_and_keys(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    results = [store.put_message(msg(i, queue_id=i % 2)) for i in range(60)]
    cut = results[40].physical_offset
    with pytest.raises(StorageError, match="record boundary"):
        await store.truncate_to(cut + 3)
    with pytest.raises(StorageError):
        await store.truncate_to(store.max_physical_offset + 1)
    await store.truncate_to(cut)
    assert store.max_physical_offset == cut
    assert store.max_offset("T", 0) == 20 and store.max_offset("T", 1) == 20
    assert store.query_index("T", "k41", 5, 0, 2**62) == []
    assert store.query_index("T", "k39", 5, 0, 2**62) == [results[39].physical_offset]
    assert store.read_record(results[45].physical_offset) is None
    r = store.put_message(msg(99, queue_id=0))
    assert (r.physical_offset, r.queue_offset) == (cut, 20)
    await store.close()
    store = MessageStore.open(tmp_path, CFG)
    assert store.max_physical_offset == r.end_offset
    assert store.recovery_report is not None and store.recovery_report.truncated_bytes == 0
    recs = list(
        iter_records(store.get_messages("g", "T", 0, 18, max_count=10, max_bytes=10**6).body)
    )
    assert [x.body[0] for x in recs] == [36, 38, 99]
    await store.close()


async def test_truncate_to_a_segment_boundary_and_rewrite(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    for i in range(100):
        store.put_message(msg(i))
    seg2 = store._clog.segments[2].start
    await store.truncate_to(seg2)
    assert store.max_physical_offset == seg2 and len(store._clog.segments) == 3
    r = store.put_message(msg(7))
    assert r.physical_offset == seg2
    await store.close()


async def test_controller_mode_dispatches_only_confirmed_data(tmp_path: Path) -> None:
    cfg = attrs.evolve(CFG, dispatch_confirmed_only=True)
    store = MessageStore.open(tmp_path, cfg)
    heard: list[int] = []
    store.add_arrival_listener(lambda t, q, end, code: heard.append(end))
    r = [store.put_message(msg(i)) for i in range(10)]
    assert [x.queue_offset for x in r] == list(range(10))
    assert store.max_offset("T", 0) == 0 and heard == []
    assert store.read_record(r[0].physical_offset) is None  # not visible yet
    store.set_confirm_offset(r[3].end_offset)
    assert store.max_offset("T", 0) == 4 and heard == [1, 2, 3, 4]
    store.set_confirm_offset(r[6].end_offset - 1)  # inside record 6: stops before it
    assert store.max_offset("T", 0) == 6
    assert store.dispatched_offset == r[5].end_offset
    await store.close()
    # After a restart the queue offsets of unconfirmed records are not handed out again
    # (apache/rocketmq#7689), and dispatch resumes from the persisted confirm offset.
    store = MessageStore.open(tmp_path, cfg)
    assert store.max_offset("T", 0) == 6
    assert store.confirm_offset == r[6].end_offset - 1
    assert store.put_message(msg(10)).queue_offset == 10
    store.set_confirm_offset(store.max_physical_offset)
    assert store.max_offset("T", 0) == 11
    await store.close()


async def test_controller_mode_crash_with_a_checkpoint_behind_the_queues(
    tmp_path: Path,
) -> None:
    """A crash after entries were dispatched past the last checkpoint's confirm offset:
    they are dropped on recovery and dispatched again, once, when confirmed again (found
    by the controller-mode rejoin test: a restarted old master failed every replicated
    batch with "entry for offset 45 but the queue ends at 50")."""
    cfg = attrs.evolve(CFG, dispatch_confirmed_only=True)
    store = MessageStore.open(tmp_path, cfg)
    r = [store.put_message(msg(i)) for i in range(10)]
    store.set_confirm_offset(r[3].end_offset)
    write_checkpoint(tmp_path / "checkpoint", store._checkpoint_value())  # confirmed to 3
    store.set_confirm_offset(r[9].end_offset)  # queues hold all 10, no checkpoint after
    assert store.max_offset("T", 0) == 10
    store._close_files()  # killed
    store = MessageStore.open(tmp_path, cfg)
    assert store.max_offset("T", 0) == 4  # only what the checkpoint knew was confirmed
    store.set_confirm_offset(store.max_physical_offset)  # confirmed again: dispatched once
    assert store.max_offset("T", 0) == 10
    assert store.put_message(msg(10)).queue_offset == 10
    store.set_confirm_offset(store.max_physical_offset)
    assert store.max_offset("T", 0) == 11
    await store.close()


async def test_truncating_store_refuses_puts(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    r = [store.put_message(msg(i)) for i in range(3)]
    store._truncating = True
    with pytest.raises(StorageError, match="truncating"):
        store.put_message(msg(3))
    store._truncating = False
    await store.truncate_to(r[1].physical_offset)
    assert store.put_message(msg(3)).queue_offset == 1
    await store.close()
