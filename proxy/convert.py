"""apache.rocketmq.v2 messages <-> the SDK's values, and errors -> gRPC status codes.

Rules (apache/rocketmq-apis definition.proto / service.proto; RocketMQ proxy's
GrpcConverter and ResponseBuilder):
- The generated ``apache.rocketmq.v2`` modules are the ones the official Python client
  ships (``rocketmq.grpc_protocol``): one copy of the protocol, the same the client speaks.
- A message sent keeps the client's message id as its UNIQ_KEY, its tag, keys and user
  properties; a FIFO message's group becomes the sharding key (and ``__SHARDINGKEY``), a
  delivery timestamp the SDK's ``deliver_at_ms`` (TIMER_DELIVER_MS: the timer store).
  A gzip body is inflated, never past the body limit.
- A message received carries the topic asked for (not the retry topic), the broker's
  record facts (store time and host, queue id and offset), a CRC32 body digest in the
  client's spelling (8 upper-case hex digits), ``delivery_attempt`` = reconsume times + 1,
  and the proxy's receipt handle ``<extraInfo>|<commitLogOffset>``.
- Errors map to the API's codes by one table (``status_for``); anything unknown is
  INTERNAL_SERVER_ERROR with the error's text.
- Pure (no I/O).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Mapping

from google.protobuf.timestamp_pb2 import Timestamp
from rocketmq.grpc_protocol import definition_pb2 as pb

from client.consumer.simple import PoppedMessage
from client.message import Message, ReceivedMessage, SendStatus
from protocol.codes import ResponseCode
from protocol.errors import (
    InvalidParameter,
    MalformedBody,
    MessageIllegal,
    NetworkError,
    NoPermission,
    ProtocolError,
    RemotingTimeout,
    RocketError,
    ServerError,
    ServiceNotAvailable,
    SubscriptionGroupNotExist,
    SystemBusy,
    TopicNotExist,
)
from protocol.message import (
    PROPERTY_KEYS,
    PROPERTY_SHARDING_KEY,
    PROPERTY_TAGS,
    PROPERTY_TRAN_MSG,
    PROPERTY_UNIQ_KEY,
)
from protocol.pop import MalformedHandle, ReceiptHandle

Code = pb.Code

#: Properties RocketMQ sets itself: not handed to a gRPC client as user properties.
SYSTEM_PROPERTIES = frozenset(
    {
        PROPERTY_TAGS,
        PROPERTY_KEYS,
        PROPERTY_UNIQ_KEY,
        PROPERTY_SHARDING_KEY,
        "WAIT",
        "DELAY",
        "RETRY_TOPIC",
        "REAL_TOPIC",
        "REAL_QID",
        "CLUSTER",
        "MIN_OFFSET",
        "MAX_OFFSET",
        "ORIGIN_MESSAGE_ID",
        "RECONSUME_TIME",
        "MAX_RECONSUME_TIMES",
        "TRAN_MSG",
        "PGROUP",
        "CONSUME_START_TIME",
        "MSG_REGION",
        "TRACE_ON",
        "POP_CK",
        "1ST_POP_TIME",
        "TIMER_DELIVER_MS",
        "TIMER_DELAY_SEC",
        "__STARTDELIVERTIME",
        "INNER_NUM",
        "INNER_BASE",
        "__transactionId__",
        "TRANSACTION_CHECK_TIMES",
        "TRAN_PREPARED_QUEUE_OFFSET",
        "CHECK_IMMUNITY_TIME_IN_SECONDS",
    }
)

_SEND_STATUS = {
    SendStatus.SEND_OK: Code.OK,
    SendStatus.FLUSH_DISK_TIMEOUT: Code.MASTER_PERSISTENCE_TIMEOUT,
    SendStatus.FLUSH_SLAVE_TIMEOUT: Code.SLAVE_PERSISTENCE_TIMEOUT,
    SendStatus.SLAVE_NOT_AVAILABLE: Code.HA_NOT_AVAILABLE,
}

_BY_ERROR: tuple[tuple[type[RocketError], int], ...] = (
    (MalformedHandle, Code.INVALID_RECEIPT_HANDLE),
    (TopicNotExist, Code.TOPIC_NOT_FOUND),
    (SubscriptionGroupNotExist, Code.CONSUMER_GROUP_NOT_FOUND),
    (NoPermission, Code.FORBIDDEN),
    (SystemBusy, Code.TOO_MANY_REQUESTS),
    (MessageIllegal, Code.BAD_REQUEST),
    (InvalidParameter, Code.BAD_REQUEST),
    (MalformedBody, Code.BAD_REQUEST),
    (RemotingTimeout, Code.PROXY_TIMEOUT),
    (ServiceNotAvailable, Code.INTERNAL_SERVER_ERROR),
    (NetworkError, Code.INTERNAL_SERVER_ERROR),
    (ProtocolError, Code.INTERNAL_SERVER_ERROR),
)
_BY_RESPONSE_CODE: dict[int, int] = {
    ResponseCode.SUBSCRIPTION_PARSE_FAILED: Code.ILLEGAL_FILTER_EXPRESSION,
    ResponseCode.FLUSH_DISK_TIMEOUT: Code.MASTER_PERSISTENCE_TIMEOUT,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: Code.SLAVE_PERSISTENCE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: Code.HA_NOT_AVAILABLE,
    ResponseCode.MESSAGE_ILLEGAL: Code.BAD_REQUEST,
}


def status_for(exc: BaseException) -> tuple[int, str]:
    """The API code and message for an error raised while serving a request."""
    if isinstance(exc, ServerError) and exc.code in _BY_RESPONSE_CODE:
        return _BY_RESPONSE_CODE[exc.code], str(exc)
    for kind, code in _BY_ERROR:
        if isinstance(exc, kind):
            return code, str(exc)
    return Code.INTERNAL_SERVER_ERROR, str(exc) or type(exc).__name__


def send_status_code(status: SendStatus) -> int:
    return int(_SEND_STATUS.get(status, Code.INTERNAL_SERVER_ERROR))


class BadMessage(InvalidParameter):
    """A message sent over gRPC that cannot be stored as it is."""

    def __init__(self, remark: str, *, api_code: int = Code.BAD_REQUEST) -> None:
        super().__init__(remark)
        self.api_code = api_code


def to_sdk_message(message: pb.Message, *, max_body_bytes: int) -> tuple[Message, str | None]:
    """The SDK message to send, and its sharding key (the FIFO message group)."""
    props = message.system_properties
    body = bytes(message.body)
    if not body:
        raise BadMessage("message body is empty", api_code=Code.MESSAGE_BODY_EMPTY)
    if props.body_encoding == pb.GZIP:
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = inflater.decompress(body, max_body_bytes + 1)
        except zlib.error as exc:
            raise BadMessage(f"gzip body does not inflate: {exc}") from None
    if len(body) > max_body_bytes:
        raise BadMessage(
            f"message body of {len(body)} bytes exceeds {max_body_bytes}",
            api_code=Code.MESSAGE_BODY_TOO_LARGE,
        )
    user = dict(message.user_properties)
    clash = SYSTEM_PROPERTIES & set(user)
    if clash:
        raise BadMessage(
            f"user properties {sorted(clash)} are reserved",
            api_code=Code.ILLEGAL_MESSAGE_PROPERTY_KEY,
        )
    group = props.message_group or None
    if group is not None:
        user[PROPERTY_SHARDING_KEY] = group
    deliver_at_ms: int | None = None
    if props.HasField("delivery_timestamp"):
        deliver_at_ms = props.delivery_timestamp.ToMilliseconds() or None
    sdk = Message(
        topic=message.topic.name,
        body=body,
        tags=props.tag or None,
        keys=tuple(props.keys),
        properties=user,
        msg_id=props.message_id or None,
        deliver_at_ms=deliver_at_ms,
    )
    return sdk, group


def sent_message_type(message: pb.Message) -> str:
    """What a sent message is, from its content (TopicMessageType.parseFromMessageProperty):
    TRANSACTION, DELAY (a delivery time), FIFO (a message group) or NORMAL."""
    props = message.system_properties
    if props.message_type == pb.TRANSACTION:
        return "TRANSACTION"
    if props.HasField("delivery_timestamp") and props.delivery_timestamp.ToMilliseconds() > 0:
        return "DELAY"
    if props.message_group:
        return "FIFO"
    return "NORMAL"


def receipt_handle(popped: PoppedMessage) -> str:
    return f"{popped.handle.encode()}|{popped.message.commit_log_offset}"


def parse_receipt_handle(text: str) -> tuple[ReceiptHandle, int]:
    """The pop handle and the message's CommitLog offset of a proxy receipt handle."""
    head, sep, tail = text.rpartition("|")
    if not sep or not tail.isascii() or not tail.isdigit() or len(tail) > 19:
        raise MalformedHandle(f"receipt handle {text[:120]!r} is not one this proxy made")
    return ReceiptHandle.decode(head), int(tail)


def _timestamp(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def to_pb_message(popped: PoppedMessage, *, namespace: str, invisible_s: float) -> pb.Message:
    """A received message as the gRPC client reads it."""
    m = popped.message
    out = record_to_pb(m, topic=popped.topic, namespace=namespace)
    sp = out.system_properties
    sp.receipt_handle = receipt_handle(popped)
    sp.invisible_duration.FromMilliseconds(int(invisible_s * 1000))
    sp.delivery_attempt = m.reconsume_times + 1
    return out


def record_to_pb(m: ReceivedMessage, *, topic: str, namespace: str) -> pb.Message:
    """A stored message's facts as a ``pb.Message`` (no receipt handle: a received one
    adds it; a half message in a transaction check goes as it is)."""
    out = pb.Message()
    out.topic.name = topic
    out.topic.resource_namespace = namespace
    out.body = m.body
    out.user_properties.update(_user_properties(m.properties))
    sp = out.system_properties
    if m.tags:
        sp.tag = m.tags
    sp.keys.extend(m.keys)
    sp.message_id = m.msg_id
    sp.body_digest.type = pb.CRC32
    sp.body_digest.checksum = format(zlib.crc32(m.body) & 0xFFFFFFFF, "08X")
    sp.body_encoding = pb.IDENTITY
    group = m.properties.get(PROPERTY_SHARDING_KEY)
    sp.message_type = (
        pb.TRANSACTION
        if m.properties.get(PROPERTY_TRAN_MSG) == "true"
        else pb.FIFO
        if group
        else pb.NORMAL
    )
    if group:
        sp.message_group = group
    sp.born_timestamp.CopyFrom(_timestamp(m.born_timestamp_ms))
    sp.born_host = m.born_host[0]
    sp.store_timestamp.CopyFrom(_timestamp(m.store_timestamp_ms))
    sp.store_host = f"{m.store_host[0]}:{m.store_host[1]}"
    sp.queue_id = m.queue.queue_id
    sp.queue_offset = m.queue_offset
    return out


def _user_properties(properties: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    return ((k, v) for k, v in properties.items() if k not in SYSTEM_PROPERTIES)


def gzip_body(body: bytes) -> bytes:
    """For tests and tools: a body as a client sends it with GZIP encoding."""
    return gzip.compress(body)
