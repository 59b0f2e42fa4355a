"""The master's reads of a slave connection: acks until it fails or stays silent.

Rules:
- One cancel scope per silence period, not a deadline move per read: each move costs a
  Trio deadline heap entry (pruned later) and a context manager, two per sync write with
  two slaves. When the period's scope ends, the time of the last read decides: silent for
  ``timeout_s`` since it, the connection is closed (RemotingTimeout); else a new period
  starts at that read. So a connection is closed after exactly ``timeout_s`` of silence,
  as with a deadline moved per read.
- Reads go through ``receive_ready`` (a plain TCP stream: wait until readable, then one
  read; Trio's ``receive_some`` first tries a read that fails with EAGAIN, per ack).
- ``on_data`` runs without an await, so only the wait for bytes can be cut by the scope:
  no read is ever lost to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import trio

from broker.ha.stream import receive_ready
from protocol.errors import RemotingTimeout


async def read_until_silent(
    stream: trio.abc.Stream, *, timeout_s: float, what: str, on_data: Callable[[bytes], None]
) -> NoReturn:
    """Hand every read of ``stream`` to ``on_data`` until the stream fails (ConnectionLost)
    or stays silent ``timeout_s`` (RemotingTimeout)."""
    clock = trio.current_time
    last_read_s = clock()
    while True:
        with trio.move_on_at(last_read_s + timeout_s):
            while True:
                data = await receive_ready(stream, what=what)
                last_read_s = clock()
                on_data(data)
        if clock() >= last_read_s + timeout_s:
            raise RemotingTimeout(f"{what} silent for {timeout_s:.1f} s")
