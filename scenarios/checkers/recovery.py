"""The recovery checker: unavailability windows and each fault's recovery time.

Rules (anchors.md §2.3: OpenChaos RecoveryChecker):
- Unavailability: over enqueue responses sorted by timestamp, a FAILURE/UNKNOWN opens a
  window at its call's start and the next SUCCESS closes it; windows closer than
  ``merge_gap_ms`` merge (OpenChaos merges at 2 s). A window is attributed to the last
  fault that started before its first failure was seen (to none before the first fault):
  the harness's own probe writes (client ``PROBE_CLIENT``, refused by design) are left out:
  a call in flight when a fault began starts before the fault does. A fault's recovery
  time is from the start of its first window to the end of its last (0: nobody noticed).
  Faults that started at the same moment (several targets hit together) are one fault.
- Recovery percentiles are ``bench.measure.percentile`` (nearest rank).
- Pure: entries in, frozen results out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from bench.measure import percentile
from scenarios.checkers.queue import SEND_OK
from scenarios.history import (
    ENQUEUE,
    PROBE_CLIENT,
    Entry,
    FaultEvent,
    Outcome,
    Phase,
    Response,
    extra_fields,
    make_extra,
    reiterable,
)

#: OpenChaos's RecoveryChecker merges unavailability closer than this.
MERGE_GAP_MS = 2000


@attrs.frozen(kw_only=True)
class Window:
    """A stretch when sends failed: from a failed call's start to the next success."""

    start_ms: int
    #: The next success's timestamp; None when no send succeeded afterwards.
    end_ms: int | None
    failures: int
    #: When the first failure was *seen* (its answer's timestamp): what attributes the
    #: window to a fault, since a call already in flight when the fault began starts
    #: before it.
    first_failure_ms: int

    @property
    def duration_ms(self) -> int | None:
        return None if self.end_ms is None else self.end_ms - self.start_ms


def _available(response: Response, degraded_unavailable: bool) -> bool:
    if response.outcome is not Outcome.SUCCESS:
        return False
    if not degraded_unavailable:
        return True
    return extra_fields(response.extra).get("status", SEND_OK) == SEND_OK


def unavailability_windows(
    entries: Iterable[Entry],
    *,
    op: str = ENQUEUE,
    merge_gap_ms: int = MERGE_GAP_MS,
    degraded_unavailable: bool = False,
) -> tuple[Window, ...]:
    """Every window when ``op`` calls failed (see the module rules), in time order.

    With ``degraded_unavailable`` an ack with a degraded status (``FLUSH_SLAVE_TIMEOUT``...)
    counts as a failure: the window is then "not fully durable", not "down".
    """
    # (answered, started, available) per call, not the entries: a 2,000 msg/s run has
    # millions of them.
    calls = sorted(
        (
            (e.timestamp_ms, e.started_ms, _available(e, degraded_unavailable))
            for e in entries
            if isinstance(e, Response) and e.op == op and e.client_id != PROBE_CLIENT
        ),
        key=lambda call: call[0],  # stable: answers of one millisecond keep history order
    )
    raw: list[Window] = []
    start: int | None = None
    seen = 0
    failures = 0
    for answered_ms, started_ms, available in calls:
        if available:
            if start is not None:
                raw.append(
                    Window(
                        start_ms=start, end_ms=answered_ms, failures=failures, first_failure_ms=seen
                    )
                )
                start, failures = None, 0
        else:
            if start is None:
                start, seen = started_ms, answered_ms
            start = min(start, started_ms)
            failures += 1
    if start is not None:
        raw.append(Window(start_ms=start, end_ms=None, failures=failures, first_failure_ms=seen))
    return _merge(sorted(raw, key=lambda w: w.start_ms), merge_gap_ms)


def _merge(windows: list[Window], gap_ms: int) -> tuple[Window, ...]:
    merged: list[Window] = []
    for window in windows:
        last = merged[-1] if merged else None
        if last is not None and (last.end_ms is None or window.start_ms - last.end_ms < gap_ms):
            end = (
                None
                if last.end_ms is None or window.end_ms is None
                else max(last.end_ms, window.end_ms)
            )
            merged[-1] = Window(
                start_ms=last.start_ms,
                end_ms=end,
                failures=last.failures + window.failures,
                first_failure_ms=min(last.first_failure_ms, window.first_failure_ms),
            )
        else:
            merged.append(window)
    return tuple(merged)


@attrs.frozen(kw_only=True)
class FaultSpan:
    """One injected fault: its name, what it hit, when it began and ended."""

    name: str
    extra: str | None
    start_ms: int
    #: None when the history ends before the fault was healed.
    end_ms: int | None


def fault_spans(entries: Iterable[Entry]) -> tuple[FaultSpan, ...]:
    """Fault start/end lines paired (by name and extra, first in first out), by start."""
    open_: dict[tuple[str, str | None], list[int]] = {}
    spans: list[FaultSpan] = []
    for entry in entries:
        if not isinstance(entry, FaultEvent):
            continue
        key = (entry.name, entry.extra)
        if entry.phase is Phase.START:
            open_.setdefault(key, []).append(entry.timestamp_ms)
        elif open_.get(key):
            start = open_[key].pop(0)
            spans.append(
                FaultSpan(name=key[0], extra=key[1], start_ms=start, end_ms=entry.timestamp_ms)
            )
    for key, starts in open_.items():
        spans.extend(FaultSpan(name=key[0], extra=key[1], start_ms=s, end_ms=None) for s in starts)
    return tuple(sorted(spans, key=lambda s: s.start_ms))


def _together(spans: Sequence[FaultSpan]) -> list[FaultSpan]:
    """Faults that started at the same moment (several targets hit at once) as one."""
    out: list[FaultSpan] = []
    for span in spans:
        last = out[-1] if out else None
        if last is None or last.start_ms != span.start_ms:
            out.append(span)
            continue
        ends = (last.end_ms, span.end_ms)
        targets = [extra_fields(x).get("target", x or "") for x in (last.extra, span.extra)]
        out[-1] = FaultSpan(
            name=last.name if last.name == span.name else f"{last.name}+{span.name}",
            extra=make_extra(target="+".join(targets)),
            start_ms=last.start_ms,
            end_ms=None if None in ends else max(e for e in ends if e is not None),
        )
    return out


@attrs.frozen(kw_only=True)
class FaultRecovery:
    fault: FaultSpan
    windows: tuple[Window, ...]

    @property
    def recovered(self) -> bool:
        return all(w.end_ms is not None for w in self.windows)

    @property
    def recovery_ms(self) -> int | None:
        """First window's start to last window's end; 0 without windows; None: never."""
        if not self.windows:
            return 0
        if not self.recovered:
            return None
        ends = [w.end_ms for w in self.windows if w.end_ms is not None]
        return max(ends) - self.windows[0].start_ms

    @property
    def unavailable_ms(self) -> int | None:
        if not self.recovered:
            return None
        return sum(w.duration_ms or 0 for w in self.windows)


@attrs.frozen(kw_only=True)
class RecoveryResult:
    windows: tuple[Window, ...]
    per_fault: tuple[FaultRecovery, ...]
    #: Windows before the first fault started (unexpected unavailability).
    unattributed: tuple[Window, ...]

    def recovery_times_ms(self) -> list[int]:
        return [r for f in self.per_fault if (r := f.recovery_ms) is not None]

    @property
    def unrecovered(self) -> int:
        return sum(not f.recovered for f in self.per_fault) + sum(
            w.end_ms is None for w in self.unattributed
        )

    def to_json(self) -> dict[str, Any]:
        times = self.recovery_times_ms()
        return {
            "faults": len(self.per_fault),
            "unavailabilityWindows": len(self.windows),
            "unrecovered": self.unrecovered,
            "recoveryMsP50": percentile(times, 50),
            "recoveryMsP99": percentile(times, 99),
            "recoveryMsMax": max(times) if times else None,
            "perFault": [
                {
                    "fault": f.fault.name,
                    "target": extra_fields(f.fault.extra).get("target", f.fault.extra),
                    "startTimestamp": f.fault.start_ms,
                    "endTimestamp": f.fault.end_ms,
                    "windows": len(f.windows),
                    "failedCalls": sum(w.failures for w in f.windows),
                    "unavailableMs": f.unavailable_ms,
                    "recoveryMs": f.recovery_ms,
                }
                for f in self.per_fault
            ],
            "unattributedWindows": [
                {"start": w.start_ms, "end": w.end_ms, "failures": w.failures}
                for w in self.unattributed
            ],
        }


def check_recovery(
    entries: Iterable[Entry],
    *,
    op: str = ENQUEUE,
    merge_gap_ms: int = MERGE_GAP_MS,
    degraded_unavailable: bool = False,
) -> RecoveryResult:
    """Unavailability windows and each fault's recovery time (see the module rules);
    reads ``entries`` twice."""
    entries = reiterable(entries)
    windows = unavailability_windows(
        entries, op=op, merge_gap_ms=merge_gap_ms, degraded_unavailable=degraded_unavailable
    )
    faults = _together(fault_spans(entries))
    owned: list[list[Window]] = [[] for _ in faults]
    unattributed: list[Window] = []
    for window in windows:
        owner = None
        for i, fault in enumerate(faults):
            if fault.start_ms <= window.first_failure_ms:
                owner = i
        if owner is None:
            unattributed.append(window)
        else:
            owned[owner].append(window)
    return RecoveryResult(
        windows=windows,
        per_fault=tuple(
            FaultRecovery(fault=f, windows=tuple(w)) for f, w in zip(faults, owned, strict=True)
        ),
        unattributed=tuple(unattributed),
    )
