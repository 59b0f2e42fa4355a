"""Replication I/O: raw CommitLog bytes out to slaves, in from a master, and truncation.

Rules:
- ``read_raw`` hands out whole units (records, or a blank marker with its padding) from a
  record boundary within one segment; ``append_raw`` takes exactly such bytes at the write
  offset and checks every unit before writing any: magic, size, CRC, PHYSICALOFFSET = where
  it lands, blank markers padding exactly to the segment end, a body within
  ``max_message_bytes``, a topic and queue id that name a directory under the store
  (``paths.queue_path``), and whatever the caller's ``check`` refuses (the HA slave's
  topic rules). Replicated bytes come from another process: they are untrusted input.
- A ``read_raw`` of exactly the last put (it ends the log) returns that put's bytes as
  kept by the CommitLog (``last_append``), not a read of them: what a master's streamer
  asks for after each put at one in flight.
- An empty store takes replicated data at any segment boundary (a slave joining late).
- ``truncate_to`` cuts at a record boundary (the consistent point with a new master): it
  writes the lowered checkpoint *before* cutting files, so a crash in between never leaves
  a checkpoint promising bytes that are gone; puts are refused while it runs, and flush
  waiters above the cut are failed. ``high_water_offset`` remembers the highest end held
  since opening, so a caller can bound what successive cuts throw away.
- After a failed held commit (commitlog.py) ``_cut_back_failed``, run by the flush loop,
  takes the same way back to the log's end, with puts refused meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from broker.store.checkpoint import write_checkpoint
from broker.store.put import StorePut
from broker.store.state import (
    MAX_PENDING_RECORDS,
    NO_DISPATCH,
    PHYS_OFFSET_POS,
    PendingRecord,
)
from protocol.errors import CorruptRecord, MalformedRecord, StorageError
from protocol.message import (
    BLANK_MAGIC,
    BLANK_MARKER_BYTES,
    MAGIC_V1,
    MAGIC_V2,
    MIN_RECORD_BYTES,
    SYSFLAG_TRANSACTION_MASK,
    peek_record_header,
)
from protocol.record_fields import read_stored_fields

log = logging.getLogger(__name__)

#: A caller's extra check of each replicated record's topic and queue id: why it is
#: refused, or None.
RecordCheck = Callable[[str, int], "str | None"]


class StoreReplica(StorePut):
    """The store's replication layer."""

    def append_raw(
        self, data: bytes, expected_start_offset: int, *, check: RecordCheck | None = None
    ) -> int:
        """Append CommitLog bytes replicated from a master; return the new write offset.

        ``data`` must start at the write offset and hold whole records (and blank markers
        padding exactly to segment ends) whose PHYSICALOFFSET fields match where they land,
        each one acceptable to ``check`` too. Nothing is written when any check fails
        (``CorruptRecord``).
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
        kept = self._validate_raw(data, expected_start_offset, check)
        seg_bytes = self.config.segment_bytes
        if expected_start_offset % seg_bytes + len(data) <= seg_bytes:
            clog.append_raw_piece(data)  # the common case: within one segment, no slicing
        else:
            view = memoryview(data)
            i = 0
            while i < len(data):
                at = expected_start_offset + i
                n = min(len(data) - i, seg_bytes - at % seg_bytes)
                clog.append_raw_piece(view[i : i + n])
                i += n
        # Decoded once in the validation: dispatch takes these values instead of reading
        # them back (bounded, as ``_keep_pending``).
        pending = self._pending_dispatch
        pending.extend(kept[: max(0, MAX_PENDING_RECORDS - len(pending))])
        queue_offsets = self._queue_offsets
        for _, _, topic, queue_id, queue_offset, sys_flag, _, _ in kept:
            if sys_flag & SYSFLAG_TRANSACTION_MASK in NO_DISPATCH:
                continue
            key = (topic, queue_id)
            queue_offsets[key] = max(queue_offsets.get(key, 0), queue_offset + 1)
        if kept:
            self._last_put_ms = kept[-1][7]
        self._dispatch_some()  # nothing with dispatch_confirmed_only: the confirm moves it
        return clog.write_offset

    def _validate_raw(
        self, data: bytes, start: int, check: RecordCheck | None
    ) -> list[PendingRecord]:
        """Check replicated bytes (whole records, and blank markers with their padding) in
        one pass; return each record's dispatch values.

        Each record is read with ``read_stored_fields`` (every check of ``decode_record``,
        without building a MessageRecord). A transfer carries many records of a few queues:
        the name checks (``check``, then the store's own) run once per (topic, queue id)
        pair and transfer, as their answer depends on nothing else."""
        seg_bytes = self.config.segment_bytes
        check_crc = self.config.check_crc
        max_body = self.config.max_message_bytes
        passed: set[tuple[str, int]] = set()
        kept: list[PendingRecord] = []
        i = 0
        end = len(data)
        while i < end:
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
                if i + size > end:
                    raise CorruptRecord(f"replicated data ends inside the padding at {at}")
                i += size
                continue
            if magic not in (MAGIC_V1, MAGIC_V2) or size < MIN_RECORD_BYTES:
                raise CorruptRecord(f"replicated data at offset {at}: not a record")
            if at + size + BLANK_MARKER_BYTES > seg_end:
                raise CorruptRecord(f"replicated record at {at} ({size} bytes) crosses a segment")
            try:
                size, topic, queue_id, queue_offset, phys, sys_flag, props, store_ms, body_len = (
                    read_stored_fields(data, i, check_crc=check_crc, max_size=seg_bytes)
                )
            except MalformedRecord as exc:
                raise CorruptRecord(f"replicated data at offset {at}: {exc}") from None
            if phys != at:
                raise CorruptRecord(f"replicated record at {at} says it lies at {phys}")
            if body_len > max_body:
                raise CorruptRecord(
                    f"replicated record at {at} refused: body of {body_len} bytes exceeds "
                    f"max_message_bytes {max_body}"
                )
            if (topic, queue_id) not in passed:
                problem = (check(topic, queue_id) if check is not None else None) or (
                    self._queue_name_problem(topic, queue_id)
                )
                if problem is not None:
                    raise CorruptRecord(f"replicated record at {at} refused: {problem}")
                passed.add((topic, queue_id))
            kept.append((at, size, topic, queue_id, queue_offset, sys_flag, props, store_ms))
            i += size
        return kept

    def read_raw(self, offset: int, max_bytes: int, *, at_boundary: bool = False) -> bytes:
        """Whole units (records, or a blank marker with its padding) from ``offset`` (a
        boundary) within one segment, at most ``max_bytes`` unless the first unit is larger;
        b"" at the write offset. For a master's HA stream; ``append_raw`` takes them.
        ``at_boundary``: the caller knows ``offset`` is one (the end of its previous
        read_raw, the log not cut since), which saves the check's read of a header."""
        clog = self._clog
        clog.commit()  # held appends first: nothing goes to a slave before it is in the file
        end = clog.write_offset
        last = clog.last_append
        if last is not None and last[0] == offset and not self._damage:
            # The last put's own bytes, when it is what the read would return: it ends the
            # log (nothing written since) and fits ``max_bytes`` (one put, whole records
            # in one segment). A streamer told of each put reads no record back.
            data = last[1]
            if offset + len(data) == end and len(data) <= max(max_bytes, BLANK_MARKER_BYTES):
                return bytes(data)  # a held put's bytearray copied now (no copy of bytes)
        seg = clog.segment_for(offset)
        if offset >= end or seg is None:
            return b""
        stop = min(end, seg.end)
        damage = self._damage.next_at_or_after(offset) if self._damage else None
        if damage is not None and damage.offset < stop:
            if damage.offset <= offset:
                raise StorageError(
                    f"cannot replicate {damage.describe()} (skipped at start): a slave can "
                    "only copy records"
                )
            stop = damage.offset
        if not at_boundary and not self._is_boundary(offset):
            raise StorageError(f"cannot read raw data from {offset}: not a record boundary")
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
            self._pending_dispatch.clear()  # kept records may lie past the cut
            self._confirm = min(self._confirm, offset)
            ckpt = self._checkpoint_value()
            await trio.to_thread.run_sync(write_checkpoint, self.store_dir / "checkpoint", ckpt)
            for cq in self._cqs.values():
                cq.truncate_from_physical(offset)
            self._index.truncate_after(offset)
            old_end = clog.write_offset
            self._high_water = max(self._high_water, old_end)
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
        for listener in self._truncate_listeners:
            listener()

    async def _cut_back_failed(self) -> None:
        """A held commit failed (``CommitLog.commit``): the log is cut back to where its
        bytes began; the ConsumeQueue entries, index keys and queue offsets of the records
        it lost go the way a slave's truncation takes them, then puts resume."""
        clog = self._clog
        offset = clog.failed_at
        if offset is None:
            return
        self._truncating = True
        try:
            await self._truncate_locked(offset)
        except OSError as exc:  # the checkpoint's write (a full disk): the next tick retries
            log.warning(
                "%s: cutting back to %d failed: %s; puts stay refused", self.node, offset, exc
            )
            return
        finally:
            self._truncating = False
        clog.clear_failure()
        log.warning("%s: state cut back to %d after a failed write; puts resume", self.node, offset)

    def add_truncate_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every ``truncate_to`` that cut the log."""
        self._truncate_listeners.append(listener)

    def _is_boundary(self, offset: int) -> bool:
        clog = self._clog
        if offset == clog.write_offset or offset % self.config.segment_bytes == 0:
            return True
        head = clog.read(offset, PHYS_OFFSET_POS + 8)
        if head is None or len(head) < BLANK_MARKER_BYTES:
            return False
        size, magic = peek_record_header(head, 0)
        if magic == BLANK_MAGIC:
            return True
        if magic not in (MAGIC_V1, MAGIC_V2) or size < MIN_RECORD_BYTES:
            return False
        return int.from_bytes(head[PHYS_OFFSET_POS : PHYS_OFFSET_POS + 8], "big") == offset

    # ======================================================================================
