"""``matrix.png``: the benchmark matrix as three panels.

Rules:
- Left: produce msg/s against requests in flight; middle: its latency p50 (solid) and p99
  (dashed), log scale; one line per deployment, ours and the peer's, each deployment in
  the same colour in every panel. Right: the consume cells' msg/s as bars.
- In-flight levels are spaced evenly (a log axis would crowd 64 and 256), labelled with
  their values. A cell without figures is left out of the lines (the table says why).
- matplotlib with the Agg backend (no display), imported when a chart is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.matrix_cells import DEPLOYMENTS, PRODUCE, CellResult

_COLOURS = {
    "single": "tab:blue",
    "controller": "tab:green",
    "nats-r1": "tab:orange",
    "nats-r3": "tab:red",
}

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _deployments(results: Sequence[CellResult]) -> list[str]:
    return list(dict.fromkeys(r.cell.deployment for r in results))


def write_chart(path: Path, results: Sequence[CellResult], *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r.cell.inflight for r in results if r.cell.inflight is not None})
    x_of = {level: i for i, level in enumerate(levels)}
    fig, (rate_ax, latency_ax, consume_ax) = plt.subplots(1, 3, figsize=(16, 5), dpi=100)
    try:
        for key in _deployments(results):
            colour, label = _COLOURS.get(key, "tab:grey"), DEPLOYMENTS[key].label
            points = [
                (x_of[r.cell.inflight], r.figures)
                for r in results
                if r.cell.deployment == key
                and r.cell.kind == PRODUCE
                and r.cell.inflight is not None
                and r.figures is not None
            ]
            if not points:
                continue
            xs = [x for x, _ in points]
            rate_ax.plot(xs, [f.msgs_per_s for _, f in points], "o-", color=colour, label=label)
            for attr, style, suffix in (("p50_ms", "o-", "p50"), ("p99_ms", "s--", "p99")):
                timed = [(x, getattr(f, attr)) for x, f in points if getattr(f, attr)]
                if timed:
                    latency_ax.plot(
                        [x for x, _ in timed],
                        [v for _, v in timed],
                        style,
                        color=colour,
                        label=f"{label} {suffix}",
                    )
        for ax in (rate_ax, latency_ax):
            ax.set_xticks(range(len(levels)), [str(level) for level in levels])
            ax.set_xlabel("requests in flight")
            ax.grid(True, which="both", alpha=0.3)
        rate_ax.set_ylabel("msg/s (1 KiB, acked)")
        rate_ax.set_title("produce throughput")
        latency_ax.set_yscale("log")
        latency_ax.set_ylabel("send -> ack latency (ms, log)")
        latency_ax.set_title("produce latency p50 / p99")
        _consume_bars(consume_ax, results)
        for ax in (rate_ax, latency_ax):
            if ax.has_data():
                ax.legend(fontsize=7, loc="best")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _consume_bars(ax: Axes, results: Sequence[CellResult]) -> None:
    bars = [(r, r.figures) for r in results if r.cell.kind != PRODUCE and r.figures is not None]
    labels = [f"{DEPLOYMENTS[r.cell.deployment].label}\n{r.cell.kind}" for r, _ in bars]
    colours = [_COLOURS.get(r.cell.deployment, "tab:grey") for r, _ in bars]
    rects = ax.bar(range(len(bars)), [f.msgs_per_s for _, f in bars], color=colours)
    ax.bar_label(rects, labels=[f"{f.msgs_per_s:,.0f}" for _, f in bars], fontsize=7)
    ax.set_xticks(range(len(bars)), labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("msg/s")
    ax.set_title("consume (drain of what was produced)")
    ax.grid(True, axis="y", alpha=0.3)
