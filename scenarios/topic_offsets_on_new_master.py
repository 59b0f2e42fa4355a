"""Matrix row 11 (itboon/rocketmq-helm#33, apache/rocketmq#8509): a topic created and a
group's offsets committed on the master are there on the newly elected master.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="topic_offsets_on_new_master",
    summary="controller mode: after a failover the topic and consumer offsets are there",
    matrix_rows=(11,),
    modes=("controller",),
    workload=WorkloadConfig(producers=2, consumers=1, rate_per_s=20),
    faults=FaultPlan(kind=KillRestart(), targets=("master:broker-a",)),
    # Offsets that roll back show up as duplicates; a missing topic as unavailability.
    expect=Expectations(no_loss=True, max_recovery_ms=10_000),
    missing="checker: duplicates bounded by the offset commit interval (a restart from 0 "
    "would pass today's verdict)",
)
