"""The transport's limits at run time: Trio shells over the pure ``protocol/limits.py``.

- ``ByteBudget``: one server's (or client's) ``BufferBudget`` and the parking lot its
  connections' readers wait in until bytes are released (``protocol/connection.py``).
- ``ThrottledLog``: a warning logged at most once per interval on Trio's clock, with
  the count of those left out (``LogThrottle``), so a flood of bad peers costs one line
  per interval. It logs to the transport's logger, ``protocol.rpc``, which operators and
  tests filter on.
"""

from __future__ import annotations

import logging

import trio
import trio.lowlevel

from protocol.limits import BufferBudget, LogThrottle, TransportConfig

log = logging.getLogger("protocol.rpc")


class ByteBudget:
    """The pure ``BufferBudget`` of one server or client, and where its readers wait."""

    def __init__(self, config: TransportConfig) -> None:
        self.ledger = BufferBudget(
            limit_bytes=config.max_buffered_bytes,
            connection_limit_bytes=config.max_connection_buffered_bytes,
        )
        self.lot = trio.lowlevel.ParkingLot()

    def release(self, size_bytes: int) -> None:
        if size_bytes:
            self.ledger.release(size_bytes)
            if self.lot:  # unpark_all costs a microsecond even with nobody parked
                self.lot.unpark_all()


class ThrottledLog:
    """A warning logged at most once per interval, with the count of those left out."""

    def __init__(self, interval_s: float) -> None:
        self._throttle = LogThrottle(interval_s)

    def warning(self, message: str, *args: object) -> None:
        suppressed = self._throttle.admit(trio.current_time())
        if suppressed is None:
            return
        if suppressed:
            message += " (%d more like it not logged)"
            args = (*args, suppressed)
        log.warning(message, *args)
