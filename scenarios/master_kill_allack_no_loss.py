"""Matrix row 1: kill -9 the master of one group (1 master + 2 slaves, allAckInSyncStateSet,
SYNC_FLUSH) every interval; the controller elects a slave; nothing SEND_OK is lost.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="master_kill_allack_no_loss",
    summary="controller mode: kill -9 the master repeatedly; a slave is elected; no SEND_OK lost",
    matrix_rows=(1,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(), targets=("master:broker-a",)),
    # anchors.md §1.2 budget: process kill -> new master accepting writes in <= 3 s; the
    # client's route refresh adds a round trip.
    expect=Expectations(no_loss=True, max_recovery_ms=10_000),
)
