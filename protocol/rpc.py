"""Remoting transport on Trio: a server, a client, and the connection both are made of
(``Connection``: protocol/connection.py).

Rules (the connection's own, reading, writing and matching answers: protocol/connection.py):
- Hostile peers (limits in protocol/limits.py): a server refuses connections past its
  global and per-peer caps right after accept, logged at most once per interval with a
  count; EMFILE at accept backs off and retries, it never ends the server. A frame must be
  complete ``frame_timeout_s`` after its first byte (our own back-pressure pauses that
  clock, a full server budget does not). Bytes held for a connection (partial frame plus
  requests being handled) are budgeted per connection and per server: a connection over
  budget is not read until handlers finish. A read is granted its bytes only once the
  socket is readable, so idle connections reserve nothing.
- TLS (protocol/tls.py) is a server's or client's option: the handshake runs on an
  admitted connection (it counts against the caps) under its own deadline; a failed one
  is logged like a refusal. Plain connections take exactly the path they took before.
- Connections are symmetric: a server can send requests to a client (e.g.
  NOTIFY_CONSUMER_IDS_CHANGED) and a client serves them with its own handler table.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import resource
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Literal

import trio

from protocol.codes import ResponseCode
from protocol.command import RemotingCommand
from protocol.connection import Connection, Handler, request_name
from protocol.errors import NetworkError, RemotingTimeout, error_for_response
from protocol.later_answer import LaterAnswer, answers_together
from protocol.limits import TransportConfig
from protocol.tasks import background_nursery, run_steps
from protocol.tls import TlsRefused, TlsStream, client_context_from_env, tls_accept, tls_connect
from protocol.transport_limits import ByteBudget, ThrottledLog

log = logging.getLogger(__name__)


# accept(2) errors that mean "out of descriptors or memory": back off, never give up.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_BACKOFF_S = 0.1


def fd_soft_limit() -> int:
    """The process's soft RLIMIT_NOFILE (-1 when unlimited)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- server ------------------------------------------------------------------------------


class RemotingServer:
    """Serves a handler table on one TCP port."""

    def __init__(
        self,
        handlers: Mapping[int, Handler],
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        config: TransportConfig | None = None,
        on_connect: Callable[[Connection], None] | None = None,
        on_disconnect: Callable[[Connection], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.tls = tls  # every connection handshakes TLS first (under a deadline)
        self.host = host
        self.port = port
        self.handlers = handlers
        self.config = config or TransportConfig()
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        #: Run by each connection right before frames go to its socket (a raise drops that
        #: connection unwritten): the broker's CommitLog commit of held appends, so one
        #: write per read of sends covers them, and no answer leaves before its record.
        self.before_write: Callable[[], None] | None = None
        #: Told of each answer to a request with a handler: (request code, response code,
        #: seconds from the request's start to its answer; a later answer when given).
        #: The broker's ``rocketmq_rpc_latency`` (``broker/stats.py`` ``RpcLatency``).
        self.on_answered: Callable[[int, int, float], None] | None = None
        self.connections: dict[int, Connection] = {}
        #: The connection cap in force (fixed when ``serve`` starts, from the fd limit).
        self.max_connections = self.config.connection_cap(fd_soft_limit())
        #: Connections refused at accept since start (caps reached).
        self.refused_connections = 0
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._admitted = 0  # connections accepted and not yet ended
        self._budget = ByteBudget(self.config)
        self._refusal_log = ThrottledLog(self.config.log_interval_s)
        self._accept_log = ThrottledLog(self.config.log_interval_s)
        self._connection_log = ThrottledLog(self.config.log_interval_s)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for all peers: partial frames and requests being handled."""
        return self._budget.ledger.held_bytes

    def drop_unwritten(self, reason: str) -> int:
        """Drop (``Connection.drop``) every connection with frames not yet written: their
        answers must not leave (a failed CommitLog write lost what they promise). Returns
        how many."""
        dropped = [c for c in self.connections.values() if c.has_unwritten]
        for conn in dropped:
            conn.drop(reason)
        return len(dropped)

    async def serve(
        self,
        listeners: list[trio.SocketListener] | None = None,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind (or take ``listeners`` bound beforehand, closed when this stops), report
        the bound port through ``task_status``, serve until cancelled."""
        if listeners is None:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        self.max_connections = self.config.connection_cap(fd_soft_limit())
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started(self.port)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """Accept forever: refuse past the caps, back off when out of descriptors."""
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    # Out of descriptors or memory: the pending connection waits in the
                    # backlog until some close. Never fatal (issue 13 row 3).
                    self._accept_log.warning(
                        "%s: accept failed: %s (%s); retrying every %s s",
                        self.name,
                        errno.errorcode.get(exc.errno or 0, "?"),
                        os.strerror(exc.errno or 0),
                        _ACCEPT_BACKOFF_S,
                    )
                    await trio.sleep(_ACCEPT_BACKOFF_S)
                    continue
                peer_ip = _peer_ip(stream)
                refusal = self._refusal(peer_ip)
                if refusal is not None:
                    self.refused_connections += 1
                    self._refusal_log.warning(
                        "%s: refused a connection from %s: %s", self.name, peer_ip, refusal
                    )
                    await trio.aclose_forcefully(stream)
                    continue
                self._admitted += 1
                self._per_peer[peer_ip] += 1
                nursery.start_soon(self._serve_connection, stream, peer_ip)

    def _refusal(self, peer_ip: str) -> str | None:
        if self._admitted >= self.max_connections:
            return (
                f"{self._admitted} connections open, the cap "
                f"(max_connections={self.max_connections})"
            )
        if self._per_peer[peer_ip] >= self.config.max_connections_per_peer:
            return (
                f"{self._per_peer[peer_ip]} connections open from that address, the cap "
                f"(max_connections_per_peer={self.config.max_connections_per_peer})"
            )
        return None

    async def _serve_connection(self, stream: trio.SocketStream, peer_ip: str) -> None:
        try:
            secured: trio.SocketStream | TlsStream = stream
            if self.tls is not None:
                try:
                    secured = await tls_accept(stream, self.tls)
                except TlsRefused as exc:  # e.g. plain TCP to a TLS port
                    self.refused_connections += 1
                    self._refusal_log.warning("%s: refused a connection: %s", self.name, exc)
                    return
            conn = Connection(
                secured,
                name=self.name,
                handlers=self.handlers,
                config=self.config,
                budget=self._budget,
                warnings=self._connection_log,
                before_write=self.before_write,
                on_answered=self.on_answered,
            )
            self.connections[conn.id] = conn
            log.debug("%s: connection from %s", self.name, conn.peer)
            try:
                if self._on_connect is not None:
                    self._on_connect(conn)
                await conn.run()
            finally:
                del self.connections[conn.id]
                if self._on_disconnect is not None:
                    self._on_disconnect(conn)
        finally:
            self._admitted -= 1
            self._per_peer[peer_ip] -= 1
            if not self._per_peer[peer_ip]:
                del self._per_peer[peer_ip]
            await trio.aclose_forcefully(stream)


def _peer_ip(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "?"  # already reset by the peer; it is closed right after


# --- client ------------------------------------------------------------------------------


def split_address(addr: str) -> tuple[str, int]:
    """``"host:port"`` → (host, port); raises ``ValueError`` with the bad text."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        raise ValueError(f"address {addr!r} is not host:port")
    return host.strip("[]"), int(port)


class RemotingClient:
    """One connection per address, created on demand and re-created after loss."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        name: str = "client",
        handlers: Mapping[int, Handler] | None = None,
        config: TransportConfig | None = None,
        default_timeout_s: float = 3.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.tls = tls  # connect with TLS (verifying the server against this context)
        self._nursery = nursery
        self._handlers = handlers or {}
        self._config = config or TransportConfig()
        self.default_timeout_s = default_timeout_s
        self._connections: dict[str, Connection] = {}
        self._connect_locks: dict[str, trio.Lock] = {}
        self._closed = False
        self._budget = ByteBudget(self._config)
        self._warnings = ThrottledLog(self._config.log_interval_s)

    async def connection(self, addr: str) -> Connection:
        """The live connection to ``addr``, connecting if needed (under the connect timeout)."""
        if self._closed:
            raise NetworkError("client is closed")
        conn = self._connections.get(addr)
        if conn is not None and not conn.closed.is_set():
            return conn
        lock = self._connect_locks.setdefault(addr, trio.Lock())
        async with lock:
            conn = self._connections.get(addr)
            if conn is not None and not conn.closed.is_set():
                return conn
            host, port = split_address(addr)
            stream: trio.SocketStream | TlsStream | None = None
            with trio.move_on_after(self._config.connect_timeout_s):
                try:
                    stream = await trio.open_tcp_stream(host, port)
                    if self.tls is not None:
                        stream = await tls_connect(stream, self.tls, host=host)
                except (OSError, TlsRefused) as exc:
                    raise NetworkError(f"cannot connect to {addr}: {exc}") from None
            if stream is None:
                raise NetworkError(
                    f"cannot connect to {addr}: no answer in {self._config.connect_timeout_s} s"
                )
            conn = Connection(
                stream,
                name=self.name,
                handlers=self._handlers,
                config=self._config,
                budget=self._budget,
                warnings=self._warnings,
            )
            self._connections[addr] = conn
            self._nursery.start_soon(self._run_connection, addr, conn)
            return conn

    async def _run_connection(self, addr: str, conn: Connection) -> None:
        try:
            await conn.run()
        finally:
            if self._connections.get(addr) is conn:
                del self._connections[addr]

    async def call(
        self, addr: str, request: RemotingCommand, *, timeout_s: float | None = None
    ) -> RemotingCommand:
        """Send ``request`` to ``addr`` and return the response (any response code)."""
        timeout = left_s = self.default_timeout_s if timeout_s is None else timeout_s
        conn = self._connections.get(addr)
        if conn is None or conn.closed.is_set() or self._closed:
            deadline = trio.current_time() + timeout
            with trio.move_on_at(deadline):  # a cancel scope costs µs: only to connect
                conn = await self.connection(addr)
            left_s = deadline - trio.current_time()
        if left_s <= 0:
            raise RemotingTimeout(f"connecting to {addr} took longer than {timeout} s")
        assert conn is not None  # else the connect scope ran out: the deadline passed
        try:
            return await conn.call(request, left_s)
        except RemotingTimeout:
            # Name the caller's deadline, not the float left of it after connecting.
            raise RemotingTimeout(
                f"{request_name(request.code)} to {addr} got no answer in {timeout} s"
            ) from None

    async def oneway(self, addr: str, request: RemotingCommand) -> None:
        conn = await self.connection(addr)
        await conn.oneway(request)

    def close_connection(self, addr: str) -> None:
        conn = self._connections.pop(addr, None)
        if conn is not None:
            self._nursery.start_soon(conn.aclose)

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._connections.values()):
            await conn.aclose()
        self._connections.clear()


@asynccontextmanager
async def open_client(
    *,
    name: str = "client",
    handlers: Mapping[int, Handler] | None = None,
    config: TransportConfig | None = None,
    default_timeout_s: float = 3.0,
    tls: ssl.SSLContext | Literal[False] | None = None,
) -> AsyncIterator[RemotingClient]:
    """A ``RemotingClient`` whose connections live exactly as long as this block.

    ``tls``: connect with this context; False: plain TCP; None: as ``$RMQ_TLS`` and
    ``$RMQ_TLS_CA_FILE`` say (plain when unset; protocol/tls.py)."""
    async with background_nursery() as nursery:
        client = RemotingClient(
            nursery,
            name=name,
            handlers=handlers,
            config=config,
            default_timeout_s=default_timeout_s,
            tls=client_context_from_env() if tls is None else tls or None,
        )
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()


def check_success(response: RemotingCommand) -> RemotingCommand:
    """Return ``response`` if it is SUCCESS, else raise the mapped ``ServerError``."""
    if response.code != ResponseCode.SUCCESS:
        raise error_for_response(response.code, response.remark)
    return response


__all__ = [
    "ByteBudget",
    "Connection",
    "Handler",
    "LaterAnswer",
    "RemotingClient",
    "RemotingServer",
    "ThrottledLog",
    "TransportConfig",
    "answers_together",
    "background_nursery",
    "check_success",
    "open_client",
    "request_name",
    "run_steps",
    "split_address",
]
