"""A full disk: appends fail with DiskFull, nothing partial stays, reads go on."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

import broker.store.commitlog as commitlog_module
from broker.store.config import StoreConfig
from broker.store.pull import GetMessageStatus as S
from broker.store.store import MessageStore
from protocol.errors import DiskFull
from protocol.message import MessageRecord

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
