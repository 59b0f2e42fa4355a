"""What load a chaos run actually drove: the rate reached and the CPU the box had left.

Rules:
- The rate is counted, not assumed: sends started and SEND_OK-or-degraded acks over the
  load window (producers started to producers stopped, trio clock).
- CPU: the whole box from ``/proc/stat`` (every core, every process: other runs on a
  shared machine count too, which is the point: it says how much was left), and the
  harness process itself (producers, consumers, history writer) from ``getrusage``.
  Where ``/proc/stat`` cannot be read the box figure is None, never a guess.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import attrs

PROC_STAT = Path("/proc/stat")


def cpu_ticks(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot; None when unreadable."""
    try:
        first = path.read_text(encoding="ascii").split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    ticks = [int(t) for t in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


@attrs.frozen(kw_only=True)
class CpuMark:
    at_s: float
    box: tuple[int, int] | None
    self_cpu_s: float

    @classmethod
    def now(cls) -> CpuMark:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            at_s=time.monotonic(), box=cpu_ticks(), self_cpu_s=usage.ru_utime + usage.ru_stime
        )


@attrs.frozen(kw_only=True)
class LoadFigures:
    asked_per_s: float
    seconds: float
    sent: int
    acked: int
    cores: int
    #: Share of all cores busy during the window (None: /proc/stat unreadable).
    box_busy_pct: float | None
    #: The harness process's CPU, as a share of one core.
    harness_cpu_pct: float

    @property
    def sent_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def acked_per_s(self) -> float:
        return self.acked / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        box = "-" if self.box_busy_pct is None else f"{self.box_busy_pct:.0f} %"
        return (
            f"load: {self.sent_per_s:,.0f} msg/s sent, {self.acked_per_s:,.0f} acked/s "
            f"(asked {self.asked_per_s:,.0f}) over {self.seconds:.0f} s; box CPU {box} busy "
            f"({self.cores} cores, every process), harness {self.harness_cpu_pct:.0f} % of a core"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "askedPerSecond": self.asked_per_s,
            "seconds": round(self.seconds, 1),
            "sent": self.sent,
            "acked": self.acked,
            "sentPerSecond": round(self.sent_per_s, 1),
            "ackedPerSecond": round(self.acked_per_s, 1),
            "cores": self.cores,
            "boxBusyPercent": None if self.box_busy_pct is None else round(self.box_busy_pct, 1),
            "harnessCpuPercentOfOneCore": round(self.harness_cpu_pct, 1),
        }


def load_figures(
    start: CpuMark, end: CpuMark, *, asked_per_s: float, sent: int, acked: int
) -> LoadFigures:
    seconds = max(end.at_s - start.at_s, 1e-9)
    busy = None
    if start.box is not None and end.box is not None and end.box[1] > start.box[1]:
        busy = 100.0 * (end.box[0] - start.box[0]) / (end.box[1] - start.box[1])
    return LoadFigures(
        asked_per_s=asked_per_s,
        seconds=seconds,
        sent=sent,
        acked=acked,
        cores=os.cpu_count() or 1,
        box_busy_pct=busy,
        harness_cpu_pct=100.0 * (end.self_cpu_s - start.self_cpu_s) / seconds,
    )
