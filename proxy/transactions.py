"""Transactional messages through the proxy: half messages, EndTransaction, orphan checks.

Rules (RocketMQ proxy: SendMessageActivity, EndTransactionActivity, ClusterTransactionService,
GrpcClientChannel.writeTelemetryCommand):
- A TRANSACTION message is stored as a half message (``TRAN_MSG=true``) whose producer
  group (``PGROUP``) is its topic, as RocketMQ's proxy does: gRPC clients have no producer
  group, and any proxy with a producer of that topic can then answer the broker's check.
  ``orphaned_transaction_recovery_duration`` becomes CHECK_IMMUNITY_TIME_IN_SECONDS.
- The transaction id handed to the client names the half message:
  ``<commitLogOffset>|<halfQueueOffset>|<brokerName>``; EndTransaction needs nothing else,
  so any proxy serves it (the proxy keeps no transaction state).
- The proxy heartbeats brokers as producer group ``<topic>`` for every topic its connected
  producers publish (at once when a half message went to a broker it had not told, then
  every ``heartbeat_interval_s``), on the connection that serves CHECK_TRANSACTION_STATE.
- A check becomes a Telemetry ``RecoverOrphanedTransactionCommand`` to one producer
  stream publishing the topic (round robin); with none, or its queue full, the check is
  dropped and the broker checks again later. The client's answer is an EndTransaction
  with source TRANSACTION_CHECK (``fromTransactionCheck``).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

import attrs
import trio
from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as sv

from client.message import Message, SendResult
from client.producer import Producer
from client.routes import RouteCache
from client.transaction import call_end_transaction, decode_check
from protocol.bodies import HeartbeatData, ProducerData
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    InvalidParameter,
    MalformedRecord,
    RocketError,
    ServiceNotAvailable,
    error_for_response,
)
from protocol.message import (
    PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS,
    PROPERTY_PGROUP,
    PROPERTY_TRAN_MSG,
    PROPERTY_UNIQ_KEY,
    parse_offset_msg_id,
)
from protocol.rpc import Connection, RemotingClient
from protocol.transaction import (
    EndTransactionRequestHeader,
    LocalTransactionState,
)
from proxy.convert import record_to_pb

log = logging.getLogger(__name__)

#: Longest transaction id accepted (a broker name is at most 127 characters).
MAX_TRANSACTION_ID_CHARS = 200
_MAX_OFFSET = 2**63 - 1

#: A function that hands a Telemetry command to one client stream from any thread;
#: False when the stream cannot take it now (closed or its queue full).
Sink = Callable[[sv.TelemetryCommand], bool]


class InvalidTransactionId(InvalidParameter):
    """A transaction id this proxy did not make."""


def transaction_id(result: SendResult) -> str:
    commit_log_offset = parse_offset_msg_id(result.offset_msg_id)[2]
    return f"{commit_log_offset}|{result.queue_offset}|{result.queue.broker_name}"


def parse_transaction_id(text: str) -> tuple[int, int, str]:
    """(commit log offset, half queue offset, broker name) of a transaction id."""
    parts = text.split("|", 2)
    if len(text) > MAX_TRANSACTION_ID_CHARS or len(parts) != 3 or not parts[2]:
        raise InvalidTransactionId(f"transaction id {text[:80]!r} is not one this proxy made")
    numbers = []
    for part in parts[:2]:
        if not part.isascii() or not part.isdigit() or int(part) > _MAX_OFFSET:
            raise InvalidTransactionId(f"transaction id {text[:80]!r} is not one this proxy made")
        numbers.append(int(part))
    return numbers[0], numbers[1], parts[2]


def half_message(message: Message, recovery_s: int) -> Message:
    """``message`` as the half message to store (producer group = its topic)."""
    props = dict(message.properties)
    props[PROPERTY_TRAN_MSG] = "true"
    props[PROPERTY_PGROUP] = message.topic
    if recovery_s > 0:
        props[PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS] = str(recovery_s)
    return attrs.evolve(message, properties=props)


_RESOLUTIONS = {
    pb.COMMIT: LocalTransactionState.COMMIT_MESSAGE,
    pb.ROLLBACK: LocalTransactionState.ROLLBACK_MESSAGE,
}


class ProducerStreams:
    """Producers' Telemetry streams by topic published; shared by the gRPC thread (which
    adds and removes streams) and the Trio side (which picks one per check)."""

    def __init__(self, *, max_streams: int) -> None:
        self.max_streams = max_streams
        self._lock = threading.Lock()
        self._streams: dict[int, tuple[frozenset[str], Sink]] = {}
        self._ids = itertools.count(1)
        self._turn = itertools.count()

    def add(self, topics: frozenset[str], sink: Sink) -> int | None:
        """Register a stream; None when ``max_streams`` are registered already."""
        with self._lock:
            if len(self._streams) >= self.max_streams:
                return None
            key = next(self._ids)
            self._streams[key] = (topics, sink)
            return key

    def remove(self, key: int | None) -> None:
        with self._lock:
            self._streams.pop(key or 0, None)

    def topics(self) -> frozenset[str]:
        with self._lock:
            return frozenset().union(*(t for t, _ in self._streams.values()))

    def offer(self, topic: str, command: sv.TelemetryCommand) -> bool:
        """Hand ``command`` to one stream publishing ``topic`` (round robin, the next
        one when a stream cannot take it)."""
        with self._lock:
            sinks = [sink for topics, sink in self._streams.values() if topic in topics]
            start = next(self._turn)
        return any(sinks[(start + i) % len(sinks)](command) for i in range(len(sinks)))


class TransactionRelay:
    """The Trio side of transactions: half sends, heartbeats, checks, EndTransaction."""

    def __init__(
        self,
        *,
        client: RemotingClient,
        routes: RouteCache,
        producer: Producer,
        streams: ProducerStreams,
        client_id: str,
        timeout_s: float,
        heartbeat_interval_s: float = 10.0,
    ) -> None:
        self.client = client
        self.routes = routes
        self.producer = producer
        self.streams = streams
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        #: (broker address, producer group) pairs told since the last full heartbeat.
        self._told: set[tuple[str, str]] = set()
        self.checks_relayed = 0
        self.checks_dropped = 0

    async def send_half(
        self, message: Message, *, recovery_s: int, sharding_key: str | None
    ) -> tuple[SendResult, str]:
        """Store the half message; its send result and transaction id."""
        result = await self.producer.send(
            half_message(message, recovery_s), sharding_key=sharding_key
        )
        info = self.routes.cached(message.topic)
        addr = info.master_of(result.queue.broker_name) if info is not None else None
        if addr is not None and (addr, message.topic) not in self._told:
            await self.heartbeat([addr], {message.topic})
        return result, transaction_id(result)

    async def heartbeat(self, addrs: list[str], extra: set[str] | None = None) -> None:
        """HEART_BEAT as producer group <topic> for each published topic, to ``addrs``."""
        groups = sorted(self.streams.topics() | (extra or set()))
        if not groups:
            return
        body = HeartbeatData(
            client_id=self.client_id,
            producer_data_set=tuple(ProducerData(group_name=g) for g in groups),
        ).to_bytes()
        request = RemotingCommand.request(RequestCode.HEART_BEAT, body=body)
        for addr in addrs:
            try:
                await self.client.call(addr, request, timeout_s=self.timeout_s)
            except RocketError as exc:
                log.debug("proxy: transaction heartbeat to %s failed: %s", addr, exc)
                continue
            self._told.update((addr, g) for g in groups)

    async def run_heartbeats(self) -> None:
        while True:
            await trio.sleep(self.heartbeat_interval_s)
            self._told.clear()
            await self.heartbeat(sorted(self.routes.broker_addresses()))

    async def end(
        self,
        *,
        topic: str,
        message_id: str,
        transaction_id_text: str,
        resolution: int,
        from_check: bool,
    ) -> None:
        """END_TRANSACTION to the master of the half message's broker group."""
        commit_log_offset, queue_offset, broker_name = parse_transaction_id(transaction_id_text)
        state = _RESOLUTIONS.get(resolution)
        if state is None:
            raise InvalidParameter(
                f"transaction resolution {resolution} is neither COMMIT nor ROLLBACK"
            )
        header = EndTransactionRequestHeader(
            producer_group=topic,
            tran_state_table_offset=queue_offset,
            commit_log_offset=commit_log_offset,
            commit_or_rollback=state.wire_value,
            msg_id=message_id,
            transaction_id=message_id,
            from_transaction_check=from_check,
            topic=topic,
            broker_name=broker_name,
        )
        response = await call_end_transaction(
            self.client, self.routes, topic, broker_name, header, timeout_s=self.timeout_s
        )
        if response is None:
            raise ServiceNotAvailable(f"broker group {broker_name} has no master now")
        if response.code != ResponseCode.SUCCESS:
            raise error_for_response(response.code, response.remark)

    async def on_check(self, request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
        """CHECK_TRANSACTION_STATE: relay it to a producer of the topic (see the rules)."""
        try:
            header, message = decode_check(request)
        except (RocketError, MalformedRecord, ValueError) as exc:
            log.warning("proxy: malformed CHECK_TRANSACTION_STATE from %s: %s", conn.peer, exc)
            return None
        topic = message.topic
        command = sv.TelemetryCommand()
        recover = command.recover_orphaned_transaction_command
        recover.message.CopyFrom(record_to_pb(message, topic=topic, namespace=""))
        recover.message.system_properties.message_id = (
            message.properties.get(PROPERTY_UNIQ_KEY) or header.msg_id or message.msg_id
        )
        broker_name = header.broker_name or message.queue.broker_name
        recover.transaction_id = (
            f"{header.commit_log_offset}|{header.tran_state_table_offset}|{broker_name}"
        )
        if self.streams.offer(topic, command):
            self.checks_relayed += 1
        else:
            self.checks_dropped += 1
            log.info("proxy: check of a transaction on %s: no producer of it connected", topic)
        return None
