"""MessageStore: the facade over CommitLog, ConsumeQueues, index, checkpoint and flushing.

Rules:
- Single Trio thread. Every mutation (put, append_raw, dispatch, truncation, retention) is a
  synchronous section, so queue offsets are assigned without a lock (the Trio equivalent of
  RocketMQ's put lock). Only fsyncs and the checkpoint write go to worker threads, on
  duplicated descriptors.
- The put path encodes the record once, patches QUEUEOFFSET, PHYSICALOFFSET, STORETIMESTAMP
  and STOREHOST into the bytes (the CRC covers the body only), appends, and on a master
  dispatches it at once from the values in hand (no read back, no decode).
- ``dispatched_offset`` <= dispatch limit (the write offset, or ``confirm_offset`` with
  ``dispatch_confirmed_only``) <= write offset. Data past the limit is dispatched by reading
  it back when the limit moves (``set_confirm_offset``, ``append_raw``).
- The queue-offset table covers every record in the CommitLog, dispatched or not, so an
  offset is never handed out twice (apache/rocketmq#7689: reused ConsumeQueue offsets after a
  restart in controller mode).
- Durability order of a checkpoint round: note the dispatched offset, fsync the CommitLog,
  fsync ConsumeQueue and index files, then write the checkpoint. A truncation writes the
  lowered checkpoint *before* cutting files, so a crash in between never leaves a checkpoint
  promising bytes that are gone.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from broker.store.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from broker.store.commitlog import CommitLog
from broker.store.config import FlushMode, StoreConfig
from broker.store.consumequeue import BoundaryType, ConsumeQueue, search_offset_by_time
from broker.store.flush import GroupCommit, fsync_fds
from broker.store.index import IndexService, index_keys
from broker.store.metadata import fsync_dir
from broker.store.pull import GetMessageStatus, check_offset, select_entries
from broker.store.recovery import RecoveryReport, recover_commitlog
from broker.store.retention import SegmentInfo, choose_expired_segments
from protocol.errors import CorruptRecord, DiskFull, MalformedRecord, StorageError
from protocol.message import (
    BLANK_MAGIC,
    BLANK_MARKER_BYTES,
    MAGIC_V1,
    MAGIC_V2,
    MIN_RECORD_BYTES,
    PROPERTY_DELAY,
    PROPERTY_KEYS,
    PROPERTY_TAGS,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_BORNHOST_V6,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_PREPARED_TYPE,
    SYSFLAG_TRANSACTION_ROLLBACK_TYPE,
    MessageRecord,
    decode_record,
    encode_record,
    offset_msg_id,
    peek_record_header,
    tags_code,
)

log = logging.getLogger(__name__)

#: Topic of delayed messages; their tag code is the delivery time (wire §3.7, §3.10).
SCHEDULE_TOPIC = "SCHEDULE_TOPIC_XXXX"

# Byte positions inside a record with IPv4 hosts (wire §3.2); encode_record writes only those.
_QUEUE_AND_PHYS = struct.Struct(">qq")
_QUEUE_OFFSET_POS = 20
_PHYS_OFFSET_POS = 28
_SYSFLAG_POS = 36
_STORE_TS = struct.Struct(">q")
_STORE_TS_POS = 56
_STORE_HOST_POS = 64
_DISPATCH_CHUNK_BYTES = 4 * 1024 * 1024
_NO_DISPATCH = (SYSFLAG_TRANSACTION_PREPARED_TYPE, SYSFLAG_TRANSACTION_ROLLBACK_TYPE)
#: Resolution of ``wait_flushed`` timeouts while ``run`` is running.
_EXPIRY_TICK_S = 0.01

#: ``listener(topic, queue_id, queue_offset_end, tags_code)`` after a ConsumeQueue append.
ArrivalListener = Callable[[str, int, int, int], None]


class PutStatus(enum.Enum):
    """Outcome of a put that did not raise (RocketMQ ``PutMessageStatus`` subset)."""

    PUT_OK = "PUT_OK"
    MESSAGE_ILLEGAL = "MESSAGE_ILLEGAL"
    PROPERTIES_SIZE_EXCEEDED = "PROPERTIES_SIZE_EXCEEDED"


@attrs.frozen(kw_only=True)
class AppendResult:
    """Where a put went. For a batch: the first record's offsets, ids comma-joined."""

    status: PutStatus
    physical_offset: int = -1
    wrote_bytes: int = 0
    queue_offset: int = -1
    msg_id: str = ""
    store_timestamp_ms: int = 0
    message_count: int = 0
    remark: str = ""

    @property
    def ok(self) -> bool:
        """The records are stored (not necessarily flushed or replicated)."""
        return self.status is PutStatus.PUT_OK

    @property
    def end_offset(self) -> int:
        """CommitLog offset just past the written bytes (what ``wait_flushed`` takes)."""
        return self.physical_offset + self.wrote_bytes


@attrs.frozen(kw_only=True)
class GetMessageResult:
    """A pull's answer: status, offsets and the records as they lie in the CommitLog."""

    status: GetMessageStatus
    next_begin_offset: int
    min_offset: int
    max_offset: int
    records: tuple[bytes, ...] = ()
    queue_offsets: tuple[int, ...] = ()

    @property
    def body(self) -> bytes:
        """The PULL body: the records concatenated byte for byte."""
        return b"".join(self.records)

    @property
    def message_count(self) -> int:
        """Number of records."""
        return len(self.records)

    @property
    def total_bytes(self) -> int:
        """Size of ``body``."""
        return sum(len(r) for r in self.records)


@attrs.frozen(kw_only=True)
class QueryResult:
    """A query by key: matching records, newest first, and the index's freshness."""

    records: tuple[bytes, ...]
    physical_offsets: tuple[int, ...]
    index_last_update_timestamp_ms: int
    index_last_update_phy_offset: int


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """A snapshot for monitoring and tests."""

    min_physical_offset: int
    max_physical_offset: int
    flushed_offset: int
    dispatched_offset: int
    confirm_offset: int
    flush_lag_bytes: int
    dispatch_lag_bytes: int
    segment_count: int
    consume_queue_count: int
    index_file_count: int
    flush_waiters: int
    max_flush_waiters: int
    flush_waiters_refused: int
    flush_rounds: int
    fsync_calls: int
    put_messages: int
    put_bytes: int
    disk_full: bool
    free_disk_bytes: int


def _delivery_tags_code(
    properties: Mapping[str, str], store_ms: int, levels_ms: Sequence[int]
) -> int | None:
    """Tag code of a SCHEDULE_TOPIC record: its delivery time (None: no valid DELAY)."""
    raw = properties.get(PROPERTY_DELAY)
    if not raw:
        return None
    try:
        level = int(raw)
    except ValueError:
        return None
    if level <= 0 or not levels_ms:
        return None
    level = min(level, len(levels_ms))
    return store_ms + levels_ms[level - 1]


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class MessageStore:
    """The broker's storage engine. Build it with ``MessageStore.open``."""

    def __init__(
        self, store_dir: Path, config: StoreConfig, *, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self.store_dir = Path(store_dir)
        #: Wall clock for store timestamps (tests pass a fake one).
        self._clock_ms = clock_ms or _wall_clock_ms
        self.config = config
        self.node = config.node_name
        self._clog = CommitLog(self.store_dir / "commitlog", config.segment_bytes)
        self._index = IndexService(
            self.store_dir / "index",
            config.index_slots,
            config.index_entries,
            preallocate=config.index_preallocate,
        )
        self._cqs: dict[tuple[str, int], ConsumeQueue] = {}
        self._queue_offsets: dict[tuple[str, int], int] = {}
        self._listeners: list[ArrivalListener] = []
        self._group = GroupCommit(config.max_flush_waiters)
        self._flush_lock = trio.Lock()
        self._levels_ms = [int(s * 1000) for s in config.delay_levels_s]
        store_ip, store_port = config.store_host
        self._store_host_bytes = bytes(int(p) for p in store_ip.split(".")) + store_port.to_bytes(
            4, "big"
        )
        assert len(self._store_host_bytes) == 8, "store_host must be IPv4"
        self._store_ip = store_ip
        self._store_port = store_port
        self._flushed = 0
        self._dispatched = 0
        self._confirm = 0
        self._master_flushed = 0
        self._generation = 0
        self._last_put_ms = 0
        self._last_dispatch_ms = 0
        self._index_skip_below = -1
        self._closed = False
        self._truncating = False
        self._closing = False
        self._lock_fd = -1
        self._run_scope: trio.CancelScope | None = None
        self._disk_full = False
        self._free_bytes = 0
        self._next_disk_check_s = 0.0
        self._flush_rounds = 0
        self._fsync_calls = 0
        self._waiters_refused = 0
        self._put_messages = 0
        self._put_bytes = 0
        self.recovery_report: RecoveryReport | None = None

    # ======================================================================================
    # opening and recovery
    # ======================================================================================

    @classmethod
    def open(
        cls,
        store_dir: Path | str,
        config: StoreConfig | None = None,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> MessageStore:
        """Open (creating if needed) and recover the store in ``store_dir``.

        Blocking: run it before serving. Raises ``CorruptRecord`` when the CommitLog is
        damaged before its durable point, ``StorageError`` when another process holds it.
        """
        store = cls(Path(store_dir), config or StoreConfig(), clock_ms=clock_ms)
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
            log.warning("%s: checkpoint is torn; recovering from the oldest segment", self.node)
        cq_dir_existed = (self.store_dir / "consumequeue").is_dir()
        index_dir_existed = (self.store_dir / "index").is_dir()
        start, end, cut, broken = self._recover_commitlog(ckpt)
        dropped_cq, dropped_index, index_reset = self._open_derived(end, index_dir_existed)
        clog = self._clog
        rebuild_all = end > clog.min_offset and (ckpt is None or not cq_dir_existed or index_reset)
        self._dispatched = self._redispatch_start(ckpt, end, rebuild_all=rebuild_all)
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
        end, cut, broken = recover_commitlog(
            clog,
            start=start,
            durable_offset=durable if clog.segments else 0,
            check_crc=self.config.check_crc,
            node=self.node,
        )
        return start, end, cut, broken

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

    def _open_derived(self, end: int, index_dir_existed: bool) -> tuple[int, int, bool]:
        """Open ConsumeQueues and index, dropping entries past ``end``.

        Returns (queue entries dropped, index entries dropped, whether the index starts over).
        """
        cfg = self.config
        self._open_consume_queues()
        dropped_cq = 0
        for cq in self._cqs.values():
            before = cq.max_offset
            cq.truncate_from_physical(end)
            dropped_cq += before - cq.max_offset
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
        return dropped_cq, dropped_index, index_reset

    def _open_consume_queues(self) -> None:
        root = self.store_dir / "consumequeue"
        root.mkdir(parents=True, exist_ok=True)
        for topic_dir in sorted(root.iterdir()):
            if not topic_dir.is_dir():
                continue
            for qdir in sorted(topic_dir.iterdir()):
                if not (qdir.is_dir() and qdir.name.isdigit()):
                    continue
                cq = ConsumeQueue.open(
                    qdir,
                    topic_dir.name,
                    int(qdir.name),
                    self.config.cq_entries_per_file,
                    self._clog.min_offset,
                )
                self._cqs[(topic_dir.name, int(qdir.name))] = cq

    def _redispatch_start(self, ckpt: Checkpoint | None, end: int, *, rebuild_all: bool) -> int:
        """Where re-dispatch starts: a record boundary below which ConsumeQueues and index are
        known complete (the oldest segment when anything is missing)."""
        low = self._clog.min_offset
        if rebuild_all or ckpt is None:
            return low
        covered = [
            cq.last_physical_end for cq in self._cqs.values() if cq.max_offset > cq.min_offset
        ]
        cq_covered = max(covered) if covered else low
        return max(low, min(ckpt.dispatched_offset, cq_covered, end))

    def _rebuild_queue_offsets(self) -> None:
        """Next queue offset per queue: ConsumeQueue maxima, then undispatched records."""
        self._queue_offsets = {key: cq.max_offset for key, cq in self._cqs.items()}
        pos = self._dispatched
        end = self._clog.write_offset
        for rec, _size, _at in self._iter_log(pos, end):
            if rec is None or rec.sys_flag & SYSFLAG_TRANSACTION_MASK in _NO_DISPATCH:
                continue
            key = (rec.topic, rec.queue_id)
            self._queue_offsets[key] = max(self._queue_offsets.get(key, 0), rec.queue_offset + 1)

    # ======================================================================================
    # the put path
    # ======================================================================================

    def _check_writable(self) -> None:
        if self._closed:
            raise StorageError(f"{self.node}: store is closed")
        if self._truncating:
            raise StorageError(f"{self.node}: store is truncating its CommitLog")
        now = time.monotonic()
        if now >= self._next_disk_check_s:
            self._next_disk_check_s = now + self.config.disk_check_interval_s
            st = os.statvfs(self.store_dir)
            self._free_bytes = st.f_bavail * st.f_frsize
            full = self._free_bytes < self.config.min_free_disk_bytes
            if full != self._disk_full:
                self._disk_full = full
                if full:
                    log.error(
                        "%s: disk full: %d bytes free on %s, below %d; refusing appends",
                        self.node,
                        self._free_bytes,
                        self.store_dir,
                        self.config.min_free_disk_bytes,
                    )
                else:
                    log.info("%s: disk space back (%d bytes free)", self.node, self._free_bytes)
        if self._disk_full:
            raise DiskFull(
                f"{self.node}: {self._free_bytes} bytes free on {self.store_dir}, below "
                f"min_free_disk_bytes {self.config.min_free_disk_bytes}; the store is read-only"
            )

    def _encode_checked(self, msg: MessageRecord) -> bytes | AppendResult:
        if len(msg.body) > self.config.max_message_bytes:
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL,
                remark=f"body of {len(msg.body)} bytes exceeds {self.config.max_message_bytes}",
            )
        try:
            data = encode_record(msg)
        except ValueError as exc:
            status = (
                PutStatus.PROPERTIES_SIZE_EXCEEDED
                if "properties of" in str(exc)
                else PutStatus.MESSAGE_ILLEGAL
            )
            return AppendResult(status=status, remark=str(exc))
        return data

    def put_message(self, msg: MessageRecord) -> AppendResult:
        """Append one message; queue offset, physical offset and store time/host are assigned
        here (the values in ``msg`` are ignored).

        Raises ``DiskFull`` (nothing written) and ``StorageError`` (closed store).
        """
        self._check_writable()
        encoded = self._encode_checked(msg)
        if isinstance(encoded, AppendResult):
            return encoded
        size = len(encoded)
        if size + BLANK_MARKER_BYTES > self.config.segment_bytes:
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL,
                remark=f"{size} bytes do not fit in a {self.config.segment_bytes}-byte segment",
            )
        # The single-message case of _append_records, unrolled: it is the send hot path.
        clog = self._clog
        key = (msg.topic, msg.queue_id)
        counted = msg.sys_flag & SYSFLAG_TRANSACTION_MASK not in _NO_DISPATCH
        queue_offset = self._queue_offsets.get(key, 0) if counted else 0
        now_ms = self._clock_ms()
        was_dispatched = self._dispatched == clog.write_offset
        phys = clog.reserve(size)
        buf = bytearray(encoded)
        _QUEUE_AND_PHYS.pack_into(buf, _QUEUE_OFFSET_POS, queue_offset, phys)
        _STORE_TS.pack_into(buf, _STORE_TS_POS, now_ms)
        buf[_STORE_HOST_POS : _STORE_HOST_POS + 8] = self._store_host_bytes
        clog.append(buf)
        if counted:
            self._queue_offsets[key] = queue_offset + 1
        self._last_put_ms = now_ms
        self._put_messages += 1
        self._put_bytes += size
        if was_dispatched and not self.config.dispatch_confirmed_only:
            self._dispatch_one(
                msg.topic,
                msg.queue_id,
                queue_offset,
                phys,
                size,
                sys_flag=msg.sys_flag,
                properties=msg.properties,
                store_ms=now_ms,
                recovering=False,
            )
            self._dispatched = phys + size
        elif was_dispatched:
            self._dispatched = phys  # only blank padding lay between
        return AppendResult(
            status=PutStatus.PUT_OK,
            physical_offset=phys,
            wrote_bytes=size,
            queue_offset=queue_offset,
            msg_id=offset_msg_id(self._store_ip, self._store_port, phys),
            store_timestamp_ms=now_ms,
            message_count=1,
        )

    def put_messages(self, msgs: Sequence[MessageRecord]) -> AppendResult:
        """Append a batch to one topic/queue as consecutive records with consecutive queue
        offsets, in one segment and one write. The bodies together must fit
        ``max_message_bytes``."""
        self._check_writable()
        if not msgs:
            return AppendResult(status=PutStatus.MESSAGE_ILLEGAL, remark="empty batch")
        topic, queue_id = msgs[0].topic, msgs[0].queue_id
        if any(m.topic != topic or m.queue_id != queue_id for m in msgs):
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL, remark="a batch must go to one topic and queue"
            )
        body_bytes = sum(len(m.body) for m in msgs)
        if body_bytes > self.config.max_message_bytes:
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL,
                remark=f"batch of {body_bytes} body bytes exceeds {self.config.max_message_bytes}",
            )
        encoded: list[bytes] = []
        for m in msgs:
            e = self._encode_checked(m)
            if isinstance(e, AppendResult):
                return e
            encoded.append(e)
        return self._append_records(topic, queue_id, list(msgs), encoded)

    def _append_records(
        self, topic: str, queue_id: int, msgs: list[MessageRecord], encoded: list[bytes]
    ) -> AppendResult:
        total = sum(len(e) for e in encoded)
        if total + BLANK_MARKER_BYTES > self.config.segment_bytes:
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL,
                remark=f"{total} bytes do not fit in a {self.config.segment_bytes}-byte segment",
            )
        clog = self._clog
        key = (topic, queue_id)
        first_queue_offset = self._queue_offsets.get(key, 0)
        now_ms = self._clock_ms()
        was_dispatched = self._dispatched == clog.write_offset
        phys = clog.reserve(total)
        if was_dispatched:
            self._dispatched = phys  # the blank padding (if any) holds nothing to dispatch
        buf = bytearray(b"".join(encoded)) if len(encoded) > 1 else bytearray(encoded[0])
        pos = 0
        queue_offset = first_queue_offset
        store_host = self._store_host_bytes
        for e, m in zip(encoded, msgs, strict=True):
            counted = m.sys_flag & SYSFLAG_TRANSACTION_MASK not in _NO_DISPATCH
            _QUEUE_AND_PHYS.pack_into(
                buf, pos + _QUEUE_OFFSET_POS, queue_offset if counted else 0, phys + pos
            )
            _STORE_TS.pack_into(buf, pos + _STORE_TS_POS, now_ms)
            buf[pos + _STORE_HOST_POS : pos + _STORE_HOST_POS + 8] = store_host
            if counted:
                queue_offset += 1
            pos += len(e)
        clog.append(buf)
        self._queue_offsets[key] = queue_offset
        self._last_put_ms = now_ms
        self._put_messages += len(msgs)
        self._put_bytes += total
        if was_dispatched and not self.config.dispatch_confirmed_only:
            self._dispatch_appended(msgs, encoded, first_queue_offset, phys, now_ms)
        ids = ",".join(
            offset_msg_id(self._store_ip, self._store_port, phys + off)
            for off in self._offsets_in(encoded)
        )
        return AppendResult(
            status=PutStatus.PUT_OK,
            physical_offset=phys,
            wrote_bytes=total,
            queue_offset=first_queue_offset,
            msg_id=ids,
            store_timestamp_ms=now_ms,
            message_count=len(msgs),
        )

    @staticmethod
    def _offsets_in(encoded: list[bytes]) -> list[int]:
        out, pos = [], 0
        for e in encoded:
            out.append(pos)
            pos += len(e)
        return out

    def _dispatch_appended(
        self,
        msgs: list[MessageRecord],
        encoded: list[bytes],
        first_queue_offset: int,
        phys: int,
        store_ms: int,
    ) -> None:
        """Dispatch records just appended, from the values in hand."""
        pos = phys
        queue_offset = first_queue_offset
        for m, e in zip(msgs, encoded, strict=True):
            counted = m.sys_flag & SYSFLAG_TRANSACTION_MASK not in _NO_DISPATCH
            self._dispatch_one(
                m.topic,
                m.queue_id,
                queue_offset if counted else 0,
                pos,
                len(e),
                sys_flag=m.sys_flag,
                properties=m.properties,
                store_ms=store_ms,
                recovering=False,
            )
            if counted:
                queue_offset += 1
            pos += len(e)
        self._dispatched = pos

    # ======================================================================================
    # dispatch
    # ======================================================================================

    def add_arrival_listener(self, listener: ArrivalListener) -> None:
        """Call ``listener(topic, queue_id, queue_offset_end, tags_code)`` after every
        ConsumeQueue append (synchronously: it must not block)."""
        self._listeners.append(listener)

    def remove_arrival_listener(self, listener: ArrivalListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def _consume_queue(self, topic: str, queue_id: int) -> ConsumeQueue:
        cq = self._cqs.get((topic, queue_id))
        if cq is None:
            cq = ConsumeQueue(
                self.store_dir / "consumequeue" / topic / str(queue_id),
                topic,
                queue_id,
                self.config.cq_entries_per_file,
            )
            self._cqs[(topic, queue_id)] = cq
        return cq

    def _tags_code(self, topic: str, properties: Mapping[str, str], store_ms: int) -> int:
        if topic == SCHEDULE_TOPIC:
            due = _delivery_tags_code(properties, store_ms, self._levels_ms)
            if due is not None:
                return due
        return tags_code(properties.get(PROPERTY_TAGS))

    def _dispatch_one(
        self,
        topic: str,
        queue_id: int,
        queue_offset: int,
        phys: int,
        size: int,
        *,
        sys_flag: int,
        properties: Mapping[str, str],
        store_ms: int,
        recovering: bool,
    ) -> bool:
        """Write the ConsumeQueue entry and index keys of one record; True if anything new."""
        wrote = False
        if sys_flag & SYSFLAG_TRANSACTION_MASK not in _NO_DISPATCH:
            code = self._tags_code(topic, properties, store_ms)
            cq = self._consume_queue(topic, queue_id)
            if recovering and queue_offset < cq.max_offset:
                wrote = cq.repair(queue_offset, phys, size, code)
            else:
                cq.append(queue_offset, phys, size, code)
                wrote = True
                for listener in self._listeners:
                    listener(topic, queue_id, queue_offset + 1, code)
        if phys >= self._index_skip_below:
            keys_value = properties.get(PROPERTY_KEYS)
            keys = keys_value.split(" ") if keys_value else ()
            idx_keys = index_keys(topic, sys_flag, properties.get(PROPERTY_UNIQ_KEY), keys)
            if idx_keys:
                self._index.put(idx_keys, phys, store_ms, store_ms)
                wrote = True
        self._last_dispatch_ms = store_ms
        return wrote

    def _dispatch_limit(self) -> int:
        end = self._clog.write_offset
        if self.config.dispatch_confirmed_only:
            return max(min(self._confirm, end), self._dispatched)
        return end

    def _iter_log(self, begin: int, end: int) -> Iterator[tuple[MessageRecord | None, int, int]]:
        """Yield ``(record, size, offset)`` for the units in [begin, end): records, and blank
        padding as ``(None, padding size, offset)``. ``begin`` is a unit boundary; stops
        before a record crossing ``end``. Reads in chunks, so memory stays bounded."""
        pos = begin
        clog = self._clog
        while pos < end:
            seg = clog.segment_for(pos)
            if seg is None:
                return
            stop = min(end, seg.end)
            buf = clog.read(pos, min(_DISPATCH_CHUNK_BYTES, stop - pos)) or b""
            i = 0
            while len(buf) - i >= BLANK_MARKER_BYTES:
                size, magic = peek_record_header(buf, i)
                if magic == BLANK_MAGIC:
                    assert size == seg.end - (pos + i), "blank marker must reach the segment end"
                    yield None, size, pos + i
                    i = seg.end - pos
                    break
                if size < MIN_RECORD_BYTES:
                    raise CorruptRecord(f"{seg.path}: no record at offset {pos + i}")
                if i + size > len(buf):
                    if i == 0 and pos + size <= stop:
                        buf = clog.read(pos, size) or b""
                        continue
                    break
                rec, _ = decode_record(buf, i, check_crc=False, max_size=seg.size)
                yield rec, size, pos + i
                i += size
            if i == 0:
                return
            pos += i

    def _dispatch_pending(self, limit: int, *, recovering: bool = False) -> int:
        """Dispatch records from ``dispatched_offset`` up to ``limit``; return how many had
        entries (re)written."""
        count = 0
        for rec, size, at in self._iter_log(self._dispatched, limit):
            assert at == self._dispatched, (at, self._dispatched)
            if rec is not None and self._dispatch_one(
                rec.topic,
                rec.queue_id,
                rec.queue_offset,
                at,
                size,
                sys_flag=rec.sys_flag,
                properties=rec.properties,
                store_ms=rec.store_timestamp_ms,
                recovering=recovering,
            ):
                count += 1
            self._dispatched = at + size
        return count

    def set_confirm_offset(self, offset: int) -> None:
        """Record the replicated offset; with ``dispatch_confirmed_only`` dispatch up to it."""
        self._confirm = max(0, offset)
        if self.config.dispatch_confirmed_only and not self._closed:
            self._dispatch_pending(self._dispatch_limit())

    @property
    def confirm_offset(self) -> int:
        """The replicated offset (the write offset when not dispatching confirmed data only)."""
        if self.config.dispatch_confirmed_only:
            return self._confirm
        return self._clog.write_offset

    def set_master_flushed_offset(self, offset: int) -> None:
        """On a slave: the master's flushed offset, kept in the checkpoint."""
        self._master_flushed = max(0, offset)

    # ======================================================================================
    # replication
    # ======================================================================================

    def append_raw(self, data: bytes, expected_start_offset: int) -> int:
        """Append CommitLog bytes replicated from a master; return the new write offset.

        ``data`` must start at the write offset and hold whole records (and blank markers
        padding exactly to segment ends) whose PHYSICALOFFSET fields match where they land.
        Nothing is written when any check fails (``CorruptRecord``).
        """
        self._check_writable()
        clog = self._clog
        if not clog.segments and clog.write_offset == clog.min_offset and data:
            if expected_start_offset % self.config.segment_bytes:
                raise CorruptRecord(
                    f"replicated data for an empty store must start at a segment boundary, "
                    f"not {expected_start_offset}"
                )
            clog.reset_empty(expected_start_offset)
            self._dispatched = self._flushed = expected_start_offset
        if expected_start_offset != clog.write_offset:
            raise CorruptRecord(
                f"replicated data starts at {expected_start_offset}, the log ends at "
                f"{clog.write_offset}"
            )
        records = self._validate_raw(data, expected_start_offset)
        view = memoryview(data)
        i = 0
        seg_bytes = self.config.segment_bytes
        while i < len(data):
            at = expected_start_offset + i
            n = min(len(data) - i, seg_bytes - at % seg_bytes)
            clog.append_raw_piece(view[i : i + n])
            i += n
        for rec in records:
            if rec.sys_flag & SYSFLAG_TRANSACTION_MASK in _NO_DISPATCH:
                continue
            key = (rec.topic, rec.queue_id)
            self._queue_offsets[key] = max(self._queue_offsets.get(key, 0), rec.queue_offset + 1)
        if records:
            self._last_put_ms = records[-1].store_timestamp_ms
        self._dispatch_pending(self._dispatch_limit())
        return clog.write_offset

    def _validate_raw(self, data: bytes, start: int) -> list[MessageRecord]:
        """Check replicated bytes (whole records, and blank markers with their padding);
        return the records."""
        seg_bytes = self.config.segment_bytes
        records: list[MessageRecord] = []
        i = 0
        while i < len(data):
            at = start + i
            seg_end = at - at % seg_bytes + seg_bytes
            try:
                size, magic = peek_record_header(data, i)
            except MalformedRecord as exc:
                raise CorruptRecord(f"replicated data at offset {at}: {exc}") from None
            if magic == BLANK_MAGIC:
                if size != seg_end - at:
                    raise CorruptRecord(
                        f"replicated blank marker at {at} is {size} bytes but the segment ends "
                        f"{seg_end - at} bytes later (do the segment sizes differ?)"
                    )
                if i + size > len(data):
                    raise CorruptRecord(f"replicated data ends inside the padding at {at}")
                i += size
                continue
            if magic not in (MAGIC_V1, MAGIC_V2) or size < MIN_RECORD_BYTES:
                raise CorruptRecord(f"replicated data at offset {at}: not a record")
            if at + size + BLANK_MARKER_BYTES > seg_end:
                raise CorruptRecord(f"replicated record at {at} ({size} bytes) crosses a segment")
            try:
                rec, _ = decode_record(data, i, check_crc=self.config.check_crc, max_size=seg_bytes)
            except MalformedRecord as exc:
                raise CorruptRecord(f"replicated data at offset {at}: {exc}") from None
            if rec.physical_offset != at:
                raise CorruptRecord(
                    f"replicated record at {at} says it lies at {rec.physical_offset}"
                )
            records.append(rec)
            i += size
        return records

    def read_raw(self, offset: int, max_bytes: int) -> bytes:
        """Whole units (records, or a blank marker with its padding) from ``offset`` (a
        boundary) within one segment, at most ``max_bytes`` unless the first unit is larger;
        b"" at the write offset. For a master's HA stream; ``append_raw`` takes them."""
        clog = self._clog
        end = clog.write_offset
        seg = clog.segment_for(offset)
        if offset >= end or seg is None:
            return b""
        if not self._is_boundary(offset):
            raise StorageError(f"cannot read raw data from {offset}: not a record boundary")
        stop = min(end, seg.end)
        data = clog.read(offset, min(max(max_bytes, BLANK_MARKER_BYTES), stop - offset)) or b""
        i = 0
        while len(data) - i >= BLANK_MARKER_BYTES:
            size, magic = peek_record_header(data, i)
            if size <= 0 or (magic == BLANK_MAGIC and size != seg.end - (offset + i)):
                raise CorruptRecord(f"{seg.path}: no record at offset {offset + i}")
            if i + size > len(data):
                if i == 0 and offset + size <= stop:
                    return clog.read(offset, size) or b""
                break
            i += size
        return data[:i]

    async def truncate_to(self, physical_offset: int) -> None:
        """Drop every record at or past ``physical_offset`` (a record boundary) and the
        ConsumeQueue entries and index keys pointing there (replication's consistent point)."""
        clog = self._clog
        offset = physical_offset
        if not clog.min_offset <= offset <= clog.write_offset:
            raise StorageError(
                f"cannot truncate to {offset}: the log holds [{clog.min_offset}, {clog.write_offset})"
            )
        if not self._is_boundary(offset):
            raise StorageError(f"cannot truncate to {offset}: not a record boundary")
        if offset == clog.write_offset:
            return
        self._truncating = True
        try:
            await self._truncate_locked(offset)
        finally:
            self._truncating = False

    async def _truncate_locked(self, offset: int) -> None:
        clog = self._clog
        async with self._flush_lock:
            self._generation += 1
            self._flushed = min(self._flushed, offset)
            self._dispatched = min(self._dispatched, offset)
            self._confirm = min(self._confirm, offset)
            ckpt = self._checkpoint_value()
            await trio.to_thread.run_sync(write_checkpoint, self.store_dir / "checkpoint", ckpt)
            for cq in self._cqs.values():
                cq.truncate_from_physical(offset)
            self._index.truncate_after(offset)
            old_end = clog.write_offset
            clog.truncate(offset)
            self._rebuild_queue_offsets()
            failed = self._group.fail_above(offset)
        log.info(
            "%s: CommitLog truncated from %d to %d (%d flush waiters failed)",
            self.node,
            old_end,
            offset,
            failed,
        )

    def _is_boundary(self, offset: int) -> bool:
        clog = self._clog
        if offset == clog.write_offset or offset % self.config.segment_bytes == 0:
            return True
        head = clog.read(offset, _PHYS_OFFSET_POS + 8)
        if head is None or len(head) < BLANK_MARKER_BYTES:
            return False
        size, magic = peek_record_header(head, 0)
        if magic == BLANK_MAGIC:
            return True
        if magic not in (MAGIC_V1, MAGIC_V2) or size < MIN_RECORD_BYTES:
            return False
        return int.from_bytes(head[_PHYS_OFFSET_POS : _PHYS_OFFSET_POS + 8], "big") == offset

    # ======================================================================================
    # reading
    # ======================================================================================

    def get_messages(
        self,
        group: str,
        topic: str,
        queue_id: int,
        offset: int,
        *,
        max_count: int,
        max_bytes: int,
        tag_codes: frozenset[int] | None = None,
    ) -> GetMessageResult:
        """Read up to ``max_count`` records / ``max_bytes`` from a queue (at least one),
        skipping those whose tag code is not in ``tag_codes`` (None: all). ``group`` is for
        the caller's bookkeeping."""
        del group
        cq = self._cqs.get((topic, queue_id))
        min_o, max_o = (cq.min_offset, cq.max_offset) if cq is not None else (0, 0)
        check = check_offset(offset, min_o, max_o, queue_exists=cq is not None)
        if check.status is not None or cq is None:
            assert check.status is not None
            return GetMessageResult(
                status=check.status,
                next_begin_offset=check.next_begin_offset,
                min_offset=min_o,
                max_offset=max_o,
            )
        # Without a filter every entry read is taken: read no more than can be returned.
        scan = max_count if tag_codes is None else max(max_count, self.config.max_scan_entries)
        entries = cq.read_entries(offset, max(1, scan))
        if not entries:
            nxt = cq.next_file_offset(offset) if entries is None else offset + 1
            return GetMessageResult(
                status=GetMessageStatus.OFFSET_FOUND_NULL,
                next_begin_offset=min(nxt, max_o),
                min_offset=min_o,
                max_offset=max_o,
            )
        sel = select_entries(
            entries,
            offset=offset,
            max_count=max(1, max_count),
            max_bytes=max(1, max_bytes),
            tag_codes=tag_codes,
            min_physical_offset=self._clog.min_offset,
        )
        records: list[bytes] = []
        offsets: list[int] = []
        for e in sel.picked:
            data = self._clog.read(e.physical_offset, e.size)
            if data is None or len(data) != e.size:
                continue
            records.append(data)
            offsets.append(e.queue_offset)
        status = sel.status
        if status is GetMessageStatus.FOUND and not records:
            status = GetMessageStatus.MESSAGE_WAS_REMOVING
        return GetMessageResult(
            status=status,
            next_begin_offset=sel.next_begin_offset,
            min_offset=min_o,
            max_offset=max_o,
            records=tuple(records),
            queue_offsets=tuple(offsets),
        )

    def read_record(self, physical_offset: int) -> bytes | None:
        """The record starting at ``physical_offset``; None when none starts there."""
        clog = self._clog
        if not clog.min_offset <= physical_offset < self._readable_end():
            return None
        head = clog.read(physical_offset, _PHYS_OFFSET_POS + 8)
        if head is None or len(head) < _PHYS_OFFSET_POS + 8:
            return None
        size, magic = peek_record_header(head, 0)
        if magic not in (MAGIC_V1, MAGIC_V2) or size < MIN_RECORD_BYTES:
            return None
        if int.from_bytes(head[_PHYS_OFFSET_POS : _PHYS_OFFSET_POS + 8], "big") != physical_offset:
            return None
        return clog.read(physical_offset, size)

    def _readable_end(self) -> int:
        if self.config.dispatch_confirmed_only:
            return self._dispatched
        return self._clog.write_offset

    def query_index(
        self, topic: str, key: str, max_num: int, begin_ms: int, end_ms: int
    ) -> list[int]:
        """CommitLog offsets that may hold ``key`` (a KEYS token or UNIQ_KEY) of ``topic``,
        newest first; the caller must re-check the key in each record."""
        if max_num <= 0:
            return []
        return self._index.query(f"{topic}#{key}", max_num, begin_ms, end_ms)

    def query_messages(
        self, topic: str, key: str, max_num: int, begin_ms: int, end_ms: int
    ) -> QueryResult:
        """Records of ``topic`` whose KEYS or UNIQ_KEY equal ``key`` (re-checked), newest
        first, with the index freshness fields of a QUERY_MESSAGE response."""
        records: list[bytes] = []
        offsets: list[int] = []
        for phys in self.query_index(topic, key, max_num, begin_ms, end_ms):
            data = self.read_record(phys)
            if data is None:
                continue
            try:
                rec, _ = decode_record(data, check_crc=False)
            except MalformedRecord:
                continue
            if rec.topic == topic and (rec.uniq_key == key or key in rec.keys):
                records.append(data)
                offsets.append(phys)
        return QueryResult(
            records=tuple(records),
            physical_offsets=tuple(offsets),
            index_last_update_timestamp_ms=self._index.last_update_timestamp_ms,
            index_last_update_phy_offset=max(self._index.end_phy_offset, 0),
        )

    def _store_time(self, phys: int, size: int) -> int:
        """STORETIMESTAMP of the record at ``phys``; -1 if it cannot be read."""
        head = self._clog.read(phys, min(size, _STORE_HOST_POS))
        if head is None or len(head) < _STORE_HOST_POS:
            return -1
        (sys_flag,) = struct.unpack_from(">i", head, _SYSFLAG_POS)
        if sys_flag & SYSFLAG_BORNHOST_V6:
            data = self._clog.read(phys, size)
            try:
                rec, _ = decode_record(data or b"", check_crc=False)
            except MalformedRecord:
                return -1
            return rec.store_timestamp_ms
        (ts,) = _STORE_TS.unpack_from(head, _STORE_TS_POS)
        return int(ts)

    def max_offset(self, topic: str, queue_id: int) -> int:
        """Next logical offset of a queue (0 for an unknown queue)."""
        cq = self._cqs.get((topic, queue_id))
        return cq.max_offset if cq is not None else 0

    def min_offset(self, topic: str, queue_id: int) -> int:
        """First readable logical offset of a queue (0 for an unknown queue)."""
        cq = self._cqs.get((topic, queue_id))
        return cq.min_offset if cq is not None else 0

    def store_time_at(self, topic: str, queue_id: int, queue_offset: int) -> int | None:
        """Store time of the message at a logical offset, None if there is none."""
        cq = self._cqs.get((topic, queue_id))
        entry = cq.entry_at(queue_offset) if cq is not None else None
        if entry is None or entry.physical_offset < self._clog.min_offset:
            return None
        ts = self._store_time(entry.physical_offset, entry.size)
        return ts if ts >= 0 else None

    def earliest_store_time_ms(self, topic: str, queue_id: int) -> int:
        """Store time of a queue's first readable message; -1 when there is none."""
        ts = self.store_time_at(topic, queue_id, self.min_offset(topic, queue_id))
        return -1 if ts is None else ts

    def offset_by_time(
        self,
        topic: str,
        queue_id: int,
        timestamp_ms: int,
        boundary: BoundaryType = BoundaryType.LOWER,
    ) -> int:
        """SEARCH_OFFSET_BY_TIMESTAMP (wire §2.7); 0 for an unknown queue."""
        cq = self._cqs.get((topic, queue_id))
        if cq is None:
            return 0

        def time_at(q: int) -> int:
            ts = self.store_time_at(topic, queue_id, q)
            return -1 if ts is None else ts

        return search_offset_by_time(cq.min_offset, cq.max_offset, timestamp_ms, boundary, time_at)

    def topics(self) -> dict[str, list[int]]:
        """Every topic with a ConsumeQueue and its queue ids."""
        out: dict[str, list[int]] = {}
        for topic, qid in sorted(self._cqs):
            out.setdefault(topic, []).append(qid)
        return out

    def next_queue_offset(self, topic: str, queue_id: int) -> int:
        """Offset the next put to this queue will get (dispatched or not)."""
        return self._queue_offsets.get((topic, queue_id), 0)

    @property
    def max_physical_offset(self) -> int:
        """CommitLog write offset."""
        return self._clog.write_offset

    @property
    def min_physical_offset(self) -> int:
        """Lowest CommitLog offset still stored."""
        return self._clog.min_offset

    @property
    def flushed_offset(self) -> int:
        """CommitLog bytes below this are fsynced."""
        return self._flushed

    @property
    def dispatched_offset(self) -> int:
        """Records below this are in ConsumeQueues and the index."""
        return self._dispatched

    @property
    def master_flushed_offset(self) -> int:
        """On a slave: the master's flushed offset last reported."""
        return self._master_flushed

    # ======================================================================================
    # flushing, checkpoint, retention
    # ======================================================================================

    async def wait_flushed(self, end_offset: int, timeout_s: float) -> bool:
        """Wait until CommitLog bytes below ``end_offset`` are fsynced; False on timeout,
        truncation, close, or a full waiter table (the data stays stored either way)."""
        if end_offset <= self._flushed:
            return True
        if self._closed or end_offset > self._clog.write_offset:
            return False
        deadline = trio.current_time() + timeout_s
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
        self._group.release(self._flushed)

    def _checkpoint_value(self) -> Checkpoint:
        return Checkpoint(
            physic_msg_timestamp_ms=self._last_put_ms,
            logics_msg_timestamp_ms=self._last_dispatch_ms,
            index_msg_timestamp_ms=self._index.last_update_timestamp_ms,
            master_flushed_offset=self._master_flushed,
            confirm_offset=self._confirm,
            flushed_offset=self._flushed,
            dispatched_offset=min(self._dispatched, self._flushed),
            min_physical_offset=self._clog.min_offset,
        )

    def _take_all_dirty_fds(self) -> list[int]:
        fds: list[int] = []
        for cq in self._cqs.values():
            fds += cq.take_dirty_fds()
        fds += self._index.take_dirty_fds()
        return fds

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
        head = self._clog.read(nxt.start, _STORE_HOST_POS)
        if head is not None and len(head) == _STORE_HOST_POS:
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
            await self.flush()

    async def _expiry_loop(self) -> None:
        while True:
            await self._group.wait_for_work()
            await trio.sleep(_EXPIRY_TICK_S)
            self._group.expire(trio.current_time())

    async def _checkpoint_loop(self) -> None:
        while True:
            await trio.sleep(self.config.checkpoint_interval_s)
            await self.checkpoint()

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(self.config.retention_check_interval_s)
            self.delete_expired(self._clock_ms())

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

    # ======================================================================================
    # monitoring
    # ======================================================================================

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
