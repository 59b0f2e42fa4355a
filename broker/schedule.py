"""Delayed delivery: messages parked in SCHEDULE_TOPIC_XXXX re-put into their real topic.

Rules (reference/rocketmq-wire.md §3.10; ScheduleMessageService.java):
- Level n (1-based) lives in queue n-1 of SCHEDULE_TOPIC_XXXX. Every message of a level
  has the same delay, so each queue is due in order: one task per level delivers the
  head of its queue when ``store time + delay`` has passed, then the next.
- Delivery is at least once: the level's offset advances after the re-put, and is
  persisted every few seconds and on shutdown, so a crash can deliver a message twice,
  never zero times.
- Only a master runs the delivery tasks; a slave does not start them and keeps the
  offsets its master reports (``install_offsets``, from GET_ALL_DELAY_OFFSET), so a slave
  restarted as master resumes where the master was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from broker.clock import Clock
from broker.longpoll import PullHoldService
from broker.store.metadata import load_document
from broker.store.pull import GetMessageStatus
from broker.store.results import SCHEDULE_TOPIC, AppendResult
from broker.store.store import MessageStore
from protocol.errors import MalformedBody, ServerError
from protocol.message import (
    PROPERTY_DELAY,
    PROPERTY_REAL_QID,
    PROPERTY_REAL_TOPIC,
    MessageRecord,
    decode_record,
    int_property,
)

log = logging.getLogger(__name__)

#: Kind and schema version of the delay offsets file.
FILE_KIND = "delay-offsets"
FILE_VERSION = 1
_BATCH = 32
_IDLE_CHECK_S = 1.0
_INT32_MAX = 2**31 - 1


class BrokerForSchedule(Protocol):
    """What ``ScheduleService`` uses of its broker (``Broker`` satisfies it structurally)."""

    @property
    def name(self) -> str: ...
    @property
    def delay_levels_s(self) -> tuple[float, ...]: ...
    @property
    def max_delay_level(self) -> int: ...
    @property
    def accepts_writes(self) -> bool: ...
    @property
    def store(self) -> MessageStore: ...
    def store_put(self, records: Sequence[MessageRecord]) -> AppendResult: ...


class ScheduleService:
    """One delivery task per delay level."""

    def __init__(self, broker: BrokerForSchedule, path: Path, *, clock: Clock) -> None:
        self.broker = broker
        self._clock = clock
        self.path = path
        self.offsets: dict[int, int] = {}
        self._dirty = False
        self.delivered = 0
        # Our own arrival waiters: on the broker's PullHoldService the 18 idle level tasks
        # would be counted as held client pulls.
        self._arrivals = PullHoldService()

    def load(self) -> None:
        found = load_document(self.path, kind=FILE_KIND, max_version=FILE_VERSION)
        if found is None:
            return
        _, payload = found
        if not isinstance(payload, dict) or not all(
            isinstance(k, int) and isinstance(v, int) for k, v in payload.items()
        ):
            raise MalformedBody(f"{self.path}: delay offsets must map level to offset")
        self.offsets = dict(payload)

    def take_dirty(self) -> bool:
        """Whether the offsets changed since the last call."""
        dirty, self._dirty = self._dirty, False
        return dirty

    def payload_snapshot(self) -> Callable[[], dict[int, int]]:
        """The offsets as they are now, as a function returning the file's payload (the
        background writer, ``broker/persistence.py``, writes it)."""
        offsets = dict(self.offsets)
        return lambda: offsets

    def offset_table_json(self) -> dict[str, Any]:
        """GET_ALL_DELAY_OFFSET's body: ``{"offsetTable": {"1": 5}}`` (standard JSON keys)."""
        return {"offsetTable": {str(level): off for level, off in sorted(self.offsets.items())}}

    def install_offsets(self, offsets: dict[int, int]) -> bool:
        """Take a master's offsets (a slave's metadata sync); True when anything changed."""
        if offsets == self.offsets:
            return False
        self.offsets = dict(offsets)
        self._dirty = True
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver due messages until cancelled (``load`` first)."""
        self.broker.store.add_arrival_listener(self._arrivals.notify, topic=SCHEDULE_TOPIC)
        async with trio.open_nursery() as nursery:
            for level in range(1, self.broker.max_delay_level + 1):
                nursery.start_soon(self._deliver_level, level)
            task_status.started()

    async def _deliver_level(self, level: int) -> None:
        delay_ms = int(self.broker.delay_levels_s[level - 1] * 1000)
        queue_id = level - 1
        while True:
            if not self.broker.accepts_writes:
                await trio.sleep(_IDLE_CHECK_S)
                continue
            wait_s = self._deliver_due(level, queue_id, delay_ms)
            if wait_s is None:
                await self._arrivals.wait(SCHEDULE_TOPIC, queue_id, _IDLE_CHECK_S)
            else:
                await trio.sleep(min(wait_s, _IDLE_CHECK_S))

    def _deliver_due(self, level: int, queue_id: int, delay_ms: int) -> float | None:
        """Deliver what is due; seconds until the next is due, or None when the queue is empty."""
        store = self.broker.store
        offset = self.offsets.get(level, 0)
        result = store.get_messages(
            "SCHEDULE", SCHEDULE_TOPIC, queue_id, offset, max_count=_BATCH, max_bytes=4 << 20
        )
        if result.status is not GetMessageStatus.FOUND:
            if result.next_begin_offset != offset and result.status in (
                GetMessageStatus.OFFSET_TOO_SMALL,
                GetMessageStatus.OFFSET_OVERFLOW_BADLY,
            ):
                self._advance(level, result.next_begin_offset)
            return None
        for raw, queue_offset in zip(result.records, result.queue_offsets, strict=True):
            record, _ = decode_record(raw)
            due_ms = record.store_timestamp_ms + delay_ms
            now_ms = self._clock.wall_ms()
            if due_ms > now_ms:
                return (due_ms - now_ms) / 1000
            if not self._redeliver(record):
                return _IDLE_CHECK_S
            self._advance(level, queue_offset + 1)
        return 0.0

    def _redeliver(self, record: Any) -> bool:
        properties = dict(record.properties)
        real_topic = properties.get(PROPERTY_REAL_TOPIC)
        real_qid = properties.get(PROPERTY_REAL_QID, "0")
        properties.pop(PROPERTY_DELAY, None)
        queue_id = int_property(real_qid)
        if not real_topic or queue_id is None or not 0 <= queue_id <= _INT32_MAX:
            log.warning(
                "%s: scheduled message at %d has no real topic; dropped",
                self.broker.name,
                record.physical_offset,
            )
            return True
        message = attrs.evolve(record, topic=real_topic, queue_id=queue_id, properties=properties)
        try:
            result = self.broker.store_put([message])
        except ServerError as exc:
            log.warning("%s: delayed delivery paused: %s", self.broker.name, exc)
            return False
        if not result.ok:
            log.warning(
                "%s: delayed message at %d refused (%s); dropped",
                self.broker.name,
                record.physical_offset,
                result.remark,
            )
        else:
            self.delivered += 1
        return True

    def _advance(self, level: int, offset: int) -> None:
        self.offsets[level] = offset
        self._dirty = True
