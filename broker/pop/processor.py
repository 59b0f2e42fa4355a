"""POP_MESSAGE (200050), ACK_MESSAGE (200051), CHANGE_MESSAGE_INVISIBLETIME (200053).

Rules (apache/rocketmq PopMessageProcessor, AckMessageProcessor,
ChangeInvisibleTimeProcessor; wire formats in ``protocol/pop.py``):
- Only a master that accepts writes serves them: each writes to the revive log.
- A pop reads the group's pop offset of each queue (the consumer offset table; a group
  without one starts at the queue's first message when the queue was never trimmed, else
  at its end for ``initMode`` MAX), hands out what it finds, moves the offset past it and
  appends one checkpoint per queue read to revive queue ``reviveQid``; all of that happens
  on one Trio step, so two pops never hand out the same offsets. It answers once the
  checkpoints are as durable as a send (flushed / replicated as configured).
- A pop also reads the group's pop retry topic ``%RETRY%<group>_<topic>`` (first on about
  one pop in five, as RocketMQ's ``popRetryProbability``), where the revive service puts
  messages whose invisible time lapsed.
- ``order=true`` pops write no checkpoint: the queue is held (``broker/pop/orderly.py``)
  and the offset moves only when acks arrive.
- An empty pop with ``pollTime`` waits for an arrival on the topic or its retry topic, at
  most ``pollTime`` (capped), then answers POLLING_TIMEOUT; past ``max_held`` waiting pops
  it answers POLLING_FULL at once.
- An ack appends an ACK record (durable before the answer); changing the invisible time
  appends a new single-message checkpoint, then acks the old one, and answers the new pop
  time (the client builds the new handle from it). Acks of order pops move the offset.
- A malformed handle is INVALID_PARAMETER naming the part; an ack of a message whose
  invisible time lapsed is still written (the revive service ignores it if it already
  revived the message: at most a redelivery).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from broker.clock import Clock
from broker.config import BrokerConfig
from broker.filtering import FilterCache, RecordFilter, record_filter
from broker.pop.checkpoint import Ack, CheckPoint
from broker.pop.orderly import OrderKey, OrderTable
from broker.pop.service import BrokerForPop, PopArrivals, ReviveService, revive_record
from broker.store.pull import GetMessageStatus
from broker.store.results import AppendResult
from broker.topics import TopicConfigManager
from protocol.bodies import EXPRESSION_TAG, SubscriptionGroupConfig, parse_subscription
from protocol.codes import PERM_READ, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    InvalidParameter,
    MalformedBody,
    MalformedRecord,
    MessageIllegal,
    NoPermission,
    ServerError,
    ServiceNotAvailable,
    SubscriptionGroupNotExist,
    TopicNotExist,
)
from protocol.message import decode_record
from protocol.pop import (
    ACK_TAG,
    BATCH_ACK_TAG,
    CK_TAG,
    INIT_MODE_MIN,
    ORDER_REVIVE_QID,
    AckMessageRequestHeader,
    ChangeInvisibleTimeRequestHeader,
    ChangeInvisibleTimeResponseHeader,
    PopMessageRequestHeader,
    PopMessageResponseHeader,
    ReceiptHandle,
    decode_batch_ack_body,
    encode_msg_offsets,
    encode_start_offsets,
    pop_retry_topic,
    real_topic,
    retry_mark,
)
from protocol.rpc import Connection, Handler

#: Most messages one pop hands out, and the bytes it may answer.
MAX_POP_NUMS = 32
MAX_POP_BYTES = 4 << 20
#: A waiting pop is answered before a client's usual 30 s request timeout.
_POLL_CAP_S = 20.0
#: Invisible times accepted (RocketMQ's proxy: 10 s .. 12 h; remoting clients go lower).
MIN_INVISIBLE_MS = 1000
MAX_INVISIBLE_MS = 12 * 3600 * 1000
#: Share of pops that read the retry topic first (RocketMQ popRetryProbability 20).
_RETRY_FIRST = 0.2


class BrokerForPopProcessor(BrokerForPop, Protocol):
    @property
    def config(self) -> BrokerConfig: ...
    @property
    def address(self) -> str: ...
    @property
    def broker_perm(self) -> int: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    async def wait_durable(self, result: AppendResult, *, wait_store: bool) -> int: ...


class PopProcessor:
    def __init__(
        self,
        broker: BrokerForPopProcessor,
        *,
        clock: Clock,
        revive: ReviveService,
        max_held: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self.broker = broker
        self._clock = clock
        self.revive = revive
        self.orders = OrderTable()
        self.arrivals = PopArrivals()
        self.max_held = max_held
        self.filters = FilterCache()
        self._rng = rng or random.Random()

    def handlers(self) -> dict[int, Handler]:
        return {
            RequestCode.POP_MESSAGE: self.pop,
            RequestCode.ACK_MESSAGE: self.ack,
            RequestCode.BATCH_ACK_MESSAGE: self.batch_ack,
            RequestCode.CHANGE_MESSAGE_INVISIBLETIME: self.change_invisible_time,
        }

    # --- checks ----------------------------------------------------------------------

    def _check_master(self) -> None:
        broker = self.broker
        if not broker.accepts_writes:
            raise ServiceNotAvailable(
                f"broker {broker.config.broker_name} at {broker.address} does not accept "
                "writes now; pop and ack at the master"
            )

    def _check_group_topic(self, group: str, topic: str) -> tuple[SubscriptionGroupConfig, int]:
        """The group's config and the topic's readable queue count."""
        broker = self.broker
        if not broker.broker_perm & PERM_READ:
            raise NoPermission(f"the broker[{broker.address}] popping message is forbidden")
        config = broker.find_group(group)
        if config is None:
            raise SubscriptionGroupNotExist(f"subscription group [{group}] does not exist")
        if not config.consume_enable:
            raise NoPermission(f"subscription group no permission, {group}")
        topic_config = broker.topics.get(topic)
        if topic_config is None:
            raise TopicNotExist(f"topic[{topic}] not exist, apply first please!")
        if not topic_config.perm & PERM_READ:
            raise NoPermission(f"the topic[{topic}] peeking message is forbidden")
        return config, topic_config.read_queue_nums

    @staticmethod
    def _check_invisible(invisible_ms: int) -> None:
        if not MIN_INVISIBLE_MS <= invisible_ms <= MAX_INVISIBLE_MS:
            raise InvalidParameter(
                f"invisibleTime {invisible_ms} ms is outside {MIN_INVISIBLE_MS}.."
                f"{MAX_INVISIBLE_MS} ms"
            )

    def _wanted(
        self, header: PopMessageRequestHeader
    ) -> tuple[frozenset[int] | None, RecordFilter | None]:
        """The tag codes to match (None: every tag) and a SQL92 record filter (or None)."""
        kind = (header.exp_type or EXPRESSION_TAG).upper()
        if kind != EXPRESSION_TAG:
            selector = self.filters.compile(
                header.exp_type,
                header.exp or "",
                enabled=self.broker.config.enable_property_filter,
            )
            return None, record_filter(selector)
        try:
            subscription = parse_subscription(header.exp or "*", topic=header.topic)
        except MalformedBody as exc:
            raise ServerError(
                f"parse the consumer's subscription failed: {exc}",
                code=ResponseCode.SUBSCRIPTION_PARSE_FAILED,
            ) from None
        if subscription.is_sub_all:
            return None, None
        return frozenset(subscription.code_set), None

    # --- pop -------------------------------------------------------------------------

    async def pop(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        del conn
        header = PopMessageRequestHeader.from_ext_fields(request.ext_fields)
        self._check_master()
        _, queue_nums = self._check_group_topic(header.consumer_group, header.topic)
        if not -1 <= header.queue_id < queue_nums:
            raise InvalidParameter(
                f"queueId[{header.queue_id}] is illegal, topic:[{header.topic}] "
                f"readQueueNums:[{queue_nums}]"
            )
        if not 1 <= header.max_msg_nums <= MAX_POP_NUMS:
            raise InvalidParameter(f"maxMsgNums {header.max_msg_nums} is outside 1..32")
        self._check_invisible(header.invisible_time)
        if header.poll_time < 0:
            raise InvalidParameter(f"pollTime {header.poll_time} < 0")
        wanted = self._wanted(header)
        deadline = self._clock.now_s() + min(header.poll_time / 1000, _POLL_CAP_S)
        while True:
            found = self._pop_once(header, queue_nums, wanted)
            if found is not None:
                reply, body, last = found
                if last is not None:
                    await self.broker.wait_durable(last, wait_store=True)
                return request.respond(ext_fields=reply.to_ext_fields(), body=body)
            remaining = deadline - self._clock.now_s()
            empty = self._empty_reply(header)
            if remaining <= 0:
                code = ResponseCode.POLLING_TIMEOUT if header.poll_time > 0 else 0
                return request.respond(
                    code or ResponseCode.PULL_NOT_FOUND, "no new message", ext_fields=empty
                )
            if self.arrivals.held >= self.max_held:
                return request.respond(
                    ResponseCode.POLLING_FULL,
                    f"{self.arrivals.held} pops are waiting already; pop again later",
                    ext_fields=empty,
                )
            topics = [header.topic, pop_retry_topic(header.topic, header.consumer_group)]
            await self.arrivals.wait(topics, min(remaining, 1.0))

    def _empty_reply(self, header: PopMessageRequestHeader) -> dict[str, str]:
        return PopMessageResponseHeader(
            pop_time=self._clock.wall_ms(),
            invisible_time=header.invisible_time,
            revive_qid=0,
            rest_num=0,
        ).to_ext_fields()

    def _sources(self, header: PopMessageRequestHeader, queue_nums: int) -> list[tuple[str, int]]:
        if header.queue_id >= 0:
            queues = [header.queue_id]
        else:
            start = self._rng.randrange(max(1, queue_nums))
            queues = [(start + i) % queue_nums for i in range(queue_nums)]
        normal = [(header.topic, q) for q in queues]
        if header.order:
            return normal
        retry = [(pop_retry_topic(header.topic, header.consumer_group), 0)]
        return retry + normal if self._rng.random() < _RETRY_FIRST else normal + retry

    def _init_offset(self, topic: str, queue_id: int, init_mode: int) -> int:
        store = self.broker.store
        min_offset = store.min_offset(topic, queue_id)
        if init_mode == INIT_MODE_MIN or min_offset == 0 or topic.startswith("%RETRY%"):
            # A queue never trimmed is read from its start (RocketMQ's default
            # initPopOffsetByCheckMsgInMem): messages sent before a new group's first pop.
            return min_offset
        return store.max_offset(topic, queue_id)

    def _pop_once(
        self,
        header: PopMessageRequestHeader,
        queue_nums: int,
        wanted: tuple[frozenset[int] | None, RecordFilter | None],
    ) -> tuple[PopMessageResponseHeader, bytes, AppendResult | None] | None:
        """Hand out what there is (no await inside); None when nothing was found."""
        broker = self.broker
        tag_codes, sql_filter = wanted
        group = header.consumer_group
        now_ms = self._clock.wall_ms()
        revive_qid = (
            ORDER_REVIVE_QID if header.order else self._rng.randrange(self.revive.queue_nums)
        )
        records: list[bytes] = []
        starts: list[tuple[str, int, int]] = []
        offsets_info: list[tuple[str, int, Sequence[int]]] = []
        counts: list[tuple[str, int, int]] = []
        rest = 0
        size = 0
        last: AppendResult | None = None
        for topic, queue_id in self._sources(header, queue_nums):
            key = (group, topic, queue_id)
            if header.order and self.orders.held(key, now_ms):
                continue
            offset = broker.offsets.query(topic, group, queue_id)
            if offset is None:
                offset = self._init_offset(topic, queue_id, header.init_mode)
                broker.offsets.commit(topic, group, queue_id, offset)
            want = header.max_msg_nums - len(records)
            if want <= 0:
                rest += max(0, broker.store.max_offset(topic, queue_id) - offset)
                continue
            result = broker.store.get_messages(
                group,
                topic,
                queue_id,
                offset,
                max_count=want,
                max_bytes=max(1, MAX_POP_BYTES - size),
                tag_codes=tag_codes,
                record_filter=sql_filter,
            )
            if result.status is not GetMessageStatus.FOUND:
                # Past trimmed or filtered-out entries (an order pop moves only on acks,
                # but filtered entries are not its to hold).
                if result.next_begin_offset != offset and result.status in (
                    GetMessageStatus.OFFSET_TOO_SMALL,
                    GetMessageStatus.OFFSET_OVERFLOW_BADLY,
                    GetMessageStatus.NO_MATCHED_MESSAGE,
                ):
                    broker.offsets.commit(topic, group, queue_id, result.next_begin_offset)
                continue
            got = list(result.queue_offsets)
            raws = list(result.records)
            if header.order:
                self._dead_letter_leading(key, got, raws)
                if not got:
                    broker.offsets.commit(topic, group, queue_id, result.next_begin_offset)
                    continue
                broker.offsets.commit(topic, group, queue_id, got[0])
                attempts = self.orders.popped(
                    key,
                    got,
                    next_offset=result.next_begin_offset,
                    pop_time_ms=now_ms,
                    invisible_time_ms=header.invisible_time,
                )
                counts.extend((topic, queue_id, attempts[o] - 1) for o in got)
            else:
                ck = CheckPoint.of(
                    group=group,
                    topic=topic,
                    queue_id=queue_id,
                    offsets=got,
                    pop_time_ms=now_ms,
                    invisible_time_ms=header.invisible_time,
                    broker_name=broker.config.broker_name,
                )
                # The checkpoint first: if the revive log refuses it, this queue's offset
                # stays and its messages are not handed out (none popped without a way
                # back); what earlier queues gave is answered.
                try:
                    last = self._append(revive_qid, CK_TAG, ck.to_json(), now_ms)
                except ServerError:
                    if records:
                        break
                    raise
                broker.offsets.commit(topic, group, queue_id, result.next_begin_offset)
            records.extend(raws)
            size += sum(len(r) for r in raws)
            starts.append((topic, queue_id, got[0]))
            offsets_info.append((topic, queue_id, got))
            rest += max(0, result.max_offset - result.next_begin_offset)
        if not records:
            return None
        if not header.order and header.invisible_time <= 1000 * 5:
            self.revive.wake()
        reply = PopMessageResponseHeader(
            pop_time=now_ms,
            invisible_time=header.invisible_time,
            revive_qid=revive_qid,
            rest_num=rest,
            start_offset_info=encode_start_offsets(starts),
            msg_offset_info=encode_msg_offsets(offsets_info),
            order_count_info=_order_count_info(counts, offsets_info) if header.order else None,
        )
        return reply, b"".join(records), last

    def _dead_letter_leading(self, key: OrderKey, offsets: list[int], raws: list[bytes]) -> None:
        """Order pops: messages at the head of the queue already delivered more than the
        group's ``retryMaxTimes`` + 1 times go to ``%DLQ%<group>`` instead (removed from
        ``offsets`` / ``raws``), so the queue moves on. A refused DLQ put stops here: the
        message is handed out once more, never dropped."""
        group, _, _ = key
        config = self.broker.find_group(group)
        max_times = config.retry_max_times if config is not None else 16
        while offsets and self.orders.attempts_of(key, offsets[0]) > max_times:
            try:
                record, _ = decode_record(raws[0])
            except MalformedRecord:
                record = None
            if record is not None:
                dead = self.revive.dead_letter_record(
                    group, record, reconsume_times=self.orders.attempts_of(key, offsets[0])
                )
                try:
                    result = self.broker.store_put([dead])
                except ServerError:
                    return
                if not result.ok:
                    return
                self.revive.dead_lettered += 1
            self.orders.forget(key, offsets[0])
            del offsets[0], raws[0]

    def _append(self, revive_qid: int, tag: str, body: bytes, now_ms: int) -> AppendResult:
        broker = self.broker
        record = revive_record(
            self.revive.topic,
            revive_qid,
            tag,
            body,
            store_host=broker.store_host,
            now_ms=now_ms,
        )
        result = broker.store_put([record])
        if not result.ok:
            raise ServerError(f"the revive log refused a {tag}: {result.remark or result.status}")
        return result

    # --- ack and change invisible time ----------------------------------------------

    def _handle(
        self, group: str, topic: str, extra_info: str, offset: int
    ) -> tuple[ReceiptHandle, str]:
        handle = ReceiptHandle.decode(extra_info, offset=offset)
        if handle.queue_offset != offset:
            raise InvalidParameter(
                f"offset {offset} is not the handle's message offset {handle.queue_offset}"
            )
        if not 0 <= handle.revive_qid < self.revive.queue_nums and not handle.is_order:
            raise InvalidParameter(f"reviveQid {handle.revive_qid} is not a revive queue")
        stored = real_topic(topic, group, handle.retry)
        self._check_queue(topic, stored, handle.queue_id)
        held = self._held_span(stored, handle.queue_id)
        if handle.queue_offset not in held:
            raise ServerError(
                f"offset is illegal, key:{stored}@{handle.queue_id}, commit:{handle.queue_offset}, "
                f"store:{held.start}~{held.stop - 1}",
                code=ResponseCode.NO_MESSAGE,
            )
        return handle, stored

    def _check_queue(self, topic: str, stored: str, queue_id: int) -> None:
        """A handle's queue must be one its stored topic has, and (``_handle``) its offset
        one the queue holds or its end: AckMessageProcessor's and
        ChangeInvisibleTimeProcessor's checks. Else a forged handle left revive records for
        messages that never were, which the revive then looked for."""
        if stored != topic:  # a pop retry topic: the revive writes its queue 0 only
            queues = 1
        else:  # the request's topic, which _check_group_topic found
            config = self.broker.topics.get(stored)
            queues = 0 if config is None else config.read_queue_nums
        if not 0 <= queue_id < queues:
            raise MessageIllegal(
                f"queueId[{queue_id}] is illegal, topic:[{stored}] "
                f"topicConfig.readQueueNums:[{queues}]"
            )

    def _held_span(self, stored: str, queue_id: int) -> range:
        """The offsets a queue holds, and its end: those an ack may name."""
        store = self.broker.store
        return range(store.min_offset(stored, queue_id), store.max_offset(stored, queue_id) + 1)

    async def ack(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        del conn
        header = AckMessageRequestHeader.from_ext_fields(request.ext_fields)
        self._check_master()
        self._check_group_topic(header.consumer_group, header.topic)
        handle, stored = self._handle(
            header.consumer_group, header.topic, header.extra_info, header.offset
        )
        if handle.is_order:
            self._ack_order(header.consumer_group, stored, handle)
            return request.respond()
        result = self._ack_record(header.consumer_group, stored, handle)
        await self.broker.wait_durable(result, wait_store=True)
        return request.respond()

    async def batch_ack(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        """BATCH_ACK_MESSAGE (200151): one batch-ack record per entry (one pop of a queue)."""
        del conn
        self._check_master()
        _, entries = decode_batch_ack_body(request.body)
        if not entries:
            return request.respond(ResponseCode.NO_MESSAGE, "no ack in the body")
        last: AppendResult | None = None
        now_ms = self._clock.wall_ms()
        for entry in entries:
            self._check_group_topic(entry.group, entry.topic)
            stored = real_topic(entry.topic, entry.group, entry.retry)
            self._check_queue(entry.topic, stored, entry.queue_id)
            order = entry.revive_qid == ORDER_REVIVE_QID
            if not order and not 0 <= entry.revive_qid < self.revive.queue_nums:
                raise InvalidParameter(f"reviveQid {entry.revive_qid} is not a revive queue")
            # As Java's AckMessageProcessor, offsets the queue does not hold are left out
            # without an error: a forged bit set leaves no revive record for a message
            # that never was.
            held = self._held_span(stored, entry.queue_id)
            offsets = tuple(offset for offset in entry.offsets if offset in held)
            if not offsets:
                continue
            if order:
                for offset in offsets:
                    moved = self.orders.ack(
                        (entry.group, stored, entry.queue_id), offset, entry.pop_time_ms
                    )
                    if moved is not None:
                        self.broker.offsets.commit(stored, entry.group, entry.queue_id, moved)
                continue
            acks = Ack(
                group=entry.group,
                topic=stored,
                queue_id=entry.queue_id,
                start_offset=entry.start_offset,
                pop_time_ms=entry.pop_time_ms,
                ack_offsets=offsets,
                broker_name=self.broker.config.broker_name,
            )
            tag = BATCH_ACK_TAG if acks.is_batch else ACK_TAG
            last = self._append(entry.revive_qid, tag, acks.to_json(), now_ms)
        if last is not None:
            await self.broker.wait_durable(last, wait_store=True)
        return request.respond()

    def _ack_order(self, group: str, stored: str, handle: ReceiptHandle) -> None:
        key = (group, stored, handle.queue_id)
        moved = self.orders.ack(key, handle.queue_offset, handle.pop_time_ms)
        if moved is not None:
            self.broker.offsets.commit(stored, group, handle.queue_id, moved)

    def _ack_record(self, group: str, stored: str, handle: ReceiptHandle) -> AppendResult:
        ack = Ack(
            group=group,
            topic=stored,
            queue_id=handle.queue_id,
            start_offset=handle.ck_offset,
            pop_time_ms=handle.pop_time_ms,
            ack_offsets=(handle.queue_offset,),
            broker_name=handle.broker_name,
        )
        return self._append(handle.revive_qid, ACK_TAG, ack.to_json(), self._clock.wall_ms())

    async def change_invisible_time(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        del conn
        header = ChangeInvisibleTimeRequestHeader.from_ext_fields(request.ext_fields)
        self._check_master()
        self._check_group_topic(header.consumer_group, header.topic)
        # A nack sets 0: the message is due again at once (the proxy's nack does this).
        if not 0 <= header.invisible_time <= MAX_INVISIBLE_MS:
            raise InvalidParameter(
                f"invisibleTime {header.invisible_time} ms is outside 0..{MAX_INVISIBLE_MS}"
            )
        group = header.consumer_group
        handle, stored = self._handle(group, header.topic, header.extra_info, header.offset)
        now_ms = self._clock.wall_ms()
        if handle.is_order:
            key = (group, stored, handle.queue_id)
            self.orders.change_invisible(
                key,
                handle.queue_offset,
                handle.pop_time_ms,
                now_ms=now_ms,
                invisible_ms=header.invisible_time,
            )
            reply = ChangeInvisibleTimeResponseHeader(
                pop_time=handle.pop_time_ms,
                invisible_time=now_ms + header.invisible_time - handle.pop_time_ms,
                revive_qid=ORDER_REVIVE_QID,
            )
            return request.respond(ext_fields=reply.to_ext_fields())
        ck = CheckPoint.of(
            group=group,
            topic=stored,
            queue_id=handle.queue_id,
            offsets=[handle.queue_offset],
            pop_time_ms=now_ms,
            invisible_time_ms=header.invisible_time,
            broker_name=self.broker.config.broker_name,
        )
        # The new checkpoint first: a crash between the two redelivers, never loses.
        self._append(handle.revive_qid, CK_TAG, ck.to_json(), now_ms)
        result = self._ack_record(group, stored, handle)
        if header.invisible_time <= 5000:
            self.revive.wake()
        await self.broker.wait_durable(result, wait_store=True)
        reply = ChangeInvisibleTimeResponseHeader(
            pop_time=now_ms, invisible_time=header.invisible_time, revive_qid=handle.revive_qid
        )
        return request.respond(ext_fields=reply.to_ext_fields())


def _order_count_info(
    counts: Sequence[tuple[str, int, int]], offsets_info: Sequence[tuple[str, int, Sequence[int]]]
) -> str:
    """``orderCountInfo``: ``"<retry> qo<queueId>%<offset> <count>"`` per message."""
    flat = [(t, q, o) for t, q, offsets in offsets_info for o in offsets]
    entries = [
        (topic, f"qo{queue_id}%{offset}", count)
        for (topic, queue_id, offset), (_, _, count) in zip(flat, counts, strict=True)
    ]
    return ";".join(f"{retry_mark(t)} {k} {c}" for t, k, c in entries)
