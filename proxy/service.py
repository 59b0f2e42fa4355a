"""apache.rocketmq.v2.MessagingService on the asyncio side: decode, hand to Trio, answer.

Rules (apache/rocketmq-apis service.proto; RocketMQ proxy's GrpcMessagingApplication):
- Each RPC runs its work on the Trio loop through the ``TrioPortal`` and answers with a
  ``Status`` (``proxy/convert.py`` maps our errors to the API's codes); an RPC never fails
  at the gRPC level for a request the API can answer, so clients read the right error.
- Telemetry answers each ``Settings`` the client sends with the settings it will work
  with: the client's own, completed with the server's (retry policy, request timeout,
  body limit, long-polling time). Clients block at start until that answer comes.
- ReceiveMessage streams the messages, then the status (OK, or MESSAGE_NOT_FOUND when
  nothing came within the long-polling time), then the delivery timestamp.
- With ACL on, each call is checked first (``proxy/acl.py``) and a refused one answered
  UNAUTHORIZED or FORBIDDEN, never served.
- Telemetry also carries transaction checks to producers; EndTransaction ends a half
  message (``proxy/transactions.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as sv
from rocketmq.grpc_protocol import service_pb2_grpc as sv_grpc

from protocol.acl_guard import AclGuard
from protocol.errors import RocketError
from proxy import acl
from proxy.bridge import TrioPortal
from proxy.convert import Code, status_for, to_pb_message
from proxy.core import ProxyCore
from proxy.transactions import InvalidTransactionId, ProducerStreams

log = logging.getLogger(__name__)

#: A consumer group's retry delays (RocketMQ's delay levels 1s .. 2h).
RETRY_DELAYS_S = (
    1,
    5,
    10,
    30,
    60,
    120,
    180,
    240,
    300,
    360,
    420,
    480,
    540,
    600,
    1200,
    1800,
    3600,
    7200,
)
#: Telemetry commands waiting to be written to one client (settings replies, checks).
TELEMETRY_QUEUE = 64
#: Invisible time of a receive that names none (a push consumer's auto-renew receive).
DEFAULT_INVISIBLE_S = 30.0


def _status(code: int = Code.OK, message: str = "OK") -> pb.Status:
    return pb.Status(code=code, message=message)


def _failed(exc: Exception) -> pb.Status:
    if not isinstance(exc, RocketError):
        # Not one of our clear errors: a request the code did not expect. Logged with its
        # traceback and worded as the brokers word theirs, so neither side hides it.
        log.error("proxy: a request failed unexpectedly", exc_info=exc)
        return _status(
            Code.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}"[:1000]
        )
    code, message = status_for(exc)
    return _status(code, message[:1000])


def _duration_s(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


class MessagingService(sv_grpc.MessagingServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        portal: TrioPortal,
        core: ProxyCore,
        streams: ProducerStreams,
        guard: AclGuard | None = None,
    ) -> None:
        self.portal = portal
        self.core = core
        self.streams = streams
        #: ACL 1.0 accounts (reloaded by the guard on the Trio side); None: ACL off.
        self.guard = guard

    def refused(self, context: grpc.aio.ServicerContext, needed: acl.Resources) -> pb.Status | None:
        """None when ACL is off or lets the call through; else the status to answer."""
        guard = self.guard
        if guard is None:
            return None
        metadata = {str(k): str(v) for k, v in context.invocation_metadata() or ()}
        why = acl.refusal(guard.config, metadata, acl.peer_host(context.peer()), needed)
        return None if why is None else _status(*why)

    async def QueryRoute(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if (refused := self.refused(context, acl.no_resources(request))) is not None:
            return sv.QueryRouteResponse(status=refused)
        try:
            queues = await self.portal.run(
                self.core.query_route, request.topic.name, request.topic.resource_namespace
            )
        except Exception as exc:
            return sv.QueryRouteResponse(status=_failed(exc))
        return sv.QueryRouteResponse(status=_status(), message_queues=queues)

    async def Heartbeat(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if (refused := self.refused(context, acl.group_resources(request))) is not None:
            return sv.HeartbeatResponse(status=refused)
        return sv.HeartbeatResponse(status=_status())

    async def NotifyClientTermination(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if (refused := self.refused(context, acl.group_resources(request))) is not None:
            return sv.NotifyClientTerminationResponse(status=refused)
        return sv.NotifyClientTerminationResponse(status=_status())

    async def QueryAssignment(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if (refused := self.refused(context, acl.consume_resources(request))) is not None:
            return sv.QueryAssignmentResponse(status=refused)
        try:
            queues = await self.portal.run(
                self.core.assignments, request.topic.name, request.topic.resource_namespace
            )
        except Exception as exc:
            return sv.QueryAssignmentResponse(status=_failed(exc))
        return sv.QueryAssignmentResponse(
            status=_status(), assignments=[pb.Assignment(message_queue=q) for q in queues]
        )

    async def SendMessage(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if (refused := self.refused(context, acl.send_resources(request))) is not None:
            return sv.SendMessageResponse(status=refused)
        if not request.messages:
            return sv.SendMessageResponse(status=_status(Code.BAD_REQUEST, "no message to send"))
        try:
            sent = await self.portal.run(self.core.send, list(request.messages))
        except Exception as exc:
            code, message = status_for(exc)
            code = getattr(exc, "api_code", code)
            return sv.SendMessageResponse(status=_status(code, message[:1000]))
        entries = [
            sv.SendResultEntry(
                status=_status(e.code, e.message),
                message_id=e.message_id,
                offset=e.offset,
                transaction_id=e.transaction_id,
            )
            for e in sent
        ]
        first_bad = next((e for e in sent if e.code != Code.OK), None)
        status = _status() if first_bad is None else _status(first_bad.code, first_bad.message)
        return sv.SendMessageResponse(status=status, entries=entries)

    async def ReceiveMessage(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        if (refused := self.refused(context, acl.receive_resources(request))) is not None:
            yield sv.ReceiveMessageResponse(status=refused)
            return
        invisible_s = _duration_s(request.invisible_duration) or DEFAULT_INVISIBLE_S
        expression = request.filter_expression
        queue = request.message_queue
        try:
            popped = await self.portal.run(
                lambda: self.core.receive(
                    group=request.group.name,
                    topic=queue.topic.name,
                    broker_name=queue.broker.name,
                    batch=request.batch_size or 32,
                    invisible_s=invisible_s,
                    long_poll_s=_duration_s(request.long_polling_timeout),
                    expression=expression.expression or "*",
                    expression_type="SQL92" if expression.type == pb.SQL else "TAG",
                )
            )
        except Exception as exc:
            yield sv.ReceiveMessageResponse(status=_failed(exc))
            return
        for message in popped:
            yield sv.ReceiveMessageResponse(
                message=to_pb_message(
                    message,
                    namespace=queue.topic.resource_namespace,
                    invisible_s=invisible_s,
                )
            )
        if popped:
            yield sv.ReceiveMessageResponse(status=_status())
        else:
            yield sv.ReceiveMessageResponse(
                status=_status(Code.MESSAGE_NOT_FOUND, "no new message")
            )
        now = Timestamp()
        now.GetCurrentTime()
        yield sv.ReceiveMessageResponse(delivery_timestamp=now)

    async def AckMessage(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if (refused := self.refused(context, acl.consume_resources(request))) is not None:
            return sv.AckMessageResponse(status=refused)
        entries = []
        first_bad: pb.Status | None = None
        for entry in request.entries:
            try:
                await self.portal.run(
                    self.core.ack, request.group.name, request.topic.name, entry.receipt_handle
                )
                status = _status()
            except Exception as exc:
                status = _failed(exc)
                first_bad = first_bad or status
            entries.append(
                sv.AckMessageResultEntry(
                    message_id=entry.message_id, receipt_handle=entry.receipt_handle, status=status
                )
            )
        return sv.AckMessageResponse(status=first_bad or _status(), entries=entries)

    async def ChangeInvisibleDuration(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if (refused := self.refused(context, acl.consume_resources(request))) is not None:
            return sv.ChangeInvisibleDurationResponse(status=refused)
        try:
            handle = await self.portal.run(
                self.core.change_invisible,
                request.group.name,
                request.topic.name,
                request.receipt_handle,
                _duration_s(request.invisible_duration),
            )
        except Exception as exc:
            return sv.ChangeInvisibleDurationResponse(status=_failed(exc))
        return sv.ChangeInvisibleDurationResponse(status=_status(), receipt_handle=handle)

    async def ForwardMessageToDeadLetterQueue(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        if (refused := self.refused(context, acl.consume_resources(request))) is not None:
            return sv.ForwardMessageToDeadLetterQueueResponse(status=refused)
        try:
            await self.portal.run(
                self.core.forward_to_dlq,
                request.group.name,
                request.topic.name,
                request.receipt_handle,
                request.message_id,
                request.max_delivery_attempts,
            )
        except Exception as exc:
            return sv.ForwardMessageToDeadLetterQueueResponse(status=_failed(exc))
        return sv.ForwardMessageToDeadLetterQueueResponse(status=_status())

    async def EndTransaction(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if (refused := self.refused(context, acl.end_transaction_resources(request))) is not None:
            return sv.EndTransactionResponse(status=refused)
        try:
            await self.portal.run(
                lambda: self.core.transactions.end(
                    topic=request.topic.name,
                    message_id=request.message_id,
                    transaction_id_text=request.transaction_id,
                    resolution=request.resolution,
                    from_check=request.source == pb.SOURCE_SERVER_CHECK,
                )
            )
        except Exception as exc:
            code, message = status_for(exc)
            if isinstance(exc, InvalidTransactionId):
                code = Code.INVALID_TRANSACTION_ID
            return sv.EndTransactionResponse(status=_status(code, message[:1000]))
        return sv.EndTransactionResponse(status=_status())

    async def Telemetry(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """Answers each Settings; a producer's stream also carries transaction checks
        (``proxy/transactions.py``), so replies and checks share one bounded queue."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Any] = asyncio.Queue(maxsize=TELEMETRY_QUEUE)

        def sink(command: Any) -> bool:
            def put() -> None:
                with contextlib.suppress(asyncio.QueueFull):
                    out.put_nowait(command)

            if out.full():
                return False
            try:
                loop.call_soon_threadsafe(put)
            except RuntimeError:  # the stream's loop is closed
                return False
            return True

        key: int | None = None

        async def read() -> None:
            nonlocal key
            try:
                async for command in request_iterator:
                    if not command.HasField("settings"):
                        continue
                    client = command.settings
                    refused = self.refused(context, acl.settings_resources(client))
                    if refused is not None:
                        await out.put(sv.TelemetryCommand(status=refused))
                        continue
                    if client.client_type == pb.PRODUCER and key is None:
                        topics = frozenset(t.name for t in client.publishing.topics)
                        key = self.streams.add(topics, sink)
                    await out.put(await self.settings_reply(client))
            except Exception as exc:  # the stream broke: end it (the client opens another)
                log.info("proxy: telemetry stream from %s ended: %r", context.peer(), exc)
            # The client half-closed (or the stream broke): the writer ends after what is
            # queued. Not reached when cancelled: the writer is gone then, nobody waits.
            await out.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            reader.cancel()
            self.streams.remove(key)

    async def settings_reply(self, client: Any) -> Any:
        fifo, attempts = False, self.core.config.max_delivery_attempts
        if client.client_type != pb.PRODUCER:
            topics = [s.topic.name for s in client.subscription.subscriptions]
            try:
                fifo, attempts = await self.portal.run(
                    self.core.consumer_settings, client.subscription.group.name, topics
                )
            except Exception as exc:
                return sv.TelemetryCommand(status=_failed(exc))
        return sv.TelemetryCommand(
            status=_status(), settings=self.reply_settings(client, fifo, attempts)
        )

    def reply_settings(self, client: Any, fifo: bool, max_attempts: int) -> Any:
        config = self.core.config
        settings = pb.Settings()
        settings.CopyFrom(client)
        settings.request_timeout.FromMilliseconds(int(config.timeout_s * 1000))
        backoff = settings.backoff_policy
        if client.client_type == pb.PRODUCER:
            backoff.max_attempts = 3
            backoff.exponential_backoff.initial.FromMilliseconds(1000)
            backoff.exponential_backoff.max.FromMilliseconds(60_000)
            backoff.exponential_backoff.multiplier = 2.0
            settings.publishing.max_body_size = config.max_body_bytes
            settings.publishing.validate_message_type = False
        else:
            # A group's retry policy as RocketMQ 5 sends it: the delay levels, customized
            # (push consumers read only this kind; FIFO ones retry locally with it).
            backoff.max_attempts = max_attempts
            backoff.customized_backoff.Clear()
            for seconds in RETRY_DELAYS_S:
                backoff.customized_backoff.next.add().FromSeconds(seconds)
            sub = settings.subscription
            sub.fifo = fifo
            sub.receive_batch_size = 32
            if not sub.long_polling_timeout.seconds:
                sub.long_polling_timeout.seconds = int(config.max_long_poll_s)
        settings.metric.on = False
        return settings
