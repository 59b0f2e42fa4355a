"""What push and lite pull consumers share: subscriptions, heartbeats, rebalance, pulling
and offsets (``_RebalancingConsumer``), and the per-queue state it keeps.

Rules:
- The guarantees are stated in ``client.consumer``'s docstring; this is where most of
  them are kept: a queue starts at the group's offset or not at all, the committable
  offset never runs ahead of the listener, and a route change rebalances at once.
- Subclasses differ only in how pulled messages leave (``_deliver``) and in a few hooks
  (orderly locks, extra per-queue tasks); the base class does the rest.
- Every network wait runs under a deadline from ``ConsumerConfig``; background failures
  are logged and retried, never raised into the application.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import attrs
import trio

from client.consumer.api import BrokerApi, _now_ms
from client.consumer.core import (
    PULL_COMMIT_OFFSET,
    PULL_SUBSCRIPTION,
    PULL_SUSPEND,
    InflightOffsets,
    RouteHealth,
    allocate_averagely,
    check_pull_offsets,
    failover_broker_id,
    pull_replica,
)
from client.consumer.types import (
    ConsumeFrom,
    ConsumerConfig,
    ConsumerStatistics,
    MessageModel,
    MessageSelector,
    PullResult,
    PullStatus,
    QueueStatistics,
    SkippedRecord,
    subscription_of,
)
from client.message import ReceivedMessage
from client.offsets import BrokerOffsetStore, LocalFileOffsetStore, OffsetStore
from client.routes import RouteCache, TopicInfo
from protocol.bodies import (
    CONSUME_PASSIVELY,
    EXPRESSION_TAG,
    CheckClientRequestBody,
    ConsumerData,
    HeartbeatData,
    SubscriptionData,
    parse_subscription,
)
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError, TopicNotExist
from protocol.group_topics import is_group_topic, is_retry_topic
from protocol.headers import UnregisterClientRequestHeader
from protocol.route import MASTER_ID, MessageQueue
from protocol.rpc import RemotingClient

log = logging.getLogger(__name__)


#: Route poll period while a subscribed topic's route lacks a broker group it had lately,
#: or a group lacks its master, and for ROUTE_BURST_S after a broker connection was lost.
FAST_ROUTE_REFRESH_S = 1.0
#: After a broker hangs up, the NameServer may still list it for a moment: poll fast a while.
ROUTE_BURST_S = 5.0


def _chunks(items: Sequence[ReceivedMessage], size: int) -> list[list[ReceivedMessage]]:
    if size == 1:
        return [[item] for item in items]
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# --- per-queue state -------------------------------------------------------------------


class _Gauge:
    """A counter whose return to zero can be awaited.

    The event exists only while someone waits: a push worker counts every message in
    and out, and an event per return to zero was 3 % of its CPU.
    """

    def __init__(self) -> None:
        self.value = 0
        self._zero: trio.Event | None = None

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        assert self.value > 0
        self.value -= 1
        if self.value == 0 and self._zero is not None:
            self._zero.set()
            self._zero = None

    async def wait_zero(self) -> None:
        while self.value:
            if self._zero is None:
                self._zero = trio.Event()
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


class _Batch:
    """Messages of one queue for one listener call (a plain slotted class: one is made
    per message with the default consumeMessageBatchMaxSize of 1)."""

    __slots__ = ("generation", "messages", "state")

    def __init__(self, state: _QueueState, generation: int, messages: list[ReceivedMessage]):
        self.state = state
        self.generation = generation
        self.messages = messages


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
        self.api = BrokerApi(
            client, routes, config.timeout_s, max_body_bytes=config.max_message_bytes
        )
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
        self.skipped_records = 0

    # --- public ------------------------------------------------------------------------

    @property
    def clustering(self) -> bool:
        return self.config.message_model is MessageModel.CLUSTERING

    def subscribe(self, topic: str, expression: str | MessageSelector = "*") -> None:
        """Subscribe to ``topic`` (``"*"``, ``"TagA || TagB"`` or
        ``MessageSelector.by_sql("a > 5")``); takes effect at once."""
        if is_group_topic(topic):
            raise ValueError(f"{topic} is a group topic; subscribe to the original topic")
        self._subscriptions[topic] = subscription_of(topic, expression, sub_version=_now_ms())
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
            skipped_records=self.skipped_records,
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
            await self.check_subscriptions()
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

    async def check_subscriptions(self) -> None:
        """Ask a broker of each SQL92 subscription's topic to vet the expression
        (CHECK_CLIENT_CONFIG, as Java's checkClientInBroker): a bad expression raises the
        broker's SUBSCRIPTION_PARSE_FAILED error here, before any pull."""
        for topic, sub in sorted(self._subscriptions.items()):
            if sub.expression_type == EXPRESSION_TAG:
                continue
            info = await self.routes.get(topic)
            addrs = info.all_addresses()
            if not addrs:
                continue
            body = CheckClientRequestBody(
                client_id=self.client_id, group=self.group, subscription_data=sub
            )
            request = RemotingCommand.request(RequestCode.CHECK_CLIENT_CONFIG, body=body.to_bytes())
            await self.api.call(addrs[0], request)

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
            self._note_committable(state)  # settled messages move it (see _finish_offsets)
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
        # Skipped records whose offset is known stay in flight until they are settled.
        skipped = [s for s in result.skipped if s.queue_offset is not None]
        self.skipped_records += len(result.skipped)
        offsets = [m.queue_offset for m in messages]
        tracker.add(
            sorted(offsets + [s.queue_offset for s in skipped if s.queue_offset is not None])
        )
        tracker.advance(result.next_begin_offset)
        self._note_committable(state)
        if messages:
            await self._deliver(state, tracker.generation, messages)
        if skipped:
            self._nursery.start_soon(self._settle_skipped, state, tracker.generation, skipped)

    async def _settle_skipped(
        self, state: _QueueState, generation: int, records: list[SkippedRecord]
    ) -> None:
        """Send each skipped record to the DLQ (retrying it is pointless: it will never
        decode), else log that its offset is committed past; the queue moves on either way."""
        for record in records:
            assert record.queue_offset is not None
            where = f"{state.queue} offset {record.queue_offset}"
            if not self.clustering or record.commit_log_offset is None:
                why = (
                    "broadcasting" if not self.clustering else "its CommitLog offset is unreadable"
                )
                log.warning("%s: record at %s is committed past (%s)", self.group, where, why)
            elif await self.api.dead_letter(
                record,
                group=self.group,
                max_reconsume_times=self.config.max_reconsume_times,
                backoff_s=self.config.retry_backoff_s,
                stopped=state.stopped,
            ):
                self.dead_lettered += 1
                log.warning("%s: record at %s sent to the DLQ", self.group, where)
            elif state.active:
                log.warning("%s: record at %s (DLQ refused) is committed past", self.group, where)
            else:
                return  # dropped: the queue's next owner meets it again
            self._finish_offsets(state, generation, [record.queue_offset])

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
        self._finish_offsets(state, generation, [m.queue_offset for m in messages])

    def _finish_offsets(self, state: _QueueState, generation: int, offsets: list[int]) -> None:
        tracker = state.tracker
        for offset in offsets:
            tracker.finish(offset, generation)
        # The offset store learns the new committable offset when it is read: before a
        # pull carries it, before a persist, when the queue is dropped; not per message.
        if tracker.count < self.config.max_inflight_per_queue:
            state.space.set()
