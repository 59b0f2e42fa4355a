"""The broker process: store, metadata, client registry and processors behind one server.

Rules:
- ``Broker.serve`` opens (and recovers) the store before it binds, so a broker that is
  reachable has a consistent store; a store that refuses to open stops the broker with the
  store's message.
- Handlers run on the Trio thread and never await between reading and changing shared
  state; the store's put path is synchronous, so appends are ordered without a lock.
- Metadata changes (topics, groups) are persisted atomically before they are answered,
  and any topic change is announced to every NameServer at once (and every 30 s).
- Everything the broker starts runs in ``serve``'s nursery and stops with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import zlib
from collections.abc import Sequence

import attrs
import trio

from broker.clients import ClientManager, Notify
from broker.config import BrokerConfig, parse_delay_levels
from broker.groups import SubscriptionGroupManager
from broker.locks import RebalanceLockManager
from broker.longpoll import PullHoldService
from broker.offsets import ConsumerOffsetManager
from broker.processors.admin import AdminProcessor
from broker.processors.clients import ClientProcessor
from broker.processors.offsets import OffsetProcessor
from broker.processors.pull import PullProcessor
from broker.processors.send import SendProcessor, store_put_error
from broker.schedule import ScheduleService
from broker.store.config import FlushMode, StoreConfig
from broker.store.store import AppendResult, GetMessageResult, MessageStore
from broker.topics import TopicConfigManager, dlq_topic, retry_topic
from protocol.bodies import SubscriptionGroupConfig
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import NetworkError, RemotingTimeout, RocketError, StorageError
from protocol.headers import (
    NotifyConsumerIdsChangedRequestHeader,
    PullMessageRequestHeader,
    RegisterBrokerRequestHeader,
    RegisterBrokerResponseHeader,
    UnregisterBrokerRequestHeader,
)
from protocol.message import MessageRecord, make_uniq_key_generator
from protocol.route import RegisterBrokerBody, TopicConfig
from protocol.rpc import Connection, Handler, RemotingClient, RemotingServer, open_client

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


@attrs.frozen(kw_only=True)
class RegistrationResult:
    """What one NameServer said to our registration."""

    namesrv: str
    master_addr: str | None
    ha_server_addr: str | None


class Broker:
    """One broker (a member of one broker group)."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.name = f"{config.broker_name}-{config.broker_id}"
        self._store: MessageStore | None = None
        config_dir = config.store_dir / "config"
        self.topics_path = config_dir / "topics.cbor"
        self.groups_path = config_dir / "subscriptionGroup.cbor"
        self.offsets_path = config_dir / "consumerOffset.cbor"
        self.topics = TopicConfigManager(
            cluster_name=config.cluster_name,
            broker_name=config.broker_name,
            auto_create_topic_enable=config.auto_create_topic_enable,
            default_topic_queue_nums=config.default_topic_queue_nums,
        )
        self.groups = SubscriptionGroupManager()
        self.offsets = ConsumerOffsetManager()
        self.clients = ClientManager()
        self.consumers = self.clients.consumers
        self.locks = RebalanceLockManager()
        self.pull_holds = PullHoldService()
        self.delay_levels_s = parse_delay_levels(config.message_delay_level)
        self.schedule = ScheduleService(self, config_dir / "delayOffset.cbor")
        self.broker_perm = PERM_READ | PERM_WRITE
        self.listen_port = config.listen_port
        self._uniq = make_uniq_key_generator(
            config.advertised_ip, os.getpid(), random.Random(), _now_ms()
        )
        self._register_now = trio.Event()
        self._connections: dict[int, Connection] = {}
        self._client: RemotingClient | None = None
        self.processors = (
            SendProcessor(self),
            PullProcessor(self),
            OffsetProcessor(self),
            ClientProcessor(self),
            AdminProcessor(self),
        )
        handlers: dict[int, Handler] = {}
        for processor in self.processors:
            handlers.update(processor.handlers())
        self.server = RemotingServer(
            handlers,
            name=self.name,
            host=config.host,
            port=config.listen_port,
            on_connect=self._connected,
            on_disconnect=self._disconnected,
        )

    # --- facts processors ask for --------------------------------------------------

    @property
    def store(self) -> MessageStore:
        """The open store (only while ``serve`` runs)."""
        assert self._store is not None, "the store is opened by serve()"
        return self._store

    @property
    def address(self) -> str:
        return f"{self.config.advertised_ip}:{self.listen_port}"

    @property
    def store_host(self) -> tuple[str, int]:
        return (self.config.advertised_ip, self.listen_port)

    @property
    def accepts_writes(self) -> bool:
        return self.config.is_master

    @property
    def role_description(self) -> str:
        return f"role={self.config.broker_role}"

    @property
    def max_delay_level(self) -> int:
        return len(self.delay_levels_s)

    def next_uniq_key(self) -> str:
        return self._uniq.next_id(_now_ms())

    def suggest_broker_id(self, header: PullMessageRequestHeader, result: GetMessageResult) -> int:
        """Which broker of the group the consumer should pull from next (0 = master)."""
        return 0

    # --- store access ----------------------------------------------------------------

    def store_put(self, records: Sequence[MessageRecord]) -> AppendResult:
        """Append one record or a batch; storage failures become SERVICE_NOT_AVAILABLE."""
        try:
            if len(records) == 1:
                return self.store.put_message(records[0])
            return self.store.put_messages(records)
        except StorageError as exc:
            log.warning("%s: append refused: %s", self.name, exc)
            raise store_put_error(exc) from None

    async def wait_durable(self, result: AppendResult, *, wait_store: bool) -> int:
        """Wait until the append is as durable as configured; the send's response code."""
        if wait_store and self.config.flush_disk_type == "SYNC_FLUSH":
            flushed = await self.store.wait_flushed(
                result.end_offset, self.config.sync_flush_timeout_s
            )
            if not flushed:
                return ResponseCode.FLUSH_DISK_TIMEOUT
        return ResponseCode.SUCCESS

    # --- topics ----------------------------------------------------------------------

    def topic_changed(self) -> None:
        """Persist the topic table and tell the NameServers now."""
        self.topics.save(self.topics_path)
        self._register_now.set()

    def find_group(self, group: str) -> SubscriptionGroupConfig | None:
        """The group's config, auto-created when the broker allows it (persisted)."""
        existing = self.groups.get(group)
        if existing is not None:
            return existing
        created = self.groups.find_or_create(
            group, auto_create=self.config.auto_create_subscription_group, now_ms=_now_ms()
        )
        if created is not None:
            self.groups.save(self.groups_path)
        return created

    def auto_create_topic(
        self, topic: str, default_topic: str, queue_nums: int
    ) -> TopicConfig | None:
        config = self.topics.auto_create_for_send(
            topic,
            default_topic,
            queue_nums,
            allow=self.config.auto_create_topic_enable,
            now_ms=_now_ms(),
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
        config = self.topics.create_retry_topic(group, queue_nums, now_ms=_now_ms())
        self.topic_changed()
        return config

    def create_dlq_topic(self, group: str) -> TopicConfig:
        existing = self.topics.get(dlq_topic(group))
        if existing is not None:
            return existing
        config = self.topics.create_dlq_topic(group, now_ms=_now_ms())
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

    async def _send_oneway(self, conn: Connection, request: RemotingCommand) -> None:
        with trio.move_on_after(self.config.request_timeout_s):
            try:
                await conn.oneway(request)
            except RocketError as exc:
                log.debug("%s: notify to %s failed: %s", self.name, conn.peer, exc)

    # --- lifecycle -------------------------------------------------------------------

    _nursery: trio.Nursery | None = None

    def _store_config(self) -> StoreConfig:
        config = self.config
        return StoreConfig(
            segment_bytes=config.commitlog_segment_bytes,
            max_message_bytes=config.max_message_bytes,
            flush_mode=FlushMode(config.flush_disk_type),
            flush_interval_s=config.async_flush_interval_s,
            file_reserved_time_s=config.file_reserved_time_h * 3600,
            min_free_disk_bytes=config.min_free_disk_bytes,
            store_host=self.store_host,
            delay_levels_s=self.delay_levels_s,
            node_name=self.name,
        )

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover the store, bind, register; report the bound port; run until cancelled."""
        config = self.config
        if self.listen_port == 0:
            # The store stamps its host into every record: bind first to learn the port.
            listeners = await trio.open_tcp_listeners(0, host=config.host)
            self.listen_port = listeners[0].socket.getsockname()[1]
            for listener in listeners:
                await listener.aclose()
            self.server.port = self.listen_port
        self._store = await trio.to_thread.run_sync(
            MessageStore.open, config.store_dir, self._store_config()
        )
        self.topics_path.parent.mkdir(parents=True, exist_ok=True)
        self.topics.load(self.topics_path)
        self.groups.load(self.groups_path)
        self.offsets.load(self.offsets_path)
        self.store.add_arrival_listener(self.pull_holds.notify)
        try:
            async with (
                open_client(name=self.name, default_timeout_s=config.register_timeout_s) as client,
                trio.open_nursery() as nursery,
            ):
                self._client = client
                self._nursery = nursery
                await nursery.start(self.store.run)
                await nursery.start(self.server.serve)
                self.server.name = self.name
                await self.register_all()
                nursery.start_soon(self._register_loop)
                nursery.start_soon(self._housekeeping_loop)
                await nursery.start(self.schedule.run)
                log.info("%s: serving at %s (%s)", self.name, self.address, self.role_description)
                task_status.started(self.listen_port)
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self._shutdown()

    def persist_offsets(self) -> None:
        if self.offsets.dirty:
            self.offsets.save(self.offsets_path)
        self.schedule.save()

    async def _shutdown(self) -> None:
        self.persist_offsets()
        if self._store is not None:
            await self._store.close()
        log.info("%s: stopped", self.name)

    async def _housekeeping_loop(self) -> None:
        """Client expiry (120 s), offset persistence (5 s), lock expiry."""
        while True:
            await trio.sleep(5.0)
            now = _now_ms()
            expiry_ms = int(self.config.client_expiry_s * 1000)
            self.notify_consumers(self.clients.scan_expired(now, expiry_ms))
            self.persist_offsets()
            self.locks.remove_expired(now)

    # --- NameServer registration -------------------------------------------------------

    async def _register_loop(self) -> None:
        while True:
            with trio.move_on_after(self.config.register_interval_s):
                await self._register_now.wait()
            self._register_now = trio.Event()
            await self.register_all()

    def _register_request(self) -> RemotingCommand:
        body = RegisterBrokerBody(
            topic_config_table=self.topics.configs(),
            data_version=self.topics.data_version,
        ).encode(compressed=False)
        header = RegisterBrokerRequestHeader(
            broker_name=self.config.broker_name,
            broker_addr=self.address,
            cluster_name=self.config.cluster_name,
            ha_server_addr=self.ha_address,
            broker_id=self.config.broker_id,
            heartbeat_timeout_millis=120_000,
            compressed=False,
            body_crc32=_java_crc32(body),
        )
        return RemotingCommand.request(
            RequestCode.REGISTER_BROKER, header.to_ext_fields(), body=body
        )

    @property
    def ha_address(self) -> str:
        ha_port = self.config.ha_port if self.config.ha_port is not None else self.listen_port + 1
        return f"{self.config.advertised_ip}:{ha_port}"

    async def register_all(self) -> list[RegistrationResult]:
        """Register with every NameServer concurrently; failures are logged, not raised."""
        request = self._register_request()
        results: list[RegistrationResult] = []

        async def one(addr: str) -> None:
            assert self._client is not None
            try:
                response = await self._client.call(addr, request)
            except (NetworkError, RemotingTimeout) as exc:
                log.warning("%s: register to NameServer %s failed: %s", self.name, addr, exc)
                return
            if response.code != ResponseCode.SUCCESS:
                log.warning(
                    "%s: NameServer %s refused registration: %s", self.name, addr, response.remark
                )
                return
            reply = RegisterBrokerResponseHeader.from_ext_fields(response.ext_fields)
            results.append(
                RegistrationResult(
                    namesrv=addr, master_addr=reply.master_addr, ha_server_addr=reply.ha_server_addr
                )
            )

        async with trio.open_nursery() as nursery:
            for addr in self.config.namesrv_addrs:
                nursery.start_soon(one, addr)
        return results

    async def unregister_all(self) -> None:
        header = UnregisterBrokerRequestHeader(
            broker_name=self.config.broker_name,
            broker_addr=self.address,
            cluster_name=self.config.cluster_name,
            broker_id=self.config.broker_id,
        )
        request = RemotingCommand.request(RequestCode.UNREGISTER_BROKER, header.to_ext_fields())
        assert self._client is not None
        for addr in self.config.namesrv_addrs:
            with contextlib.suppress(NetworkError, RemotingTimeout):
                await self._client.call(addr, request, timeout_s=1.0)


def _java_crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0x7FFFFFFF
