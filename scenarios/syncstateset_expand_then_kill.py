"""Matrix row 5 (apache/rocketmq#5663): the SyncStateSet grows {M,T} -> {M,S,T}; the master
dies before the controller acknowledged it (controller leader paused); nobody may be
elected with less than every acked message.

The fault is a sequence (``faults.ExpandThenKill``, target the group): kill -9 an in-sync
slave S and wait for the controller's SyncStateSet to drop it; restart S and, the moment it
took its slave role, SIGSTOP the controller leader, so the master's AlterSyncStateSet for
the expansion hangs; one second later kill -9 the master M. The two other controllers
elect a new Raft leader and then a new master from the committed set. Heal (15 s later):
SIGCONT the old leader, restart M.

What would lose data (#5663): a master that counts acks over the *old* set only while an
expansion is in flight — if the controller committed the expansion but the answer never
reached M, S may be elected without M's last acked writes. Our master counts acks over the
union of the confirmed set and every proposal in flight (``broker/ha/syncstate.py``), so
an ack waits for S as soon as S is proposed. Pass: lost = 0 for SEND_OK, no ack from a
deposed master.

Measured (seed 302, 7 sequences): PASS. In 6 of 7 the master's log shows the expansion
proposed and never confirmed when it was killed; in one of those (the proposal went out
3 ms before the pause) the controller had committed it and elected S — exactly #5663's
case — and nothing was lost. Resuming the old controller leader made it commit "no
master" from its stale liveness table in 4 of 7 (an extra election each; see the report).
"""

from __future__ import annotations

from scenarios.checkers import Expectations
from scenarios.faults import ExpandThenKill
from scenarios.harness import FaultPlan, Scenario
from scenarios.workload import WorkloadConfig

SCENARIO = Scenario(
    name="syncstateset_expand_then_kill",
    summary="controller mode: expand the in-sync set, kill the master mid-change (#5663)",
    matrix_rows=(5,),
    modes=("controller",),
    flush="SYNC_FLUSH",
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=ExpandThenKill(), targets=("group:broker-a",), duration_s=15),
    # Failover waits for a Raft election among the two running controllers first, so
    # recovery is not held to row 1's budget; every window must still end.
    expect=Expectations(no_loss=True),
    notes="Each fault is a sequence: kill+restart a slave, pause the controller leader as "
    "the slave rejoins, kill the master 1 s later (steps are `step` lines in the history).",
)
