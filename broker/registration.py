"""NameServer registration: the broker announces its address, HA address and topics.

Rules (reference/rocketmq-wire.md §2.16; BrokerController.registerBrokerAll):
- One round registers with every NameServer concurrently, each call under the broker
  client's ``register_timeout_s``; a NameServer that fails or refuses is logged and tried
  again next round, never raised.
- Rounds run every ``register_interval_s``; after ``register_now()`` (a topic or role
  change) at once, or, when the last round asked for by a change is more recent than
  ``register_min_interval_s``, that long after it (a burst of 6,000 topic creates is a
  few registrations, not 6,000); after ``register_now(role_changed=True)`` always at
  once, that wait included: a new master is writable only once the NameServers route
  clients to it, and a broker restarted as a slave less than ``register_min_interval_s``
  before its election would otherwise add the rest of that second to the failover
  (the ~335 ms failover rounds of issue 14); and, while a slave has no live master, every
  ``slave_register_interval_s``: the answer names a (re)started master's HA address, and
  the master's new ports with --port 0.
- ``announced()`` waits for a round to end: an admin topic change is answered once
  the NameServers were told, as RocketMQ's registerBrokerAll in the admin call does (a
  client may send to a topic right after creating it).
- A fenced broker (controller mode, role unknown) does not register.
- Static roles: a slave follows the master the NameServers name, and keeps the last one
  when none is named (a master that is down now may come back at the same address). In
  controller mode the controller names the master instead.
- The body is the topic table with its DataVersion, with its CRC32 masked to 31 bits as
  RocketMQ's ``UtilAll.crc32`` computes it. It is sent compressed (RocketMQ's compressed
  form) when ``compressedRegister`` is set or its JSON form passes
  ``COMPRESS_ABOVE_JSON_BYTES``: NameServers parse a JSON body in one call and cap it
  (4 MiB, ~24,000 topics), while a compressed one is decoded in slices. A large body is
  built off the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Sequence
from typing import Protocol

import attrs
import trio

from broker.clock import Clock
from broker.ha.slave import HASlave
from broker.role import BrokerIdentity
from broker.topics import TopicConfigManager
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import NetworkError, RemotingTimeout
from protocol.headers import (
    RegisterBrokerRequestHeader,
    RegisterBrokerResponseHeader,
    UnregisterBrokerRequestHeader,
)
from protocol.route import RegisterBrokerBody
from protocol.rpc import RemotingClient

log = logging.getLogger(__name__)


#: A JSON body past this is sent compressed instead (NameServers cap JSON bodies at 4 MiB).
COMPRESS_ABOVE_JSON_BYTES = 1024 * 1024
#: Topic tables larger than this are encoded on a worker thread.
OFF_LOOP_ABOVE_TOPICS = 2_000


def register_body_bytes(table: RegisterBrokerBody, always_compress: bool) -> tuple[bool, bytes]:
    """(compressed?, body): RocketMQ's compressed form when asked or when the JSON is large."""
    if not always_compress:
        body = table.encode(compressed=False)
        if len(body) <= COMPRESS_ABOVE_JSON_BYTES:
            return False, body
    return True, table.encode(compressed=True)


@attrs.frozen(kw_only=True)
class RegistrationResult:
    """What one NameServer said to our registration."""

    namesrv: str
    master_addr: str | None
    ha_server_addr: str | None


class BrokerForRegistration(BrokerIdentity, Protocol):
    """What ``NameServerRegistrar`` uses of its broker (``Broker`` satisfies it
    structurally)."""

    @property
    def address(self) -> str: ...
    @property
    def ha_address(self) -> str: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def client(self) -> RemotingClient: ...
    @property
    def ha_slave(self) -> HASlave | None: ...
    @property
    def master_alive(self) -> bool: ...


class NameServerRegistrar:
    """Registers the broker with every NameServer, periodically and on demand."""

    def __init__(self, broker: BrokerForRegistration, *, clock: Clock) -> None:
        self.broker = broker
        self._clock = clock
        self._wanted = trio.Event()
        #: Set with ``_wanted`` by a role change: that round skips the min-interval wait.
        self._role_changed = trio.Event()
        #: Rounds begun and ended (``announced`` waits for one begun after it was called).
        self._begun = 0
        self._ended = 0
        self._round_ended = trio.Event()

    def register_now(self, *, role_changed: bool = False) -> None:
        """Register at the next moment (topics or role changed); a role change at once,
        even within ``register_min_interval_s`` of the last announced change."""
        if role_changed:
            self._role_changed.set()
        self._wanted.set()

    def next_round(self) -> int:
        """The number of the first round to begin from now on (for ``announced``)."""
        return self._begun + 1

    async def announced(self, round_number: int) -> None:
        """Wait until round ``round_number`` has ended (successful or not); the caller
        bounds the wait (no round runs while the registrar is not running)."""
        while self._ended < round_number:
            ended = self._round_ended
            await ended.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register every round until cancelled (see the module rules)."""
        task_status.started()
        broker = self.broker
        last = self._clock.now_s()
        last_change = -float("inf")
        while True:
            config = broker.config
            step_s = config.register_interval_s
            if broker.ha_slave is not None:
                step_s = min(step_s, config.slave_register_interval_s)
            with trio.move_on_after(step_s):
                await self._wanted.wait()
            if self._wanted.is_set():
                # Changes coming faster than one round per register_min_interval_s wait
                # for the next round, which then announces them all; a role change ends
                # the wait (clients find no master until the NameServers hear of it).
                with trio.move_on_after(
                    max(0.0, last_change + config.register_min_interval_s - self._clock.now_s())
                ):
                    await self._role_changed.wait()
            now = self._clock.now_s()
            changed = self._wanted.is_set()
            if not (
                changed
                or now - last >= config.register_interval_s
                or (broker.ha_slave is not None and not broker.master_alive)
            ):
                continue
            self._wanted = trio.Event()
            self._role_changed = trio.Event()
            last = now
            if changed:
                last_change = now
            await self.register_once()

    async def register_once(self) -> None:
        """One round: register everywhere, then follow the master the answers name."""
        self._begun += 1
        try:
            self._follow(await self.register_all())
        finally:
            self._ended += 1
            ended, self._round_ended = self._round_ended, trio.Event()
            ended.set()

    def _follow(self, results: Sequence[RegistrationResult]) -> None:
        broker = self.broker
        slave = broker.ha_slave
        if slave is None or broker.config.controller_mode:
            return  # controller mode: the controller names the master
        for result in results:
            if result.ha_server_addr and result.master_addr:
                if result.master_addr != broker.role.master_addr:
                    log.info(
                        "%s: master is %s (HA %s)",
                        broker.name,
                        result.master_addr,
                        result.ha_server_addr,
                    )
                broker.role.master_addr = result.master_addr
                slave.set_master(result.ha_server_addr)
                return

    async def _register_request(self) -> RemotingCommand:
        broker = self.broker
        table = RegisterBrokerBody(
            topic_config_table=broker.topics.configs(),
            data_version=broker.topics.data_version,
        )
        if len(table.topic_config_table) > OFF_LOOP_ABOVE_TOPICS:
            compressed, body = await trio.to_thread.run_sync(
                register_body_bytes, table, broker.config.compressed_register
            )
        else:
            compressed, body = register_body_bytes(table, broker.config.compressed_register)
        header = RegisterBrokerRequestHeader(
            broker_name=broker.config.broker_name,
            broker_addr=broker.address,
            cluster_name=broker.config.cluster_name,
            ha_server_addr=broker.ha_address,
            broker_id=broker.role.broker_id,
            heartbeat_timeout_millis=120_000,
            compressed=compressed,
            body_crc32=_java_crc32(body),
        )
        return broker.security.sign(
            RemotingCommand.request(RequestCode.REGISTER_BROKER, header.to_ext_fields(), body=body)
        )

    async def register_all(self) -> list[RegistrationResult]:
        """Register with every NameServer concurrently; failures are logged, not raised."""
        broker = self.broker
        if broker.role.fenced:
            return []
        request = await self._register_request()
        results: list[RegistrationResult] = []

        async def one(addr: str) -> None:
            try:
                response = await broker.client.call(addr, request)
            except (NetworkError, RemotingTimeout) as exc:
                log.warning("%s: register to NameServer %s failed: %s", broker.name, addr, exc)
                return
            if response.code != ResponseCode.SUCCESS:
                log.warning(
                    "%s: NameServer %s refused registration: %s", broker.name, addr, response.remark
                )
                return
            reply = RegisterBrokerResponseHeader.from_ext_fields(response.ext_fields)
            results.append(
                RegistrationResult(
                    namesrv=addr, master_addr=reply.master_addr, ha_server_addr=reply.ha_server_addr
                )
            )

        async with trio.open_nursery() as nursery:
            for addr in broker.config.namesrv_addrs:
                nursery.start_soon(one, addr)
        return results

    async def unregister_all(self) -> None:
        """UNREGISTER_BROKER at every NameServer, best effort (1 s each)."""
        broker = self.broker
        header = UnregisterBrokerRequestHeader(
            broker_name=broker.config.broker_name,
            broker_addr=broker.address,
            cluster_name=broker.config.cluster_name,
            broker_id=broker.role.broker_id,
        )
        request = broker.security.sign(
            RemotingCommand.request(RequestCode.UNREGISTER_BROKER, header.to_ext_fields())
        )
        for addr in broker.config.namesrv_addrs:
            with contextlib.suppress(NetworkError, RemotingTimeout):
                await broker.client.call(addr, request, timeout_s=1.0)


def _java_crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0x7FFFFFFF
