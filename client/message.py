"""What SDK users send and receive: ``Message``, ``ReceivedMessage``, ``SendResult``.

Rules:
- ``Message`` is what a producer sends: topic, body, tags, keys, user properties, delay.
  It is turned into RocketMQ's wire properties in one place (``wire_properties``).
- ``ReceivedMessage`` is one record of a pull body as the user sees it: body decompressed,
  ``msg_id`` = the client id (UNIQ_KEY) when present, else the broker's offset id, as the
  Java client reports it.
- A compressed body is inflated by ``inflate`` only, never past ``max_body_bytes``
  (RocketMQ's maxMessageSize, 4 MiB by default): a 200 KiB zlib bomb costs at most that
  much memory, and any body that does not inflate cleanly is a ``MalformedRecord``.
- Pure.
"""

from __future__ import annotations

import enum
import re
import zlib
from collections.abc import Mapping

import attrs

from protocol.errors import MalformedRecord
from protocol.message import (
    KEY_SEPARATOR,
    PROPERTY_DELAY,
    PROPERTY_KEYS,
    PROPERTY_RECONSUME_TIME,
    PROPERTY_RETRY_TOPIC,
    PROPERTY_TAGS,
    PROPERTY_TIMER_DELAY_MS,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_UNIQ_KEY,
    PROPERTY_WAIT,
    SYSFLAG_COMPRESSED,
    SYSFLAG_COMPRESSION_MASK,
    SYSFLAG_COMPRESSION_ZLIB,
    MessageRecord,
    offset_msg_id,
)
from protocol.route import MessageQueue
from protocol.slots import slot_builder

#: RocketMQ's maxMessageSize: no body a consumer accepts inflates past this by default.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: ``inflate`` produces at most this much output per step.
INFLATE_STEP_BYTES = 256 * 1024

#: Property names the SDK sets itself; user properties may not use them.
RESERVED_PROPERTIES = frozenset(
    {
        PROPERTY_TAGS,
        PROPERTY_KEYS,
        PROPERTY_UNIQ_KEY,
        PROPERTY_DELAY,
        PROPERTY_WAIT,
        PROPERTY_TIMER_DELAY_MS,
        PROPERTY_TIMER_DELIVER_MS,
    }
)


def inflate(body: bytes, sys_flag: int, max_body_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """The stored ``body`` as sent: inflated when ``sys_flag`` says it is compressed.

    Inflates in steps (``decompressobj`` with ``max_length``) and stops as soon as the
    output passes ``max_body_bytes``, however far the input would inflate.

    Raises:
        MalformedRecord: not zlib, truncated, inflating past ``max_body_bytes``, or
            compressed with LZ4 / ZSTD (RocketMQ 5's other types), which we cannot read.
    """
    if not sys_flag & SYSFLAG_COMPRESSED:
        return body
    kind = sys_flag & SYSFLAG_COMPRESSION_MASK
    if kind not in (0, SYSFLAG_COMPRESSION_ZLIB):  # 0: written before 5.x named the type
        raise MalformedRecord(f"body compressed with type 0x{kind >> 8:X}; only zlib is read")
    inflater = zlib.decompressobj()
    parts: list[bytes] = []
    inflated = 0
    data = body
    try:
        while not inflater.eof:
            # In steps, so a bomb is refused holding at most the limit plus one step.
            part = inflater.decompress(data, INFLATE_STEP_BYTES)
            data = inflater.unconsumed_tail
            inflated += len(part)
            if inflated > max_body_bytes:
                raise MalformedRecord(
                    f"compressed body of {len(body)} bytes inflates past the "
                    f"{max_body_bytes}-byte limit"
                )
            if not part and not data:
                raise MalformedRecord(f"compressed body of {len(body)} bytes is truncated")
            parts.append(part)
    except zlib.error as exc:
        raise MalformedRecord(f"compressed body does not inflate: {exc}") from None
    return b"".join(parts)


def _freeze_props(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


def _keys(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(k for k in value.split(" ") if k)
    return tuple(value)


@attrs.frozen(kw_only=True, init=False)
class Message:
    """A message to send.

    ``keys`` may be given as one space-separated string or any sequence (kept as a tuple);
    ``properties`` are copied. The ``__init__`` is written out (one Message per send: attrs'
    generated one, a frozen setattr per field and two converters, was a tenth of the
    producer's CPU per message); ``attrs.evolve`` goes through it like any caller.
    """

    topic: str
    body: bytes
    tags: str | None = None
    keys: tuple[str, ...] = ()
    properties: Mapping[str, str] = attrs.field(factory=dict)
    #: RocketMQ delay level (1..18: 1 s .. 2 h); 0 delivers at once.
    delay_level: int = 0
    #: Timer message (RocketMQ 5.x, any time up to the broker's timerMaxDelaySec, 3 days by
    #: default): deliver at this epoch time in ms (TIMER_DELIVER_MS), or this many seconds
    #: after the broker stores it (TIMER_DELAY_MS). At most one of the two, and not with
    #: ``delay_level``.
    deliver_at_ms: int | None = None
    delay_s: float | None = None
    #: User flag stored verbatim in the record.
    flag: int = 0
    #: Wait for the configured durability (flush / replication) before answering.
    wait_store: bool = True
    #: The message id (UNIQ_KEY) to send with; None: the producer makes one. A gateway
    #: (the gRPC proxy) passes on the id its client chose.
    msg_id: str | None = None

    def __init__(
        self,
        *,
        topic: str,
        body: bytes,
        tags: str | None = None,
        keys: str | tuple[str, ...] | list[str] = (),
        properties: Mapping[str, str] | None = None,
        delay_level: int = 0,
        deliver_at_ms: int | None = None,
        delay_s: float | None = None,
        flag: int = 0,
        wait_store: bool = True,
        msg_id: str | None = None,
    ) -> None:
        # Slots set through their descriptors (what attrs' frozen init does, minus a call
        # per field); the checks below run only when a field they check is set.
        _set_topic(self, topic)
        _set_body(self, body)
        _set_tags(self, tags)
        _set_keys(self, keys if type(keys) is tuple else _keys(keys))
        _set_properties(self, {} if properties is None else dict(properties))
        _set_delay_level(self, delay_level)
        _set_deliver_at_ms(self, deliver_at_ms)
        _set_delay_s(self, delay_s)
        _set_flag(self, flag)
        _set_wait_store(self, wait_store)
        _set_msg_id(self, msg_id)
        if properties or delay_level or deliver_at_ms is not None or delay_s is not None:
            self.__attrs_post_init__()

    def __attrs_post_init__(self) -> None:
        # One Message per send: the common one (no properties, no timer) checks little.
        if self.properties and (clash := RESERVED_PROPERTIES.intersection(self.properties)):
            raise ValueError(f"properties {sorted(clash)} are set by the SDK; use the fields")
        if not self.delay_level and self.deliver_at_ms is None and self.delay_s is None:
            return
        if not 0 <= self.delay_level <= 18:
            raise ValueError(f"delay_level must be 0..18, not {self.delay_level}")
        timers = (
            (self.delay_level != 0) + (self.deliver_at_ms is not None) + (self.delay_s is not None)
        )
        if timers > 1:
            raise ValueError("set one of delay_level, deliver_at_ms and delay_s")
        if self.delay_s is not None and not 0 <= self.delay_s < 1e12:
            raise ValueError(f"delay_s must be >= 0, not {self.delay_s}")
        if self.deliver_at_ms is not None and not 0 <= self.deliver_at_ms < 1 << 62:
            raise ValueError(f"deliver_at_ms must be an epoch time in ms, not {self.deliver_at_ms}")

    @property
    def is_delayed(self) -> bool:
        """Whether the broker holds the message back (a delay level or a timer)."""
        return bool(self.delay_level) or self.deliver_at_ms is not None or self.delay_s is not None

    def wire_properties(self, uniq_key: str) -> dict[str, str]:
        props = dict(self.properties)
        if self.tags:
            props[PROPERTY_TAGS] = self.tags
        if self.keys:
            props[PROPERTY_KEYS] = " ".join(self.keys)
        if self.delay_level:
            props[PROPERTY_DELAY] = str(self.delay_level)
        if self.deliver_at_ms is not None:
            props[PROPERTY_TIMER_DELIVER_MS] = str(self.deliver_at_ms)
        if self.delay_s is not None:
            props[PROPERTY_TIMER_DELAY_MS] = str(round(self.delay_s * 1000))
        if not self.wait_store:
            props[PROPERTY_WAIT] = "false"
        props[PROPERTY_UNIQ_KEY] = uniq_key
        return props


_slot = Message.__dict__
_set_topic = _slot["topic"].__set__
_set_body = _slot["body"].__set__
_set_tags = _slot["tags"].__set__
_set_keys = _slot["keys"].__set__
_set_properties = _slot["properties"].__set__
_set_delay_level = _slot["delay_level"].__set__
_set_deliver_at_ms = _slot["deliver_at_ms"].__set__
_set_delay_s = _slot["delay_s"].__set__
_set_flag = _slot["flag"].__set__
_set_wait_store = _slot["wait_store"].__set__
_set_msg_id = _slot["msg_id"].__set__
del _slot


class SendStatus(enum.Enum):
    """RocketMQ's SendStatus: every value but SEND_OK means stored, not fully durable."""

    SEND_OK = "SEND_OK"
    FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"
    FLUSH_SLAVE_TIMEOUT = "FLUSH_SLAVE_TIMEOUT"
    SLAVE_NOT_AVAILABLE = "SLAVE_NOT_AVAILABLE"


@attrs.frozen(kw_only=True)
class SendResult:
    status: SendStatus
    #: The client-side id (UNIQ_KEY), what ``ReceivedMessage.msg_id`` will say.
    msg_id: str
    #: The broker's id: store address + CommitLog offset (what ali-ons calls msgId).
    offset_msg_id: str
    queue: MessageQueue
    queue_offset: int


#: ``SendResult`` from its fields in order (slot_builder): a producer makes one per message.
make_send_result = slot_builder(SendResult)


@attrs.frozen(kw_only=True)
class ReceivedMessage:
    """A message as a consumer sees it."""

    topic: str
    body: bytes
    tags: str | None
    keys: tuple[str, ...]
    properties: Mapping[str, str]
    msg_id: str
    offset_msg_id: str
    queue: MessageQueue
    queue_offset: int
    commit_log_offset: int
    born_timestamp_ms: int
    store_timestamp_ms: int
    born_host: tuple[str, int]
    store_host: tuple[str, int]
    reconsume_times: int
    sys_flag: int
    flag: int

    @property
    def original_topic(self) -> str:
        """The topic the message was first sent to (retries carry it in RETRY_TOPIC)."""
        return self.properties.get(PROPERTY_RETRY_TOPIC, self.topic)

    @classmethod
    def from_record(
        cls,
        record: MessageRecord,
        broker_name: str,
        max_body_bytes: int = MAX_MESSAGE_BYTES,
        *,
        queue: MessageQueue | None = None,
    ) -> ReceivedMessage:
        """Raises ``MalformedRecord`` when the body does not inflate (see ``inflate``).

        ``queue``: the record's queue when the caller has it (a pull's messages share
        one), else one is built from the record.
        """
        return received_message(
            record.topic,
            inflate(record.body, record.sys_flag, max_body_bytes),
            dict(record.properties),
            queue
            if queue is not None
            and queue.topic == record.topic
            and queue.broker_name == broker_name
            and queue.queue_id == record.queue_id
            else MessageQueue(
                topic=record.topic, broker_name=broker_name, queue_id=record.queue_id
            ),
            offset_msg_id(record.store_host[0], record.store_host[1], record.physical_offset),
            record.queue_offset,
            record.physical_offset,
            record.born_timestamp_ms,
            record.store_timestamp_ms,
            record.born_host,
            record.store_host,
            record.reconsume_times,
            record.sys_flag,
            record.flag,
        )


def received_message(
    topic: str,
    body: bytes,
    props: dict[str, str],
    queue: MessageQueue,
    offset_id: str,
    queue_offset: int,
    commit_log_offset: int,
    born_timestamp_ms: int,
    store_timestamp_ms: int,
    born_host: tuple[str, int],
    store_host: tuple[str, int],
    reconsume_times: int,
    sys_flag: int,
    flag: int,
) -> ReceivedMessage:
    """A record's message from its decoded fields (``body`` inflated, ``props`` the
    consumer's own dict): the id, tags, keys and reconsume count read from the properties.
    For ``ReceivedMessage.from_record`` and the consumer's one-pass pull-body decoder."""
    reconsume = props.get(PROPERTY_RECONSUME_TIME)
    # ASCII digits of an int32 only: str.isdigit also takes "²", which int() refuses, and
    # int() refuses over 4,300 digits; either would fail the whole pull (a broker's bytes).
    if reconsume is not None and _RECONSUME_DIGITS.fullmatch(reconsume):
        reconsume_times = max(reconsume_times, int(reconsume))
    keys = props.get(PROPERTY_KEYS)
    # Positional in field order (slot_builder): a consumer builds one per message.
    return _make_received(
        topic,
        body,
        props.get(PROPERTY_TAGS),
        tuple(k for k in keys.split(KEY_SEPARATOR) if k) if keys else (),
        props,
        props.get(PROPERTY_UNIQ_KEY) or offset_id,
        offset_id,
        queue,
        queue_offset,
        commit_log_offset,
        born_timestamp_ms,
        store_timestamp_ms,
        born_host,
        store_host,
        reconsume_times,
        sys_flag,
        flag,
    )


_make_received = slot_builder(ReceivedMessage)
#: A RECONSUME_TIME property received_message takes (at most 9 digits: an int32).
_RECONSUME_DIGITS = re.compile(r"[0-9]{1,9}")
