"""Kill -9 the broker, leave a torn record at its CommitLog tail, restart: nothing acked lost.

A crash in the middle of a write leaves the first bytes of a record after the last whole
one. Recovery must cut exactly those bytes (keeping a ``.broken`` copy) and keep every
record before them — all of which were acked, flushed (SYNC_FLUSH).
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="commitlog_torn_tail_restart",
    summary="kill -9, tear the CommitLog tail, restart; recovery cuts it, no acked loss",
    modes=("single", "multi-master"),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(tear_tail=True), targets=("any-master",)),
    expect=Expectations(no_loss=True),
)
