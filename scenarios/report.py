"""Run reports: ``report.json`` (checker results + run facts) and ``latency.png``.

Rules:
- The JSON holds the checkers' own ``to_json`` (OpenChaos's key names where it has them),
  plus the run's facts: scenario, mode, seed, the command that replays it, counts.
- The PNG is OpenChaos's PerfChecker picture: send latency of every enqueue over time
  (log scale), successes, failures and unknown outcomes in their own colours, each fault
  window shaded and labelled with its target. matplotlib, Agg backend (no display). At
  most ``PLOT_SUCCESSES`` successes are drawn (every k-th, evenly over the run: a 2,000 msg/s
  run has millions, which would cost minutes and GB to scatter); every failure and unknown
  outcome is drawn.
- ``summary_row`` is one line of the results table in README.
- ``keep_dashboard`` keeps the page the cluster's dashboard saved (its timeline of the
  faults: elections, SyncStateSet changes, brokers lost and back) next to the report, as
  ``DIR/dashboard.html``: the cluster's own directory may be removed after the run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.measure import percentile
from launcher.plans import DASHBOARD_SNAPSHOT
from launcher.ready import DASHBOARD
from scenarios.checkers import CheckReport, fault_spans
from scenarios.history import ENQUEUE, Entry, Outcome, Response, extra_fields, reiterable

#: Successes drawn at most (failures and unknown outcomes are all drawn).
PLOT_SUCCESSES = 50_000

_COLOURS = {Outcome.SUCCESS: "tab:blue", Outcome.FAILURE: "tab:red", Outcome.UNKNOWN: "tab:orange"}


def keep_dashboard(run_dir: Path, cluster_dir: Path) -> Path | None:
    """Copy ``cluster_dir``'s saved dashboard page to ``run_dir/dashboard.html``; its path,
    or None when the cluster ran no dashboard."""
    saved = cluster_dir / DASHBOARD / DASHBOARD_SNAPSHOT
    if not saved.is_file():
        return None
    kept = run_dir / DASHBOARD_SNAPSHOT
    shutil.copyfile(saved, kept)
    return kept


def timeline_link(page: Path) -> str:
    """The link to the timeline section of a saved dashboard page."""
    return f"{page.absolute().as_uri()}#timeline"


def report_json(report: CheckReport, facts: dict[str, Any]) -> dict[str, Any]:
    return {**facts, **report.to_json()}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def summary_row(scenario: str, report: CheckReport, faults: int) -> dict[str, Any]:
    """Scenario, faults, acked, lost, duplicated, recovery p50/p99/max (ms)."""
    times = report.recovery.recovery_times_ms()
    return {
        "scenario": scenario,
        "faults": faults,
        "acked": report.queue.acked,
        "lost": len(report.queue.lost),
        "lost_degraded": len(report.queue.lost_degraded),
        "duplicated": len(report.queue.duplicated),
        "recovery_p50_ms": percentile(times, 50),
        "recovery_p99_ms": percentile(times, 99),
        "recovery_max_ms": max(times) if times else None,
        "verdict": "PASS" if report.ok else "FAIL",
    }


def plot_latency(entries: Iterable[Entry], path: Path, *, title: str) -> None:
    """Send latency over time with the fault windows shaded, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = reiterable(entries)
    # (started, latency, outcome) per send, not the entries (millions at load).
    sends = [
        (e.started_ms, e.latency_ms, e.outcome)
        for e in entries
        if isinstance(e, Response) and e.op == ENQUEUE
    ]
    t0 = min((s[0] for s in sends), default=0)
    last_ms = max((s[0] + s[1] for s in sends), default=0)
    fig, ax = plt.subplots(figsize=(12, 5), dpi=100)
    try:
        ax.set_yscale("log")
        ax.set_ylim(0.1, 10_000)
        for span in fault_spans(entries):
            end = span.end_ms if span.end_ms is not None else last_ms
            ax.axvspan((span.start_ms - t0) / 1000, (end - t0) / 1000, color="grey", alpha=0.2)
            target = extra_fields(span.extra).get("target", "")
            ax.text(
                (span.start_ms - t0) / 1000,
                6000,
                f"{span.name} {target}".strip(),
                fontsize=7,
                rotation=90,
                va="top",
            )
        for outcome, colour in _COLOURS.items():
            points = [s for s in sends if s[2] is outcome]
            total = len(points)
            if outcome is Outcome.SUCCESS and total > PLOT_SUCCESSES:
                points = points[:: -(-total // PLOT_SUCCESSES)]
            if points:
                ax.scatter(
                    [(started - t0) / 1000 for started, _, _ in points],
                    [max(latency, 0.1) for _, latency, _ in points],
                    s=4,
                    c=colour,
                    label=f"{outcome.value} ({total})",
                )
        ax.set_xlabel("time since first send (s)")
        ax.set_ylabel("send latency (ms, log)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if sends:
            ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
