"""The broker process: store, metadata, client registry and processors behind one server.

Rules:
- ``Broker.serve`` binds its client port first, once (the store stamps that port into
  every record), then opens (and recovers) the store, and only then serves: a broker that
  answers has a consistent store; a store that refuses to open stops the broker with the
  store's message. No port is bound, closed and bound again (``broker/listeners.py``).
- Handlers run on the Trio thread and never await between reading and changing shared
  state; the store's put path is synchronous, so appends are ordered without a lock.
- Metadata files are written off the event loop, coalesced (``MetadataFiles``,
  ``broker/persistence.py``): an admin change is on disk before it is answered, the rest
  within an interval. A topic change is announced to every NameServer by the next
  registration round, at most one per ``register_min_interval_s`` (and every 30 s;
  ``NameServerRegistrar``, ``broker/registration.py``).
- Every background task that opens files or sockets is started again when the process
  runs out of descriptors (``broker/background.py``), never ending the broker.
- Everything the broker starts runs in ``serve``'s nursery and stops with it.
- The parts (processors, ``ScheduleService``, ``SlaveSynchronizer``, ``BrokerAgent``,
  ``NameServerRegistrar``) never
  see this class: each declares the ``BrokerFor...`` Protocol of what it uses, next to
  itself, and ``Broker`` satisfies them all structurally (mypy checks it here).
- ``config`` is what was configured, rewritten only by UPDATE_BROKER_CONFIG for the keys
  read at each use (``processors/stats.py`` RUNTIME_KEYS); the role the broker holds now
  (master or slave, SYNC or ASYNC, fenced, the controller's id, the master's address) is
  ``role`` (``broker/role.py``), changed only by the role transitions below.
- Replication with static roles (DESIGN.md §2, §5): a master (broker id 0) serves the HA
  port (``HAMaster``) and advertises the port it bound in every registration; a SLAVE
  follows the master's HA address named by the NameServer's registration answer (the
  ``master_ha_addr`` config is the fallback), re-read at every registration, and copies
  the master's metadata (``SlaveSynchronizer``). A slave refuses writes, serves reads, and
  runs no delayed delivery.
- Controller mode (``controller_addrs``; reference/rocketmq-controller.md §4): the
  ``BrokerAgent`` owns the id and the role. The broker starts fenced (no writes, no
  NameServer registration) and switches role at runtime: each role's HA task (``HAMaster``
  or ``HASlave``) runs in its own cancel scope, stopped before the next one starts. A
  master takes the controller's epoch (``new_epoch``) before it accepts a write, registers
  as id 0 with ``stateVersion`` = epoch, and acknowledges writes only within its lease
  or while every ack waits for other SyncStateSet members (``lease_holds``).
- Every put (send, batch, send-back, delayed re-put; ``broker/writes.py``) wakes the HA
  streamers. A SYNC_MASTER refuses a put before storing it while its in-sync set is below
  ``min_in_sync_replicas``, and answers a stored send only once the slaves acked it or ``slave_timeout_s`` passed:
  each send awaits its own waiter, so thousands are in flight on one connection.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence

import trio

from broker.agent import BrokerAgent
from broker.background import Task, keep_alive
from broker.clients import ClientManager, Notify
from broker.clock import Clock, SystemClock
from broker.config import BrokerConfig, parse_delay_levels
from broker.groups import SubscriptionGroupManager
from broker.ha import EpochFile, HAMaster, HASlave
from broker.ha.runtime_info import ha_runtime_info
from broker.listeners import HAListener, bind, close_all
from broker.locks import RebalanceLockManager
from broker.longpoll import PullHoldService
from broker.offsetbounds import StaleOffsetGuard, correct_offsets
from broker.offsets import ConsumerOffsetManager
from broker.persistence import MetadataFiles
from broker.pop.processor import PopProcessor
from broker.pop.service import ReviveService
from broker.processors.admin import AdminProcessor
from broker.processors.clients import ClientProcessor
from broker.processors.offsets import OffsetProcessor
from broker.processors.pull import PullProcessor
from broker.processors.send import SendProcessor
from broker.processors.stats import StatsProcessor
from broker.registration import NameServerRegistrar
from broker.role import RoleState
from broker.schedule import ScheduleService
from broker.security import BrokerSecurity
from broker.slavesync import SlaveSynchronizer
from broker.stats import BrokerStats, RpcLatency
from broker.store.files import reading
from broker.store.results import GetMessageResult
from broker.store.state import PHYS_OFFSET_POS
from broker.store.store import MessageStore
from broker.timerstore import TimerService
from broker.topics import TopicConfigManager, dlq_topic, retry_topic
from broker.transaction.service import TransactionService
from broker.writes import BrokerWrites
from protocol.acl_client import sign_requests
from protocol.acl_guard import open_guard, protect, warn_if_exposed
from protocol.bodies import SubscriptionGroupConfig
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import EpochEntry as WireEpochEntry
from protocol.controller_bodies import EpochEntryCache
from protocol.errors import (
    RocketError,
)
from protocol.headers import (
    NotifyConsumerIdsChangedRequestHeader,
    PullMessageRequestHeader,
)
from protocol.message import make_uniq_key_generator
from protocol.pop import revive_topic
from protocol.route import MASTER_ID, TopicConfig, dumps_json
from protocol.rpc import Connection, Handler, RemotingClient, RemotingServer, open_client

log = logging.getLogger(__name__)


def _physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 8 << 30


class Broker:
    """One broker (a member of one broker group)."""

    def __init__(self, config: BrokerConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        #: Wall time for what RocketMQ stores, Trio's clock for timers; every part shares it.
        self.clock: Clock = clock or SystemClock()
        #: What the broker is now (the config says what it was configured as).
        self.role = RoleState.from_config(config)
        # Controller mode: "-?" until the controller (or the identity file) names the id.
        self.name = f"{config.broker_name}-{'?' if config.controller_mode else config.broker_id}"
        self._store: MessageStore | None = None
        config_dir = config.store_dir / "config"
        self.topics = TopicConfigManager(
            cluster_name=config.cluster_name,
            broker_name=config.broker_name,
            auto_create_topic_enable=config.auto_create_topic_enable,
            default_topic_queue_nums=config.default_topic_queue_nums,
            max_queue_nums=config.max_topic_queue_nums,
        )
        self.groups = SubscriptionGroupManager(max_queue_nums=config.max_topic_queue_nums)
        self.offsets = ConsumerOffsetManager()
        self.stale_offsets = StaleOffsetGuard()  # armed by _correct_offsets
        self.clients = ClientManager()
        self.consumers = self.clients.consumers
        self.locks = RebalanceLockManager()
        self.pull_holds = PullHoldService(
            max_held=config.max_held_pull_nums, max_held_bytes=config.max_held_pull_bytes
        )
        self.stats = BrokerStats(config.cluster_name, store_puts=self._store_puts)
        self.delay_levels_s = parse_delay_levels(config.message_delay_level)
        self.schedule = ScheduleService(self, config_dir / "delayOffset.cbor", clock=self.clock)
        self.transactions = TransactionService(self, clock=self.clock)
        self.timers = TimerService(self, config_dir / "timerCheckpoint.cbor", clock=self.clock)
        self.metadata = MetadataFiles(self, config_dir)
        self.broker_perm = PERM_READ | PERM_WRITE
        self.listen_port = config.listen_port
        #: (advertised ip, listen port): the STOREHOST of the records this broker stores,
        #: set with ``listen_port`` (read on every send).
        self.store_host = (config.advertised_ip, config.listen_port)
        self._uniq = make_uniq_key_generator(
            config.advertised_ip, os.getpid(), random.Random(), self.clock.wall_ms()
        )
        self._connections: dict[int, Connection] = {}
        self._client: RemotingClient | None = None
        #: Cluster secret and TLS (issue 16); raises SecurityError for a bad file.
        self.security = BrokerSecurity(config)
        self.epochs: EpochFile | None = None
        self.ha_master: HAMaster | None = None
        self.ha_slave: HASlave | None = None
        self.ha_port: int | None = None
        #: Controller mode: the HA port, bound once; each mastership serves it in turn.
        self._ha_listener: HAListener | None = None
        self.slave_sync = SlaveSynchronizer(self)
        self.registrar = NameServerRegistrar(self, clock=self.clock)
        #: Controller mode: the agent, and the scope of the current role's HA task.
        self.agent: BrokerAgent | None = (
            BrokerAgent(self, clock=self.clock) if config.controller_mode else None
        )
        #: Appends and the wait for durability (``broker/writes.py``), bound here rather
        #: than wrapped: a delegating method cost every send a frame and a coroutine.
        self.writes = BrokerWrites(self)
        self.store_put = self.writes.store_put
        self.store_put_encoded = self.writes.store_put_encoded
        self.store_put_encoded_batch = self.writes.store_put_encoded_batch
        self.wait_durable = self.writes.wait_durable
        self.durable_at_once = self.writes.durable_at_once
        self.answers_later = self.writes.answers_later
        self.when_replicated = self.writes.when_replicated
        self._role_scope: tuple[trio.CancelScope, trio.Event] | None = None
        if config.slave_read_behind_bytes is not None:
            self._far_behind_bytes = config.slave_read_behind_bytes
        else:
            ratio = config.access_message_in_memory_max_ratio / 100
            self._far_behind_bytes = int(_physical_memory_bytes() * ratio)
        self.revive = ReviveService(
            self,
            topic=revive_topic(config.cluster_name),
            queue_nums=config.revive_queue_num,
            clock=self.clock,
        )
        self.pop = PopProcessor(
            self, clock=self.clock, revive=self.revive, max_held=config.max_held_pull_nums
        )
        self.processors = (
            self.pop,
            SendProcessor(self),
            PullProcessor(self, clock=self.clock),
            OffsetProcessor(self),
            ClientProcessor(self, clock=self.clock),
            AdminProcessor(self, clock=self.clock),
            StatsProcessor(self, clock=self.clock),
            self.timers,
        )
        handlers: dict[int, Handler] = {}
        for processor in self.processors:
            handlers.update(processor.handlers())
        handlers.update(self.transactions.handlers())
        handlers[RequestCode.GET_BROKER_EPOCH_CACHE] = self._get_epoch_cache
        self.rpc_latency = RpcLatency()
        self.server = RemotingServer(
            handlers,
            name=self.name,
            host=config.host,
            port=config.listen_port,
            config=config.transport,
            on_connect=self._connected,
            on_disconnect=self._disconnected,
            tls=self.security.server_tls,
        )
        # Held CommitLog appends of the sends are written before any answer leaves.
        self.server.before_write = self.writes.commit_before_write
        # Each answer's time, measured by the transport (real time, even under a test's
        # autojump clock).
        self.server.on_answered = self.rpc_latency.on_answered
        # ACL 1.0: every handler behind the check (the very same table when ACL is off).
        self.acl = open_guard(config.acl_enable, config.acl_file_path, name=self.name)
        self.server.handlers = protect(self.acl, self.server.handlers)

    # --- facts processors ask for --------------------------------------------------

    @property
    def store(self) -> MessageStore:
        """The open store (only while ``serve`` runs)."""
        assert self._store is not None, "the store is opened by serve()"
        return self._store

    @property
    def serving(self) -> bool:
        """Whether ``serve`` runs with the store open (metrics read nothing otherwise)."""
        return self._nursery is not None and self._store is not None

    def _store_puts(self) -> int:
        return self._store.statistics().put_messages if self._store is not None else 0

    @property
    def client(self) -> RemotingClient:
        """The broker's own client (NameServers, and a slave's master), while serving."""
        assert self._client is not None, "the client is opened by serve()"
        return self._client

    @property
    def address(self) -> str:
        return f"{self.config.advertised_ip}:{self.listen_port}"

    @property
    def accepts_writes(self) -> bool:
        role = self.role
        if self.agent is None:
            return role.is_master
        return role.is_master and not role.fenced and self.lease_holds()

    def lease_holds(self) -> bool:
        """Controller mode: may this master acknowledge writes without the controller?

        Within its lease, yes. Past it (apache/rocketmq#7017), only while every ack already
        waits for other SyncStateSet members (allAckInSyncStateSet, a set larger than the
        master, every member connected now) and the controller said it elects only within the set (unclean election
        off): a member elected elsewhere stops acking this master, so no ack can outlive a
        deposal, and the data path keeps working while the whole quorum is down (reference
        §1: "controller loss stops failover only"). A master alone in its set, acking on
        fewer replicas, or under a controller that may elect unclean, stops
        acknowledging once the lease runs out.
        """
        assert self.agent is not None
        if self.agent.lease_valid():
            return True
        if self.agent.unclean_election is not False:
            return False  # a controller that may elect outside the set: the lease binds
        master = self.ha_master
        if master is None or not self.config.all_ack_in_sync_state_set:
            return False
        members, _ = master.sync_state_set
        # A member that is not connected cannot ack, and may be the one elected: refuse
        # before storing rather than grow a tail no replica holds (chaos row 7).
        return bool(members - {self.role.controller_id}) and master.sync_state_set_connected()

    @property
    def role_description(self) -> str:
        if self.agent is not None:
            if self.role.fenced:
                return "fenced: role not known yet"
            if self.role.is_master and not self.lease_holds():
                return "master whose controller lease expired"
        return f"role={self.role.broker_role}"

    @property
    def max_delay_level(self) -> int:
        return len(self.delay_levels_s)

    def next_uniq_key(self) -> str:
        return self._uniq.next_id(self.clock.wall_ms())

    @property
    def master_alive(self) -> bool:
        """A slave: whether it is connected to its master's HA port right now."""
        return self.ha_slave is not None and self.ha_slave.status().state == "TRANSFER"

    def suggest_broker_id(self, header: PullMessageRequestHeader, result: GetMessageResult) -> int:
        """Which broker of the group the consumer should pull from next (0 = master).

        PullMessageProcessor's rule: a consumer far behind (more unread CommitLog bytes
        after this pull than ``accessMessageInMemoryMaxRatio`` of memory, i.e. reads that
        would hit the disk) is sent to the group's ``whichBrokerWhenConsumeSlowly`` when
        ``slaveReadEnable``; else to the master. A slave also keeps its consumers while it
        has no master to send them back to.
        """
        config = self.config
        slowly = False
        if config.slave_read_enable and result.records:
            last = result.records[-1]
            position = int.from_bytes(last[PHYS_OFFSET_POS : PHYS_OFFSET_POS + 8], "big")
            behind = self.store.max_physical_offset - (position + len(last))
            slowly = behind > self._far_behind_bytes
        if slowly:
            group = self.groups.get(header.consumer_group)
            return 1 if group is None else group.which_broker_when_consume_slowly
        if self.role.is_master or self.master_alive:
            return MASTER_ID
        return self.role.broker_id

    # --- topics ----------------------------------------------------------------------

    def topic_changed(self) -> None:
        """Have the topic table written and announced to the NameServers (both coalesced:
        ``broker/persistence.py``, ``broker/registration.py``)."""
        self.metadata.topics.changed()
        self.registrar.register_now()

    def find_group(self, group: str) -> SubscriptionGroupConfig | None:
        """The group's config, auto-created when the broker allows it (persisted)."""
        existing = self.groups.get(group)
        if existing is not None:
            return existing
        created = self.groups.find_or_create(
            group,
            auto_create=self.config.auto_create_subscription_group,
            now_ms=self.clock.wall_ms(),
        )
        if created is not None:
            self.metadata.groups.changed()
        return created

    def auto_create_topic(
        self, topic: str, default_topic: str, queue_nums: int
    ) -> TopicConfig | None:
        config = self.topics.auto_create_for_send(
            topic,
            default_topic,
            queue_nums,
            allow=self.config.auto_create_topic_enable,
            now_ms=self.clock.wall_ms(),
        )
        if config is not None:
            log.info("%s: auto-created topic %s from %s", self.name, topic, default_topic)
            self.topic_changed()
        return config

    def create_retry_topic(self, group: str) -> TopicConfig:
        existing = self.topics.get(retry_topic(group))
        if existing is not None:
            return existing
        group_config = self.find_group(group)
        queue_nums = group_config.retry_queue_nums if group_config is not None else 1
        config = self.topics.create_retry_topic(group, queue_nums, now_ms=self.clock.wall_ms())
        self.topic_changed()
        return config

    def create_dlq_topic(self, group: str) -> TopicConfig:
        existing = self.topics.get(dlq_topic(group))
        if existing is not None:
            return existing
        config = self.topics.create_dlq_topic(group, now_ms=self.clock.wall_ms())
        self.topic_changed()
        return config

    # --- connections and notifications ------------------------------------------------

    def _connected(self, conn: Connection) -> None:
        self._connections[conn.id] = conn

    def _disconnected(self, conn: Connection) -> None:
        self._connections.pop(conn.id, None)
        self.notify_consumers(self.clients.channel_closed(conn.id))

    def notify_consumers(self, notifications: Sequence[Notify]) -> None:
        """Send NOTIFY_CONSUMER_IDS_CHANGED (oneway, in the background) to each channel."""
        if self._nursery is None:
            return
        for notify in notifications:
            request = RemotingCommand.request(
                RequestCode.NOTIFY_CONSUMER_IDS_CHANGED,
                NotifyConsumerIdsChangedRequestHeader(consumer_group=notify.group).to_ext_fields(),
                oneway=True,
            )
            for channel_id in notify.channel_ids:
                conn = self._connections.get(channel_id)
                if conn is not None:
                    self._nursery.start_soon(self._send_oneway, conn, request)

    def oneway_to_channel(self, channel_id: int, request: RemotingCommand) -> bool:
        """Send ``request`` (oneway, in the background) on a client connection, if open."""
        conn = self._connections.get(channel_id)
        if conn is None or self._nursery is None:
            return False
        self._nursery.start_soon(self._send_oneway, conn, request)
        return True

    async def _send_oneway(self, conn: Connection, request: RemotingCommand) -> None:
        with trio.move_on_after(self.config.request_timeout_s):
            try:
                await conn.oneway(request)
            except RocketError as exc:
                log.debug("%s: notify to %s failed: %s", self.name, conn.peer, exc)

    # --- lifecycle -------------------------------------------------------------------

    _nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, recover the store, serve, register; report the bound port; run until
        cancelled."""
        if self.agent is not None:
            self.agent.load_identity()
        # The store stamps the bound port into every record: bind first, once for good.
        listeners, self.listen_port = await bind(self.config.host, self.config.listen_port)
        self.store_host = (self.config.advertised_ip, self.listen_port)
        try:
            await self._open_store()
            try:
                await self._run(listeners, task_status)
            finally:
                self._nursery = None
                with trio.CancelScope(shield=True):
                    await self._shutdown()
        finally:
            await close_all(listeners)

    async def _open_store(self) -> None:
        """Open (recover) the store and load the metadata beside it; a failure closes it."""
        config = self.config
        self._store = await trio.to_thread.run_sync(
            functools.partial(
                MessageStore.open,
                config.store_dir,
                config.store_config(
                    store_host=self.store_host,
                    delay_levels_s=self.delay_levels_s,
                    node_name=self.name,
                ),
                clock=self.clock,
            )
        )
        try:
            self.epochs = await trio.to_thread.run_sync(
                functools.partial(EpochFile.load, config.store_dir, node_name=self.name)
            )
            metadata = self.metadata
            metadata.topics_path.parent.mkdir(parents=True, exist_ok=True)
            with reading(metadata.topics_path):  # a damaged file: one line naming it
                self.topics.load(metadata.topics_path)
            with reading(metadata.groups_path):
                self.groups.load(metadata.groups_path)
            with reading(metadata.offsets_path):
                self.offsets.load(metadata.offsets_path)
            self._correct_offsets("the store recovered", self.stale_offsets)
            with reading(self.schedule.path):
                self.schedule.load()
            with reading(self.timers.path):
                self.timers.load()
            self.slave_sync.cover_stored()  # what the loaded topic table is taken to cover
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._store.close()
            raise
        # ConsumeQueue entries wait for the flush tick, their bound or a reader
        # (broker/store/dispatch.py), not a pwrite per queue per read of sends.
        # Called only for topics with a held pull or pop: a send to any other pays no call.
        self.store.add_arrival_listener(
            self.pull_holds.notify, waiting_on=self.pull_holds.waiting_topics
        )
        self.store.add_arrival_listener(
            self.pop.arrivals.notify, waiting_on=self.pop.arrivals.waiting
        )
        self.store.add_truncate_listener(lambda: self._correct_offsets("the CommitLog was cut"))
        self.store.add_new_queue_listener(self._queue_appeared)

    async def _run(
        self, listeners: list[trio.SocketListener], task_status: trio.TaskStatus[int]
    ) -> None:
        async with (
            open_client(
                name=self.name,
                default_timeout_s=self.config.register_timeout_s,
                tls=self.security.client_tls or False,  # never $RMQ_TLS: its own config
            ) as client,
            trio.open_nursery() as nursery,
        ):
            self._client = client
            if (credentials := self.config.credentials) is not None:
                sign_requests(client, credentials)  # ACL 1.0: the broker's own account
            self._nursery = nursery
            await nursery.start(self._keep_alive(self.store.run, "the store's flush tasks"))
            await nursery.start(self._keep_alive(self.metadata.run, "the metadata writers"))
            if self.agent is not None:
                await self._serve_controller_mode(nursery, listeners)
            else:
                # Replication first: a SYNC_MASTER must never take a send it cannot
                # replicate, and the registration advertises the bound HA port.
                await self._start_replication(nursery)
                await nursery.start(self.server.serve, listeners)
                self.server.name = self.name
                await self.registrar.register_once()
            await nursery.start(self._keep_alive(self.registrar.run, "NameServer registration"))
            await nursery.start(self._keep_alive(self._housekeeping_loop, "client housekeeping"))
            nursery.start_soon(self.stats.run, self.clock.now_s, self.clock.wall_ms)
            if self.acl is not None:
                nursery.start_soon(self.acl.watch)
            warn_if_exposed(self.config.host, self.acl, name=self.name)
            schedule = self._keep_alive(self.schedule.run, "delayed delivery")
            # Idle while not master; (re)builds its state on each mastership.
            await nursery.start(self._keep_alive(self.transactions.run, "transaction checks"))

            # Idle unless this broker accepts writes; it follows role changes by itself.
            await nursery.start(self._keep_alive(self.timers.run, "timer delivery"))
            # Idle unless the broker accepts writes (it reads the revive log as master).
            await nursery.start(self._keep_alive(self.revive.run, "pop revive"))
            slave_sync = self._keep_alive(self.slave_sync.run, "the metadata copy from the master")
            if self.agent is not None:
                # Both idle outside their role (no writes; no master to copy from).
                await nursery.start(schedule)
                await nursery.start(slave_sync)
            elif self.role.is_master:
                await nursery.start(schedule)
            else:
                await nursery.start(slave_sync)
            log.info("%s: serving at %s (%s)", self.name, self.address, self.role_description)
            task_status.started(self.listen_port)

    # --- controller mode ----------------------------------------------------------------------

    async def _serve_controller_mode(
        self, nursery: trio.Nursery, listeners: list[trio.SocketListener]
    ) -> None:
        """Bind the HA port for good (the controller advertises it before we are master;
        each mastership serves it in turn), serve clients fenced, and start the agent (it
        registers in the background)."""
        assert self.agent is not None
        ha_listener = await HAListener.open(
            self.config.host, self._ha_listen_port(), node_name=self.name
        )
        nursery.start_soon(ha_listener.serve)
        self._ha_listener = ha_listener
        self.ha_port = ha_listener.port
        await nursery.start(self.server.serve, listeners)
        await nursery.start(self._keep_alive(self.agent.run, "the controller agent"))

    def controller_id_assigned(self, broker_id: int) -> None:
        """The agent knows our id (identity file or controller)."""
        self.role.controller_id = broker_id
        self.name = f"{self.config.broker_name}-{broker_id}"
        self.server.name = self.name

    async def _stop_role(self) -> None:
        role, self._role_scope = self._role_scope, None
        self.ha_master = None
        self.ha_slave = None
        if role is not None:
            scope, done = role
            scope.cancel()
            with trio.fail_after(self.config.request_timeout_s):
                await done.wait()
        if self.role.is_master:  # a mastership ended: its own table covers what it stored
            self.slave_sync.cover_stored()

    async def _start_role(self, start: Callable[[trio.Nursery], Awaitable[None]]) -> None:
        assert self._nursery is not None, "serve() runs"
        scope = trio.CancelScope()
        done = trio.Event()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    async with trio.open_nursery() as nursery:
                        await start(nursery)
                        task_status.started()
                        await trio.sleep_forever()
            finally:
                done.set()

        await self._nursery.start(run)
        self._role_scope = (scope, done)

    async def become_master(self, epoch: int, members: frozenset[int], sss_epoch: int) -> None:
        """Master at ``epoch``: new epoch entry first, then writes and NameServer id 0."""
        role = self.role
        assert self.agent is not None and role.controller_id is not None and self.epochs
        role.fenced = True
        await self._stop_role()
        role.to_master()
        master = HAMaster(
            self.store,
            self.epochs,
            self.security.ha_config(self.config.ha_config()),
            broker_id=role.controller_id,
            node_name=self.name,
            host=self.config.host,
            on_proposal=self.agent.on_proposal,
            sync_state_set=members,
            sync_state_set_epoch=sss_epoch,
        )

        # The epoch entry comes first: no slave handshakes against the old epoch list.
        await master.new_epoch(epoch)

        ha_listener = self._ha_listener
        assert ha_listener is not None, "bound when serving began"

        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(functools.partial(master.serve, listener=ha_listener))

        await self._start_role(start)
        self.ha_master = master
        self._cover_replicated_topics()
        self.topics.set_state_version(epoch, now_ms=self.clock.wall_ms())
        self._correct_offsets(f"became master at epoch {epoch}")
        role.fenced = False
        self.registrar.register_now(role_changed=True)
        log.info(
            "%s: became master at epoch %d, SyncStateSet %s", self.name, epoch, sorted(members)
        )

    def _queue_appeared(self, topic: str, queue_id: int) -> None:
        """A slave stored a record of a queue its topic table may lack: copy the master's
        metadata now, not at the next period (broker/slavesync.py)."""
        if self.role.is_master:
            return
        config = self.topics.get(topic)
        if config is None or queue_id >= min(config.read_queue_nums, config.write_queue_nums):
            self.slave_sync.soon()

    def _cover_replicated_topics(self) -> None:
        """A new master's topic table covers the queues its records name (topics created or
        widened on the old master since the last metadata copy; broker/topics.py)."""
        changed = self.topics.cover_stored_queues(
            self.slave_sync.highest_uncovered_queues(), now_ms=self.clock.wall_ms()
        )
        self.slave_sync.cover_stored()
        if changed:
            self.metadata.topics.changed()
            log.warning(
                "%s: %d topic configs taken from replicated records the last metadata copy "
                "did not cover: %s",
                self.name,
                len(changed),
                ", ".join(f"{c.topic_name} ({c.write_queue_nums} queues)" for c in changed[:10]),
            )

    async def become_slave(
        self, epoch: int, master_ha_addr: str | None, master_addr: str | None
    ) -> None:
        """Slave of the master at ``epoch``: follow its HA address (from the controller)."""
        role = self.role
        assert role.controller_id is not None and self.epochs is not None
        role.fenced = True
        await self._stop_role()
        role.to_slave(master_addr)
        slave = HASlave(
            self.store,
            self.epochs,
            self.security.ha_config(self.config.ha_config()),
            broker_id=role.controller_id,
            node_name=self.name,
            master_address=master_ha_addr,
            master_epoch=epoch,
        )

        async def start(nursery: trio.Nursery) -> None:
            await nursery.start(self._keep_alive(slave.run, "replication from the master"))

        await self._start_role(start)
        self.ha_slave = slave
        role.fenced = False
        self.registrar.register_now(role_changed=True)
        log.info(
            "%s: became slave of %s (HA %s) at epoch %d",
            self.name,
            master_addr,
            master_ha_addr,
            epoch,
        )

    async def _get_epoch_cache(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        assert self.epochs is not None
        entries = tuple(
            WireEpochEntry(epoch=e.epoch, start_offset=e.start_offset)
            if e.end_offset is None
            else WireEpochEntry(epoch=e.epoch, start_offset=e.start_offset, end_offset=e.end_offset)
            for e in self.epochs.cache.entries
        )
        body = EpochEntryCache(
            cluster_name=self.config.cluster_name,
            broker_name=self.config.broker_name,
            broker_id=self.role.controller_id
            if self.role.controller_id is not None
            else self.role.broker_id,
            epoch_list=entries,
            max_offset=self.store.max_physical_offset,
        )
        return request.respond(body=body.to_bytes())

    async def _start_replication(self, nursery: trio.Nursery) -> None:
        """A master serves its HA port (a new epoch begins); a slave starts following."""
        config = self.config
        assert self.epochs is not None
        if self.role.is_master:
            master = HAMaster(
                self.store,
                self.epochs,
                self.security.ha_config(config.ha_config()),
                broker_id=MASTER_ID,
                node_name=self.name,
                host=config.host,
                port=self._ha_listen_port(),
            )
            self.ha_port = await nursery.start(master.serve)
            self.ha_master = master
            # The NameServer keeps the id-0 claim with the higher stateVersion: the newest
            # mastership of the group wins over a deposed master still registered.
            self.topics.set_state_version(master.status().epoch, now_ms=self.clock.wall_ms())
            return
        slave = HASlave(
            self.store,
            self.epochs,
            self.security.ha_config(config.ha_config()),
            broker_id=self.role.broker_id,
            node_name=self.name,
            master_address=config.master_ha_addr,
        )
        await nursery.start(self._keep_alive(slave.run, "replication from the master"))
        self.ha_slave = slave

    def _keep_alive(self, run: Task, what: str) -> Task:
        """``run`` as a task started again when it runs out of file descriptors (issue 13
        row 3; ``broker/background.py``). HAMaster.serve is not wrapped: it binds its port
        and begins an epoch; its own loops survive EMFILE instead."""
        return functools.partial(
            keep_alive,
            run,
            what=what,
            node=lambda: self.name,
            retry_s=self.config.fd_exhausted_retry_s,
        )

    def _ha_listen_port(self) -> int:
        port = self.config.ha_port
        if port is not None:
            return port
        # --port 0 asks for free ports: listen_port + 1 may well be taken.
        return 0 if self.config.listen_port == 0 else self.listen_port + 1

    def _correct_offsets(self, why: str, guard: StaleOffsetGuard | None = None) -> None:
        """Offsets kept within the store's queues (``broker/offsetbounds.py``)."""
        nums, static = self.config.max_topic_queue_nums, not self.config.controller_mode
        guard = guard if static else None  # controller mode: consumers see confirmed data
        correct_offsets(
            self.offsets, self.store, max_queue_nums=nums, node=self.name, why=why, guard=guard
        )

    async def _shutdown(self) -> None:
        await self.metadata.close()
        if self._store is not None:
            await self._store.close()
        log.info("%s: stopped", self.name)

    async def _housekeeping_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Client expiry (120 s), lock expiry, every 5 s."""
        task_status.started()
        while True:
            await trio.sleep(5.0)
            now = self.clock.wall_ms()
            expiry_ms = int(self.config.client_expiry_s * 1000)
            self.notify_consumers(self.clients.scan_expired(now, expiry_ms))
            self.locks.remove_expired(now)

    @property
    def ha_address(self) -> str:
        """The HA address this broker listens on; "" when it serves none (a slave)."""
        if self.ha_port is None:
            return ""
        return f"{self.config.advertised_ip}:{self.ha_port}"

    def ha_runtime_body(self) -> bytes:
        """GET_BROKER_HA_STATUS's body (broker/ha/runtime_info.py)."""
        store = self.store
        return dumps_json(
            ha_runtime_info(
                {
                    "master": self.ha_master is not None,
                    "brokerName": self.config.broker_name,
                    "brokerId": self.role.broker_id,
                    "brokerAddr": self.address,
                    "brokerRole": self.role.broker_role,
                    "haServerAddr": self.ha_address,
                    "masterCommitLogMaxOffset": store.max_physical_offset,
                    "commitLogMinOffset": store.min_physical_offset,
                },
                master=self.ha_master.status() if self.ha_master is not None else None,
                slave=self.ha_slave.status() if self.ha_slave is not None else None,
                master_broker_addr=self.role.master_addr,
            )
        )
