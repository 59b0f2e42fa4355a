"""The put path: a message (or a batch) becomes CommitLog bytes and, at once, queue entries.

Rules:
- The record is encoded once; QUEUEOFFSET, PHYSICALOFFSET, STORETIMESTAMP and STOREHOST are
  patched into the bytes (the CRC covers the body only), then appended, and on a master
  dispatched at once from the values in hand (no read back, no decode); when dispatch
  must wait (controller mode dispatches confirmed data only) those values are kept for it.
- A put is refused before anything is written: closed or truncating store
  (``StorageError``), too little free disk (``DiskFull``, re-checked every
  ``disk_check_interval_s``), or a message that cannot be stored (an ``AppendResult`` with
  MESSAGE_ILLEGAL / PROPERTIES_SIZE_EXCEEDED), including a topic or queue id that could
  not name a ConsumeQueue directory under the store (``paths.queue_path``).
- ``put_encoded(hold=True)`` and ``put_messages(hold=True)`` (the send path's puts) leave the bytes held in the CommitLog
  (``CommitLog.hold``): written by the broker's ``commit_held`` before any answer leaves
  (commitlog.py's module docstring). A commit that failed refuses every put until the
  flush loop has cut the store's state back (``StoreDurability._cut_back_failed``).
- A batch goes to one topic and queue, in one segment and one write, with consecutive
  queue offsets; its bodies together fit ``max_message_bytes``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence

from broker.store.dispatch import StoreDispatch
from broker.store.results import (
    PUT_OK,
    AppendResult,
    PutStatus,
)
from broker.store.state import (
    NO_DISPATCH,
    QUEUE_AND_PHYS,
    QUEUE_OFFSET_POS,
    STORE_TS_AND_HOST,
    STORE_TS_POS,
    PendingRecord,
)
from protocol.errors import DiskFull, StorageError
from protocol.message import (
    BLANK_MARKER_BYTES,
    SYSFLAG_TRANSACTION_MASK,
    MessageRecord,
    encode_record,
)
from protocol.slots import slot_builder

log = logging.getLogger(__name__)

_make_result = slot_builder(AppendResult)


class StorePut(StoreDispatch):
    """The store's put layer."""

    def _check_writable(self) -> None:
        if self._closed:
            raise StorageError(f"{self.node}: store is closed")
        if self._truncating:
            raise StorageError(f"{self.node}: store is truncating its CommitLog")
        if self._clog.failed_at is not None:
            raise StorageError(
                f"{self.node}: a CommitLog write failed ({self._clog.failure}); puts resume "
                "once the store has cut back what it did not write"
            )
        # Real time, whatever clock the store keeps: one C call a put, not four frames of
        # Trio's clock (the interval needs no test clock; tests that check the disk on
        # every put set it to 0).
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

    def _unsafe_name(self, topic: str, queue_id: int) -> AppendResult | None:
        """MESSAGE_ILLEGAL for a topic/queue id that cannot name a ConsumeQueue directory."""
        problem = self._queue_name_problem(topic, queue_id)
        if problem is None:
            return None
        return AppendResult(status=PutStatus.MESSAGE_ILLEGAL, remark=problem)

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

    def _append_or_hold(self, buf: bytearray, *, hold: bool) -> None:
        """Append ``buf`` to the CommitLog, or hold it for the next commit
        (``CommitLog.hold``); a hold that crossed the bound and whose commit failed
        refuses the put."""
        clog = self._clog
        if not hold:
            clog.append(buf)
            return
        clog.hold(buf)
        if clog.failed_at is not None:
            raise StorageError(f"{self.node}: CommitLog write failed: {clog.failure}")

    def put_message(self, msg: MessageRecord) -> AppendResult:
        """Append one message; queue offset, physical offset and store time/host are assigned
        here (the values in ``msg`` are ignored).

        Raises ``DiskFull`` (nothing written) and ``StorageError`` (closed store).
        """
        self._check_writable()
        refused = self._unsafe_name(msg.topic, msg.queue_id)
        if refused is not None:
            return refused
        encoded = self._encode_checked(msg)
        if isinstance(encoded, AppendResult):
            return encoded
        return self.put_encoded(
            msg.topic,
            msg.queue_id,
            msg.sys_flag,
            encoded,
            msg.properties,
            body_bytes=len(msg.body),
        )

    def put_encoded(
        self,
        topic: str,
        queue_id: int,
        sys_flag: int,
        encoded: bytes,
        properties: Mapping[str, str],
        *,
        body_bytes: int,
        hold: bool = False,
    ) -> AppendResult:
        """``put_message`` of a record already encoded (``protocol/record_wire.py``) with
        these fields; ``properties`` are its properties (read for TAGS, KEYS, UNIQ_KEY),
        ``body_bytes`` its body's length. Same checks, results and errors. ``hold``: the
        bytes wait for ``commit_held`` (the caller's answer must not leave before it)."""
        self._check_writable()
        if (topic, queue_id) not in self._cqs:  # a queue seen before has a safe name
            refused = self._unsafe_name(topic, queue_id)
            if refused is not None:
                return refused
        config = self.config
        if body_bytes > config.max_message_bytes:
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL,
                remark=f"body of {body_bytes} bytes exceeds {config.max_message_bytes}",
            )
        size = len(encoded)
        if size + BLANK_MARKER_BYTES > config.segment_bytes:
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL,
                remark=f"{size} bytes do not fit in a {config.segment_bytes}-byte segment",
            )
        # The single-message case of _append_records, unrolled: it is the send hot path.
        clog = self._clog
        key = (topic, queue_id)
        counted = sys_flag & SYSFLAG_TRANSACTION_MASK not in NO_DISPATCH
        queue_offset = self._queue_offsets.get(key, 0) if counted else 0
        now_ms = self._clock.wall_ms()
        if self._dispatched != clog.write_offset and not self._defer_dispatch:
            self.catch_up_dispatch()  # an earlier dispatch failed (out of descriptors)
        was_dispatched = self._dispatched == clog.write_offset
        phys = clog.reserve(size)
        buf = bytearray(encoded)
        QUEUE_AND_PHYS.pack_into(buf, QUEUE_OFFSET_POS, queue_offset, phys)
        STORE_TS_AND_HOST.pack_into(buf, STORE_TS_POS, now_ms, self._store_host_bytes)
        self._append_or_hold(buf, hold=hold)
        if counted:
            self._queue_offsets[key] = queue_offset + 1
        self._last_put_ms = now_ms
        self._put_messages += 1
        self._put_bytes += size
        if was_dispatched and not self._defer_dispatch:
            self._dispatched = phys  # only blank padding lay between
            try:
                self._dispatch_one(
                    topic,
                    queue_id,
                    queue_offset,
                    phys,
                    size,
                    sys_flag=sys_flag,
                    properties=properties,
                    store_ms=now_ms,
                    recovering=False,
                )
            except OSError as exc:
                self._dispatch_failed(exc)  # stored; dispatched by a later catch-up
            else:
                self._dispatched = phys + size
        else:
            if was_dispatched:
                self._dispatched = phys  # only blank padding lay between
            self._keep_pending(
                (phys, size, topic, queue_id, queue_offset, sys_flag, properties, now_ms)
            )
        # Positional in AppendResult's field order (slot_builder): one per send.
        return _make_result(
            PUT_OK,
            phys,
            size,
            queue_offset,
            # offset_msg_id: its f"{prefix}{phys:016X}", without int.__format__'s spec
            # parse (~1.8k instructions); phys is an int64 >= 0, so 8 bytes hold it.
            self._msg_id_prefix + phys.to_bytes(8, "big").hex().upper(),
            now_ms,
            1,
            "",
        )

    def put_messages(self, msgs: Sequence[MessageRecord], *, hold: bool = False) -> AppendResult:
        """Append a batch to one topic/queue as consecutive records with consecutive queue
        offsets, in one segment and one write. The bodies together must fit
        ``max_message_bytes``. ``hold``: as ``put_encoded``'s."""
        self._check_writable()
        if not msgs:
            return AppendResult(status=PutStatus.MESSAGE_ILLEGAL, remark="empty batch")
        topic, queue_id = msgs[0].topic, msgs[0].queue_id
        if any(m.topic != topic or m.queue_id != queue_id for m in msgs):
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL, remark="a batch must go to one topic and queue"
            )
        refused = self._batch_refused(topic, queue_id, sum(len(m.body) for m in msgs))
        if refused is not None:
            return refused
        encoded: list[bytes] = []
        for m in msgs:
            e = self._encode_checked(m)
            if isinstance(e, AppendResult):
                return e
            encoded.append(e)
        return self._append_records(
            topic,
            queue_id,
            [m.sys_flag for m in msgs],
            [m.properties for m in msgs],
            encoded,
            hold=hold,
        )

    def put_encoded_batch(
        self,
        topic: str,
        queue_id: int,
        sys_flag: int,
        encoded: list[bytes],
        properties: list[Mapping[str, str]],
        *,
        body_bytes: int,
        hold: bool = False,
    ) -> AppendResult:
        """``put_messages`` of records already encoded (the send path's straight case for
        a client's batch), all with ``sys_flag``; ``properties`` are theirs, in order, and
        ``body_bytes`` their bodies' total. Same checks, results and errors."""
        self._check_writable()
        if not encoded:
            return AppendResult(status=PutStatus.MESSAGE_ILLEGAL, remark="empty batch")
        refused = self._batch_refused(topic, queue_id, body_bytes)
        if refused is not None:
            return refused
        return self._append_records(
            topic, queue_id, [sys_flag] * len(encoded), properties, encoded, hold=hold
        )

    def _batch_refused(self, topic: str, queue_id: int, body_bytes: int) -> AppendResult | None:
        """Why a batch of ``body_bytes`` of bodies cannot go to this queue (its name, or
        more than ``max_message_bytes`` together), or None: ``put_messages``' and
        ``put_encoded_batch``'s checks."""
        refused = self._unsafe_name(topic, queue_id)
        if refused is not None:
            return refused
        if body_bytes > self.config.max_message_bytes:
            return AppendResult(
                status=PutStatus.MESSAGE_ILLEGAL,
                remark=f"batch of {body_bytes} body bytes exceeds {self.config.max_message_bytes}",
            )
        return None

    def _append_records(
        self,
        topic: str,
        queue_id: int,
        sys_flags: list[int],
        properties: Sequence[Mapping[str, str]],
        encoded: list[bytes],
        *,
        hold: bool,
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
        now_ms = self._clock.wall_ms()
        if self._dispatched != clog.write_offset and not self._defer_dispatch:
            self.catch_up_dispatch()
        was_dispatched = self._dispatched == clog.write_offset
        phys = clog.reserve(total)
        if was_dispatched:
            self._dispatched = phys  # the blank padding (if any) holds nothing to dispatch
        buf = bytearray(b"".join(encoded)) if len(encoded) > 1 else bytearray(encoded[0])
        # One pass: each record's offsets, store time and host patched in, what its
        # dispatch needs, and its offset_msg_id (the store's host prefix; phys >= 0).
        appended: list[PendingRecord] = []
        ids: list[str] = []
        prefix = self._msg_id_prefix
        pos = phys
        queue_offset = first_queue_offset
        store_host = self._store_host_bytes
        for e, sys_flag, props in zip(encoded, sys_flags, properties, strict=True):
            at = pos - phys
            counted = sys_flag & SYSFLAG_TRANSACTION_MASK not in NO_DISPATCH
            record_queue_offset = queue_offset if counted else 0
            QUEUE_AND_PHYS.pack_into(buf, at + QUEUE_OFFSET_POS, record_queue_offset, pos)
            STORE_TS_AND_HOST.pack_into(buf, at + STORE_TS_POS, now_ms, store_host)
            size = len(e)
            appended.append(
                (pos, size, topic, queue_id, record_queue_offset, sys_flag, props, now_ms)
            )
            ids.append(prefix + pos.to_bytes(8, "big").hex().upper())  # as put_encoded's
            if counted:
                queue_offset += 1
            pos += size
        self._append_or_hold(buf, hold=hold)
        self._queue_offsets[key] = queue_offset
        self._last_put_ms = now_ms
        self._put_messages += len(encoded)
        self._put_bytes += total
        if was_dispatched and not self._defer_dispatch:
            self._dispatch_appended(appended)
        else:
            for record in appended:
                self._keep_pending(record)
        return AppendResult(
            status=PutStatus.PUT_OK,
            physical_offset=phys,
            wrote_bytes=total,
            queue_offset=first_queue_offset,
            msg_id=",".join(ids),
            store_timestamp_ms=now_ms,
            message_count=len(encoded),
        )

    def _dispatch_appended(self, records: list[PendingRecord]) -> None:
        """Dispatch records just appended (the first starts at ``_dispatched``) as a
        confirm move does: kept, then dispatched a run at a time (``_dispatch_kept_run``:
        one ConsumeQueue append and one index write per run, not per record). One that
        fails (out of descriptors) and those after it are left to a later catch-up."""
        for record in records:
            self._keep_pending(record)  # bounded: any not kept is read back from the log
        last = records[-1]
        try:
            self._dispatch_pending(last[0] + last[1])
        except OSError as exc:
            self._dispatch_failed(exc)
