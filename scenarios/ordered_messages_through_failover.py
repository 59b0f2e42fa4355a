"""Matrix row 10: ordered sends by sharding key while the master is killed; per key, the
first deliveries keep the acked order through the failover.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="ordered_messages_through_failover",
    summary="controller mode: orderly send/consume by key across a master kill; order holds",
    matrix_rows=(10,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40, ordered=True),
    faults=FaultPlan(kind=KillRestart(), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True, ordered=True),
)
