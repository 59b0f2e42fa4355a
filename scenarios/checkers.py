"""Checkers over a chaos history: what was lost, duplicated, reordered, unavailable.

Rules (anchors.md §2.3-2.4: OpenChaos QueueChecker / OrderChecker / RecoveryChecker /
EndToEndLatencyChecker, Jepsen's ``total-queue``):
- A message is its ``value``. A send is *acked* when its enqueue RESPONSE is SUCCESS; the
  SDK's SendStatus travels in the extra info as ``status=...`` and only ``SEND_OK`` carries
  the full durability promise. Acked with another status (``FLUSH_SLAVE_TIMEOUT``...) is
  *degraded*: stored, not as durable as configured; its loss is counted apart.
- Queue buckets (each value in exactly one of lost / delivered / not-delivered by outcome):
  ``lost`` = acked SEND_OK, never dequeued; ``lost_degraded`` = acked degraded, never
  dequeued; ``recovered`` = outcome UNKNOWN (or no response at all), dequeued;
  ``failed_delivered`` = outcome FAILURE, yet dequeued (the client was told a lie);
  ``unexpected`` = dequeued, never sent; ``duplicated`` = dequeued more than once.
  A value sent more than once takes its best outcome (SUCCESS > UNKNOWN > FAILURE).
- Order: per sharding key, the *first* delivery of each acked value must come in the order
  the values were acked (history order); a value first delivered after a value acked later
  than it is a violation. Lost values are left to the queue checker. OpenChaos's weaker
  check (acked order is a subsequence of the dequeue order) is reported too.
- Unavailability: over enqueue responses sorted by timestamp, a FAILURE/UNKNOWN opens a
  window at its call's start and the next SUCCESS closes it; windows closer than
  ``merge_gap_ms`` merge (OpenChaos merges at 2 s). A window is attributed to the last
  fault that started before its first failure was seen (to none before the first fault):
  the harness's own probe writes (client ``PROBE_CLIENT``, refused by design) are left out:
  a call in flight when a fault began starts before the fault does. A fault's recovery
  time is from the start of its first window to the end of its last (0: nobody noticed).
  Faults that started at the same moment (several targets hit together) are one fault.
- Fencing (controller mode; needs the harness's ``master`` lines and ``store=`` in acks):
  an ack is from a *deposed master* when the call started after the controller was seen
  naming another broker master at a higher epoch than one at which the acker was master,
  and the acker was not seen master again up to ``REELECTED_SLACK_MS`` after the ack (a
  seen-late re-election). Observations are stamped when the answer came, later than the
  election itself, so a flagged ack is certain. An observation of "no master" deposes
  nobody (no other broker can ack then). Elections (master epoch changes) and failovers
  (master address changes) are counted per group.
- Redelivery: a message delivered again after its first delivery *rewinds* its queue by
  (the latest first delivery on that queue so far) - (its own first delivery): how far
  back, in consumption time, the group's position went. Offsets committed every few
  seconds and copied to the slaves keep it to a few seconds; a restart from 0 (offsets
  missing on a new master) rewinds to the start of the run.
- Probes: a harness ``probe`` line with outcome FAILURE fails the verdict.
- Pure: entries in, frozen results out; no clock, files or randomness.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from scenarios.history import (
    DEQUEUE,
    ENQUEUE,
    MASTER,
    PROBE,
    PROBE_CLIENT,
    Entry,
    FaultEvent,
    Outcome,
    Phase,
    Request,
    Response,
    extra_fields,
    make_extra,
)

SEND_OK = "SEND_OK"
#: OpenChaos's RecoveryChecker merges unavailability closer than this.
MERGE_GAP_MS = 2000
#: End-to-end latency bucket upper bounds (ms), as OpenChaos's EndToEndLatencyChecker.
E2E_BOUNDS_MS = (1, 5, 10, 100, 1000, 3000)
#: An acker seen elected again this soon after its ack was (probably) master already.
REELECTED_SLACK_MS = 10_000


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    assert 0 <= q <= 100, q
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- queue -----------------------------------------------------------------------------

_RANK = {Outcome.FAILURE: 0, Outcome.UNKNOWN: 1, Outcome.SUCCESS: 2}


@attrs.frozen(kw_only=True)
class QueueResult:
    enqueue_invoked: int
    acked: int
    acked_degraded: int
    failed: int
    unknown: int
    dequeued: int
    distinct_dequeued: int
    lost: tuple[str, ...]
    lost_degraded: tuple[str, ...]
    recovered: tuple[str, ...]
    failed_delivered: tuple[str, ...]
    unexpected: tuple[str, ...]
    #: (value, times dequeued) for values dequeued more than once.
    duplicated: tuple[tuple[str, int], ...]

    @property
    def duplicate_deliveries(self) -> int:
        """Deliveries beyond the first, over all values."""
        return sum(n - 1 for _, n in self.duplicated)

    def to_json(self, *, sample: int = 20) -> dict[str, Any]:
        return {
            "enqueueInvokeCount": self.enqueue_invoked,
            "enqueueSuccessCount": self.acked,
            "enqueueSuccessDegradedCount": self.acked_degraded,
            "enqueueFailureCount": self.failed,
            "enqueueUnknownCount": self.unknown,
            "dequeueSuccessCount": self.dequeued,
            "dequeueDistinctCount": self.distinct_dequeued,
            "lostMessageCount": len(self.lost),
            "lostMessages": list(self.lost[:sample]),
            "lostDegradedCount": len(self.lost_degraded),
            "lostDegradedMessages": list(self.lost_degraded[:sample]),
            "recoveredCount": len(self.recovered),
            "failedButDeliveredCount": len(self.failed_delivered),
            "failedButDeliveredMessages": list(self.failed_delivered[:sample]),
            "unexpectedCount": len(self.unexpected),
            "unexpectedMessages": list(self.unexpected[:sample]),
            "duplicateMessageCount": len(self.duplicated),
            "duplicateDeliveries": self.duplicate_deliveries,
            "duplicateMessages": dict(self.duplicated[:sample]),
            "atLeastOnce": not self.lost,
            "atMostOnce": not self.duplicated,
            "exactlyOnce": not self.lost and not self.duplicated,
        }


def _value_key(value: str) -> tuple[int, int | str]:
    """Numbers in numeric order, then any other text."""
    return (0, int(value)) if value.isdigit() else (1, value)


def _sorted(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(values, key=_value_key))


def check_queue(entries: Iterable[Entry]) -> QueueResult:
    """Lost, duplicated, unexpected and recovered messages of a queue history."""
    attempted: set[str] = set()
    invoked = 0
    outcome: dict[str, Outcome] = {}
    status: dict[str, str] = {}
    delivered: Counter[str] = Counter()
    for entry in entries:
        if isinstance(entry, FaultEvent) or entry.value is None:
            continue
        if entry.op == ENQUEUE and isinstance(entry, Request):
            invoked += 1
            attempted.add(entry.value)
        elif entry.op == ENQUEUE and isinstance(entry, Response):
            attempted.add(entry.value)
            old = outcome.get(entry.value)
            if old is None or _RANK[entry.outcome] >= _RANK[old]:
                outcome[entry.value] = entry.outcome
                if entry.outcome is Outcome.SUCCESS:
                    status[entry.value] = extra_fields(entry.extra).get("status", SEND_OK)
        elif (
            entry.op == DEQUEUE and isinstance(entry, Response) and entry.outcome is Outcome.SUCCESS
        ):
            delivered[entry.value] += 1
    acked = {v for v, o in outcome.items() if o is Outcome.SUCCESS}
    degraded = {v for v in acked if status[v] != SEND_OK}
    failed = {v for v, o in outcome.items() if o is Outcome.FAILURE}
    unknown = attempted - acked - failed
    return QueueResult(
        enqueue_invoked=invoked,
        acked=len(acked),
        acked_degraded=len(degraded),
        failed=len(failed),
        unknown=len(unknown),
        dequeued=sum(delivered.values()),
        distinct_dequeued=len(delivered),
        lost=_sorted(v for v in acked - degraded if v not in delivered),
        lost_degraded=_sorted(v for v in degraded if v not in delivered),
        recovered=_sorted(v for v in unknown if v in delivered),
        failed_delivered=_sorted(v for v in failed if v in delivered),
        unexpected=_sorted(v for v in delivered if v not in attempted),
        duplicated=tuple(
            (v, delivered[v]) for v in _sorted(v for v, n in delivered.items() if n > 1)
        ),
    )


# --- order -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OrderViolation:
    key: str
    #: First delivered after ``overtaken_by``, although acked before it.
    value: str
    overtaken_by: str


@attrs.frozen(kw_only=True)
class OrderResult:
    keys_checked: int
    violations: tuple[OrderViolation, ...]
    #: Keys whose acked order is not a subsequence of their dequeue order (OpenChaos).
    subsequence_failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self, *, sample: int = 20) -> dict[str, Any]:
        return {
            "keysChecked": self.keys_checked,
            "isOrdered": self.ok,
            "violationCount": len(self.violations),
            "violations": [
                {"shardingKey": v.key, "value": v.value, "overtakenBy": v.overtaken_by}
                for v in self.violations[:sample]
            ],
            "wrongShardingKeys": list(self.subsequence_failures[:sample]),
        }


def _is_subsequence(needle: Sequence[str], haystack: Iterable[str]) -> bool:
    it = iter(haystack)
    return all(any(x == y for y in it) for x in needle)


def check_order(entries: Iterable[Entry]) -> OrderResult:
    """Per sharding key: first deliveries in acked order (see the module rules)."""
    acked: dict[str, list[str]] = {}
    dequeued: dict[str, list[str]] = {}
    for entry in entries:
        if not isinstance(entry, Response) or entry.outcome is not Outcome.SUCCESS:
            continue
        if entry.sharding_key is None or entry.value is None:
            continue
        if entry.op == ENQUEUE:
            acked.setdefault(entry.sharding_key, []).append(entry.value)
        elif entry.op == DEQUEUE:
            dequeued.setdefault(entry.sharding_key, []).append(entry.value)
    violations: list[OrderViolation] = []
    subsequence_failures: list[str] = []
    for key in sorted(acked):
        index = {v: i for i, v in reversed(list(enumerate(acked[key])))}
        seen: set[str] = set()
        best: tuple[int, str] | None = None  # the latest-acked value delivered so far
        for value in dequeued.get(key, []):
            if value in seen or value not in index:
                continue
            seen.add(value)
            if best is not None and index[value] < best[0]:
                violations.append(OrderViolation(key=key, value=value, overtaken_by=best[1]))
            elif best is None or index[value] > best[0]:
                best = (index[value], value)
        delivered_acked = [v for v in acked[key] if v in seen]
        if not _is_subsequence(delivered_acked, dequeued.get(key, [])):
            subsequence_failures.append(key)
    return OrderResult(
        keys_checked=len(acked),
        violations=tuple(violations),
        subsequence_failures=tuple(subsequence_failures),
    )


# --- unavailability and recovery ---------------------------------------------------------


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
    responses = sorted(
        (
            e
            for e in entries
            if isinstance(e, Response) and e.op == op and e.client_id != PROBE_CLIENT
        ),
        key=lambda r: r.timestamp_ms,
    )
    raw: list[Window] = []
    start: int | None = None
    seen = 0
    failures = 0
    for response in responses:
        if _available(response, degraded_unavailable):
            if start is not None:
                raw.append(
                    Window(
                        start_ms=start,
                        end_ms=response.timestamp_ms,
                        failures=failures,
                        first_failure_ms=seen,
                    )
                )
                start, failures = None, 0
        else:
            if start is None:
                start, seen = response.started_ms, response.timestamp_ms
            start = min(start, response.started_ms)
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
    entries: Sequence[Entry],
    *,
    op: str = ENQUEUE,
    merge_gap_ms: int = MERGE_GAP_MS,
    degraded_unavailable: bool = False,
) -> RecoveryResult:
    """Unavailability windows and each fault's recovery time (see the module rules)."""
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


# --- latency -----------------------------------------------------------------------------


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


# --- fencing -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MasterSeen:
    """The controller named ``address`` master of ``group`` at ``epoch`` (seen ``at_ms``)."""

    at_ms: int
    group: str
    epoch: int
    #: None: the controller named no master.
    address: str | None


@attrs.frozen(kw_only=True)
class DeposedAck:
    value: str
    #: The broker that acked (stored) the message.
    store: str
    status: str
    started_ms: int
    acked_ms: int
    #: Whom the controller had named master when the call started, and at which epoch.
    master_then: str
    epoch_then: int


@attrs.frozen(kw_only=True)
class FencingResult:
    masters: tuple[MasterSeen, ...]
    #: Acks that could be judged (a master had been seen in their group before them).
    acks_judged: int
    #: SEND_OK acks of a deposed master.
    deposed: tuple[DeposedAck, ...]
    #: Acks of a deposed master with a degraded status.
    deposed_degraded: tuple[DeposedAck, ...]

    def elections(self) -> dict[str, int]:
        """Per group: master epoch changes after the first observation."""
        out: dict[str, int] = {}
        for group, seen in _by_group(self.masters).items():
            out[group] = len({m.epoch for m in seen}) - 1
        return out

    def failovers(self) -> dict[str, int]:
        """Per group: changes of the named master's address (no-master gaps skipped)."""
        out: dict[str, int] = {}
        for group, seen in _by_group(self.masters).items():
            named = [m.address for m in seen if m.address is not None]
            out[group] = sum(a != b for a, b in itertools.pairwise(named))
        return out

    def to_json(self, *, sample: int = 20) -> dict[str, Any]:
        def ack(d: DeposedAck) -> dict[str, Any]:
            return {
                "value": d.value,
                "store": d.store,
                "status": d.status,
                "startTimestamp": d.started_ms,
                "ackTimestamp": d.acked_ms,
                "masterThen": d.master_then,
                "epochThen": d.epoch_then,
            }

        return {
            "mastersSeen": [
                {"timestamp": m.at_ms, "group": m.group, "epoch": m.epoch, "address": m.address}
                for m in self.masters
            ],
            "elections": self.elections(),
            "failovers": self.failovers(),
            "acksJudged": self.acks_judged,
            "deposedAckCount": len(self.deposed),
            "deposedAcks": [ack(d) for d in self.deposed[:sample]],
            "deposedDegradedAckCount": len(self.deposed_degraded),
            "deposedDegradedAcks": [ack(d) for d in self.deposed_degraded[:sample]],
        }


def _by_group(masters: Iterable[MasterSeen]) -> dict[str, list[MasterSeen]]:
    out: dict[str, list[MasterSeen]] = {}
    for m in sorted(masters, key=lambda m: m.at_ms):
        out.setdefault(m.group, []).append(m)
    return out


def masters_seen(entries: Iterable[Entry]) -> tuple[MasterSeen, ...]:
    """The harness's ``master`` lines, in time order."""
    out = []
    for entry in entries:
        if isinstance(entry, Response) and entry.op == MASTER and entry.value is not None:
            extra = extra_fields(entry.extra)
            broker = extra.get("broker", "none")
            out.append(
                MasterSeen(
                    at_ms=entry.timestamp_ms,
                    group=extra.get("group", ""),
                    epoch=int(entry.value),
                    address=None if broker == "none" else broker,
                )
            )
    return tuple(sorted(out, key=lambda m: m.at_ms))


def _deposed_by(
    seen: Sequence[MasterSeen], store: str, started_ms: int, acked_ms: int
) -> MasterSeen | None:
    """The observation that proves ``store`` deposed when a call started (see the rules)."""
    before = [m for m in seen if m.at_ms <= started_ms and m.address is not None]
    if not before or before[-1].address == store:
        return None
    then = before[-1]
    if not any(m.address == store and m.epoch < then.epoch for m in before):
        return None  # never a master before: a new master seen late, not a deposed one
    if any(
        m.address == store and m.epoch > then.epoch and m.at_ms <= acked_ms + REELECTED_SLACK_MS
        for m in seen
    ):
        return None  # elected again, seen late
    return then


def check_fencing(entries: Sequence[Entry]) -> FencingResult:
    """Acks of deposed masters (see the module rules)."""
    masters = masters_seen(entries)
    groups = _by_group(masters)
    judged = 0
    deposed: list[DeposedAck] = []
    degraded: list[DeposedAck] = []
    for entry in entries:
        if not (
            isinstance(entry, Response)
            and entry.op == ENQUEUE
            and entry.outcome is Outcome.SUCCESS
            and entry.value is not None
        ):
            continue
        extra = extra_fields(entry.extra)
        store = extra.get("store")
        seen = groups.get(extra.get("queue", "").rpartition(":")[0])
        if store is None or not seen or seen[0].at_ms > entry.started_ms:
            continue
        judged += 1
        then = _deposed_by(seen, store, entry.started_ms, entry.timestamp_ms)
        if then is None:
            continue
        assert then.address is not None
        status = extra.get("status", SEND_OK)
        found = DeposedAck(
            value=entry.value,
            store=store,
            status=status,
            started_ms=entry.started_ms,
            acked_ms=entry.timestamp_ms,
            master_then=then.address,
            epoch_then=then.epoch,
        )
        (deposed if status == SEND_OK else degraded).append(found)
    return FencingResult(
        masters=masters,
        acks_judged=judged,
        deposed=tuple(deposed),
        deposed_degraded=tuple(degraded),
    )


# --- redelivery --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RedeliveryResult:
    redeliveries: int
    #: Largest rewind (ms) of any redelivery, 0 without any.
    max_rewind_ms: int
    #: (value, queue, rewind ms) of the deepest redeliveries, deepest first.
    deepest: tuple[tuple[str, str, int], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "redeliveries": self.redeliveries,
            "maxRewindMs": self.max_rewind_ms,
            "deepest": [{"value": v, "queue": q, "rewindMs": r} for v, q, r in self.deepest],
        }


def check_redelivery(entries: Iterable[Entry], *, sample: int = 10) -> RedeliveryResult:
    """How far back each redelivery rewound its queue (see the module rules)."""
    deliveries = sorted(
        (
            e
            for e in entries
            if isinstance(e, Response)
            and e.op == DEQUEUE
            and e.outcome is Outcome.SUCCESS
            and e.value is not None
        ),
        key=lambda e: e.timestamp_ms,
    )
    first: dict[str, int] = {}
    latest: dict[str, int] = {}
    rewinds: list[tuple[str, str, int]] = []
    for entry in deliveries:
        assert entry.value is not None
        queue = extra_fields(entry.extra).get("queue", "")
        if entry.value not in first:
            first[entry.value] = entry.timestamp_ms
            latest[queue] = entry.timestamp_ms
            continue
        rewind = max(0, latest.get(queue, entry.timestamp_ms) - first[entry.value])
        rewinds.append((entry.value, queue, rewind))
    deepest = sorted(rewinds, key=lambda r: -r[2])[:sample]
    return RedeliveryResult(
        redeliveries=len(rewinds),
        max_rewind_ms=max((r for _, _, r in rewinds), default=0),
        deepest=tuple(deepest),
    )


# --- probes --------------------------------------------------------------------------------


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


# --- verdict -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Expectations:
    """What a scenario promises; ``judge`` turns results into a verdict."""

    #: No acked SEND_OK message may be lost.
    no_loss: bool = True
    #: Messages acked with a degraded status may not be lost either.
    no_degraded_loss: bool = False
    #: Per-key order must hold.
    ordered: bool = False
    #: Every fault's recovery time must be at most this (None: not judged).
    max_recovery_ms: int | None = None
    #: Every unavailability window must end before the history does.
    must_recover: bool = True
    #: Count acks with a degraded status as unavailability (writes are "back" only
    #: when they are SEND_OK again: SyncStateSet shrink scenarios).
    degraded_unavailable: bool = False
    #: A run with fewer acked messages or injected faults proves nothing.
    min_acked: int = 1
    min_faults: int = 1
    #: No SEND_OK ack may come from a deposed master (judged where masters were seen).
    no_deposed_acks: bool = True
    #: At most this many master elections per group (None: not judged).
    max_elections: int | None = None
    #: No redelivery may rewind its queue further than this (None: not judged).
    max_rewind_ms: int | None = None


@attrs.frozen(kw_only=True)
class CheckReport:
    queue: QueueResult
    order: OrderResult
    recovery: RecoveryResult
    latency: LatencyResult
    #: Why the run failed; empty when it passed.
    failures: tuple[str, ...]
    fencing: FencingResult = attrs.field(
        factory=lambda: FencingResult(masters=(), acks_judged=0, deposed=(), deposed_degraded=())
    )
    redelivery: RedeliveryResult = attrs.field(
        factory=lambda: RedeliveryResult(redeliveries=0, max_rewind_ms=0, deepest=())
    )
    probes: tuple[ProbeResult, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": "PASS" if self.ok else "FAIL",
            "failures": list(self.failures),
            "queue": self.queue.to_json(),
            "order": self.order.to_json(),
            "recovery": self.recovery.to_json(),
            "latency": self.latency.to_json(),
            "fencing": self.fencing.to_json(),
            "redelivery": self.redelivery.to_json(),
            "probes": [
                {"name": p.name, "passed": p.passed, "timestamp": p.at_ms, "extra": p.extra}
                for p in self.probes
            ],
        }


def judge_more(
    fencing: FencingResult,
    redelivery: RedeliveryResult,
    probes: Sequence[ProbeResult],
    expect: Expectations,
) -> tuple[str, ...]:
    """Every way fencing, redelivery and probes break ``expect``."""
    out: list[str] = []
    if expect.no_deposed_acks and fencing.deposed:
        d = fencing.deposed[0]
        out.append(
            f"{len(fencing.deposed)} SEND_OK acks from a deposed master, e.g. {d.value} "
            f"acked by {d.store} after {d.master_then} was master at epoch {d.epoch_then}"
        )
    if expect.max_elections is not None:
        many = {g: n for g, n in fencing.elections().items() if n > expect.max_elections}
        if many:
            out.append(f"master elections {many} (at most {expect.max_elections} expected)")
    if expect.max_rewind_ms is not None and redelivery.max_rewind_ms > expect.max_rewind_ms:
        value, queue, rewind = redelivery.deepest[0]
        out.append(
            f"a redelivery rewound {queue} by {rewind} ms (value {value}; at most "
            f"{expect.max_rewind_ms} ms expected)"
        )
    failed = [p for p in probes if not p.passed]
    if failed:
        out.append(f"{len(failed)} probes failed, e.g. {failed[0].name}: {failed[0].extra}")
    return tuple(out)


def judge(
    queue: QueueResult, order: OrderResult, recovery: RecoveryResult, expect: Expectations
) -> tuple[str, ...]:
    """Every way the results break ``expect`` (empty: the run passed)."""
    out: list[str] = []
    if queue.acked < expect.min_acked:
        out.append(f"only {queue.acked} messages acked (need {expect.min_acked})")
    if len(recovery.per_fault) < expect.min_faults:
        out.append(f"only {len(recovery.per_fault)} faults injected (need {expect.min_faults})")
    if expect.no_loss and queue.lost:
        out.append(f"{len(queue.lost)} acked (SEND_OK) messages lost, e.g. {queue.lost[:5]}")
    if expect.no_degraded_loss and queue.lost_degraded:
        out.append(f"{len(queue.lost_degraded)} acked (degraded status) messages lost")
    if queue.unexpected:
        out.append(f"{len(queue.unexpected)} unexpected messages consumed (never sent)")
    if queue.failed_delivered:
        out.append(
            f"{len(queue.failed_delivered)} sends reported FAILURE were consumed, "
            f"e.g. {queue.failed_delivered[:5]}"
        )
    if expect.ordered and order.violations:
        first = order.violations[0]
        out.append(
            f"{len(order.violations)} order violations, e.g. key {first.key}: "
            f"{first.value} delivered after {first.overtaken_by}"
        )
    if expect.must_recover and recovery.unrecovered:
        out.append(f"{recovery.unrecovered} unavailability windows never ended")
    if expect.max_recovery_ms is not None:
        slow = [t for t in recovery.recovery_times_ms() if t > expect.max_recovery_ms]
        if slow:
            out.append(
                f"{len(slow)} faults recovered slower than {expect.max_recovery_ms} ms "
                f"(max {max(slow)} ms)"
            )
    return tuple(out)


def check_history(entries: Sequence[Entry], expect: Expectations | None = None) -> CheckReport:
    """Run every checker over ``entries`` and judge them against ``expect``."""
    expect = expect or Expectations()
    queue = check_queue(entries)
    order = check_order(entries)
    recovery = check_recovery(entries, degraded_unavailable=expect.degraded_unavailable)
    fencing = check_fencing(entries)
    redelivery = check_redelivery(entries)
    probes = check_probes(entries)
    return CheckReport(
        queue=queue,
        order=order,
        recovery=recovery,
        latency=check_latency(entries),
        failures=judge(queue, order, recovery, expect)
        + judge_more(fencing, redelivery, probes, expect),
        fencing=fencing,
        redelivery=redelivery,
        probes=probes,
    )
