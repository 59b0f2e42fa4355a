"""Issue 19, separate hosts: every frame to and from the master waits 200 ms plus up to
50 ms of jitter (a userspace wire on its link, ``scenarios/netdelay.py``: no netem here).

What it shows: a slow link is not a dead one. Heartbeats arrive 200-250 ms late, well
within the 1.2 s timeout, so no election; sends and replication acks take a round trip of
400-500 ms more, so acks slow down but none fails. Pass: lost = 0 for SEND_OK, and the
history's ``master`` lines show no election (``max_elections`` 0).
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import LinkDelay
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import PARTITION_WORKLOAD

SCENARIO = Scenario(
    name="master_link_delay",
    summary="controller mode, separate hosts: 200 ms + 50 ms jitter on the master's link; no election",
    modes=("controller",),
    flush="SYNC_FLUSH",
    netns=True,
    workload=PARTITION_WORKLOAD,
    faults=FaultPlan(kind=LinkDelay(latency_s=0.2, jitter_s=0.05), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True, max_elections=0),
)
