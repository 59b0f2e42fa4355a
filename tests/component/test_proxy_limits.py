"""The gRPC port against a flood of idle connections (``rmq proxy``, issue 13's row 3 for
the proxy): grpc core's connection cap, handshake deadline and idle time, over real
loopback sockets with a real broker behind the proxy.

Before the limits a connection that never sent a byte was held 120 s, so ~20,000 of them
took every descriptor of the process: no client got in and grpc logged "File descriptor
limit reached" every second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

pytest.importorskip("rocketmq.grpc_protocol")

from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as sv

from proxy.core import ProxyConfig
from proxy.server import grpc_server_options
from tests.component.test_proxy_errors import call, proxied
from tests.component.test_rpc import seconds_until_closed

DEADLINE_S = 25.0
Code = pb.Code


async def test_idle_connections_past_the_cap_are_closed_and_the_rest_time_out(
    tmp_path: Path,
) -> None:
    cap, flood = 8, 40
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path, max_connections=cap, handshake_timeout_s=1.0) as (
            c,
            stub,
            server,
        ):
            await c.create_topic("PxT", 2)
            assert server.port is not None
            streams = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(flood)]
            try:
                # Past the cap each is closed at once; within it, after the handshake time.
                async with trio.open_nursery() as nursery:
                    waits: list[float | None] = []

                    async def watch(stream: trio.SocketStream) -> None:
                        waits.append(await seconds_until_closed(stream, 5.0))

                    for stream in streams:
                        nursery.start_soon(watch, stream)
            finally:
                for stream in streams:
                    await stream.aclose()
            assert None not in waits, waits  # every one was closed by the server
            at_once = [w for w in waits if w is not None and w < 0.5]
            timed_out = [w for w in waits if w is not None and w >= 0.5]
            assert len(at_once) >= flood - cap, waits
            assert timed_out and all(0.8 <= w < 3.0 for w in timed_out), waits
            # The flood is gone: a client is served.
            route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"}))
            assert route.status.code == Code.OK, route.status


async def test_an_idle_client_connection_is_closed_and_the_client_calls_again(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path, max_idle_s=0.5) as (c, stub, _):
            await c.create_topic("PxT", 2)
            for _ in range(3):
                route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"}))
                assert route.status.code == Code.OK, route.status
                await trio.sleep(1.0)  # idle past max_idle_s: grpc sends GOAWAY


def test_grpc_options_follow_the_config_and_the_descriptor_limit() -> None:
    options = dict(grpc_server_options(ProxyConfig(), 20_000))
    assert options == {
        "grpc.max_allowed_incoming_connections": 10_000,
        "grpc.server_handshake_timeout_ms": 10_000,
        "grpc.max_connection_idle_ms": 120_000,
        "grpc.max_concurrent_streams": 1_000,
        "grpc.http.overload_protection": 1,
    }
    assert (
        dict(grpc_server_options(ProxyConfig(), 1024))["grpc.max_allowed_incoming_connections"]
        == 512
    )
    assert (
        dict(grpc_server_options(ProxyConfig(max_connections=3), 1024))[
            "grpc.max_allowed_incoming_connections"
        ]
        == 3
    )
    assert (
        dict(grpc_server_options(ProxyConfig(max_streams_per_connection=7), 1024))[
            "grpc.max_concurrent_streams"
        ]
        == 7
    )
    for bad in (
        {"max_connections": 0},
        {"handshake_timeout_s": 0},
        {"max_idle_s": 1e9},
        {"max_streams_per_connection": 0},
        {"max_streams_per_connection": 2**31},
    ):
        with pytest.raises(ValueError):
            ProxyConfig(**bad)  # type: ignore[arg-type]
