"""The latency checker: end-to-end latency buckets, and end-to-end and send percentiles.

Rules (anchors.md §2.4: OpenChaos EndToEndLatencyChecker):
- The end-to-end latency of each delivery (receive time minus born time) falls into
  OpenChaos's buckets (``E2E_BOUNDS_MS``); an unknown one (-1) is left out.
- Send latency counts the workload's enqueues, not the harness's probe writes.
- Percentiles are ``bench.measure.percentile`` (nearest rank, the project's one definition).
- Pure: entries in, frozen results out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from bench.measure import percentile
from scenarios.history import DEQUEUE, ENQUEUE, PROBE_CLIENT, Entry, Outcome, Response

#: End-to-end latency bucket upper bounds (ms), as OpenChaos's EndToEndLatencyChecker.
E2E_BOUNDS_MS = (1, 5, 10, 100, 1000, 3000)


@attrs.frozen(kw_only=True)
class LatencyResult:
    #: Counts per bucket: <=1, <=5, <=10, <=100, <=1000, <=3000, >3000 ms.
    e2e_buckets: tuple[int, ...]
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None
    send_p50_ms: float | None
    send_p99_ms: float | None
    send_max_ms: float | None

    def to_json(self) -> dict[str, Any]:
        total = sum(self.e2e_buckets)
        names = [f"e2eIn{b}msLatency" for b in E2E_BOUNDS_MS] + [
            f"e2eExceed{E2E_BOUNDS_MS[-1]}msLatency"
        ]
        return {
            "endToEnd": {
                name: {"count": n, "percent": round(100 * n / total, 2) if total else 0.0}
                for name, n in zip(names, self.e2e_buckets, strict=True)
            },
            "e2eP50Ms": self.e2e_p50_ms,
            "e2eP99Ms": self.e2e_p99_ms,
            "sendP50Ms": self.send_p50_ms,
            "sendP99Ms": self.send_p99_ms,
            "sendMaxMs": self.send_max_ms,
        }


def e2e_bucket(latency_ms: int) -> int:
    """Index of the bucket ``latency_ms`` falls in."""
    for i, bound in enumerate(E2E_BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(E2E_BOUNDS_MS)


def check_latency(entries: Iterable[Entry]) -> LatencyResult:
    buckets = [0] * (len(E2E_BOUNDS_MS) + 1)
    e2e: list[float] = []
    send: list[float] = []
    for entry in entries:
        if not isinstance(entry, Response) or entry.outcome is not Outcome.SUCCESS:
            continue
        if entry.op == DEQUEUE and entry.e2e_latency_ms >= 0:
            buckets[e2e_bucket(entry.e2e_latency_ms)] += 1
            e2e.append(entry.e2e_latency_ms)
        elif entry.op == ENQUEUE and entry.client_id != PROBE_CLIENT:
            send.append(entry.latency_ms)
    return LatencyResult(
        e2e_buckets=tuple(buckets),
        e2e_p50_ms=percentile(e2e, 50),
        e2e_p99_ms=percentile(e2e, 99),
        send_p50_ms=percentile(send, 50),
        send_p99_ms=percentile(send, 99),
        send_max_ms=max(send) if send else None,
    )
