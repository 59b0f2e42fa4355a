"""A burst of calls for a group or topic the proxy has not read yet asks the broker once
(proxy/lookups.py). Before, each call that missed the cache sent its own
GET_SUBSCRIPTIONGROUP_CONFIG (or GET_TOPIC_CONFIG): a flood of receives of a new group
sent thousands at the broker at once, and they timed out there after 3 s."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

pytest.importorskip("rocketmq.grpc_protocol")

from rocketmq.grpc_protocol import service_pb2 as sv

from protocol.codes import RequestCode
from tests.component.test_proxy_errors import call, message, proxied, receive_request

DEADLINE_S = 30.0
CALLS = 20


def requests_seen(table: dict[tuple[int, int], tuple[tuple[int, ...], float]], code: int) -> int:
    """Requests of ``code`` the broker answered, whatever the answer (RpcLatency's table)."""
    return sum(sum(counts) for (request, _), (counts, _ms) in table.items() if request == code)


async def test_a_burst_of_new_receives_and_sends_reads_each_config_once(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path) as (c, stub, _server):
            await c.create_topic("PxT", 1)
            route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"}))
            latency = c.broker("broker-a").rpc_latency
            receive = receive_request(route, group="NewGroup", long_poll_s=1)
            send = sv.SendMessageRequest(messages=[message("PxT")])
            answers: list[int] = []

            async def receive_once() -> None:
                for answer in await call(
                    lambda r, timeout: list(stub.ReceiveMessage(r, timeout=timeout)), receive
                ):
                    if answer.HasField("status"):
                        answers.append(answer.status.code)

            async def send_once() -> None:
                answers.append((await call(stub.SendMessage, send)).status.code)

            async with trio.open_nursery() as nursery:
                for _ in range(CALLS):
                    nursery.start_soon(receive_once)
                    nursery.start_soon(send_once)
            table = latency.table()
            assert requests_seen(table, RequestCode.GET_SUBSCRIPTIONGROUP_CONFIG) == 1
            assert requests_seen(table, RequestCode.GET_TOPIC_CONFIG) == 1
            assert len(answers) == 2 * CALLS, answers
