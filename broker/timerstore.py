"""Timer messages on the broker: park on send, deliver when due (the I/O around
``broker/timers.py``).

Rules (broker/timers.py for the model; TimerMessageStore, HookUtils):
- ``park`` runs on the send path: a timer message (not a half message) due later is
  stored in ``rmq_sys_wheel_timer`` queue 0 with TIMER_OUT_MS, REAL_TOPIC and REAL_QID. A
  bad timer property or a delay past ``timerMaxDelaySec`` is MESSAGE_ILLEGAL with
  RocketMQ's remark; with ``timerWheelEnable`` off a timer message is SYSTEM_ERROR.
- Only a master that accepts writes delivers. Each time it becomes one it restores the
  index from the checkpoint (its own, or the last one copied from its master) and rescans
  the timer ConsumeQueue, which its own dispatcher rebuilt from the replicated CommitLog.
- Delivery puts a copy in the real topic and queue: REAL_TOPIC/REAL_QID removed,
  TIMER_DEQUEUE_MS added, TIMER_OUT_MS kept (a resent copy is not parked again). A put
  refused (the broker stopped accepting writes) pauses delivery; nothing is skipped.
- The checkpoint file is written within ``flushConsumerOffsetInterval``; slaves copy it
  with GET_TIMER_CHECK_POINT (60, our JSON body) every ``slave_sync_interval_s``. What a
  crash or failover re-delivers: timers delivered since the last write or copy (at least
  once; RocketMQ's timer checkpoint has the same window).
- Work per wake-up is bounded (``_MAX_DELIVER_PER_STEP`` deliveries, ``_CHUNK`` entries a
  read), with a checkpoint between rounds so other tasks run; a rescan reads the pending
  part of the ConsumeQueue chunk by chunk and yields between chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from broker.clock import Clock
from broker.config import BrokerConfig
from broker.longpoll import PullHoldService
from broker.store.metadata import DocumentWriter, load_document
from broker.store.results import TIMER_TOPIC, AppendResult
from broker.store.store import MessageStore
from broker.timers import (
    HORIZON_MS,
    TimerCheckpoint,
    TimerEntry,
    TimerIllegal,
    TimerIndex,
    illegal_remark,
    park_due_ms,
)
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import (
    MalformedBody,
    MalformedRecord,
    MessageIllegal,
    ServerError,
    SystemError_,
)
from protocol.message import (
    PROPERTY_REAL_QID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_TIMER_DEQUEUE_MS,
    PROPERTY_TIMER_OUT_MS,
    SYSFLAG_TRANSACTION_COMMIT_TYPE,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_NOT_TYPE,
    MessageRecord,
    decode_record,
)
from protocol.route import dumps_json
from protocol.rpc import Connection, Handler

log = logging.getLogger(__name__)

FILE_KIND = "timer-checkpoint"
FILE_VERSION = 1
_CHUNK = 4096
_MAX_DELIVER_PER_STEP = 2048
_IDLE_CHECK_S = 1.0
#: A rescan starts this long before the first entry beyond the window comes due.
_LOOKAHEAD_MS = 2_000


class BrokerForTimers(Protocol):
    """What ``TimerService`` uses of its broker (``Broker`` satisfies it structurally)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> BrokerConfig: ...
    @property
    def accepts_writes(self) -> bool: ...
    @property
    def store(self) -> MessageStore: ...
    def store_put(self, records: Sequence[MessageRecord]) -> AppendResult: ...


class TimerService:
    """Parks timer messages and delivers them when due (module rules)."""

    def __init__(self, broker: BrokerForTimers, path: Path, *, clock: Clock) -> None:
        self.broker = broker
        self.path = path
        self._clock = clock
        #: The progress as last known: loaded, copied from the master, or our own.
        self.checkpoint = TimerCheckpoint()
        #: The live index while this broker delivers; None otherwise.
        self.index: TimerIndex | None = None
        self.delivered = 0
        self.parked = 0
        self.rescans = 0
        self._arrivals = PullHoldService()
        self.writer = DocumentWriter(
            path,
            kind=FILE_KIND,
            version=FILE_VERSION,
            snapshot=self._snapshot,
            interval_s=broker.config.flush_consumer_offset_interval_s,
            node=lambda: self.broker.name,
        )

    # --- the send path ------------------------------------------------------------------

    def park(
        self, topic: str, queue_id: int, sys_flag: int, properties: dict[str, str]
    ) -> tuple[str, int]:
        """Where a message being sent is stored: the timer topic when it is due later."""
        if sys_flag & SYSFLAG_TRANSACTION_MASK not in (
            SYSFLAG_TRANSACTION_NOT_TYPE,
            SYSFLAG_TRANSACTION_COMMIT_TYPE,
        ):
            return topic, queue_id
        config = self.broker.config
        try:
            due_ms = park_due_ms(
                properties,
                topic,
                now_ms=self._clock.wall_ms(),
                max_delay_s=config.timer_max_delay_s,
            )
        except TimerIllegal as exc:
            raise MessageIllegal(f"{illegal_remark(config.timer_max_delay_s)} ({exc})") from None
        if due_ms is None:
            return topic, queue_id
        if not config.timer_wheel_enable:
            raise SystemError_("accurate timer message is not enabled, timerWheelEnable is false")
        properties[PROPERTY_TIMER_OUT_MS] = str(due_ms)
        properties[PROPERTY_REAL_TOPIC] = topic
        properties[PROPERTY_REAL_QID] = str(queue_id)
        self.parked += 1
        return TIMER_TOPIC, 0

    # --- checkpoint: file, slave copy ----------------------------------------------------

    def load(self) -> None:
        found = load_document(self.path, kind=FILE_KIND, max_version=FILE_VERSION)
        if found is None:
            return
        try:
            self.checkpoint = TimerCheckpoint.from_json(found[1])
        except ValueError as exc:
            raise MalformedBody(f"{self.path}: {exc}") from None

    def _snapshot(self) -> Callable[[], Any]:
        payload = self.checkpoint.to_json()
        return lambda: payload

    def _publish(self, checkpoint: TimerCheckpoint) -> None:
        if checkpoint != self.checkpoint:
            self.checkpoint = checkpoint
            self.writer.changed()

    def install_checkpoint(self, checkpoint: TimerCheckpoint) -> None:
        """A slave takes its master's progress (ignored while this broker delivers)."""
        if self.index is None:
            self._publish(checkpoint)

    def handlers(self) -> dict[int, Handler]:
        return {RequestCode.GET_TIMER_CHECK_POINT: self.get_checkpoint}

    async def get_checkpoint(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        """GET_TIMER_CHECK_POINT: the progress as JSON (a slave's copy)."""
        return request.respond(body=dumps_json(self.checkpoint.to_json()))

    def statistics(self) -> dict[str, int]:
        index = self.index
        return {
            "timerParked": self.parked,
            "timerDelivered": self.delivered,
            "timerPending": index.pending if index else -1,
            "timerInMemory": index.in_memory if index else 0,
            "timerRescans": self.rescans,
        }

    # --- delivery ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver due timers while this broker accepts writes, until cancelled."""
        self.broker.store.add_arrival_listener(self._arrivals.notify, topic=TIMER_TOPIC)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.writer.run)
                task_status.started()
                await self._deliver_loop()
        finally:
            self.broker.store.remove_arrival_listener(self._arrivals.notify, topic=TIMER_TOPIC)
            with trio.CancelScope(shield=True):
                await self.writer.close()

    async def _deliver_loop(self) -> None:
        while True:
            if not self.broker.accepts_writes:
                self.index = None
                await trio.sleep(_IDLE_CHECK_S)
                continue
            index = self.index
            if index is None:
                index = self.index = self._activate()
            if index.needs_scan(self._clock.wall_ms(), _LOOKAHEAD_MS):
                await self._rescan(index)
            blocked = self._enqueue(index) or self._deliver_due(index)
            self._publish(index.checkpoint())
            if blocked:
                await trio.sleep(_IDLE_CHECK_S)
                continue
            now_ms = self._clock.wall_ms()
            wait_ms = index.wait_ms(now_ms)
            if wait_ms == 0 or index.needs_scan(now_ms, _LOOKAHEAD_MS):
                await trio.lowlevel.checkpoint()
                continue
            timeout_s = _IDLE_CHECK_S if wait_ms is None else min(wait_ms / 1000, _IDLE_CHECK_S)
            if index.enqueued < self.broker.store.max_offset(TIMER_TOPIC, 0):
                await trio.lowlevel.checkpoint()
            else:
                await self._arrivals.wait(TIMER_TOPIC, 0, timeout_s)

    def _activate(self) -> TimerIndex:
        end = self.broker.store.max_offset(TIMER_TOPIC, 0)
        checkpoint = self.checkpoint.clamped(end)
        log.info(
            "%s: delivering timers from offset %d (checkpoint %s)",
            self.broker.name,
            checkpoint.scan_from,
            checkpoint.to_json(),
        )
        return TimerIndex.restore(checkpoint, capacity=self.broker.config.timer_index_capacity)

    async def _rescan(self, index: TimerIndex) -> None:
        scan = index.start_rescan(self._clock.wall_ms(), HORIZON_MS)
        store = self.broker.store
        pos, end = index.scan_from, index.enqueued
        while pos < end:
            chunk = store.queue_entries(TIMER_TOPIC, 0, pos, min(_CHUNK, end - pos))
            scan.feed(chunk)
            pos = chunk[-1][0] + 1 if chunk else min(pos + _CHUNK, end)
            await trio.lowlevel.checkpoint()  # the index is ours alone: nothing else changes it
        index.finish_rescan(scan, self._clock.wall_ms())
        self.rescans += 1

    def _enqueue(self, index: TimerIndex) -> bool:
        """Take new timer entries; True when a late one could not be delivered."""
        store = self.broker.store
        end = store.max_offset(TIMER_TOPIC, 0)
        start = index.enqueued
        if start >= end:
            return False
        chunk = store.queue_entries(TIMER_TOPIC, 0, start, min(_CHUNK, end - start))
        for queue_offset, phys, size, due_ms in chunk:
            entry = TimerEntry(
                queue_offset=queue_offset, physical_offset=phys, size=size, due_ms=due_ms
            )
            if index.is_late(entry) and not self._deliver(entry):
                return True
            index.add(entry, self._clock.wall_ms())
        index.skip_to(chunk[-1][0] + 1 if chunk else min(start + _CHUNK, end))
        return False

    def _deliver_due(self, index: TimerIndex) -> bool:
        """Deliver what is due; True when a put was refused."""
        for _ in range(_MAX_DELIVER_PER_STEP):
            now_ms = self._clock.wall_ms()
            entry = index.next_due(now_ms)
            if entry is None:
                return False
            if not self._deliver(entry):
                return True
            index.delivered(entry, now_ms)
        return False

    def _deliver(self, entry: TimerEntry) -> bool:
        """Store ``entry``'s message in its real topic; False when the put was refused."""
        broker = self.broker
        data = broker.store.read_record(entry.physical_offset)
        record = None
        if data is not None:
            try:
                record, _ = decode_record(data, check_crc=False)
            except MalformedRecord:
                record = None
        properties = dict(record.properties) if record is not None else {}
        real_topic = properties.pop(PROPERTY_REAL_TOPIC, "")
        real_qid = properties.pop(PROPERTY_REAL_QID, "0")
        if record is None or not real_topic or not (real_qid.isascii() and real_qid.isdigit()):
            log.warning(
                "%s: timer message at %d unreadable or without a real topic; dropped",
                broker.name,
                entry.physical_offset,
            )
            return True
        properties[PROPERTY_TIMER_DEQUEUE_MS] = str(self._clock.wall_ms())
        message = attrs.evolve(
            record, topic=real_topic, queue_id=int(real_qid), properties=properties
        )
        try:
            result = broker.store_put([message])
        except ServerError as exc:
            log.warning("%s: timer delivery paused: %s", broker.name, exc)
            return False
        if not result.ok:
            log.warning(
                "%s: timer message at %d refused (%s); dropped",
                broker.name,
                entry.physical_offset,
                result.remark,
            )
        else:
            self.delivered += 1
        return True
