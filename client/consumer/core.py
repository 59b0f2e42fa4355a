"""The pure core of consuming: queue allocation, in-flight offsets, pull answers, replicas.

Rules:
- Pure: no trio, sockets, files or clocks; time comes in as ``now_s``. Everything here
  is tested without a broker (tests/unit/test_sdk_allocate.py).
- ``allocate_averagely`` is RocketMQ's AllocateMessageQueueAveragely (wire.md §4.5), so
  our consumers and Java's agree on who owns which queue.
- ``InflightOffsets`` decides what may be committed: never past an unfinished message.
- ``parse_pull_response`` / ``check_pull_offsets`` turn a PULL_MESSAGE answer into a
  ``PullResult`` and refuse offsets a sane broker cannot give (``ProtocolError``).
- ``decode_pull_body``: one bad record never stops a queue. Records that fail a check
  are skipped and listed (``SkippedRecord``) while the good ones of the same answer are
  delivered; the answer always moves the queue forward (issue 13, rows 5 and 6).
- ``pull_replica`` / ``failover_broker_id`` choose the broker of a group to pull from
  (findBrokerAddressInSubscribe); ``RouteHealth`` tells when a route looks degraded.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from client.consumer.records import RECORD_HEAD, compiled_walk, quick_message
from client.consumer.types import PullResult, PullStatus, SkippedRecord
from client.message import MAX_MESSAGE_BYTES, ReceivedMessage
from protocol.bodies import EXPRESSION_TAG, SubscriptionData
from protocol.codes import ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import MalformedRecord, NetworkError, ProtocolError, error_for_response
from protocol.headers import PullMessageResponseHeader
from protocol.message import (
    BLANK_MARKER_BYTES,
    MAGIC_V1,
    MAGIC_V2,
    MIN_RECORD_BYTES,
    PROPERTY_RETRY_TOPIC,
    MessageRecord,
    decode_record,
    peek_record_header,
)
from protocol.route import MASTER_ID, MessageQueue

if TYPE_CHECKING:  # a value the route cache holds; this module stays free of trio
    from client.routes import TopicInfo

#: PullSysFlag bits (wire.md §2.4).
PULL_COMMIT_OFFSET = 0x1
PULL_SUSPEND = 0x2
PULL_SUBSCRIPTION = 0x4

#: A group absent from a topic's route this long is no longer expected back.
FORGET_GROUP_S = 600.0


def allocate_averagely(
    queues: Sequence[MessageQueue], client_ids: Sequence[str], me: str
) -> list[MessageQueue]:
    """AllocateMessageQueueAveragely (wire.md §4.5): my consecutive slice of the sorted queues.

    With Q queues and C clients, client i (in sorted order) gets ``Q // C + 1`` queues if
    ``i < Q % C``, else ``Q // C``, starting at ``i * size`` (+ ``Q % C`` for the others);
    when Q <= C the first Q clients get one each. A client not in the list gets nothing.
    """
    all_queues = sorted(set(queues))
    cids = sorted(set(client_ids))
    if me not in cids or not all_queues:
        return []
    index = cids.index(me)
    q, c = len(all_queues), len(cids)
    mod = q % c
    if q <= c:
        size = 1
    elif mod > 0 and index < mod:
        size = q // c + 1
    else:
        size = q // c
    start = index * size if mod > 0 and index < mod else index * size + mod
    count = min(size, q - start)
    return all_queues[start : start + count] if count > 0 else []


@attrs.define
class InflightOffsets:
    """The offsets of one queue handed out and not finished, and what may be committed.

    Offsets are added in increasing order (a queue is pulled front to back) and finish in
    any order. ``committable()`` is the lowest unfinished offset, or ``next_offset`` (the
    next offset to pull) when nothing is in flight. ``reset`` (after PULL_OFFSET_MOVED)
    starts a new generation; finishing an offset of an older generation does nothing.
    """

    next_offset: int
    generation: int = 0
    max_count_seen: int = 0
    _order: deque[int] = attrs.field(factory=deque)
    _open: set[int] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        assert self.next_offset >= 0, self.next_offset

    @property
    def count(self) -> int:
        return len(self._open)

    def add(self, offsets: Iterable[int]) -> None:
        """Hand out ``offsets`` (increasing, at or after ``next_offset``)."""
        last = self._order[-1] if self._order else -1
        for offset in offsets:
            assert offset > last and offset >= self.next_offset, (offset, last, self.next_offset)
            self._order.append(offset)
            self._open.add(offset)
            last = offset
        self.max_count_seen = max(self.max_count_seen, len(self._open))

    def advance(self, next_offset: int) -> None:
        """The next pull starts at ``next_offset`` (never backwards; see ``reset``)."""
        assert not self._order or next_offset > self._order[-1], (next_offset, self._order[-1])
        self.next_offset = max(self.next_offset, next_offset)

    def finish(self, offset: int, generation: int) -> bool:
        """Mark ``offset`` done; False when it was not in flight (or is of an old generation)."""
        if generation != self.generation or offset not in self._open:
            return False
        self._open.remove(offset)
        while self._order and self._order[0] not in self._open:
            self._order.popleft()
        return True

    def committable(self) -> int:
        return self._order[0] if self._order else self.next_offset

    def reset(self, next_offset: int) -> None:
        """Forget everything in flight and continue at ``next_offset`` (may go backwards)."""
        assert next_offset >= 0, next_offset
        self._order.clear()
        self._open.clear()
        self.next_offset = next_offset
        self.generation += 1


def accepts(subscription: SubscriptionData, message: ReceivedMessage) -> bool:
    """The client-side tag re-filter: the broker matched tag hash codes only."""
    return _accepts_tags(subscription, message.tags)


def _accepts_tags(subscription: SubscriptionData, tags: str | None) -> bool:
    if subscription.is_sub_all or subscription.expression_type != EXPRESSION_TAG:
        return True  # SQL92: the broker evaluated it on the whole message
    return tags is not None and tags in subscription.tags_set


def parse_pull_response(
    response: RemotingCommand,
    queue: MessageQueue,
    subscription: SubscriptionData,
    *,
    requested: int = 0,
    max_nums: int = 32,
    max_body_bytes: int = MAX_MESSAGE_BYTES,
) -> PullResult:
    """A PULL_MESSAGE response as a ``PullResult``; other codes raise their ``ServerError``.

    ``requested`` and ``max_nums`` are the pull's offset and count; bad records are
    skipped as ``decode_pull_body`` says.
    """
    statuses: dict[int, PullStatus] = {
        ResponseCode.SUCCESS: PullStatus.FOUND,
        ResponseCode.PULL_NOT_FOUND: PullStatus.NO_NEW_MSG,
        ResponseCode.PULL_RETRY_IMMEDIATELY: PullStatus.NO_MATCHED_MSG,
        ResponseCode.PULL_OFFSET_MOVED: PullStatus.OFFSET_ILLEGAL,
    }
    status = statuses.get(response.code)
    if status is None:
        raise error_for_response(response.code, response.remark)
    header = PullMessageResponseHeader.from_ext_fields(response.ext_fields)
    result = PullResult(
        status=status,
        next_begin_offset=header.next_begin_offset,
        min_offset=header.min_offset,
        max_offset=header.max_offset,
        suggest_which_broker_id=header.suggest_which_broker_id,
    )
    if status is not PullStatus.FOUND:
        return result
    body = decode_pull_body(
        response.body,
        queue,
        subscription,
        requested=requested,
        next_begin_offset=header.next_begin_offset,
        max_nums=max_nums,
        max_body_bytes=max_body_bytes,
    )
    return attrs.evolve(
        result,
        status=PullStatus.FOUND if body.messages else PullStatus.NO_MATCHED_MSG,
        messages=body.messages,
        skipped=body.skipped,
        next_begin_offset=body.next_begin_offset,
        resync=body.resync,
    )


@attrs.frozen(kw_only=True)
class PullBody:
    """What ``decode_pull_body`` made of a FOUND answer's body."""

    messages: tuple[ReceivedMessage, ...]
    skipped: tuple[SkippedRecord, ...]
    #: Where the next pull starts: the broker's ``nextBeginOffset``, or just past the last
    #: record read when the framing broke (the rest is pulled again).
    next_begin_offset: int
    resync: bool = False


_RECORD_MAGICS = (MAGIC_V1, MAGIC_V2)
assert RECORD_HEAD.size <= MIN_RECORD_BYTES  # a framed record holds the fixed fields
_CRC_MASK = 0x7FFFFFFF


def _record_starts(buf: bytes, pos: int) -> bool:
    """Whether ``pos`` is the end of ``buf`` or holds a record magic."""
    left = len(buf) - pos
    return left == 0 or (
        left >= BLANK_MARKER_BYTES and peek_record_header(buf, pos)[1] in _RECORD_MAGICS
    )


@attrs.define
class _BodyWalk:
    """``decode_pull_body``'s state: what was read so far and the last sane offset."""

    queue: MessageQueue
    requested: int
    next_begin_offset: int
    messages: list[ReceivedMessage] = attrs.field(factory=list)
    skipped: list[SkippedRecord] = attrs.field(factory=list)
    last: int = -1

    def done(self) -> PullBody:
        return PullBody(
            messages=tuple(self.messages),
            skipped=tuple(self.skipped),
            next_begin_offset=self.next_begin_offset,
        )

    def broken(self, pos: int, max_nums: int) -> PullBody:
        """The framing broke at ``pos``: keep what was read, say where to go on."""
        if self.last >= self.requested:  # records were read: pull again just past them
            return attrs.evolve(self.done(), next_begin_offset=self.last + 1)
        if max_nums > 1:
            return PullBody(messages=(), skipped=(), next_begin_offset=self.requested, resync=True)
        # A pull of one: the broker's next offset is just past the one record it sent.
        offset = self.next_begin_offset - 1
        unreadable = SkippedRecord(
            queue=self.queue,
            queue_offset=offset if offset >= self.requested else None,
            commit_log_offset=None,
            msg_id="",
            original_topic=self.queue.topic,
            reason=f"unreadable record at body offset {pos} (bad magic or size)",
        )
        return PullBody(
            messages=(), skipped=(unreadable,), next_begin_offset=self.next_begin_offset
        )


def decode_pull_body(
    buf: bytes,
    queue: MessageQueue,
    subscription: SubscriptionData,
    *,
    requested: int,
    next_begin_offset: int,
    max_nums: int,
    max_body_bytes: int = MAX_MESSAGE_BYTES,
) -> PullBody:
    """Decode a FOUND body; one bad record never costs the others (issue 13, row 5).

    A record that fails a check (CRC, properties, sizes, a body that does not inflate
    within ``max_body_bytes``) is skipped and listed when its framing holds (sane magic
    and size, and its fields agree with the size or the next record starts after it),
    with its offsets when they are sane (after the previous record, before
    ``next_begin_offset``). Records whose tags the subscription rejects are dropped
    quietly, as always. Where the framing breaks the rest cannot be read: the next pull
    starts just past the last record read; when the very first record is unreadable, a
    pull of one message (``max_nums`` 1) names it (the broker's next offset is just past
    it), else ``resync`` asks for that.
    """
    walk = _BodyWalk(queue=queue, requested=requested, next_begin_offset=next_begin_offset)
    walk.last = requested - 1
    whole = isinstance(buf, bytes)  # the one-pass decoder slices bytes (a frame's body)
    # Asked once per body, not per record: a subscription that takes a record without
    # tags (``*``, SQL92: the broker filtered) takes every record.
    take_all = _accepts_tags(subscription, None)
    # The compiled twin of this loop's common case, where built (client/consumer/records.py).
    walk_fast = compiled_walk(queue) if whole and take_all else None
    pos = 0
    end = len(buf)
    while pos < end:
        if walk_fast is not None:
            pos, walk.last = walk_fast(buf, pos, walk.messages, walk.last, next_begin_offset)
            if pos >= end:
                break
        # The framing (sane magic and size) judged on the one unpack of the fixed fields
        # (MIN_RECORD_BYTES covers RECORD_HEAD), not on a peek of size and magic first.
        if end - pos < MIN_RECORD_BYTES:
            return walk.broken(pos, max_nums)
        head = RECORD_HEAD.unpack_from(buf, pos)
        size, magic, crc, _, _, queue_offset, commit_offset = head[:7]
        if magic not in _RECORD_MAGICS or not MIN_RECORD_BYTES <= size <= end - pos:
            return walk.broken(pos, max_nums)
        sane = walk.last < queue_offset < next_begin_offset
        message = quick_message(buf, pos, size, head, queue) if whole else None
        if message is not None:
            if take_all or _accepts_tags(subscription, message.tags):
                walk.messages.append(message)
            if sane:
                walk.last = queue_offset
            pos += size
            continue
        try:
            record, _ = decode_record(buf, pos, check_crc=False)
        except MalformedRecord as exc:
            if not _record_starts(buf, pos + size):  # its size cannot be trusted either
                return walk.broken(pos, max_nums)
            walk.skipped.append(
                SkippedRecord(
                    queue=queue,
                    queue_offset=queue_offset if sane else None,
                    commit_log_offset=commit_offset if sane else None,
                    msg_id="",
                    original_topic=queue.topic,
                    reason=str(exc),
                )
            )
        else:
            if _accepts_tags(subscription, record.tags):
                reason = _decode_into(walk.messages, record, queue, crc, max_body_bytes)
                if reason is not None:
                    walk.skipped.append(_skipped(queue, record, sane, reason))
        if sane:
            walk.last = queue_offset
        pos += size
    return walk.done()


def _decode_into(
    out: list[ReceivedMessage],
    record: MessageRecord,
    queue: MessageQueue,
    stored_crc: int,
    max_body_bytes: int,
) -> str | None:
    """Append ``record`` as a message; the reason it cannot be one instead."""
    if (crc := zlib.crc32(record.body) & _CRC_MASK) != stored_crc:
        return f"body CRC mismatch, stored 0x{stored_crc & 0xFFFFFFFF:08X}, computed 0x{crc:08X}"
    try:
        out.append(
            ReceivedMessage.from_record(record, queue.broker_name, max_body_bytes, queue=queue)
        )
    except MalformedRecord as exc:
        return str(exc)
    return None


def _skipped(queue: MessageQueue, record: MessageRecord, sane: bool, reason: str) -> SkippedRecord:
    return SkippedRecord(
        queue=queue,
        queue_offset=record.queue_offset if sane else None,
        commit_log_offset=record.physical_offset if sane else None,
        msg_id=record.uniq_key or record.msg_id,
        original_topic=record.properties.get(PROPERTY_RETRY_TOPIC, record.topic),
        reason=reason,
    )


def check_pull_offsets(result: PullResult, requested: int) -> None:
    """Refuse an answer whose offsets a sane broker cannot give (``ProtocolError``).

    Found messages lie at or after ``requested``, in increasing order, before
    ``next_begin_offset``; an empty answer never moves backwards (except OFFSET_ILLEGAL,
    whose whole point is a new offset).
    """
    if result.status is PullStatus.OFFSET_ILLEGAL:
        if result.next_begin_offset < 0:
            raise ProtocolError(f"pull answer moves to negative offset {result.next_begin_offset}")
        return
    previous = requested - 1
    skipped = {s.queue_offset for s in result.skipped if s.queue_offset is not None}
    if skipped and (offsets := skipped & {m.queue_offset for m in result.messages}):
        raise ProtocolError(f"pull from {requested} returned offsets {sorted(offsets)} twice")
    for message in result.messages:
        if message.queue_offset <= previous:
            raise ProtocolError(
                f"pull from {requested} of {message.queue} returned offset "
                f"{message.queue_offset} after {previous}"
            )
        previous = message.queue_offset
    if result.next_begin_offset <= previous or result.next_begin_offset < requested:
        raise ProtocolError(
            f"pull from {requested} answered next offset {result.next_begin_offset} "
            f"(last message at {previous})"
        )


def pull_replica(info: TopicInfo, broker_name: str, suggested_id: int) -> tuple[int, str]:
    """(broker id, address) to pull from: the suggested broker if routed, else the master,
    else the slave with the lowest id (findBrokerAddressInSubscribe, onlyThisBroker=false).
    """
    addrs = info.addresses_of(broker_name)
    for broker_id in (suggested_id, MASTER_ID):
        if broker_id in addrs:
            return broker_id, addrs[broker_id]
    if addrs:
        return min(addrs), addrs[min(addrs)]
    raise NetworkError(f"broker group {broker_name} of {info.topic} has no address in its route")


def pull_target(info: TopicInfo, broker_name: str, suggested_id: int) -> str:
    """The address to pull from: the suggested broker if routed, else the master, else any."""
    return pull_replica(info, broker_name, suggested_id)[1]


def failover_broker_id(info: TopicInfo | None, broker_name: str, failed_id: int) -> int:
    """Whom to pull from after a pull from ``failed_id`` failed: a slave after the master
    (the master may be dead while the NameServer still lists it), the master after a slave.
    """
    if failed_id != MASTER_ID or info is None:
        return MASTER_ID
    slaves = [i for i in info.addresses_of(broker_name) if i != MASTER_ID]
    return min(slaves) if slaves else MASTER_ID


@attrs.define
class RouteHealth:
    """What each topic's route had lately. Pure: time comes in as ``now_s``.

    A route is degraded while it lacks a broker group it had within ``forget_s`` (a group
    without slaves lost its master; the NameServer lost a broker), or a group has had no
    master for less than ``forget_s``, or the topic vanished. A consumer polls degraded routes fast, so it sees the
    group or master come back within about a second, as its peers do.
    """

    forget_s: float = FORGET_GROUP_S
    #: topic -> (broker name, "group" | "master") -> when last seen.
    _seen: dict[str, dict[tuple[str, str], float]] = attrs.field(factory=dict)
    _degraded: set[str] = attrs.field(factory=set)

    def note(self, info: TopicInfo, now_s: float) -> None:
        seen = self._seen.setdefault(info.topic, {})
        present = {(d.broker_name, "group") for d in info.route.broker_datas}
        present |= {
            (d.broker_name, "master")
            for d in info.route.broker_datas
            if MASTER_ID in d.broker_addrs
        }
        for key in present:
            seen[key] = now_s
        for data in info.route.broker_datas:  # every group is expected to get a master
            seen.setdefault((data.broker_name, "master"), now_s)
        for key, at in list(seen.items()):
            if now_s - at > self.forget_s:
                del seen[key]
        if seen.keys() - present:
            self._degraded.add(info.topic)
        else:
            self._degraded.discard(info.topic)

    def vanished(self, topic: str, now_s: float) -> None:
        """The NameServer has no route of ``topic`` now (TopicNotExist)."""
        seen = self._seen.get(topic, {})
        if any(now_s - at <= self.forget_s for at in seen.values()):
            self._degraded.add(topic)
        else:
            self._seen.pop(topic, None)
            self._degraded.discard(topic)

    def degraded(self) -> bool:
        return bool(self._degraded)
