"""The probe checker: the harness's ``probe`` lines (direct writes a fault must refuse...).

Rules:
- A ``probe`` line with outcome FAILURE fails the verdict (``verdict.judge_more``).
- Pure: entries in, frozen results out.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from scenarios.history import PROBE, Entry, Outcome, Response


@attrs.frozen(kw_only=True)
class ProbeResult:
    name: str
    passed: bool
    at_ms: int
    extra: str | None


def check_probes(entries: Iterable[Entry]) -> tuple[ProbeResult, ...]:
    return tuple(
        ProbeResult(
            name=e.value or "probe",
            passed=e.outcome is Outcome.SUCCESS,
            at_ms=e.timestamp_ms,
            extra=e.extra,
        )
        for e in entries
        if isinstance(e, Response) and e.op == PROBE
    )
