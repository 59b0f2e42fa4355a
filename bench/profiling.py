"""py-spy profiles of a benchmark's processes: record one, and summarize where the time goes.

Rules:
- ``py-spy record --idle`` samples wall-clock time (100 Hz, speedscope format), so on an
  oversubscribed machine time spent preempted is charged to whatever frame was running
  (often a syscall); read it beside the CPU µs per message (``bench/measure.py``).
- A missing py-spy or a failed recording is a printed line, never an error: a benchmark
  still reports its figures.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import trio


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


async def record_profile(pid: int, out: Path, seconds: float) -> None:
    """py-spy record of ``pid`` for ``seconds`` (idle samples included) into ``out``."""
    exe = py_spy()
    if exe is None:
        print("py-spy not found: .venv/bin/pip install py-spy", flush=True)
        return
    argv = [exe, "record", "-p", str(pid), "-o", str(out), "--format", "speedscope",
            "-d", str(max(1, int(seconds))), "-r", "100", "--idle"]  # fmt: skip
    result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        print(f"py-spy failed: {result.stderr.decode(errors='replace')[-500:]}", flush=True)


#: This checkout's root: frames of our own code are shown relative to it.
_ROOT = f"{Path(__file__).resolve().parents[1]}/"


def _short(path: str) -> str:
    for marker in ("site-packages/", _ROOT, "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of the busiest thread's samples in a py-spy speedscope file.

    Frames present in (nearly) every sample (the entry point, ``trio.run``) are left out of
    the inclusive list. ``EpollIOManager.get_events`` self time is the event loop waiting in
    ``epoll_wait`` (idle, or polling when there is work).
    """
    data = json.loads(path.read_text())
    frames = [f"{f['name']} ({_short(f.get('file', '?'))})" for f in data["shared"]["frames"]]
    prof = max(data["profiles"], key=lambda p: len(p["samples"]))
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for stack in prof["samples"]:
        if stack:
            own[frames[stack[-1]]] += 1
        for name in {frames[i] for i in stack}:
            total[name] += 1
    samples = max(1, len(prof["samples"]))
    epoll = sum(n for name, n in own.items() if "get_events" in name)

    def pct(n: int) -> float:
        return round(100 * n / samples, 1)

    return {
        "thread": prof.get("name", "?"),
        "samples": samples,
        "epoll_wait_pct": pct(epoll),
        "self": [(k, pct(n)) for k, n in own.most_common(top)],
        "inclusive": [(k, pct(n)) for k, n in total.most_common() if n < 0.995 * samples][
            : top + 10
        ],
    }


def print_profile(title: str, summary: dict[str, Any]) -> None:
    print(
        f"\n{title}: {summary['thread']}, {summary['samples']} samples, "
        f"{summary['epoll_wait_pct']}% in epoll_wait"
    )
    print("  self %   function")
    for name, share in summary["self"]:
        print(f"  {share:6.1f}   {name}")
    print("  incl %   function")
    for name, share in summary["inclusive"]:
        print(f"  {share:6.1f}   {name}")
