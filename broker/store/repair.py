"""ConsumeQueue checks at open: each queue's newest entries against the CommitLog.

Rules (issue 13 row 8: a truncated or overwritten ConsumeQueue left up to 300 messages
unreachable though still in the CommitLog):
- Per queue, from its own end: the newest ``cq_verify_entries_on_open`` entries must be
  well formed (``consumequeue.first_bad_entry``: sizes, order, nothing past the log's end,
  no zeros inside), and walking back from the last well-formed one, entries are read
  against the CommitLog until one verifies: the record at its offset has its size, topic,
  queue id and queue offset. In the common case that is one read per queue.
- Whatever ``ConsumeQueue.open`` saw (a short file, a gap in the files, entries after the
  end) or this check finds makes the queue damaged: it is cut after its last verified
  entry, rebuilt from the CommitLog from that record's end (this queue's records only,
  up to where the ordinary re-dispatch starts), and logged once.
- Entries below the CommitLog's minimum cannot be checked and are taken as they are.
"""

from __future__ import annotations

import logging

import attrs

from broker.store.consumequeue import BLANK_SIZE, ConsumeQueue, first_bad_entry
from broker.store.dispatch import StoreDispatch
from broker.store.state import NO_DISPATCH
from protocol.errors import MalformedRecord
from protocol.message import SYSFLAG_TRANSACTION_MASK, decode_record

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class QueueDamage:
    """A damaged queue: why, and where its rebuild starts."""

    reason: str
    #: First logical offset rebuilt (entries from here on were dropped).
    from_offset: int
    #: CommitLog offset the rebuild scans from (the last verified record's end).
    from_physical: int


class StoreRepair(StoreDispatch):
    """The store's ConsumeQueue check and rebuild, run once while opening."""

    def _check_consume_queues(self) -> dict[tuple[str, int], QueueDamage]:
        """Check every queue; cut the damaged ones; return where each rebuild starts."""
        damaged: dict[tuple[str, int], QueueDamage] = {}
        for key, cq in self._cqs.items():
            found = self._check_queue(cq)
            if found is not None:
                cq.truncate_to_offset(found.from_offset)
                cq.clear_after_end()
                damaged[key] = found
        return damaged

    def _check_queue(self, cq: ConsumeQueue) -> QueueDamage | None:
        reason = cq.damage
        window_start = max(cq.min_offset, cq.max_offset - self.config.cq_verify_entries_on_open)
        entries = cq.raw_entries(window_start, cq.max_offset)
        bad = first_bad_entry(
            entries,
            first_real=window_start > cq.min_offset,
            end_physical=self._clog.write_offset,
            max_size=self.config.segment_bytes,
        )
        good_end = cq.max_offset if bad is None else window_start + bad
        if bad is not None:
            reason = reason or f"entry {good_end} is not a valid entry"
        q = good_end - 1
        while q >= window_start:  # from the end back until an entry verifies
            phys, size, _tags = entries[q - window_start]
            if size == BLANK_SIZE or self._entry_verifies(cq, q, phys, size):
                break
            reason = reason or f"entry {q} does not point at its record"
            q -= 1
        if reason is None:
            return None
        if q < window_start:  # nothing in the window verifies: rebuild all of it
            start = window_start if window_start > cq.min_offset else cq.min_offset
            return QueueDamage(
                reason=reason, from_offset=start, from_physical=self._clog.min_offset
            )
        phys, size, _tags = entries[q - window_start]
        resume = phys + size if size != BLANK_SIZE else self._clog.min_offset
        return QueueDamage(reason=reason, from_offset=q + 1, from_physical=resume)

    def _entry_verifies(self, cq: ConsumeQueue, queue_offset: int, phys: int, size: int) -> bool:
        """Whether the record at ``phys`` is entry ``queue_offset`` of ``cq``."""
        if phys < self._clog.min_offset:
            return True  # deleted by retention: nothing to check it against
        if self._damage and self._damage.overlapping(phys, size):
            return False
        data = self._clog.read(phys, size)
        if data is None or len(data) != size:
            return False
        try:
            rec, used = decode_record(data, check_crc=False)
        except MalformedRecord:
            return False
        return (
            used == size
            and rec.physical_offset == phys
            and (rec.topic, rec.queue_id, rec.queue_offset) == (cq.topic, cq.queue_id, queue_offset)
        )

    def _rebuild_queues(self, damaged: dict[tuple[str, int], QueueDamage], limit: int) -> int:
        """Re-dispatch the damaged queues' records from their resume points up to ``limit``
        (ConsumeQueue entries only; the index is not touched). Returns entries written."""
        if not damaged:
            return 0
        begin = min(d.from_physical for d in damaged.values())
        written = 0
        for rec, size, at in self._iter_log(begin, limit):
            if rec is None or rec.sys_flag & SYSFLAG_TRANSACTION_MASK in NO_DISPATCH:
                continue
            found = damaged.get((rec.topic, rec.queue_id))
            if found is None or at < found.from_physical:
                continue
            cq = self._cqs[(rec.topic, rec.queue_id)]
            if rec.queue_offset < cq.max_offset:
                continue  # already there (a record above the resume point kept its entry)
            if cq.min_offset < cq.max_offset < rec.queue_offset:
                self._fill_lost(cq, rec.queue_offset, at)
            code = self._tags_code(rec.topic, rec.properties, rec.store_timestamp_ms)
            cq.append(rec.queue_offset, at, size, code)
            written += 1
        for (topic, queue_id), found in sorted(damaged.items()):
            cq = self._cqs[(topic, queue_id)]
            log.warning(
                "%s: consume queue %s/%d damaged (%s): offsets from %d rebuilt from the "
                "CommitLog (it now ends at %d)",
                self.node,
                topic,
                queue_id,
                found.reason,
                found.from_offset,
                cq.max_offset,
            )
        return written
