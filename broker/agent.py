"""The broker's controller agent: identity, heartbeats, role changes (controller mode).

Rules (reference/rocketmq-controller.md §2.5, §4.2-4.8; DESIGN.md §6):
- The leader is found with CONTROLLER_GET_METADATA_INFO; a CONTROLLER_NOT_LEADER answer
  names the leader in its remark (rediscover when empty). One ``RemotingClient`` carries
  every request and the long-lived heartbeat connections on which 1008 arrives.
- Identity: GetNextBrokerId → temp file ``brokerIdentity-temp`` → ApplyBrokerId (2014:
  taken, drop the temp file and retry; the same check code is idempotent after a crash) →
  final ``brokerIdentity`` (atomic) → RegisterBroker. A final file skips straight to
  RegisterBroker and keeps its id even on a new port; a file naming another cluster or
  group refuses to start, and so does one that cannot be parsed (``UnreadableFile``).
- The broker stays fenced (no writes, no NameServer registration) until a role is known.
  A role notice (1008 push, RegisterBroker/ElectMaster/GetReplicaInfo answers) is applied
  only when its master epoch is above the one this broker holds; changes are serialised.
- Heartbeats go to every controller every ``heartbeat_interval_s`` on a fixed cadence,
  one loop per controller (an unreachable one delays no other), advertising
  ``controller_heartbeat_timeout_s``.
- Beyond RocketMQ (apache/rocketmq#7017): a master whose last confirmation from the
  leader is older than ``lease_s`` stops acknowledging writes until it hears again, unless
  every ack already waits for other SyncStateSet members (``Broker.lease_holds``). The
  confirmation is a GetReplicaInfo answer naming it master at its epoch; the lease counts
  from when that poll was *sent*, and the poll carries the broker's id so the leader
  counts it as a heartbeat: the leader that confirmed it cannot take it for dead before
  that moment plus the heartbeat timeout, which is longer than the lease (config).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import attrs
import trio

from broker.clock import Clock
from broker.ha.epochfile import EpochFile
from broker.ha.master import HAMaster
from broker.ha.slave import HASlave
from broker.ha.syncstate import SyncStateSetProposed
from broker.role import BrokerIdentity
from broker.store.files import reading
from broker.store.metadata import atomic_write_bytes
from broker.store.store import MessageStore
from protocol.acl_client import sign_requests
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import SyncStateSet
from protocol.errors import RocketError
from protocol.headers import (
    AlterSyncStateSetRequestHeader,
    AlterSyncStateSetResponseHeader,
    ApplyBrokerIdRequestHeader,
    BrokerHeartbeatRequestHeader,
    ControllerExtFields,
    ElectMasterRequestHeader,
    GetMetaDataResponseHeader,
    GetNextBrokerIdRequestHeader,
    GetReplicaInfoRequestHeader,
    NotifyBrokerRoleChangedRequestHeader,
    RegisterBrokerToControllerRequestHeader,
)
from protocol.rpc import Connection, RemotingClient

log = logging.getLogger(__name__)

IDENTITY_FILE = "brokerIdentity"
TEMP_IDENTITY_FILE = "brokerIdentity-temp"
#: Deadline of one controller request.
CALL_TIMEOUT_S = 3.0
POLL_INTERVAL_S = 5.0
#: A replica that is not master polls at least this often (a lost role notice costs this).
REPLICA_POLL_MAX_S = 1.0
#: Added to GetReplicaInfo: the leader counts the poll as a heartbeat of this broker (see
#: ``_poll_once``). RocketMQ's controllers ignore unknown ext fields.
POLL_BROKER_ID = "brokerId"
#: Wait between attempts when the quorum cannot answer (no leader, election failed).
RETRY_S = 0.5


class IdentityError(RocketError):
    """The identity file belongs to another cluster or broker group."""

    retriable = False


class ControllerUnavailable(RocketError):
    """No controller leader answered."""

    retriable = True


@attrs.frozen(kw_only=True)
class RoleNotice:
    """What the controller says about a group's master (any source)."""

    master_id: int
    master_address: str | None
    master_ha_address: str | None
    master_epoch: int
    sync_state_set: frozenset[int]
    sync_state_set_epoch: int


@attrs.frozen(kw_only=True)
class Identity:
    cluster_name: str
    broker_name: str
    broker_id: int
    check_code: str

    def encode(self) -> bytes:
        return f"{self.cluster_name}#{self.broker_name}#{self.broker_id}#{self.check_code}".encode()

    @classmethod
    def decode(cls, data: bytes) -> Identity:
        """Parse ``cluster#name#id#checkCode``; ``ValueError`` says what is wrong."""
        parts = data.decode("utf-8", "replace").strip().split("#")
        if len(parts) != 4 or not (parts[2].isascii() and parts[2].isdigit()):
            raise ValueError(f"not cluster#name#id#checkCode: {data[:40]!r}")
        return cls(
            cluster_name=parts[0],
            broker_name=parts[1],
            broker_id=int(parts[2]),
            check_code=parts[3],
        )


def read_identity(path: Path) -> Identity | None:
    """The identity in ``path``; None when there is none; ``UnreadableFile`` when damaged."""
    with reading(path):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return Identity.decode(data)


def _notice_from(
    ext: Mapping[str, str], body: bytes, *, master_id_key: str = "masterBrokerId"
) -> RoleNotice | None:
    """A notice from a controller answer's ext fields and SyncStateSet body (None: no master)."""
    raw_id = ext.get(master_id_key)
    raw_epoch = ext.get("masterEpoch")
    if not raw_id or not raw_epoch or int(raw_id) < 0:
        return None
    members: frozenset[int] = frozenset()
    sss_epoch = int(ext.get("syncStateSetEpoch") or 0)
    if body:
        try:
            sss = SyncStateSet.from_bytes(body)
        except (RocketError, ValueError):
            sss = None
        if sss is not None:
            members, sss_epoch = sss.sync_state_set, sss.sync_state_set_epoch
    return RoleNotice(
        master_id=int(raw_id),
        master_address=ext.get("masterAddress") or None,
        master_ha_address=ext.get(ControllerExtFields.MASTER_HA_ADDRESS) or None,
        master_epoch=int(raw_epoch),
        sync_state_set=members,
        sync_state_set_epoch=sss_epoch,
    )


class BrokerForAgent(BrokerIdentity, Protocol):
    """What ``BrokerAgent`` uses of its broker (``Broker`` satisfies it structurally): facts
    for registration and heartbeats, and the role transitions the controller orders."""

    @property
    def address(self) -> str: ...
    @property
    def ha_address(self) -> str: ...
    @property
    def store(self) -> MessageStore: ...
    @property
    def epochs(self) -> EpochFile | None: ...
    @property
    def ha_master(self) -> HAMaster | None: ...
    @property
    def ha_slave(self) -> HASlave | None: ...
    def controller_id_assigned(self, broker_id: int) -> None: ...
    async def become_master(self, epoch: int, members: frozenset[int], sss_epoch: int) -> None: ...
    async def become_slave(
        self, epoch: int, master_ha_addr: str | None, master_addr: str | None
    ) -> None: ...


class BrokerAgent:
    """Runs inside ``Broker.serve`` when ``controller_addrs`` is set."""

    def __init__(self, broker: BrokerForAgent, *, clock: Clock) -> None:
        self.broker = broker
        self._clock = clock
        config = broker.config
        self.controllers = tuple(config.controller_addrs)
        self.cluster = config.cluster_name
        self.group = config.broker_name
        self.lease_s = config.lease_s
        self.broker_id: int | None = None
        #: The master epoch this broker last took (0: none yet).
        self.epoch = 0
        self.master_id: int | None = None
        #: trio time of the leader's last confirmation that we are master at our epoch.
        self.lease_renewed_at: float | None = None
        self.role_changes = 0
        #: The controller's enableElectUncleanMaster, from its last GetReplicaInfo answer
        #: (None: not heard yet; a master then treats it as on).
        self.unclean_election: bool | None = None
        self._leader: str | None = None
        self._client: RemotingClient | None = None
        self._role_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._proposing = False

    # --- facts --------------------------------------------------------------------------

    @property
    def is_master(self) -> bool:
        return self.broker_id is not None and self.master_id == self.broker_id

    def lease_valid(self) -> bool:
        """A master acknowledges writes only within its lease (apache/rocketmq#7017)."""
        if self.lease_renewed_at is None:
            return False
        return self._clock.now_s() - self.lease_renewed_at <= self.lease_s

    @property
    def client(self) -> RemotingClient:
        assert self._client is not None, "the agent runs"
        return self._client

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register (retrying until the quorum answers), then heartbeat and poll forever."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._client = RemotingClient(
                nursery,
                name=f"{self.broker.name} agent",
                handlers={RequestCode.NOTIFY_BROKER_ROLE_CHANGED: self._on_role_changed},
                default_timeout_s=CALL_TIMEOUT_S,
                tls=self.broker.security.client_tls,
            )
            if (credentials := self.broker.config.credentials) is not None:
                sign_requests(self._client, credentials)  # ACL 1.0: the broker's account
            task_status.started()
            await self._register_until_done()
            nursery.start_soon(self._heartbeat_loop)
            nursery.start_soon(self._poll_loop)

    def load_identity(self) -> None:
        """Before serving: take the id of a final identity file (raises ``IdentityError``
        for a file of another cluster or group: the broker refuses to start)."""
        self.broker_id = self._load_identity()
        if self.broker_id is not None:
            self.broker.controller_id_assigned(self.broker_id)

    def _load_identity(self) -> int | None:
        """The id of a final identity file; refuses one of another cluster or group."""
        store_dir = self.broker.config.store_dir
        identity = read_identity(store_dir / IDENTITY_FILE)
        if identity is None:
            return None
        if (identity.cluster_name, identity.broker_name) != (self.cluster, self.group):
            raise IdentityError(
                f"{store_dir / IDENTITY_FILE} belongs to {identity.cluster_name}/"
                f"{identity.broker_name}, not {self.cluster}/{self.group}: refusing to start"
            )
        return identity.broker_id

    async def _register_until_done(self) -> None:
        while True:
            try:
                await self._register()
                return
            except (RocketError, ValueError) as exc:
                log.warning("%s: controller registration failed: %s", self.broker.name, exc)
            await trio.sleep(RETRY_S)

    # --- talking to the leader ------------------------------------------------------------

    async def _find_leader(self) -> str:
        named: list[str] = []
        for addr in self.controllers:
            request = RemotingCommand.request(RequestCode.CONTROLLER_GET_METADATA_INFO)
            try:
                response = await self.client.call(addr, request, timeout_s=CALL_TIMEOUT_S)
            except RocketError:
                continue
            if response.code != ResponseCode.SUCCESS:
                continue
            meta = GetMetaDataResponseHeader.from_ext_fields(response.ext_fields)
            if meta.is_leader:
                return addr
            if meta.controller_leader_address:
                named.append(meta.controller_leader_address)
        if named:
            return max(set(named), key=named.count)
        raise ControllerUnavailable(f"no controller leader at {';'.join(self.controllers)}")

    async def call(self, code: int, ext: Mapping[str, str], body: bytes = b"") -> RemotingCommand:
        """Send to the leader, following CONTROLLER_NOT_LEADER; the answer, any code."""
        request = self.broker.security.sign(RemotingCommand.request(code, dict(ext), body))
        for _ in range(3):
            if self._leader is None:
                self._leader = await self._find_leader()
            try:
                response = await self.client.call(self._leader, request, timeout_s=CALL_TIMEOUT_S)
            except RocketError:
                self._leader = None
                continue
            if response.code == ResponseCode.CONTROLLER_NOT_LEADER:
                self._leader = response.remark or None
                continue
            return response
        raise ControllerUnavailable(f"{code}: the controller leader kept changing")

    # --- registration -----------------------------------------------------------------------

    async def _register(self) -> None:
        if self.broker_id is None:
            self.broker_id = await self._apply_identity()
            self.broker.controller_id_assigned(self.broker_id)
        header = RegisterBrokerToControllerRequestHeader(
            cluster_name=self.cluster,
            broker_name=self.group,
            broker_id=self.broker_id,
            broker_address=self.broker.address,
        )
        ext = {**header.to_ext_fields(), ControllerExtFields.HA_ADDRESS: self.broker.ha_address}
        response = await self.call(RequestCode.CONTROLLER_REGISTER_BROKER, ext)
        if response.code == ResponseCode.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED:
            # The controller lost our id (cleaned broker data): apply it again, then retry.
            await self._reapply_identity(self.broker_id)
            response = await self.call(RequestCode.CONTROLLER_REGISTER_BROKER, ext)
        if response.code != ResponseCode.SUCCESS:
            raise ControllerUnavailable(
                f"RegisterBroker refused: {response.code} {response.remark}"
            )
        log.info("%s: registered with the controller as id %d", self.broker.name, self.broker_id)
        await self._heartbeat_once()
        notice = _notice_from(response.ext_fields, response.body)
        if notice is not None and notice.master_address:
            await self.apply(notice)
        elif self.epoch == 0 or not self.is_master:
            await self._elect()

    async def _apply_identity(self) -> int:
        store_dir = self.broker.config.store_dir
        store_dir.mkdir(parents=True, exist_ok=True)
        temp_path = store_dir / TEMP_IDENTITY_FILE
        while True:
            temp = read_identity(temp_path)
            if temp is None or (temp.cluster_name, temp.broker_name) != (self.cluster, self.group):
                response = await self.call(
                    RequestCode.CONTROLLER_GET_NEXT_BROKER_ID,
                    GetNextBrokerIdRequestHeader(
                        cluster_name=self.cluster, broker_name=self.group
                    ).to_ext_fields(),
                )
                if response.code != ResponseCode.SUCCESS:
                    raise ControllerUnavailable(f"GetNextBrokerId: {response.remark}")
                temp = Identity(
                    cluster_name=self.cluster,
                    broker_name=self.group,
                    broker_id=int(response.ext_fields["nextBrokerId"]),
                    check_code=f"{self.broker.address};{self._clock.wall_ms()}",
                )
                atomic_write_bytes(temp_path, temp.encode())
            response = await self.call(
                RequestCode.CONTROLLER_APPLY_BROKER_ID,
                ApplyBrokerIdRequestHeader(
                    cluster_name=self.cluster,
                    broker_name=self.group,
                    applied_broker_id=temp.broker_id,
                    register_check_code=temp.check_code,
                ).to_ext_fields(),
            )
            if response.code == ResponseCode.CONTROLLER_BROKER_ID_INVALID:
                log.info(
                    "%s: broker id %d is taken; asking again", self.broker.name, temp.broker_id
                )
                temp_path.unlink(missing_ok=True)
                continue
            if response.code != ResponseCode.SUCCESS:
                raise ControllerUnavailable(f"ApplyBrokerId: {response.code} {response.remark}")
            atomic_write_bytes(store_dir / IDENTITY_FILE, temp.encode())
            temp_path.unlink(missing_ok=True)
            return temp.broker_id

    async def _reapply_identity(self, broker_id: int) -> None:
        identity = read_identity(self.broker.config.store_dir / IDENTITY_FILE)
        code = (
            identity.check_code
            if identity is not None
            else f"{self.broker.address};{self._clock.wall_ms()}"
        )
        response = await self.call(
            RequestCode.CONTROLLER_APPLY_BROKER_ID,
            ApplyBrokerIdRequestHeader(
                cluster_name=self.cluster,
                broker_name=self.group,
                applied_broker_id=broker_id,
                register_check_code=code,
            ).to_ext_fields(),
        )
        if response.code != ResponseCode.SUCCESS:
            raise ControllerUnavailable(
                f"ApplyBrokerId {broker_id} again: {response.code} {response.remark}"
            )

    async def _elect(self) -> None:
        assert self.broker_id is not None
        header = ElectMasterRequestHeader(
            cluster_name=self.cluster, broker_name=self.group, broker_id=self.broker_id
        )
        response = await self.call(RequestCode.CONTROLLER_ELECT_MASTER, header.to_ext_fields())
        if response.code in (ResponseCode.SUCCESS, ResponseCode.CONTROLLER_MASTER_STILL_EXIST):
            notice = _notice_from(response.ext_fields, b"")
            if notice is not None:
                # The elect answer's body is an ElectMasterResponseBody; a poll brings the set.
                await self._poll_once()
                if self.epoch < notice.master_epoch:
                    await self.apply(notice)
            return
        log.info("%s: election not possible yet: %s", self.broker.name, response.remark)

    # --- periodic work -----------------------------------------------------------------------

    def _heartbeat_request(self) -> RemotingCommand:
        assert self.broker_id is not None
        broker = self.broker
        store = broker.store
        confirm = (
            broker.ha_master.confirm_offset
            if broker.ha_master is not None
            else store.confirm_offset
        )
        header = BrokerHeartbeatRequestHeader(
            cluster_name=self.cluster,
            broker_addr=broker.address,
            broker_name=self.group,
            broker_id=self.broker_id,
            epoch=broker.epochs.cache.last_epoch if broker.epochs is not None else 0,
            max_offset=store.max_physical_offset,
            confirm_offset=confirm,
            heartbeat_timeout_mills=round(broker.config.controller_heartbeat_timeout_s * 1000),
            election_priority=broker.config.election_priority,
        )
        ext = {**header.to_ext_fields(), ControllerExtFields.HA_ADDRESS: broker.ha_address}
        request = RemotingCommand.request(RequestCode.BROKER_HEARTBEAT, ext, oneway=True)
        return broker.security.sign(request)

    async def _heartbeat_to(self, addr: str) -> None:
        """One heartbeat to one controller, within ``send_heartbeat_timeout_s``."""
        request = self._heartbeat_request()
        with trio.move_on_after(self.broker.config.send_heartbeat_timeout_s):
            try:
                await self.client.oneway(addr, request)
            except RocketError as exc:
                log.debug("%s: heartbeat to %s failed: %s", self.broker.name, addr, exc)

    async def _heartbeat_once(self) -> None:
        async with trio.open_nursery() as nursery:
            for addr in self.controllers:
                nursery.start_soon(self._heartbeat_to, addr)

    async def _heartbeat_loop(self) -> None:
        # One loop per controller: a controller that cannot be reached (a connect hanging
        # in a partition) must not delay the others' heartbeats, or a live master would
        # look silent to a leader it can reach.
        async with trio.open_nursery() as nursery:
            for addr in self.controllers:
                nursery.start_soon(self._heartbeat_forever, addr)

    async def _heartbeat_forever(self, addr: str) -> None:
        interval_s = self.broker.config.heartbeat_interval_s
        next_s = self._clock.now_s()
        while True:
            # On a fixed cadence, not "interval after the last one ended": a slow write
            # does not stretch the gap the controller sees.
            next_s = max(next_s + interval_s, self._clock.now_s())
            await trio.sleep_until(next_s)
            await self._heartbeat_to(addr)

    async def _poll_loop(self) -> None:
        while True:
            # A master renews its lease with every answered poll, three times per lease;
            # other replicas poll for role changes whose notice got lost.
            if self.is_master:
                interval_s = min(POLL_INTERVAL_S, self.lease_s / 3)
            elif self.master_id is not None:
                interval_s = min(POLL_INTERVAL_S, REPLICA_POLL_MAX_S)
            else:
                interval_s = RETRY_S
            await trio.sleep(interval_s)
            try:
                await self._poll_once()
                if self.master_id is None:
                    await self._elect()
            except (RocketError, ValueError) as exc:
                log.info("%s: controller poll failed: %s", self.broker.name, exc)

    async def _poll_once(self) -> None:
        sent_at = self._clock.now_s()
        ext = GetReplicaInfoRequestHeader(broker_name=self.group).to_ext_fields()
        if self.broker_id is not None:
            # The leader takes the poll for a heartbeat: a lease renewed by this answer
            # (sent at ``sent_at``) then always ends before that leader's silence timer.
            ext[POLL_BROKER_ID] = str(self.broker_id)
        response = await self.call(RequestCode.CONTROLLER_GET_REPLICA_INFO, ext)
        if response.code == ResponseCode.CONTROLLER_BROKER_METADATA_NOT_EXIST:
            await self._register()
            return
        if response.code != ResponseCode.SUCCESS:
            raise ControllerUnavailable(f"GetReplicaInfo: {response.code} {response.remark}")
        unclean = response.ext_fields.get(ControllerExtFields.UNCLEAN_ELECTION)
        self.unclean_election = None if unclean is None else unclean == "true"
        notice = _notice_from(response.ext_fields, response.body)
        if notice is None:
            self._deposed_without_successor(int(response.ext_fields.get("masterEpoch") or 0))
            return
        if notice.master_id == self.broker_id and notice.master_epoch == self.epoch:
            self.lease_renewed_at = sent_at
            self._adopt_sync_state_set(notice)
        slave = self.broker.ha_slave
        if (
            slave is not None
            and notice.master_epoch == self.epoch
            and notice.master_ha_address
            and slave.master_address != notice.master_ha_address
        ):
            # The role notice came without the master's HA address (not known yet then).
            slave.set_master(notice.master_ha_address, notice.master_epoch)
        if notice.master_epoch > self.epoch and notice.master_address:
            await self.apply(notice)

    def _adopt_sync_state_set(self, notice: RoleNotice) -> bool:
        """Take the controller's SyncStateSet when it is newer than the master's (an
        AlterSyncStateSet committed but its answer lost; reference §4.8). True if taken."""
        master = self.broker.ha_master
        if master is None or not notice.sync_state_set:
            return False
        _, epoch = master.sync_state_set
        if notice.sync_state_set_epoch <= epoch:
            return False
        try:
            master.apply_confirmed(notice.sync_state_set, notice.sync_state_set_epoch)
        except ValueError as exc:  # a set without this master: a newer role notice follows
            log.warning("%s: controller's SyncStateSet not taken: %s", self.broker.name, exc)
            return False
        log.info(
            "%s: SyncStateSet %s at epoch %d taken from the controller",
            self.broker.name,
            sorted(notice.sync_state_set),
            notice.sync_state_set_epoch,
        )
        return True

    async def _resync_after_refusal(self) -> bool:
        """Re-read the controller's view after a refused AlterSyncStateSet; True when it
        held a newer SyncStateSet (the proposal, or another, had been committed)."""
        try:
            response = await self.call(
                RequestCode.CONTROLLER_GET_REPLICA_INFO,
                GetReplicaInfoRequestHeader(broker_name=self.group).to_ext_fields(),
            )
        except RocketError:
            return False
        if response.code != ResponseCode.SUCCESS:
            return False
        notice = _notice_from(response.ext_fields, response.body)
        if (
            notice is None
            or notice.master_id != self.broker_id
            or notice.master_epoch != self.epoch
        ):
            return False
        return self._adopt_sync_state_set(notice)

    def _deposed_without_successor(self, controller_epoch: int) -> None:
        """The controller has no master at an epoch above ours (our master id was cleaned,
        or nobody was electable): a master fences itself and asks for an election."""
        if self.is_master and controller_epoch > self.epoch:
            log.warning(
                "%s: the controller has no master at epoch %d (this master holds %d); fenced",
                self.broker.name,
                controller_epoch,
                self.epoch,
            )
            self.broker.role.fenced = True
            self.master_id = None
            self.lease_renewed_at = None

    # --- role changes --------------------------------------------------------------------------

    async def _on_role_changed(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        h = NotifyBrokerRoleChangedRequestHeader.from_ext_fields(request.ext_fields)
        notice = _notice_from(request.ext_fields, request.body)
        if notice is not None and self._nursery is not None and h.master_epoch is not None:
            self._nursery.start_soon(self._apply_logged, notice)
        return request.respond()

    async def _apply_logged(self, notice: RoleNotice) -> None:
        try:
            await self.apply(notice)
        except (RocketError, ValueError) as exc:
            log.warning("%s: role change failed: %s", self.broker.name, exc)

    async def apply(self, notice: RoleNotice) -> None:
        """Take the role a newer master epoch gives this broker (older notices are ignored)."""
        async with self._role_lock:
            if notice.master_epoch <= self.epoch:
                return
            assert self.broker_id is not None
            sent_at = self._clock.now_s()
            if notice.master_id == self.broker_id:
                members = notice.sync_state_set or frozenset({self.broker_id})
                await self.broker.become_master(
                    notice.master_epoch, members, notice.sync_state_set_epoch
                )
                self.lease_renewed_at = sent_at
            else:
                await self.broker.become_slave(
                    notice.master_epoch, notice.master_ha_address, notice.master_address
                )
                self.lease_renewed_at = None
            self.epoch = notice.master_epoch
            self.master_id = notice.master_id
            self.role_changes += 1

    # --- SyncStateSet proposals ------------------------------------------------------------------

    def on_proposal(self, proposal: SyncStateSetProposed) -> None:
        """HAMaster's callback: send AlterSyncStateSet in the background."""
        if self._nursery is not None:
            self._nursery.start_soon(self._alter_sync_state_set, proposal)

    async def _alter_sync_state_set(self, proposal: SyncStateSetProposed) -> None:
        master = self.broker.ha_master
        if master is None or not self.is_master or self.broker_id is None:
            return
        header = AlterSyncStateSetRequestHeader(
            broker_name=self.group, master_broker_id=self.broker_id, master_epoch=self.epoch
        )
        body = SyncStateSet(sync_state_set=proposal.members, sync_state_set_epoch=proposal.epoch)
        try:
            response = await self.call(
                RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET,
                header.to_ext_fields(),
                body.to_bytes(),
            )
        except RocketError as exc:
            # Not a definite refusal: the master's check proposes again.
            log.info("%s: AlterSyncStateSet not answered: %s", self.broker.name, exc)
            return
        if master is not self.broker.ha_master:
            return
        if response.code == ResponseCode.SUCCESS:
            reply = AlterSyncStateSetResponseHeader.from_ext_fields(response.ext_fields)
            master.apply_confirmed(proposal.members, reply.new_sync_state_set_epoch)
            log.info(
                "%s: SyncStateSet is now %s at epoch %d",
                self.broker.name,
                sorted(proposal.members),
                reply.new_sync_state_set_epoch,
            )
        else:
            log.info(
                "%s: AlterSyncStateSet refused: %s %s",
                self.broker.name,
                response.code,
                response.remark,
            )
            # A refusal may follow a commit whose answer was lost (a re-send answered "no
            # need to update" or "fenced"): take the controller's set if it is newer.
            if not await self._resync_after_refusal() and master is self.broker.ha_master:
                master.proposal_rejected()
