"""The master's reads of a slave connection: acks until it fails or stays silent.

Rules:
- One cancel scope per silence period, not a deadline move per read: each move costs a
  Trio deadline heap entry (pruned later) and a context manager, two per sync write with
  two slaves. When the period's scope ends, the time of the last read decides: silent for
  ``timeout_s`` since it, the connection is closed (RemotingTimeout); else a new period
  starts at that read. So a connection is closed after exactly ``timeout_s`` of silence,
  as with a deadline moved per read.
- A plain TCP stream is read by waiting for it to be readable and then ``os.read`` on its
  descriptor (Trio's ``receive_some`` first tries a read that fails with EAGAIN, and
  raises and catches that, per ack); a TLS stream goes through ``receive_some``.
- ``on_data`` runs without an await, so only the wait for bytes can be cut by the scope:
  no read is ever lost to it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import NoReturn

import trio

from broker.ha.stream import RECEIVE_BYTES, receive_some
from protocol.errors import ConnectionLost, RemotingTimeout


async def read_until_silent(
    stream: trio.abc.Stream, *, timeout_s: float, what: str, on_data: Callable[[bytes], None]
) -> NoReturn:
    """Hand every read of ``stream`` to ``on_data`` until the stream fails (ConnectionLost)
    or stays silent ``timeout_s`` (RemotingTimeout)."""
    plain = type(stream) is trio.SocketStream
    clock = trio.current_time
    last_read_s = clock()
    while True:
        with trio.move_on_at(last_read_s + timeout_s):
            while True:
                if plain:
                    data = await _receive_plain(stream, what=what)  # type: ignore[arg-type]
                else:
                    data = await receive_some(stream, what=what)
                last_read_s = clock()
                on_data(data)
        if clock() >= last_read_s + timeout_s:
            raise RemotingTimeout(f"{what} silent for {timeout_s:.1f} s")


async def _receive_plain(stream: trio.SocketStream, *, what: str) -> bytes:
    sock = stream.socket
    while True:
        try:
            await trio.lowlevel.wait_readable(sock)
            fd = sock.fileno()
            if fd < 0:
                raise OSError(errno.EBADF, "socket already closed")
            data = os.read(fd, RECEIVE_BYTES)
        except BlockingIOError:
            continue  # readable, and yet nothing to read: wait again
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLost(f"{what}: receive failed: {exc}") from exc
        if not data:
            raise ConnectionLost(f"{what}: closed by the peer")
        return data
