"""Cut one master's link to the NameServer (through a fault proxy); clients still reach it.

Each broker talks to the NameServer through its own fault proxy. ``refuse`` resets the
link: the NameServer sees the broker's channel close and drops its route, so producers
move to the other group and consumers stop pulling its queues until it registers again
(every 30 s) after the heal; its unconsumed messages wait, nothing acked is lost.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import Cut, Partition
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="namesrv_link_partition",
    summary="reset one master's NameServer link (proxy); route drops, data path goes on",
    modes=("multi-master", "async", "sync"),
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40, drain_timeout_s=90),
    faults=FaultPlan(kind=Partition(cut=Cut.REFUSE), targets=("any-master",)),
    proxy_namesrv_links=True,
    expect=Expectations(no_loss=True, max_recovery_ms=5_000),
)
