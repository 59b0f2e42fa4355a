"""The verdict: every checker over a history, judged against what a scenario promises.

Rules:
- ``check_history`` runs the queue, order, recovery, latency, fencing, redelivery, probe
  and loss-window checkers; ``Expectations`` says which of their findings fail a run, and ``judge`` /
  ``judge_more`` say why (empty: the run passed). A run with too few acks or faults proves
  nothing and fails.
- Pure: entries in, a frozen report out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from scenarios.checkers.fencing import FencingResult, check_fencing
from scenarios.checkers.latency import LatencyResult, check_latency
from scenarios.checkers.loss import LossWindowResult, check_loss_window
from scenarios.checkers.order import OrderResult, check_order
from scenarios.checkers.probes import ProbeResult, check_probes
from scenarios.checkers.queue import QueueResult, check_queue
from scenarios.checkers.recovery import RecoveryResult, check_recovery, fault_spans
from scenarios.checkers.redelivery import RedeliveryResult, check_redelivery
from scenarios.history import Entry, reiterable


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
    loss_window: LossWindowResult = attrs.field(
        factory=lambda: LossWindowResult(per_fault=(), windows_ms=(), before_any_fault=0)
    )

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
            "lossWindow": self.loss_window.to_json(),
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


def check_history(entries: Iterable[Entry], expect: Expectations | None = None) -> CheckReport:
    """Run every checker over ``entries`` and judge them against ``expect``.

    Each checker reads ``entries`` on its own pass: give a list, or a ``HistoryFile`` for a
    history too long to hold (a one-shot iterator is read into a list first).
    """
    entries = reiterable(entries)
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
        loss_window=check_loss_window(entries, queue.lost, fault_spans(entries)),
    )
