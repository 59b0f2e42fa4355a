"""Server processes for the benchmarks: ``rmq namesrv`` / ``rmq broker`` for one block.

The process handling is ``launcher/child.py``'s (drained pipes, the ready line of
``launcher/ready.py``, SIGTERM then SIGKILL when the block ends); this module only gives
it the benchmarks' deadlines and a ``Server`` value, and turns a server that never gets
ready into a one-message exit (a benchmark cannot go on without it).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs

from launcher.child import ProcessFailed, managed_process
from launcher.command import rmq_argv
from launcher.ready import BROKER_READY, NAMESRV_READY

__all__ = [
    "BROKER_READY",
    "NAMESRV_READY",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "Server",
    "namesrv_process",
    "rmq_argv",
    "server_process",
]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@attrs.frozen
class Server:
    """A running server process: its name, address and pid."""

    name: str
    addr: str
    pid: int


@asynccontextmanager
async def server_process(
    name: str, argv: list[str], ready: re.Pattern[str]
) -> AsyncIterator[Server]:
    """Start ``argv``, wait for its ``ready`` line, yield it; SIGTERM → bounded wait → kill."""
    async with managed_process(argv, name=name, stop_timeout_s=STOP_TIMEOUT_S) as proc:
        try:
            proc.ready = await proc.wait_for_line(ready, stream="stdout", timeout_s=START_TIMEOUT_S)
        except ProcessFailed as exc:
            raise SystemExit(str(exc)) from None
        yield Server(name=name, addr=proc.address, pid=proc.pid)
    if proc.killed:
        print(f"{name} did not stop in {STOP_TIMEOUT_S:.0f} s; killed it", flush=True)


def namesrv_process() -> AbstractAsyncContextManager[Server]:
    """``rmq namesrv --port 0`` (warnings only in its log)."""
    return server_process(
        "namesrv", rmq_argv("namesrv", "--port", "0", "--log-level", "WARNING"), NAMESRV_READY
    )
