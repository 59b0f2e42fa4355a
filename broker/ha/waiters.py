"""The master's sync writes waiting for their replication (split out of ``broker/ha/master.py``).

Rules:
- A waiter is a callback, not a task: ``add`` files it under its end offset and its
  deadline. ``release(replicated)`` calls every waiter at or below the replicated offset
  with OK, lowest first; ``expire(now_s)`` calls those past their deadline with TIMEOUT;
  ``fail_all`` calls every one left with TIMEOUT (the mastership ended). Each waiter is
  called at most once, and never once abandoned (the task awaiting it was cancelled).
- Bounded: at most ``max_waiters`` live at once; ``add`` refuses more (the caller answers
  TIMEOUT at once). Entries of waiters already done stay in the other heap until they
  reach its top, or until the dead outnumber the live (then that heap is rebuilt), and
  hold nothing of the request meanwhile (the callback is dropped when the waiter ends).
- One timer for all (``run_timer``): a task sleeping until the earliest deadline, pulled
  in by an ``add`` with an earlier one. No cancel scope and no task per waiter.
- The callbacks of one release, expiry or end run in one ``answers_together`` block:
  the answers they give one client leave in one write, after all of them ran.
- A callback that raises is logged and the others still run: the ack that released them
  must not fail the slave's session.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
from collections.abc import Callable

import trio

from protocol.rpc import answers_together

log = logging.getLogger(__name__)

#: Dead heap entries tolerated before a rebuild (and never more than the live ones).
_COMPACT_AFTER = 1024


class ReplicaOutcome(enum.Enum):
    """How a sync write's replication ended."""

    OK = "OK"
    #: Not replicated in time (ResponseCode FLUSH_SLAVE_TIMEOUT); the data stays stored.
    TIMEOUT = "TIMEOUT"
    #: No slave connected to replicate to (ResponseCode SLAVE_NOT_AVAILABLE).
    NO_SLAVE = "NO_SLAVE"


Then = Callable[[ReplicaOutcome], None]


class Waiter:
    """One sync write's wait; ``abandon`` it when its caller stops waiting."""

    __slots__ = ("deadline_s", "end_offset", "then")

    def __init__(self, end_offset: int, deadline_s: float, then: Then) -> None:
        self.end_offset = end_offset
        self.deadline_s = deadline_s
        #: None once it ended (called, or abandoned).
        self.then: Then | None = then


class ReplicaWaiters:
    """The heaps of waiters by end offset and by deadline, and their timer."""

    def __init__(self, max_waiters: int) -> None:
        assert max_waiters > 0
        self.max_waiters = max_waiters
        self._by_offset: list[tuple[int, int, Waiter]] = []
        self._by_deadline: list[tuple[float, int, Waiter]] = []
        self._seq = itertools.count()
        self.live = 0
        self._timer: trio.CancelScope | None = None

    def __bool__(self) -> bool:
        return self.live > 0

    def add(self, end_offset: int, deadline_s: float, then: Then) -> Waiter | None:
        """File a waiter; None when ``max_waiters`` wait already (refused)."""
        if self.live >= self.max_waiters:
            return None
        waiter = Waiter(end_offset, deadline_s, then)
        seq = next(self._seq)
        heapq.heappush(self._by_offset, (end_offset, seq, waiter))
        heapq.heappush(self._by_deadline, (deadline_s, seq, waiter))
        self.live += 1
        timer = self._timer
        if timer is not None and deadline_s < timer.deadline:
            timer.deadline = deadline_s
        self._compact()
        return waiter

    def abandon(self, waiter: Waiter) -> None:
        """Its caller stopped waiting: never call it."""
        if waiter.then is not None:
            waiter.then = None
            self.live -= 1

    def release(self, replicated: int) -> None:
        """Call every waiter ending at or below ``replicated`` with OK, lowest first."""
        heap = self._by_offset
        if not heap or heap[0][0] > replicated:
            return
        with answers_together():  # each client's answers leave in one write
            while heap and heap[0][0] <= replicated:
                self._end(heapq.heappop(heap)[2], ReplicaOutcome.OK)

    def expire(self, now_s: float) -> float:
        """Call every waiter past its deadline with TIMEOUT; the next deadline (inf: none)."""
        heap = self._by_deadline
        with answers_together():
            while heap:
                deadline_s, _, waiter = heap[0]
                if waiter.then is not None and deadline_s > now_s:
                    return deadline_s
                self._end(heapq.heappop(heap)[2], ReplicaOutcome.TIMEOUT)
        return math.inf

    def fail_all(self) -> None:
        """The mastership ended: every waiter left gets TIMEOUT (stored, fate unknown)."""
        waiters = [w for _, _, w in sorted(self._by_offset)]
        self._by_offset.clear()
        self._by_deadline.clear()
        with answers_together():
            for waiter in waiters:
                self._end(waiter, ReplicaOutcome.TIMEOUT)
        assert self.live == 0, self.live

    async def run_timer(self) -> None:
        """Expire waiters at their deadlines until cancelled (the mastership's nursery)."""
        try:
            while True:
                next_s = self.expire(trio.current_time())
                with trio.CancelScope(deadline=next_s) as self._timer:
                    await trio.sleep_forever()
        finally:
            self._timer = None

    def _end(self, waiter: Waiter, outcome: ReplicaOutcome) -> None:
        then = waiter.then
        if then is None:
            return  # ended already: released, expired or abandoned
        waiter.then = None
        self.live -= 1
        try:
            then(outcome)
        except Exception:
            log.exception("a sync write's %s callback failed", outcome.name)

    def _compact(self) -> None:
        """Rebuild a heap whose dead entries outnumber its live ones (and a floor)."""
        live = self.live
        if len(self._by_deadline) - live > max(_COMPACT_AFTER, live):
            self._by_deadline = [e for e in self._by_deadline if e[2].then is not None]
            heapq.heapify(self._by_deadline)
        if len(self._by_offset) - live > max(_COMPACT_AFTER, live):
            self._by_offset = [e for e in self._by_offset if e[2].then is not None]
            heapq.heapify(self._by_offset)
