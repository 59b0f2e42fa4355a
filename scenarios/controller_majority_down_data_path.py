"""Matrix row 8: kill -9 a majority (2 of 3) of the controllers; sends and consumes go on
(the controller is off the data path); no election happens; all recovers after restart.

The master's lease (6 s) runs out while no controller leader can confirm it, but with
allAckInSyncStateSet and other members in its SyncStateSet every ack already waits for
those members, so it keeps acknowledging (``Broker.lease_holds``): RocketMQ's "controller
loss stops failover only". Judged: no acked message lost, no send fails for more than 1 s
in a fault, and the controller names the same master at the same epoch all run long (the
watcher's ``master`` lines: zero elections).
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
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(), targets=("controller-majority",)),
    expect=Expectations(no_loss=True, max_recovery_ms=1_000, max_elections=0),
    notes="Two random controllers of three are killed together and restarted together.",
)
