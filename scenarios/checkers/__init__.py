"""Checkers over a chaos history: what was lost, duplicated, reordered, unavailable.

One module per checker, after OpenChaos's (anchors.md §2.3-2.4) and Jepsen's
``total-queue``: ``queue`` (lost, duplicated, unexpected, recovered), ``order``,
``recovery`` (unavailability windows per fault), ``latency``, ``fencing`` (acks of deposed
masters, elections), ``redelivery``, ``probes`` and ``loss`` (how long before its fault
each lost message was acked); ``verdict`` runs them all and judges the results against a
scenario's ``Expectations``. Each module states its own rules.

Rules common to all:
- Pure: entries in, frozen results out; no clock, files or randomness.
- Percentiles are ``bench.measure.percentile``: nearest rank, the one definition the
  benchmarks use too (scenarios/ imports bench's pure measuring module, which imports
  nothing of ours).
- This package re-exports the checkers' public names: ``from scenarios.checkers import
  check_history`` is how the harness, the CLI and the tests reach them.
"""

from __future__ import annotations

from bench.measure import percentile
from scenarios.checkers.fencing import (
    REELECTED_SLACK_MS,
    DeposedAck,
    FencingResult,
    MasterSeen,
    check_fencing,
    masters_seen,
)
from scenarios.checkers.latency import E2E_BOUNDS_MS, LatencyResult, check_latency, e2e_bucket
from scenarios.checkers.loss import LossWindowResult, check_loss_window
from scenarios.checkers.order import OrderResult, OrderViolation, check_order
from scenarios.checkers.probes import ProbeResult, check_probes
from scenarios.checkers.queue import SEND_OK, QueueResult, check_queue
from scenarios.checkers.recovery import (
    MERGE_GAP_MS,
    FaultRecovery,
    FaultSpan,
    RecoveryResult,
    Window,
    check_recovery,
    fault_spans,
    unavailability_windows,
)
from scenarios.checkers.redelivery import RedeliveryResult, check_redelivery
from scenarios.checkers.verdict import CheckReport, Expectations, check_history, judge, judge_more

__all__ = [
    "E2E_BOUNDS_MS",
    "MERGE_GAP_MS",
    "REELECTED_SLACK_MS",
    "SEND_OK",
    "CheckReport",
    "DeposedAck",
    "Expectations",
    "FaultRecovery",
    "FaultSpan",
    "FencingResult",
    "LatencyResult",
    "LossWindowResult",
    "MasterSeen",
    "OrderResult",
    "OrderViolation",
    "ProbeResult",
    "QueueResult",
    "RecoveryResult",
    "RedeliveryResult",
    "Window",
    "check_fencing",
    "check_history",
    "check_latency",
    "check_loss_window",
    "check_order",
    "check_probes",
    "check_queue",
    "check_recovery",
    "check_redelivery",
    "e2e_bucket",
    "fault_spans",
    "judge",
    "judge_more",
    "masters_seen",
    "percentile",
    "unavailability_windows",
]
