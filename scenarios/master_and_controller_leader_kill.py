"""Matrix row 3 (apache/rocketmq#7689): kill the master and the controller leader at the
same time; the new master must not reuse ConsumeQueue offsets; nothing acked is lost.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="master_and_controller_leader_kill",
    summary="controller mode: kill -9 master + controller leader together (#7689); no loss",
    matrix_rows=(3,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(), targets=("master:broker-a", "controller-leader")),
    expect=Expectations(no_loss=True),
)
