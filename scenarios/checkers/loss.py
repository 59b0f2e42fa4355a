"""The loss-window checker: when, relative to its fault, each lost message was acked.

Rules:
- For every value the queue checker counts as ``lost`` (acked SEND_OK, never dequeued),
  take its ack's timestamp (the SUCCESS answer) and the last fault that *started* at or
  before that ack plus ``AFTER_MS`` (a message acked just after the kill, by a master
  already dead to its slaves, counts against that kill). Its *window* is
  ``fault start - ack time``: how long before the fault the ack left, so how far back the
  fault reached (negative: acked after the fault began, e.g. skipped by a consumer offset
  committed past the new master's end). A lost value acked before any fault has no fault.
- Per fault: how many lost, and the widest window. This is the real loss window of
  asynchronous replication: what a master acked in the last W ms before dying.
- Pure: entries and the lost values in, a frozen result out.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

import attrs

from bench.measure import percentile
from scenarios.checkers.recovery import FaultSpan
from scenarios.history import ENQUEUE, Entry, Outcome, Response

#: A message acked this long after a fault started still counts against that fault.
AFTER_MS = 1000


@attrs.frozen(kw_only=True)
class LossWindowResult:
    #: (fault start ms, messages lost, widest window ms) for faults that lost any.
    per_fault: tuple[tuple[int, int, int], ...]
    #: fault start - ack time of every lost message attributed to a fault (ms).
    windows_ms: tuple[int, ...]
    #: Lost messages acked before the first fault.
    before_any_fault: int

    def to_json(self) -> dict[str, Any]:
        return {
            "faultsWithLoss": len(self.per_fault),
            "perFault": [
                {"faultStart": start, "lost": lost, "widestWindowMs": widest}
                for start, lost, widest in self.per_fault
            ],
            "windowP50Ms": percentile(list(self.windows_ms), 50),
            "windowP99Ms": percentile(list(self.windows_ms), 99),
            "windowMaxMs": max(self.windows_ms, default=None),
            "lostBeforeAnyFault": self.before_any_fault,
        }

    def describe(self) -> str | None:
        """One line for the verdict, or None when nothing was lost."""
        if not self.windows_ms and not self.before_any_fault:
            return None
        w = list(self.windows_ms)
        return (
            f"loss window: {len(w)} lost over {len(self.per_fault)} faults, acked "
            f"p50 {percentile(w, 50)} / max {max(w, default=0)} ms before the fault"
        )


def check_loss_window(
    entries: Iterable[Entry], lost: Iterable[str], faults: Iterable[FaultSpan]
) -> LossWindowResult:
    """Each lost value's ack against the fault before it (see the module rules)."""
    wanted = set(lost)
    acked_ms: dict[str, int] = {}
    if wanted:
        for e in entries:
            if (
                isinstance(e, Response)
                and e.op == ENQUEUE
                and e.outcome is Outcome.SUCCESS
                and e.value in wanted
            ):
                acked_ms[e.value] = e.timestamp_ms
    starts = sorted({f.start_ms for f in faults})
    by_fault: dict[int, list[int]] = {}
    before = 0
    for when in acked_ms.values():
        i = bisect.bisect_right(starts, when + AFTER_MS) - 1
        if i < 0:
            before += 1
            continue
        by_fault.setdefault(starts[i], []).append(starts[i] - when)
    return LossWindowResult(
        per_fault=tuple((s, len(w), max(w)) for s, w in sorted(by_fault.items())),
        windows_ms=tuple(sorted(w for ws in by_fault.values() for w in ws)),
        before_any_fault=before,
    )
