"""The broker's listening sockets: each bound once, its port read from the bound socket.

Rules:
- A port is bound once and held until the broker stops; port 0 asks the kernel for a free
  one and the port is read from that same socket. Nothing binds a port, closes it and binds
  it again (another process could take it in between).
- The client port is bound before the store opens, because the store stamps the bound
  port into every record (STOREHOST); ``RemotingServer.serve(listeners)`` then serves on them.
  Connections made before it serves wait in the kernel's backlog.
- The HA port (``HAListener``) outlives any one mastership: in controller mode the broker
  advertises it before it is master and keeps it across role changes. Whichever
  ``HAMaster`` is serving takes each connection into its own nursery (so it ends with that
  mastership); while none serves, a connection is closed at once, and the slave retries
  as it would after a refused connect. What a served connection must do to stay (a
  handshake in time, a free slot) is the master's admission rule (``broker/ha/master.py``).
- A failing ``accept`` for lack of descriptors or memory is logged and retried after
  ``ACCEPT_RETRY_S``, as ``trio.serve_listeners`` does; any other error ends serving.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence

import trio

log = logging.getLogger(__name__)

#: ``accept`` errors that mean "out of resources for now" (trio's list).
_CAPACITY_ERRNOS = frozenset(
    code
    for code in (getattr(errno, name, None) for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS"))
    if code is not None
)
ACCEPT_RETRY_S = 0.1

#: Takes an accepted connection: starts its task (and owns the stream from then on).
ConnectionTaker = Callable[[trio.SocketStream], None]


async def bind(host: str, port: int) -> tuple[list[trio.SocketListener], int]:
    """Listen on ``host:port`` (0: a free port); the listeners and the port they hold."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    return listeners, port_of(listeners)


def port_of(listeners: Sequence[trio.SocketListener]) -> int:
    """The port bound listeners hold (all of them: one per address family)."""
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def close_all(listeners: Sequence[trio.SocketListener]) -> None:
    """Close listeners (again, harmlessly, if already closed), even while cancelled."""
    with trio.CancelScope(shield=True):
        for listener in listeners:
            await listener.aclose()


class HAListener:
    """The HA port: bound once (``open``), served by whichever master is attached."""

    def __init__(self, listeners: list[trio.SocketListener], *, node_name: str) -> None:
        assert listeners, "nothing to listen on"
        self._listeners = listeners
        self.node = node_name
        self.port = port_of(listeners)
        self._taker: ConnectionTaker | None = None
        #: Connections closed at once because no master was serving.
        self.turned_away = 0

    @classmethod
    async def open(cls, host: str, port: int, *, node_name: str) -> HAListener:
        listeners, _ = await bind(host, port)
        return cls(listeners, node_name=node_name)

    def attach(self, taker: ConnectionTaker) -> None:
        """A master starts serving: every connection goes to ``taker`` until ``detach``."""
        assert self._taker is None, "one master serves the HA port at a time"
        self._taker = taker

    def detach(self, taker: ConnectionTaker) -> None:
        """The master that attached ``taker`` stopped: turn connections away until the
        next ``attach`` (a no-op when ``taker`` is not the one attached)."""
        if self._taker == taker:
            self._taker = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept on every listener until cancelled, then release the port."""
        try:
            async with trio.open_nursery() as nursery:
                for listener in self._listeners:
                    nursery.start_soon(self._accept_loop, listener)
                task_status.started()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Release the port (for a listener that never served)."""
        await close_all(self._listeners)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                log.error(
                    "%s: HA accept failed (%s); retrying in %s s", self.node, exc, ACCEPT_RETRY_S
                )
                await trio.sleep(ACCEPT_RETRY_S)
                continue
            taker = self._taker
            if taker is None:
                self.turned_away += 1
                await trio.aclose_forcefully(stream)
            else:
                taker(stream)
