"""SYNC_FLUSH group commit, flush timeouts, ASYNC_FLUSH and the checkpoint round."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio

import broker.store.durability as durability_module
from broker.store.checkpoint import Checkpoint
from broker.store.config import FlushMode, StoreConfig
from broker.store.flush import fsync_fds
from broker.store.store import MessageStore
from protocol.message import MessageRecord

CFG = StoreConfig(
    segment_bytes=1 << 20,
    index_slots=64,
    index_entries=1000,
    min_free_disk_bytes=0,
    flush_mode=FlushMode.SYNC_FLUSH,
    flush_interval_s=60.0,
    checkpoint_interval_s=60.0,
    retention_check_interval_s=60.0,
)


def msg(i: int) -> MessageRecord:
    return MessageRecord(
        topic="T",
        body=b"x" * 500,
        queue_id=0,
        born_timestamp_ms=1,
        born_host=("1.2.3.4", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"UNIQ_KEY": f"U{i}"},
    )


@pytest.fixture
def slow_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every fsync round take 50 ms (in its worker thread) and count the rounds."""
    rounds: list[int] = []

    def slow(fds: list[int], directory: Path | None = None) -> int:
        time.sleep(0.05)
        rounds.append(len(fds))
        return fsync_fds(fds, directory)

    monkeypatch.setattr(durability_module, "fsync_fds", slow)
    return rounds


async def test_one_fsync_serves_many_waiters(tmp_path: Path, slow_fsync: list[int]) -> None:
    store = MessageStore.open(tmp_path, CFG)
    acked: list[int] = []

    async def send(i: int) -> None:
        r = store.put_message(msg(i))
        assert await store.wait_flushed(r.end_offset, timeout_s=10)
        assert store.flushed_offset >= r.end_offset
        acked.append(i)

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        with trio.fail_after(10):
            async with trio.open_nursery() as senders:
                for i in range(100):
                    senders.start_soon(send, i)
                    if i % 25 == 24:
                        await trio.sleep(0.01)  # waves of senders while an fsync is running
        stats = store.statistics()
        assert len(acked) == 100
        # 100 waiters, arriving in four waves, are served by a handful of group fsyncs.
        assert 1 <= stats.flush_rounds <= 6, stats
        assert stats.flush_waiters == 0
        await store.close()


async def test_flush_timeout_returns_false_and_keeps_the_data(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)  # no flusher running: nothing will fsync
    r = store.put_message(msg(0))
    with trio.fail_after(5):
        assert await store.wait_flushed(r.end_offset, timeout_s=0.05) is False
    assert store.statistics().flush_waiters == 1  # abandoned, dropped by the next release
    # Stored but not fsynced: not readable yet under SYNC_FLUSH (dispatch_flushed_only).
    assert store.read_record(r.physical_offset) is None
    assert not store.get_messages("g", "T", 0, 0, max_count=1, max_bytes=4096).records
    assert await store.flush() == r.end_offset
    assert store.read_record(r.physical_offset) is not None
    assert len(store.get_messages("g", "T", 0, 0, max_count=1, max_bytes=4096).records) == 1
    assert store.statistics().flush_waiters == 0
    assert await store.wait_flushed(r.end_offset, timeout_s=0.05) is True
    await store.close()


async def test_waiter_table_is_bounded(tmp_path: Path) -> None:
    cfg = StoreConfig(
        segment_bytes=1 << 20, index_slots=64, index_entries=1000, min_free_disk_bytes=0,
        max_flush_waiters=2,
    )  # fmt: skip
    store = MessageStore.open(tmp_path, cfg)
    r = store.put_message(msg(0))
    results: list[bool] = []

    async def wait() -> None:
        results.append(await store.wait_flushed(r.end_offset, timeout_s=5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        nursery.start_soon(wait)
        await trio.sleep(0.01)
        assert await store.wait_flushed(r.end_offset, timeout_s=5) is False  # refused at once
        assert store.statistics().flush_waiters_refused == 1
        await store.flush()
    assert results == [True, True]
    await store.close()


async def test_async_flush_runs_periodically(tmp_path: Path) -> None:
    cfg = StoreConfig(
        segment_bytes=1 << 20, index_slots=64, index_entries=1000, min_free_disk_bytes=0,
        flush_mode=FlushMode.ASYNC_FLUSH, flush_interval_s=0.02, checkpoint_interval_s=0.05,
    )  # fmt: skip
    store = MessageStore.open(tmp_path, cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        r = store.put_message(msg(0))
        with trio.fail_after(5):
            while True:  # the checkpoint round records it too
                ckpt = Checkpoint.decode((tmp_path / "checkpoint").read_bytes())
                if ckpt is not None and ckpt.dispatched_offset == r.end_offset:
                    break
                await trio.sleep(0.01)
        assert store.flushed_offset == ckpt.flushed_offset == r.end_offset
        # wait_flushed also works in ASYNC mode (served by the next periodic round).
        r2 = store.put_message(msg(1))
        with trio.fail_after(5):
            assert await store.wait_flushed(r2.end_offset, timeout_s=5)
        await store.close()  # stops run()


async def test_close_flushes_and_wakes_waiters(tmp_path: Path) -> None:
    store = MessageStore.open(tmp_path, CFG)
    r = store.put_message(msg(0))
    results: list[bool] = []

    async def wait() -> None:
        results.append(await store.wait_flushed(r.end_offset, timeout_s=5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.01)
        await store.close()
    assert results == [True]
    ckpt = Checkpoint.decode((tmp_path / "checkpoint").read_bytes())
    assert ckpt is not None and ckpt.flushed_offset == r.end_offset
    assert not (tmp_path / "abort").exists()


async def test_timeouts_are_enforced_while_an_fsync_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(fds: list[int], directory: Path | None = None) -> int:
        release.wait(10)  # a disk that does not answer
        return fsync_fds(fds, directory)

    store = MessageStore.open(tmp_path, CFG)
    monkeypatch.setattr(durability_module, "fsync_fds", stuck)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        r = store.put_message(msg(0))
        start = trio.current_time()
        with trio.fail_after(5):
            assert await store.wait_flushed(r.end_offset, timeout_s=0.1) is False
        assert 0.1 <= trio.current_time() - start < 1.0
        assert store.read_record(r.physical_offset) is None  # stored, readable once fsynced
        release.set()
        with trio.fail_after(5):
            assert await store.wait_flushed(r.end_offset, timeout_s=5) is True
        assert store.read_record(r.physical_offset) is not None
        await store.close()


async def test_close_while_running_flushes_pending_waiters(
    tmp_path: Path, slow_fsync: list[int]
) -> None:
    store = MessageStore.open(tmp_path, CFG)
    results: list[bool] = []

    async def send(i: int) -> None:
        r = store.put_message(msg(i))
        results.append(await store.wait_flushed(r.end_offset, timeout_s=5))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            for i in range(20):
                nursery.start_soon(send, i)
            await trio.sleep(0.01)  # the first group fsync is running (50 ms)
            for i in range(20, 30):
                nursery.start_soon(send, i)
            await trio.lowlevel.checkpoint()
            await store.close()
    assert results == [True] * 30
