"""Hostile gRPC requests to ``rmq proxy``: every unary RPC of apache.rocketmq.v2's
MessagingService and ReceiveMessage, each request filled at random from its protobuf
descriptor (names that exist and names that cannot, numbers at their type's ends,
unknown enum values, real receipt handles with a part swapped). Every answer must be a
status from the API (never a gRPC failure, never "internal error"), and the proxy must
serve a normal send afterwards.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio

pytest.importorskip("rocketmq.grpc_protocol")

from google.protobuf.descriptor import FieldDescriptor
from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as sv

from tests.component.test_proxy_errors import call, message, proxied
from tests.fuzz.live_requests import HOSTILE_TEXT

REQUESTS = 1_500
UNARY = (
    "QueryRoute", "Heartbeat", "SendMessage", "QueryAssignment", "AckMessage",
    "ForwardMessageToDeadLetterQueue", "EndTransaction", "NotifyClientTermination",
    "ChangeInvisibleDuration",
)  # fmt: skip
#: protobuf strings must be UTF-8: the lone surrogate stays in the remoting fuzz.
TEXT = [t for t in HOSTILE_TEXT if "\ud800" not in t] + ["PxT", "G", "a > 1", "*", ""]
INT32 = (0, 1, -1, 2, 7, 2**31 - 1, -(2**31), 65536)
INT64 = (*INT32, 2**63 - 1, -(2**63), 10**15)
FD = FieldDescriptor


class Filler:
    def __init__(self, rng: random.Random, handles: list[str]) -> None:
        self.rng = rng
        self.handles = handles

    def text(self, field: Any) -> str:
        rng = self.rng
        if field.name == "name" and rng.random() < 0.7:
            return rng.choice(["PxT", "PxT", "G", "broker-a"])
        if field.name == "resource_namespace" and rng.random() < 0.8:
            return ""
        if field.name == "receipt_handle" and self.handles and rng.random() < 0.7:
            head, _, tail = rng.choice(self.handles).rpartition("|")
            parts = head.split(" ")
            parts[rng.randrange(len(parts))] = rng.choice(
                ["0", "1", "7", "2147483647", "9223372036854775807", "x", ""]
            )
            return " ".join(parts) + "|" + rng.choice([tail, "0", "9999999999999999999"])
        return rng.choice(TEXT)

    def scalar(self, field: Any) -> Any:
        rng, kind = self.rng, field.type
        if kind == FD.TYPE_STRING:
            return self.text(field)
        if kind == FD.TYPE_BYTES:
            return rng.choice([b"", b"x", rng.randbytes(rng.randint(1, 64)), b"\x00" * 5000])
        if kind == FD.TYPE_BOOL:
            return rng.random() < 0.5
        if kind == FD.TYPE_ENUM:
            return rng.choice([v.number for v in field.enum_type.values] + [99, -1])
        if kind in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
            return rng.choice(INT32)
        if kind in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
            return rng.choice(INT64)
        if kind in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
            return rng.choice([0, 1, 2**32 - 1])
        if kind in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
            return rng.choice([0, 1, 2**64 - 1])
        return rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e300])

    def fill(self, msg: Any, depth: int = 0) -> Any:
        rng = self.rng
        for field in msg.DESCRIPTOR.fields:
            if rng.random() < 0.3:
                continue
            entry = field.message_type
            if field.is_repeated and entry is not None and entry.GetOptions().map_entry:
                value_field = entry.fields_by_name["value"]
                mapping = getattr(msg, field.name)
                for _ in range(rng.randint(0, 3)):
                    key = self.scalar(entry.fields_by_name["key"])
                    if value_field.type != FD.TYPE_MESSAGE:
                        mapping[key] = self.scalar(value_field)
                    elif depth < 3:
                        self.fill(mapping[key], depth + 1)
            elif field.is_repeated and field.type == FD.TYPE_MESSAGE:
                for _ in range(rng.randint(0, 3) if depth < 3 else 0):
                    self.fill(getattr(msg, field.name).add(), depth + 1)
            elif field.is_repeated:
                getattr(msg, field.name).extend(
                    self.scalar(field) for _ in range(rng.randint(0, 3))
                )
            elif field.type == FD.TYPE_MESSAGE:
                if depth < 4:
                    self.fill(getattr(msg, field.name), depth + 1)
            else:
                setattr(msg, field.name, self.scalar(field))
        return msg


async def _receive(stub: Any, request: Any) -> list[Any]:
    return await trio.to_thread.run_sync(lambda: list(stub.ReceiveMessage(request, timeout=5)))


async def test_every_rpc_answers_hostile_requests_with_an_api_status(tmp_path: Path) -> None:
    rng = random.Random(11)
    findings: list[str] = []
    with trio.fail_after(120):
        async with proxied(tmp_path) as (c, stub, _):
            await c.create_topic("PxT", 2)
            for _ in range(10):
                await call(stub.SendMessage, sv.SendMessageRequest(messages=[message("PxT")]))
            route = await call(stub.QueryRoute, sv.QueryRouteRequest(topic={"name": "PxT"}))
            handles: list[str] = []
            for queue in route.message_queues:
                receive = sv.ReceiveMessageRequest(
                    group={"name": "G"},
                    message_queue=queue,
                    batch_size=8,
                    filter_expression=pb.FilterExpression(type=pb.TAG, expression="*"),
                )
                receive.invisible_duration.seconds = 1
                receive.long_polling_timeout.seconds = 1
                handles += [
                    a.message.system_properties.receipt_handle
                    for a in await _receive(stub, receive)
                    if a.HasField("message")
                ]
            assert handles
            filler = Filler(rng, handles)
            for _ in range(REQUESTS):
                name = rng.choice((*UNARY, "ReceiveMessage"))
                request = filler.fill(getattr(sv, f"{name}Request")())
                try:
                    if name == "ReceiveMessage":
                        request.long_polling_timeout.seconds = 0
                        request.long_polling_timeout.nanos = 0
                        answers = await _receive(stub, request)
                        statuses = [a.status for a in answers if a.HasField("status")]
                    else:
                        statuses = [(await call(getattr(stub, name), request)).status]
                except grpc.RpcError as exc:
                    findings.append(f"{name}: {exc.code()} {exc.details()} | {request}"[:600])
                    continue
                findings += [
                    f"{name}: {s.message} | {request}"[:600]
                    for s in statuses
                    if s.message.startswith("internal error")
                ]
            assert not findings, "\n".join(findings)
            sent = await call(stub.SendMessage, sv.SendMessageRequest(messages=[message("PxT")]))
            assert sent.status.code == pb.Code.OK
