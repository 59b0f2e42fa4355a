"""apache/rocketmq#4800 on separate hosts: the master keeps its clients and its slaves but
loses every controller (its packets to and from the controllers' hosts are dropped).

What happens: the controllers stop hearing the master and elect a slave (that slave still
hears them); the new master registers with the NameServer at a higher epoch, so routes
move to it. The old master keeps serving the clients whose routes still name it: its lease
lapses, and while every ack of it still waits for SyncStateSet members (allAck) that now
follow another master, it can answer no SEND_OK — RocketMQ's #4800 dual master acked on.
Heal: it reaches the controllers again, learns the new epoch and rejoins as a slave.
Pass: lost = 0 for SEND_OK; degraded answers of the cut master are counted apart.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import LinkCut
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import PARTITION_WORKLOAD

SCENARIO = Scenario(
    name="master_cut_from_controllers",
    summary="controller mode, separate hosts: cut master<->controllers only (#4800); no SEND_OK lost",
    matrix_rows=(7,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    netns=True,
    workload=PARTITION_WORKLOAD,
    faults=FaultPlan(kind=LinkCut(peers="controllers"), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
    notes="The master keeps its clients and slaves; only its controller links are cut.",
)
