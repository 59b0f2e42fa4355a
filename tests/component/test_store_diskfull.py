"""A full disk: appends fail with DiskFull, nothing partial stays, reads go on."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import trio

import broker.store.commitlog as commitlog_module
import broker.store.replica as replica_module
from broker.store.checkpoint import Checkpoint
from broker.store.config import StoreConfig
from broker.store.pull import GetMessageStatus as S
from broker.store.results import AppendResult
from broker.store.store import MessageStore
from protocol.errors import DiskFull, StorageError
from protocol.message import MessageRecord, encode_record
from tests.component.broker_fixtures import wait_until

CFG = StoreConfig(
    segment_bytes=64 * 1024, index_slots=16, index_entries=100, min_free_disk_bytes=0,
    disk_check_interval_s=0.0,
)  # fmt: skip


def msg(i: int) -> MessageRecord:
    return MessageRecord(
        topic="T",
        body=b"z" * 700,
        queue_id=0,
        born_timestamp_ms=1,
        born_host=("1.2.3.4", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
    )


async def test_low_free_space_threshold_makes_the_store_read_only(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    r = [store.put_message(msg(i)) for i in range(3)]
    await store.close()
    free = shutil.disk_usage(tmp_path).free
    tight = StoreConfig(
        segment_bytes=64 * 1024, index_slots=16, index_entries=100, disk_check_interval_s=0.0,
        min_free_disk_bytes=free + (1 << 40),
    )  # fmt: skip
    store = MessageStore.open(tmp_path, tight)
    with pytest.raises(DiskFull, match="bytes free"):
        store.put_message(msg(3))
    assert store.statistics().disk_full
    assert store.max_physical_offset == r[-1].end_offset
    res = store.get_messages("g", "T", 0, 0, max_count=10, max_bytes=10**6)
    assert res.status is S.FOUND and res.message_count == 3
    await store.close()
    store = MessageStore.open(tmp_path, CFG)
    assert store.put_message(msg(3)).queue_offset == 3
    await store.close()


async def test_enospc_mid_write_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MessageStore.open(tmp_path, CFG)
    first = store.put_message(msg(0))
    real_pwrite = os.pwrite

    def failing(fd: int, data: bytes, pos: int) -> int:
        if len(data) > 100:  # CommitLog records; ConsumeQueue entries are 20 bytes
            real_pwrite(fd, bytes(data)[:300], pos)  # part of it reaches the file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, pos)

    monkeypatch.setattr(commitlog_module.os, "pwrite", failing)
    with pytest.raises(DiskFull, match="no space left"):
        store.put_message(msg(1))
    monkeypatch.undo()
    assert store.max_physical_offset == first.end_offset
    assert store._clog.read(first.end_offset, 300) == bytes(300)  # the partial bytes are gone
    assert store.max_offset("T", 0) == 1
    second = store.put_message(msg(1))
    assert (second.physical_offset, second.queue_offset) == (first.end_offset, 1)
    await store.close()
    store = MessageStore.open(tmp_path, CFG)
    assert store.recovery_report is not None and store.recovery_report.truncated_bytes == 0
    assert store.max_offset("T", 0) == 2
    await store.close()


def put_held(store: MessageStore, m: MessageRecord) -> AppendResult:
    """A send's put: its bytes held until ``commit_held``."""
    return store.put_encoded(
        m.topic, m.queue_id, m.sys_flag, encode_record(m), m.properties,
        body_bytes=len(m.body), hold=True,
    )  # fmt: skip


async def test_held_puts_are_written_by_commit_reads_and_the_bound(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    first = put_held(store, msg(0))
    assert store._clog.held_bytes == first.wrote_bytes
    assert store._clog.read(first.physical_offset, 4) == first.wrote_bytes.to_bytes(4, "big")
    assert store._clog.held_bytes == 0  # the read wrote it first
    results = [put_held(store, msg(i)) for i in range(1, 4)]
    assert store.commit_held() and store._clog.held_bytes == 0
    count = (commitlog_module.HOLD_LIMIT_BYTES // results[0].wrote_bytes) + 1
    for i in range(count):  # past the bound: written without anyone committing
        put_held(store, msg(i))
    assert store._clog.held_bytes < commitlog_module.HOLD_LIMIT_BYTES
    await store.close()
    store = MessageStore.open(tmp_path, CFG)
    assert store.max_offset("T", 0) == 4 + count  # close wrote the rest
    await store.close()


async def test_a_failed_commit_refuses_puts_until_the_state_is_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on the held bytes' write: the log is cut back where they began, puts are
    refused, the flush loop cuts queue entries, index keys and queue offsets back, puts
    resume at the same offsets, and a restart finds exactly what was written before."""
    store = MessageStore.open(tmp_path, CFG)
    kept = [put_held(store, msg(i)) for i in range(2)]
    assert store.commit_held()
    lost = [put_held(store, msg(i)) for i in range(2, 5)]
    real_pwritev = os.pwritev

    def failing(fd: int, buffers: list[bytes], pos: int) -> int:
        real_pwritev(fd, buffers[:1], pos)  # part of it reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(commitlog_module.os, "pwritev", failing)
    assert not store.commit_held()  # reported once: the caller drops its answers
    monkeypatch.undo()
    assert store.commit_held()
    assert store.max_physical_offset == kept[-1].end_offset
    assert store._clog.read(lost[0].physical_offset, 300) == bytes(300)
    with pytest.raises(StorageError, match="a CommitLog write failed"):
        put_held(store, msg(9))
    real_checkpoint = replica_module.write_checkpoint
    checkpoint_failures: list[int] = []

    def checkpoint_once_failing(path: Path, ckpt: Checkpoint) -> None:
        if not checkpoint_failures:  # the disk is still full at the first try
            checkpoint_failures.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_checkpoint(path, ckpt)

    monkeypatch.setattr(replica_module, "write_checkpoint", checkpoint_once_failing)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await wait_until(lambda: bool(checkpoint_failures), what="a first try")
        with pytest.raises(StorageError, match="a CommitLog write failed"):
            put_held(store, msg(9))  # still refused: the next tick tries again
        await wait_until(lambda: store._clog.failed_at is None, what="the cut back")
        nursery.cancel_scope.cancel()
    monkeypatch.undo()
    assert store.max_offset("T", 0) == 2
    again = put_held(store, msg(2))
    assert (again.physical_offset, again.queue_offset) == (lost[0].physical_offset, 2)
    res = store.get_messages("g", "T", 0, 0, max_count=10, max_bytes=10**6)
    assert res.status is S.FOUND and res.message_count == 3
    await store.close()
    store = MessageStore.open(tmp_path, CFG)
    assert store.recovery_report is not None and store.recovery_report.truncated_bytes == 0
    assert store.max_offset("T", 0) == 3
    await store.close()


async def test_a_put_that_writes_held_bytes_first_is_refused_when_that_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put that is not held (a delayed message after plain sends in one read) writes
    the held bytes before its own. When that write fails the put is refused: its record
    must not go where the cut-back log now ends, stamped with the offset it reserved
    past the held bytes, and be answered PUT_OK while the cut back takes it away."""
    store = MessageStore.open(tmp_path, CFG)
    kept = put_held(store, msg(0))
    assert store.commit_held()
    put_held(store, msg(1))
    put_held(store, msg(2))
    real_pwritev = os.pwritev

    def failing(fd: int, buffers: list[bytes], pos: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(commitlog_module.os, "pwritev", failing)
    with pytest.raises(StorageError, match="CommitLog write failed"):
        store.put_message(msg(3))
    monkeypatch.setattr(commitlog_module.os, "pwritev", real_pwritev)
    assert store.max_physical_offset == kept.end_offset
    assert store._clog.read(kept.end_offset, 300) == bytes(300)  # nothing written past it
    assert not store.commit_held()  # reported once: the caller drops its answers
    await store.close()
    store = MessageStore.open(tmp_path, CFG)
    assert store.max_offset("T", 0) == 1
    await store.close()
