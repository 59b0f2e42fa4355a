"""Issue 19: the master's host is cut off the network (every packet to and from it
dropped: no FIN, no RST, as a pulled cable), on separate hosts; no SEND_OK is lost.

Layout: ``rmq cluster up --mode controller --netns``: 3 controllers, a NameServer and the
3 replicas of broker-a each on its own host (a network namespace on a bridge), the
producers and consumers on the root namespace's address of that bridge.

What happens: the controllers stop hearing the master; 1.2 s after its last heartbeat
(its advertised controllerHeartBeatTimeoutMills) the leader elects a SyncStateSet member.
The cut master's lease (1 s) has run out by then, and its acks need the members that now
follow another master: it answers no SEND_OK. Producers' sends to it time out (unknown
outcome); their next route read names the new master. Heal: the link comes back, the old
master learns the new epoch at its next poll and rejoins as a slave, cutting whatever it
stored alone. Pass: lost = 0 for SEND_OK.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import LinkCut
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import PARTITION_WORKLOAD

SCENARIO = Scenario(
    name="master_netsplit_no_loss",
    summary="controller mode, separate hosts: cut the master's link (all peers); no SEND_OK lost",
    modes=("controller",),
    flush="SYNC_FLUSH",
    netns=True,
    workload=PARTITION_WORKLOAD,
    faults=FaultPlan(kind=LinkCut(peers="all"), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
    notes="A partition, not a crash: the old master lives on, cut off, and rejoins at heal.",
)
