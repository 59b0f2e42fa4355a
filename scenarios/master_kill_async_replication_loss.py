"""Matrix row 2: row 1 with asynchronous replication (allAckInSyncStateSet=false,
inSyncReplicas=1): acked messages not yet replicated when the master dies are lost —
measured, not judged.

Layout: controller mode (3 controllers, one group of 3 replicas), every broker started with
``allAckInSyncStateSet = false`` and ``inSyncReplicas = 1`` (``rmq cluster up
--broker-set``). In count mode a write needs ``inSyncReplicas - 1 = 0`` slave acks, so the
master answers SEND_OK as soon as it stored (and, SYNC_FLUSH, flushed) the message; the
slaves copy it a moment later. Controller mode always runs the master as SYNC_MASTER, so
this is RocketMQ's ASYNC_MASTER trade-off under a controller.

Where loss comes from: kill -9 the master; the controller elects a SyncStateSet member
whose log ends where its last HA transfer ended. Every message the master acked after that
point exists only on the killed master; when it restarts it becomes a slave of the new
master and truncates its log back to the new epoch's start offset, so those messages are
gone (acked SEND_OK, never consumed: ``lost``). A second effect can add to it: consumers
that had consumed and committed offsets past the new master's end (the old master's
confirm offset follows its own max in count mode) commit an offset the new master has not
reached; messages the new master then writes below that offset are skipped unless the
broker corrects the too-large offset (``OFFSET_OVERFLOW_BADLY`` moves it to the new max,
so the messages written meanwhile are skipped). The report says how many were lost.

Measured (2-core machine, 40 msg/s, 6 kills per 5-minute run): seed 301 (SYNC_FLUSH) and
seed 307 (ASYNC_FLUSH) lost nothing. The window is the replication delay: the master
pushes each append to its slaves at once, and on loopback they hold it well within a
millisecond, while a send arrives every 25 ms; a kill -9 lands in the window a few times
in a hundred. Of the 12 kills one did (seed 301): the killed master held one 240-byte
record no slave had (its restart truncated it), but that send had not been answered yet —
the SDK's retry stored it on the new master — so nothing *acked* was lost. A restarted old
master that truncates nothing (``truncating the CommitLog`` absent from its log) proves
that at that kill every byte it had acked was on the elected slave. Loss grows with the
rate and with replication lag (a slow or distant slave), which this loopback setup lacks.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import KillRestart
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="master_kill_async_replication_loss",
    summary="controller mode, async replication: kill -9 the master; loss window measured",
    matrix_rows=(2,),
    modes=("controller",),
    # ASYNC_FLUSH (RocketMQ's default, and OMB's ASYNC_MASTER deployment): the ack leaves
    # as soon as the message is in the page cache. Under SYNC_FLUSH the ack also waits for
    # the master's own fsync, which the push to the slaves usually beats (seed 301: six
    # kills, nothing lost), so the async window would hardly be measured.
    flush="ASYNC_FLUSH",
    broker_settings=(("allAckInSyncStateSet", False), ("inSyncReplicas", 1)),
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=KillRestart(), targets=("master:broker-a",)),
    # The trade-off is the point: loss is reported, not judged. Recovery is row 1's budget.
    expect=Expectations(no_loss=False, max_recovery_ms=10_000),
    notes="Loss possible: the master acks before any slave has the message "
    "(inSyncReplicas=1); what it acked after the slaves' last transfer dies with it. On "
    "loopback at 40 msg/s that window (well under 1 ms per 25 ms send) is rarely hit.",
)
