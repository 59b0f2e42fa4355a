"""Reads and queries: pulls from a ConsumeQueue, records by offset, by key, by time.

Rules:
- Read-only: nothing here changes the store's state.
- A pull returns the records exactly as they lie in the CommitLog, at least one when any
  matches, and scans at most ``max_scan_entries`` past filtered-out ones; the status and
  next offset follow RocketMQ's GetMessageStatus table (``broker/store/pull.py``).
- With ``dispatch_confirmed_only`` (or ``dispatch_flushed_only`` under SYNC_FLUSH) nothing
  past the dispatched (confirmed, fsynced) offset is readable, by queue or by physical
  offset.
- A query by key re-checks the key in every record the index names (hash collisions).
- Nothing but a record is served: an entry whose bytes overlap a damaged range skipped at
  open, or do not start with a record of that size lying at that offset (magic, TOTALSIZE,
  PHYSICALOFFSET), is left out and logged (issue 13 row 8: zeroed CommitLog bytes reached
  consumers as undecodable records); the pull's next offset still moves past it.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Sequence

from broker.store.commitlog import Segment
from broker.store.consumequeue import CQ_ENTRY, BoundaryType, CqEntry, search_offset_by_time
from broker.store.pull import GetMessageStatus, check_offset, select_entries
from broker.store.results import (
    GetMessageResult,
    QueryResult,
)
from broker.store.state import (
    PHYS_OFFSET_POS,
    STORE_HOST_POS,
    STORE_TS,
    STORE_TS_POS,
    SYSFLAG_POS,
    StoreState,
)
from protocol.errors import MalformedRecord
from protocol.message import (
    MAGIC_V1,
    MAGIC_V2,
    MIN_RECORD_BYTES,
    SYSFLAG_BORNHOST_V6,
    decode_record,
    peek_record_header,
)
from protocol.speedups import cut_records as _compiled_cut_records
from protocol.speedups import take_all as _compiled_take_all

log = logging.getLogger(__name__)

#: Unservable reads logged one by one; later ones only every ``_UNSERVABLE_LOG_EVERY``.
_UNSERVABLE_LOGGED = 10
_UNSERVABLE_LOG_EVERY = 1000
#: A record's TOTALSIZE, MAGICCODE and PHYSICALOFFSET in one unpack (``_servable``).
_RECORD_HEAD = struct.Struct(">ii20xq")
assert _RECORD_HEAD.size == PHYS_OFFSET_POS + 8
_MAGICS = (MAGIC_V1, MAGIC_V2)
#: A pull reads the records it takes together while the bytes read stay within this many
#: times the bytes taken, and within ``_SPAN_MAX_BYTES`` (``StoreReads._result``).
_SPAN_AMPLIFICATION = 4
_SPAN_MAX_BYTES = 1 << 20
#: ``take_all``'s status codes (protocol/_speedups_cq.c).
_WALK_STATUS = (
    GetMessageStatus.NO_MATCHED_MESSAGE,
    GetMessageStatus.MESSAGE_WAS_REMOVING,
    GetMessageStatus.FOUND,
)


class StoreReads(StoreState):
    """The store's read layer."""

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
        record_filter: Callable[[bytes], bool] | None = None,
    ) -> GetMessageResult:
        """Read up to ``max_count`` records / ``max_bytes`` from a queue (at least one),
        skipping those whose tag code is not in ``tag_codes`` (None: all) and those
        ``record_filter`` refuses (a SQL92 subscription). ``group`` is for the caller's
        bookkeeping."""
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
        filtered = tag_codes is not None or record_filter is not None
        entries: list[CqEntry] | None
        if not filtered:
            # The common pull (subscription "*"): the entries' bytes taken as they are
            # read, with no CqEntry built and no Selection (a fifth of a pull's time).
            data = cq.read_entry_bytes(offset, max(1, max_count))
            if data:
                taken = self._take_all(data, offset, max(1, max_count), max(1, max_bytes))
                if taken is not None:
                    status, next_begin, picked = taken
                    return self._result(status, next_begin, picked, (min_o, max_o), topic, queue_id)
            entries = None if data is None else []  # an unwritten first entry: none
        else:
            scan = max(max_count, self.config.max_scan_entries)
            entries = cq.read_entries(offset, max(1, scan))
        if not entries:
            nxt = cq.next_file_offset(offset) if entries is None else offset + 1
            return GetMessageResult(
                status=GetMessageStatus.OFFSET_FOUND_NULL,
                next_begin_offset=min(nxt, max_o),
                min_offset=min_o,
                max_offset=max_o,
            )
        if record_filter is not None:
            return self._filtered(
                entries, offset, (min_o, max_o), max(1, max_count), max_bytes, record_filter
            )
        sel = select_entries(
            entries,
            offset=offset,
            max_count=max(1, max_count),
            max_bytes=max(1, max_bytes),
            tag_codes=tag_codes,
            min_physical_offset=self._clog.min_offset,
        )
        picked = [(e.queue_offset, e.physical_offset, e.size) for e in sel.picked]
        return self._result(
            sel.status, sel.next_begin_offset, picked, (min_o, max_o), topic, queue_id
        )

    def _take_all(
        self, data: bytes, offset: int, max_count: int, max_bytes: int
    ) -> tuple[GetMessageStatus, int, list[tuple[int, int, int]]] | None:
        """``select_entries`` without a tag filter, over the raw entries ``data`` (read
        from ``offset``): the status, the next begin offset and the picked ``(queue
        offset, physical offset, size)``; None when the first entry is unwritten
        (``decode_entries`` would give none). The walk below is the definition; the
        compiled ``take_all`` does it where it is built."""
        min_physical = self._clog.min_offset
        if _compiled_take_all is not None:
            walked = _compiled_take_all(data, offset, max_count, max_bytes, min_physical)
            if walked is not None:
                code, walked_to, walked_picked = walked
                if walked_to == offset:
                    return None
                return _WALK_STATUS[code], walked_to, walked_picked
        status = GetMessageStatus.NO_MATCHED_MESSAGE
        picked: list[tuple[int, int, int]] = []
        total = 0
        next_begin = offset
        for queue_offset, (phys, size, _tags) in enumerate(CQ_ENTRY.iter_unpack(data), offset):
            if size <= 0 or phys < 0:
                break  # unwritten: where decode_entries stops
            if picked and (len(picked) >= max_count or total + size > max_bytes):
                break
            next_begin = queue_offset + 1
            if phys < min_physical:
                if not picked:
                    status = GetMessageStatus.MESSAGE_WAS_REMOVING
                continue
            picked.append((queue_offset, phys, size))
            total += size
            status = GetMessageStatus.FOUND
        return None if next_begin == offset else (status, next_begin, picked)

    def _result(
        self,
        status: GetMessageStatus,
        next_begin: int,
        picked: list[tuple[int, int, int]],
        bounds: tuple[int, int],
        topic: str,
        queue_id: int,
    ) -> GetMessageResult:
        """Read the picked ``(queue offset, physical offset, size)`` records and answer.

        Records lying back to back (a batch, or one producer's run), or with other
        queues' records between them when what is read stays within
        ``_SPAN_AMPLIFICATION`` times what is wanted (single sends spread over a few
        queues), are read with one pread and cut apart: a pread per record was a fifth of
        a pull, and a 1.2 KiB pread costs what a copy of ~5 KiB does. Each is checked to
        be a whole record lying there (``_servable``, inline: once per pulled message)."""
        records: list[bytes] = []
        offsets: list[int] = []
        clog = self._clog
        clog.commit()  # held appends first: the preads below go to the file, not through clog.read
        damaged = bool(self._damage)
        seg: Segment | None = None
        seg_start = seg_end = fd = 0
        n = len(picked)
        i = 0
        while i < n:
            start = picked[i][1]
            end = start + picked[i][2]
            wanted = end - start
            j = i + 1
            while j < n:
                phys, size = picked[j][1], picked[j][2]
                if phys < end:
                    break
                if phys > end and (
                    phys + size - start > _SPAN_MAX_BYTES
                    or phys + size - start > _SPAN_AMPLIFICATION * (wanted + size)
                ):
                    break
                end = phys + size
                wanted += size
                j += 1
            # clog.read, with the segment looked up once for the runs it holds.
            if seg is None or not seg_start <= start < seg_end:
                seg = clog.segment_for(start)
                if seg is not None:
                    seg_start, seg_end, fd = seg.start, seg.end, seg.fd
            span = (
                os.pread(fd, end - start, start - seg_start)
                if seg is not None and end <= seg_end
                else None
            )
            whole = span is not None and len(span) == end - start
            k = i
            if whole and not damaged and _compiled_cut_records is not None:
                # The loop below for the records it can take (all, unless one must be
                # refused): the same records and offsets appended.
                k = _compiled_cut_records(span, start, picked, i, j, records, offsets) or i
            for queue_offset, phys, size in picked[k:j]:
                if not whole:  # a run the log cannot give whole (a segment end)
                    data = clog.read(phys, size)
                elif j - i == 1:
                    data = span
                else:
                    at = phys - start
                    data = span[at : at + size]  # type: ignore[index]
                if data is None or len(data) != size:
                    continue
                if (damaged and self._damage.overlapping(phys, size)) or size < _RECORD_HEAD.size:
                    servable = False
                else:
                    total_size, magic, lies_at = _RECORD_HEAD.unpack_from(data)
                    servable = total_size == size and magic in _MAGICS and lies_at == phys
                if not servable:
                    self._refuse_read(f"{topic}/{queue_id} offset {queue_offset}", phys)
                    continue
                records.append(data)
                offsets.append(queue_offset)
            i = j
        if status is GetMessageStatus.FOUND and not records:
            status = GetMessageStatus.MESSAGE_WAS_REMOVING
        return GetMessageResult(
            status=status,
            next_begin_offset=next_begin,
            min_offset=bounds[0],
            max_offset=bounds[1],
            records=tuple(records),
            queue_offsets=tuple(offsets),
        )

    def _filtered(
        self,
        entries: Sequence[CqEntry],
        offset: int,
        bounds: tuple[int, int],
        max_count: int,
        max_bytes: int,
        record_filter: Callable[[bytes], bool],
    ) -> GetMessageResult:
        """``get_messages`` for a record-level filter: entries it refuses are stepped over
        and cost nothing of ``max_count`` / ``max_bytes``."""
        status = GetMessageStatus.NO_MATCHED_MESSAGE
        records: list[bytes] = []
        offsets: list[int] = []
        total = 0
        next_begin = offset
        for e in entries:
            if records and (len(records) >= max_count or total + e.size > max_bytes):
                break
            next_begin = e.queue_offset + 1
            if e.physical_offset < self._clog.min_offset:
                status = GetMessageStatus.MESSAGE_WAS_REMOVING if not records else status
                continue
            data = self._clog.read(e.physical_offset, e.size)
            if data is None or len(data) != e.size:
                continue
            if not self._servable(e.physical_offset, data):
                self._refuse_read(f"offset {e.queue_offset}", e.physical_offset)
                continue
            if not record_filter(data):
                continue
            records.append(data)
            offsets.append(e.queue_offset)
            total += e.size
            status = GetMessageStatus.FOUND
        return GetMessageResult(
            status=status,
            next_begin_offset=next_begin,
            min_offset=bounds[0],
            max_offset=bounds[1],
            records=tuple(records),
            queue_offsets=tuple(offsets),
        )

    def _servable(self, physical_offset: int, data: bytes) -> bool:
        """Whether ``data`` read at ``physical_offset`` is one whole record lying there."""
        if self._damage and self._damage.overlapping(physical_offset, len(data)):
            return False
        if len(data) < PHYS_OFFSET_POS + 8:
            return False
        size, magic = peek_record_header(data, 0)
        lies_at = int.from_bytes(data[PHYS_OFFSET_POS : PHYS_OFFSET_POS + 8], "big")
        return size == len(data) and magic in (MAGIC_V1, MAGIC_V2) and lies_at == physical_offset

    def _refuse_read(self, what: str, physical_offset: int) -> None:
        self._unservable_reads += 1
        n = self._unservable_reads
        if n <= _UNSERVABLE_LOGGED or n % _UNSERVABLE_LOG_EVERY == 0:
            log.warning(
                "%s: not serving %s: no record at CommitLog offset %d (damaged; %d refused so far)",
                self.node,
                what,
                physical_offset,
                n,
            )

    def read_record(self, physical_offset: int) -> bytes | None:
        """The record starting at ``physical_offset``; None when none starts there."""
        clog = self._clog
        if not clog.min_offset <= physical_offset < self._readable_end():
            return None
        head = clog.read(physical_offset, PHYS_OFFSET_POS + 8)
        if head is None or len(head) < PHYS_OFFSET_POS + 8:
            return None
        size, magic = peek_record_header(head, 0)
        if magic not in (MAGIC_V1, MAGIC_V2) or size < MIN_RECORD_BYTES:
            return None
        if int.from_bytes(head[PHYS_OFFSET_POS : PHYS_OFFSET_POS + 8], "big") != physical_offset:
            return None
        if self._damage and self._damage.overlapping(physical_offset, size):
            return None
        return clog.read(physical_offset, size)

    def _readable_end(self) -> int:
        if self._defer_dispatch:
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
        if self._damage and self._damage.overlapping(phys, size):
            return -1
        head = self._clog.read(phys, min(size, STORE_HOST_POS))
        if head is None or len(head) < STORE_HOST_POS:
            return -1
        (sys_flag,) = struct.unpack_from(">i", head, SYSFLAG_POS)
        if sys_flag & SYSFLAG_BORNHOST_V6:
            data = self._clog.read(phys, size)
            try:
                rec, _ = decode_record(data or b"", check_crc=False)
            except MalformedRecord:
                return -1
            return rec.store_timestamp_ms
        (ts,) = STORE_TS.unpack_from(head, STORE_TS_POS)
        return int(ts)

    def max_offset(self, topic: str, queue_id: int) -> int:
        """Next logical offset of a queue (0 for an unknown queue)."""
        cq = self._cqs.get((topic, queue_id))
        return cq.max_offset if cq is not None else 0

    def queue_entries(
        self, topic: str, queue_id: int, begin: int, max_count: int
    ) -> list[tuple[int, int, int, int]]:
        """``(queue_offset, phys, size, tags_code)`` of up to ``max_count`` entries from
        ``begin`` (clamped to the queue's readable range; holes skipped)."""
        cq = self._cqs.get((topic, queue_id))
        if cq is None:
            return []
        start = max(begin, cq.min_offset)
        end = min(start + max_count, cq.max_offset)
        raw = cq.raw_entries(start, end) if start < end else []
        return [(start + i, p, n, t) for i, (p, n, t) in enumerate(raw) if n > 0]

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

    def queue_end(self, topic: str, queue_id: int) -> int | None:
        """``next_queue_offset`` of a queue the store knows (stored or dispatched), else
        None: the bound for consumer offsets after recovery or a truncation."""
        return self._queue_offsets.get((topic, queue_id))

    def queue_ends(self) -> dict[tuple[str, int], int]:
        """``queue_end`` of every queue the store knows (a copy)."""
        return dict(self._queue_offsets)
