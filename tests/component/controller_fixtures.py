"""A controller quorum in this Trio process, and fake brokers that speak the wire to it.

Rules:
- Every node is a real ``ControllerServer`` (pysyncobj Raft thread + Trio remoting server)
  on 127.0.0.1; ports are picked free up front (Raft peers must know each other's), data
  under the test's tmp_path. Timers are shortened (scans in tenths of a second) so that
  failover tests take about a second; the clock is the real one (Raft runs in threads).
- ``Quorum.kill(node)`` cancels one node: its Raft node is destroyed and its remoting
  server and connections close, as a crashed process's would.
- A ``FakeBroker`` talks only through ``RemotingClient`` requests, as a RocketMQ broker's
  controller agent would: GetMetaData to find the leader, the registration flow,
  heartbeats to every controller, and a handler that records NOTIFY_BROKER_ROLE_CHANGED.
- Every wait has a deadline (``wait_until`` polls under ``trio.fail_after``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from client.controller_admin import controller_call, find_controller_leader
from controller.config import ControllerConfig, Peer
from controller.server import ControllerServer
from launcher.ports import pick_free_ports
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import SyncStateSet
from protocol.headers import (
    AlterSyncStateSetRequestHeader,
    ApplyBrokerIdRequestHeader,
    BrokerHeartbeatRequestHeader,
    ControllerExtFields,
    ElectMasterRequestHeader,
    GetNextBrokerIdRequestHeader,
    GetReplicaInfoRequestHeader,
    NotifyBrokerRoleChangedRequestHeader,
    RegisterBrokerToControllerRequestHeader,
)
from protocol.rpc import Connection, RemotingClient

#: Deadline of one request/response.
CALL_TIMEOUT_S = 5.0
#: Deadline of waits for something the quorum does by itself (an election, a leader).
WAIT_S = 10.0
CLUSTER = "DefaultCluster"
PASSWORD = "component-test-secret"

#: Short timers: scans every 0.2 s, a new leader looks for dead masters after 0.3 s.
FAST_TIMERS: Mapping[str, Any] = {
    "scan_not_active_broker_interval_s": 0.2,
    "scan_inactive_master_interval_s": 0.3,
    "election_warmup_s": 0.3,
    "elect_master_retry_interval_s": 0.2,
}


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = WAIT_S, what: str = ""
) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails the test at the deadline."""
    start = time.monotonic()
    try:
        with trio.fail_after(timeout_s):
            while True:
                value = condition()
                if not isinstance(value, bool):
                    value = await value
                if value:
                    return time.monotonic() - start
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise AssertionError(f"not within {timeout_s} s: {what or condition}") from None


def quorum_configs(tmp_path: Path, nodes: int = 3, **overrides: Any) -> list[ControllerConfig]:
    ports = pick_free_ports(2 * nodes)
    peers = {
        f"n{i}": Peer(
            node_id=f"n{i}",
            remoting_address=f"127.0.0.1:{ports[2 * i]}",
            raft_address=f"127.0.0.1:{ports[2 * i + 1]}",
        )
        for i in range(nodes)
    }
    return [
        ControllerConfig(
            node_id=node_id,
            peers=peers,
            password=PASSWORD,
            data_dir=tmp_path / node_id,
            **{**FAST_TIMERS, **overrides},
        )
        for node_id in peers
    ]


class Quorum:
    """Controller nodes of one quorum, each in its own cancel scope."""

    def __init__(self, nursery: trio.Nursery, configs: list[ControllerConfig]) -> None:
        self._nursery = nursery
        self.configs = configs
        self.servers: dict[str, ControllerServer] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._stopped: dict[str, trio.Event] = {}

    @property
    def addrs(self) -> list[str]:
        return [c.remoting_address for c in self.configs]

    @property
    def running(self) -> list[ControllerServer]:
        return [s for n, s in self.servers.items() if n in self._scopes]

    async def start(self, config: ControllerConfig) -> ControllerServer:
        server = ControllerServer(config)
        scope = trio.CancelScope()
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await server.serve(task_status=task_status)
            finally:
                stopped.set()

        await self._nursery.start(run)
        self.servers[config.node_id] = server
        self._scopes[config.node_id] = scope
        self._stopped[config.node_id] = stopped
        return server

    async def kill(self, node_id: str) -> None:
        """Stop one node: Raft destroyed, port and connections closed."""
        self._scopes.pop(node_id).cancel()
        with trio.fail_after(WAIT_S):
            await self._stopped[node_id].wait()

    async def leader(self, timeout_s: float = WAIT_S) -> ControllerServer:
        """The node that leads and serves (waits for one)."""
        found: list[ControllerServer] = []

        def serving() -> bool:
            found[:] = [s for s in self.running if s.is_serving]
            return len(found) == 1

        await wait_until(serving, timeout_s, "a controller leader")
        return found[0]

    def followers(self, leader: ControllerServer) -> list[ControllerServer]:
        return [s for s in self.running if s is not leader]


@asynccontextmanager
async def controller_quorum(
    tmp_path: Path, nodes: int = 3, **overrides: Any
) -> AsyncIterator[Quorum]:
    """Start ``nodes`` controllers and wait for a serving leader; stop them all at the end."""
    async with trio.open_nursery() as nursery:
        quorum = Quorum(nursery, quorum_configs(tmp_path, nodes, **overrides))
        for config in quorum.configs:
            await quorum.start(config)
        await quorum.leader()
        yield quorum
        nursery.cancel_scope.cancel()


# --- fake brokers --------------------------------------------------------------------------------


@attrs.define
class RoleChange:
    master_broker_id: int | None
    master_address: str | None
    master_epoch: int | None
    sync_state_set_epoch: int | None
    sync_state_set: frozenset[int]
    master_ha_address: str | None


class FakeBroker:
    """One broker replica's controller agent, reduced to the requests a test needs."""

    def __init__(
        self,
        nursery: trio.Nursery,
        controllers: list[str],
        *,
        name: str = "broker-a",
        port: int,
        cluster: str = CLUSTER,
    ) -> None:
        self.controllers = controllers
        self.name = name
        self.cluster = cluster
        self.address = f"127.0.0.1:{port}"
        self.ha_address = f"127.0.0.1:{port + 1}"
        self.broker_id: int | None = None
        self.notices: list[RoleChange] = []
        self.notified = trio.Event()
        self.client = RemotingClient(
            nursery,
            name=f"fake {name}:{port}",
            handlers={RequestCode.NOTIFY_BROKER_ROLE_CHANGED: self._role_changed},
            default_timeout_s=CALL_TIMEOUT_S,
        )

    async def _role_changed(self, request: RemotingCommand, _: Connection) -> RemotingCommand:
        h = NotifyBrokerRoleChangedRequestHeader.from_ext_fields(request.ext_fields)
        sss = SyncStateSet.from_bytes(request.body)
        self.notices.append(
            RoleChange(
                master_broker_id=h.master_broker_id,
                master_address=h.master_address,
                master_epoch=h.master_epoch,
                sync_state_set_epoch=h.sync_state_set_epoch,
                sync_state_set=sss.sync_state_set,
                master_ha_address=request.ext_fields.get(ControllerExtFields.MASTER_HA_ADDRESS),
            )
        )
        self.notified.set()
        self.notified = trio.Event()
        return request.respond()

    async def call(self, code: int, ext: Mapping[str, str], body: bytes = b"") -> RemotingCommand:
        """Send to the controller leader (found through GetMetaData); any response code."""
        request = RemotingCommand.request(code, ext, body)
        return await controller_call(self.client, self.controllers, request)

    async def leader(self) -> str:
        return await find_controller_leader(self.client, self.controllers)

    async def heartbeat(
        self,
        *,
        epoch: int = 0,
        max_offset: int = 0,
        timeout_ms: int | None = None,
        priority: int | None = None,
        to: list[str] | None = None,
    ) -> None:
        """One oneway heartbeat to every controller (or to ``to``)."""
        assert self.broker_id is not None, "register first"
        header = BrokerHeartbeatRequestHeader(
            cluster_name=self.cluster,
            broker_addr=self.address,
            broker_name=self.name,
            broker_id=self.broker_id,
            epoch=epoch,
            max_offset=max_offset,
            confirm_offset=max_offset,
            heartbeat_timeout_mills=timeout_ms,
            election_priority=priority,
        )
        ext = {**header.to_ext_fields(), ControllerExtFields.HA_ADDRESS: self.ha_address}
        for addr in to or self.controllers:
            await self.client.oneway(
                addr, RemotingCommand.request(RequestCode.BROKER_HEARTBEAT, ext)
            )

    async def register(self) -> RemotingCommand:
        """GetNextBrokerId → ApplyBrokerId → RegisterBroker; the RegisterBroker response."""
        nxt = await self.call(
            RequestCode.CONTROLLER_GET_NEXT_BROKER_ID,
            GetNextBrokerIdRequestHeader(
                cluster_name=self.cluster, broker_name=self.name
            ).to_ext_fields(),
        )
        assert nxt.code == ResponseCode.SUCCESS, nxt
        broker_id = int(nxt.ext_fields["nextBrokerId"])
        applied = await self.call(
            RequestCode.CONTROLLER_APPLY_BROKER_ID,
            ApplyBrokerIdRequestHeader(
                cluster_name=self.cluster,
                broker_name=self.name,
                applied_broker_id=broker_id,
                register_check_code=f"{self.address};{time.time_ns() // 1_000_000}",
            ).to_ext_fields(),
        )
        assert applied.code == ResponseCode.SUCCESS, applied
        self.broker_id = broker_id
        return await self.register_again()

    async def register_again(self) -> RemotingCommand:
        assert self.broker_id is not None
        header = RegisterBrokerToControllerRequestHeader(
            cluster_name=self.cluster,
            broker_name=self.name,
            broker_id=self.broker_id,
            broker_address=self.address,
        )
        ext = {**header.to_ext_fields(), ControllerExtFields.HA_ADDRESS: self.ha_address}
        return await self.call(RequestCode.CONTROLLER_REGISTER_BROKER, ext)

    async def elect(self, broker_id: int | None = None, designate: bool = False) -> RemotingCommand:
        header = ElectMasterRequestHeader(
            cluster_name=self.cluster,
            broker_name=self.name,
            broker_id=self.broker_id if broker_id is None else broker_id,
            designate_elect=designate,
        )
        return await self.call(RequestCode.CONTROLLER_ELECT_MASTER, header.to_ext_fields())

    async def replica_info(self) -> RemotingCommand:
        header = GetReplicaInfoRequestHeader(broker_name=self.name)
        return await self.call(RequestCode.CONTROLLER_GET_REPLICA_INFO, header.to_ext_fields())

    async def alter_sync_state_set(
        self, members: set[int], *, master_epoch: int, sss_epoch: int, master_id: int | None = None
    ) -> RemotingCommand:
        header = AlterSyncStateSetRequestHeader(
            broker_name=self.name,
            master_broker_id=self.broker_id if master_id is None else master_id,
            master_epoch=master_epoch,
        )
        body = SyncStateSet(sync_state_set=frozenset(members), sync_state_set_epoch=sss_epoch)
        return await self.call(
            RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET, header.to_ext_fields(), body.to_bytes()
        )

    def disconnect(self) -> None:
        """Close every connection to the controllers, as a crashed broker's close."""
        for addr in self.controllers:
            self.client.close_connection(addr)


@asynccontextmanager
async def fake_brokers(
    quorum: Quorum, count: int, *, name: str = "broker-a", register: bool = True
) -> AsyncIterator[list[FakeBroker]]:
    """``count`` replicas of group ``name`` (registered in order: ids 1, 2, ...)."""
    async with trio.open_nursery() as nursery:
        ports = pick_free_ports(count)
        brokers = [FakeBroker(nursery, quorum.addrs, name=name, port=p) for p in ports]
        if register:
            for broker in brokers:
                response = await broker.register()
                assert response.code == ResponseCode.SUCCESS, response
                await broker.heartbeat()
        yield brokers
        nursery.cancel_scope.cancel()
