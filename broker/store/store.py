"""MessageStore: the facade over CommitLog, ConsumeQueues, index, checkpoint and flushing.

Rules:
- ``MessageStore.open`` takes the directory lock, recovers, and returns a store ready for
  writes; it is the one way to build one. Its layers (state.py lists them) hold the put
  path, dispatch, replication, reads and durability; this file holds opening, recovery
  glue and statistics.
- Recovery: scan from the lower of the checkpoint's flushed and dispatched offsets (and
  re-verify ``verify_segments_on_open`` segments below it; walk the older ones with
  ``check_old_segments_on_open``), refuse damage or, with ``skip_damaged_segments``, keep
  it aside; cut a torn tail, drop queue and index entries past the end (and, with
  ``dispatch_confirmed_only``, past the confirm offset), check each ConsumeQueue's newest
  entries and rebuild the damaged ones (``repair.py``), re-dispatch the rest, then fsync
  everything and write a checkpoint before any new write is taken.
- An abort marker exists while the store is open: found at open, the last shutdown was
  abnormal.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from broker.clock import Clock
from broker.store.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from broker.store.commitlog import CommitLog
from broker.store.config import StoreConfig
from broker.store.consumequeue import ConsumeQueue
from broker.store.damage import Damage, DamageMap
from broker.store.durability import StoreDurability
from broker.store.flush import fsync_fds
from broker.store.index import IndexService
from broker.store.metadata import fsync_dir
from broker.store.paths import UnsafeName
from broker.store.recovery import RecoveryReport, recover_commitlog, scan_old_segments
from broker.store.repair import StoreRepair
from broker.store.replica import StoreReplica
from broker.store.results import SCHEDULE_TOPIC as SCHEDULE_TOPIC
from broker.store.results import StoreStatistics
from protocol.errors import StorageError

log = logging.getLogger(__name__)


class MessageStore(StoreRepair, StoreReplica, StoreDurability):
    """The broker's storage engine. Build it with ``MessageStore.open``."""

    @classmethod
    def open(
        cls,
        store_dir: Path | str,
        config: StoreConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> MessageStore:
        """Open (creating if needed) and recover the store in ``store_dir``.

        Blocking: run it before serving. Raises ``CorruptRecord`` when the CommitLog is
        damaged before its durable point, ``StorageError`` when another process holds it.
        """
        store = cls(Path(store_dir), config or StoreConfig(), clock=clock)
        store.store_dir.mkdir(parents=True, exist_ok=True)
        store._take_lock()
        try:
            store._recover()
        except BaseException:
            store._close_files()
            raise
        return store

    def _take_lock(self) -> None:
        fd = os.open(self.store_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"store {self.store_dir} is in use by another process") from exc
        self._lock_fd = fd

    def _recover(self) -> None:
        abort_path = self.store_dir / "abort"
        abnormal = abort_path.exists()
        ckpt, ckpt_existed = read_checkpoint(self.store_dir / "checkpoint")
        if ckpt_existed and ckpt is None:
            # Unlike other damaged files this one is derived data: the walk from the oldest
            # segment rebuilds what it promised (and still refuses a corrupt CommitLog).
            log.warning(
                "%s: %s is torn or not a checkpoint; recovering from the oldest segment",
                self.node,
                self.store_dir / "checkpoint",
            )
        cq_dir_existed = (self.store_dir / "consumequeue").is_dir()
        index_dir_existed = (self.store_dir / "index").is_dir()
        start, end, cut, broken = self._recover_commitlog(ckpt)
        dropped_cq, dropped_index, index_reset, cut_queues = self._open_derived(
            end, index_dir_existed
        )
        damaged_queues = self._check_consume_queues()
        clog = self._clog
        rebuild_all = end > clog.min_offset and (ckpt is None or not cq_dir_existed or index_reset)
        self._dispatched = self._redispatch_start(
            ckpt, end, rebuild_all=rebuild_all, cut_queues=cut_queues
        )
        self._confirm = min(ckpt.confirm_offset, end) if ckpt else 0
        self._master_flushed = ckpt.master_flushed_offset if ckpt else 0
        if ckpt is not None and self.config.dispatch_confirmed_only:
            self._dispatched = min(self._dispatched, max(self._confirm, clog.min_offset))
            # The ConsumeQueue and index files may hold entries past the checkpoint's
            # confirm offset (a crash before the next checkpoint): drop them, or their
            # records would be dispatched twice once confirmed again ("entry for offset N
            # but the queue ends at M" on the next replicated batch).
            for cq in self._cqs.values():
                cq.truncate_from_physical(self._dispatched)
            self._index.truncate_after(self._dispatched)
        self._rebuild_queues(damaged_queues, self._dispatched)
        # Everything recovered is fsynced below, before any read or write is taken.
        self._flushed = clog.write_offset
        redispatched = self._dispatch_pending(self._dispatch_limit(), recovering=True)
        self._index_skip_below = -1
        self._rebuild_queue_offsets()
        # Make the recovered state durable and consistent before taking new writes.
        fds, _ = clog.dup_fds(clog.min_offset, clog.write_offset)
        fds += self._take_all_dirty_fds()
        self._fsync_calls += fsync_fds(fds, clog.directory)
        self._flushed = clog.write_offset
        write_checkpoint(self.store_dir / "checkpoint", self._checkpoint_value())
        abort_path.write_bytes(b"")
        fsync_dir(self.store_dir)
        self.recovery_report = RecoveryReport(
            end_offset=end,
            min_offset=clog.min_offset,
            scanned_from=start,
            truncated_bytes=cut,
            broken_file=broken,
            redispatched_count=redispatched,
            dropped_cq_entries=dropped_cq,
            dropped_index_entries=dropped_index,
            abnormal_shutdown=abnormal,
            checkpoint_valid=ckpt is not None,
            rebuilt_queues=tuple(sorted(f"{t}/{q}" for t, q in damaged_queues)),
            skipped_damage=self._damage.ranges,
        )
        log.info(
            "%s: store opened at %s: offsets [%d, %d), %s shutdown, %d records re-dispatched",
            self.node,
            self.store_dir,
            clog.min_offset,
            end,
            "abnormal" if abnormal else "clean",
            redispatched,
        )

    def _recover_commitlog(self, ckpt: Checkpoint | None) -> tuple[int, int, int, Path | None]:
        """Open the segments and find the end; returns (walk start, end, bytes cut, copy)."""
        seg_bytes = self.config.segment_bytes
        self._clog = CommitLog.open(self.store_dir / "commitlog", seg_bytes)
        clog = self._clog
        if not clog.segments and ckpt is not None and ckpt.flushed_offset % seg_bytes == 0:
            clog.reset_empty(ckpt.flushed_offset)  # an emptied slave log restarts where it was
        durable = ckpt.flushed_offset if ckpt else 0
        # Walk from the lower of the fsynced and dispatched points: both were durable.
        low_point = min(durable, ckpt.dispatched_offset) if ckpt else 0
        start = max(low_point, clog.min_offset)
        if clog.segments and start > clog.segments[-1].end:
            start = clog.segments[-1].end  # recover_commitlog reports the missing bytes
        start = min(start, self._verify_from(start))
        cfg = self.config
        skip = cfg.skip_damaged_segments
        old: list[Damage] = []
        if cfg.check_old_segments_on_open:
            old = scan_old_segments(clog, start, skip=skip, node=self.node)
        found = recover_commitlog(
            clog,
            start=start,
            durable_offset=durable if clog.segments else 0,
            check_crc=cfg.check_crc,
            node=self.node,
            skip_damaged=skip,
        )
        self._damage = DamageMap.of([*old, *found.damages])
        return start, found.end_offset, found.cut_bytes, found.broken_file

    def _verify_from(self, start: int) -> int:
        """Start of the oldest segment to re-verify below ``start`` (a record boundary)."""
        segments = self._clog.segments
        count = self.config.verify_segments_on_open
        if not segments or count <= 0:
            return start
        holding = next(
            (i for i, seg in enumerate(segments) if seg.start <= start < seg.end),
            len(segments) - 1,
        )
        return segments[max(0, holding - count + 1)].start

    def _open_derived(
        self, end: int, index_dir_existed: bool
    ) -> tuple[int, int, bool, list[ConsumeQueue]]:
        """Open ConsumeQueues and index, dropping entries past ``end``.

        Returns (queue entries dropped, index entries dropped, whether the index starts over,
        the queues that dropped some).
        """
        cfg = self.config
        self._open_consume_queues()
        dropped_cq = 0
        cut_queues: list[ConsumeQueue] = []
        for cq in self._cqs.values():
            before = cq.max_offset
            cq.truncate_from_physical(end)
            if cq.max_offset < before:
                dropped_cq += before - cq.max_offset
                cut_queues.append(cq)
        self._index = IndexService.open(
            self.store_dir / "index",
            cfg.index_slots,
            cfg.index_entries,
            preallocate=cfg.index_preallocate,
            node=self.node,
        )
        dropped_index = self._index.truncate_after(end)
        index_reset = not index_dir_existed or self._index.was_reset
        # Re-dispatch re-indexes from the newest indexed record on (inclusive, as RocketMQ:
        # a crash may have stopped between the keys of that record).
        self._index_skip_below = -1 if index_reset else self._index.end_phy_offset
        return dropped_cq, dropped_index, index_reset, cut_queues

    def _open_consume_queues(self) -> None:
        root = self.store_dir / "consumequeue"
        root.mkdir(parents=True, exist_ok=True)
        for topic_dir in sorted(root.iterdir()):
            if not topic_dir.is_dir():
                continue
            for qdir in sorted(topic_dir.iterdir()):
                name = qdir.name
                if not (qdir.is_dir() and name.isascii() and name.isdigit()):
                    continue
                if str(int(name)) != name:
                    continue
                try:
                    cq = ConsumeQueue.open(
                        root,
                        topic_dir.name,
                        int(name),
                        self.config.cq_entries_per_file,
                        self._clog.min_offset,
                    )
                except UnsafeName as exc:
                    log.warning("%s: consume queue %s skipped: %s", self.node, qdir, exc)
                    continue
                self._cqs[(topic_dir.name, int(name))] = cq

    def _redispatch_start(
        self,
        ckpt: Checkpoint | None,
        end: int,
        *,
        rebuild_all: bool,
        cut_queues: list[ConsumeQueue],
    ) -> int:
        """Where re-dispatch starts: a record boundary below which ConsumeQueues and index are
        known complete (the oldest segment when anything is missing).

        Entries past the end (``cut_queues``: the queues that dropped some) are a crash's dirty
        tail, or damage hiding records the CommitLog still holds (garbage whose offset is
        past the end): either way re-dispatch starts no later than the end of such a
        queue's last entry, which the queue check has verified by now."""
        low = self._clog.min_offset
        if rebuild_all or ckpt is None:
            return low
        covered = [
            cq.last_physical_end for cq in self._cqs.values() if cq.max_offset > cq.min_offset
        ]
        cq_covered = max(covered) if covered else low
        cut_ends = [e for e in (cq.last_physical_end for cq in cut_queues) if e >= 0]
        return max(low, min(ckpt.dispatched_offset, cq_covered, end, *cut_ends))

    def statistics(self) -> StoreStatistics:
        """A consistent snapshot of offsets, files and flushing."""
        clog = self._clog
        return StoreStatistics(
            min_physical_offset=clog.min_offset,
            max_physical_offset=clog.write_offset,
            flushed_offset=self._flushed,
            dispatched_offset=self._dispatched,
            confirm_offset=self.confirm_offset,
            flush_lag_bytes=clog.write_offset - self._flushed,
            dispatch_lag_bytes=clog.write_offset - self._dispatched,
            segment_count=len(clog.segments),
            consume_queue_count=len(self._cqs),
            index_file_count=len(self._index.files),
            flush_waiters=self._group.pending,
            max_flush_waiters=self._group.max_waiters,
            flush_waiters_refused=self._waiters_refused,
            flush_rounds=self._flush_rounds,
            fsync_calls=self._fsync_calls,
            put_messages=self._put_messages,
            put_bytes=self._put_bytes,
            disk_full=self._disk_full,
            free_disk_bytes=self._free_bytes,
        )
