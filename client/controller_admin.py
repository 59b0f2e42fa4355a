"""Controller admin: the quorum's metadata, SyncStateSets, elections, broker epochs and
metadata clean-up (mqadmin getControllerMetaData, getSyncStateSet, electMaster,
getBrokerEpoch, cleanBrokerMetadata); and the building blocks for callers with their own
client (``get_controller_metadata``, ``find_controller_leader``, ``controller_call``).

Rules:
- Requests go to the controller leader: any controller names it (GetMetaData), and a
  CONTROLLER_NOT_LEADER answer is followed once to the leader it names.
- A controller list (``"a:9878;b:9878"``) is parsed and checked before anything is sent;
  an empty or malformed one raises ``AdminError``.
- ``ControllerAdmin`` adds these commands to ``AdminSession``; ``Admin`` inherits them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from client.admin_session import AdminError, AdminSession, _check_address
from protocol import trust
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import (
    BrokerReplicasInfo,
    ElectMasterResponseBody,
    EpochEntryCache,
    broker_names_body,
)
from protocol.errors import (
    NetworkError,
    RemotingTimeout,
    RequestCodeNotSupported,
    RocketError,
    error_for_response,
)
from protocol.headers import (
    CleanControllerBrokerDataRequestHeader,
    ElectMasterRequestHeader,
    ElectMasterResponseHeader,
    GetMetaDataResponseHeader,
)
from protocol.rpc import RemotingClient, check_success

#: File of the cluster secret admin commands that change a group's master sign with.
ENV_CLUSTER_SECRET_FILE = "RMQ_CLUSTER_SECRET_FILE"

# --- controllers (building blocks) -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ControllerMetadata:
    """One controller's CONTROLLER_GET_METADATA_INFO answer (mqadmin getControllerMetaData)."""

    #: The controller that answered.
    address: str
    group: str | None
    leader_id: str | None
    #: The leader's remoting address, as this controller knows it (None: no leader known).
    leader_address: str | None
    #: Whether the controller that answered is the leader.
    is_leader: bool
    #: ``(node id, remoting address)`` of every node of the quorum.
    peers: tuple[tuple[str, str], ...]


@attrs.frozen(kw_only=True)
class ElectMasterResult:
    """The answer of CONTROLLER_ELECT_MASTER (mqadmin electMaster)."""

    cluster: str
    broker_name: str
    master_broker_id: int | None
    master_address: str | None
    master_epoch: int | None
    sync_state_set_epoch: int | None
    sync_state_set: frozenset[int]
    #: Every registered broker of the group: id → address.
    broker_addrs: Mapping[int, str]
    #: False when the asked broker already was the master (CONTROLLER_MASTER_STILL_EXIST).
    changed: bool


@attrs.frozen(kw_only=True)
class BrokerEpochs:
    """One broker's GET_BROKER_EPOCH_CACHE answer, or why there is none."""

    address: str
    cache: EpochEntryCache | None
    error: str | None = None


def parse_controller_list(text: str) -> list[str]:
    """``"a:1;b:2"`` → ``["a:1", "b:2"]``; raises ``AdminError`` when empty or malformed."""
    addrs = [part.strip() for part in text.replace(",", ";").split(";") if part.strip()]
    if not addrs:
        raise AdminError("no controller address given: pass -a host:port[;host:port...]")
    for addr in addrs:
        _check_address(addr, "controller address")
    return addrs


def _parse_peers(text: str | None) -> tuple[tuple[str, str], ...]:
    peers = []
    for item in (text or "").split(";"):
        node_id, sep, addr = item.strip().partition(":")
        if sep:
            peers.append((node_id, addr))
    return tuple(peers)


async def get_controller_metadata(
    client: RemotingClient, addr: str, *, timeout_s: float | None = None
) -> ControllerMetadata:
    """Ask one controller who leads; any controller answers, leader or not."""
    request = RemotingCommand.request(RequestCode.CONTROLLER_GET_METADATA_INFO)
    response = check_success(await client.call(addr, request, timeout_s=timeout_s))
    header = GetMetaDataResponseHeader.from_ext_fields(response.ext_fields)
    return ControllerMetadata(
        address=addr,
        group=header.group,
        leader_id=header.controller_leader_id,
        leader_address=header.controller_leader_address or None,
        is_leader=bool(header.is_leader),
        peers=_parse_peers(header.peers),
    )


async def find_controller_leader(
    client: RemotingClient, controllers: Sequence[str], *, timeout_s: float | None = None
) -> str:
    """The leader's remoting address: the controller that says it leads, else the one the
    others name. Raises ``AdminError`` when no controller answers or none knows a leader."""
    named: list[str] = []
    errors: list[str] = []
    for addr in controllers:
        try:
            meta = await get_controller_metadata(client, addr, timeout_s=timeout_s)
        except RocketError as exc:
            errors.append(f"{addr}: {exc}")
            continue
        if meta.is_leader:
            return addr
        if meta.leader_address:
            named.append(meta.leader_address)
    if named:
        return max(set(named), key=named.count)
    why = "; ".join(errors) if errors else "none of them knows a leader"
    raise AdminError(
        f"no controller leader found at {';'.join(controllers)} ({why}); "
        "is a majority of the quorum up?"
    )


async def controller_call(
    client: RemotingClient,
    controllers: Sequence[str],
    request: RemotingCommand,
    *,
    timeout_s: float | None = None,
) -> RemotingCommand:
    """Send ``request`` to the controller leader (found with GetMetaData, then followed once
    through a CONTROLLER_NOT_LEADER answer); the response, whatever its code."""
    leader = await find_controller_leader(client, controllers, timeout_s=timeout_s)
    response = await client.call(leader, request, timeout_s=timeout_s)
    redirect = response.remark or ""
    if response.code == ResponseCode.CONTROLLER_NOT_LEADER and redirect not in ("", leader):
        response = await client.call(redirect, request, timeout_s=timeout_s)
    return response


class ControllerAdmin(AdminSession):
    """The controller commands of ``Admin`` (which inherits them)."""

    #: The cluster secret: electMaster and cleanBrokerMetadata are signed with it (a
    #: controller with a secret refuses them unsigned). None: ``$RMQ_CLUSTER_SECRET_FILE``.
    cluster_secret: bytes | None = None

    def _signed(self, request: RemotingCommand) -> RemotingCommand:
        secret = self.cluster_secret
        if secret is None and (path := os.environ.get(ENV_CLUSTER_SECRET_FILE)):
            try:
                secret = trust.load_secret(Path(path))
            except trust.SecretError as exc:
                raise AdminError(f"{exc} (from ${ENV_CLUSTER_SECRET_FILE})") from None
        if secret is None:
            return request
        return trust.sign(request, secret, now_ms=trust.wall_ms())

    # --- controller ------------------------------------------------------------------

    async def _controller(
        self,
        controller: str | Sequence[str],
        request: RemotingCommand,
        *,
        ok: Sequence[int] = (ResponseCode.SUCCESS,),
    ) -> RemotingCommand:
        addrs = parse_controller_list(
            controller if isinstance(controller, str) else ";".join(controller)
        )
        response = await controller_call(self._client, addrs, request, timeout_s=self.timeout_s)
        if response.code not in ok:
            raise error_for_response(response.code, response.remark)
        return response

    async def controller_metadata(self, controller: str | Sequence[str]) -> ControllerMetadata:
        """GetMetaData from the first of ``controller`` that answers."""
        addrs = parse_controller_list(
            controller if isinstance(controller, str) else ";".join(controller)
        )
        last: RocketError | None = None
        for addr in addrs:
            try:
                return await get_controller_metadata(self._client, addr, timeout_s=self.timeout_s)
            except (NetworkError, RemotingTimeout) as exc:
                last = exc
        assert last is not None
        raise type(last)(f"{last}; is the controller running? (check -a)") from None

    async def _broker_names(self, broker_name: str | None, cluster: str | None) -> list[str]:
        if (broker_name is None) == (cluster is None):
            raise AdminError("name a broker group (-b BROKER_NAME) or a cluster (-c CLUSTER)")
        if broker_name is not None:
            return [broker_name]
        return [data.broker_name for data in await self._cluster_groups(cluster)]

    async def sync_state_set(
        self,
        controller: str | Sequence[str],
        *,
        broker_name: str | None = None,
        cluster: str | None = None,
    ) -> BrokerReplicasInfo:
        """Master, epochs and (not) in-sync replicas of a group, or of every group of a
        cluster (the groups come from the NameServer), from the controller leader."""
        names = await self._broker_names(broker_name, cluster)
        request = RemotingCommand.request(
            RequestCode.CONTROLLER_GET_SYNC_STATE_DATA, body=broker_names_body(names)
        )
        response = await self._controller(controller, request)
        return BrokerReplicasInfo.from_bytes(response.body)

    async def elect_master(
        self, controller: str | Sequence[str], *, cluster: str, broker_name: str, broker_id: int
    ) -> ElectMasterResult:
        """Make ``broker_id`` the master of ``broker_name`` (an admin-designated election:
        refused unless that broker is alive and, with unclean election off, in the
        SyncStateSet)."""
        header = ElectMasterRequestHeader(
            cluster_name=cluster, broker_name=broker_name, broker_id=broker_id, designate_elect=True
        )
        request = RemotingCommand.request(
            RequestCode.CONTROLLER_ELECT_MASTER, header.to_ext_fields()
        )
        ok = (ResponseCode.SUCCESS, ResponseCode.CONTROLLER_MASTER_STILL_EXIST)
        response = await self._controller(controller, self._signed(request), ok=ok)
        reply = ElectMasterResponseHeader.from_ext_fields(response.ext_fields)
        body = ElectMasterResponseBody.from_bytes(response.body) if response.body else None
        group = body.broker_member_group if body is not None else None
        return ElectMasterResult(
            cluster=cluster,
            broker_name=broker_name,
            master_broker_id=reply.master_broker_id,
            master_address=reply.master_address,
            master_epoch=reply.master_epoch,
            sync_state_set_epoch=reply.sync_state_set_epoch,
            sync_state_set=body.sync_state_set if body is not None else frozenset(),
            broker_addrs=dict(group.broker_addrs) if group is not None else {},
            changed=response.code == ResponseCode.SUCCESS,
        )

    async def clean_broker_metadata(
        self,
        controller: str | Sequence[str],
        *,
        broker_name: str,
        cluster: str | None = None,
        broker_ids: Sequence[int] | None = None,
        clean_living: bool = False,
    ) -> None:
        """Drop brokers (default: the whole group) from the controller's metadata; refused
        for live brokers (and, for the whole group, while it has a master) unless
        ``clean_living``."""
        if not clean_living and not cluster:
            raise AdminError("without --cleanLivingBroker (-l) name the cluster (-c CLUSTER)")
        header = CleanControllerBrokerDataRequestHeader(
            cluster_name=cluster,
            broker_name=broker_name,
            broker_controller_ids_to_clean=";".join(str(i) for i in broker_ids)
            if broker_ids
            else None,
            is_clean_living_broker=clean_living,
        )
        request = RemotingCommand.request(RequestCode.CLEAN_BROKER_DATA, header.to_ext_fields())
        await self._controller(controller, self._signed(request))

    async def broker_epochs(
        self, *, broker_name: str | None = None, cluster: str | None = None
    ) -> list[BrokerEpochs]:
        """GET_BROKER_EPOCH_CACHE of every broker (master and slaves) of a group or cluster.
        A broker that does not answer, or does not serve the request yet, has the reason in
        ``error`` instead of failing the whole call."""
        names = await self._broker_names(broker_name, cluster)
        info = await self.cluster_info()
        addrs = sorted(
            {
                addr
                for name in names
                if name in info.broker_addr_table
                for addr in info.broker_addr_table[name].broker_addrs.values()
            }
        )
        if not addrs:
            raise AdminError(f"the NameServer knows no broker of {', '.join(names)}")

        async def one(addr: str) -> BrokerEpochs:
            request = RemotingCommand.request(RequestCode.GET_BROKER_EPOCH_CACHE)
            try:
                response = await self._broker_call(addr, request)
            except RequestCodeNotSupported:
                return BrokerEpochs(
                    address=addr, cache=None, error="does not serve GET_BROKER_EPOCH_CACHE"
                )
            return BrokerEpochs(address=addr, cache=EpochEntryCache.from_bytes(response.body))

        results = await self._gather(addrs, one)
        return [
            r if isinstance(r, BrokerEpochs) else BrokerEpochs(address=a, cache=None, error=str(r))
            for a, r in zip(addrs, results, strict=True)
        ]
