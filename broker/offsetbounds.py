"""Consumer offsets kept inside what the store holds (issue 19, docs/CHAOS.md "Power loss").

Rules:
- Run at startup (after the store recovered and the offsets loaded), after the CommitLog
  was truncated (a slave cut back to a new master's log) and when the broker becomes
  master: every committed offset, pop revive offsets included (they are offsets of the
  revive group), is lowered to its queue's end when it is past it.
- Offsets of queue ids no topic may have are dropped first (issue 13 row 11).
- Lowering only re-delivers; an offset past the end would skip the next messages stored
  there, acknowledged and never delivered. Each change is logged (one line per queue, at
  most ``_MAX_LOGGED`` lines, then a count).
- A running consumer keeps its next offset in memory: after an abnormal shutdown under
  ASYNC_FLUSH (where consumers read from the page cache, which a power loss takes) a
  master with static roles arms ``StaleOffsetGuard`` with its recovered queue ends: the
  first pull of each (group, topic, queue) past its end is moved back to it
  (PULL_OFFSET_MOVED), so a consumer that read messages a power loss took does not skip
  those stored at their offsets after the restart. Later pulls of that key are not
  checked: by then it read from this broker. A consumer that meanwhile read this
  broker's new messages from a slave is moved back too (a re-delivery). SYNC_FLUSH needs
  no guard (consumers see only fsynced data), nor controller mode (confirmed data only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import attrs

from broker.offsets import ConsumerOffsetManager
from broker.store.config import FlushMode
from broker.store.store import MessageStore

log = logging.getLogger(__name__)

#: Lines logged per correction; the rest is counted.
_MAX_LOGGED = 20
#: (group, topic, queue) keys a StaleOffsetGuard remembers; past it, pulls go unchecked.
MAX_CHECKED_KEYS = 1_000_000


@attrs.define
class StaleOffsetGuard:
    """The queue ends when the broker began serving, and the pulls checked against them."""

    _ends: dict[tuple[str, int], int] = attrs.field(init=False, factory=dict)
    _checked: set[tuple[str, str, int]] = attrs.field(init=False, factory=set)
    moved: int = 0

    def arm(self, ends: Mapping[tuple[str, int], int]) -> None:
        """Serving starts (again) with these queue ends: check every key afresh."""
        self._ends = dict(ends)
        self._checked.clear()

    def check(self, group: str, topic: str, queue_id: int, offset: int) -> int | None:
        """Where this pull must continue instead (the queue's end), or None."""
        end = self._ends.get((topic, queue_id))
        if end is None:  # not armed, or a queue that held nothing then: every pull's case
            return None
        key = (group, topic, queue_id)
        if key in self._checked or len(self._checked) >= MAX_CHECKED_KEYS:
            return None
        self._checked.add(key)
        if offset <= end:
            return None
        self.moved += 1
        return end


def correct_offsets(
    offsets: ConsumerOffsetManager,
    store: MessageStore,
    *,
    max_queue_nums: int,
    node: str,
    why: str,
    guard: StaleOffsetGuard | None = None,
) -> int:
    """Drop impossible queue ids, clamp offsets to the queue ends (and arm ``guard`` with
    them); return how many offsets changed."""
    report = store.recovery_report
    if (
        guard is not None
        and store.config.flush_mode is FlushMode.ASYNC_FLUSH
        and report is not None
        and report.abnormal_shutdown
    ):
        guard.arm(store.queue_ends())
    dropped = offsets.retain_queues_below(max_queue_nums)
    if dropped:
        log.warning(
            "%s: dropped %d consumer offsets of queue ids >= maxTopicQueueNums (%d)",
            node,
            dropped,
            max_queue_nums,
        )
    clamped = offsets.clamp_to_queue_ends(store.queue_end)
    for c in clamped[:_MAX_LOGGED]:
        log.warning(
            "%s: consumer offset of %s on %s/%d lowered from %d to the queue's end %d (%s)",
            node,
            c.group,
            c.topic,
            c.queue_id,
            c.old,
            c.new,
            why,
        )
    if len(clamped) > _MAX_LOGGED:
        log.warning(
            "%s: %d more consumer offsets lowered (%s)", node, len(clamped) - _MAX_LOGGED, why
        )
    return dropped + len(clamped)
