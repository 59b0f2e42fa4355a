"""Issue 19, separate hosts: the master keeps its clients and the controllers but loses its
slaves (packets between its host and theirs are dropped).

What happens: no election (the controllers hear every replica). The HA connections are
silent, not closed, so synchronous writes wait for acks that cannot come and end
FLUSH_SLAVE_TIMEOUT (stored, not replicated) until the master drops the silent slaves from
its SyncStateSet (haMaxTimeSlaveNotCatchup, 15 s, checked every 5 s) and the controller
confirms it; from then its acks are SEND_OK again on a set of one. Heal: the slaves
reconnect, catch up, and the set grows back. Pass: lost = 0 for SEND_OK.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import LinkCut
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import PARTITION_WORKLOAD

SCENARIO = Scenario(
    name="master_cut_from_slaves",
    summary="controller mode, separate hosts: cut master<->slaves only; no SEND_OK lost",
    modes=("controller",),
    flush="SYNC_FLUSH",
    netns=True,
    workload=PARTITION_WORKLOAD,
    faults=FaultPlan(kind=LinkCut(peers="group"), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
    notes="No election: the set shrinks to the master after haMaxTimeSlaveNotCatchup.",
)
