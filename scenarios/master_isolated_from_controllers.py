"""Matrix row 7 (apache/rocketmq#7017): the master loses the controllers (proxy partition)
but not its clients; it must stop acking after its lease (self-fencing): no split brain.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import Cut, Partition
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="master_isolated_from_controllers",
    summary="controller mode: cut master<->controllers only; writes fenced, no split brain",
    matrix_rows=(7,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=Partition(cut=Cut.DROP), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
    missing="harness: fault proxies on broker->controller links (proxy_namesrv_links does "
    "it for the NameServer link only)",
)
