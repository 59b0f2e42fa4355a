"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE (320), CONSUMER_SEND_MSG_BACK (36).

Rules (reference/rocketmq-wire.md §2.3, §2.10, §3.10; SendMessageProcessor.java):
- Only a writable master stores; anything else answers before writing.
- A send is answered after its records are in the CommitLog, and, in SYNC_FLUSH, after
  one group fsync covers them (FLUSH_DISK_TIMEOUT past the deadline: stored, not durable),
  and, for a SYNC_MASTER, after the replicas acked (the broker's ``replication`` hook).
- ``%RETRY%<group>`` sends past their max reconsume times go to ``%DLQ%<group>``; a
  ``DELAY`` level parks the message in SCHEDULE_TOPIC_XXXX until it is due, a timer
  property in rmq_sys_wheel_timer (``broker/timerstore.py``).
- The broker adds ``UNIQ_KEY`` when the client did not (ali-ons never does) and ``CLUSTER``.
- Sizes are checked before anything is decoded, created or stored: a body (a batch's
  whole encoded body) over ``maxMessageSize`` and a batch of more than
  ``maxBatchMessageNums`` messages are MESSAGE_ILLEGAL, which producers do not retry.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import struct
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from broker.config import BrokerConfig
from broker.processors.checks import queue_count
from broker.store.results import PUT_OK, SCHEDULE_TOPIC, AppendResult, PutStatus
from broker.store.store import MessageStore
from broker.timers import TIMER_PROPERTIES
from broker.timerstore import TimerService
from broker.topics import (
    NOT_ALLOWED_SEND_TOPICS,
    TopicConfigManager,
    dlq_topic,
    retry_topic,
    validate_topic,
)
from broker.transaction.state import half_record, is_half_request
from protocol.batch_body import decode_batch_body, split_batch_body
from protocol.bodies import SubscriptionGroupConfig
from protocol.codes import PERM_WRITE, VERSION_V3_4_9, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    DiskFull,
    InvalidParameter,
    MessageIllegal,
    NoPermission,
    ProtocolError,
    ServiceNotAvailable,
    StorageError,
    SubscriptionGroupNotExist,
    TopicNotExist,
)
from protocol.group_topics import group_of_retry_topic, is_retry_topic
from protocol.headers import (
    ConsumerSendMsgBackRequestHeader,
    SendMessageRequestHeader,
    SendMessageRequestHeaderV2,
)
from protocol.message import (
    MAX_PROPERTIES_BYTES,
    PROPERTY_CLUSTER,
    PROPERTY_DELAY,
    PROPERTY_MAX_RECONSUME_TIMES,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_REAL_QID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_RETRY_TOPIC,
    PROPERTY_START_DELIVER_TIME,
    PROPERTY_TRAN_MSG,
    PROPERTY_UNIQ_KEY,
    PROPERTY_WAIT,
    SYSFLAG_TRANSACTION_COMMIT_TYPE,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_NOT_TYPE,
    MessageRecord,
    decode_record,
    encode_record_fields,
    properties_from_string,
)
from protocol.record_wire import (
    canonical_pairs,
    completed_properties,
    encode_record_from_wire,
    record_properties_encoded,
)
from protocol.route import TopicConfig
from protocol.rpc import Connection, Handler, LaterAnswer

log = logging.getLogger(__name__)

_INT32 = struct.Struct(">i")
_SEND_BATCH_MESSAGE = int(RequestCode.SEND_BATCH_MESSAGE)
_SUCCESS = int(ResponseCode.SUCCESS)  # a global: an Enum class's member costs ~90 ns a read
#: ``validate_topic`` by topic name (pure; a busy broker sees few names, so most sends
#: skip its regex). Bounded: a client inventing names only evicts.
_topic_problem = functools.lru_cache(maxsize=4096)(validate_topic)


def peer_host(conn: Connection) -> tuple[str, int]:
    """The client's IPv4 address and port for BORNHOST (IPv4-mapped IPv6 unwrapped)."""
    return _peer_host(conn.peer)


@functools.lru_cache(maxsize=4096)
def _peer_host(peer: str) -> tuple[str, int]:
    # Cached by the peer string: an ipaddress parse was 6 % of the broker's time per send.
    # Bounded, and a connection's peer never changes, so the cache only saves work.
    host, _, port = peer.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return ("127.0.0.1", 0)
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ipaddress.IPv4Address("127.0.0.1")
    return (str(ip), int(port) if port.isascii() and port.isdigit() else 0)


class BrokerForSend(Protocol):
    """What ``SendProcessor`` uses of its broker (``Broker`` satisfies it structurally)."""

    @property
    def config(self) -> BrokerConfig: ...
    @property
    def address(self) -> str: ...
    @property
    def store_host(self) -> tuple[str, int]: ...
    @property
    def broker_perm(self) -> int: ...
    @property
    def accepts_writes(self) -> bool: ...
    @property
    def role_description(self) -> str: ...
    @property
    def max_delay_level(self) -> int: ...
    @property
    def timers(self) -> TimerService: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def store(self) -> MessageStore: ...
    def find_group(self, group: str) -> SubscriptionGroupConfig | None: ...
    def auto_create_topic(
        self, topic: str, default_topic: str, queue_nums: int
    ) -> TopicConfig | None: ...
    def create_retry_topic(self, group: str) -> TopicConfig: ...
    def create_dlq_topic(self, group: str) -> TopicConfig: ...
    def next_uniq_key(self) -> str: ...
    def store_put(
        self, records: Sequence[MessageRecord], *, hold: bool = False
    ) -> AppendResult: ...
    def store_put_encoded(
        self,
        topic: str,
        queue_id: int,
        sys_flag: int,
        encoded: bytes,
        properties: Mapping[str, str],
        *,
        body_bytes: int,
    ) -> AppendResult: ...
    def store_put_encoded_batch(
        self,
        topic: str,
        queue_id: int,
        sys_flag: int,
        encoded: list[bytes],
        properties: list[Mapping[str, str]],
        *,
        body_bytes: int,
    ) -> AppendResult: ...
    async def wait_durable(self, result: AppendResult, *, wait_store: bool) -> int: ...
    def durable_at_once(self, *, wait_store: bool) -> bool: ...
    def answers_later(self, *, wait_store: bool) -> bool: ...
    def when_replicated(self, result: AppendResult, then: Callable[[int], None]) -> int | None: ...


class SendProcessor:
    """Turns send requests into CommitLog appends."""

    def __init__(self, broker: BrokerForSend) -> None:
        self.broker = broker
        self._rng = random.Random()
        self._parse_v2 = SendMessageRequestHeaderV2.v1_parser()

    def handlers(self) -> dict[int, Handler]:
        return {
            RequestCode.SEND_MESSAGE: self.send_v1,
            RequestCode.SEND_MESSAGE_V2: self.send_v2,
            RequestCode.SEND_BATCH_MESSAGE: self.send_v2,
            RequestCode.CONSUMER_SEND_MSG_BACK: self.send_back,
        }

    # send_v1 and send_v2 hand back ``_send``'s coroutine instead of awaiting it: a
    # coroutine less per send (a header that does not parse raises here, at the call,
    # which the transport's handler call catches as it catches one raised inside).

    def send_v1(
        self, request: RemotingCommand, conn: Connection
    ) -> Coroutine[Any, Any, RemotingCommand | LaterAnswer]:
        header = SendMessageRequestHeader.from_ext_fields(request.ext_fields)
        return self._send(request, header, conn)

    def send_v2(
        self, request: RemotingCommand, conn: Connection
    ) -> Coroutine[Any, Any, RemotingCommand | LaterAnswer]:
        header = self._parse_v2(request.ext_fields)  # SendMessageRequestHeaderV2.parse_v1
        return self._send(request, header, conn)

    # --- the send path ---------------------------------------------------------------

    async def _send(
        self, request: RemotingCommand, header: SendMessageRequestHeader, conn: Connection
    ) -> RemotingCommand | LaterAnswer:
        self._check_writable_master()
        is_batch = request.code == _SEND_BATCH_MESSAGE or header.batch is True  # bool | None
        if is_batch or len(request.body) > self.broker.config.max_message_bytes:
            self._check_size(request.body, is_batch=is_batch)  # else it passes: a frame less
        # Header fields past their own limits, refused before anything is parsed.
        properties_chars = len(header.properties or "")
        if properties_chars > MAX_PROPERTIES_BYTES:
            # Each character is at least one byte: this many cannot fit the record's int16.
            raise MessageIllegal(
                f"message properties of {properties_chars} characters exceed the record's "
                f"limit of {MAX_PROPERTIES_BYTES} bytes"
            )
        if (header.reconsume_times or 0) < 0:
            raise InvalidParameter(f"reconsumeTimes must be >= 0, got {header.reconsume_times}")
        config = self._topic_for_send(header)
        queue_id = header.queue_id
        if not 0 <= queue_id < config.read_queue_nums:  # else _queue_id returns it: a frame less
            queue_id = self._queue_id(header, config)
        if _is_plain(header):
            if not is_batch:
                stored = self._send_plain(request, header, queue_id, conn)
                if stored is not None:
                    result, plain = stored
                    wait_store = plain.get(PROPERTY_WAIT)
                    transaction_id = plain.get(PROPERTY_UNIQ_KEY)
                    # ``_answer`` without its coroutine where the answer needs no wait.
                    answer = self._answer_now(
                        request,
                        result,
                        queue_id,
                        wait_store=wait_store,
                        transaction_id=transaction_id,
                    )
                    if answer is not None:
                        return answer
                    return await self._answer(
                        request,
                        result,
                        queue_id,
                        wait_store=wait_store,
                        transaction_id=transaction_id,
                    )
            else:
                result_or_none = self._send_plain_batch(request, header, queue_id, conn)
                if result_or_none is not None:
                    return await self._answer(
                        request,
                        result_or_none,
                        queue_id,
                        wait_store=properties_from_string(header.properties or "").get(
                            PROPERTY_WAIT
                        ),
                    )
        properties = properties_from_string(header.properties or "")
        topic = header.topic
        reconsume_times = header.reconsume_times or 0
        if is_retry_topic(topic):
            if is_batch:
                raise MessageIllegal(f"batch messages cannot be sent to retry topic {topic}")
            topic, queue_id = self._retry_or_dlq(header, queue_id, request.version, properties)
        born_host = peer_host(conn)
        # Transactions (broker/transaction/): a half message is parked, never batched.
        half = is_half_request(header.sys_flag, properties)
        if is_batch:
            if half:
                raise MessageIllegal("transaction (half) messages cannot be sent in a batch")
            records = self._batch_records(header, topic, queue_id, request.body, born_host)
            result = self.broker.store_put(records, hold=True)  # answered through the server
        else:
            if half:
                properties.pop(PROPERTY_DELAY, None)  # as RocketMQ's producer drops it
            record = self._record(
                topic=topic,
                queue_id=queue_id,
                flag=header.flag,
                sys_flag=header.sys_flag,
                born_timestamp_ms=header.born_timestamp,
                born_host=born_host,
                reconsume_times=reconsume_times,
                body=request.body,
                properties=properties,
            )
            if half:
                record = half_record(record, header.producer_group)
            result = self.broker.store_put([record])
        return await self._answer(
            request,
            result,
            queue_id,
            wait_store=properties.get(PROPERTY_WAIT),
            # _record added the UNIQ_KEY to ``properties``; a batch has one per message.
            transaction_id=None if is_batch else properties.get(PROPERTY_UNIQ_KEY),
        )

    def _send_plain(
        self,
        request: RemotingCommand,
        header: SendMessageRequestHeader,
        queue_id: int,
        conn: Connection,
    ) -> tuple[AppendResult, dict[str, str]] | None:
        """The common case in one straight path: the producer's properties string stored as
        it came (``protocol/record_wire.py``), UNIQ_KEY / CLUSTER appended when missing;
        the append's result and the record's properties (a plain function: one coroutine
        less per send). None when the string is not canonical: the caller takes the dict
        path, which stays the definition (the record's bytes are the same either way)."""
        broker = self.broker
        body = request.body
        try:
            wire = record_properties_encoded(
                header.properties or "",
                cluster=broker.config.cluster_name,
                new_uniq_key=broker.next_uniq_key,
            )
            if wire is None:
                return None
            stored_properties, properties = wire
            # record_wire.encode_record_from_wire's call, without its extra layer.
            encoded = encode_record_fields(
                topic=header.topic,
                body=body,
                queue_id=queue_id,
                flag=header.flag,
                sys_flag=header.sys_flag,
                born_timestamp_ms=header.born_timestamp,
                born_host=_peer_host(conn.peer),  # peer_host, a frame less
                store_timestamp_ms=0,
                store_host=broker.store_host,
                reconsume_times=header.reconsume_times or 0,
                properties=stored_properties,
            )
        except ValueError as exc:
            raise MessageIllegal(str(exc)) from None
        result = broker.store_put_encoded(
            header.topic, queue_id, header.sys_flag, encoded, properties, body_bytes=len(body)
        )
        return result, properties

    def _send_plain_batch(
        self,
        request: RemotingCommand,
        header: SendMessageRequestHeader,
        queue_id: int,
        conn: Connection,
    ) -> AppendResult | None:
        """``_send_plain`` for a client's SEND_BATCH_MESSAGE (the SDK's natural batches):
        each message's properties stored as they came, UNIQ_KEY / CLUSTER appended when
        missing; no BatchItem, dict or MessageRecord per message. None when any message
        is not plain (a DELAY, timer or transaction property), its properties are not
        canonical, or the body or a value is bad: the caller takes the dict path, which
        stays the definition (refusals and their wording are its own; the records' bytes
        are the same either way)."""
        broker = self.broker
        try:
            items = split_batch_body(request.body)
        except ProtocolError:  # malformed: the dict path names what is wrong
            return None
        if not items:
            return None
        cluster = broker.config.cluster_name
        new_uniq_key = broker.next_uniq_key
        topic = header.topic
        sys_flag = header.sys_flag
        born_timestamp_ms = header.born_timestamp
        born_host = _peer_host(conn.peer)
        store_host = broker.store_host
        encoded: list[bytes] = []
        properties: list[Mapping[str, str]] = []
        body_bytes = 0
        checked: list[tuple[str, dict[str, str]]] = []
        for _, _, _, props in items:  # every message checked before any UNIQ_KEY is drawn
            try:
                text = props.decode()
            except UnicodeDecodeError:
                return None
            if _not_plain_marked(text):
                return None
            pairs = canonical_pairs(text, cluster=cluster)
            if pairs is None:
                return None
            checked.append((text, pairs))
        try:
            for (_, flag, body, _), (text, pairs) in zip(items, checked, strict=True):
                stored_text, record_pairs = completed_properties(
                    text, pairs, cluster=cluster, new_uniq_key=new_uniq_key
                )
                encoded.append(
                    encode_record_from_wire(
                        topic=topic,
                        body=body,
                        queue_id=queue_id,
                        flag=flag,
                        sys_flag=sys_flag,
                        born_timestamp_ms=born_timestamp_ms,
                        born_host=born_host,
                        store_host=store_host,
                        properties=stored_text,
                    )
                )
                properties.append(record_pairs)
                body_bytes += len(body)
        except ValueError:
            return None
        return broker.store_put_encoded_batch(
            topic, queue_id, sys_flag, encoded, properties, body_bytes=body_bytes
        )

    def _check_size(self, body: bytes, *, is_batch: bool) -> None:
        """Refuse a body over ``maxMessageSize`` and a batch of more than
        ``maxBatchMessageNums`` messages before anything is decoded, created or stored
        (520,000 empty items are 11 MB of body and ~9 s of decoding)."""
        config = self.broker.config
        if len(body) > config.max_message_bytes:
            what = "batch body" if is_batch else "message body"
            raise MessageIllegal(
                f"{what} of {len(body)} bytes exceeds the maximum of "
                f"{config.max_message_bytes} bytes (maxMessageSize)"
            )
        if is_batch:
            limit = config.max_batch_message_nums
            count = batch_item_count(body, stop_after=limit + 1)
            if count > limit:
                raise MessageIllegal(
                    f"batch holds more than {limit} messages (maxBatchMessageNums); "
                    "split it into smaller batches"
                )

    def _check_writable_master(self) -> None:
        broker = self.broker
        if not broker.accepts_writes:
            raise ServiceNotAvailable(
                f"broker {broker.config.broker_name} at {broker.address} does not accept "
                f"writes now ({broker.role_description}); send to the master"
            )
        if not broker.broker_perm & PERM_WRITE:
            raise NoPermission(f"the broker[{broker.address}] sending message is forbidden")

    def _topic_for_send(self, header: SendMessageRequestHeader) -> TopicConfig:
        broker = self.broker
        error = _topic_problem(header.topic)
        if error is not None:
            # RocketMQ 5.3 msgCheck: INVALID_PARAMETER (SYSTEM_ERROR before #9028), never 13.
            raise InvalidParameter(error)
        if header.topic in NOT_ALLOWED_SEND_TOPICS:
            # A client writing SCHEDULE_TOPIC_XXXX or a transaction topic directly would
            # forge delayed deliveries or half messages.
            raise NoPermission(f"Sending message to topic[{header.topic}] is forbidden.")
        config = broker.topics.get(header.topic)
        if config is None:
            if is_retry_topic(header.topic):
                config = broker.create_retry_topic(group_of_retry_topic(header.topic))
            else:
                config = broker.auto_create_topic(
                    header.topic, header.default_topic, header.default_topic_queue_nums
                )
        if config is None:
            raise TopicNotExist(f"topic[{header.topic}] not exist, apply first please!")
        if not config.perm & PERM_WRITE:
            raise NoPermission(f"Sending message to topic[{header.topic}] is forbidden.")
        return config

    def _queue_id(self, header: SendMessageRequestHeader, config: TopicConfig) -> int:
        limit = queue_count(config)
        if header.queue_id < 0:
            if config.write_queue_nums <= 0:
                raise InvalidParameter(f"topic {header.topic} has no writable queue")
            return self._rng.randrange(config.write_queue_nums)
        if header.queue_id >= limit:
            raise InvalidParameter(
                f"request queueId[{header.queue_id}] is illegal, topic {header.topic} has "
                f"{limit} queues, producer group {header.producer_group}"
            )
        return header.queue_id

    def _retry_or_dlq(
        self,
        header: SendMessageRequestHeader,
        queue_id: int,
        version: int,
        properties: dict[str, str],
    ) -> tuple[str, int]:
        """Where a %RETRY% send goes: its retry queue, or the group's DLQ when exhausted."""
        group = group_of_retry_topic(header.topic)
        group_config = self.broker.find_group(group)
        if group_config is None:
            raise SubscriptionGroupNotExist(f"subscription group {group} does not exist")
        max_times = group_config.retry_max_times
        if version >= VERSION_V3_4_9 and header.max_reconsume_times is not None:
            max_times = header.max_reconsume_times
        if (header.reconsume_times or 0) > max_times:
            properties.pop(PROPERTY_DELAY, None)
            self.broker.create_dlq_topic(group)
            return dlq_topic(group), 0
        return header.topic, queue_id

    def _record(
        self,
        *,
        topic: str,
        queue_id: int,
        flag: int,
        sys_flag: int,
        born_timestamp_ms: int,
        born_host: tuple[str, int],
        reconsume_times: int,
        body: bytes,
        properties: dict[str, str],
    ) -> MessageRecord:
        broker = self.broker
        if PROPERTY_UNIQ_KEY not in properties:
            properties[PROPERTY_UNIQ_KEY] = broker.next_uniq_key()
        properties[PROPERTY_CLUSTER] = broker.config.cluster_name
        topic, queue_id = self._schedule_if_delayed(topic, queue_id, sys_flag, properties)
        topic, queue_id = broker.timers.park(topic, queue_id, sys_flag, properties)
        return MessageRecord(
            queue_id=queue_id,
            flag=flag,
            queue_offset=0,
            physical_offset=0,
            sys_flag=sys_flag,
            born_timestamp_ms=born_timestamp_ms,
            born_host=born_host,
            store_timestamp_ms=0,
            store_host=broker.store_host,
            reconsume_times=reconsume_times,
            prepared_transaction_offset=0,
            body=body,
            topic=topic,
            properties=properties,
        )

    def _schedule_if_delayed(
        self, topic: str, queue_id: int, sys_flag: int, properties: dict[str, str]
    ) -> tuple[str, int]:
        """A positive DELAY level sends the message to the schedule topic's level queue."""
        tran_type = sys_flag & SYSFLAG_TRANSACTION_MASK
        raw = properties.get(PROPERTY_DELAY)
        if not raw or tran_type not in (
            SYSFLAG_TRANSACTION_NOT_TYPE,
            SYSFLAG_TRANSACTION_COMMIT_TYPE,
        ):
            return topic, queue_id
        try:
            level = int(raw)
        except ValueError:
            raise MessageIllegal(f"DELAY property {raw!r} is not an integer level") from None
        if level <= 0:
            return topic, queue_id
        level = min(level, self.broker.max_delay_level)
        properties[PROPERTY_DELAY] = str(level)
        properties[PROPERTY_REAL_TOPIC] = topic
        properties[PROPERTY_REAL_QID] = str(queue_id)
        return SCHEDULE_TOPIC, level - 1

    def _batch_records(
        self,
        header: SendMessageRequestHeader,
        topic: str,
        queue_id: int,
        body: bytes,
        born_host: tuple[str, int],
    ) -> list[MessageRecord]:
        items = decode_batch_body(body)
        if not items:
            raise MessageIllegal("batch body holds no message")
        records = []
        for item in items:
            properties = dict(item.properties)
            if properties.get(PROPERTY_DELAY, "0") not in ("", "0"):
                raise MessageIllegal("delayed messages cannot be sent in a batch")
            if is_half_request(0, properties):
                raise MessageIllegal("transaction (half) messages cannot be sent in a batch")
            if any(key in properties for key in TIMER_PROPERTIES):
                raise MessageIllegal("timer messages cannot be sent in a batch")
            records.append(
                self._record(
                    topic=topic,
                    queue_id=queue_id,
                    flag=item.flag,
                    sys_flag=header.sys_flag,
                    born_timestamp_ms=header.born_timestamp,
                    born_host=born_host,
                    reconsume_times=0,
                    body=item.body,
                    properties=properties,
                )
            )
        return records

    async def _answer(
        self,
        request: RemotingCommand,
        result: AppendResult,
        queue_id: int,
        *,
        wait_store: str | None,
        transaction_id: str | None = None,
    ) -> RemotingCommand | LaterAnswer:
        """The send's answer once it is as durable as configured: ``_answer_now``'s, or
        after the group fsync (SYNC_FLUSH)."""
        answer = self._answer_now(
            request, result, queue_id, wait_store=wait_store, transaction_id=transaction_id
        )
        if answer is not None:
            return answer
        code = await self.broker.wait_durable(result, wait_store=wait_store != "false")
        reply = send_response_fields(result.msg_id, queue_id, result.queue_offset, transaction_id)
        return _send_answer(request, code, reply)

    def _answer_now(
        self,
        request: RemotingCommand,
        result: AppendResult,
        queue_id: int,
        *,
        wait_store: str | None,
        transaction_id: str | None,
    ) -> RemotingCommand | LaterAnswer | None:
        """``_answer`` where no task must wait (an ASYNC_FLUSH broker; a sync master's
        answer given from the ack): a plain function, so the common send runs no
        coroutine for it. None: the send waits for the flush (``_answer``)."""
        status = result.status
        if status is not PUT_OK:  # not result.ok: a frame less per send
            if status is PutStatus.PROPERTIES_SIZE_EXCEEDED:
                raise MessageIllegal(result.remark or "properties too large")
            raise MessageIllegal(result.remark or status.value)
        broker = self.broker
        waits = wait_store != "false"
        at_once = broker.durable_at_once(wait_store=waits)
        if not at_once and not broker.answers_later(wait_store=waits):
            return None  # the flush wait (``_answer``)
        # transactionId carries the UNIQ_KEY, as Java's handlePutMessageResult sets it: the
        # only way a client learns an id the broker generated for it.
        reply = send_response_fields(result.msg_id, queue_id, result.queue_offset, transaction_id)
        if at_once:
            return request.respond(_SUCCESS, None, reply)  # _send_answer's, without a frame
        # A sync master: answered from the ack that replicates it (no task waits).
        later = LaterAnswer()
        now = broker.when_replicated(result, functools.partial(_give_answer, later, request, reply))
        if now is None:
            return later
        return _send_answer(request, now, reply)

    # --- consumer send back ----------------------------------------------------------

    async def send_back(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        """A consumer failed a message: re-put it to the group's retry topic (or DLQ)."""
        header = ConsumerSendMsgBackRequestHeader.from_ext_fields(request.ext_fields)
        broker = self.broker
        self._check_writable_master()
        group_config = broker.find_group(header.group)
        if group_config is None:
            raise SubscriptionGroupNotExist(
                f"subscription group not exist, {header.group}; create it first"
            )
        if group_config.retry_queue_nums <= 0:
            # The group has retries switched off: RocketMQ drops the message and says SUCCESS.
            return request.respond()
        raw = broker.store.read_record(header.offset)
        if raw is None:
            return request.respond(
                ResponseCode.SYSTEM_ERROR, f"look message by offset failed, {header.offset}"
            )
        original, _ = decode_record(raw)
        self._check_origin(header, original)
        properties = dict(original.properties)
        properties.setdefault(PROPERTY_RETRY_TOPIC, original.topic)
        properties.pop(PROPERTY_DELAY, None)
        max_times = group_config.retry_max_times
        if request.version >= VERSION_V3_4_9 and header.max_reconsume_times is not None:
            max_times = header.max_reconsume_times
        if original.reconsume_times >= max_times or header.delay_level < 0:
            broker.create_dlq_topic(header.group)
            topic, queue_id = dlq_topic(header.group), 0
        else:
            config = broker.create_retry_topic(header.group)
            topic = retry_topic(header.group)
            queue_id = self._rng.randrange(max(1, config.write_queue_nums))
            level = header.delay_level or 3 + original.reconsume_times
            properties[PROPERTY_DELAY] = str(level)
        properties.setdefault(PROPERTY_ORIGIN_MESSAGE_ID, header.origin_msg_id or original.msg_id)
        properties[PROPERTY_MAX_RECONSUME_TIMES] = str(max_times)
        record = self._record(
            topic=topic,
            queue_id=queue_id,
            flag=original.flag,
            sys_flag=original.sys_flag,
            born_timestamp_ms=original.born_timestamp_ms,
            born_host=original.born_host,
            reconsume_times=original.reconsume_times + 1,
            body=original.body,
            properties=properties,
        )
        result = broker.store_put([record])
        if not result.ok:
            return request.respond(ResponseCode.SYSTEM_ERROR, result.status.value)
        code = await broker.wait_durable(result, wait_store=True)
        if code != ResponseCode.SUCCESS:
            return request.respond(ResponseCode.SYSTEM_ERROR, ResponseCode(code).name)
        return request.respond()

    def _check_origin(
        self, header: ConsumerSendMsgBackRequestHeader, original: MessageRecord
    ) -> None:
        """The record at the offset must be the message the consumer names: of
        ``originTopic`` (its stored topic, or the RETRY_TOPIC it came from). Else any
        message of any topic could be copied into the group's retry topic and read there;
        under ACL, where the request's originTopic is checked (protocol/acl.py), it is
        required."""
        origin = header.origin_topic
        if not origin:
            if self.broker.config.acl_enable:
                raise NoPermission("CONSUMER_SEND_MSG_BACK needs originTopic when ACL is on")
            return  # clients before originTopic: RocketMQ's own check (none)
        if origin not in (original.topic, original.properties.get(PROPERTY_RETRY_TOPIC)):
            raise MessageIllegal(
                f"the message at offset {header.offset} is of topic {original.topic}, "
                f"not originTopic {origin}"
            )


def _send_answer(request: RemotingCommand, code: int, reply: dict[str, str]) -> RemotingCommand:
    remark = None if code == _SUCCESS else ResponseCode(code).name
    return request.respond(code, remark, ext_fields=reply)


def _give_answer(
    later: LaterAnswer, request: RemotingCommand, reply: dict[str, str], code: int
) -> None:
    later.give(_send_answer(request, code, reply))


#: Property names that mean more than a plain store: such messages take the dict path,
#: where delays, timers and transactions are handled. Checked as substrings of the
#: properties string (a false match only costs the faster path).
_NOT_PLAIN_MARKS = (PROPERTY_DELAY, "TIMER_", PROPERTY_START_DELIVER_TIME, PROPERTY_TRAN_MSG)
_DELAY_MARK, _TIMER_MARK, _DELIVER_MARK, _TRAN_MARK = _NOT_PLAIN_MARKS


def _is_plain(header: SendMessageRequestHeader) -> bool:
    """A send for the straight path: no transaction flag, not to a retry topic, and no
    property that delays, times or makes it transactional."""
    if header.sys_flag & SYSFLAG_TRANSACTION_MASK or is_retry_topic(header.topic):
        return False
    return not _not_plain_marked(header.properties or "")


def _not_plain_marked(text: str) -> bool:
    """A properties string naming a DELAY, timer or transaction property: the dict path's
    (a single send's header or each message of a batch)."""
    # _NOT_PLAIN_MARKS spelled out: ``any`` over a generator cost 5 frames a send.
    return _DELAY_MARK in text or _TIMER_MARK in text or _DELIVER_MARK in text or _TRAN_MARK in text


def send_response_fields(
    msg_id: str, queue_id: int, queue_offset: int, transaction_id: str | None
) -> dict[str, str]:
    """A SEND_OK's extFields: ``SendMessageResponseHeader.to_ext_fields()`` of these
    values (tests/unit/test_send_fields.py holds them equal), written out because this is
    the hottest header of the broker (3.3 µs through the class, 0.5 written out), plus
    the region and trace flags Java's broker adds."""
    reply = {"msgId": msg_id, "queueId": str(queue_id), "queueOffset": str(queue_offset)}
    if transaction_id is not None:
        reply["transactionId"] = transaction_id
    reply["MSG_REGION"] = "DefaultRegion"
    reply["TRACE_ON"] = "true"
    return reply


def batch_item_count(body: bytes, *, stop_after: int) -> int:
    """Items in a SEND_BATCH body, counted by their totalSize fields alone and no further
    than ``stop_after``: what ``decode_batch_body`` would return, without building any.

    A malformed body stops the count (the decoder then names what is wrong).
    """
    count = 0
    pos = 0
    end = len(body)
    while pos + 4 <= end and count < stop_after:
        (total,) = _INT32.unpack_from(body, pos)
        if total <= 0:
            break
        count += 1
        pos += total
    return count


def store_put_error(exc: StorageError) -> ServiceNotAvailable:
    """The client-facing error for a store that cannot take writes."""
    if isinstance(exc, DiskFull):
        return ServiceNotAvailable(
            f"service not available now: the broker's disk is full ({exc}); "
            "send to another broker or free space"
        )
    return ServiceNotAvailable(f"service not available now: {exc}")
