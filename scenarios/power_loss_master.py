"""Issue 19: the master alone loses power (controller mode, SYNC_FLUSH, allAck, 3
replicas on powerfs stores); a slave is elected and nothing SEND_OK is lost.

The master is SIGKILLed and its store loses what no fsync covered; the controllers see its
connections close and elect a SyncStateSet member, which holds every acked message. Heal:
power on, start again; the old master rejoins as a slave, its log cut to the new master's
where they differ.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import PowerLoss
from scenarios.harness import FaultPlan, Scenario
from scenarios.powerfs import POWERFS_BROKER_SETTINGS
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="power_loss_master",
    summary="controller mode, SYNC_FLUSH: the master loses power; no SEND_OK lost",
    modes=("controller",),
    flush="SYNC_FLUSH",
    power_store=True,
    broker_settings=POWERFS_BROKER_SETTINGS,
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=PowerLoss(), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
)
