"""Whether a recorded pid is still the recorded process, read from ``/proc``.

Rules:
- A recorded pid is acted on only while it is still that process: ``/proc/<pid>`` exists,
  is not a zombie, its start time equals the recorded one and its command line ends with
  the recorded argv (which runs ``rmq``). A recycled pid is never signalled.
- Linux only (``/proc``), like the rest of the local cluster tooling.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from launcher.record import Node


def proc_start_ticks(pid: int) -> int | None:
    """The start time of a live (non-zombie) ``pid``, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold anything.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited; its parent has not reaped it yet
        return None
    return int(fields[19])


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def is_alive(node: Node) -> bool:
    """Whether the process recorded for ``node`` is still running (and still that process)."""
    if node.pid <= 0:
        return False
    ticks = proc_start_ticks(node.pid)
    if ticks is None or (node.start_ticks and ticks != node.start_ticks):
        return False
    cmdline = proc_cmdline(node.pid)
    # ``rmq`` is a script: the kernel runs it as ``python .../rmq ARGS``.
    return cmdline[-len(node.argv) :] == node.argv and any("rmq" in p for p in cmdline)


def signal_node(node: Node, signum: int) -> None:
    """Send ``signum`` to ``node``'s pid (the caller checked ``is_alive``); gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.pid, signum)
