"""Issue 19: the whole broker group loses power at once (controller mode, SYNC_FLUSH,
allAckInSyncStateSet, 3 replicas on powerfs stores); no SEND_OK may be lost.

Every interval all three replicas are SIGKILLed together and each store loses what no
fsync covered; heal: power on and start all three together. The controllers keep
running: they elect a master among the SyncStateSet members that come back, ranked by
epoch and max offset. A SEND_OK was fsynced by the master before it was acked
(SYNC_FLUSH) and stored by every member of the set (allAck), but a slave acks what it
received, not what it fsynced: if the group comes back under a member that lost its
unsynced tail, the others must cut theirs to its log. What this run finds is the verdict.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import PowerLoss
from scenarios.harness import FaultPlan, Scenario
from scenarios.powerfs import POWERFS_BROKER_SETTINGS
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="power_loss_group",
    summary="controller mode, SYNC_FLUSH: the whole group loses power at once; no SEND_OK lost",
    modes=("controller",),
    flush="SYNC_FLUSH",
    power_store=True,
    broker_settings=POWERFS_BROKER_SETTINGS,
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=PowerLoss(scope="group"), targets=("group:broker-a",)),
    expect=Expectations(no_loss=True),
)
