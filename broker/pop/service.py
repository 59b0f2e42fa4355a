"""The revive service: reads the revive log, delivers lapsed pops again, commits how far.

Rules (apache/rocketmq PopReviveService; ``broker/pop/checkpoint.py`` holds the decisions):
- Runs only while the broker accepts writes (a master, unfenced). On becoming one it reads
  each revive queue again from the revive group's committed offset (replicated to slaves
  with the other consumer offsets), so a promoted slave knows the open checkpoints and
  the acks written before the failover.
- Each round reads every revive queue to its end before deciding, so an ack stored before
  a checkpoint's invisible time lapsed is seen first; then each lapsed checkpoint's
  unacknowledged messages are put to the group's pop retry topic ``%RETRY%<group>_<topic>``
  with ``reconsumeTimes`` one higher (the delivery attempt grows), or to ``%DLQ%<group>``
  once that passes the group's ``retryMaxTimes``. A message the store no longer has is
  skipped with a warning.
- A put that fails (fenced, disk full) pauses the round; the checkpoint stays open and is
  tried again next round, so nothing is lost, and a message put before the failure may be
  delivered twice.
- ``PopArrivals`` wakes long-polling pops by topic (the store's arrival listener), each
  waiter bounded by the pop's poll time; the number held is capped by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

from broker.clock import Clock
from broker.offsets import ConsumerOffsetManager
from broker.pop.checkpoint import Ack, CheckPoint, OpenCheckPoint, ReviveQueue
from broker.store.pull import GetMessageStatus
from broker.store.results import AppendResult
from broker.store.store import MessageStore
from broker.topics import dlq_topic
from protocol.bodies import SubscriptionGroupConfig
from protocol.errors import MalformedBody, MalformedRecord, ServerError
from protocol.group_topics import RETRY_GROUP_TOPIC_PREFIX
from protocol.message import (
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_RETRY_TOPIC,
    PROPERTY_TAGS,
    MessageRecord,
    decode_record,
)
from protocol.pop import (
    ACK_TAG,
    BATCH_ACK_TAG,
    CK_TAG,
    PROPERTY_FIRST_POP_TIME,
    REVIVE_GROUP,
    pop_retry_topic,
)

log = logging.getLogger(__name__)

_READ_BATCH = 256
_READ_BYTES = 4 << 20
#: Revive records read per queue in one round (one synchronous step of the event loop).
_READ_BUDGET = 8192
#: Longest sleep between rounds (a new checkpoint may be due sooner than the last known).
_ROUND_S = 0.5


class BrokerForPop(Protocol):
    """What the pop parts use of their broker (``Broker`` satisfies it structurally)."""

    @property
    def name(self) -> str: ...
    @property
    def store(self) -> MessageStore: ...
    @property
    def store_host(self) -> tuple[str, int]: ...
    @property
    def accepts_writes(self) -> bool: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    def find_group(self, group: str) -> SubscriptionGroupConfig | None: ...
    def store_put(self, records: Sequence[MessageRecord]) -> AppendResult: ...
    def create_dlq_topic(self, group: str) -> object: ...


def revive_record(
    topic: str, queue_id: int, tag: str, body: bytes, *, store_host: tuple[str, int], now_ms: int
) -> MessageRecord:
    """A CK or ACK record of the revive log."""
    return MessageRecord(
        topic=topic,
        body=body,
        queue_id=queue_id,
        born_timestamp_ms=now_ms,
        born_host=store_host,
        store_timestamp_ms=0,
        store_host=store_host,
        properties={PROPERTY_TAGS: tag},
    )


class PopArrivals:
    """Wakes long-polling pops when their topic (or its pop retry topic) grows."""

    def __init__(self) -> None:
        #: topic → the events of the pops waiting on it (a topic leaves when none is):
        #: the store's ``add_arrival_listener(notify, waiting_on=waiting)``. Never rebound.
        self.waiting: dict[str, set[trio.Event]] = {}
        self.held = 0

    def notify(self, topic: str, queue_id: int, queue_offset_end: int, tags_code: int) -> None:
        del queue_id, queue_offset_end, tags_code
        for event in self.waiting.get(topic, ()):
            event.set()

    async def wait(self, topics: Sequence[str], timeout_s: float) -> None:
        event = trio.Event()
        for topic in topics:
            self.waiting.setdefault(topic, set()).add(event)
        self.held += 1
        try:
            with trio.move_on_after(max(0.0, timeout_s)):
                await event.wait()
        finally:
            self.held -= 1
            for topic in topics:
                waiters = self.waiting.get(topic)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self.waiting[topic]


@attrs.frozen(kw_only=True)
class ReviveStats:
    open_checkpoints: int
    revived_messages: int
    dead_lettered: int


class ReviveService:
    """Delivers lapsed pops again; one ``ReviveQueue`` per revive queue."""

    def __init__(self, broker: BrokerForPop, *, topic: str, queue_nums: int, clock: Clock) -> None:
        self.broker = broker
        self.topic = topic
        self.queue_nums = queue_nums
        self._clock = clock
        self._queues: list[ReviveQueue] | None = None
        self.revived = 0
        self.dead_lettered = 0
        self._wake = trio.Event()

    def stats(self) -> ReviveStats:
        queues = self._queues or []
        return ReviveStats(
            open_checkpoints=sum(len(q.open) for q in queues),
            revived_messages=self.revived,
            dead_lettered=self.dead_lettered,
        )

    def wake(self) -> None:
        """Run a round now (a checkpoint with a short invisible time was written)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self.broker.accepts_writes:
                self._queues = None  # read again from the committed offsets as master
                await trio.sleep(_ROUND_S)
                continue
            if self._queues is None:
                self._queues = [
                    ReviveQueue(read_offset=self._committed(qid)) for qid in range(self.queue_nums)
                ]
            wait_s = self.round()
            self._wake = trio.Event()
            with trio.move_on_after(wait_s):
                await self._wake.wait()

    def _committed(self, qid: int) -> int:
        offset = self.broker.offsets.query(self.topic, REVIVE_GROUP, qid)
        return offset if offset is not None else 0

    def _commit(self, qid: int, offset: int) -> None:
        # Nothing is written for a revive queue never used, so the offset table (and the
        # slaves' copy of it) names the revive group only on brokers that serve pops.
        stored = self.broker.offsets.query(self.topic, REVIVE_GROUP, qid)
        if stored != offset and (stored is not None or offset > 0):
            self.broker.offsets.commit(self.topic, REVIVE_GROUP, qid, offset)

    def round(self) -> float:
        """Read, revive what is due, commit; seconds until the next round."""
        assert self._queues is not None
        now_ms = self._clock.wall_ms()
        next_due: int | None = None
        for qid, queue in enumerate(self._queues):
            if not self._read(qid, queue):
                # Not at the end yet (a long log after a restart): acks may follow, so no
                # decision before the rest is read, next round (each round is one step).
                next_due = now_ms
                continue
            for point in queue.due(now_ms):
                if not self._revive(point):
                    break
                queue.finish(point.ck.key)
            self._commit(qid, queue.commit_offset())
            due = queue.next_due_ms()
            if due is not None and (next_due is None or due < next_due):
                next_due = due
        if next_due is None:
            return _ROUND_S
        return min(_ROUND_S, max(0.0, (next_due - now_ms) / 1000))

    def _read(self, qid: int, queue: ReviveQueue) -> bool:
        """Read the queue on, at most ``_READ_BUDGET`` records; True when at its end."""
        store = self.broker.store
        budget = _READ_BUDGET
        while budget > 0:
            result = store.get_messages(
                REVIVE_GROUP,
                self.topic,
                qid,
                queue.read_offset,
                max_count=_READ_BATCH,
                max_bytes=_READ_BYTES,
            )
            if result.status is not GetMessageStatus.FOUND:
                if result.next_begin_offset != queue.read_offset and result.status in (
                    GetMessageStatus.OFFSET_TOO_SMALL,
                    GetMessageStatus.OFFSET_OVERFLOW_BADLY,
                ):
                    log.warning(
                        "%s: revive queue %d read from %d, not %d (retention or a new log)",
                        self.broker.name,
                        qid,
                        result.next_begin_offset,
                        queue.read_offset,
                    )
                    queue.read_offset = result.next_begin_offset
                    continue
                return True
            for raw, offset in zip(result.records, result.queue_offsets, strict=True):
                self._apply(queue, offset, raw)
            budget -= len(result.records)
            if result.next_begin_offset > queue.read_offset:
                queue.skip(result.next_begin_offset - 1)
        return False

    def _apply(self, queue: ReviveQueue, offset: int, raw: bytes) -> None:
        try:
            record, _ = decode_record(raw)
            if record.tags == CK_TAG:
                queue.add_checkpoint(offset, CheckPoint.from_json(record.body))
                return
            if record.tags in (ACK_TAG, BATCH_ACK_TAG):
                queue.add_ack(offset, Ack.from_json(record.body))
                return
            reason = f"tag {record.tags!r}"
        except (MalformedRecord, MalformedBody) as exc:
            reason = str(exc)
        log.warning("%s: revive record %d skipped: %s", self.broker.name, offset, reason)
        queue.skip(offset)

    def _revive(self, point: OpenCheckPoint) -> bool:
        """Put the checkpoint's unacknowledged messages back; False to pause the round."""
        ck = point.ck
        group = self.broker.find_group(ck.group)
        max_times = group.retry_max_times if group is not None else 16
        for offset in point.unacked:
            original = self._message(ck.topic, ck.queue_id, offset)
            if original is None:
                log.warning(
                    "%s: popped message %s/%d/%d is gone; not delivered again",
                    self.broker.name,
                    ck.topic,
                    ck.queue_id,
                    offset,
                )
                continue
            record, dead = self._again(ck, original, max_times)
            try:
                result = self.broker.store_put([record])
            except ServerError as exc:
                log.warning("%s: revive paused: %s", self.broker.name, exc)
                return False
            if not result.ok:
                log.warning(
                    "%s: revive of %s/%d/%d refused (%s); dropped",
                    self.broker.name,
                    ck.topic,
                    ck.queue_id,
                    offset,
                    result.remark or result.status.value,
                )
            elif dead:
                self.dead_lettered += 1
            else:
                self.revived += 1
        return True

    def _message(self, topic: str, queue_id: int, offset: int) -> MessageRecord | None:
        result = self.broker.store.get_messages(
            REVIVE_GROUP, topic, queue_id, offset, max_count=1, max_bytes=_READ_BYTES
        )
        if result.status is not GetMessageStatus.FOUND or result.queue_offsets[0] != offset:
            return None
        try:
            record, _ = decode_record(result.records[0])
        except MalformedRecord:
            return None
        return record

    def dead_letter_record(
        self, group: str, original: MessageRecord, *, reconsume_times: int
    ) -> MessageRecord:
        """``original`` as it goes to ``%DLQ%<group>`` (the DLQ topic is created)."""
        properties = dict(original.properties)
        properties.setdefault(PROPERTY_RETRY_TOPIC, original.topic)
        properties.setdefault(PROPERTY_ORIGIN_MESSAGE_ID, original.uniq_key or original.msg_id)
        self.broker.create_dlq_topic(group)
        return attrs.evolve(
            original,
            topic=dlq_topic(group),
            queue_id=0,
            reconsume_times=reconsume_times,
            properties=properties,
            store_host=self.broker.store_host,
        )

    def _again(
        self, ck: CheckPoint, original: MessageRecord, max_times: int
    ) -> tuple[MessageRecord, bool]:
        """The record to put for another delivery, and whether it goes to the DLQ."""
        properties = dict(original.properties)
        is_retry = ck.topic.startswith(RETRY_GROUP_TOPIC_PREFIX)
        properties.setdefault(PROPERTY_RETRY_TOPIC, ck.topic)
        properties.setdefault(PROPERTY_ORIGIN_MESSAGE_ID, original.uniq_key or original.msg_id)
        properties.setdefault(PROPERTY_FIRST_POP_TIME, str(ck.pop_time_ms))
        reconsume = original.reconsume_times + 1
        dead = reconsume > max_times
        if dead:
            return self.dead_letter_record(ck.group, original, reconsume_times=reconsume), True
        topic = ck.topic if is_retry else pop_retry_topic(ck.topic, ck.group)
        record = attrs.evolve(
            original,
            topic=topic,
            queue_id=0,
            reconsume_times=reconsume,
            properties=properties,
            store_host=self.broker.store_host,
        )
        return record, dead
