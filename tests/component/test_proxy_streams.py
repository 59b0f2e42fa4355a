"""What ONE connection to the gRPC port may hold: at most ``max_streams_per_connection``
calls at once (grpc's ``grpc.max_concurrent_streams``, announced in HTTP/2 SETTINGS).

Without the cap grpc allows any number of streams per connection. Measured against a real
``rmq proxy`` (2 vCPUs): one channel with 20,000 ReceiveMessage long polls made another
client's QueryRoute and SendMessage time out (1 s deadline) or come back CANCELLED for
~20 s (17 of 26 tries failed) and grew the proxy 85 -> 343 MB; one raw HTTP/2 connection
with 400 SendMessage calls, each declaring a 4 MB message and never finishing it, grew
the proxy 238 -> 1628 MB. With the cap at 100: every try of the other client was answered
within 74 ms, the proxy stayed at 92 MB, and 400 such calls were held to 100 (the other
300 reset at once). Here, with a small in-flight cap, the starved client's answer is
TOO_MANY_REQUESTS.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trio

pytest.importorskip("rocketmq.grpc_protocol")

from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as sv
from rocketmq.grpc_protocol import service_pb2_grpc as sv_grpc

from tests.component.sdk_fixtures import wait_until
from tests.component.test_proxy_errors import call, message, proxied, receive_request

DEADLINE_S = 25.0
Code = pb.Code


async def test_one_connection_cannot_take_every_in_flight_slot(tmp_path: Path) -> None:
    """Eight long polls on one connection, four streams allowed per connection, eight
    calls in flight in the proxy: four polls run, four wait in the client for a stream,
    and another client still has slots (without the cap: TOO_MANY_REQUESTS)."""
    cap, polls = 4, 8
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path, max_in_flight=polls, max_streams_per_connection=cap) as (
            c,
            stub,
            server,
        ):
            await c.create_topic("PxT", 1)
            route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"}))
            receive = receive_request(route)
            portal = server.portal
            assert portal is not None
            # Its own connection: grpc would otherwise share one with ``stub``'s channel.
            greedy = grpc.insecure_channel(
                f"127.0.0.1:{server.port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            greedy_stub = sv_grpc.MessagingServiceStub(greedy)
            answers: list[Any] = []

            def poll_once() -> list[Any]:
                for attempt in range(5):
                    try:
                        return list(greedy_stub.ReceiveMessage(receive, timeout=20))
                    except grpc.RpcError as exc:
                        # A call started as another ends can be refused while the proxy
                        # still holds the ended one (grpc's overload protection): retried,
                        # after a pause, as a client backs off (at once, five refusals in
                        # a row happened on a loaded CI machine).
                        if exc.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        time.sleep(0.1 * (attempt + 1))
                raise AssertionError("a long poll was refused five times")

            async def long_poll() -> None:
                answers.extend(await trio.to_thread.run_sync(poll_once))

            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(polls):
                        nursery.start_soon(long_poll)
                    await wait_until(lambda: portal.in_flight >= cap, what="the polls in flight")
                    await trio.sleep(0.5)  # time for every poll to arrive, were there no cap
                    with trio.fail_after(1.0):
                        route = await call(
                            stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"})
                        )
                    assert route.status.code == Code.OK, route.status
                    assert portal.in_flight == cap
                    with trio.fail_after(1.0):
                        sent = await call(
                            stub.SendMessage, sv.SendMessageRequest(messages=[message("PxT")])
                        )
                    assert sent.status.code == Code.OK, sent.status
            except BaseException:
                greedy.close()  # ends the polls' threads at once
                raise
            greedy.close()
            # The polls that waited got their stream in turn: every one was answered.
            statuses = [a.status.code for a in answers if a.HasField("status")]
            expected = [Code.OK] + [Code.MESSAGE_NOT_FOUND] * (polls - 1)
            assert sorted(statuses) == sorted(expected), statuses


def _grpc_headers(authority: str, method: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", f"/apache.rocketmq.v2.MessagingService/{method}"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


async def test_streams_past_the_cap_are_refused_when_a_client_ignores_it(
    tmp_path: Path,
) -> None:
    """A raw HTTP/2 client opens twelve SendMessage calls before it reads the server's
    SETTINGS, each declaring a 1 MiB message it never sends: grpc keeps four and resets
    the other eight at once, and the port serves other clients."""
    cap, opened = 4, 12
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path, max_streams_per_connection=cap) as (c, stub, server):
            await c.create_topic("PxT", 1)
            assert server.port is not None
            authority = f"127.0.0.1:{server.port}"
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            conn = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
            )
            conn.initiate_connection()
            ids: list[int] = []
            for _ in range(opened):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, _grpc_headers(authority, "SendMessage"))
                conn.send_data(sid, b"\x00" + (1 << 20).to_bytes(4, "big"))
                ids.append(sid)
            announced: int | None = None
            reset: dict[int, int] = {}
            try:
                await stream.send_all(conn.data_to_send())
                with trio.move_on_after(5.0):
                    while len(reset) < opened - cap:
                        data = await stream.receive_some(65536)
                        assert data, "the proxy closed the connection"
                        for event in conn.receive_data(data):
                            if isinstance(event, h2.events.RemoteSettingsChanged):
                                changed = event.changed_settings.get(
                                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
                                )
                                announced = None if changed is None else changed.new_value
                            elif isinstance(event, h2.events.StreamReset):
                                reset[event.stream_id] = event.error_code
                        await stream.send_all(conn.data_to_send())  # SETTINGS and PING acks
                assert announced == cap
                assert sorted(reset) == ids[cap:], reset
                assert set(reset.values()) <= {
                    h2.errors.ErrorCodes.REFUSED_STREAM,
                    h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                }, reset
                # The held calls take no one else's place: another client is served.
                route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"}))
                assert route.status.code == Code.OK, route.status
            finally:
                await stream.aclose()
