"""What the proxy does for each gRPC request, on the Trio side, through the SDK.

Rules:
- The proxy is a client of the cluster like any other: routes from the NameServers
  (``RouteCache``), sends through one SDK ``Producer``, pop consumption through one SDK
  ``SimpleConsumer`` per group, all over remoting. It keeps no message state of its own:
  receipt handles carry everything an ack needs, so any proxy serves any ack.
- Routes answer with the proxy's own endpoint for every queue (cluster mode): clients
  talk to the proxy only; which broker group a queue lives in is the queue's broker name.
- Every call runs under the SDK's deadlines; a receive waits at most its long-polling
  time (capped at ``max_long_poll_s``).
- Groups' consumer objects are created on first use and capped (``max_groups``).
"""

from __future__ import annotations

import json
import logging

import attrs
from rocketmq.grpc_protocol import definition_pb2 as pb

from client.consumer.simple import PoppedMessage, SimpleConsumer
from client.producer import Producer
from client.routes import RouteCache
from protocol.bodies import SubscriptionGroupConfig
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError, SystemBusy
from protocol.route import MASTER_ID, TopicConfig
from protocol.rpc import RemotingClient
from protocol.topic_attributes import message_type
from proxy.convert import (
    BadMessage,
    parse_receipt_handle,
    send_status_code,
    sent_message_type,
    to_sdk_message,
)
from proxy.lookups import SharedLookups
from proxy.transactions import TransactionRelay

log = logging.getLogger(__name__)

#: Longest handshake or idle time a config may give (a day; grpc takes int32 ms).
MAX_TIMEOUT_S = 86_400.0
#: Most calls one gRPC connection may be allowed at once (HTTP/2 settings are 31-bit).
MAX_STREAMS_PER_CONNECTION = 2**31 - 1
#: How long a group's config (FIFO or not, retries) is used before it is read again.
_GROUP_TTL_S = 10.0
#: Longest CHECK_IMMUNITY_TIME a transactional message may ask for (a day).
_MAX_RECOVERY_S = 86_400
#: Message types a topic accepts (topic message types are not checked yet).
ACCEPTED_TYPES = (pb.NORMAL, pb.FIFO, pb.DELAY, pb.TRANSACTION)


@attrs.frozen(kw_only=True)
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 8081
    #: The host clients are told to connect to (QueryRoute's endpoints).
    advertised_host: str = "127.0.0.1"
    namesrv: tuple[str, ...] = ("127.0.0.1:9876",)
    timeout_s: float = 3.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_long_poll_s: float = 20.0
    max_in_flight: int = 10_000
    max_groups: int = 10_000
    #: How often cached routes are read again (a failed request also drops its route).
    route_refresh_s: float = 5.0
    #: Delivery attempts a consumer group gets (RocketMQ: retryMaxTimes 16 + 1).
    max_delivery_attempts: int = 17
    #: PEM certificate chain and key: the gRPC port speaks TLS only (both or neither).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: RocketMQ's plain_acl.yml: ACL 1.0 on the gRPC port (empty: off).
    acl_file: str = ""
    #: Client connections served at once (None: half the descriptor limit, at most
    #: 10,000, as the remoting servers); grpc closes a connection past it at once, so
    #: a flood never takes the descriptors the proxy's own broker connections need.
    max_connections: int | None = None
    #: A connection must finish its handshake (TLS, HTTP/2 preface) within this.
    handshake_timeout_s: float = 10.0
    #: A connection with no call open for this long is closed (GOAWAY; a client
    #: reconnects when it calls again). The 5.x clients keep a telemetry stream open.
    max_idle_s: float = 120.0
    #: Calls (HTTP/2 streams) one connection may have open at once, announced as
    #: SETTINGS_MAX_CONCURRENT_STREAMS: a client's further calls wait in the client for a
    #: slot (one may be refused, retriable: ``proxy/server.py``). Without it one
    #: connection held 20,000 calls: it took the in-flight slots other clients needed,
    #: and each call whose message never ended held up to 4 MB. 1,000 is far past what a
    #: client keeps open (a telemetry stream, a receive per queue, its sends in flight).
    max_streams_per_connection: int = 1_000

    def __attrs_post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")
        if not 1 <= self.max_streams_per_connection <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(
                f"max_streams_per_connection must be in [1, {MAX_STREAMS_PER_CONNECTION}],"
                f" got {self.max_streams_per_connection}"
            )
        for name in ("handshake_timeout_s", "max_idle_s"):
            value = getattr(self, name)
            if not 0 < value <= MAX_TIMEOUT_S:
                raise ValueError(f"{name} must be in (0, {MAX_TIMEOUT_S}] s, got {value}")


@attrs.frozen(kw_only=True)
class SentEntry:
    code: int
    message: str
    message_id: str
    offset: int
    transaction_id: str = ""


class ProxyCore:
    def __init__(
        self,
        config: ProxyConfig,
        *,
        client: RemotingClient,
        routes: RouteCache,
        producer: Producer,
        port: int,
        transactions: TransactionRelay,
    ) -> None:
        self.config = config
        self.client = client
        self.routes = routes
        self.producer = producer
        self.transactions = transactions
        self.port = port
        self._consumers: dict[str, SimpleConsumer] = {}
        self._groups: SharedLookups[str, SubscriptionGroupConfig] = SharedLookups(
            ttl_s=_GROUP_TTL_S, max_entries=config.max_groups
        )
        self._topic_types: SharedLookups[str, str] = SharedLookups(
            ttl_s=_GROUP_TTL_S, max_entries=config.max_groups
        )

    def consumer(self, group: str) -> SimpleConsumer:
        found = self._consumers.get(group)
        if found is None:
            if len(self._consumers) >= self.config.max_groups:
                raise SystemBusy(f"the proxy serves {self.config.max_groups} groups already")
            found = SimpleConsumer(
                self.client,
                self.routes,
                group=group,
                timeout_s=self.config.timeout_s,
                max_message_bytes=self.config.max_body_bytes,
            )
            self._consumers[group] = found
        return found

    def endpoints(self) -> pb.Endpoints:
        out = pb.Endpoints(scheme=pb.IPv4)
        out.addresses.add(host=self.config.advertised_host, port=self.port)
        return out

    async def query_route(self, topic: str, namespace: str) -> list[pb.MessageQueue]:
        info = await self.routes.refresh(topic)
        kind = await self.topic_message_type(topic)
        accepted = ACCEPTED_TYPES if kind == "MIXED" else (pb.MessageType.Value(kind),)
        endpoints = self.endpoints()
        out = []
        for data in sorted(info.route.queue_datas, key=lambda d: d.broker_name):
            if info.master_of(data.broker_name) is None:
                continue
            for queue_id in range(max(data.read_queue_nums, data.write_queue_nums)):
                readable = queue_id < data.read_queue_nums and data.perm & PERM_READ
                writable = queue_id < data.write_queue_nums and data.perm & PERM_WRITE
                permission = (
                    pb.READ_WRITE
                    if readable and writable
                    else pb.READ
                    if readable
                    else pb.WRITE
                    if writable
                    else pb.NONE
                )
                queue = pb.MessageQueue(id=queue_id, permission=permission)
                queue.topic.name = topic
                queue.topic.resource_namespace = namespace
                queue.broker.name = data.broker_name
                queue.broker.id = MASTER_ID
                queue.broker.endpoints.CopyFrom(endpoints)
                queue.accept_message_types.extend(accepted)
                out.append(queue)
        return out

    async def assignments(self, topic: str, namespace: str) -> list[pb.MessageQueue]:
        """QueryAssignment: one readable queue per broker group (the broker picks among its
        queues on each pop, RocketMQ proxy's cluster mode)."""
        queues = await self.query_route(topic, namespace)
        seen: dict[str, pb.MessageQueue] = {}
        for queue in queues:
            if queue.permission in (pb.READ, pb.READ_WRITE):
                seen.setdefault(queue.broker.name, queue)
        return list(seen.values())

    async def group_config(self, group: str, topic: str) -> SubscriptionGroupConfig:
        """The group's config on the topic's first broker group (cached ``_GROUP_TTL_S``,
        one request for a burst of misses); the defaults when no broker has it yet (pops
        create it)."""
        return await self._groups.get(group, lambda: self._read_group_config(group, topic))

    async def _read_group_config(self, group: str, topic: str) -> SubscriptionGroupConfig:
        config = SubscriptionGroupConfig(group_name=group)
        try:
            info = await self.routes.get(topic)
            names = sorted({q.broker_name for q in info.subscribe})
            addr = info.master_of(names[0]) if names else None
            if addr is not None:
                request = RemotingCommand.request(
                    RequestCode.GET_SUBSCRIPTIONGROUP_CONFIG, {"group": group}
                )
                response = await self.client.call(addr, request, timeout_s=self.config.timeout_s)
                if response.code == ResponseCode.SUCCESS:
                    config = SubscriptionGroupConfig.from_bytes(response.body)
        except RocketError as exc:
            log.info("proxy: config of group %s not read (%s); defaults", group, exc)
        return config

    async def topic_message_type(self, topic: str) -> str:
        """The topic's ``message.type`` attribute (NORMAL when unset; cached
        ``_GROUP_TTL_S``, one request for a burst of misses); MIXED (anything goes) when
        no broker could say."""
        return await self._topic_types.get(topic, lambda: self._read_message_type(topic))

    async def _read_message_type(self, topic: str) -> str:
        info = await self.routes.get(topic)
        kind = "MIXED"
        names = sorted(
            {q.broker_name for q in info.publish} | {q.broker_name for q in info.subscribe}
        )
        addr = info.master_of(names[0]) if names else None
        if addr is not None:
            request = RemotingCommand.request(RequestCode.GET_TOPIC_CONFIG, {"topic": topic})
            try:
                response = await self.client.call(addr, request, timeout_s=self.config.timeout_s)
                if response.code == ResponseCode.SUCCESS:
                    kind = message_type(TopicConfig.from_json(json.loads(response.body)).attributes)
            except (RocketError, ValueError) as exc:
                log.info("proxy: type of topic %s not read (%s)", topic, exc)
        return kind

    async def consumer_settings(self, group: str, topics: list[str]) -> tuple[bool, int]:
        """(fifo, max delivery attempts) of a consumer group, for Telemetry's answer."""
        if not topics:
            return False, self.config.max_delivery_attempts
        config = await self.group_config(group, topics[0])
        return config.consume_message_orderly, config.retry_max_times + 1

    async def send(self, messages: list[pb.Message]) -> list[SentEntry]:
        out = []
        for message in messages:
            sdk, group = to_sdk_message(message, max_body_bytes=self.config.max_body_bytes)
            kind = await self.topic_message_type(sdk.topic)
            sent_kind = sent_message_type(message)
            if kind not in ("MIXED", sent_kind):
                raise BadMessage(
                    f"current message type {sent_kind} does not match the accepted message "
                    f"types of topic {sdk.topic}: [{kind}]",
                    api_code=pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
                )
            tx_id = ""
            if sent_kind == "TRANSACTION":
                if group is not None or sdk.deliver_at_ms is not None:
                    raise BadMessage(
                        "a transactional message has no message group and no delivery time",
                        api_code=pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
                    )
                recovery = message.system_properties.orphaned_transaction_recovery_duration
                result, tx_id = await self.transactions.send_half(
                    sdk,
                    recovery_s=max(0, min(recovery.seconds, _MAX_RECOVERY_S)),
                    sharding_key=None,
                )
            else:
                result = await self.producer.send(sdk, sharding_key=group)
            out.append(
                SentEntry(
                    code=send_status_code(result.status),
                    message=result.status.name,
                    message_id=result.msg_id,
                    offset=result.queue_offset,
                    transaction_id=tx_id,
                )
            )
        return out

    async def receive(
        self,
        *,
        group: str,
        topic: str,
        broker_name: str | None,
        batch: int,
        invisible_s: float,
        long_poll_s: float,
        expression: str,
        expression_type: str = "TAG",
    ) -> list[PoppedMessage]:
        consumer = self.consumer(group)
        fifo = (await self.group_config(group, topic)).consume_message_orderly
        return await consumer.receive(
            topic,
            max_nums=max(1, min(batch, 32)),
            invisible_s=invisible_s,
            expression=expression,
            expression_type=expression_type,
            long_poll_s=max(0.0, min(long_poll_s, self.config.max_long_poll_s)),
            order=fifo,
            broker_name=broker_name or None,
        )

    async def ack(self, group: str, topic: str, handle_text: str) -> None:
        handle, _ = parse_receipt_handle(handle_text)
        await self.consumer(group).ack_handle(topic, handle)

    async def change_invisible(
        self, group: str, topic: str, handle_text: str, invisible_s: float
    ) -> str:
        handle, commit_log_offset = parse_receipt_handle(handle_text)
        changed = await self.consumer(group).change_invisible_handle(topic, handle, invisible_s)
        return f"{changed.encode()}|{commit_log_offset}"

    async def forward_to_dlq(
        self, group: str, topic: str, handle_text: str, message_id: str, max_attempts: int
    ) -> None:
        """The client gave up on the message: to ``%DLQ%<group>`` at once, then acked."""
        handle, commit_log_offset = parse_receipt_handle(handle_text)
        consumer = self.consumer(group)
        await consumer.dead_letter(
            topic,
            handle,
            commit_log_offset=commit_log_offset,
            msg_id=message_id,
            max_reconsume_times=max(0, max_attempts - 1),
        )
        await consumer.ack_handle(topic, handle)
