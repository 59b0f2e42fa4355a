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
"""

from __future__ import annotations

import logging

from broker.offsets import ConsumerOffsetManager
from broker.store.store import MessageStore

log = logging.getLogger(__name__)

#: Lines logged per correction; the rest is counted.
_MAX_LOGGED = 20


def correct_offsets(
    offsets: ConsumerOffsetManager,
    store: MessageStore,
    *,
    max_queue_nums: int,
    node: str,
    why: str,
) -> int:
    """Drop impossible queue ids, clamp offsets to the queue ends; return how many changed."""
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
