"""The NameServer's registration limits over real loopback sockets (issue 13 row 10).

Each limit answers REGISTER_BROKER with SYSTEM_ERROR and a remark naming it, logs it, and
leaves the table as it was; everyone else is served. Timing under a 150,000-topic load is
covered with a real process in tests/integration/test_namesrv_big_registrations.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio

from namesrv.registry import RegistryLimits
from namesrv.server import NameServer, NameServerConfig
from protocol.codes import ResponseCode
from protocol.rpc import RemotingClient, open_client
from tests.component.test_namesrv import MASTER_A, get_route
from tests.support import FakeBroker, topic_config

DEADLINE_S = 20.0


@pytest.fixture
async def client() -> AsyncIterator[RemotingClient]:
    async with open_client(name="test-client", default_timeout_s=5.0) as c:
        yield c


async def start(nursery: trio.Nursery, **config: Any) -> tuple[NameServer, str]:
    server = NameServer(NameServerConfig(port=0, **config))
    port = await nursery.start(server.serve)
    return server, f"127.0.0.1:{port}"


def broker_with(
    count: int, *, queues: int = 4, name: str = "broker-big", **extra: Any
) -> FakeBroker:
    return FakeBroker(
        name=name,
        addr=f"127.0.0.1:{20911 + len(name)}",
        topics=tuple(topic_config(f"T{i}", queues) for i in range(count)),
        **extra,
    )


async def assert_refused(
    client: RemotingClient, addr: str, broker: FakeBroker, needle: str, *, compressed: bool
) -> None:
    response = await client.call(addr, broker.register_request(compressed=compressed))
    assert response.code == ResponseCode.SYSTEM_ERROR
    assert needle in (response.remark or ""), response.remark


@pytest.mark.parametrize("compressed", [False, True], ids=["json-body", "compressed-body"])
async def test_too_many_topics_are_refused_and_change_nothing(
    nursery: trio.Nursery,
    client: RemotingClient,
    compressed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = RegistryLimits(max_topics_per_broker=50)
    server, addr = await start(nursery, limits=limits)
    with trio.fail_after(DEADLINE_S), caplog.at_level(logging.WARNING, "namesrv.server"):
        await MASTER_A.register(client, addr)
        await assert_refused(
            client, addr, broker_with(51), "51 topics exceed the limit of 50", compressed=compressed
        )
        assert await get_route(client, addr, "T0") is None
        assert await get_route(client, addr, "TopicA") == MASTER_A.route_json("TopicA")
        await broker_with(50).register(client, addr, compressed=compressed)
        assert await get_route(client, addr, "T49") is not None
    server.registry.check_invariants()
    assert "rejected registration of broker-big" in caplog.text


async def test_queue_counts_beyond_the_route_ceiling_are_refused(
    nursery: trio.Nursery, client: RemotingClient
) -> None:
    _, addr = await start(nursery)
    with trio.fail_after(DEADLINE_S):
        huge = broker_with(3, queues=1_000_000)
        await assert_refused(client, addr, huge, "1000000 read", compressed=True)
        assert await get_route(client, addr, "T0") is None


async def test_brokers_per_cluster_are_bounded(
    nursery: trio.Nursery, client: RemotingClient
) -> None:
    _, addr = await start(nursery, limits=RegistryLimits(max_brokers_per_cluster=2))
    with trio.fail_after(DEADLINE_S):
        await broker_with(1, name="b1").register(client, addr)
        await broker_with(1, name="b22").register(client, addr)
        await assert_refused(
            client, addr, broker_with(1, name="b333"), "max_brokers_per_cluster=2", compressed=False
        )
        other = broker_with(1, name="b4444", cluster="OtherCluster")
        await other.register(client, addr)


async def test_json_register_body_size_and_inflated_size_are_bounded(
    nursery: trio.Nursery, client: RemotingClient
) -> None:
    _, addr = await start(
        nursery, max_register_json_bytes=10_000, max_register_inflated_bytes=20_000
    )
    with trio.fail_after(DEADLINE_S):
        big = broker_with(200)
        await assert_refused(
            client, addr, big, "exceeds 10000 bytes; register compressed", compressed=False
        )
        await big.register(client, addr, compressed=True)  # ~8 KB inflated: fine
        bigger = broker_with(1_000, name="broker-bigger")
        await assert_refused(client, addr, bigger, "inflates past 20000 bytes", compressed=True)


async def test_bad_numbers_get_a_clear_error_and_no_traceback(
    nursery: trio.Nursery, client: RemotingClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Row 12 at a server: a header number beyond its Java type and a 4,300-digit JSON
    integer are answered SYSTEM_ERROR naming the problem (what Java answers for a header
    that fails to decode); nothing is logged as an internal error."""
    _, addr = await start(nursery)
    with trio.fail_after(DEADLINE_S), caplog.at_level(logging.DEBUG):
        request = MASTER_A.register_request()
        bad_id = attrs.evolve(request, ext_fields={**request.ext_fields, "brokerId": str(2**63)})
        response = await client.call(addr, bad_id)
        assert response.code == ResponseCode.SYSTEM_ERROR
        assert "'brokerId' must be an integer fitting a Java long" in (response.remark or "")
        huge = MASTER_A.register_request(body=b'{"filterServerList":' + b"9" * 5000 + b"}")
        response = await client.call(addr, huge)
        assert response.code == ResponseCode.SYSTEM_ERROR
        assert "bad register body" in (response.remark or "")
        await MASTER_A.register(client, addr)  # the connection and server live on
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
