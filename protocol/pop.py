"""Pop consumption on the wire: headers, the receipt handle (``extraInfo``) and its offsets.

Rules (apache/rocketmq PopMessageRequestHeader, AckMessageRequestHeader,
ChangeInvisibleTimeRequestHeader, ExtraInfoUtil, KeyBuilder, PopAckConstants):
- POP_MESSAGE (200050) answers the records as they lie in the CommitLog (like a pull) and
  names them in its header: ``popTime``, ``invisibleTime``, ``reviveQid``, ``restNum``,
  ``startOffsetInfo`` (``"<retry> <queueId> <startOffset>"`` per queue, ``;``-joined),
  ``msgOffsetInfo`` (``"<retry> <queueId> <o1>,<o2>..."``) and, for order pops,
  ``orderCountInfo``. ``<retry>`` is ``0`` for the topic itself, ``1`` for the group's pop
  retry topic ``%RETRY%<group>_<topic>``, ``2`` for the V2 spelling ``%RETRY%<group>+<topic>``.
- The client turns them into one receipt handle per message, the ``POP_CK`` property:
  ``"<ckStartOffset> <popTime> <invisibleTime> <reviveQid> <retry> <brokerName> <queueId>
  <queueOffset>"`` (space-separated, ``MessageConst.KEY_SEPARATOR``). ACK_MESSAGE (200051)
  and CHANGE_MESSAGE_INVISIBLETIME (200053) send it back as ``extraInfo`` with the
  message's queue offset as ``offset``. Order pops carry ``reviveQid`` 999.
- Every number in a handle is range-checked on the way in: a bad handle is a
  ``MalformedHandle`` naming the part, never an exception from ``int()``.
- Pure.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence

import attrs

from protocol.codes import RequestCode
from protocol.errors import InvalidParameter, MalformedBody
from protocol.group_topics import RETRY_GROUP_TOPIC_PREFIX
from protocol.headers import Header, Long
from protocol.javanum import INT32_RANGE, INT64_RANGE, parse_java_int

#: ``reviveQid`` of an order (FIFO) pop: no checkpoint, the queue is held until acked.
ORDER_REVIVE_QID = 999
#: The group whose consumer offsets say how far the revive service has read.
REVIVE_GROUP = "CID_RMQ_SYS_REVIVE_GROUP"
REVIVE_TOPIC_PREFIX = "rmq_sys_REVIVE_LOG_"
CK_TAG = "ck"
ACK_TAG = "ack"
BATCH_ACK_TAG = "bAck"
#: Message property holding the receipt handle (MessageConst.PROPERTY_POP_CK).
PROPERTY_POP_CK = "POP_CK"
PROPERTY_FIRST_POP_TIME = "1ST_POP_TIME"

RETRY_NONE = "0"
RETRY_V1 = "1"
RETRY_V2 = "2"

#: ConsumeInitMode: where a group without a pop offset starts.
INIT_MODE_MIN = 0
INIT_MODE_MAX = 1


class MalformedHandle(InvalidParameter):
    """A receipt handle (``extraInfo``) that does not parse."""


def revive_topic(cluster_name: str) -> str:
    return REVIVE_TOPIC_PREFIX + cluster_name


def pop_retry_topic(topic: str, group: str) -> str:
    """``%RETRY%<group>_<topic>``: where a pop group's unacknowledged messages come back."""
    return f"{RETRY_GROUP_TOPIC_PREFIX}{group}_{topic}"


def retry_mark(topic: str) -> str:
    """``<retry>`` of a stored topic: 0 normal, 1 pop retry (V1), 2 pop retry (V2)."""
    if topic.startswith(RETRY_GROUP_TOPIC_PREFIX):
        return RETRY_V2 if "+" in topic else RETRY_V1
    return RETRY_NONE


def real_topic(topic: str, group: str, mark: str) -> str:
    """The stored topic a handle's ``<retry>`` mark names, given the request's topic."""
    if mark == RETRY_NONE:
        return topic
    if mark == RETRY_V1:
        return pop_retry_topic(topic, group)
    if mark == RETRY_V2:
        return f"{RETRY_GROUP_TOPIC_PREFIX}{group}+{topic}"
    raise MalformedHandle(f"retry mark {mark!r} is not 0, 1 or 2")


@attrs.frozen(kw_only=True)
class ReceiptHandle:
    """One popped message's handle (the ``POP_CK`` property / ``extraInfo``)."""

    ck_offset: int
    pop_time_ms: int
    invisible_time_ms: int
    revive_qid: int
    retry: str
    broker_name: str
    queue_id: int
    queue_offset: int

    @property
    def is_order(self) -> bool:
        return self.revive_qid == ORDER_REVIVE_QID

    @property
    def visible_at_ms(self) -> int:
        return self.pop_time_ms + self.invisible_time_ms

    def encode(self) -> str:
        return " ".join(
            (
                str(self.ck_offset),
                str(self.pop_time_ms),
                str(self.invisible_time_ms),
                str(self.revive_qid),
                self.retry,
                self.broker_name,
                str(self.queue_id),
                str(self.queue_offset),
            )
        )

    @classmethod
    def decode(cls, text: str, *, offset: int | None = None) -> ReceiptHandle:
        """Parse ``extraInfo``; ``offset`` (the request's) stands in for a 7-part handle."""
        parts = text.split(" ")
        if len(parts) == 7 and offset is not None:
            parts.append(str(offset))
        if len(parts) != 8:
            raise MalformedHandle(f"extraInfo has {len(parts)} parts, not 8: {text[:200]!r}")
        if parts[4] not in (RETRY_NONE, RETRY_V1, RETRY_V2):
            raise MalformedHandle(f"retry mark {parts[4][:20]!r} is not 0, 1 or 2")
        if not parts[5]:
            raise MalformedHandle("extraInfo has an empty broker name")

        def num(i: int, what: str, bounds: tuple[int, int]) -> int:
            value = parse_java_int(parts[i], bounds)
            if value is None or value < 0:
                raise MalformedHandle(f"extraInfo {what} {parts[i][:30]!r} is not a number >= 0")
            return value

        return cls(
            ck_offset=num(0, "start offset", INT64_RANGE),
            pop_time_ms=num(1, "pop time", INT64_RANGE),
            invisible_time_ms=num(2, "invisible time", INT64_RANGE),
            revive_qid=num(3, "revive queue id", INT32_RANGE),
            retry=parts[4],
            broker_name=parts[5],
            queue_id=num(6, "queue id", INT32_RANGE),
            queue_offset=num(7, "queue offset", INT64_RANGE),
        )


# --- the pop response's offset infos -------------------------------------------------------


def encode_start_offsets(entries: Sequence[tuple[str, int, int]]) -> str:
    """``startOffsetInfo``/``orderCountInfo`` from ``(stored topic, queue id, value)``."""
    return ";".join(f"{retry_mark(t)} {q} {v}" for t, q, v in entries)


def encode_msg_offsets(entries: Sequence[tuple[str, int, Sequence[int]]]) -> str:
    """``msgOffsetInfo`` from ``(stored topic, queue id, offsets)``."""
    return ";".join(f"{retry_mark(t)} {q} {','.join(map(str, o))}" for t, q, o in entries)


def _split_info(text: str | None, what: str) -> list[tuple[str, str, str]]:
    if not text:
        return []
    out = []
    for one in text.split(";"):
        parts = one.split(" ")
        if len(parts) != 3:
            raise MalformedHandle(f"{what} entry {one[:100]!r} does not have 3 parts")
        out.append((parts[0], parts[1], parts[2]))
    return out


def _int(text: str, what: str) -> int:
    value = parse_java_int(text, INT64_RANGE)
    if value is None:
        raise MalformedHandle(f"{what} {text[:30]!r} is not a number")
    return value


def parse_start_offsets(text: str | None) -> dict[str, int]:
    """``{"<retry>@<queueId>": startOffset}``, as ExtraInfoUtil.parseStartOffsetInfo."""
    out: dict[str, int] = {}
    for mark, qid, value in _split_info(text, "startOffsetInfo"):
        key = f"{mark}@{qid}"
        if key in out:
            raise MalformedHandle(f"startOffsetInfo names {key} twice")
        out[key] = _int(value, "start offset")
    return out


def parse_msg_offsets(text: str | None) -> dict[str, list[int]]:
    """``{"<retry>@<queueId>": [offsets]}``, as ExtraInfoUtil.parseMsgOffsetInfo."""
    out: dict[str, list[int]] = {}
    for mark, qid, value in _split_info(text, "msgOffsetInfo"):
        key = f"{mark}@{qid}"
        if key in out:
            raise MalformedHandle(f"msgOffsetInfo names {key} twice")
        out[key] = [_int(v, "message offset") for v in value.split(",")]
    return out


def handles_for(
    records: Sequence[tuple[str, int, int]],
    header: PopMessageResponseHeader,
    broker_name: str,
) -> list[ReceiptHandle]:
    """The handle of each popped ``(stored topic, queue id, queue offset)``, in order
    (MQClientAPIImpl.processPopResponse)."""
    starts = parse_start_offsets(header.start_offset_info)
    out = []
    for topic, queue_id, offset in records:
        mark = retry_mark(topic)
        start = starts.get(f"{mark}@{queue_id}")
        if start is None:
            raise MalformedHandle(f"startOffsetInfo has no entry for {mark}@{queue_id}")
        out.append(
            ReceiptHandle(
                ck_offset=start,
                pop_time_ms=header.pop_time,
                invisible_time_ms=header.invisible_time,
                revive_qid=header.revive_qid,
                retry=mark,
                broker_name=broker_name,
                queue_id=queue_id,
                queue_offset=offset,
            )
        )
    return out


def order_counts(text: str | None) -> Mapping[str, int]:
    """``orderCountInfo`` as ``{"<retry>@<queueId>" or "<retry>@qo<q>%<o>": count}``."""
    out: dict[str, int] = {}
    for mark, key, value in _split_info(text, "orderCountInfo"):
        out[f"{mark}@{key}"] = _int(value, "order count")
    return out


# --- BATCH_ACK_MESSAGE body ------------------------------------------------------------------

#: Entries in one BATCH_ACK_MESSAGE body, and offsets one entry may ack.
MAX_BATCH_ACK_ENTRIES = 1024
MAX_BATCH_ACK_BITS = 1024


@attrs.frozen(kw_only=True)
class BatchAckEntry:
    """Acks of messages of one pop of one queue (``BatchAck``: ``c t r so q rq pt it b``;
    ``b`` is a Java ``BitSet`` of ``offset - so``, its ``toByteArray`` in base64)."""

    group: str
    topic: str
    retry: str
    start_offset: int
    queue_id: int
    revive_qid: int
    pop_time_ms: int
    invisible_time_ms: int
    offsets: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        bits = 0
        for offset in self.offsets:
            bits |= 1 << (offset - self.start_offset)
        raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
        return {
            "c": self.group,
            "t": self.topic,
            "r": self.retry,
            "so": self.start_offset,
            "q": self.queue_id,
            "rq": self.revive_qid,
            "pt": self.pop_time_ms,
            "it": self.invisible_time_ms,
            "b": base64.b64encode(raw).decode(),
        }

    @classmethod
    def from_json(cls, obj: object) -> BatchAckEntry:
        what = "BatchAck"
        if not isinstance(obj, dict):
            raise MalformedBody(f"{what} is not a JSON object")

        def num(key: str, bounds: tuple[int, int]) -> int:
            value = obj.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MalformedBody(f"{what}: {key!r} is not a number >= 0")
            if not bounds[0] <= value <= bounds[1]:
                raise MalformedBody(f"{what}: {key!r} is out of range")
            return value

        def text(key: str) -> str:
            value = obj.get(key)
            if not isinstance(value, str) or not value:
                raise MalformedBody(f"{what}: {key!r} is not a string")
            return value

        raw_bits = obj.get("b")
        if isinstance(raw_bits, str):
            try:
                raw = base64.b64decode(raw_bits, validate=True)
            except ValueError:
                raise MalformedBody(f"{what}: 'b' is not base64") from None
        elif isinstance(raw_bits, list) and all(
            isinstance(b, int) and -128 <= b <= 255 for b in raw_bits
        ):
            raw = bytes(b & 0xFF for b in raw_bits)
        else:
            raise MalformedBody(f"{what}: 'b' is not a bit set")
        if len(raw) * 8 > MAX_BATCH_ACK_BITS:
            raise MalformedBody(f"{what}: 'b' names more than {MAX_BATCH_ACK_BITS} offsets")
        start = num("so", INT64_RANGE)
        bits = int.from_bytes(raw, "little")
        offsets = tuple(start + i for i in range(bits.bit_length()) if bits >> i & 1)
        retry = text("r")
        if retry not in (RETRY_NONE, RETRY_V1, RETRY_V2):
            raise MalformedBody(f"{what}: retry mark {retry[:10]!r} is not 0, 1 or 2")
        return cls(
            group=text("c"),
            topic=text("t"),
            retry=retry,
            start_offset=start,
            queue_id=num("q", INT32_RANGE),
            revive_qid=num("rq", INT32_RANGE),
            pop_time_ms=num("pt", INT64_RANGE),
            invisible_time_ms=num("it", INT64_RANGE),
            offsets=offsets,
        )


def encode_batch_ack_body(broker_name: str, entries: Sequence[BatchAckEntry]) -> bytes:
    return json.dumps(
        {"brokerName": broker_name, "acks": [e.to_json() for e in entries]},
        separators=(",", ":"),
    ).encode()


def decode_batch_ack_body(body: bytes) -> tuple[str, list[BatchAckEntry]]:
    """(broker name, entries) of a BATCH_ACK_MESSAGE body; ``MalformedBody`` if bad."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"batch ack body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedBody("batch ack body is not a JSON object")
    acks = obj.get("acks")
    if acks is None:
        acks = []
    if not isinstance(acks, list) or len(acks) > MAX_BATCH_ACK_ENTRIES:
        raise MalformedBody(f"'acks' must list at most {MAX_BATCH_ACK_ENTRIES} entries")
    name = obj.get("brokerName")
    return (name if isinstance(name, str) else ""), [BatchAckEntry.from_json(a) for a in acks]


# --- headers -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PopMessageRequestHeader(Header):
    CODE = RequestCode.POP_MESSAGE
    consumer_group: str
    topic: str
    #: -1: any readable queue of the topic.
    queue_id: int
    max_msg_nums: int
    invisible_time: Long
    #: Long polling: how long to wait for a message when none is there (ms).
    poll_time: Long
    born_time: Long
    init_mode: int
    exp_type: str | None = None
    exp: str | None = None
    order: bool | None = None
    attempt_id: str | None = None


@attrs.frozen(kw_only=True)
class PopMessageResponseHeader(Header):
    pop_time: Long
    invisible_time: Long
    revive_qid: int
    rest_num: Long
    start_offset_info: str | None = None
    msg_offset_info: str | None = None
    order_count_info: str | None = None


@attrs.frozen(kw_only=True)
class AckMessageRequestHeader(Header):
    CODE = RequestCode.ACK_MESSAGE
    consumer_group: str
    topic: str
    queue_id: int
    extra_info: str
    offset: Long


@attrs.frozen(kw_only=True)
class ChangeInvisibleTimeRequestHeader(Header):
    CODE = RequestCode.CHANGE_MESSAGE_INVISIBLETIME
    consumer_group: str
    topic: str
    queue_id: int
    extra_info: str
    offset: Long
    invisible_time: Long


@attrs.frozen(kw_only=True)
class ChangeInvisibleTimeResponseHeader(Header):
    pop_time: Long
    invisible_time: Long
    revive_qid: int
