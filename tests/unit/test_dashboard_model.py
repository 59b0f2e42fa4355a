"""dashboard/model.py: the timeline of what changed between polls, and throughput."""

from __future__ import annotations

from dashboard.model import (
    BrokerRow,
    ControllerRow,
    Dashboard,
    GroupRow,
    Observation,
    ReplicaRow,
    changes,
    throughput,
)


def _obs(
    now_ms: int, master: int, epoch: int, sss: set[int], alive: set[int], put: int
) -> Observation:
    replicas = tuple(
        ReplicaRow(broker_id=i, address=f"127.0.0.1:{i}", alive=i in alive, in_sync=i in sss)
        for i in (1, 2, 3)
    )
    return Observation(
        now_ms=now_ms,
        namesrv=("127.0.0.1:9876",),
        brokers=(
            BrokerRow(
                cluster="C", broker_name="broker-a", broker_id=0, addr="127.0.0.1:1",
                table={"msgPutTotalTodayNow": str(put), "msgGetTotalTodayNow": "0"},
            ),
        ),
        groups=(
            GroupRow(
                broker_name="broker-a", master_id=master, master_address=f"127.0.0.1:{master}",
                master_epoch=epoch, sync_state_set_epoch=epoch, replicas=replicas,
            ),
        ),
        controllers=(
            ControllerRow(address="a", node_id="n0", is_leader=True, metrics_address=None, samples=None),
        ),
    )  # fmt: skip


def test_a_failover_reads_as_three_plain_events() -> None:
    before = _obs(0, master=1, epoch=1, sss={1, 2, 3}, alive={1, 2, 3}, put=0)
    after = _obs(1000, master=2, epoch=2, sss={2}, alive={2, 3}, put=0)
    assert changes(before, after) == [
        "broker-a-2 (127.0.0.1:2) became master of broker-a at epoch 2",
        "broker-a SyncStateSet is now [2] (epoch 2)",
        "broker-a-1 (127.0.0.1:1) stopped heartbeating",
    ]
    assert changes(after, after) == []


def test_throughput_and_the_state_document() -> None:
    dashboard = Dashboard()
    dashboard.update(_obs(0, 1, 1, {1}, {1}, put=100))
    dashboard.update(_obs(2000, 1, 1, {1}, {1}, put=300))
    dashboard.update(_obs(3000, 1, 1, {1}, {1}, put=50))  # a restart: totals dropped
    state = dashboard.state()
    assert [p["in"] for p in state["throughput"]] == [100.0, 0.0]
    assert state["leader"] == "n0"
    assert state["groups"][0]["syncStateSet"] == [1]
    assert throughput(_obs(5, 1, 1, {1}, {1}, 0), _obs(5, 1, 1, {1}, {1}, 9)) is None
