"""Matrix row 2: row 1 with asynchronous replication (inSyncReplicas=1 / ASYNC_MASTER):
acked messages not yet replicated when the master dies may be lost — measured, explained.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="master_kill_async_replication_loss",
    summary="controller mode, async replication: kill -9 the master; loss window measured",
    matrix_rows=(2,),
    modes=("controller",),
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(), targets=("master:broker-a",)),
    # The trade-off is the point: loss is reported, not judged.
    expect=Expectations(no_loss=False),
    missing="harness: async-replica layout in controller mode (ASYNC_MASTER under a "
    "controller) and role discovery from the controller",
    notes="Loss expected > 0: an async master acks before any slave has the message.",
)
