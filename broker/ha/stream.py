"""Small pieces both HA ends share: deadline-bound socket calls and a transfer-rate meter.

Rules:
- Every send and receive has a deadline. Transport failures become ``ConnectionLost``, a
  missed deadline ``RemotingTimeout``; both end the HA connection, nothing retries here.
- ``RateMeter`` is pure: time comes in as ``now_s``; its memory is one bucket per second of
  the window.
"""

from __future__ import annotations

import collections
import errno
import os
import threading

import attrs
import trio

from protocol.errors import ConnectionLost, RemotingTimeout

#: Bytes asked of the socket per receive.
RECEIVE_BYTES = 256 * 1024

_TRANSPORT_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def write_now(stream: trio.abc.Stream, data: bytes | memoryview, *, what: str) -> int:
    """Write what a plain TCP stream's socket takes now, without waiting or yielding to
    the scheduler; return how many bytes that was (0 for a TLS stream or a full buffer).

    ``os.write`` on the non-blocking socket can neither block nor be cut by a deadline. The
    caller must be the stream's only writer and send the rest (``send_all``) before
    anything else. Raises ``ConnectionLost`` as ``send_all`` would.
    """
    if type(stream) is not trio.SocketStream:
        return 0
    try:
        fd = stream.socket.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, "socket already closed")
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise ConnectionLost(f"{what}: send failed: {exc}") from exc


async def send_all(stream: trio.abc.Stream, data: bytes, *, timeout_s: float, what: str) -> None:
    """Send ``data`` within ``timeout_s``; a stream whose send timed out is unusable.

    What the socket takes at once is written without a trip through the scheduler (one
    Trio batch less per send: an ack, a transfer); a caller that loops on sends must
    yield by itself (``trio.lowlevel.checkpoint``)."""
    sent = write_now(stream, data, what=what)
    if sent == len(data):
        return
    with trio.move_on_after(timeout_s) as scope:
        try:
            await stream.send_all(memoryview(data)[sent:] if sent else data)
        except _TRANSPORT_ERRORS as exc:
            raise ConnectionLost(f"{what}: send failed: {exc}") from exc
    if scope.cancelled_caught:
        raise RemotingTimeout(f"{what}: send not done in {timeout_s:.1f} s")


async def receive_until(stream: trio.abc.Stream, deadline: float, *, what: str) -> bytes | None:
    """Bytes from ``stream``, or None at ``deadline`` (nothing is lost: receive_some is
    atomic under cancellation). Raises ``ConnectionLost`` at end of stream."""
    with trio.move_on_at(deadline):
        return await receive_some(stream, what=what)
    return None


async def receive_some(stream: trio.abc.Stream, *, what: str) -> bytes:
    """Bytes from ``stream``, under the caller's deadline (a scope the caller keeps for a
    whole session and moves per read: a new scope per read costs ~7 µs, a move ~2).
    Raises ``ConnectionLost`` at end of stream."""
    try:
        data = await stream.receive_some(RECEIVE_BYTES)
    except _TRANSPORT_ERRORS as exc:
        raise ConnectionLost(f"{what}: receive failed: {exc}") from exc
    if not data:
        raise ConnectionLost(f"{what}: closed by the peer")
    return bytes(data)


class _ReadBuffer(threading.local):
    """Each thread's buffer for ``receive_ready``'s plain-socket reads: ``recv(n)``
    allocates ``n`` bytes (256 KiB) and shrinks them to what came, per read; a read into
    this buffer and a copy of what came is cheaper. Nothing awaits between the two, so one
    buffer serves every stream of the thread."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(RECEIVE_BYTES))


_read_buffer = _ReadBuffer()


async def receive_ready(stream: trio.abc.Stream, *, what: str) -> bytes:
    """``receive_some`` with one system call per read on a plain TCP stream: wait until
    the socket is readable, then read what is there (Trio's ``receive_some`` tries a read
    first, fails when nothing came yet, waits, reads again, and allocates ``RECEIVE_BYTES``
    per read). The wait is the checkpoint, under the caller's deadline. A TLS stream goes
    through its own ``receive_some``. Raises ``ConnectionLost`` at end of stream."""
    if type(stream) is not trio.SocketStream:
        return await receive_some(stream, what=what)
    sock = stream.socket
    view = _read_buffer.view
    while True:
        try:
            await trio.lowlevel.wait_readable(sock)
            count = os.readv(sock.fileno(), (view,))  # readable: does not block
        except BlockingIOError:
            continue  # readable, and yet nothing to read: wait again
        except _TRANSPORT_ERRORS as exc:
            raise ConnectionLost(f"{what}: receive failed: {exc}") from exc
        if not count:
            raise ConnectionLost(f"{what}: closed by the peer")
        return view[:count].tobytes()


async def connect(address: str, *, timeout_s: float) -> trio.SocketStream:
    """Open a TCP stream to ``host:port`` within ``timeout_s``."""
    host, _, port = address.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        raise ConnectionLost(f"bad HA address {address!r}")
    with trio.move_on_after(timeout_s):
        try:
            return await trio.open_tcp_stream(host, int(port))
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {address}: {exc}") from exc
    raise RemotingTimeout(f"connect to {address} not done in {timeout_s:.1f} s")


def peer_name(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"


@attrs.define
class RateMeter:
    """Bytes per second over the last ``window_s`` (whole-second buckets)."""

    window_s: float
    _buckets: collections.deque[list[int]] = attrs.field(factory=collections.deque)
    total_bytes: int = 0

    def record(self, now_s: float, nbytes: int) -> None:
        second = int(now_s)
        self.total_bytes += nbytes
        buckets = self._buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += nbytes  # trimmed for this second already
            return
        buckets.append([second, nbytes])
        self._trim(second)

    def rate(self, now_s: float) -> float:
        self._trim(int(now_s))
        return sum(b for _, b in self._buckets) / self.window_s

    def _trim(self, second: int) -> None:
        oldest = second - int(self.window_s) + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()
