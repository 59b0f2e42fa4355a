"""Matrix row 6: SIGSTOP the master longer than its lease and than the controller's
heartbeat timeout (10 s + a 5 s scan); a new master is elected; after SIGCONT the old
master must not ack a single write.

How it is judged: the harness polls the controller for the group's master every 0.5 s and
writes each change into the history (``master`` lines); every ack names the broker that
stored it (``store=``, from the offset message id). An ack whose call started after the
controller was seen naming another master at a higher epoch than the acker's is an ack of
a deposed master (``checkers.check_fencing``); there must be no SEND_OK one. Right after
each SIGCONT the harness also sends 20 messages straight to the resumed old master (a
producer with a stale route): each answer is in the history and judged the same way.
Acks of the deposed master with a degraded status (SLAVE_NOT_AVAILABLE,
FLUSH_SLAVE_TIMEOUT: "stored here, not replicated as required") are counted apart in
``report.json`` (``fencing.deposedDegradedAckCount``), as the checkers count every
degraded ack: the broker promises nothing for them, and such a message is gone once the
old master rejoins as a slave and truncates to the new epoch.

Why it holds: a paused process reads no clock, but its lease (6 s) is measured on the
monotonic clock that kept running, and a poll answer sent before the pause cannot renew
it; the controller's role push (1008) waits in the socket and is applied on resume; and
with allAckInSyncStateSet every ack needs the SyncStateSet members, which follow the new
master by then.

Measured (seed 303, 6 pauses): PASS — no SEND_OK ack from a deposed master, nothing lost.
But each time the first probe write after SIGCONT was answered SLAVE_NOT_AVAILABLE by the
deposed master (6 degraded acks, all then lost): before its agent applies the role push,
the resumed master is past its lease, yet ``Broker.lease_holds`` still lets it take writes
(allAckInSyncStateSet with other members in its stale set), and with no slave connected
``HAMaster.wait_replicated`` answers NO_SLAVE at once. The next 19 probes were refused.
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import Pause
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="paused_old_master_fenced",
    summary="controller mode: pause the master past its lease; old master acks nothing after",
    matrix_rows=(6,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=Pause(probe_writes=20), targets=("master:broker-a",), duration_s=20),
    # Heartbeat timeout 10 s + scan 5 s + the send timeout in flight (3 s) + a route
    # refresh: writes are back within 30 s of the pause.
    expect=Expectations(no_loss=True, max_recovery_ms=30_000),
    notes="Acks are attributed to brokers by their offset message id; master changes come "
    "from the controller (polled every 0.5 s).",
)
