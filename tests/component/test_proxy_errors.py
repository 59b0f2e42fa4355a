"""rmq proxy's answers to bad requests, in-process: a NameServer, a broker and a
``ProxyServer`` in this Trio process, called over gRPC (grpcio's blocking stub on a worker
thread, so the Trio loop keeps serving). Each answer must carry the apache.rocketmq.v2
code the official clients turn into the right exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import grpc
import pytest
import trio

from client.admin import open_admin
from protocol.errors import ServerError

pytest.importorskip("rocketmq.grpc_protocol")

from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as sv
from rocketmq.grpc_protocol import service_pb2_grpc as sv_grpc

from proxy.acl import sign
from proxy.core import ProxyConfig
from proxy.server import ProxyServer
from tests.component.sdk_fixtures import SdkCluster, sdk_cluster, wait_until

DEADLINE_S = 25.0
Code = pb.Code


@asynccontextmanager
async def proxied(
    tmp_path: Path, **config: Any
) -> AsyncIterator[tuple[SdkCluster, sv_grpc.MessagingServiceStub, ProxyServer]]:
    async with sdk_cluster(tmp_path) as c, trio.open_nursery() as nursery:
        server = ProxyServer(ProxyConfig(port=0, namesrv=(c.namesrv,), **config))
        port = await nursery.start(server.serve)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield c, sv_grpc.MessagingServiceStub(channel), server
        finally:
            channel.close()
            nursery.cancel_scope.cancel()


async def call(fn: Callable[..., Any], request: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: fn(request, timeout=10))


def receive_request(route: Any, *, group: str = "G", long_poll_s: int = 3) -> Any:
    """A ReceiveMessage of one message from the route's first queue, invisible 10 s."""
    return sv.ReceiveMessageRequest(
        group={"name": group},
        message_queue=route.message_queues[0],
        batch_size=1,
        invisible_duration={"seconds": 10},
        long_polling_timeout={"seconds": long_poll_s},
    )


def message(topic: str, body: bytes = b"x", **system: Any) -> pb.Message:
    out = pb.Message(body=body)
    out.topic.name = topic
    out.system_properties.message_id = "01ABC"
    for key, value in system.items():
        setattr(out.system_properties, key, value)
    return out


async def test_bad_requests_get_the_apis_codes(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path) as (c, stub, _):
            await c.create_topic("PxT", 2)
            route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "Nope"}))
            assert route.status.code == Code.TOPIC_NOT_FOUND, route.status
            route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"}))
            assert route.status.code == Code.OK
            assert [(q.broker.name, q.id, q.permission) for q in route.message_queues] == [
                ("broker-a", 0, pb.READ_WRITE),
                ("broker-a", 1, pb.READ_WRITE),
            ]

            sent = await call(
                stub.SendMessage, sv.SendMessageRequest(messages=[message("PxT", body=b"")])
            )
            assert sent.status.code == Code.MESSAGE_BODY_EMPTY, sent.status
            reserved = message("PxT")
            reserved.user_properties["UNIQ_KEY"] = "mine"
            sent = await call(stub.SendMessage, sv.SendMessageRequest(messages=[reserved]))
            assert sent.status.code == Code.ILLEGAL_MESSAGE_PROPERTY_KEY, sent.status
            tx = message("PxT", message_type=pb.TRANSACTION)
            sent = await call(stub.SendMessage, sv.SendMessageRequest(messages=[tx]))
            # A NORMAL topic takes no transactional message (RocketMQ 5's type check).
            assert sent.status.code == Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, sent.status
            for tx_id, resolution, code in (
                ("garbage", pb.COMMIT, Code.INVALID_TRANSACTION_ID),
                ("1|2", pb.COMMIT, Code.INVALID_TRANSACTION_ID),
                ("x|2|broker-a", pb.COMMIT, Code.INVALID_TRANSACTION_ID),
                ("0|0|broker-a", pb.TRANSACTION_RESOLUTION_UNSPECIFIED, Code.BAD_REQUEST),
                # Well formed, but no half message lies there: the broker refuses.
                ("0|0|broker-a", pb.COMMIT, Code.INTERNAL_SERVER_ERROR),
            ):
                ended = await call(
                    stub.EndTransaction,
                    sv.EndTransactionRequest(
                        topic={"name": "PxT"},
                        message_id="01ABC",
                        transaction_id=tx_id,
                        resolution=resolution,
                    ),
                )
                assert ended.status.code == code, (tx_id, ended.status)
            sent = await call(stub.SendMessage, sv.SendMessageRequest(messages=[message("PxT")]))
            assert sent.status.code == Code.OK and sent.entries[0].message_id == "01ABC"

            for handle in ("", "garbage", "1 2 3|4", "1 2 3 4 0 broker-a 0 5|x"):
                acked = await call(
                    stub.AckMessage,
                    sv.AckMessageRequest(
                        group={"name": "G"},
                        topic={"name": "PxT"},
                        entries=[sv.AckMessageEntry(message_id="m", receipt_handle=handle)],
                    ),
                )
                assert acked.status.code == Code.INVALID_RECEIPT_HANDLE, (handle, acked.status)
            changed = await call(
                stub.ChangeInvisibleDuration,
                sv.ChangeInvisibleDurationRequest(
                    group={"name": "G"}, topic={"name": "PxT"}, receipt_handle="nope"
                ),
            )
            assert changed.status.code == Code.INVALID_RECEIPT_HANDLE

            receive = sv.ReceiveMessageRequest(
                group={"name": "G"},
                message_queue=route.message_queues[0],
                filter_expression=pb.FilterExpression(type=pb.SQL, expression="a >>> 1"),
                batch_size=1,
            )
            (answer,) = await call(
                lambda r, timeout: list(stub.ReceiveMessage(r, timeout=timeout)), receive
            )
            assert answer.status.code == Code.ILLEGAL_FILTER_EXPRESSION


@attrs.frozen
class Held:
    answers: list[Any]


async def test_requests_past_the_in_flight_cap_are_told_to_retry(tmp_path: Path) -> None:
    """With one request allowed in flight, a second while a receive long-polls is
    TOO_MANY_REQUESTS at once; the long poll then ends with MESSAGE_NOT_FOUND."""
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path, max_in_flight=1) as (c, stub, server):
            await c.create_topic("PxT", 1)
            route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"}))
            receive = receive_request(route)
            held = Held(answers=[])

            async def long_poll() -> None:
                held.answers.extend(
                    await call(
                        lambda r, timeout: list(stub.ReceiveMessage(r, timeout=timeout)), receive
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                portal = server.portal
                assert portal is not None
                await wait_until(lambda: portal.in_flight == 1, what="the receive in flight")
                sent = await call(
                    stub.SendMessage, sv.SendMessageRequest(messages=[message("PxT")])
                )
                assert sent.status.code == Code.TOO_MANY_REQUESTS, sent.status
            statuses = [a.status.code for a in held.answers if a.HasField("status")]
            assert statuses == [Code.MESSAGE_NOT_FOUND]


async def test_topic_message_types_are_checked_as_rocketmq_5_does(tmp_path: Path) -> None:
    """A topic's +message.type attribute (NORMAL when unset) is what QueryRoute accepts and
    what SendMessage takes: a FIFO message to a NORMAL topic, or a normal one to a FIFO
    topic, is MESSAGE_PROPERTY_CONFLICT_WITH_TYPE."""
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path) as (c, stub, _):
            async with open_admin(c.namesrv) as admin:
                await admin.create_topic("PxNormal", cluster="DefaultCluster")
                await admin.create_topic(
                    "PxFifo", cluster="DefaultCluster", attributes="+message.type=FIFO"
                )
                with pytest.raises(ServerError, match=r"message\.type"):
                    await admin.create_topic(
                        "PxBad", cluster="DefaultCluster", attributes="+message.type=NOPE"
                    )
            for topic, accepted in (("PxNormal", [pb.NORMAL]), ("PxFifo", [pb.FIFO])):
                route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": topic}))
                assert {tuple(q.accept_message_types) for q in route.message_queues} == {
                    tuple(accepted)
                }
            fifo = message("PxNormal", message_type=pb.FIFO, message_group="g")
            normal = message("PxFifo", message_type=pb.NORMAL)
            for wrong in (fifo, normal):
                sent = await call(stub.SendMessage, sv.SendMessageRequest(messages=[wrong]))
                assert sent.status.code == Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, sent.status
            right = message("PxFifo", message_type=pb.FIFO, message_group="g")
            sent = await call(stub.SendMessage, sv.SendMessageRequest(messages=[right]))
            assert sent.status.code == Code.OK, sent.status


PROXY_ACL = """
accounts:
  - accessKey: px_user_key
    secretKey: px_user_secret
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms: ["PxAcl=PUB"]
"""


def signed(access_key: str, secret_key: str, date_time: str = "20261206T070000Z") -> Any:
    """Call metadata as the official clients sign (proxy/acl.py's rules)."""
    signature = sign(secret_key, date_time)
    return (
        ("x-mq-date-time", date_time),
        (
            "authorization",
            f"MQv2-HMAC-SHA1 Credential={access_key}, SignedHeaders=x-mq-date-time, "
            f"Signature={signature}",
        ),
    )


async def test_acl_refusals_are_unauthorized_or_forbidden(tmp_path: Path) -> None:
    """ACL on the gRPC port: no or a bad signature is UNAUTHORIZED, on every RPC and on
    the telemetry stream; a good one lacking the permission is FORBIDDEN; a good one with
    it is served."""
    acl_file = tmp_path / "plain_acl.yml"
    acl_file.write_text(PROXY_ACL)
    acl_file.chmod(0o600)
    user = signed("px_user_key", "px_user_secret")
    with trio.fail_after(DEADLINE_S):
        async with proxied(tmp_path, acl_file=str(acl_file)) as (c, stub, _):
            await c.create_topic("PxAcl", 1)
            route_of = sv.QueryRouteRequest(topic={"name": "PxAcl"})
            for metadata in (
                (),
                signed("nobody_key", "px_user_secret"),
                signed("px_user_key", "wrong_secret"),
                (("authorization", "Basic abc"),),
            ):
                route = await call(
                    lambda r, timeout, m=metadata: stub.QueryRoute(r, timeout=timeout, metadata=m),
                    route_of,
                )
                assert route.status.code == Code.UNAUTHORIZED, (metadata, route.status)
            route = await call(
                lambda r, timeout: stub.QueryRoute(r, timeout=timeout, metadata=user), route_of
            )
            assert route.status.code == Code.OK, route.status

            def send(topic: str) -> Any:
                return lambda r, timeout: stub.SendMessage(
                    sv.SendMessageRequest(messages=[message(topic)]), timeout=timeout, metadata=user
                )

            assert (await call(send("PxAcl"), None)).status.code == Code.OK
            assert (await call(send("PxOther"), None)).status.code == Code.FORBIDDEN
            receive = sv.ReceiveMessageRequest(
                group={"name": "G"}, message_queue=route.message_queues[0], batch_size=1
            )
            (answer,) = await call(
                lambda r, timeout: list(stub.ReceiveMessage(r, timeout=timeout, metadata=user)),
                receive,
            )
            assert answer.status.code == Code.FORBIDDEN  # PUB only on PxAcl
            assert "may not subscribe to topic PxAcl" in answer.status.message

            settings = pb.Settings(client_type=pb.PRODUCER)
            settings.publishing.topics.add(name="PxAcl")
            command = sv.TelemetryCommand(settings=settings)

            def telemetry(metadata: Any) -> Any:
                answers = stub.Telemetry(iter([command]), timeout=10, metadata=metadata)
                return next(iter(answers))

            assert (await call(lambda r, timeout: telemetry(()), None)).status.code == (
                Code.UNAUTHORIZED
            )
            assert (await call(lambda r, timeout: telemetry(user), None)).status.code == Code.OK
