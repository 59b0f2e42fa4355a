"""Consumers: push (``open_push_consumer``), lite pull (``open_lite_pull_consumer``) and
explicit pull (``open_pull_consumer``).

Guarantees (stated here so users can rely on them):
- **At least once.** A message is handed to the listener (or returned by ``poll``) at
  least once while its group consumes the topic. Duplicates are possible: after a crash,
  after a queue moves to another consumer while its messages are in flight, after a
  send-back whose answer was lost. De-duplicate by ``ReceivedMessage.msg_id`` when needed.
- **Position kept through failover.** While a broker group's master is down, its queues
  stay owned and are pulled from a slave (the route still lists it; a pull that fails at
  the master is tried at a slave next), and offsets are read from and committed to that
  slave. A queue is never started at a guessed offset: when no broker of the group
  answers, or only a slave that has no offset for the group, the queue starts later
  (the next rebalance round) instead of at 0 or at the end. An offset read from a slave
  that lags, or from a restarted master that lost recent commits, never puts a queue
  below the position this consumer itself had for it; a slave behind our position is
  waited for, not followed backwards. Once the master is back, pulls return to it (the
  slave says so) and commits reach it (a commit only a slave took is sent again).
- **Duplicates are bounded** by what was in flight (pulled, not yet settled) plus what
  was settled since the last commit (``persist_interval_s``; commits also ride on every
  pull to a master) on the queues that move: at a crash, at a queue moving between
  consumers, and while consumers disagree on a topic's queues. That disagreement is kept
  short: a route refresh that finds a subscribed topic's queues or brokers changed starts
  a rebalance at once (not only NOTIFY_CONSUMER_IDS_CHANGED or the 20 s timer), a lost
  connection to a broker of the route triggers a refresh within a second, and a degraded
  route (a group or a master missing) is polled every second until it heals. A change the
  NameServer alone sees (a broker's link to it cut) waits for ``route_refresh_interval_s``.
- **Offsets never run ahead of the listener.** A queue's committable offset is the lowest
  offset handed to the listener that has not finished (or, with nothing in flight, the
  next offset to pull). Only that offset is committed: every message before it returned
  SUCCESS, went to the retry topic, or (after ``max_reconsume_times``) to the DLQ (in
  broadcasting: or failed and was skipped).
  Offsets are committed every ``persist_interval_s``, when a queue is dropped by a
  rebalance, and on shutdown. A queue's start offset (see ``consume_from``) is committed
  like any other, so a group restarts where it began even if nothing arrived meanwhile.
- **Retries (clustering).** A listener that returns ``ConsumeResult.RETRY``, raises, or
  returns anything but ``ConsumeResult.SUCCESS`` has its messages sent back to the broker
  (CONSUMER_SEND_MSG_BACK): they return through ``%RETRY%<group>`` after the broker's delay,
  with ``reconsume_times`` one higher, and are delivered with their original topic
  (``ReceivedMessage.queue`` still names the retry queue). A message that already had
  ``max_reconsume_times`` retries is sent to ``%DLQ%<group>`` instead. If the send-back
  itself fails (broker unreachable) the message is consumed again locally after
  ``retry_backoff_s`` and its offset stays uncommitted until it is settled.
- **Broadcasting.** Every consumer gets every queue; offsets live in a local JSON file
  (``<offset_store_dir>/<client_id>/<group>/offsets.json``, default dir ``~/.rmq_offsets``);
  failed messages are not retried (logged and skipped), as in RocketMQ. Give a fixed
  ``instance`` so a restarted process has the same client id and resumes from its file.
- **Orderly** (``orderly=True``): one listener call at a time per queue, in queue order.
  In clustering the queue is locked on its broker (LOCK_BATCH_MQ, renewed every
  ``lock_interval_s``) before anything of it is consumed. A failed message is redelivered
  locally after ``orderly_suspend_s`` (``reconsume_times`` + 1) and nothing after it runs
  until it succeeds; after ``max_reconsume_times`` it goes to the DLQ.
- **Flow control.** A queue never has more than ``max_inflight_per_queue`` messages pulled
  and not finished; its puller waits for the listener.
- **Shutdown** (leaving the ``async with``): pulling stops, listener calls in progress get
  up to ``shutdown_timeout_s`` to finish, offsets are committed, the client unregisters.
  Messages pulled but not yet started are not delivered; they are redelivered later.
- Every network call has a deadline; every network or server error raised is a
  ``RocketError`` (bad arguments raise ``ValueError``). Background failures (a pull, a
  commit, a heartbeat) are logged and retried, never raised into your code.

``consume_from`` (LAST, FIRST, TIMESTAMP) applies to queues the group has no offset for.
Unlike RocketMQ's default, the broker is asked not to answer "0" on its own for young
queues (``setZeroIfNotFound=false``), so a new group with LAST really starts at the end.
"""

from __future__ import annotations

import enum
import functools
import itertools
import logging
import os
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio

from client.message import ReceivedMessage
from client.offsets import BrokerOffsetStore, LocalFileOffsetStore, OffsetStore, call_replicas
from client.producer import local_ip
from client.routes import RouteCache, TopicInfo
from protocol.bodies import (
    BROADCASTING,
    CLUSTERING,
    CONSUME_ACTIVELY,
    CONSUME_FROM_FIRST_OFFSET,
    CONSUME_FROM_LAST_OFFSET,
    CONSUME_FROM_TIMESTAMP,
    CONSUME_PASSIVELY,
    ConsumerData,
    ConsumerListBody,
    HeartbeatData,
    LockBatchRequestBody,
    LockBatchResponseBody,
    SubscriptionData,
    UnlockBatchRequestBody,
    parse_subscription,
)
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    MalformedRecord,
    NetworkError,
    ProtocolError,
    RocketError,
    TopicNotExist,
    error_for_response,
)
from protocol.group_topics import dlq_topic, is_group_topic, is_retry_topic, retry_topic
from protocol.headers import (
    ConsumerSendMsgBackRequestHeader,
    GetConsumerListByGroupRequestHeader,
    GetMaxOffsetRequestHeader,
    GetMinOffsetRequestHeader,
    OffsetResponseHeader,
    PullMessageRequestHeader,
    PullMessageResponseHeader,
    SearchOffsetRequestHeader,
    UnregisterClientRequestHeader,
)
from protocol.message import iter_records
from protocol.route import MASTER_ID, MessageQueue
from protocol.rpc import (
    Connection,
    Handler,
    RemotingClient,
    background_nursery,
    check_success,
    open_client,
)

log = logging.getLogger(__name__)

#: PullSysFlag bits (wire.md §2.4).
PULL_COMMIT_OFFSET = 0x1
PULL_SUSPEND = 0x2
PULL_SUBSCRIPTION = 0x4

#: A client considers its queue lock valid this long after the broker granted it
#: (RocketMQ's client-side REBALANCE_LOCK_MAX_LIVE_TIME; the broker keeps it 60 s).
LOCK_VALID_S = 30.0

#: Route poll period while a subscribed topic's route lacks a broker group it had lately,
#: or a group lacks its master, and for ROUTE_BURST_S after a broker connection was lost.
FAST_ROUTE_REFRESH_S = 1.0
#: After a broker hangs up, the NameServer may still list it for a moment: poll fast a while.
ROUTE_BURST_S = 5.0
#: A group absent from a topic's route this long is no longer expected back.
FORGET_GROUP_S = 600.0


# --- public value types ----------------------------------------------------------------


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
class PullResult:
    """One PULL_MESSAGE answer: messages already decoded and re-filtered by tag."""

    status: PullStatus
    next_begin_offset: int
    min_offset: int
    max_offset: int
    messages: tuple[ReceivedMessage, ...] = ()
    suggest_which_broker_id: int = MASTER_ID
    #: The broker of the group that answered (0: the master).
    broker_id: int = MASTER_ID


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
    lock_interval_s: float = attrs.field(default=20.0, validator=_positive)
    #: Listener calls in progress get this long to finish at shutdown (and at a drop).
    shutdown_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    #: Batches buffered between pullers and listener workers (or ``poll``).
    buffered_batches: int = attrs.field(default=256, validator=_positive)
    offset_store_dir: Path | None = None
    instance: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.group or is_group_topic(self.group):
            raise ValueError(f"consumer group {self.group!r} is empty or reserved")
        if self.max_reconsume_times < 0:
            raise ValueError("max_reconsume_times must be >= 0")


# --- pure core -------------------------------------------------------------------------


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
    if subscription.is_sub_all:
        return True
    return message.tags is not None and message.tags in subscription.tags_set


def parse_pull_response(
    response: RemotingCommand, queue: MessageQueue, subscription: SubscriptionData
) -> PullResult:
    """A PULL_MESSAGE response as a ``PullResult``; other codes raise their ``ServerError``."""
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
    messages: tuple[ReceivedMessage, ...] = ()
    if status is PullStatus.FOUND:
        try:
            decoded = [
                ReceivedMessage.from_record(record, queue.broker_name)
                for record in iter_records(response.body)
            ]
        except zlib.error as exc:
            raise MalformedRecord(
                f"a compressed body from {queue} does not inflate: {exc}"
            ) from None
        messages = tuple(m for m in decoded if accepts(subscription, m))
        if not messages:
            status = PullStatus.NO_MATCHED_MSG
    return PullResult(
        status=status,
        next_begin_offset=header.next_begin_offset,
        min_offset=header.min_offset,
        max_offset=header.max_offset,
        messages=messages,
        suggest_which_broker_id=header.suggest_which_broker_id,
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


def _chunks(items: Sequence[ReceivedMessage], size: int) -> Iterable[list[ReceivedMessage]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _now_ms() -> int:
    return int(time.time() * 1000)


@functools.cache
def _host_ip() -> str:
    return local_ip()


_instances = itertools.count(1)


def make_consumer_client_id(instance: str | None) -> str:
    """``ip@instance`` for a named instance, else ``ip@pid#n`` (unique in this process)."""
    if instance:
        return f"{_host_ip()}@{instance}"
    return f"{_host_ip()}@{os.getpid()}#{next(_instances)}"


def _by_broker(queues: Iterable[MessageQueue]) -> dict[str, list[MessageQueue]]:
    out: dict[str, list[MessageQueue]] = {}
    for queue in queues:
        out.setdefault(queue.broker_name, []).append(queue)
    return out


# --- broker requests -------------------------------------------------------------------


class BrokerApi:
    """The broker requests consumers make, each under a deadline."""

    def __init__(self, client: RemotingClient, routes: RouteCache, timeout_s: float) -> None:
        self.client = client
        self.routes = routes
        self.timeout_s = timeout_s

    async def master(self, queue: MessageQueue) -> str:
        info = await self.routes.get(queue.topic)
        addr = info.master_of(queue.broker_name)
        if addr is None:
            raise NetworkError(f"broker group {queue.broker_name} has no master now")
        return addr

    async def call(
        self, addr: str, request: RemotingCommand, *, timeout_s: float | None = None
    ) -> RemotingCommand:
        """The SUCCESS response, or the ``RocketError`` of anything else."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        return check_success(await self.client.call(addr, request, timeout_s=timeout))

    async def pull(
        self,
        queue: MessageQueue,
        *,
        group: str,
        offset: int,
        max_nums: int,
        subscription: SubscriptionData,
        sys_flag: int,
        commit_offset: int = 0,
        suspend_s: float = 0.0,
        broker_id: int = MASTER_ID,
        timeout_s: float | None = None,
    ) -> PullResult:
        info = await self.routes.get(queue.topic)
        target_id, addr = pull_replica(info, queue.broker_name, broker_id)
        header = PullMessageRequestHeader(
            consumer_group=group,
            topic=queue.topic,
            queue_id=queue.queue_id,
            queue_offset=offset,
            max_msg_nums=max_nums,
            sys_flag=sys_flag,
            commit_offset=commit_offset,
            suspend_timeout_millis=int(suspend_s * 1000),
            sub_version=subscription.sub_version,
            subscription=subscription.sub_string,
            expression_type=subscription.expression_type,
        )
        request = RemotingCommand.request(RequestCode.PULL_MESSAGE, header.to_ext_fields())
        timeout = (self.timeout_s if timeout_s is None else timeout_s) + suspend_s
        response = await self.client.call(addr, request, timeout_s=timeout)
        result = parse_pull_response(response, queue, subscription)
        return attrs.evolve(result, broker_id=target_id)

    async def _queue_offset(
        self, code: int, queue: MessageQueue, header_ext: dict[str, str]
    ) -> tuple[int, int]:
        """(broker id, offset), asked of the master, else (not routed or not answering) of
        a slave: a slave's answer may lag the master's by what it has not replicated yet."""
        request = RemotingCommand.request(code, header_ext)
        broker_id, response = await call_replicas(
            self.client, self.routes, queue, request, timeout_s=self.timeout_s
        )
        check_success(response)
        return broker_id, OffsetResponseHeader.from_ext_fields(response.ext_fields).offset

    async def max_offset_at(self, queue: MessageQueue) -> tuple[int, int]:
        """(id of the broker that answered, its max offset of ``queue``)."""
        header = GetMaxOffsetRequestHeader(topic=queue.topic, queue_id=queue.queue_id)
        return await self._queue_offset(RequestCode.GET_MAX_OFFSET, queue, header.to_ext_fields())

    async def max_offset(self, queue: MessageQueue) -> int:
        return (await self.max_offset_at(queue))[1]

    async def min_offset(self, queue: MessageQueue) -> int:
        header = GetMinOffsetRequestHeader(topic=queue.topic, queue_id=queue.queue_id)
        code = RequestCode.GET_MIN_OFFSET
        return (await self._queue_offset(code, queue, header.to_ext_fields()))[1]

    async def search_offset(self, queue: MessageQueue, timestamp_ms: int) -> int:
        header = SearchOffsetRequestHeader(
            topic=queue.topic, queue_id=queue.queue_id, timestamp=timestamp_ms
        )
        code = RequestCode.SEARCH_OFFSET_BY_TIMESTAMP
        return (await self._queue_offset(code, queue, header.to_ext_fields()))[1]

    async def consumer_ids(self, group: str, info: TopicInfo) -> list[str]:
        """GET_CONSUMER_LIST_BY_GROUP from the first broker of the route that answers."""
        header = GetConsumerListByGroupRequestHeader(consumer_group=group)
        request = RemotingCommand.request(
            RequestCode.GET_CONSUMER_LIST_BY_GROUP, header.to_ext_fields()
        )
        last: RocketError | None = None
        for data in sorted(info.route.broker_datas, key=lambda d: d.broker_name):
            addrs = data.broker_addrs
            if not addrs:
                continue
            addr = addrs.get(MASTER_ID) or addrs[min(addrs)]
            try:
                response = await self.call(addr, request)
            except RocketError as exc:
                last = exc
                continue
            return list(ConsumerListBody.from_bytes(response.body).consumer_id_list)
        raise last or NetworkError(f"no broker in the route of {info.topic} to ask for {group}")

    async def send_back(
        self,
        queue: MessageQueue,
        message: ReceivedMessage,
        *,
        group: str,
        delay_level: int,
        max_reconsume_times: int,
    ) -> None:
        """CONSUMER_SEND_MSG_BACK to the master of the queue the message was pulled from."""
        header = ConsumerSendMsgBackRequestHeader(
            offset=message.commit_log_offset,
            group=group,
            delay_level=delay_level,
            origin_msg_id=message.msg_id,
            origin_topic=message.original_topic,
            max_reconsume_times=max_reconsume_times,
        )
        request = RemotingCommand.request(
            RequestCode.CONSUMER_SEND_MSG_BACK, header.to_ext_fields()
        )
        await self.call(await self.master(queue), request)

    async def lock(
        self, group: str, client_id: str, queues: Iterable[MessageQueue]
    ) -> dict[MessageQueue, bool]:
        """LOCK_BATCH_MQ per broker group: whether we hold each queue now.

        Queues of a broker that did not answer are left out (unknown, not refused).
        """
        answer: dict[MessageQueue, bool] = {}
        for broker_queues in _by_broker(queues).values():
            body = LockBatchRequestBody(
                consumer_group=group, client_id=client_id, mq_set=tuple(sorted(broker_queues))
            )
            request = RemotingCommand.request(RequestCode.LOCK_BATCH_MQ, body=body.to_bytes())
            try:
                response = await self.call(await self.master(broker_queues[0]), request)
            except RocketError as exc:
                log.warning("%s: locking %d queues failed: %s", group, len(broker_queues), exc)
                continue
            locked = set(LockBatchResponseBody.from_bytes(response.body).lock_ok_mq_set)
            answer.update((q, q in locked) for q in broker_queues)
        return answer

    async def unlock(self, group: str, client_id: str, queues: Iterable[MessageQueue]) -> None:
        """UNLOCK_BATCH_MQ per broker group; failures are logged (locks expire in 60 s)."""
        for broker_queues in _by_broker(queues).values():
            body = UnlockBatchRequestBody(
                consumer_group=group, client_id=client_id, mq_set=tuple(sorted(broker_queues))
            )
            request = RemotingCommand.request(RequestCode.UNLOCK_BATCH_MQ, body=body.to_bytes())
            try:
                await self.call(await self.master(broker_queues[0]), request)
            except RocketError as exc:
                log.warning("%s: unlocking %d queues failed: %s", group, len(broker_queues), exc)

    async def each(self, addrs: Iterable[str], request: RemotingCommand, what: str) -> int:
        """Send ``request`` to every address concurrently; the number that succeeded."""
        ok = 0

        async def one(addr: str) -> None:
            nonlocal ok
            try:
                await self.call(addr, request)
                ok += 1
            except RocketError as exc:
                log.warning("%s to %s failed: %s", what, addr, exc)

        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(one, addr)
        return ok


# --- per-queue state -------------------------------------------------------------------


class _Gauge:
    """A counter whose return to zero can be awaited."""

    def __init__(self) -> None:
        self.value = 0
        self._zero = trio.Event()
        self._zero.set()

    def inc(self) -> None:
        if self.value == 0:
            self._zero = trio.Event()
        self.value += 1

    def dec(self) -> None:
        assert self.value > 0
        self.value -= 1
        if self.value == 0:
            self._zero.set()

    async def wait_zero(self) -> None:
        while self.value:
            await self._zero.wait()


class _Tracked:
    """``with`` block counted in several gauges."""

    def __init__(self, *gauges: _Gauge) -> None:
        self._gauges = gauges

    def __enter__(self) -> None:
        for gauge in self._gauges:
            gauge.inc()

    def __exit__(self, *exc: object) -> None:
        for gauge in self._gauges:
            gauge.dec()


@attrs.define(eq=False)
class _QueueState:
    """One owned queue: its offsets, its tasks and its flow control."""

    queue: MessageQueue
    tracker: InflightOffsets
    pull_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    finished: trio.Event = attrs.field(factory=trio.Event)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    dropped: bool = False
    running: _Gauge = attrs.field(factory=_Gauge)
    space: trio.Event = attrs.field(factory=trio.Event)
    broker_id: int = MASTER_ID
    answered_by: int = MASTER_ID
    #: Set while a lagging slave refuses our offset (logged once per episode).
    waiting_for_replica: bool = False
    lock_valid_until: float = 0.0
    #: Orderly mode: pulled messages waiting for their turn, and a wake-up for the consumer.
    buffer: deque[ReceivedMessage] = attrs.field(factory=deque)
    arrived: trio.Event = attrs.field(factory=trio.Event)

    def locked(self, now_s: float) -> bool:
        return self.lock_valid_until > now_s

    @property
    def active(self) -> bool:
        """Not stopped: its messages may still be started."""
        return not self.stopped.is_set()

    def stop(self) -> None:
        """Stop pulling and starting messages; wake every wait of this queue's tasks.

        Listener calls in progress go on; their results still move the committable offset
        until the queue is marked ``dropped``.
        """
        self.pull_scope.cancel()
        self.stopped.set()
        self.arrived.set()
        self.space.set()


@attrs.frozen
class _Batch:
    state: _QueueState
    generation: int
    messages: list[ReceivedMessage]


# --- shared machinery: subscriptions, heartbeats, rebalance, pulling, offsets ------------


class _RebalancingConsumer:
    """What push and lite pull consumers share: they differ in how pulled messages leave."""

    consume_type: ClassVar[str] = CONSUME_PASSIVELY

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        config: ConsumerConfig,
        *,
        client_id: str,
        nursery: trio.Nursery,
    ) -> None:
        self.config = config
        self.group = config.group
        self.client_id = client_id
        self.routes = routes
        self.api = BrokerApi(client, routes, config.timeout_s)
        self.offsets: OffsetStore
        if config.message_model is MessageModel.BROADCASTING:
            base = config.offset_store_dir or Path.home() / ".rmq_offsets"
            self.offsets = LocalFileOffsetStore(base / client_id / self.group / "offsets.json")
        else:
            self.offsets = BrokerOffsetStore(
                client, routes, group=self.group, timeout_s=config.timeout_s
            )
        self._nursery = nursery
        self._subscriptions: dict[str, SubscriptionData] = {}
        self._queues: dict[MessageQueue, _QueueState] = {}
        self._rebalance_lock = trio.Lock()
        self._wakeup = trio.Event()
        #: Set when a round could not balance everything; the next comes sooner.
        self._retry_delay_s: float | None = None
        self._round_failed = False
        self._heartbeat_needed = True
        self._services = trio.CancelScope()
        self._stopping = False
        self._running = _Gauge()
        self._health = RouteHealth()
        self._route_poke = trio.Event()
        self._fast_routes_until = -float("inf")
        self._refresh_now = False
        self._rescan_connections = trio.Event()
        routes.add_listener(self._route_refreshed)
        self.rebalances = 0
        #: Route refreshes that found a subscribed topic's queues or brokers changed.
        self.route_changes = 0
        self.consumed_ok = 0
        self.sent_back = 0
        self.dead_lettered = 0
        self.redelivered_locally = 0

    # --- public ------------------------------------------------------------------------

    @property
    def clustering(self) -> bool:
        return self.config.message_model is MessageModel.CLUSTERING

    def subscribe(self, topic: str, expression: str = "*") -> None:
        """Subscribe to ``topic`` (``"*"`` or ``"TagA || TagB"``); takes effect at once."""
        if is_group_topic(topic):
            raise ValueError(f"{topic} is a group topic; subscribe to the original topic")
        self._subscriptions[topic] = parse_subscription(
            expression, topic=topic, sub_version=_now_ms()
        )
        self._heartbeat_needed = True
        self.request_rebalance()

    @property
    def subscriptions(self) -> dict[str, str]:
        return {topic: sub.sub_string for topic, sub in self._subscriptions.items()}

    def assigned_queues(self) -> frozenset[MessageQueue]:
        """The queues this consumer owns now (retry queues included)."""
        return frozenset(self._queues)

    def request_rebalance(self) -> None:
        self._wakeup.set()

    def statistics(self) -> ConsumerStatistics:
        now_s = trio.current_time()
        return ConsumerStatistics(
            client_id=self.client_id,
            queues={
                q: QueueStatistics(
                    next_pull_offset=s.tracker.next_offset,
                    committable_offset=s.tracker.committable(),
                    inflight=s.tracker.count,
                    max_inflight_seen=s.tracker.max_count_seen,
                    broker_id=s.broker_id,
                    locked=s.locked(now_s),
                    answered_by=s.answered_by,
                )
                for q, s in sorted(self._queues.items())
            },
            waiting_batches=self._waiting_batches(),
            running_listeners=self._running.value,
            rebalances=self.rebalances,
            consumed_ok=self.consumed_ok,
            sent_back=self.sent_back,
            dead_lettered=self.dead_lettered,
            redelivered_locally=self.redelivered_locally,
        )

    async def persist_offsets(self) -> None:
        """Commit every owned queue's committable offset now."""
        for state in self._queues.values():
            self._note_committable(state)
        await self.offsets.persist(list(self._queues))

    # --- hooks for subclasses ----------------------------------------------------------

    def _balanced_topics(self) -> list[str]:
        return sorted(self._subscriptions)

    def _subscription(self, topic: str) -> SubscriptionData:
        return self._subscriptions.get(topic) or parse_subscription("*", topic=topic)

    def _waiting_batches(self) -> int:
        return 0

    async def _deliver(
        self, state: _QueueState, generation: int, messages: list[ReceivedMessage]
    ) -> None:
        raise NotImplementedError

    def _start_queue_tasks(self, nursery: trio.Nursery, state: _QueueState) -> None:
        """Extra per-queue tasks (orderly consumption)."""

    async def _prepare_queue(self, queue: MessageQueue) -> float | None:
        """Before owning a queue: None to refuse for now, else the lock validity deadline."""
        return 0.0

    async def _released(self, states: list[_QueueState]) -> None:
        """After queues were dropped and their offsets committed (orderly: unlock)."""

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load offsets, heartbeat and rebalance once, then run the periodic services."""
        await self.offsets.load()
        if self._subscriptions:
            self._wakeup = trio.Event()
            await self.heartbeat()
            await self.rebalance()
        self._nursery.start_soon(self._run_services)

    async def _run_services(self) -> None:
        with self._services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._rebalance_loop)
                nursery.start_soon(self._every, self.config.heartbeat_interval_s, self.heartbeat)
                nursery.start_soon(
                    self._every, self.config.persist_interval_s, self.persist_offsets
                )
                nursery.start_soon(self._route_loop)
                nursery.start_soon(self._watch_connections)
                self._start_services(nursery)

    def _start_services(self, nursery: trio.Nursery) -> None:
        """Extra periodic services (orderly: lock renewal)."""

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await trio.sleep(interval_s)
            await job()

    async def shutdown(self, *, finish_polled: bool = True) -> None:
        """Stop pulling, let listeners finish (bounded), commit, unregister. Never raises."""
        self._stopping = True
        self._services.cancel()
        # A rebalance in progress was cancelled with the services: let it unwind. Later
        # ones return at once (``_stopping``), so nothing changes the queues under us.
        with trio.move_on_after(self.config.timeout_s):
            async with self._rebalance_lock:
                pass
        await self._stop_everything(finish_polled)

    async def _stop_everything(self, finish_polled: bool) -> None:
        config = self.config
        states = list(self._queues.values())
        for state in states:
            state.stop()
        with trio.move_on_after(config.shutdown_timeout_s) as scope:
            await self._running.wait_zero()
        if scope.cancelled_caught:
            log.warning(
                "%s: %d listener calls still running after %s s; their messages will be "
                "consumed again",
                self.client_id,
                self._running.value,
                config.shutdown_timeout_s,
            )
        self._before_final_commit(finish_polled)
        with trio.move_on_after(config.timeout_s * 2):
            await self.persist_offsets()
        for state in states:
            state.dropped = True
        with trio.move_on_after(config.timeout_s * 2):
            await self._released([s for s in states if not s.running.value])
        self._queues.clear()
        with trio.move_on_after(config.timeout_s * 2):
            await self._unregister()

    def _before_final_commit(self, finish_polled: bool) -> None:
        """Lite pull: count the last poll as processed."""

    async def _unregister(self) -> None:
        header = UnregisterClientRequestHeader(client_id=self.client_id, consumer_group=self.group)
        request = RemotingCommand.request(RequestCode.UNREGISTER_CLIENT, header.to_ext_fields())
        await self.api.each(self._broker_addresses(), request, f"{self.group}: unregister")

    # --- heartbeat ---------------------------------------------------------------------

    def _consumer_data(self) -> ConsumerData:
        subs = [self._subscriptions[t] for t in sorted(self._subscriptions)]
        subs += [
            parse_subscription("*", topic=t, sub_version=0)
            for t in self._balanced_topics()
            if t not in self._subscriptions
        ]
        return ConsumerData(
            group_name=self.group,
            consume_type=self.consume_type,
            message_model=self.config.message_model.value,
            consume_from_where=self.config.consume_from.value,
            subscription_data_set=tuple(subs),
        )

    def _broker_addresses(self) -> list[str]:
        addrs: set[str] = set()
        for topic in self._balanced_topics():
            info = self.routes.cached(topic)
            if info is not None:
                addrs.update(info.all_addresses())
        return sorted(addrs)

    async def heartbeat(self) -> None:
        """HEART_BEAT to every broker of the subscribed topics' routes."""
        for topic in self._balanced_topics():
            if self.routes.cached(topic) is None:
                try:
                    await self.routes.get(topic)
                except RocketError as exc:
                    log.debug("%s: no route of %s yet: %s", self.group, topic, exc)
        data = HeartbeatData(client_id=self.client_id, consumer_data_set=(self._consumer_data(),))
        request = RemotingCommand.request(RequestCode.HEART_BEAT, body=data.to_bytes())
        addrs = self._broker_addresses()
        ok = await self.api.each(addrs, request, f"{self.group}: heartbeat")
        self._heartbeat_needed = ok < len(addrs) or not addrs

    # --- routes ------------------------------------------------------------------------

    def _route_refreshed(self, previous: TopicInfo | None, info: TopicInfo) -> None:
        """RouteCache listener: a subscribed topic's queues or brokers changed → rebalance.

        Not only on NOTIFY_CONSUMER_IDS_CHANGED or the 20 s timer: while consumers of a
        group disagree on a topic's queues (one saw a group leave, one did not yet), both
        pull the queues they disagree on and every message of those is delivered twice.
        New brokers get our heartbeat first, so they list us and notify us.
        """
        if self._stopping or info.topic not in self._balanced_topics():
            return
        self._health.note(info, trio.current_time())
        if self._health.degraded():
            self._route_poke.set()  # the route loop shortens its wait
        if previous is None or previous.layout() == info.layout():
            return
        log.info(
            "%s: route of %s changed: %d readable queues on %s",
            self.client_id,
            info.topic,
            len(info.subscribe),
            sorted({q.broker_name for q in info.subscribe}),
        )
        self.route_changes += 1
        self._heartbeat_needed = True
        self._rescan_connections.set()
        self.request_rebalance()

    def _poke_routes(self, *, now: bool) -> None:
        """Poll the routes fast for a while (and at once when ``now``)."""
        self._fast_routes_until = trio.current_time() + ROUTE_BURST_S
        self._refresh_now |= now
        self._route_poke.set()

    def _route_wait_s(self) -> float:
        if self._health.degraded() or trio.current_time() < self._fast_routes_until:
            return min(self.config.route_refresh_interval_s, FAST_ROUTE_REFRESH_S)
        return self.config.route_refresh_interval_s

    async def _refresh_routes(self) -> None:
        """Read the routes of the balanced topics now (the listener reacts to changes)."""
        for topic in self._balanced_topics():
            try:
                await self.routes.refresh(topic)
            except TopicNotExist:
                self.routes.invalidate(topic)  # rebalances see it gone (and keep the queues)
                self._health.vanished(topic, trio.current_time())
            except RocketError as exc:
                log.debug("%s: route refresh of %s failed: %s", self.group, topic, exc)

    async def _route_loop(self) -> None:
        """Every ``route_refresh_interval_s``; every FAST_ROUTE_REFRESH_S while a route is
        degraded (``RouteHealth``) or just after a broker hung up."""
        last_s = trio.current_time()
        while True:
            with trio.move_on_at(last_s + self._route_wait_s()):
                await self._route_poke.wait()
            self._route_poke = trio.Event()
            now, self._refresh_now = self._refresh_now, False
            if not now and trio.current_time() < last_s + self._route_wait_s():
                continue  # woken to shorten the wait, not to refresh yet
            await self._refresh_routes()
            last_s = trio.current_time()

    async def _watch_connections(self) -> None:
        """Refresh the routes as soon as a connection to a broker of our routes is lost.

        A killed master closes every client's connection (heartbeats keep one open to each
        broker), while only the consumers that pull from it see a failed pull: this lets
        the others see its group leave the route within about a second too, instead of
        at their next 30 s poll (README: 1494 duplicates in master_kill_multi_master).
        """
        while True:
            wake = self._rescan_connections = trio.Event()
            lost: list[str] = []
            async with trio.open_nursery() as nursery:
                for addr in self._broker_addresses():
                    nursery.start_soon(self._watch_connection, addr, lost, wake)
                # Rescan on a route change (new brokers) and now and then (reconnected).
                with trio.move_on_after(self.config.heartbeat_interval_s):
                    await wake.wait()
                nursery.cancel_scope.cancel()
            if lost and not self._stopping:
                log.info("%s: connection to %s lost; reading routes again", self.group, lost)
                self._poke_routes(now=True)
                await trio.sleep(FAST_ROUTE_REFRESH_S)  # a broker that keeps hanging up

    async def _watch_connection(self, addr: str, lost: list[str], wake: trio.Event) -> None:
        try:
            with trio.fail_after(self.config.timeout_s):
                conn = await self.api.client.connection(addr)
        except (RocketError, trio.TooSlowError):
            return  # unreachable now: its failures show elsewhere (pulls, heartbeats)
        await conn.closed.wait()
        lost.append(addr)
        wake.set()

    # --- rebalance ---------------------------------------------------------------------

    async def _rebalance_loop(self) -> None:
        while True:
            wait_s = self.config.rebalance_interval_s
            if self._retry_delay_s is not None:
                wait_s = min(wait_s, self._retry_delay_s)
            with trio.move_on_after(wait_s):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            if self._heartbeat_needed:
                await self.heartbeat()
            await self.rebalance()

    def _failed_round(self) -> None:
        """Something could not be balanced: the next round comes sooner."""
        self._round_failed = True

    async def rebalance(self) -> None:
        """Re-compute this consumer's queues for every topic, drop and add the difference."""
        async with self._rebalance_lock:
            if self._stopping:
                return
            self._round_failed = False
            topics = self._balanced_topics()
            for topic in topics:
                try:
                    await self._rebalance_topic(topic)
                except RocketError as exc:
                    log.warning("%s: rebalance of %s failed: %s", self.group, topic, exc)
                    self.routes.invalidate(topic)
                    self._failed_round()
            stale = [s for q, s in self._queues.items() if q.topic not in topics]
            await self._drop(stale)
            if not self._round_failed:
                self._retry_delay_s = None
            else:  # 0.5 s, doubling up to 8 s while rounds keep failing
                previous = self._retry_delay_s
                self._retry_delay_s = 0.5 if previous is None else min(previous * 2, 8.0)
            self.rebalances += 1

    async def _rebalance_topic(self, topic: str) -> None:
        info = await self.routes.get(topic)
        queues = sorted(info.subscribe)
        if self.clustering:
            cids = await self.api.consumer_ids(self.group, info)
            if self.client_id not in cids:
                # The broker has not seen our heartbeat (yet): keep what we have.
                log.info("%s: %s not in the consumer list yet", self.group, self.client_id)
                self._heartbeat_needed = True
                self._failed_round()
                return
            mine = set(allocate_averagely(queues, cids, self.client_id))
        else:
            mine = set(queues)
        current = {q: s for q, s in self._queues.items() if q.topic == topic}
        dropped = [s for q, s in current.items() if q not in mine]
        if dropped:
            log.info("%s: %s drops %s", self.group, self.client_id, [s.queue for s in dropped])
        await self._drop(dropped)
        for queue in sorted(mine - current.keys()):
            try:
                await self._add_queue(queue)
            except RocketError as exc:
                log.warning("%s: cannot start %s: %s", self.group, queue, exc)
                self._failed_round()

    async def _add_queue(self, queue: MessageQueue) -> None:
        lock_until = await self._prepare_queue(queue)
        if lock_until is None:
            self._failed_round()
            return
        offset = await self._start_offset(queue)
        state = _QueueState(
            queue=queue, tracker=InflightOffsets(next_offset=offset), lock_valid_until=lock_until
        )
        self.offsets.update(queue, offset)
        self._queues[queue] = state
        log.info("%s: %s takes %s from offset %d", self.group, self.client_id, queue, offset)
        self._nursery.start_soon(self._run_queue, state)

    async def _start_offset(self, queue: MessageQueue) -> int:
        """The group's offset (master, else slave); consume_from only when a master says it
        has none. Raises when no broker of the group answers: a queue starts later rather
        than at a guessed offset (0 floods duplicates, the end loses messages)."""
        stored = await self.offsets.read_stored(queue)
        floor = self.offsets.floor(queue)
        if floor is not None and (stored is None or floor > stored):
            # Our own last position is above the broker's (a lagging copy, a master that
            # lost recent commits). It wins unless a master's queue ends below it: a new
            # store, whose messages we would skip. A slave's end may just lag behind.
            broker_id, top = await self.api.max_offset_at(queue)
            if floor <= top or broker_id != MASTER_ID:
                log.info(
                    "%s: %s resumes at its own last position %d, not at the stored %s",
                    self.group,
                    queue,
                    floor,
                    stored,
                )
                return floor
        if stored is not None:
            return stored
        is_retry = is_retry_topic(queue.topic)
        match self.config.consume_from:
            case ConsumeFrom.FIRST:
                return 0
            case ConsumeFrom.LAST:
                return 0 if is_retry else await self.api.max_offset(queue)
            case ConsumeFrom.TIMESTAMP:
                if is_retry:
                    return await self.api.max_offset(queue)
                ts = self.config.consume_timestamp_ms
                if ts is None:
                    ts = _now_ms() - 30 * 60 * 1000
                return await self.api.search_offset(queue, ts)

    async def _drop(self, states: list[_QueueState]) -> None:
        """Stop the queues, let their listener calls finish (bounded), commit, release."""
        if not states:
            return
        for state in states:
            state.stop()
            if self._queues.get(state.queue) is state:
                del self._queues[state.queue]
        idle: list[_QueueState] = []

        async def settle(state: _QueueState) -> None:
            with trio.move_on_after(self.config.shutdown_timeout_s):
                await state.running.wait_zero()
            if state.running.value:
                log.warning("%s: %s dropped while its listener still runs", self.group, state.queue)
            else:
                idle.append(state)
            self._note_committable(state)
            state.dropped = True

        async with trio.open_nursery() as nursery:
            for state in states:
                nursery.start_soon(settle, state)
        with trio.move_on_after(self.config.timeout_s * 2):
            await self.offsets.persist([s.queue for s in states])
        with trio.move_on_after(self.config.timeout_s * 2):
            await self._released(idle)
        for state in states:
            self.offsets.remove(state.queue)

    # --- pulling -----------------------------------------------------------------------

    async def _run_queue(self, state: _QueueState) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pull_loop, state)
                self._start_queue_tasks(nursery, state)
        finally:
            state.finished.set()

    async def _pull_loop(self, state: _QueueState) -> None:
        config = self.config
        with state.pull_scope:
            while True:
                limit = config.max_inflight_per_queue
                while state.tracker.count >= limit:
                    state.space = trio.Event()
                    await state.space.wait()
                max_nums = min(config.pull_batch_size, limit - state.tracker.count)
                try:
                    result = await self._pull(state, max_nums)
                except RocketError as exc:
                    log.warning("%s: pull of %s failed: %s", self.group, state.queue, exc)
                    self._pull_failed(state)
                    await trio.sleep(config.pull_backoff_s)
                    continue
                await self._handle_pull(state, result)

    def _pull_failed(self, state: _QueueState) -> None:
        """Read the route again; after the master failed, try a slave next (it sends us
        back with suggestWhichBrokerId=0 while it still hears from its master)."""
        queue = state.queue
        info = self.routes.cached(queue.topic)
        failed_id = state.broker_id
        if info is not None and info.addresses_of(queue.broker_name):
            failed_id = pull_replica(info, queue.broker_name, state.broker_id)[0]
        state.broker_id = failover_broker_id(info, queue.broker_name, failed_id)
        self.routes.invalidate(queue.topic)

    async def _pull(self, state: _QueueState, max_nums: int) -> PullResult:
        sys_flag = PULL_SUSPEND | PULL_SUBSCRIPTION
        commit = 0
        if self.clustering:
            stored = self.offsets.get(state.queue)
            if stored is not None and stored > 0:
                sys_flag |= PULL_COMMIT_OFFSET
                commit = stored
        offset = state.tracker.next_offset
        result = await self.api.pull(
            state.queue,
            group=self.group,
            offset=offset,
            max_nums=max_nums,
            subscription=self._subscription(state.queue.topic),
            sys_flag=sys_flag,
            commit_offset=commit,
            suspend_s=self.config.suspend_timeout_s,
            broker_id=state.broker_id,
        )
        check_pull_offsets(result, offset)
        return result

    async def _handle_pull(self, state: _QueueState, result: PullResult) -> None:
        tracker = state.tracker
        state.broker_id = result.suggest_which_broker_id
        state.answered_by = result.broker_id
        self._check_suggestion(state)
        if (
            result.status is PullStatus.OFFSET_ILLEGAL
            and result.broker_id != MASTER_ID
            and result.next_begin_offset < tracker.next_offset
        ):
            # A slave behind us answers OFFSET_MOVED to its own max offset (RocketMQ's
            # slaves answer PULL_RETRY_IMMEDIATELY, offsetCheckInSlave=false). Going back
            # would deliver again what we consumed from the master: wait for the slave to
            # catch up, or for a master (a new one decides where we continue).
            if not state.waiting_for_replica:
                log.info(
                    "%s: slave %d of %s is behind our offset %d (at %d); waiting",
                    self.group,
                    result.broker_id,
                    state.queue,
                    tracker.next_offset,
                    result.next_begin_offset,
                )
            state.waiting_for_replica = True
            state.broker_id = MASTER_ID
            await trio.sleep(self.config.pull_backoff_s)
            return
        state.waiting_for_replica = False
        if result.status is PullStatus.OFFSET_ILLEGAL:
            log.warning(
                "%s: offset %d of %s is illegal; continuing at %d",
                self.group,
                tracker.next_offset,
                state.queue,
                result.next_begin_offset,
            )
            tracker.reset(result.next_begin_offset)
            state.buffer.clear()  # orderly: what waits is of the old generation
            self._note_committable(state)
            with trio.move_on_after(self.config.timeout_s * 2):
                await self.offsets.persist([state.queue])
            return
        messages = list(result.messages)
        if messages and is_retry_topic(state.queue.topic):
            messages = [attrs.evolve(m, topic=m.original_topic) for m in messages]
        tracker.add(m.queue_offset for m in messages)
        tracker.advance(result.next_begin_offset)
        self._note_committable(state)
        if messages:
            await self._deliver(state, tracker.generation, messages)

    def _check_suggestion(self, state: _QueueState) -> None:
        """A broker that names a replica our route lacks knows of a master we do not (it
        came back, or was elected): poll the route fast until we see it."""
        info = self.routes.cached(state.queue.topic)
        if info is not None and state.broker_id not in info.addresses_of(state.queue.broker_name):
            self._poke_routes(now=False)

    # --- offsets -----------------------------------------------------------------------

    def _note_committable(self, state: _QueueState) -> None:
        if not state.dropped:
            self.offsets.update(state.queue, state.tracker.committable())

    def _finish(
        self, state: _QueueState, generation: int, messages: Iterable[ReceivedMessage]
    ) -> None:
        tracker = state.tracker
        for message in messages:
            tracker.finish(message.queue_offset, generation)
        self._note_committable(state)
        if tracker.count < self.config.max_inflight_per_queue:
            state.space.set()


# --- push consumer ---------------------------------------------------------------------


class PushConsumer(_RebalancingConsumer):
    """Pulls for its listener; build it with ``open_push_consumer`` (module docstring)."""

    consume_type = CONSUME_PASSIVELY

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        config: ConsumerConfig,
        listener: Listener,
        *,
        client_id: str,
        nursery: trio.Nursery,
    ) -> None:
        super().__init__(client, routes, config, client_id=client_id, nursery=nursery)
        self._listener = listener
        self._send, self._receive = trio.open_memory_channel[_Batch](config.buffered_batches)

    def _balanced_topics(self) -> list[str]:
        topics = sorted(self._subscriptions)
        if self.clustering and topics:
            topics.append(retry_topic(self.group))
        return topics

    def _waiting_batches(self) -> int:
        return self._send.statistics().current_buffer_used

    async def start(self) -> None:
        if not self.config.orderly:
            for _ in range(self.config.consume_concurrency):
                self._nursery.start_soon(self._worker)
        await super().start()

    # --- the listener --------------------------------------------------------------------

    async def _call_listener(
        self, queue: MessageQueue, messages: list[ReceivedMessage]
    ) -> ConsumeResult:
        try:
            result: object = await self._listener(list(messages))
        except Exception:
            log.exception(
                "%s: listener raised on %d messages of %s; they will be retried",
                self.group,
                len(messages),
                queue,
            )
            return ConsumeResult.RETRY
        if result is ConsumeResult.SUCCESS:
            return result
        if result is not ConsumeResult.RETRY:
            log.warning(
                "%s: listener returned %r, not a ConsumeResult; retrying", self.group, result
            )
        return ConsumeResult.RETRY

    async def _send_back(self, state: _QueueState, message: ReceivedMessage, *, dlq: bool) -> bool:
        """To %RETRY% (or the DLQ); False when the broker could not be told."""
        try:
            await self.api.send_back(
                state.queue,
                message,
                group=self.group,
                delay_level=-1 if dlq else 0,
                max_reconsume_times=self.config.max_reconsume_times,
            )
        except RocketError as exc:
            log.warning("%s: send-back of %s failed: %s", self.group, message.msg_id, exc)
            return False
        if dlq:
            self.dead_lettered += 1
        else:
            self.sent_back += 1
        return True

    async def _deliver(
        self, state: _QueueState, generation: int, messages: list[ReceivedMessage]
    ) -> None:
        if self.config.orderly:
            state.buffer.extend(messages)
            state.arrived.set()
            return
        for chunk in _chunks(messages, self.config.consume_batch_size):
            await self._send.send(_Batch(state, generation, chunk))

    def _track(self, state: _QueueState) -> _Tracked:
        """Count a consume-and-settle section (shutdown and drops wait for these)."""
        return _Tracked(self._running, state.running)

    # --- concurrent mode -----------------------------------------------------------------

    async def _worker(self) -> None:
        async for batch in self._receive:
            if not batch.state.active or self._stopping:
                continue  # redelivered to whoever owns the queue next
            with self._track(batch.state):
                await self._consume_concurrently(batch)

    async def _consume_concurrently(self, batch: _Batch) -> None:
        state = batch.state
        result = await self._call_listener(state.queue, batch.messages)
        if result is ConsumeResult.SUCCESS:
            self.consumed_ok += len(batch.messages)
            self._finish(state, batch.generation, batch.messages)
            return
        if not self.clustering:
            log.warning(
                "%s: broadcasting, %d failed messages of %s are dropped",
                self.group,
                len(batch.messages),
                state.queue,
            )
            self._finish(state, batch.generation, batch.messages)
            return
        failed: list[ReceivedMessage] = []
        for message in batch.messages:
            dlq = message.reconsume_times >= self.config.max_reconsume_times
            if await self._send_back(state, message, dlq=dlq):
                self._finish(state, batch.generation, [message])
            else:
                failed.append(message)
        if failed:
            self._nursery.start_soon(self._redeliver_later, _Batch(state, batch.generation, failed))

    async def _redeliver_later(self, batch: _Batch) -> None:
        with trio.move_on_after(self.config.retry_backoff_s):
            await batch.state.stopped.wait()
        if not batch.state.active or self._stopping:
            return
        again = [attrs.evolve(m, reconsume_times=m.reconsume_times + 1) for m in batch.messages]
        self.redelivered_locally += len(again)
        await self._send.send(_Batch(batch.state, batch.generation, again))

    # --- orderly mode --------------------------------------------------------------------

    def _start_queue_tasks(self, nursery: trio.Nursery, state: _QueueState) -> None:
        if self.config.orderly:
            nursery.start_soon(self._orderly_loop, state)

    def _start_services(self, nursery: trio.Nursery) -> None:
        if self.config.orderly and self.clustering:
            nursery.start_soon(self._every, self.config.lock_interval_s, self._renew_locks)

    async def _prepare_queue(self, queue: MessageQueue) -> float | None:
        if not (self.config.orderly and self.clustering):
            return 0.0
        now_s = trio.current_time()
        if not (await self.api.lock(self.group, self.client_id, [queue])).get(queue):
            log.info("%s: %s is locked by another consumer; retrying", self.group, queue)
            return None
        return now_s + LOCK_VALID_S

    async def _renew_locks(self) -> None:
        """Lock every owned queue again; a queue its broker refused stops being consumed."""
        states = list(self._queues.values())
        if not states:
            return
        now_s = trio.current_time()
        answer = await self.api.lock(self.group, self.client_id, [s.queue for s in states])
        for state in states:
            held = answer.get(state.queue)
            if held:
                state.lock_valid_until = now_s + LOCK_VALID_S
            elif held is not None:
                log.warning("%s: lost the lock of %s", self.group, state.queue)
                state.lock_valid_until = 0.0

    async def _released(self, states: list[_QueueState]) -> None:
        if self.config.orderly and self.clustering and states:
            await self.api.unlock(self.group, self.client_id, [s.queue for s in states])

    async def _pause(self, state: _QueueState, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await state.stopped.wait()

    def _halted(self, state: _QueueState) -> bool:
        return self._stopping or not state.active

    async def _hold_lock(self, state: _QueueState) -> bool:
        """Clustering: make sure our lock of the queue is valid (lock it again if needed)."""
        if not self.clustering:
            return True
        now_s = trio.current_time()
        if state.locked(now_s):
            return True
        if (await self.api.lock(self.group, self.client_id, [state.queue])).get(state.queue):
            state.lock_valid_until = now_s + LOCK_VALID_S
            return True
        return False

    async def _orderly_loop(self, state: _QueueState) -> None:
        """Consume the queue's messages one batch at a time, each until it is settled."""
        config = self.config
        while not self._halted(state):
            if not state.buffer:
                state.arrived = trio.Event()
                await state.arrived.wait()
                continue
            if not await self._hold_lock(state):
                await self._pause(state, config.orderly_suspend_s)
                continue
            generation = state.tracker.generation
            size = min(config.consume_batch_size, len(state.buffer))
            batch = [state.buffer.popleft() for _ in range(size)]
            while True:
                with self._track(state):
                    settled = await self._consume_orderly(state, batch)
                if settled:
                    self._finish(state, generation, batch)
                    break
                # Nothing after this batch runs until it is settled: that is the order.
                batch = [attrs.evolve(m, reconsume_times=m.reconsume_times + 1) for m in batch]
                self.redelivered_locally += len(batch)
                await self._pause(state, config.orderly_suspend_s)
                while not self._halted(state) and not await self._hold_lock(state):
                    await self._pause(state, config.orderly_suspend_s)
                if self._halted(state):
                    return  # unsettled: not committed, consumed again by the next owner

    async def _consume_orderly(self, state: _QueueState, batch: list[ReceivedMessage]) -> bool:
        """True when the batch is settled (consumed, or dead-lettered after its retries)."""
        if await self._call_listener(state.queue, batch) is ConsumeResult.SUCCESS:
            self.consumed_ok += len(batch)
            return True
        if any(m.reconsume_times < self.config.max_reconsume_times for m in batch):
            return False
        if not self.clustering:
            log.warning("%s: broadcasting, dropping %d failed messages", self.group, len(batch))
            return True
        for message in batch:
            if not await self._send_back(state, message, dlq=True):
                return False
        return True


# --- lite pull consumer ----------------------------------------------------------------


class LitePullConsumer(_RebalancingConsumer):
    """Rebalanced like a push consumer, but the application calls ``poll``.

    Messages returned by ``poll`` count as processed when ``poll`` (or ``commit``) is
    called again, or when the ``async with`` block exits without an exception; their
    offsets are then committed at the next persist interval, or at once by ``commit``.
    """

    consume_type = CONSUME_ACTIVELY

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        config: ConsumerConfig,
        *,
        client_id: str,
        nursery: trio.Nursery,
        poll_batch_size: int,
    ) -> None:
        super().__init__(client, routes, config, client_id=client_id, nursery=nursery)
        assert poll_batch_size > 0
        self.poll_batch_size = poll_batch_size
        self._send, self._receive = trio.open_memory_channel[_Batch](config.buffered_batches)
        self._leftover: deque[tuple[_QueueState, int, ReceivedMessage]] = deque()
        self._polled: list[tuple[_QueueState, int, ReceivedMessage]] = []

    def _waiting_batches(self) -> int:
        return self._send.statistics().current_buffer_used

    async def _deliver(
        self, state: _QueueState, generation: int, messages: list[ReceivedMessage]
    ) -> None:
        for chunk in _chunks(messages, self.poll_batch_size):
            await self._send.send(_Batch(state, generation, chunk))

    def _finish_polled(self) -> None:
        polled, self._polled = self._polled, []
        for state, generation, message in polled:
            self._finish(state, generation, [message])
            self.consumed_ok += 1

    def _before_final_commit(self, finish_polled: bool) -> None:
        if finish_polled:
            self._finish_polled()

    def _take(self, batch: _Batch) -> None:
        if batch.state.active:
            self._leftover.extend((batch.state, batch.generation, m) for m in batch.messages)

    def _live_leftover(self) -> bool:
        while self._leftover and not self._leftover[0][0].active:
            self._leftover.popleft()
        return bool(self._leftover)

    async def poll(self, timeout_s: float = 5.0) -> list[ReceivedMessage]:
        """Up to ``poll_batch_size`` messages; [] when none came within ``timeout_s``.

        Calling it counts the messages of the previous poll as processed.
        """
        self._finish_polled()
        if self._stopping:
            return []
        with trio.move_on_after(timeout_s):
            while not self._live_leftover():
                self._take(await self._receive.receive())
        while len(self._leftover) < self.poll_batch_size:
            try:
                self._take(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        out: list[tuple[_QueueState, int, ReceivedMessage]] = []
        while self._live_leftover() and len(out) < self.poll_batch_size:
            out.append(self._leftover.popleft())
        self._polled = out
        return [m for _, _, m in out]

    async def commit(self) -> None:
        """Count everything polled so far as processed and commit the offsets now."""
        self._finish_polled()
        await self.persist_offsets()


# --- explicit pull consumer ------------------------------------------------------------


class PullConsumer:
    """Pull exactly the queue and offset you name; offsets are yours to commit.

    It registers no membership with the brokers (nothing is rebalanced); pulls carry
    their subscription expression, so no heartbeat is needed. ``commit`` needs the group
    to exist on the broker (UPDATE_CONSUMER_OFFSET refuses unknown groups with
    ``SubscriptionGroupNotExist``); a pull creates it where the broker auto-creates groups.

    Failover: pulls, offset reads (``committed_offset``, ``max_offset``, ...) and commits
    go to the queue's master, else to a slave of its group (after a failure the route is
    read again). A slave's answers may lag the master's; ``committed_offset`` raises
    ``NetworkError`` rather than answer None when only a slave answered and it has no
    offset. A commit a slave took is overwritten by the master's value once the master is
    back: commit again then (``commit`` returns True once a master took it).
    """

    def __init__(
        self, client: RemotingClient, routes: RouteCache, *, group: str, timeout_s: float
    ) -> None:
        self.group = group
        self.timeout_s = timeout_s
        self.routes = routes
        self.api = BrokerApi(client, routes, timeout_s)
        self._offsets = BrokerOffsetStore(client, routes, group=group, timeout_s=timeout_s)

    async def fetch_subscribe_queues(self, topic: str) -> list[MessageQueue]:
        """The readable queues of ``topic`` (route read from a NameServer now)."""
        info = await self.routes.refresh(topic)
        return sorted(info.subscribe)

    async def pull(
        self,
        queue: MessageQueue,
        offset: int,
        max_nums: int = 32,
        *,
        expression: str = "*",
        timeout_s: float | None = None,
        long_poll_s: float = 0.0,
    ) -> PullResult:
        """Up to ``max_nums`` messages from ``offset``; ``long_poll_s`` > 0 waits for arrivals.

        The whole call has the deadline ``timeout_s`` (+ ``long_poll_s``).
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        subscription = parse_subscription(expression, topic=queue.topic, sub_version=_now_ms())
        flag = PULL_SUBSCRIPTION | (PULL_SUSPEND if long_poll_s > 0 else 0)
        try:
            return await self.api.pull(
                queue,
                group=self.group,
                offset=offset,
                max_nums=max_nums,
                subscription=subscription,
                sys_flag=flag,
                suspend_s=long_poll_s,
                timeout_s=timeout_s,
            )
        except RocketError:
            self.routes.invalidate(queue.topic)
            raise

    async def committed_offset(self, queue: MessageQueue) -> int | None:
        """The group's committed offset of ``queue``; None when it has none."""
        return await self._offsets.read_stored(queue)

    async def commit(self, queue: MessageQueue, offset: int) -> bool:
        """Store ``offset`` (the next message to consume) as the group's offset of ``queue``.

        True when the master took it, False when only a slave could (master down).
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        return await self._offsets.commit(queue, offset)

    async def max_offset(self, queue: MessageQueue) -> int:
        return await self.api.max_offset(queue)

    async def min_offset(self, queue: MessageQueue) -> int:
        return await self.api.min_offset(queue)

    async def search_offset(self, queue: MessageQueue, timestamp_ms: int) -> int:
        return await self.api.search_offset(queue, timestamp_ms)


# --- context managers ------------------------------------------------------------------


def _namesrv_list(namesrv: str | Sequence[str]) -> list[str]:
    addrs = [namesrv] if isinstance(namesrv, str) else list(namesrv)
    out = [a.strip() for part in addrs for a in part.replace(",", ";").split(";") if a.strip()]
    if not out:
        raise ValueError("at least one NameServer address is needed")
    return out


class _NotifySignal:
    """NOTIFY_CONSUMER_IDS_CHANGED → rebalance now (the consumer is set once it exists)."""

    def __init__(self) -> None:
        self.consumer: _RebalancingConsumer | None = None

    async def handle(self, request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
        if self.consumer is not None:
            log.debug("%s: consumer ids changed (from %s)", self.consumer.group, conn.peer)
            self.consumer.request_rebalance()
        return None


@asynccontextmanager
async def _running(
    namesrv: str | Sequence[str],
    config: ConsumerConfig,
    subscriptions: Mapping[str, str] | None,
    build: Callable[[RemotingClient, RouteCache, str, trio.Nursery], _RebalancingConsumer],
) -> AsyncIterator[_RebalancingConsumer]:
    addrs = _namesrv_list(namesrv)
    client_id = make_consumer_client_id(config.instance)
    signal = _NotifySignal()
    handlers: dict[int, Handler] = {RequestCode.NOTIFY_CONSUMER_IDS_CHANGED: signal.handle}
    async with open_client(
        name=f"consumer {config.group}", handlers=handlers, default_timeout_s=config.timeout_s
    ) as client:
        routes = RouteCache(
            client,
            addrs,
            request_timeout_s=config.timeout_s,
            refresh_interval_s=config.route_refresh_interval_s,
        )
        async with background_nursery() as nursery:
            consumer = build(client, routes, client_id, nursery)
            signal.consumer = consumer
            for topic, expression in (subscriptions or {}).items():
                consumer.subscribe(topic, expression)
            await consumer.start()
            clean = False
            try:
                yield consumer
                clean = True
            finally:
                with trio.CancelScope(shield=True):
                    await consumer.shutdown(finish_polled=clean)


def _config(group: str, kwargs: Mapping[str, object]) -> ConsumerConfig:
    try:
        return ConsumerConfig(group=group, **kwargs)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"bad consumer option: {exc}") from None


@asynccontextmanager
async def open_push_consumer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str,
    listener: Listener,
    subscriptions: Mapping[str, str] | None = None,
    message_model: MessageModel = MessageModel.CLUSTERING,
    consume_from: ConsumeFrom = ConsumeFrom.LAST,
    consume_timestamp_ms: int | None = None,
    orderly: bool = False,
    max_inflight_per_queue: int = 1000,
    consume_batch_size: int = 1,
    consume_concurrency: int = 20,
    max_reconsume_times: int = 16,
    pull_batch_size: int = 32,
    rebalance_interval_s: float = 20.0,
    heartbeat_interval_s: float = 30.0,
    persist_interval_s: float = 5.0,
    suspend_timeout_s: float = 15.0,
    **options: object,
) -> AsyncIterator[PushConsumer]:
    """A started push consumer; it shuts down gracefully when the block exits.

    ``options`` are further ``ConsumerConfig`` fields (``timeout_s``, ``shutdown_timeout_s``,
    ``offset_store_dir``, ``instance``, ...). ``subscribe()`` adds topics at any time.
    """
    config = _config(
        group,
        {
            "message_model": message_model,
            "consume_from": consume_from,
            "consume_timestamp_ms": consume_timestamp_ms,
            "orderly": orderly,
            "max_inflight_per_queue": max_inflight_per_queue,
            "consume_batch_size": consume_batch_size,
            "consume_concurrency": consume_concurrency,
            "max_reconsume_times": max_reconsume_times,
            "pull_batch_size": pull_batch_size,
            "rebalance_interval_s": rebalance_interval_s,
            "heartbeat_interval_s": heartbeat_interval_s,
            "persist_interval_s": persist_interval_s,
            "suspend_timeout_s": suspend_timeout_s,
            **options,
        },
    )

    def build(
        client: RemotingClient, routes: RouteCache, client_id: str, nursery: trio.Nursery
    ) -> PushConsumer:
        return PushConsumer(client, routes, config, listener, client_id=client_id, nursery=nursery)

    async with _running(namesrv, config, subscriptions, build) as consumer:
        assert isinstance(consumer, PushConsumer)
        yield consumer


@asynccontextmanager
async def open_lite_pull_consumer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str,
    subscriptions: Mapping[str, str] | None = None,
    message_model: MessageModel = MessageModel.CLUSTERING,
    consume_from: ConsumeFrom = ConsumeFrom.LAST,
    poll_batch_size: int = 10,
    max_inflight_per_queue: int = 1000,
    persist_interval_s: float = 5.0,
    **options: object,
) -> AsyncIterator[LitePullConsumer]:
    """A started lite pull consumer: ``subscribe`` then ``await poll()``.

    ``max_inflight_per_queue`` bounds the messages buffered or polled-and-unfinished per
    queue. ``options`` are further ``ConsumerConfig`` fields.
    """
    config = _config(
        group,
        {
            "message_model": message_model,
            "consume_from": consume_from,
            "max_inflight_per_queue": max_inflight_per_queue,
            "persist_interval_s": persist_interval_s,
            **options,
        },
    )

    def build(
        client: RemotingClient, routes: RouteCache, client_id: str, nursery: trio.Nursery
    ) -> LitePullConsumer:
        return LitePullConsumer(
            client,
            routes,
            config,
            client_id=client_id,
            nursery=nursery,
            poll_batch_size=poll_batch_size,
        )

    async with _running(namesrv, config, subscriptions, build) as consumer:
        assert isinstance(consumer, LitePullConsumer)
        yield consumer


@asynccontextmanager
async def open_pull_consumer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str,
    timeout_s: float = 3.0,
) -> AsyncIterator[PullConsumer]:
    """An explicit pull consumer (no rebalance, no background tasks but routes)."""
    addrs = _namesrv_list(namesrv)
    async with open_client(name=f"pull consumer {group}", default_timeout_s=timeout_s) as client:
        routes = RouteCache(client, addrs, request_timeout_s=timeout_s)
        yield PullConsumer(client, routes, group=group, timeout_s=timeout_s)


__all__ = [
    "BrokerApi",
    "ConsumeFrom",
    "ConsumeResult",
    "ConsumerConfig",
    "ConsumerStatistics",
    "InflightOffsets",
    "Listener",
    "LitePullConsumer",
    "MessageModel",
    "PullConsumer",
    "PullResult",
    "PullStatus",
    "PushConsumer",
    "QueueStatistics",
    "RouteHealth",
    "accepts",
    "allocate_averagely",
    "dlq_topic",
    "failover_broker_id",
    "make_consumer_client_id",
    "open_lite_pull_consumer",
    "open_pull_consumer",
    "open_push_consumer",
    "parse_pull_response",
    "pull_replica",
    "pull_target",
    "retry_topic",
]
