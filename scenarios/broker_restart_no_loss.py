"""SIGKILL and restart the only broker (SYNC_FLUSH): every acked message survives.

Single mode: the one broker group is down between the kill and the restart, so sends
fail meanwhile (that window is the recovery time, about the fault's length). With
SYNC_FLUSH a send is acked only after an fsync covered it, so even a power cut would keep
it; a SIGKILL must certainly lose nothing.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="broker_restart_no_loss",
    summary="kill -9 + restart the SYNC_FLUSH broker; acked messages survive",
    modes=("single", "multi-master"),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(), targets=("any-master",)),
    expect=Expectations(no_loss=True),
    notes="Unavailable from the kill until the restarted broker is routed again.",
)
