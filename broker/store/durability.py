"""Durability and lifetime: group-commit flushing, checkpoints, retention, ``run``, ``close``.

Rules:
- SYNC_FLUSH: ``wait_flushed`` parks callers in a bounded table; one fsync releases every
  waiter it covers. ASYNC_FLUSH: a background fsync every ``flush_interval_s``.
- Durability order of a checkpoint round: note the dispatched offset, fsync the CommitLog,
  fsync ConsumeQueue and index files, then write the checkpoint.
- fsyncs and the checkpoint write run in worker threads on duplicated descriptors; a
  truncation meanwhile bumps the generation, so a stale fsync never raises the flushed
  offset past the cut.
- Retention deletes at most ``max_segments_deleted_per_round`` expired, flushed segments a
  round, never the active one, with the ConsumeQueue and index files pointing into them.
- The flush loop commits held appends at each tick, and after a failed commit cuts the
  store's state back (``_cut_back_failed``) before anything else.
- ``close`` stops ``run``, flushes, checkpoints, removes the abort marker, closes files.
"""

from __future__ import annotations

import contextlib
import logging
import os

import attrs
import trio

from broker.store.checkpoint import Checkpoint, write_checkpoint
from broker.store.config import FlushMode
from broker.store.flush import fsync_fds
from broker.store.metadata import fsync_dir
from broker.store.reads import StoreReads
from broker.store.retention import SegmentInfo, choose_expired_segments
from broker.store.state import (
    STORE_HOST_POS,
)
from protocol.message import (
    MAGIC_V1,
    MAGIC_V2,
    MIN_RECORD_BYTES,
    peek_record_header,
)

log = logging.getLogger(__name__)

#: Resolution of ``wait_flushed`` timeouts while ``run`` is running.
_EXPIRY_TICK_S = 0.01


class StoreDurability(StoreReads):
    """The store's flush, checkpoint, retention and lifetime layer."""

    async def wait_flushed(self, end_offset: int, timeout_s: float) -> bool:
        """Wait until CommitLog bytes below ``end_offset`` are fsynced; False on timeout,
        truncation, close, or a full waiter table (the data stays stored either way)."""
        if end_offset <= self._flushed:
            return True
        if self._closed or end_offset > self._clog.write_offset:
            return False
        deadline = self._clock.now_s() + timeout_s
        waiter = self._group.add(end_offset, deadline)
        if waiter is None:
            self._waiters_refused += 1
            return False
        if self._run_scope is None:
            # Nobody runs the expiry task: enforce the deadline here.
            with trio.move_on_at(deadline):
                await waiter.event.wait()
        else:
            try:
                await waiter.event.wait()
            finally:
                if not waiter.event.is_set():
                    waiter.abandoned = True  # our caller was cancelled
        if not waiter.event.is_set():
            waiter.abandoned = True
            return False
        return waiter.ok

    async def flush(self) -> int:
        """fsync everything written so far; wake covered waiters; return the flushed offset."""
        async with self._flush_lock:
            await self._flush_locked()
        return self._flushed

    async def _flush_locked(self) -> None:
        clog = self._clog
        clog.commit()  # held appends first (a failure cut the log back: target sees it)
        target = clog.write_offset
        if target > self._flushed:
            generation = self._generation
            fds, need_dir = clog.dup_fds(self._flushed, target)
            directory = clog.directory if need_dir else None
            calls = await trio.to_thread.run_sync(fsync_fds, fds, directory)
            self._flush_rounds += 1
            self._fsync_calls += calls
            if generation == self._generation:
                self._flushed = max(self._flushed, min(target, clog.write_offset))
        if self._flushed_only:
            self._dispatch_flushed()  # visible once durable, before the SEND_OKs
        self._group.release(self._flushed)

    async def checkpoint(self) -> Checkpoint:
        """Flush the CommitLog, fsync ConsumeQueues and index, write the checkpoint."""
        async with self._flush_lock:
            return await self._checkpoint_locked()

    async def _checkpoint_locked(self) -> Checkpoint:
        dispatched = self._dispatched
        await self._flush_locked()
        fds = self._take_all_dirty_fds()
        self._fsync_calls += await trio.to_thread.run_sync(fsync_fds, fds, None)
        ckpt = attrs.evolve(
            self._checkpoint_value(), dispatched_offset=min(dispatched, self._flushed)
        )
        await trio.to_thread.run_sync(write_checkpoint, self.store_dir / "checkpoint", ckpt)
        return ckpt

    def delete_expired(self, now_ms: int) -> int:
        """Retention: delete expired segments and what points into them; return how many."""
        clog = self._clog
        infos = [
            SegmentInfo(
                start_offset=seg.start,
                end_offset=seg.end,
                newest_store_timestamp_ms=self._segment_newest_ms(i),
            )
            for i, seg in enumerate(clog.segments[: self.config.max_segments_deleted_per_round + 1])
        ]
        count = choose_expired_segments(
            infos,
            now_ms=now_ms,
            reserved_ms=int(self.config.file_reserved_time_s * 1000),
            flushed_offset=self._flushed,
            max_count=self.config.max_segments_deleted_per_round,
        )
        if not count:
            return 0
        removed = clog.delete_head(count)
        new_min = clog.min_offset
        self._dispatched = max(self._dispatched, new_min)
        self._damage = self._damage.above(new_min)
        cq_files = sum(cq.advance_min(new_min) for cq in self._cqs.values())
        index_files = self._index.delete_below(new_min)
        log.info(
            "%s: retention deleted %d CommitLog files (%s..%s), %d ConsumeQueue files, "
            "%d index files; min offset now %d",
            self.node,
            count,
            removed[0].name,
            removed[-1].name,
            cq_files,
            index_files,
            new_min,
        )
        return count

    def _segment_newest_ms(self, i: int) -> int | None:
        """Upper bound of the newest store time in segment ``i``: the store time of the
        first record of the next segment (records are appended in time order), else the
        file's modification time; None for the last segment."""
        segs = self._clog.segments
        if i + 1 >= len(segs):
            return None
        nxt = segs[i + 1]
        head = self._clog.read(nxt.start, STORE_HOST_POS)
        if head is not None and len(head) == STORE_HOST_POS:
            size, magic = peek_record_header(head, 0)
            if magic in (MAGIC_V1, MAGIC_V2) and size >= MIN_RECORD_BYTES:
                ts = self._store_time(nxt.start, size)
                if ts >= 0:
                    return ts
        return int(os.fstat(segs[i].fd).st_mtime * 1000)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flusher, periodic checkpoint and retention; runs until cancelled or ``close()``."""
        try:
            with trio.CancelScope() as scope:
                self._run_scope = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._flush_loop)
                    nursery.start_soon(self._expiry_loop)
                    nursery.start_soon(self._checkpoint_loop)
                    nursery.start_soon(self._retention_loop)
                    nursery.start_soon(self._run_dispatch_slices)
                    task_status.started()
        finally:
            self._run_scope = None
            if not self._closing:
                self._group.fail_all()  # nobody flushes for them any more

    async def _flush_loop(self) -> None:
        sync = self.config.flush_mode is FlushMode.SYNC_FLUSH
        interval = self.config.flush_interval_s
        while True:
            if sync:
                with trio.move_on_after(interval):
                    await self._group.wait_for_work()
            else:
                await trio.sleep(interval)
            self._clog.commit()  # not commit_held: the broker's answers need its report
            if self._clog.failed_at is not None:
                await self._cut_back_failed()
            self._on_flush_tick()
            await self.flush()

    async def _expiry_loop(self) -> None:
        while True:
            await self._group.wait_for_work()
            await trio.sleep(_EXPIRY_TICK_S)
            self._group.expire(self._clock.now_s())

    async def _checkpoint_loop(self) -> None:
        while True:
            await trio.sleep(self.config.checkpoint_interval_s)
            await self.checkpoint()

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(self.config.retention_check_interval_s)
            self.delete_expired(self._clock.wall_ms())

    async def close(self) -> None:
        """Stop ``run``, flush, checkpoint, remove the abort marker and close every file."""
        if self._closed or self._closing:
            return
        self._closing = True  # close() flushes the waiters; run() must not fail them
        if self._run_scope is not None:
            self._run_scope.cancel()
        async with self._flush_lock:
            await self._checkpoint_locked()
            self._closed = True
            self._group.fail_all()
        with contextlib.suppress(FileNotFoundError):
            (self.store_dir / "abort").unlink()
        await trio.to_thread.run_sync(fsync_dir, self.store_dir)
        self._close_files()
        log.info("%s: store closed at offset %d", self.node, self._clog.write_offset)

    def _close_files(self) -> None:
        for cq in self._cqs.values():
            cq.close()
        self._index.close()
        self._clog.close()
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1
