"""The controller node: a Raft replica of the controller state behind a remoting server.

Rules (DESIGN §6, reference/rocketmq-controller.md §2.3–§2.5, §5, §7):
- State-reading and state-changing requests (1001–1004, 1006, 1011–1013) are served by
  the Raft leader only, and only after it committed a no-op of its term (so it applied
  everything committed before it). Every other node answers CONTROLLER_NOT_LEADER (2007)
  with the leader's *remoting* address in the remark (empty when it knows no leader).
  Reads go through the log too (GetReplicaInfo, GetNextBrokerId, and one barrier entry
  for GetSyncStateData), so a deposed leader that has not noticed yet never answers from
  stale state (RocketMQ's DLedger controller can: ``isProcessReadEvent`` defaults off).
- The leader stamps each command with what apply needs from its local liveness table
  (the alive ids, the live info for elections); apply reads no clock and no table.
- Liveness is per node and not replicated (``controller.liveness``): brokers heartbeat
  every controller (BROKER_HEARTBEAT 904); a broker is inactive at once when its
  connection closes and the moment its advertised timeout of silence ends (the scan
  sleeps until the earliest deadline, at most ``scan_not_active_broker_interval_s``). A
  poll (GetReplicaInfo with the broker's id) counts as a heartbeat. When the master of a
  group goes inactive and this node leads, it elects (controller-triggered ElectMaster);
  every ``scan_inactive_master_interval_s`` the leader also elects for groups whose
  master is not alive while a member is (this covers masters that died while there was
  no leader).
- Silence is judged only while this node itself ran: after a wake-up later than
  ``stall_tolerance_s``, silence-based elections wait ``stall_settle_s`` while the
  heartbeats that queued up in the sockets are read (``liveness.StallGuard``).
- A new leader deposes no master during its first heartbeat timeout (the longest a
  broker advertised): a master's lease was renewed, at the latest, by a poll the old
  leader answered, sent before this node won its election, and the lease is shorter
  than the timeout (README, "the lease"). Meanwhile the group's master counts as alive.
- A failed controller-triggered election commits "no master" (masterEpoch + 1) once; it
  is retried only when it did not commit (no quorum, lost leadership), not when it was
  decided: RocketMQ retries decided failures three times, bumping masterEpoch by 3 each
  failover (reference §2.4). For a group without a master, the rescan elects only when
  the election policy says someone can win, so epochs do not grow while nobody can.
- After every successful election the leader pushes NOTIFY_BROKER_ROLE_CHANGED (1008,
  oneway) to every alive member of the group over that member's heartbeat connection
  (bounded by ``notify_timeout_s``). While a newer epoch's notification to a broker is in
  flight an older one is dropped, so a broker never gets an older epoch after a newer one.
- Beyond RocketMQ: brokers may add ``haAddress`` to heartbeats and registrations; the
  live master's is returned as ``masterHaAddress`` (see ``ControllerExtFields``). It is
  kept in the liveness table, not replicated: it is heartbeat data every node receives
  every second, only a live master's is useful, and replicating it would cost a Raft
  commit per broker restart for nothing a new leader does not already have.
- Trust (issue 16, protocol/trust.py): with ``cluster_secret_file`` the broker codes
  (register, broker ids, heartbeat, alter SyncStateSet, elect, clean broker data) need
  the cluster signature, else NO_PERMISSION and a throttled log line; reads stay open.
  With ``tls_cert_file``/``tls_key_file`` the remoting port speaks TLS only.
- Threads live only in ``controller.raft``; this module is plain Trio.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import trio

from controller import state as sm
from controller.config import ControllerConfig, Peer
from controller.election import LiveInfo, OutageHold, elect, members_to_await
from controller.liveness import DEFAULT_HEARTBEAT_TIMEOUT_S, BrokerKey, LivenessTable, StallGuard
from controller.metrics import KEEP_CURRENT_MASTER, NO_MASTER_ELECTED, ControllerMetrics
from controller.raft import RaftNode
from protocol import trust
from protocol.acl_guard import open_guard, warn_if_exposed
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import (
    BrokerMemberGroup,
    BrokerReplicasInfo,
    ElectMasterResponseBody,
    ReplicaIdentity,
    ReplicasInfo,
    SyncStateSet,
    parse_broker_names,
)
from protocol.errors import (
    ControllerNotLeader,
    MalformedBody,
    ProtocolError,
    RemotingTimeout,
    RocketError,
    ServerError,
)
from protocol.headers import (
    AlterSyncStateSetRequestHeader,
    AlterSyncStateSetResponseHeader,
    ApplyBrokerIdRequestHeader,
    ApplyBrokerIdResponseHeader,
    BrokerHeartbeatRequestHeader,
    CleanControllerBrokerDataRequestHeader,
    ControllerExtFields,
    ElectMasterRequestHeader,
    ElectMasterResponseHeader,
    GetMetaDataResponseHeader,
    GetNextBrokerIdRequestHeader,
    GetNextBrokerIdResponseHeader,
    GetReplicaInfoRequestHeader,
    GetReplicaInfoResponseHeader,
    Header,
    NotifyBrokerRoleChangedRequestHeader,
    RegisterBrokerToControllerRequestHeader,
    RegisterBrokerToControllerResponseHeader,
)
from protocol.javanum import INT64_RANGE, parse_java_int
from protocol.rpc import (
    Connection,
    Handler,
    RemotingServer,
    ThrottledLog,
    TransportConfig,
    split_address,
)
from protocol.tls import TlsFiles, server_context

log = logging.getLogger(__name__)

#: A GetReplicaInfo ext field beyond RocketMQ's header: the polling broker's id.
POLL_BROKER_ID = "brokerId"
#: Responses whose header and body carry the (new or current) master.
_ELECT_ANSWERED = (ResponseCode.SUCCESS, ResponseCode.CONTROLLER_MASTER_STILL_EXIST)

H = TypeVar("H", bound=Header)


def _invalid(message: str) -> ServerError:
    return ServerError(message, code=ResponseCode.CONTROLLER_INVALID_REQUEST)


def _parse(cls: type[H], request: RemotingCommand) -> H:
    """The request's header; a missing or malformed field is CONTROLLER_INVALID_REQUEST."""
    try:
        return cls.from_ext_fields(request.ext_fields)
    except ProtocolError as exc:
        raise _invalid(str(exc)) from None


def server_tls(config: ControllerConfig) -> ssl.SSLContext | None:
    """The remoting port's TLS context (None: plain); ``TlsError`` names a bad file."""
    files = TlsFiles(
        cert_file=config.tls_cert_file,
        key_file=config.tls_key_file,
        ca_file=config.tls_ca_file,
        verify_client=config.tls_verify_client,
    )
    if not (files.enabled or files.ca_file or files.verify_client):
        return None
    return server_context(files)


def _failed(request: RemotingCommand, result: sm.Result) -> RemotingCommand:
    return request.respond(result.code, result.remark)


class ControllerServer:
    """One controller node. ``serve`` binds both ports and runs until cancelled."""

    def __init__(self, config: ControllerConfig, *, transport: TransportConfig | None = None):
        self.config = config
        self.name = f"controller {config.node_id}"
        self.liveness = LivenessTable()
        self.raft = RaftNode(config.raft_address, config.partners, config.raft_config())
        self._peer_by_raft: dict[str, Peer] = {p.raft_address: p for p in config.peers.values()}
        self.metrics = ControllerMetrics(
            address=config.remoting_address,
            group=config.group,
            peer_id=config.node_id,
            now_s=trio.current_time,
        )
        self.metrics.watch(
            is_leader=lambda: self.is_serving,
            state=lambda: self.raft.state,
            live=self.liveness.entries,
        )
        handlers: dict[int, Handler] = {
            RequestCode.CONTROLLER_GET_NEXT_BROKER_ID: self._get_next_broker_id,
            RequestCode.CONTROLLER_APPLY_BROKER_ID: self._apply_broker_id,
            RequestCode.CONTROLLER_REGISTER_BROKER: self._register_broker,
            RequestCode.CONTROLLER_ELECT_MASTER: self._elect_master,
            RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET: self._alter_sync_state_set,
            RequestCode.CONTROLLER_GET_REPLICA_INFO: self._get_replica_info,
            RequestCode.CONTROLLER_GET_METADATA_INFO: self._get_metadata,
            RequestCode.CONTROLLER_GET_SYNC_STATE_DATA: self._get_sync_state_data,
            RequestCode.CLEAN_BROKER_DATA: self._clean_broker_data,
            RequestCode.BROKER_HEARTBEAT: self._heartbeat,
        }
        if config.cluster_secret_file:
            handlers = trust.guard_handlers(
                handlers,
                trust.CONTROLLER_INTERNAL_CODES,
                node=self.name,
                secret=trust.load_secret_warned(Path(config.cluster_secret_file), log.warning),
                now_ms=trust.wall_ms,
                warn=ThrottledLog(10.0).warning,
            )
        host, port = split_address(config.remoting_address)
        self.acl = open_guard(config.acl_enable, config.acl_file_path, name=self.name)
        if self.acl is not None:
            handlers = self.acl.protect(handlers)
        self.server = RemotingServer(
            self.metrics.requests.instrument(handlers),
            name=self.name,
            host=host,
            port=port,
            config=transport,
            on_disconnect=self._connection_closed,
            tls=server_tls(config),
        )
        self._nursery: trio.Nursery | None = None
        self._started_s = 0.0
        #: trio time this node last became a serving leader.
        self._led_since_s = 0.0
        self._stalls = StallGuard(
            tolerance_s=config.stall_tolerance_s, settle_s=config.stall_settle_s
        )
        #: Set when a broker enters the table: its deadline may be the next one.
        self._liveness_changed = trio.Event()
        self._ready_lock = trio.Lock()
        self._led_term: int | None = None
        self._electing: set[str] = set()
        self._outage = OutageHold(wait_s=config.elect_wait_for_sync_state_set_s)
        #: (broker name, broker id) → the master epoch of the notification in flight to it.
        self._notifying: dict[tuple[str, int], int] = {}
        self.elections = 0
        self.notifications_sent = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the Raft node and the remoting server; report the remoting port."""
        self.raft.start()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                port = await nursery.start(self.server.serve)
                self._started_s = trio.current_time()
                nursery.start_soon(self._scan_brokers_loop)
                nursery.start_soon(self._leader_loop)
                if self.acl is not None:
                    nursery.start_soon(self.acl.watch)
                warn_if_exposed(self.server.host, self.acl, name=self.name)
                log.info(
                    "%s: serving on %s (raft %s, peers %s)",
                    self.name,
                    self.config.remoting_address,
                    self.config.raft_address,
                    ", ".join(self.config.partners),
                )
                task_status.started(port)
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self.raft.close()

    # --- leadership ----------------------------------------------------------------------

    def leader_peer(self) -> Peer | None:
        """The node this one believes leads (itself included), or None."""
        if self.raft.is_leader:
            return self.config.self_peer
        addr = self.raft.leader_address
        return None if addr is None else self._peer_by_raft.get(addr)

    @property
    def is_serving(self) -> bool:
        """Whether this node leads and has applied everything before its term."""
        return self._led_term is not None and self.raft.is_leader

    def _not_leader(self) -> ControllerNotLeader:
        leader = self.leader_peer()
        if leader is self.config.self_peer:  # leads in Raft, but not ready to serve yet
            leader = None
        return ControllerNotLeader(leader.remoting_address if leader else "")

    async def _ready(self) -> bool:
        """Whether this node leads and has applied everything committed before its term."""
        if not self.raft.is_leader:
            return False
        async with self._ready_lock:
            return await self.raft.wait_leader_ready()

    async def _submit(self, command: sm.Command) -> sm.Result:
        """Commit ``command`` (leader only) and return its result."""
        if not await self._ready():
            raise self._not_leader()
        try:
            return await self.raft.submit(command)
        except ControllerNotLeader:
            raise self._not_leader() from None
        except RemotingTimeout as exc:
            raise ServerError(f"{self.name}: {exc}", code=ResponseCode.SYSTEM_ERROR) from None

    async def _leader_loop(self) -> None:
        """Notice leadership changes; while leading, rescan for groups with a dead master."""
        next_rescan_s = 0.0
        while True:
            target = trio.current_time() + self.config.leader_poll_interval_s
            await trio.sleep_until(target)
            self._stalls.woke(target, trio.current_time())
            if not self.raft.is_leader:
                if self._led_term is not None:
                    log.info("%s: is no longer the controller leader", self.name)
                    self._led_term = None
                continue
            if not await self._ready():
                continue
            term = self.raft.term
            if self._led_term != term:
                self._led_term = term
                self._led_since_s = trio.current_time()
                log.info("%s: became the controller leader (term %d)", self.name, term)
                next_rescan_s = 0.0
            now = trio.current_time()
            warm = now - self._started_s >= self.config.election_warmup_s
            judging = not self._in_grace(now) and self._stalls.allows(now)
            if warm and judging and now >= next_rescan_s:
                next_rescan_s = now + self.config.scan_inactive_master_interval_s
                self._rescan_masters(now)

    # --- liveness --------------------------------------------------------------------------

    def _in_grace(self, now_s: float) -> bool:
        """Whether this leader is within its first heartbeat timeout (no deposals yet)."""
        grace_s = self.liveness.max_timeout_s(DEFAULT_HEARTBEAT_TIMEOUT_S)
        return now_s < self._led_since_s + grace_s

    async def _scan_brokers_loop(self) -> None:
        """Expire each silent broker when its deadline passes (not on a fixed period)."""
        while True:
            now = trio.current_time()
            target = now + self.config.scan_not_active_broker_interval_s
            expiry = self.liveness.next_expiry_s()
            if expiry is not None:
                # ``expired`` is strict (> timeout): wake just past the deadline.
                target = max(now, min(target, expiry + 0.001))
            with trio.move_on_at(target):
                await self._liveness_changed.wait()
            if self._liveness_changed.is_set():  # a new broker: its deadline may be sooner
                self._liveness_changed = trio.Event()
                continue
            self._stalls.woke(target, trio.current_time())
            if not self._stalls.allows(trio.current_time()):
                await trio.sleep_until(self._stalls.settled_at_s())
            for key in self.liveness.scan(trio.current_time()):
                self._broker_inactive(key, "no heartbeat within its timeout", closed=False)

    def _connection_closed(self, conn: Connection) -> None:
        for key in self.liveness.channel_closed(conn.id):
            self._broker_inactive(key, "its connection closed", closed=True)

    def _broker_inactive(self, key: BrokerKey, why: str, *, closed: bool) -> None:
        """``closed``: its connection closed, which its own kernel does when the process
        is gone (taken at once, as RocketMQ does, also within a new leader's grace);
        otherwise silence, judged only outside the grace (the rescan after it elects)."""
        log.info("%s: broker %s is inactive: %s", self.name, key, why)
        group = self.raft.state.groups.get(key.broker_name)
        if (
            self._nursery is not None
            and self.raft.is_leader
            and group is not None
            and group.master_broker_id == key.broker_id
            and (closed or not self._in_grace(trio.current_time()))
        ):
            self.metrics.master_lost(key.broker_name, trio.current_time())
            self._nursery.start_soon(
                self._controller_elect, key.broker_name, f"master {key} is inactive", closed
            )

    def _live_for_election(
        self, broker_name: str, now_s: float, *, master_closed: bool = False
    ) -> dict[int, LiveInfo]:
        """Alive broker id → live info, as an ElectMaster is stamped with. Within a new
        leader's grace the group's master counts as alive whatever this node heard,
        unless its connection closed."""
        live = self.liveness.live_info(broker_name, now_s=now_s)
        group = self.raft.state.groups.get(broker_name)
        master = group.master_broker_id if group is not None else None
        if (
            master is not None
            and master not in live
            and not master_closed
            and self._in_grace(now_s)
        ):
            entry = next(
                (e for e in self.liveness.members(broker_name) if e.key.broker_id == master),
                None,
            )
            live[master] = entry.live_info() if entry is not None else LiveInfo()
        return live

    def _rescan_masters(self, now_s: float) -> None:
        """Elect for every group whose master is not alive while some member is."""
        assert self._nursery is not None
        for name, group in self.raft.state.groups.items():
            live = self.liveness.live_info(name, now_s=now_s)
            if not live or name in self._electing:
                continue
            if group.master_broker_id is not None:
                if group.master_broker_id in live:
                    continue
                why = f"master {name}-{group.master_broker_id} is not alive"
                self.metrics.master_lost(name, now_s)
            elif group.master_epoch > 0 and self._electable(group, live):
                why = f"{name} has no master and a replica that can take over"
            else:
                continue
            self._nursery.start_soon(self._controller_elect, name, why)

    def _electable(self, group: sm.BrokerGroup, live: Mapping[int, LiveInfo]) -> bool:
        candidate = elect(
            sync_state_set=group.sync_state_set,
            all_replicas=group.brokers,
            old_master=None,
            preferred=None,
            live=live,
            unclean=self.config.enable_elect_unclean_master,
        )
        return candidate is not None

    async def _controller_elect(
        self, broker_name: str, why: str, master_closed: bool = False
    ) -> None:
        """A controller-triggered ElectMaster, retried while it does not commit."""
        if broker_name in self._electing:
            return
        self._electing.add(broker_name)
        try:
            await self._wait_out_outage(broker_name)
            for attempt in range(1, self.config.elect_master_max_retry_count + 1):
                group = self.raft.state.groups.get(broker_name)
                if group is None or not self.raft.is_leader:
                    return
                command = sm.ElectMaster(
                    cluster_name=group.cluster_name,
                    broker_name=broker_name,
                    live=self._live_for_election(
                        broker_name, trio.current_time(), master_closed=master_closed
                    ),
                    unclean=self.config.enable_elect_unclean_master,
                )
                try:
                    result = await self._submit(command)
                except ControllerNotLeader:
                    return
                except RocketError as exc:
                    log.warning(
                        "%s: election for %s (try %d) failed: %s",
                        self.name,
                        broker_name,
                        attempt,
                        exc,
                    )
                    await trio.sleep(self.config.elect_master_retry_interval_s)
                    continue
                self._report_election(broker_name, result, why)
                return
        finally:
            self._electing.discard(broker_name)

    def _holding(self, broker_name: str, now_s: float) -> frozenset[int]:
        """SyncStateSet members an election for ``broker_name`` still waits for (empty:
        elect now): after a group-wide outage, the longest log may not be back yet."""
        group = self.raft.state.groups.get(broker_name)
        if group is None or group.master_epoch == 0 or not self.raft.is_leader:
            return frozenset()
        away = members_to_await(
            sync_state_set=group.sync_state_set,
            all_replicas=group.brokers,
            master=group.master_broker_id,
            live=self.liveness.live_info(broker_name, now_s=now_s),
            unclean=self.config.enable_elect_unclean_master,
        )
        return away if self._outage.holds(broker_name, away, now_s) else frozenset()

    async def _wait_out_outage(self, broker_name: str) -> None:
        """Hold the election while ``_holding`` says so (bounded by the OutageHold)."""
        if away := self._holding(broker_name, trio.current_time()):
            why = f"waits up to {self._outage.wait_s:.1f} s for SyncStateSet members"
            log.info("%s: election for %s %s %s", self.name, broker_name, why, sorted(away))
        while self._holding(broker_name, trio.current_time()):  # noqa: ASYNC110 (a clock)
            await trio.sleep(self.config.leader_poll_interval_s)

    def _report_election(self, broker_name: str, result: sm.Result, why: str) -> None:
        if result.code == ResponseCode.SUCCESS:
            self._elected(broker_name, result, why)
            return
        self._count_unelected(result)
        if result.code == ResponseCode.CONTROLLER_MASTER_NOT_AVAILABLE:
            log.warning(
                "%s: %s has no master now (epoch %s): no alive replica can take over (%s)",
                self.name,
                broker_name,
                result.master_epoch,
                why,
            )
        elif result.code != ResponseCode.CONTROLLER_MASTER_STILL_EXIST:
            log.warning("%s: election for %s refused: %s", self.name, broker_name, result.remark)

    def _count_unelected(self, result: sm.Result) -> None:
        if result.code == ResponseCode.CONTROLLER_MASTER_NOT_AVAILABLE:
            self.metrics.not_elected(NO_MASTER_ELECTED)
        elif result.code == ResponseCode.CONTROLLER_MASTER_STILL_EXIST:
            self.metrics.not_elected(KEEP_CURRENT_MASTER)

    def _elected(self, broker_name: str, result: sm.Result, why: str) -> None:
        self.elections += 1
        self._outage.release(broker_name)
        group = self.raft.state.groups.get(broker_name)
        cluster = group.cluster_name if group is not None else ""
        self.metrics.elected(cluster, broker_name, trio.current_time())
        log.info(
            "%s: %s-%s became master of %s at epoch %s, SyncStateSet %s (%s)",
            self.name,
            broker_name,
            result.master_broker_id,
            broker_name,
            result.master_epoch,
            sorted(result.sync_state_set or ()),
            why,
        )
        if self.config.notify_broker_role_changed:
            self._notify_role_changed(broker_name, result)

    # --- role-change notification ----------------------------------------------------------

    def _master_ha_ext(self, broker_name: str, master_id: int | None) -> dict[str, str]:
        ha = self.liveness.ha_address(broker_name, master_id, now_s=trio.current_time())
        return {ControllerExtFields.MASTER_HA_ADDRESS: ha} if ha else {}

    def _notify_role_changed(self, broker_name: str, result: sm.Result) -> None:
        if self._nursery is None or result.master_epoch is None:
            return
        header = NotifyBrokerRoleChangedRequestHeader(
            master_address=result.master_address,
            master_epoch=result.master_epoch,
            sync_state_set_epoch=result.sync_state_set_epoch,
            master_broker_id=result.master_broker_id,
        )
        request = RemotingCommand.request(
            RequestCode.NOTIFY_BROKER_ROLE_CHANGED,
            {
                **header.to_ext_fields(),
                **self._master_ha_ext(broker_name, result.master_broker_id),
            },
            SyncStateSet(
                sync_state_set=result.sync_state_set or frozenset(),
                sync_state_set_epoch=result.sync_state_set_epoch or 0,
            ).to_bytes(),
            oneway=True,
        )
        for member in self.liveness.members(broker_name, now_s=trio.current_time()):
            key = (broker_name, member.key.broker_id)
            if self._notifying.get(key, -1) >= result.master_epoch:
                continue  # a newer one is on its way
            self._notifying[key] = result.master_epoch
            self._nursery.start_soon(
                self._send_notification, member.channel_id, key, result.master_epoch, request
            )

    async def _send_notification(
        self, channel_id: int | None, key: tuple[str, int], epoch: int, request: RemotingCommand
    ) -> None:
        try:
            conn = None if channel_id is None else self.server.connections.get(channel_id)
            if conn is None or self._notifying.get(key) != epoch:
                return  # gone, or superseded (the broker's poll finds the newest anyway)
            with trio.move_on_after(self.config.notify_timeout_s):
                try:
                    await conn.oneway(request)
                    self.notifications_sent += 1
                    return
                except RocketError as exc:
                    log.info("%s: role change not delivered to %s-%s: %s", self.name, *key, exc)
                    return
            log.info("%s: role change to %s-%s timed out", self.name, *key)
        finally:
            if self._notifying.get(key) == epoch:
                del self._notifying[key]

    # --- broker registration --------------------------------------------------------------

    async def _get_next_broker_id(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        h = _parse(GetNextBrokerIdRequestHeader, request)
        result = await self._submit(
            sm.GetNextBrokerId(cluster_name=h.cluster_name, broker_name=h.broker_name)
        )
        if not result.ok:
            return _failed(request, result)
        reply = GetNextBrokerIdResponseHeader(
            cluster_name=h.cluster_name, broker_name=h.broker_name, next_broker_id=result.broker_id
        )
        return request.respond(ext_fields=reply.to_ext_fields())

    async def _apply_broker_id(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        h = _parse(ApplyBrokerIdRequestHeader, request)
        result = await self._submit(
            sm.ApplyBrokerId(
                cluster_name=h.cluster_name,
                broker_name=h.broker_name,
                broker_id=h.applied_broker_id,
                register_check_code=h.register_check_code,
            )
        )
        if not result.ok:
            return _failed(request, result)
        log.info(
            "%s: %s-%d has its broker id (%s)",
            self.name,
            h.broker_name,
            h.applied_broker_id,
            h.register_check_code.split(";", 1)[0],
        )
        reply = ApplyBrokerIdResponseHeader(cluster_name=h.cluster_name, broker_name=h.broker_name)
        return request.respond(ext_fields=reply.to_ext_fields())

    async def _register_broker(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        h = _parse(RegisterBrokerToControllerRequestHeader, request)
        now = trio.current_time()
        result = await self._submit(
            sm.RegisterBroker(
                cluster_name=h.cluster_name,
                broker_name=h.broker_name,
                broker_id=h.broker_id,
                address=h.broker_address,
                alive=self.liveness.alive_ids(h.broker_name, now_s=now),
            )
        )
        if not result.ok:
            return _failed(request, result)
        ha = request.ext_fields.get(ControllerExtFields.HA_ADDRESS)
        if ha:
            self.liveness.set_ha_address(h.broker_name, h.broker_id, ha)
        reply = RegisterBrokerToControllerResponseHeader(
            cluster_name=h.cluster_name,
            broker_name=h.broker_name,
            master_broker_id=result.master_broker_id,
            master_address=result.master_address,
            master_epoch=result.master_epoch,
            sync_state_set_epoch=result.sync_state_set_epoch,
        )
        return request.respond(
            ext_fields={
                **reply.to_ext_fields(),
                **self._master_ha_ext(h.broker_name, result.master_broker_id),
            },
            body=_sync_state_set_body(result),
        )

    # --- elections and the SyncStateSet -----------------------------------------------------

    async def _elect_master(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        h = _parse(ElectMasterRequestHeader, request)
        broker_id = h.broker_id if h.broker_id is not None and h.broker_id >= 0 else None
        if not h.designate_elect and (away := self._holding(h.broker_name, trio.current_time())):
            if self._nursery is not None:  # elects once the members are back or time is up
                self._nursery.start_soon(self._controller_elect, h.broker_name, "outage over")
            raise ServerError(
                f"{h.broker_name}: waiting for SyncStateSet members {sorted(away)}",
                code=ResponseCode.CONTROLLER_ELECT_MASTER_FAILED,
            )
        result = await self._submit(
            sm.ElectMaster(
                cluster_name=h.cluster_name or "",
                broker_name=h.broker_name,
                broker_id=broker_id,
                designate=bool(h.designate_elect),
                live=self._live_for_election(h.broker_name, trio.current_time()),
                unclean=self.config.enable_elect_unclean_master,
            )
        )
        if result.code not in _ELECT_ANSWERED:
            return _failed(request, result)
        if result.code == ResponseCode.SUCCESS:
            who = "admin" if h.designate_elect else f"broker {broker_id}"
            self._elected(h.broker_name, result, f"asked by {who}")
        else:
            self._count_unelected(result)
        group = self.raft.state.groups.get(h.broker_name)
        addrs = result.broker_addrs
        if addrs is None and group is not None:
            addrs = {i: m.address for i, m in group.brokers.items()}
        body = ElectMasterResponseBody(
            broker_member_group=BrokerMemberGroup(
                cluster=group.cluster_name if group else h.cluster_name or "",
                broker_name=h.broker_name,
                broker_addrs=addrs or {},
            ),
            sync_state_set=result.sync_state_set or frozenset(),
        )
        reply = ElectMasterResponseHeader(
            master_broker_id=result.master_broker_id,
            master_address=result.master_address,
            master_epoch=result.master_epoch,
            sync_state_set_epoch=result.sync_state_set_epoch,
        )
        return request.respond(
            result.code,
            result.remark,
            ext_fields={
                **reply.to_ext_fields(),
                **self._master_ha_ext(h.broker_name, result.master_broker_id),
            },
            body=body.to_bytes(),
        )

    async def _alter_sync_state_set(
        self, request: RemotingCommand, _: Connection
    ) -> RemotingCommand:
        h = _parse(AlterSyncStateSetRequestHeader, request)
        try:
            proposed = SyncStateSet.from_bytes(request.body)
        except MalformedBody as exc:
            raise _invalid(f"AlterSyncStateSet body: {exc}") from None
        result = await self._submit(
            sm.AlterSyncStateSet(
                broker_name=h.broker_name,
                master_broker_id=h.master_broker_id,
                master_epoch=h.master_epoch,
                new_sync_state_set=proposed.sync_state_set,
                sync_state_set_epoch=proposed.sync_state_set_epoch,
                alive=self.liveness.alive_ids(h.broker_name, now_s=trio.current_time()),
            )
        )
        if not result.ok:
            return _failed(request, result)
        assert result.sync_state_set_epoch is not None
        log.info(
            "%s: %s SyncStateSet is now %s (epoch %d)",
            self.name,
            h.broker_name,
            sorted(result.sync_state_set or ()),
            result.sync_state_set_epoch,
        )
        reply = AlterSyncStateSetResponseHeader(
            new_sync_state_set_epoch=result.sync_state_set_epoch
        )
        return request.respond(ext_fields=reply.to_ext_fields(), body=_sync_state_set_body(result))

    # --- reads --------------------------------------------------------------------------------

    async def _get_replica_info(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        h = _parse(GetReplicaInfoRequestHeader, request)
        # The broker's own poll proves it alive (module rules); a broker id is a Java long.
        polled_by = parse_java_int(request.ext_fields.get(POLL_BROKER_ID, ""), INT64_RANGE)
        if polled_by is not None and polled_by >= 0:
            self.liveness.touch(h.broker_name, polled_by, trio.current_time())
        result = await self._submit(sm.GetReplicaInfo(broker_name=h.broker_name))
        if not result.ok:
            return _failed(request, result)
        reply = GetReplicaInfoResponseHeader(
            master_broker_id=result.master_broker_id,
            master_address=result.master_address,
            master_epoch=result.master_epoch,
        )
        return request.respond(
            ext_fields={
                **reply.to_ext_fields(),
                **self._master_ha_ext(h.broker_name, result.master_broker_id),
                ControllerExtFields.UNCLEAN_ELECTION: str(
                    self.config.enable_elect_unclean_master
                ).lower(),
            },
            body=_sync_state_set_body(result),
        )

    async def _get_metadata(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        """Answered by every node from what it knows, without Raft."""
        leader = self.leader_peer()
        reply = GetMetaDataResponseHeader(
            group=self.config.group,
            controller_leader_id=leader.node_id if leader else None,
            controller_leader_address=leader.remoting_address if leader else None,
            is_leader=self.raft.is_leader,
            peers="".join(f"{p.node_id}:{p.remoting_address};" for p in self.config.peers.values()),
        )
        return request.respond(ext_fields=reply.to_ext_fields())

    async def _get_sync_state_data(
        self, request: RemotingCommand, _: Connection
    ) -> RemotingCommand:
        try:
            names = parse_broker_names(request.body)
        except MalformedBody as exc:
            raise _invalid(str(exc)) from None
        # A read barrier: once this entry is applied, the state holds everything committed
        # before the request arrived (unknown names are skipped, as upstream).
        await self._submit(sm.GetReplicaInfo(broker_name=names[0] if names else ""))
        state = self.raft.state
        now = trio.current_time()
        table = {
            name: self._replicas_info(state.groups[name], now)
            for name in names
            if name in state.groups
        }
        return request.respond(body=BrokerReplicasInfo(replicas_info_table=table).to_bytes())

    def _replicas_info(self, group: sm.BrokerGroup, now_s: float) -> ReplicasInfo:
        alive = self.liveness.alive_ids(group.broker_name, now_s=now_s)
        identities = {
            i: ReplicaIdentity(
                broker_name=group.broker_name,
                broker_id=i,
                broker_address=m.address,
                alive=i in alive,
            )
            for i, m in sorted(group.brokers.items())
        }
        return ReplicasInfo(
            master_broker_id=group.master_broker_id,
            master_address=group.master_address,
            master_epoch=group.master_epoch,
            sync_state_set_epoch=group.sync_state_set_epoch,
            in_sync_replicas=tuple(r for i, r in identities.items() if i in group.sync_state_set),
            not_in_sync_replicas=tuple(
                r for i, r in identities.items() if i not in group.sync_state_set
            ),
        )

    # --- admin ----------------------------------------------------------------------------------

    async def _clean_broker_data(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        h = _parse(CleanControllerBrokerDataRequestHeader, request)
        ids: frozenset[int] | None = None
        if h.broker_controller_ids_to_clean:
            try:
                ids = frozenset(
                    int(part) for part in h.broker_controller_ids_to_clean.split(";") if part
                )
            except ValueError:
                return request.respond(
                    ResponseCode.CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
                    f"brokerControllerIdsToClean {h.broker_controller_ids_to_clean!r} "
                    "is not a ';'-separated list of ids",
                )
        result = await self._submit(
            sm.CleanBrokerData(
                cluster_name=h.cluster_name,
                broker_name=h.broker_name,
                broker_ids=ids or None,
                clean_living_broker=h.is_clean_living_broker,
                alive=self.liveness.alive_ids(h.broker_name, now_s=trio.current_time()),
            )
        )
        if not result.ok:
            return _failed(request, result)
        what = "all brokers" if not ids else f"brokers {sorted(ids)}"
        log.info("%s: cleaned %s of %s", self.name, what, h.broker_name)
        return request.respond()

    async def _heartbeat(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand | None:
        h = _parse(BrokerHeartbeatRequestHeader, request)
        if h.broker_id is None:
            raise _invalid("BROKER_HEARTBEAT to a controller needs brokerId")
        timeout_ms = h.heartbeat_timeout_mills
        key = BrokerKey(h.cluster_name, h.broker_name, h.broker_id)
        new = self.liveness.heartbeat(
            key,
            address=h.broker_addr,
            now_s=trio.current_time(),
            timeout_s=timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else None,
            epoch=h.epoch,
            max_offset=h.max_offset,
            confirm_offset=h.confirm_offset,
            election_priority=h.election_priority,
            channel_id=conn.id,
            ha_address=request.ext_fields.get(ControllerExtFields.HA_ADDRESS) or None,
        )
        if new:
            log.info("%s: broker %s (%s) is alive", self.name, key, h.broker_addr)
            self._liveness_changed.set()
        return None if request.is_oneway else request.respond()

    # --- introspection ----------------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """A snapshot for status output and tests."""
        leader = self.leader_peer()
        return {
            "node": self.config.node_id,
            "is_leader": self.raft.is_leader,
            "leader": leader.node_id if leader else None,
            "brokers_alive": len(self.liveness),
            "groups": len(self.raft.state.groups),
            "connections": len(self.server.connections),
            "elections": self.elections,
            "notifications_sent": self.notifications_sent,
            "elections_in_flight": sorted(self._electing),
        }


def _sync_state_set_body(result: sm.Result) -> bytes:
    return SyncStateSet(
        sync_state_set=result.sync_state_set or frozenset(),
        sync_state_set_epoch=result.sync_state_set_epoch or 0,
    ).to_bytes()
