"""Issue 19, power loss of a single ASYNC_FLUSH broker: the loss RocketMQ's default flush
mode allows, measured (not judged).

As ``power_loss_single_flush`` with ASYNC_FLUSH: a send is acked once its message is in
the page cache and a background fsync follows every 500 ms, so a power-off loses what was
acked since the last one (RocketMQ: "ASYNC_FLUSH ... may lose a small amount of data when
the machine loses power"; a process crash alone loses nothing, the page cache survives).
The verdict reports the acked messages lost; it does not fail on them.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import PowerLoss
from scenarios.harness import FaultPlan, Scenario
from scenarios.powerfs import POWERFS_BROKER_SETTINGS
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="power_loss_single_async_flush",
    summary="single broker, ASYNC_FLUSH, store on powerfs: power off; acked loss measured",
    modes=("single",),
    flush="ASYNC_FLUSH",
    power_store=True,
    broker_settings=POWERFS_BROKER_SETTINGS,
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=PowerLoss(), targets=("master:broker-a",)),
    expect=Expectations(no_loss=False),
    notes="Loss expected: up to one flush interval (500 ms) of acked sends per power-off.",
)
