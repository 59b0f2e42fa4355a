"""Server processes for the benchmarks: start ``rmq ...``, read its ready line, stop it.

One piece for every script under ``bench/`` that runs its own NameServer or brokers
(the chaos harness's ``LocalCluster`` serves whole clusters). A server is started with
its stdout and stderr drained in the background (the stderr tail is shown when it never
gets ready) and stopped with SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs
import trio

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
NAMESRV_READY = re.compile(rb"The Name Server boot success\. address=([0-9.]+:[0-9]+)")
BROKER_READY = re.compile(rb"The broker\[[^,\]]+, ([0-9.]+:[0-9]+)\] boot success")


@attrs.frozen
class Server:
    """A running server process: its name, address and pid."""

    name: str
    addr: str
    pid: int


def rmq_argv(*args: str) -> list[str]:
    """``rmq ARGS`` with this interpreter's ``rmq`` (or ``python -m`` without a script)."""
    script = Path(sys.executable).with_name("rmq")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "cli.app", *args]


@asynccontextmanager
async def server_process(
    name: str, argv: list[str], ready: re.Pattern[bytes]
) -> AsyncIterator[Server]:
    """Start ``argv``, wait for its ready line, yield it; SIGTERM → bounded wait → kill."""
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stderr_tail: deque[bytes] = deque(maxlen=64)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(_drain, process.stderr, stderr_tail)
            addr = await _ready_address(name, process.stdout, ready, stderr_tail)
            nursery.start_soon(_drain, process.stdout, deque(maxlen=16))
            yield Server(name=name, addr=addr, pid=process.pid)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(STOP_TIMEOUT_S):
                    await process.wait()
            if process.returncode is None:
                print(f"{name} did not stop in {STOP_TIMEOUT_S:.0f} s; killing it", flush=True)
                process.kill()
                await process.wait()


def namesrv_process() -> AbstractAsyncContextManager[Server]:
    """``rmq namesrv --port 0`` (warnings only in its log)."""
    return server_process(
        "namesrv", rmq_argv("namesrv", "--port", "0", "--log-level", "WARNING"), NAMESRV_READY
    )


async def _ready_address(
    name: str, stdout: trio.abc.ReceiveStream, ready: re.Pattern[bytes], tail: deque[bytes]
) -> str:
    seen = b""
    with trio.move_on_after(START_TIMEOUT_S):
        while chunk := await stdout.receive_some(4096):
            seen += chunk
            if match := ready.search(seen):
                return match.group(1).decode()
    raise SystemExit(
        f"{name} did not print its ready line:\n" + b"".join(tail).decode(errors="replace")
    )


async def _drain(stream: trio.abc.ReceiveStream, tail: deque[bytes]) -> None:
    while chunk := await stream.receive_some(65536):
        tail.append(bytes(chunk))
