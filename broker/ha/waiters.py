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
- At most ``per_step`` callbacks run in one Trio step (``ANSWERS_PER_STEP``), so a mass
  release or expiry (an ack after a stall, a SyncStateSet shrink, a slave gone silent
  under load: up to ``max_waiters`` at once) never holds the loop for seconds: the
  broker's controller heartbeats run between slices, and a live master is not deposed
  for a silence of its own making (docs/CHAOS.md, finding 1). ``release`` calls the
  first slice at once (the ack's step: its answers leave before the confirmed dispatch,
  as before); the timer task calls the rest, a slice per step, lowest first. A waiter
  a release covered stays replicated: if its deadline passes or the mastership ends
  before its slice runs, it still gets OK. Without a running timer (no mastership
  nursery) a release calls everything at once. ``fail_all`` slices too, shielded.
- The callbacks of one slice run in one ``answers_together`` block: the answers they
  give one client leave in one write, after all of them ran.
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
#: Callbacks run in one Trio step at most (module rules). One costs 20-60 µs (a send's
#: answer encoded and queued), so a slice holds the loop 5-15 ms.
ANSWERS_PER_STEP = 256


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

    def __init__(self, max_waiters: int, *, per_step: int = ANSWERS_PER_STEP) -> None:
        assert max_waiters > 0 and per_step > 0
        self.max_waiters = max_waiters
        self.per_step = per_step
        self._by_offset: list[tuple[int, int, Waiter]] = []
        self._by_deadline: list[tuple[float, int, Waiter]] = []
        self._seq = itertools.count()
        self.live = 0
        self._timer: trio.CancelScope | None = None
        #: ``run_timer`` runs: a release leaves what its first slice did not call to it.
        self._timer_runs = False
        #: The highest offset a release covered this mastership: waiters at or below it
        #: are replicated, whether called yet or left to the timer's next slices.
        self._released_to = -1

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
        """Call every waiter ending at or below ``replicated`` with OK, lowest first: a
        slice now, the rest from the timer task (module rules)."""
        self._released_to = max(self._released_to, replicated)
        if self._release_slice(self.per_step if self._timer_runs else math.inf):
            timer = self._timer
            if timer is not None:
                timer.deadline = -math.inf  # the timer task calls the next slice

    def _release_slice(self, limit: float) -> bool:
        """Call up to ``limit`` released waiters; True if released ones are left."""
        heap = self._by_offset
        released_to = self._released_to
        if not heap or heap[0][0] > released_to:
            return False
        count = 0
        with answers_together():  # each client's answers leave in one write
            while heap and heap[0][0] <= released_to:
                if count >= limit:
                    return True
                waiter = heapq.heappop(heap)[2]
                if waiter.then is not None:
                    count += 1
                    self._end(waiter, ReplicaOutcome.OK)
        return False

    def expire(self, now_s: float, *, limit: float = math.inf) -> float:
        """Call up to ``limit`` waiters past their deadline with TIMEOUT (OK for those a
        release covered); the next deadline (inf: none; ``-inf``: past-due ones are left)."""
        heap = self._by_deadline
        count = 0
        with answers_together():
            while heap:
                deadline_s, _, waiter = heap[0]
                if waiter.then is None:
                    heapq.heappop(heap)
                    continue
                if deadline_s > now_s:
                    return deadline_s
                if count >= limit:
                    return -math.inf
                heapq.heappop(heap)
                count += 1
                self._end(waiter, self._outcome_at_end(waiter))
        return math.inf

    async def fail_all(self) -> None:
        """The mastership ended: every waiter left gets TIMEOUT (stored, fate unknown), or
        OK if a release covered it; lowest first, a slice per step (module rules).
        Shielded: the mastership's cancellation is what usually ends it, and every waiter
        is answered before it returns."""
        with trio.CancelScope(shield=True):
            while self._by_offset:  # again for any filed while a slice ran
                waiters = [w for _, _, w in sorted(self._by_offset) if w.then is not None]
                self._by_offset.clear()
                self._by_deadline.clear()
                for start in range(0, len(waiters), self.per_step):
                    if start:
                        await trio.lowlevel.checkpoint()
                    with answers_together():
                        for waiter in waiters[start : start + self.per_step]:
                            self._end(waiter, self._outcome_at_end(waiter))
        self._released_to = -1  # the next mastership's offsets may be cut below it
        assert self.live == 0, self.live

    async def run_timer(self) -> None:
        """Until cancelled (the mastership's nursery): call what releases left, then
        expire waiters at their deadlines, a slice per step."""
        self._timer_runs = True
        try:
            while True:
                if self._release_slice(self.per_step):
                    next_s = -math.inf
                else:
                    next_s = self.expire(trio.current_time(), limit=self.per_step)
                if next_s == -math.inf:
                    await trio.lowlevel.checkpoint()  # more are due: the others run first
                    continue
                with trio.CancelScope(deadline=next_s) as self._timer:
                    await trio.sleep_forever()
                self._timer = None
        finally:
            self._timer = None
            self._timer_runs = False

    def _outcome_at_end(self, waiter: Waiter) -> ReplicaOutcome:
        if waiter.end_offset <= self._released_to:
            return ReplicaOutcome.OK
        return ReplicaOutcome.TIMEOUT

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
