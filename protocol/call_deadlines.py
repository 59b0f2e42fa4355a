"""The deadlines of one connection's calls, for one timer instead of a cancel scope each.

A Trio cancel scope costs ~5-7 µs to enter and leave, a large share of what a client
spends on a call (issue 14, fourth pass). A connection keeps its calls' deadlines here
instead, and one task per connection sleeps until the earliest and ends the calls it
finds expired (protocol/connection.py). Pure: no clock, no Trio.

Entries are ``(deadline_s, opaque)``; a call that ends is not removed (that would be a
search) but goes stale: the caller says which opaques are still waiting and with which
deadline (``live``). Stale entries are dropped when they reach the top, and the heap is
rebuilt from the live ones once it holds more than ``4 × live + 64`` entries, so it stays
bounded by the calls in flight, not by the call rate times the timeout.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

#: Whether the call with this opaque still waits with this deadline.
Live = Callable[[int, float], bool]

_SLACK_ENTRIES = 64


class CallDeadlines:
    """A heap of call deadlines with lazy deletion (see the module's docstring)."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, opaque: int, deadline_s: float, live_count: int, live: Live) -> None:
        """Record a call's deadline (``live_count``: the calls waiting, this one too)."""
        heap = self._heap
        if len(heap) > 4 * live_count + _SLACK_ENTRIES:
            heap[:] = [entry for entry in heap if live(entry[1], entry[0])]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline_s, opaque))

    def expire(self, now_s: float, live: Live) -> tuple[list[int], float]:
        """Pop the live calls whose deadline is at or before ``now_s`` and every stale
        entry before the first live one still to come; return their opaques and the
        earliest deadline left (``inf`` when none)."""
        heap = self._heap
        expired: list[int] = []
        while heap:
            deadline_s, opaque = heap[0]
            if not live(opaque, deadline_s):
                heapq.heappop(heap)
            elif deadline_s <= now_s:
                heapq.heappop(heap)
                expired.append(opaque)
            else:
                return expired, deadline_s
        return expired, math.inf
