"""Matrix row 5 (apache/rocketmq#5663): the SyncStateSet grows {A}->{A,B}; the master dies
before the controller acknowledged it (controller leader paused); B must not be elected
with less than every acked message.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="syncstateset_expand_then_kill",
    summary="controller mode: expand the in-sync set, kill the master mid-change (#5663)",
    matrix_rows=(5,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
    missing="harness: a fault sequence (restart a slave so it rejoins, pause the controller "
    "leader, then kill the master); FaultPlan takes one kind today",
)
