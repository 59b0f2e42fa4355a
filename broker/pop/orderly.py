"""Order (FIFO) pops: a queue is held by its group until what it handed out is acked.

Rules (apache/rocketmq ConsumerOrderInfoManager, PopMessageProcessor with ``order=true``):
- An order pop writes no checkpoint and does not move the group's offset. It hands out a
  batch from the committed offset and holds the queue: later pops of the group skip it
  until every message of the batch is acked or the batch's invisible time lapses; then the
  same messages are handed out again, each with its attempt count one higher.
- Acks move the committed offset up to the first unacknowledged message of the batch (the
  end of the batch once all are acked); an ack whose pop time is not the batch's is stale
  (the batch was handed out again since) and changes nothing.
- The table lives in memory: after a restart or failover the batch is handed out again
  from the committed offset (at most a redelivery; attempt counts start over).
- Pure: time comes in as ``now_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

OrderKey = tuple[str, str, int]  # group, stored topic, queue id


@attrs.define
class Batch:
    offsets: tuple[int, ...]
    #: Where the group's offset goes once every message is acked (past filtered ones).
    next_offset: int
    pop_time_ms: int
    invisible_time_ms: int
    acked: set[int] = attrs.field(factory=set)

    @property
    def visible_at_ms(self) -> int:
        return self.pop_time_ms + self.invisible_time_ms

    def unacked(self) -> list[int]:
        return [o for o in self.offsets if o not in self.acked]


@attrs.define
class OrderTable:
    batches: dict[OrderKey, Batch] = attrs.field(factory=dict)
    #: Deliveries so far of each offset still in a batch.
    attempts: dict[OrderKey, dict[int, int]] = attrs.field(factory=dict)

    def held(self, key: OrderKey, now_ms: int) -> bool:
        """Whether the queue is held for the group (a batch out, not all acked, not lapsed)."""
        batch = self.batches.get(key)
        return batch is not None and bool(batch.unacked()) and now_ms < batch.visible_at_ms

    def attempts_of(self, key: OrderKey, offset: int) -> int:
        """Times ``offset`` was handed out before (0 for a first delivery)."""
        return self.attempts.get(key, {}).get(offset, 0)

    def forget(self, key: OrderKey, offset: int) -> None:
        """``offset`` left the queue (dead-lettered): its attempt count goes."""
        counts = self.attempts.get(key)
        if counts is not None:
            counts.pop(offset, None)

    def popped(
        self,
        key: OrderKey,
        offsets: Sequence[int],
        *,
        next_offset: int,
        pop_time_ms: int,
        invisible_time_ms: int,
    ) -> dict[int, int]:
        """A batch handed out; each offset's attempt count (1 for a first delivery)."""
        counts = self.attempts.setdefault(key, {})
        kept = {o: counts.get(o, 0) + 1 for o in offsets}
        self.attempts[key] = kept
        self.batches[key] = Batch(
            offsets=tuple(offsets),
            next_offset=next_offset,
            pop_time_ms=pop_time_ms,
            invisible_time_ms=invisible_time_ms,
        )
        return dict(kept)

    def ack(self, key: OrderKey, offset: int, pop_time_ms: int) -> int | None:
        """The group's new committed offset after this ack; None when it does not move."""
        batch = self.batches.get(key)
        if batch is None or batch.pop_time_ms != pop_time_ms or offset not in batch.offsets:
            return None
        before = batch.unacked()
        batch.acked.add(offset)
        left = batch.unacked()
        if not left:
            del self.batches[key]
            self.attempts.pop(key, None)
            return batch.next_offset
        if left[0] != before[0]:
            return left[0]
        return None

    def change_invisible(
        self, key: OrderKey, offset: int, pop_time_ms: int, *, now_ms: int, invisible_ms: int
    ) -> bool:
        """Move the batch's visibility to ``now_ms + invisible_ms``; False if stale."""
        batch = self.batches.get(key)
        if batch is None or batch.pop_time_ms != pop_time_ms or offset not in batch.offsets:
            return False
        batch.invisible_time_ms = now_ms + invisible_ms - pop_time_ms
        return True
