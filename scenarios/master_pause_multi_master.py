"""SIGSTOP one master for a while, then SIGCONT it; the other group takes the sends.

A paused broker keeps its connections open and answers nothing: clients find out only by
timeouts (3 s a send attempt), unlike a kill that closes the connections at once. Sends
in flight to it have an unknown outcome; they are answered after SIGCONT.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import Pause
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="master_pause_multi_master",
    summary="SIGSTOP/SIGCONT one master; timeouts, then the other group takes the sends",
    modes=("multi-master", "async", "sync"),
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=Pause(), targets=("any-master",)),
    expect=Expectations(no_loss=True),
)
