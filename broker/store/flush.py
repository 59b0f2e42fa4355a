"""Group commit: callers park until the flushed offset passes their record's end.

Rules (DESIGN.md §4, RocketMQ ``GroupCommitService``):
- A waiter is (end offset, event). The flusher fsyncs once for everything written when the
  round starts, then wakes every waiter whose end is covered: one fsync serves all the sends
  that were waiting at that moment, and those that arrive during it are served by the next.
- At most ``max_waiters`` are parked; the store answers the rest False at once (the data stays
  stored; the broker reports FLUSH_DISK_TIMEOUT), so the table is bounded.
- Each waiter carries its deadline; ``expire`` (called by the store's expiry task) fails the
  overdue ones, so a waiting send needs no cancel scope of its own (they cost more than the
  rest of the wait). A waiter whose caller was cancelled marks itself abandoned; the next
  release drops it.
- Truncation below a waiter's end fails it (its record is gone).
- Descriptors for worker-thread fsyncs are duplicated all or nothing (``collect_fds``):
  out of descriptors (EMFILE), none is leaked and no file is dropped from the next round.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import attrs
import trio

from broker.store.metadata import fsync_dir


@attrs.define(eq=False)
class FlushWaiter:
    """One parked ``wait_flushed`` call."""

    end_offset: int
    deadline: float = float("inf")
    event: trio.Event = attrs.field(factory=trio.Event)
    ok: bool = False
    abandoned: bool = False


class GroupCommit:
    """The table of parked waiters and the flusher's wake-up signal."""

    def __init__(self, max_waiters: int) -> None:
        assert max_waiters > 0
        self.max_waiters = max_waiters
        self._waiters: list[FlushWaiter] = []
        self._kick = trio.Event()

    @property
    def pending(self) -> int:
        """Waiters parked (including abandoned ones not yet dropped)."""
        return len(self._waiters)

    def add(self, end_offset: int, deadline: float = float("inf")) -> FlushWaiter | None:
        """Park a waiter and wake the flusher; None when the table is full."""
        if len(self._waiters) >= self.max_waiters:
            self._waiters = [w for w in self._waiters if not w.abandoned]
            if len(self._waiters) >= self.max_waiters:
                return None
        waiter = FlushWaiter(end_offset, deadline)
        self._waiters.append(waiter)
        self._kick.set()
        return waiter

    async def wait_for_work(self) -> None:
        """Return once a waiter is parked (at once if one already is)."""
        while not self._waiters:
            await self._kick.wait()
            self._kick = trio.Event()

    def release(self, flushed_offset: int) -> int:
        """Wake every waiter whose end is covered; return how many were woken."""
        woken = 0
        keep: list[FlushWaiter] = []
        for w in self._waiters:
            if w.abandoned:
                continue
            if w.end_offset <= flushed_offset:
                w.ok = True
                w.event.set()
                woken += 1
            else:
                keep.append(w)
        self._waiters = keep
        return woken

    def expire(self, now: float) -> int:
        """Fail every waiter whose deadline has passed; return how many."""
        expired = 0
        keep: list[FlushWaiter] = []
        for w in self._waiters:
            if w.abandoned:
                continue
            if w.deadline <= now:
                w.ok = False
                w.event.set()
                expired += 1
            else:
                keep.append(w)
        self._waiters = keep
        return expired

    def fail_above(self, offset: int) -> int:
        """Fail every waiter whose record ends past ``offset`` (truncated); return how many."""
        failed = 0
        keep: list[FlushWaiter] = []
        for w in self._waiters:
            if w.end_offset > offset and not w.abandoned:
                w.ok = False
                w.event.set()
                failed += 1
            elif not w.abandoned:
                keep.append(w)
        self._waiters = keep
        return failed

    def fail_all(self) -> None:
        """Fail every parked waiter (the store is closing)."""
        for w in self._waiters:
            w.ok = False
            w.event.set()
        self._waiters = []


def collect_fds(fds: Iterable[int]) -> list[int]:
    """Every descriptor ``fds`` yields (typically ``os.dup`` calls), or none: when one fails
    the ones made are closed and the error is raised."""
    out: list[int] = []
    try:
        for fd in fds:
            out.append(fd)
    except BaseException:
        for fd in out:
            os.close(fd)
        raise
    return out


def fsync_fds(fds: list[int], directory: Path | None = None) -> int:
    """fdatasync and close every fd, then fsync ``directory``; return the syncs done.

    Runs in a worker thread: the fds are duplicates, so the store may close its own
    descriptors (retention, truncation) meanwhile.
    """
    done = 0
    try:
        for fd in fds:
            os.fdatasync(fd)
            done += 1
    finally:
        for fd in fds:
            os.close(fd)
    if directory is not None:
        fsync_dir(directory)
        done += 1
    return done
