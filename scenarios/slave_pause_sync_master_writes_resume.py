"""Matrix row 4 (apache/rocketmq PR #9897): a SYNC_MASTER's slave stops answering (SIGSTOP);
sends wait for its ack and time out until the master drops it from its in-sync set
(haMaxTimeSlaveNotCatchup 15 s + a check every 5 s); then writes are answered again.
Nothing acked is lost.

In ``sync`` mode (static roles, as RocketMQ's classic SYNC_MASTER) a master whose slave
left the set answers SLAVE_NOT_AVAILABLE: stored on the master only, a degraded ack; it is
SEND_OK again once the resumed slave caught up. "Writes resume" is judged on any ack. The
topic lives on broker-a only, so the producers cannot dodge the slow group. The client's
deadline (3 s) ends with the master's slave timeout (3 s), so a stalled send is UNKNOWN to
the client rather than FLUSH_SLAVE_TIMEOUT (RocketMQ's defaults are the same 3 s / 3 s).
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import Pause
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="slave_pause_sync_master_writes_resume",
    summary="sync M/S: SIGSTOP a slave; sends stall until the in-sync set shrinks (~20 s)",
    matrix_rows=(4,),
    modes=("sync", "controller"),
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=Pause(), targets=("slave:broker-a",)),
    # One group: the producers cannot dodge the slow master by sending elsewhere.
    topic_on=("broker-a",),
    # 15 s not caught up + a 5 s check period + one in-flight send (3 s) + slack.
    expect=Expectations(no_loss=True, max_recovery_ms=25_000),
    notes="Degraded acks (SLAVE_NOT_AVAILABLE) are stored on the master, not on the slave.",
)
