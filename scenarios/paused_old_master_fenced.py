"""Matrix row 6: SIGSTOP the master longer than its lease; a new master is elected; after
SIGCONT the old master must not ack a single write (epoch fencing / self-fencing).
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import Pause
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="paused_old_master_fenced",
    summary="controller mode: pause the master past its lease; old master acks nothing after",
    matrix_rows=(6,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=Pause(), targets=("master:broker-a",), duration_s=20),
    expect=Expectations(no_loss=True),
    missing="checker: acks from a deposed master (needs the broker epoch in the send "
    "result's extra info) and controller role discovery in the harness",
)
