"""Matrix row 11 (itboon/rocketmq-helm#33, apache/rocketmq#8509, #1094): a topic created
and a group's offsets committed on the master are there on the newly elected master.

The topic is created with 6 queues (an auto-created topic would have 4, so a new master
that lacks it and auto-creates it is told apart). Each fault: read the master's topic
table and the group's offsets (GET_ALL_TOPIC_CONFIG, GET_ALL_CONSUMER_OFFSET), kill -9 it,
wait for the new master, read the same there: the topic with 6 write queues and an offset
for every queue that had one must be there (a ``probe`` line; a failed probe fails the
run). The consumers' own evidence: after a failover they go on from the new master's
committed offsets, so a redelivered message rewinds its queue by at most the offset
commit interval (5 s) plus the slave's metadata copy interval (3 s) plus slack for a
pull in flight and timer phase (4 s): ``max_rewind_ms`` 12 s. Offsets missing on the new
master would rewind to the start of the run (ConsumeFrom.FIRST).
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="topic_offsets_on_new_master",
    summary="controller mode: after a failover the topic and consumer offsets are there",
    matrix_rows=(11,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=2, consumers=1, rate_per_s=20, queues_per_broker=6),
    faults=FaultPlan(kind=KillRestart(probe_new_master=True), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True, max_recovery_ms=10_000, max_rewind_ms=12_000),
    notes="Duplicates are allowed, but only a commit interval's worth per failover.",
)
