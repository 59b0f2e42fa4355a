"""The broker's one clock: wall time for what RocketMQ stores, Trio's clock for timers.

Rules:
- Every part of the broker takes its clock at construction (``Broker(config, clock=...)``
  hands its own to the store, the processors and the services); nothing in broker/ reads
  ``time.time()`` itself.
- ``wall_ms`` is epoch milliseconds: store timestamps, metadata data versions, lock and
  client expiry, delayed-message due times, check codes. ``now_s`` is Trio's clock
  (``trio.current_time()``): deadlines, intervals and leases, never stored.
- Production uses ``SystemClock``. Tests use ``TrioWallClock``, whose wall time moves with
  Trio's clock, so under ``autojump_clock`` hours of broker timers (delay levels, expiry
  scans) run in milliseconds and stored timestamps agree with them; or ``ManualClock``,
  a wall clock moved by hand.
"""

from __future__ import annotations

import time
from typing import Protocol

import attrs
import trio


class Clock(Protocol):
    """What the broker asks of a clock."""

    def wall_ms(self) -> int:
        """Epoch milliseconds, for timestamps the broker stores or sends."""
        ...

    def now_s(self) -> float:
        """Trio's clock in seconds, for deadlines and intervals (only inside ``trio.run``)."""
        ...


class SystemClock:
    """The real clock: the system's wall time and Trio's clock."""

    def wall_ms(self) -> int:
        return int(time.time() * 1000)

    def now_s(self) -> float:
        return trio.current_time()


@attrs.define
class TrioWallClock:
    """A fake wall clock that follows Trio's clock: ``start_ms`` when first read, then
    Trio's elapsed time since (tests; under ``autojump_clock`` it jumps with the timers)."""

    start_ms: int = 1_700_000_000_000
    _origin_s: float | None = None

    def wall_ms(self) -> int:
        now = trio.current_time()
        if self._origin_s is None:
            self._origin_s = now
        return self.start_ms + round((now - self._origin_s) * 1000)

    def now_s(self) -> float:
        return trio.current_time()


@attrs.define
class ManualClock:
    """A fake wall clock that moves only when told: ``now_ms``, plus ``step_ms`` after each
    read (tests that want distinct timestamps); Trio's clock for ``now_s``."""

    now_ms: int = 1_700_000_000_000
    step_ms: int = 0

    def wall_ms(self) -> int:
        value = self.now_ms
        self.now_ms += self.step_ms
        return value

    def now_s(self) -> float:
        return trio.current_time()
