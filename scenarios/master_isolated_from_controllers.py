"""Matrix row 7 (apache/rocketmq#7017): the master loses the controllers (a black hole on
its broker -> controller links) but not its clients or slaves; no split-brain acks.

Layout: every broker reaches each controller through a fault proxy of its own (the
harness picks the controllers' ports, starts the proxies, then ``rmq cluster up
--controller-base-port P --broker-controller-addrs NODE=proxies``). The fault cuts all of
the master's controller links (``Partition(DROP)``: connections stay open, nothing moves);
its client port and HA port are untouched.

What happens: the controller hears no heartbeat from M for 10 s, drops it at the next scan
(<= 5 s) and elects a SyncStateSet member; the slaves follow the new master. M's lease
(6 s) runs out, but with allAckInSyncStateSet each of its acks still needs every member of
its set — members that now follow another master — so M cannot answer SEND_OK any more
(its AlterSyncStateSet to drop them cannot reach the controller, and until a change is
confirmed the proposed-out members still count). Pass: lost = 0 for SEND_OK and no SEND_OK
ack from M after the new master was seen; degraded answers of M (stored on M only, not
replicated) are reported apart, as the broker promises nothing for them.

Measured (seed 304, 6 faults): FAIL, 333 SEND_OK messages of the *new* master never
delivered. M, cut from the controllers, never learns it was deposed: it keeps storing
writes and answering SLAVE_NOT_AVAILABLE (1072 such acks after the election; the SDK
takes them as results and keeps its route), and it serves them to consumers, whose
offsets move past them. The new master gives the same ConsumeQueue offsets to other,
fully replicated messages; consumers already past those offsets skip them (apache/rocketmq
#7689's "two messages share a CQ offset", reached here through an isolated master). The
layers: ``broker/server.py`` (``lease_holds``/``_wait_replicated`` let a master past its
lease answer degraded acks; ``_store_config`` does not set ``dispatch_confirmed_only`` in
controller mode, so unreplicated data is readable) — not the harness.
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
    proxy_controller_links=True,
    workload=WorkloadConfig(producers=4, consumers=2, rate_per_s=40),
    faults=FaultPlan(kind=Partition(cut=Cut.DROP), targets=("master:broker-a",)),
    expect=Expectations(no_loss=True),
    notes="The master keeps its clients and slaves; only its controller links are cut.",
)
