"""Long polling: pulls that found nothing wait here until a message arrives for their queue.

Rules (reference/rocketmq-wire.md §2.4, PullRequestHoldService):
- A held pull waits for an arrival on its ``(topic, queue_id)`` or for the periodic
  re-check, whichever comes first, and never past its suspend deadline.
- An arrival wakes only the pulls whose tag filter accepts its tag code (Java's
  ``isMatchedByConsumeQueue`` pre-match); the others keep waiting, and the periodic re-check
  answers them with PULL_RETRY_IMMEDIATELY past the entries they do not want.
- The store calls ``notify`` synchronously after each ConsumeQueue append of a topic in
  ``waiting_topics`` (the topics with a held pull); it only sets events, so the send path
  pays O(waiters of that queue), and nothing for a topic no pull waits on.
- A held pull whose client goes away is cancelled with its connection's tasks: nothing
  here outlives the request that waits.
- Holding is budgeted (issue 13 row 9: 150 held pulls of 1 MiB held 153 MB): a pull is
  held only after ``reserve`` admitted it, counted and charged its request's bytes, until
  ``release``; past ``max_held`` pulls or ``max_held_bytes`` bytes, ``reserve`` says no and
  the caller answers at once.
"""

from __future__ import annotations

import trio

_Waiter = tuple[trio.Event, frozenset[int] | None]


class PullHoldService:
    """Wakes held pulls when their queue grows."""

    def __init__(self, *, max_held: int = 1 << 62, max_held_bytes: int = 1 << 62) -> None:
        self._waiters: dict[tuple[str, int], list[_Waiter]] = {}
        #: topic → pulls held on its queues (a topic leaves at 0): the store's
        #: ``add_arrival_listener(notify, waiting_on=waiting_topics)``. Never rebound.
        self.waiting_topics: dict[str, int] = {}
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        #: Pulls admitted by ``reserve`` and not released, and the bytes charged to them.
        self.reserved = 0
        self.reserved_bytes = 0
        #: Pulls ``reserve`` turned away.
        self.refused = 0

    def reserve(self, size_bytes: int) -> bool:
        """Admit one more held pull charged ``size_bytes``; False when over the budget."""
        if self.reserved >= self.max_held or self.reserved_bytes + size_bytes > self.max_held_bytes:
            self.refused += 1
            return False
        self.reserved += 1
        self.reserved_bytes += size_bytes
        return True

    def release(self, size_bytes: int) -> None:
        """A pull admitted by ``reserve`` with ``size_bytes`` is no longer held."""
        self.reserved -= 1
        self.reserved_bytes -= size_bytes
        assert self.reserved >= 0 and self.reserved_bytes >= 0

    def notify(self, topic: str, queue_id: int, queue_offset_end: int, tags_code: int) -> None:
        """Arrival listener: wake every pull held on this queue that wants this tag."""
        waiters = self._waiters.get((topic, queue_id))
        if not waiters:
            return
        for event, tag_codes in waiters:
            if tag_codes is None or tags_code in tag_codes:
                event.set()

    async def wait(
        self,
        topic: str,
        queue_id: int,
        timeout_s: float,
        tag_codes: frozenset[int] | None = None,
    ) -> bool:
        """Wait up to ``timeout_s`` for a wanted arrival on the queue; True if one came.

        ``tag_codes`` None wants every message.
        """
        waiter: _Waiter = (trio.Event(), tag_codes)
        key = (topic, queue_id)
        self._waiters.setdefault(key, []).append(waiter)
        topics = self.waiting_topics
        topics[topic] = topics.get(topic, 0) + 1
        try:
            with trio.move_on_after(max(0.0, timeout_s)):
                await waiter[0].wait()
            return waiter[0].is_set()
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]
            if topics[topic] == 1:
                del topics[topic]
            else:
                topics[topic] -= 1

    @property
    def held_pulls(self) -> int:
        return sum(len(w) for w in self._waiters.values())
