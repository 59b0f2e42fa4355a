"""Issue 19, separate hosts: 20% of the packets on the master's link are lost (each
direction, every peer). TCP retransmits them (from 200 ms, doubling), so heartbeats,
polls, HA acks and sends arrive late and in bursts; no connection breaks.

What it shows: whether 1.2 s liveness survives a lossy link without a spurious election
(the history's ``master`` lines count elections) and that nothing acked is lost either way.
Pass: lost = 0 for SEND_OK.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import LinkCut
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import PARTITION_WORKLOAD

SCENARIO = Scenario(
    name="master_link_loss",
    summary="controller mode, separate hosts: 20% packet loss on the master's link; no SEND_OK lost",
    modes=("controller",),
    flush="SYNC_FLUSH",
    netns=True,
    workload=PARTITION_WORKLOAD,
    faults=FaultPlan(kind=LinkCut(peers="all", probability=0.2), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
)
