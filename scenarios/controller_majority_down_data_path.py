"""Matrix row 8: kill a majority of the controllers; sends and consumes go on (the
controller is off the data path); no failover happens; all recovers after restart.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="controller_majority_down_data_path",
    summary="controller mode: kill a controller majority; the data path keeps working",
    matrix_rows=(8,),
    modes=("controller",),
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(), targets=("controller-majority",)),
    expect=Expectations(no_loss=True, max_recovery_ms=1_000),
    missing="harness: controller-majority target",
)
