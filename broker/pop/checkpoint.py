"""Pop checkpoints and acks as revive-log records, and the revive decision over them.

Rules (apache/rocketmq PopCheckPoint, AckMsg, PopReviveService):
- A pop that hands out messages appends one checkpoint (CK, tag ``ck``) per queue it read
  to a queue of the revive topic ``rmq_sys_REVIVE_LOG_<cluster>``: group, stored topic,
  queue, the first offset and the others as differences, pop time and invisible time. An
  ACK (tag ``ack``) names the CK by (group, topic, queue, start offset, pop time) and the
  acknowledged offset; it goes to the same revive queue, after its CK. Both are JSON with
  RocketMQ's short keys (``so``, ``pt``, ``it``, ``d``, ``ao`` ...).
- The revive log lives in the CommitLog, so it is flushed and replicated with the
  messages: a restarted or promoted broker reads it again from the committed revive offset
  and knows every open checkpoint and every ack written before.
- ``ReviveQueue`` is fed the revive queue in order. A checkpoint is open until every one of
  its offsets is acked (closed quietly) or its invisible time lapses (``due``: the
  unacknowledged offsets are to be delivered again; the caller then calls ``finish``). The
  revive offset that may be committed is the revive-log offset of the oldest open
  checkpoint, or the end of what was read: nothing open is ever behind it, so a restart
  forgets no ack (an ack read again is applied again) and loses no checkpoint.
- An ack whose checkpoint is not open (already revived or finished) changes nothing: its
  message was, or will be, delivered again; at-least-once allows that.
- Pure: time comes in as ``now_ms``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from protocol.errors import MalformedBody
from protocol.javanum import INT32_RANGE, INT64_RANGE, in_range

CkKey = tuple[str, str, int, int, int]  # group, stored topic, queue id, start offset, pop time


def _int(obj: dict[str, Any], key: str, what: str, bounds: tuple[int, int] = INT64_RANGE) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not in_range(value, bounds):
        raise MalformedBody(f"{what}: {key!r} is not a number in range")
    return value


def _str(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise MalformedBody(f"{what}: {key!r} is not a string")
    return value


def _opt_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedBody(f"{what} is not a JSON object")
    return obj


@attrs.frozen(kw_only=True)
class CheckPoint:
    """Messages of one queue handed out by one pop, invisible until ``revive_time_ms``."""

    group: str
    topic: str
    queue_id: int
    start_offset: int
    pop_time_ms: int
    invisible_time_ms: int
    #: Offsets of the messages minus ``start_offset`` (ascending; first is 0).
    offset_diffs: tuple[int, ...]
    broker_name: str = ""

    @property
    def key(self) -> CkKey:
        return (self.group, self.topic, self.queue_id, self.start_offset, self.pop_time_ms)

    @property
    def revive_time_ms(self) -> int:
        return self.pop_time_ms + self.invisible_time_ms

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(self.start_offset + d for d in self.offset_diffs)

    @classmethod
    def of(
        cls,
        *,
        group: str,
        topic: str,
        queue_id: int,
        offsets: Sequence[int],
        pop_time_ms: int,
        invisible_time_ms: int,
        broker_name: str = "",
    ) -> CheckPoint:
        assert offsets and list(offsets) == sorted(set(offsets)), offsets
        start = offsets[0]
        return cls(
            group=group,
            topic=topic,
            queue_id=queue_id,
            start_offset=start,
            pop_time_ms=pop_time_ms,
            invisible_time_ms=invisible_time_ms,
            offset_diffs=tuple(o - start for o in offsets),
            broker_name=broker_name,
        )

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "so": self.start_offset,
                "pt": self.pop_time_ms,
                "it": self.invisible_time_ms,
                "bm": 0,
                "n": len(self.offset_diffs),
                "q": self.queue_id,
                "t": self.topic,
                "c": self.group,
                "d": list(self.offset_diffs),
                "bn": self.broker_name,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, body: bytes) -> CheckPoint:
        what = "pop checkpoint"
        obj = _object(body, what)
        diffs = obj.get("d")
        if not isinstance(diffs, list) or not diffs or len(diffs) > 1024:
            raise MalformedBody(f"{what}: 'd' must list 1..1024 offset differences")
        if not all(isinstance(d, int) and 0 <= d < 2**31 for d in diffs) or diffs != sorted(
            set(diffs)
        ):
            raise MalformedBody(f"{what}: 'd' must be ascending distinct offsets >= 0")
        start = _int(obj, "so", what)
        if start < 0:
            raise MalformedBody(f"{what}: start offset {start} < 0")
        return cls(
            group=_str(obj, "c", what),
            topic=_str(obj, "t", what),
            queue_id=_int(obj, "q", what, INT32_RANGE),
            start_offset=start,
            pop_time_ms=_int(obj, "pt", what),
            invisible_time_ms=_int(obj, "it", what),
            offset_diffs=tuple(diffs),
            broker_name=_opt_str(obj, "bn"),
        )


@attrs.frozen(kw_only=True)
class Ack:
    """Messages of one checkpoint acknowledged: an ACK record (tag ``ack``, ``ao``) for one,
    a batch-ack record (tag ``bAck``, ``aol``; BATCH_ACK_MESSAGE) for several."""

    group: str
    topic: str
    queue_id: int
    start_offset: int
    pop_time_ms: int
    ack_offsets: tuple[int, ...]
    broker_name: str = ""

    @property
    def key(self) -> CkKey:
        return (self.group, self.topic, self.queue_id, self.start_offset, self.pop_time_ms)

    @property
    def is_batch(self) -> bool:
        return len(self.ack_offsets) != 1

    def to_json(self) -> bytes:
        offsets: dict[str, Any] = (
            {"aol": list(self.ack_offsets)} if self.is_batch else {"ao": self.ack_offsets[0]}
        )
        return json.dumps(
            {
                **offsets,
                "so": self.start_offset,
                "c": self.group,
                "t": self.topic,
                "q": self.queue_id,
                "pt": self.pop_time_ms,
                "bn": self.broker_name,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Ack:
        """An ACK (``ao``) or batch-ack (``aol``) record's body."""
        what = "pop ack"
        obj = _object(body, what)
        if "aol" in obj:
            offsets = obj["aol"]
            if (
                not isinstance(offsets, list)
                or len(offsets) > MAX_BATCH_ACK_OFFSETS
                or not all(isinstance(o, int) and 0 <= o < 2**63 for o in offsets)
            ):
                raise MalformedBody(
                    f"{what}: 'aol' must list at most {MAX_BATCH_ACK_OFFSETS} offsets"
                )
            ack_offsets = tuple(offsets)
        else:
            ack_offsets = (_int(obj, "ao", what),)
        return cls(
            group=_str(obj, "c", what),
            topic=_str(obj, "t", what),
            queue_id=_int(obj, "q", what, INT32_RANGE),
            start_offset=_int(obj, "so", what),
            pop_time_ms=_int(obj, "pt", what),
            ack_offsets=ack_offsets,
            broker_name=_opt_str(obj, "bn"),
        )


#: Offsets one batch-ack record may name (a checkpoint names at most 1024 messages).
MAX_BATCH_ACK_OFFSETS = 1024


@attrs.define
class OpenCheckPoint:
    ck: CheckPoint
    #: Queue offset of the CK record in its revive queue.
    revive_offset: int
    acked: set[int] = attrs.field(factory=set)

    @property
    def unacked(self) -> tuple[int, ...]:
        return tuple(o for o in self.ck.offsets if o not in self.acked)


@attrs.define
class ReviveQueue:
    """The open checkpoints of one revive queue, fed its records in order."""

    #: Next revive-queue offset to read.
    read_offset: int = 0
    open: dict[CkKey, OpenCheckPoint] = attrs.field(factory=dict)
    #: Checkpoints closed because every message was acked.
    closed_acked: int = 0

    def add_checkpoint(self, revive_offset: int, ck: CheckPoint) -> None:
        assert revive_offset >= self.read_offset, (revive_offset, self.read_offset)
        self.read_offset = revive_offset + 1
        if ck.key not in self.open:
            self.open[ck.key] = OpenCheckPoint(ck=ck, revive_offset=revive_offset)

    def add_ack(self, revive_offset: int, ack: Ack) -> None:
        """An ACK or batch-ack record at ``revive_offset``."""
        assert revive_offset >= self.read_offset, (revive_offset, self.read_offset)
        self.read_offset = revive_offset + 1
        point = self.open.get(ack.key)
        if point is None:
            return
        point.acked.update(o for o in ack.ack_offsets if o in point.ck.offsets)
        if not point.unacked:
            del self.open[ack.key]
            self.closed_acked += 1

    def skip(self, revive_offset: int) -> None:
        """A revive record that is neither (or not readable): read past it."""
        self.read_offset = max(self.read_offset, revive_offset + 1)

    def due(self, now_ms: int) -> list[OpenCheckPoint]:
        """Open checkpoints whose invisible time has lapsed, oldest revive time first."""
        found = [p for p in self.open.values() if p.ck.revive_time_ms <= now_ms]
        return sorted(found, key=lambda p: (p.ck.revive_time_ms, p.revive_offset))

    def finish(self, key: CkKey) -> None:
        """The checkpoint's unacknowledged messages were delivered again."""
        self.open.pop(key, None)

    def next_due_ms(self) -> int | None:
        if not self.open:
            return None
        return min(p.ck.revive_time_ms for p in self.open.values())

    def commit_offset(self) -> int:
        """The revive offset safe to persist: no open checkpoint lies before it."""
        if not self.open:
            return self.read_offset
        return min(p.revive_offset for p in self.open.values())
