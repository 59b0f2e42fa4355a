"""What the message store answers: frozen values, and the names callers share with it.

Rules:
- Pure values (``@attrs.frozen``): no store state, no I/O; every layer of the store and
  every caller (processors, HA, the broker) imports them from here.
- Offsets are CommitLog byte offsets (``physical_*``) or ConsumeQueue entry numbers
  (``queue_*``), as their names say; times are epoch milliseconds (``*_ms``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Container

import attrs

from broker.store.pull import GetMessageStatus

#: Topic of delayed messages; their tag code is the delivery time (wire §3.7, §3.10).
SCHEDULE_TOPIC = "SCHEDULE_TOPIC_XXXX"
#: Topic of timer messages (RocketMQ's TimerMessageStore.TIMER_TOPIC); tag code = due time.
TIMER_TOPIC = "rmq_sys_wheel_timer"

#: ``listener(topic, queue_id, queue_offset_end, tags_code)`` after a ConsumeQueue append.
ArrivalListener = Callable[[str, int, int, int], None]
#: A listener and what it waits on: the topics it has waiters on (a live container of
#: its own, read at each arrival), or None for every topic it follows.
ListenerEntry = tuple[ArrivalListener, Container[str] | None]


class PutStatus(enum.Enum):
    """Outcome of a put that did not raise (RocketMQ ``PutMessageStatus`` subset)."""

    PUT_OK = "PUT_OK"
    MESSAGE_ILLEGAL = "MESSAGE_ILLEGAL"
    PROPERTIES_SIZE_EXCEEDED = "PROPERTIES_SIZE_EXCEEDED"


#: ``PutStatus.PUT_OK`` as a module constant: on Python 3.11 reading a member off an Enum
#: class passes through ``EnumType.__getattr__``'s slot (~90 ns, against ~7 for a global),
#: and the send path reads it three times a message.
PUT_OK = PutStatus.PUT_OK


@attrs.frozen(kw_only=True)
class AppendResult:
    """Where a put went. For a batch: the first record's offsets, ids comma-joined."""

    status: PutStatus
    physical_offset: int = -1
    wrote_bytes: int = 0
    queue_offset: int = -1
    msg_id: str = ""
    store_timestamp_ms: int = 0
    message_count: int = 0
    remark: str = ""

    @property
    def ok(self) -> bool:
        """The records are stored (not necessarily flushed or replicated)."""
        return self.status is PutStatus.PUT_OK

    @property
    def end_offset(self) -> int:
        """CommitLog offset just past the written bytes (what ``wait_flushed`` takes)."""
        return self.physical_offset + self.wrote_bytes


@attrs.frozen(kw_only=True)
class GetMessageResult:
    """A pull's answer: status, offsets and the records as they lie in the CommitLog."""

    status: GetMessageStatus
    next_begin_offset: int
    min_offset: int
    max_offset: int
    records: tuple[bytes, ...] = ()
    queue_offsets: tuple[int, ...] = ()

    @property
    def body(self) -> bytes:
        """The PULL body: the records concatenated byte for byte."""
        return b"".join(self.records)

    @property
    def message_count(self) -> int:
        """Number of records."""
        return len(self.records)

    @property
    def total_bytes(self) -> int:
        """Size of ``body``."""
        return sum(len(r) for r in self.records)


@attrs.frozen(kw_only=True)
class QueryResult:
    """A query by key: matching records, newest first, and the index's freshness."""

    records: tuple[bytes, ...]
    physical_offsets: tuple[int, ...]
    index_last_update_timestamp_ms: int
    index_last_update_phy_offset: int


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """A snapshot for monitoring and tests."""

    min_physical_offset: int
    max_physical_offset: int
    flushed_offset: int
    dispatched_offset: int
    confirm_offset: int
    flush_lag_bytes: int
    dispatch_lag_bytes: int
    segment_count: int
    consume_queue_count: int
    index_file_count: int
    flush_waiters: int
    max_flush_waiters: int
    flush_waiters_refused: int
    flush_rounds: int
    fsync_calls: int
    put_messages: int
    put_bytes: int
    disk_full: bool
    free_disk_bytes: int
