"""Child processes for integration tests: start, wait for the ready line, always stop.

The process handling is ``launcher/child.py``'s (``managed_process``: drained pipes, a
deadline on every wait, SIGTERM then SIGKILL when the block ends, failures that carry
the command and output tails) and the ready lines are ``launcher/ready.py``'s; this
module keeps the names the tests import and adds what only tests need: ``namesrv_process``,
commands run to completion (``run_command``, ``run_command_sync``), and a last resort for
detached clusters (``recorded_pids``, ``rmq_running``, ``kill_leftovers``) that reads
``cluster.json`` raw, so it still works when the record is not what launcher/ expects.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import attrs

from launcher.child import (
    RUN_TIMEOUT_S,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ManagedProcess,
    ProcessFailed,
    managed_process,
)
from launcher.command import child_env, rmq_argv
from launcher.pids import proc_cmdline, proc_start_ticks
from launcher.ready import NAMESRV_READY

__all__ = [
    "NAMESRV_READY",
    "RUN_TIMEOUT_S",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "Completed",
    "ManagedProcess",
    "ProcessFailed",
    "kill_leftovers",
    "managed_process",
    "namesrv_process",
    "recorded_pids",
    "rmq_argv",
    "rmq_running",
    "run_command",
    "run_command_sync",
]


def namesrv_process(
    *extra_args: str,
    start_timeout_s: float = START_TIMEOUT_S,
    stop_timeout_s: float = STOP_TIMEOUT_S,
) -> AbstractAsyncContextManager[ManagedProcess]:
    """``rmq namesrv --port 0 EXTRA`` as a managed process, ready once it printed its address."""
    return managed_process(
        rmq_argv("namesrv", "--port", "0", *extra_args),
        name="namesrv",
        ready=NAMESRV_READY,
        start_timeout_s=start_timeout_s,
        stop_timeout_s=stop_timeout_s,
    )


# --- run to completion ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Completed:
    """A finished command: exit status and its whole output."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"command: {' '.join(self.argv)}\nexit status {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


async def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float = RUN_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Completed:
    """Run ``argv`` to completion under ``timeout_s`` (then it is killed and the test fails)."""
    async with managed_process(argv, env=env, cwd=cwd) as proc:
        returncode = await proc.wait(timeout_s)
    return Completed(
        argv=list(argv), returncode=returncode, stdout=proc.stdout.text, stderr=proc.stderr.text
    )


def run_command_sync(
    argv: Sequence[str],
    *,
    timeout_s: float = RUN_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Completed:
    """``run_command`` for plain (non-Trio) tests: blocks, kills the child at the deadline."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            env=child_env(env),
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProcessFailed(
            f"{' '.join(argv)} did not exit within {timeout_s} s (killed)\n"
            f"--- stdout ---\n{_text(exc.stdout)}--- stderr ---\n{_text(exc.stderr)}"
        ) from None
    return Completed(
        argv=list(argv),
        returncode=done.returncode,
        stdout=_text(done.stdout),
        stderr=_text(done.stderr),
    )


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


# --- detached clusters ---------------------------------------------------------------------


def recorded_pids(root: Path) -> dict[str, int]:
    """Node name -> pid as ``root/cluster.json`` names them (empty when there is none)."""
    try:
        nodes = json.loads((root / "cluster.json").read_text())["nodes"]
    except (OSError, ValueError, KeyError):
        return {}
    return {n["name"]: int(n["pid"]) for n in nodes if n["pid"]}


def rmq_running(pid: int, root: Path) -> bool:
    """Whether ``pid`` is a live (not zombie) ``rmq`` process of the cluster in ``root``."""
    cmdline = "\0".join(proc_cmdline(pid))
    alive = proc_start_ticks(pid) is not None
    return alive and "rmq" in cmdline and str(root) in cmdline


def kill_leftovers(root: Path) -> None:
    """SIGKILL every pid ``root/cluster.json`` names that is still one of its ``rmq``
    processes: the last resort after a test, once ``down`` had its chance."""
    for pid in recorded_pids(root).values():
        if rmq_running(pid, root):
            os.kill(pid, signal.SIGKILL)
