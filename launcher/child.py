"""A child process under a Trio caller's control: drained pipes, a ready line, a sure stop.

For tests, benchmarks and anything else that runs a server for the length of one block
(a cluster that must outlive its command is ``launcher/detached.py``'s).

Rules:
- Every process lives inside ``managed_process`` (an async context manager): when the
  block ends, normally or by an exception or cancellation, the process gets SIGTERM, a
  bounded wait, then SIGKILL. Nothing started here outlives its block.
- stdout and stderr are drained by background tasks for the whole life of the process
  (a child blocked on a full pipe would look like a hang) and kept, bounded, for
  assertions and failure messages.
- Every wait has a deadline. A failure (no ready line in time, early exit, timeout) is a
  ``ProcessFailed`` whose message carries the command, exit status and the output tails,
  so whoever reads it learns why without re-running anything.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from launcher.command import child_env

#: Default deadlines, generous for a slow and busy 2-core machine.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 60.0
_KILL_WAIT_S = 5.0
_DRAIN_WAIT_S = 5.0

#: Bytes of output kept per stream; older lines are dropped first.
_MAX_KEPT_BYTES = 4 * 1024 * 1024
#: A "line" longer than this is cut, so one runaway line cannot grow without bound.
_MAX_LINE_BYTES = 64 * 1024
_TAIL_CHARS = 4000


class ProcessFailed(Exception):
    """A child process did not do what its caller needed (start, exit, print) in time."""


# --- output capture ----------------------------------------------------------------------


class Output:
    """The lines one pipe of a child produced, bounded, waitable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lines: list[str] = []
        self._first = 0  # absolute index of self._lines[0] once old lines were dropped
        self._kept_bytes = 0
        self._partial = bytearray()
        self._changed = trio.Event()
        self.closed = False

    @property
    def line_count(self) -> int:
        """Lines seen so far, including dropped ones: a position for ``wait_for(after=)``."""
        return self._first + len(self._lines)

    @property
    def lines(self) -> list[str]:
        """The kept complete lines (a partial last line appears once the pipe closes)."""
        return list(self._lines)

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self._lines)

    def tail(self, chars: int = _TAIL_CHARS) -> str:
        text = self.text + self._partial.decode(errors="replace")
        return text if len(text) <= chars else "…" + text[-chars:]

    def feed(self, chunk: bytes | bytearray) -> None:
        self._partial += chunk
        *complete, rest = self._partial.split(b"\n")
        for raw in complete:
            self._append(raw)
        self._partial = bytearray(rest)
        if len(self._partial) > _MAX_LINE_BYTES:
            self._append(bytes(self._partial))
            self._partial.clear()
        self._notify()

    def close(self) -> None:
        if self._partial:
            self._append(bytes(self._partial))
            self._partial.clear()
        self.closed = True
        self._notify()

    def _append(self, raw: bytes | bytearray) -> None:
        line = raw[:_MAX_LINE_BYTES].decode(errors="replace").rstrip("\r")
        self._lines.append(line)
        self._kept_bytes += len(line) + 1
        while self._kept_bytes > _MAX_KEPT_BYTES and len(self._lines) > 1:
            self._kept_bytes -= len(self._lines.pop(0)) + 1
            self._first += 1

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_closed(self) -> None:
        """Wait until the pipe has closed (no deadline of its own: callers hold one)."""
        while not self.closed:
            await self._changed.wait()

    async def wait_for(self, pattern: re.Pattern[str] | str, *, after: int = 0) -> re.Match[str]:
        """The first line at position >= ``after`` that ``pattern`` searches successfully.

        Waits for more output (no deadline of its own: callers hold one). Raises
        ``EOFError`` when the pipe closes without such a line.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        index = max(after, self._first)
        while True:
            while index < self.line_count:
                match = regex.search(self._lines[index - self._first])
                if match is not None:
                    return match
                index += 1
            if self.closed:
                raise EOFError(f"{self.name} closed without a line matching {regex.pattern!r}")
            await self._changed.wait()


async def _pump(stream: trio.abc.ReceiveStream, output: Output) -> None:
    try:
        while chunk := await stream.receive_some(65536):
            output.feed(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        output.close()


# --- one managed process -------------------------------------------------------------------


class ManagedProcess:
    """A running child under its caller's control. Build it with ``managed_process``."""

    def __init__(self, name: str, argv: Sequence[str], process: trio.Process) -> None:
        self.name = name
        self.argv = list(argv)
        self.process = process
        self.stdout = Output(f"{name} stdout")
        self.stderr = Output(f"{name} stderr")
        #: The ready line's match, when a ready pattern was given.
        self.ready: re.Match[str] | None = None
        #: True once ``stop`` had to use SIGKILL.
        self.killed = False

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} rc={self.returncode}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def host(self) -> str:
        return self._ready_group("host")

    @property
    def port(self) -> int:
        return int(self._ready_group("port"))

    @property
    def address(self) -> str:
        """``host:port`` from the ready line's ``host`` and ``port`` groups."""
        return f"{self.host}:{self.port}"

    def _ready_group(self, group: str) -> str:
        assert self.ready is not None, f"{self.name}: no ready line was awaited"
        value = self.ready.group(group)
        assert value is not None, f"{self.name}: ready line has no {group!r} group"
        return value

    def describe(self, headline: str) -> str:
        """A failure message: what happened, the command, the exit status, output tails."""
        status = "still running" if self.returncode is None else f"exit status {self.returncode}"
        return (
            f"{headline}\n  command: {' '.join(self.argv)}\n  pid {self.pid}, {status}\n"
            f"--- {self.stdout.name} ---\n{self.stdout.tail()}"
            f"--- {self.stderr.name} ---\n{self.stderr.tail()}"
        )

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            self.process.send_signal(signum)

    async def wait(self, timeout_s: float = RUN_TIMEOUT_S) -> int:
        """Wait for the process to exit and its output to be drained; the exit status."""
        with trio.move_on_after(timeout_s):
            await self.process.wait()
        if self.returncode is None:
            raise ProcessFailed(self.describe(f"{self.name} did not exit within {timeout_s} s"))
        await self._drained()
        return self.returncode

    async def _drained(self) -> None:
        # Output ends when the pipes close, right after exit unless a grandchild kept them.
        with trio.move_on_after(_DRAIN_WAIT_S):
            await self.stdout.wait_closed()
            await self.stderr.wait_closed()

    async def wait_for_line(
        self,
        pattern: re.Pattern[str] | str,
        *,
        stream: str = "stderr",
        after: int = 0,
        timeout_s: float = START_TIMEOUT_S,
    ) -> re.Match[str]:
        """The first line of ``stream`` ("stdout"/"stderr") matching ``pattern``, in time."""
        output = self.stdout if stream == "stdout" else self.stderr
        try:
            with trio.fail_after(timeout_s):
                return await output.wait_for(pattern, after=after)
        except trio.TooSlowError:
            raise ProcessFailed(
                self.describe(
                    f"{self.name}: no {stream} line matching {pattern!r} in {timeout_s} s"
                )
            ) from None
        except EOFError:
            with trio.move_on_after(_KILL_WAIT_S):
                await self.process.wait()
            raise ProcessFailed(
                self.describe(f"{self.name}: {stream} ended without a line matching {pattern!r}")
            ) from None

    async def stop(self, signum: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """``signum``, up to ``timeout_s`` for the exit, then SIGKILL; the exit status.

        Safe to call again or after the process exited on its own. Runs shielded, so it
        also completes while the caller is being cancelled.
        """
        with trio.CancelScope(shield=True):
            if self.returncode is None:
                self.send_signal(signum)
                with trio.move_on_after(timeout_s):
                    await self.process.wait()
            if self.returncode is None:
                self.killed = True
                self.process.kill()
                with trio.move_on_after(_KILL_WAIT_S):
                    await self.process.wait()
            await self._drained()
        assert self.returncode is not None, f"{self.name} (pid {self.pid}) survived SIGKILL"
        return self.returncode


@asynccontextmanager
async def managed_process(
    argv: Sequence[str],
    *,
    name: str | None = None,
    ready: re.Pattern[str] | str | None = None,
    ready_stream: str = "stdout",
    start_timeout_s: float = START_TIMEOUT_S,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> AsyncIterator[ManagedProcess]:
    """Start ``argv``; with ``ready``, wait for that line first; stop it when the block ends.

    The ready match is ``proc.ready`` (``proc.address`` when it has ``host``/``port``
    groups). A body exception leaves this block as itself, not in an exception group.
    """
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(env),
        cwd=cwd,
    )
    proc = ManagedProcess(name or Path(argv[0]).name, argv, process)
    assert process.stdout is not None and process.stderr is not None
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pump, process.stdout, proc.stdout)
        nursery.start_soon(_pump, process.stderr, proc.stderr)
        try:
            if ready is not None:
                proc.ready = await proc.wait_for_line(
                    ready, stream=ready_stream, timeout_s=start_timeout_s
                )
            yield proc
        except BaseException as exc:  # re-raised below, outside the nursery
            body_error = exc
        finally:
            await proc.stop(timeout_s=stop_timeout_s)
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
