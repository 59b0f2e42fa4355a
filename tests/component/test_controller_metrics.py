"""Controller metrics follow what the quorum did: elections, epochs, liveness, requests.

The leader's registry is served over HTTP by the exporter ``rmq controller --metrics-port``
runs (``cli/metrics_http.py``) and scraped as Prometheus would.
"""

from __future__ import annotations

import functools
from pathlib import Path

import trio

from cli.metrics_http import serve_metrics
from controller.metrics import NEW_MASTER_ELECTED
from controller.server import ControllerServer
from protocol.codes import ResponseCode
from tests.component.controller_fixtures import (
    CLUSTER,
    controller_quorum,
    fake_brokers,
    wait_until,
)
from tests.support.scrape import samples, scrape_text, value

TEST_DEADLINE_S = 60.0


async def _exporter(nursery: trio.Nursery, server: ControllerServer) -> str:
    port = await nursery.start(
        functools.partial(serve_metrics, server.metrics.registry, host="127.0.0.1", port=0)
    )
    return f"127.0.0.1:{port}"


async def test_a_failover_moves_election_total_epoch_and_the_failover_histogram(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with (
            controller_quorum(tmp_path) as quorum,
            fake_brokers(quorum, 2) as brokers,
            trio.open_nursery() as nursery,
        ):
            b1, b2 = brokers
            leader = await quorum.leader()
            metrics = await _exporter(nursery, leader)
            assert (await b1.elect()).code == ResponseCode.SUCCESS
            grown = await b1.alter_sync_state_set({1, 2}, master_epoch=1, sss_epoch=1)
            assert grown.code == ResponseCode.SUCCESS
            before = samples(await scrape_text(metrics))
            group = {"cluster": CLUSTER, "broker_set": "broker-a"}
            assert value(before, "rocketmq_controller_role", peer_id=leader.config.node_id) == 1
            assert value(before, "rocketmq_broker_set_master_epoch", **group) == 1
            assert value(before, "rocketmq_broker_set_master_id", **group) == 1
            assert value(before, "rocketmq_sync_state_set_size", **group) == 2
            assert value(before, "rocketmq_sync_state_set_epoch", **group) == 2
            assert value(before, "rocketmq_active_broker_num", **group) == 2
            assert value(before, "rocketmq_broker_alive", broker_id="1", **group) == 1
            elected = functools.partial(
                value, name="rocketmq_election_total", election_result=NEW_MASTER_ELECTED
            )
            assert elected(before) == 1  # broker 1's own ElectMaster
            assert value(
                before, "rocketmq_request_total", request_type="controller_elect_master",
                request_handle_status="success",
            ) == 1  # fmt: skip

            b1.disconnect()  # the master dies: the leader elects broker 2
            await wait_until(
                lambda: any(n.master_broker_id == 2 for n in b2.notices), what="new master"
            )
            after = samples(await scrape_text(metrics))
            assert elected(after) == elected(before) + 1
            assert value(after, "rocketmq_broker_set_master_epoch", **group) == 2
            assert value(after, "rocketmq_broker_set_master_id", **group) == 2
            assert value(after, "rocketmq_sync_state_set_size", **group) == 1
            assert value(after, "rocketmq_broker_alive", broker_id="1", **group) == 0
            assert value(after, "rocketmq_active_broker_num", **group) == 1
            # One failover window observed, as long as the election took (well under 2 s).
            assert value(after, "rocketmq_failover_unavailable_seconds_count", **group) == 1
            took = value(after, "rocketmq_failover_unavailable_seconds_sum", **group)
            assert 0 <= took < 2.0
            # A follower is not the leader, and counts no election of the leader's.
            follower = quorum.followers(leader)[0]
            follower_metrics = await _exporter(nursery, follower)
            seen = samples(await scrape_text(follower_metrics))
            assert value(seen, "rocketmq_controller_role", peer_id=follower.config.node_id) == 0
            assert elected(seen) == 0
            assert value(seen, "rocketmq_broker_set_master_epoch", **group) == 2
            nursery.cancel_scope.cancel()


async def test_exporter_answers_only_metrics(tmp_path: Path) -> None:
    async with controller_quorum(tmp_path, nodes=1) as quorum, trio.open_nursery() as nursery:
        metrics = await _exporter(nursery, await quorum.leader())
        host, port = metrics.split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"GET /secret HTTP/1.1\r\n\r\n")
            reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 404")
        nursery.cancel_scope.cancel()
