"""Transport limits: every cap of the remoting layer in one frozen config, with defaults.

Rules:
- ``TransportConfig`` holds every limit a connection or server enforces; servers (broker,
  NameServer, controller) take one from their own config, clients from theirs. Defaults
  suit real use; a test or an operator lowers or raises them.
- The connection cap is set below the process's file-descriptor limit (RLIMIT_NOFILE):
  by default at most half of it, so a broker's store files (CommitLog segments, one
  ConsumeQueue file per queue, index files, logs) always find descriptors left. A process
  that runs out anyway must never die of it: the accept loop backs off, and every other
  descriptor user handles EMFILE itself.
- Memory held for peers is bounded twice: per connection (its partial frame plus the
  frames of its requests still being handled, long polls included) and per server (the
  sum over its connections). A connection over either budget is not read until its or
  others' handlers finish: back-pressure through TCP, never unbounded buffering. A
  connection holding nothing may still read ``SMALL_READ_BYTES`` past the server budget, so
  small requests keep flowing while big frames wait; the worst case held is
  ``max_buffered_bytes + SMALL_READ_BYTES * connections``.
- Pure: no trio, sockets or clocks; times arrive as arguments. ``BufferBudget`` and
  ``LogThrottle`` are the bookkeeping; protocol/rpc.py waits and logs around them.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from protocol.frame import DEFAULT_MAX_FRAME_BYTES

#: Connections a server takes at most when its config does not say (and the fd limit
#: allows): enough for any real fleet of clients, far below a 64 Ki descriptor limit.
DEFAULT_MAX_CONNECTIONS = 10_000
#: Share of the descriptor limit the default connection cap may take; the rest is left to
#: store files, logs and outgoing connections.
CONNECTION_SHARE_OF_FD_LIMIT = 0.5
#: What a connection holding nothing may read past the server budget (see the rules).
SMALL_READ_BYTES = 16 * 1024


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class TransportConfig:
    """Knobs shared by servers and clients; every limit of the remoting layer."""

    #: Largest frame accepted (RocketMQ's ``frameMaxLength``); checked before allocation.
    max_frame_bytes: int = attrs.field(default=DEFAULT_MAX_FRAME_BYTES, validator=_positive)
    #: Requests of one connection handled at once; at the cap the reader pauses.
    max_requests_in_flight: int = attrs.field(default=4096, validator=_positive)
    write_timeout_s: float = attrs.field(default=30.0, validator=_positive)
    connect_timeout_s: float = attrs.field(default=3.0, validator=_positive)
    #: A frame whose first byte arrived must be complete this long after, or the
    #: connection is closed (a peer announcing 16 MiB and sending half holds nothing long).
    frame_timeout_s: float = attrs.field(default=30.0, validator=_positive)
    #: Connections a server keeps at once; None: ``default_max_connections(fd limit)``.
    max_connections: int | None = attrs.field(default=None, validator=_positive)
    #: Connections one remote IP may keep at once.
    max_connections_per_peer: int = attrs.field(default=1_000, validator=_positive)
    #: Bytes one connection may hold: its partial frame plus its requests being handled.
    max_connection_buffered_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    #: Bytes all connections of one server (or one client) may hold together.
    max_buffered_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=_positive)
    #: Refused connections and closed peers are logged at most once per this interval,
    #: with the count of the ones left out.
    log_interval_s: float = attrs.field(default=10.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        # A budget below one frame could never let a largest frame complete.
        if self.max_connection_buffered_bytes < self.max_frame_bytes:
            raise ValueError(
                f"max_connection_buffered_bytes ({self.max_connection_buffered_bytes}) must "
                f"be >= max_frame_bytes ({self.max_frame_bytes})"
            )
        if self.max_buffered_bytes < self.max_connection_buffered_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be >= "
                f"max_connection_buffered_bytes ({self.max_connection_buffered_bytes})"
            )

    def connection_cap(self, fd_soft_limit: int) -> int:
        """The server's connection cap, given the process's soft RLIMIT_NOFILE."""
        if self.max_connections is not None:
            return self.max_connections
        return default_max_connections(fd_soft_limit)


def default_max_connections(fd_soft_limit: int) -> int:
    """At most ``DEFAULT_MAX_CONNECTIONS`` and half the descriptor limit, at least 1."""
    if fd_soft_limit <= 0 or fd_soft_limit == math.inf:  # RLIM_INFINITY is -1 on Linux
        return DEFAULT_MAX_CONNECTIONS
    share = int(fd_soft_limit * CONNECTION_SHARE_OF_FD_LIMIT)
    return max(1, min(DEFAULT_MAX_CONNECTIONS, share))


@attrs.define
class BufferBudget:
    """Bytes held for the peers of one server (or client), and the grants to read more.

    A connection asks ``grant`` before each read with what it holds itself; the answer is
    how many bytes it may read now (0: wait for a ``release``). Granted bytes count as
    held until the read's outcome is known (``settle``), so readers that run one after
    another never overshoot together.
    """

    limit_bytes: int
    connection_limit_bytes: int
    held_bytes: int = 0

    def grant(self, connection_held_bytes: int, want_bytes: int) -> int:
        """Reserve up to ``want_bytes`` for a connection holding ``connection_held_bytes``."""
        room = min(
            want_bytes,
            self.connection_limit_bytes - connection_held_bytes,
            self.limit_bytes - self.held_bytes,
        )
        if room <= 0 and connection_held_bytes == 0:
            room = min(want_bytes, SMALL_READ_BYTES)
        room = max(0, room)
        self.held_bytes += room
        return room

    def settle(self, granted_bytes: int, kept_bytes: int) -> None:
        """A read granted ``granted_bytes`` changed what its connection holds by
        ``kept_bytes`` (negative when it completed more frames than it read)."""
        assert kept_bytes <= granted_bytes, (kept_bytes, granted_bytes)
        self.held_bytes -= granted_bytes - kept_bytes
        assert self.held_bytes >= 0, self.held_bytes

    def release(self, size_bytes: int) -> None:
        """Bytes no longer held (a request handled, a partial frame dropped)."""
        self.held_bytes -= size_bytes
        assert self.held_bytes >= 0, self.held_bytes


@attrs.define
class LogThrottle:
    """At most one log line per ``interval_s``; the lines left out are counted.

    ``admit(now_s)`` answers None to stay quiet, or the number of events suppressed since
    the last line, to be mentioned in this one.
    """

    interval_s: float
    _next_s: float = attrs.field(default=-math.inf, init=False)
    _suppressed: int = attrs.field(default=0, init=False)

    def admit(self, now_s: float) -> int | None:
        if now_s < self._next_s:
            self._suppressed += 1
            return None
        suppressed, self._suppressed = self._suppressed, 0
        self._next_s = now_s + self.interval_s
        return suppressed
