"""Issue 19, power loss of a single broker: what each flush mode promises, measured.

One broker (mode single) whose store is a powerfs mount (``scenarios/powerfs.py``): every
interval it is SIGKILLed and its store loses every write no fsync covered, as a machine
that loses power loses its page cache; heal: power on, start again (recovery cuts the
torn tail). SYNC_FLUSH (this scenario's default flush): a send is acked only after an
fsync covered it, so nothing SEND_OK may be lost. ``--flush ASYNC_FLUSH`` is the same run
against RocketMQ's default, where the ack leaves from the page cache and a 500 ms flush
follows: its loss is measured (``power_loss_single_async_flush``).
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import PowerLoss
from scenarios.harness import FaultPlan, Scenario
from scenarios.powerfs import POWERFS_BROKER_SETTINGS
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="power_loss_single_flush",
    summary="single broker, SYNC_FLUSH, store on powerfs: power off repeatedly; no SEND_OK lost",
    modes=("single",),
    flush="SYNC_FLUSH",
    power_store=True,
    broker_settings=POWERFS_BROKER_SETTINGS,
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=PowerLoss(), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
    notes="Unsynced writes are lost at each power-off; SYNC_FLUSH acks only synced ones.",
)
