"""Long polling: pulls that found nothing wait here until a message arrives for their queue.

Rules (reference/rocketmq-wire.md §2.4, PullRequestHoldService):
- A held pull waits for an arrival on its ``(topic, queue_id)`` or for the periodic
  re-check, whichever comes first, and never past its suspend deadline.
- The store calls ``notify`` synchronously after each ConsumeQueue append; it only sets
  events, so the send path pays O(waiters of that queue).
- A held pull whose client goes away is cancelled with its connection's tasks: nothing
  here outlives the request that waits.
"""

from __future__ import annotations

import trio


class PullHoldService:
    """Wakes held pulls when their queue grows."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int], list[trio.Event]] = {}

    def notify(self, topic: str, queue_id: int, queue_offset_end: int, tags_code: int) -> None:
        """Arrival listener: wake every pull held on this queue."""
        waiters = self._waiters.pop((topic, queue_id), None)
        if waiters:
            for event in waiters:
                event.set()

    async def wait(self, topic: str, queue_id: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an arrival on the queue; True if one came."""
        event = trio.Event()
        key = (topic, queue_id)
        self._waiters.setdefault(key, []).append(event)
        try:
            with trio.move_on_after(max(0.0, timeout_s)):
                await event.wait()
            return event.is_set()
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None and event in waiters:
                waiters.remove(event)
                if not waiters:
                    del self._waiters[key]

    @property
    def held_pulls(self) -> int:
        return sum(len(w) for w in self._waiters.values())
