"""Consumer value types: enums, ``PullResult``, statistics snapshots, ``ConsumerConfig``.

Rules:
- Values only: frozen attrs classes and enums, no I/O. Enum values are the wire's
  (``CLUSTERING``, ``CONSUME_FROM_LAST_OFFSET``, ``CONSUME_SUCCESS``, ...).
- ``ConsumerConfig`` validates its invariants at construction (positive intervals and
  sizes, a group name that is not a retry or DLQ topic) and raises ``ValueError``.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from client.message import MAX_MESSAGE_BYTES, ReceivedMessage
from protocol.acl_sign import Credentials
from protocol.bodies import (
    BROADCASTING,
    CLUSTERING,
    CONSUME_FROM_FIRST_OFFSET,
    CONSUME_FROM_LAST_OFFSET,
    CONSUME_FROM_TIMESTAMP,
    EXPRESSION_SQL92,
    EXPRESSION_TAG,
    SubscriptionData,
    parse_subscription,
)
from protocol.group_topics import is_group_topic
from protocol.route import MASTER_ID, MessageQueue


class MessageModel(enum.Enum):
    """Clustering: the group shares the queues. Broadcasting: every consumer reads all."""

    CLUSTERING = CLUSTERING
    BROADCASTING = BROADCASTING


class ConsumeFrom(enum.Enum):
    """Where a group with no stored offset for a queue starts."""

    LAST = CONSUME_FROM_LAST_OFFSET
    FIRST = CONSUME_FROM_FIRST_OFFSET
    TIMESTAMP = CONSUME_FROM_TIMESTAMP


class ConsumeResult(enum.Enum):
    """What a listener returns: the messages are done, or must be consumed again later."""

    SUCCESS = "CONSUME_SUCCESS"
    RETRY = "RECONSUME_LATER"


class PullStatus(enum.Enum):
    FOUND = "FOUND"
    NO_NEW_MSG = "NO_NEW_MSG"
    NO_MATCHED_MSG = "NO_MATCHED_MSG"
    OFFSET_ILLEGAL = "OFFSET_ILLEGAL"


@attrs.frozen(kw_only=True)
class SkippedRecord:
    """A record of a pull answer that could not be handed out: undecodable or poisoned
    (bad CRC, properties or sizes, a body that does not inflate or inflates too far)."""

    queue: MessageQueue
    #: Its queue offset; None when the record is too damaged to tell where it lies.
    queue_offset: int | None
    #: Its CommitLog offset, what CONSUMER_SEND_MSG_BACK names; None when not readable.
    commit_log_offset: int | None
    #: UNIQ_KEY when its properties could be read, else the broker's offset id ("" if unknown).
    msg_id: str
    #: The topic it was first sent to (RETRY_TOPIC when readable, else the record's topic).
    original_topic: str
    reason: str


@attrs.frozen(kw_only=True)
class PullResult:
    """One PULL_MESSAGE answer: messages already decoded and re-filtered by tag.

    ``skipped`` lists the records that could not be decoded; ``next_begin_offset`` is past
    them. ``resync`` (internal) says the answer's first record was unreadable and its
    offset unknown: the pull is asked again for one message, which names it.
    """

    status: PullStatus
    next_begin_offset: int
    min_offset: int
    max_offset: int
    messages: tuple[ReceivedMessage, ...] = ()
    suggest_which_broker_id: int = MASTER_ID
    #: The broker of the group that answered (0: the master).
    broker_id: int = MASTER_ID
    skipped: tuple[SkippedRecord, ...] = ()
    resync: bool = False


Listener = Callable[[list[ReceivedMessage]], Awaitable[ConsumeResult]]


@attrs.frozen(kw_only=True)
class QueueStatistics:
    next_pull_offset: int
    committable_offset: int
    inflight: int
    max_inflight_seen: int
    #: The broker id the next pull asks for (the last answer's suggestWhichBrokerId).
    broker_id: int
    locked: bool
    #: The broker id that answered the last pull (0: the master).
    answered_by: int = MASTER_ID


@attrs.frozen(kw_only=True)
class ConsumerStatistics:
    """A snapshot: queue depths and counters."""

    client_id: str
    queues: Mapping[MessageQueue, QueueStatistics]
    #: Batches waiting for a listener worker (push) or for ``poll`` (lite pull).
    waiting_batches: int
    running_listeners: int
    rebalances: int
    consumed_ok: int
    sent_back: int
    dead_lettered: int
    redelivered_locally: int
    #: Undecodable or poisoned records skipped (each logged; sent to the DLQ when possible).
    skipped_records: int = 0


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen(kw_only=True)
class ConsumerConfig:
    """Knobs of push and lite pull consumers (defaults are RocketMQ's)."""

    group: str
    message_model: MessageModel = MessageModel.CLUSTERING
    consume_from: ConsumeFrom = ConsumeFrom.LAST
    #: For ConsumeFrom.TIMESTAMP (ms since the epoch); None: 30 minutes before start.
    consume_timestamp_ms: int | None = None
    orderly: bool = False
    max_inflight_per_queue: int = attrs.field(default=1000, validator=_positive)
    consume_batch_size: int = attrs.field(default=1, validator=_positive)
    #: Listener calls that may run at once (push, concurrent mode).
    consume_concurrency: int = attrs.field(default=20, validator=_positive)
    max_reconsume_times: int = 16
    pull_batch_size: int = attrs.field(default=32, validator=_positive)
    rebalance_interval_s: float = attrs.field(default=20.0, validator=_positive)
    heartbeat_interval_s: float = attrs.field(default=30.0, validator=_positive)
    persist_interval_s: float = attrs.field(default=5.0, validator=_positive)
    suspend_timeout_s: float = attrs.field(default=15.0, validator=_positive)
    route_refresh_interval_s: float = attrs.field(default=30.0, validator=_positive)
    #: Deadline of every request but a long-polling pull (which gets suspend + this).
    timeout_s: float = attrs.field(default=3.0, validator=_positive)
    #: Wait after a failed pull before the next one (RocketMQ: 3 s).
    pull_backoff_s: float = attrs.field(default=1.0, validator=_positive)
    #: Wait before consuming again a message whose send-back failed.
    retry_backoff_s: float = attrs.field(default=1.0, validator=_positive)
    orderly_suspend_s: float = attrs.field(default=1.0, validator=_positive)
    #: RocketMQ's maxMessageSize: a compressed body inflating past it is skipped, unread.
    max_message_bytes: int = attrs.field(default=MAX_MESSAGE_BYTES, validator=_positive)
    lock_interval_s: float = attrs.field(default=20.0, validator=_positive)
    #: Listener calls in progress get this long to finish at shutdown (and at a drop).
    shutdown_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    #: Batches buffered between pullers and listener workers (or ``poll``).
    buffered_batches: int = attrs.field(default=256, validator=_positive)
    offset_store_dir: Path | None = None
    instance: str | None = None
    #: TLS context to connect with (``protocol.tls.client_context``); None: as ``$RMQ_TLS*``.
    tls: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)
    #: ACL 1.0: the account every request is signed with (None: unsigned).
    credentials: Credentials | None = None

    def __attrs_post_init__(self) -> None:
        if not self.group or is_group_topic(self.group):
            raise ValueError(f"consumer group {self.group!r} is empty or reserved")
        if self.max_reconsume_times < 0:
            raise ValueError("max_reconsume_times must be >= 0")


@attrs.frozen
class MessageSelector:
    """What a subscription takes (Java's MessageSelector): a TAG expression (``"*"``,
    ``"TagA || TagB"``) or a SQL92 expression over message properties, which the broker
    evaluates (it needs ``enablePropertyFilter``, on by default)."""

    expression: str
    expression_type: str = EXPRESSION_TAG

    def __attrs_post_init__(self) -> None:
        if self.expression_type not in (EXPRESSION_TAG, EXPRESSION_SQL92):
            raise ValueError(f"expression type must be TAG or SQL92, not {self.expression_type!r}")

    @classmethod
    def by_sql(cls, expression: str) -> MessageSelector:
        """``MessageSelector.by_sql("a > 5 AND region = 'eu'")``."""
        return cls(expression, EXPRESSION_SQL92)

    @classmethod
    def by_tag(cls, expression: str = "*") -> MessageSelector:
        return cls(expression, EXPRESSION_TAG)


def subscription_of(
    topic: str, selector: str | MessageSelector, *, sub_version: int
) -> SubscriptionData:
    """The SubscriptionData of ``selector`` (a plain string is a TAG expression)."""
    chosen = selector if isinstance(selector, MessageSelector) else MessageSelector(selector)
    return parse_subscription(
        chosen.expression,
        topic=topic,
        sub_version=sub_version,
        expression_type=chosen.expression_type,
    )
