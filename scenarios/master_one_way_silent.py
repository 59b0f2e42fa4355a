"""Issue 19, separate hosts: a one-way partition — the master still receives everything
but nothing it sends leaves its host (its heartbeats, polls, answers and HA stream).

What happens: to the controllers it is silent, so a slave is elected 1.2 s after its last
heartbeat; the master still hears requests but none of its answers arrive, so producers
see timeouts (unknown outcome) until they read the new route; its lease lapses since no
poll answer can be asked for. Heal: its packets flow again and it rejoins as a slave.
Pass: lost = 0 for SEND_OK.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import LinkCut
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import PARTITION_WORKLOAD

SCENARIO = Scenario(
    name="master_one_way_silent",
    summary="controller mode, separate hosts: the master's outgoing packets dropped; no SEND_OK lost",
    modes=("controller",),
    flush="SYNC_FLUSH",
    netns=True,
    workload=PARTITION_WORKLOAD,
    faults=FaultPlan(kind=LinkCut(peers="all", direction="out"), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
)
