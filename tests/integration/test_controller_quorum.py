"""A controller quorum of real processes: ``rmq quorum bootstrap``, a broker registered over
the wire, the leader killed with SIGKILL, a new leader serving the same state; and a
controller embedded in ``rmq namesrv --enable-controller``.

Every process a test starts is stopped on the way out, failed or not: ``rmq quorum down``
first, then SIGKILL for any pid in cluster.json that is still one of this test's ``rmq``
processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from cli.controller_cmds import quorum_configs
from client.controller_admin import controller_call, find_controller_leader, get_controller_metadata
from controller.config import write_toml
from launcher.ready import CONTROLLER_READY
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import SyncStateSet
from protocol.errors import RocketError
from protocol.headers import (
    ApplyBrokerIdRequestHeader,
    BrokerHeartbeatRequestHeader,
    ElectMasterRequestHeader,
    GetNextBrokerIdRequestHeader,
    GetReplicaInfoRequestHeader,
    RegisterBrokerToControllerRequestHeader,
)
from protocol.rpc import RemotingClient, open_client
from tests.support.processes import (
    NAMESRV_READY,
    Completed,
    kill_leftovers,
    managed_process,
    recorded_pids,
    rmq_argv,
    rmq_running,
    run_command,
)

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 120.0
NODE_LINE = re.compile(r"^(n\d) (leader|follower) (127\.0\.0\.1:\d+) raft=(127\.0\.0\.1:\d+)$")
CLUSTER = "DefaultCluster"
GROUP = "broker-a"


async def rmq(*args: str) -> Completed:
    return await run_command(rmq_argv(*args), timeout_s=CLI_TIMEOUT_S)


def assert_ok(done: Completed) -> str:
    assert done.returncode == 0, done.describe()
    assert "Traceback" not in done.stderr, done.describe()
    return done.stdout


@asynccontextmanager
async def quorum_dir(root: Path) -> AsyncIterator[Path]:
    """``root`` for a quorum; whatever it started is stopped when the block ends."""
    try:
        yield root
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLI_TIMEOUT_S):
            if (root / "cluster.json").exists():
                await rmq("quorum", "down", "--dir", str(root), "--timeout", "5")
        kill_leftovers(root)


async def _register_master(client: RemotingClient, controllers: list[str]) -> None:
    """A fake broker-a replica: id 1 from the controller, heartbeats, first election."""

    async def call(code: int, ext: dict[str, str]) -> RemotingCommand:
        response = await controller_call(client, controllers, RemotingCommand.request(code, ext))
        assert response.code in (ResponseCode.SUCCESS,), response
        return response

    group = {"cluster_name": CLUSTER, "broker_name": GROUP}
    nxt = await call(
        RequestCode.CONTROLLER_GET_NEXT_BROKER_ID,
        GetNextBrokerIdRequestHeader(**group).to_ext_fields(),
    )
    assert nxt.ext_fields["nextBrokerId"] == "1"
    address = "127.0.0.1:10911"
    await call(
        RequestCode.CONTROLLER_APPLY_BROKER_ID,
        ApplyBrokerIdRequestHeader(
            **group, applied_broker_id=1, register_check_code=f"{address};1"
        ).to_ext_fields(),
    )
    await call(
        RequestCode.CONTROLLER_REGISTER_BROKER,
        RegisterBrokerToControllerRequestHeader(
            **group, broker_id=1, broker_address=address
        ).to_ext_fields(),
    )
    await _heartbeat_once(client, controllers)
    await call(
        RequestCode.CONTROLLER_ELECT_MASTER,
        ElectMasterRequestHeader(**group, broker_id=1).to_ext_fields(),
    )


async def _heartbeat_once(client: RemotingClient, controllers: list[str]) -> None:
    """The fake broker-a replica's heartbeat to every controller still up."""
    heartbeat = BrokerHeartbeatRequestHeader(
        cluster_name=CLUSTER, broker_addr="127.0.0.1:10911", broker_name=GROUP, broker_id=1
    )
    for addr in controllers:
        request = RemotingCommand.request(RequestCode.BROKER_HEARTBEAT, heartbeat.to_ext_fields())
        with contextlib.suppress(RocketError):  # the killed leader
            await client.oneway(addr, request)


async def _keep_heartbeating(client: RemotingClient, controllers: list[str]) -> None:
    """Heartbeat every second, as a live broker does: under a loaded machine the test's
    admin commands alone can outlast the 10 s heartbeat timeout (seen in CI: the replica
    was taken for dead and the controllers recorded no master at epoch 2)."""
    while True:
        await trio.sleep(1.0)
        await _heartbeat_once(client, controllers)


async def _until_leader(client: RemotingClient, addr: str) -> None:
    """Until the (single-node) controller at ``addr`` leads (the caller holds a deadline)."""
    while True:
        if (await get_controller_metadata(client, addr)).is_leader:
            return
        await trio.sleep(0.05)


async def _replica_info(client: RemotingClient, controllers: list[str]) -> RemotingCommand:
    request = RemotingCommand.request(
        RequestCode.CONTROLLER_GET_REPLICA_INFO,
        GetReplicaInfoRequestHeader(broker_name=GROUP).to_ext_fields(),
    )
    return await controller_call(client, controllers, request, timeout_s=1.0)


async def test_bootstrap_kill_the_leader_a_new_one_serves_the_same_state(tmp_path: Path) -> None:
    async with quorum_dir(tmp_path / "q") as root:
        done = await rmq(
            "quorum", "bootstrap", "--nodes", "3", "--dir", str(root), "--timeout", "60"
        )
        lines = assert_ok(done).splitlines()
        nodes = [NODE_LINE.match(line) for line in lines[:3]]
        assert all(nodes), done.describe()
        leaders = [m.group(1) for m in nodes if m and m.group(2) == "leader"]
        assert len(leaders) == 1, done.describe()
        addrs = {m.group(1): m.group(3) for m in nodes if m}
        controllers = list(addrs.values())
        assert lines[3] == f"controllers {';'.join(controllers)}", done.describe()

        # Each node's config holds the shared secret, readable by its owner only.
        configs = sorted(root.glob("n*/controller.toml"))
        assert len(configs) == 3
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in configs)
        secrets = {re.search(r'password = "(.+)"', p.read_text()).group(1) for p in configs}  # type: ignore[union-attr]
        assert len(secrets) == 1

        with trio.fail_after(60):
            async with open_client(default_timeout_s=5.0) as client, trio.open_nursery() as beats:
                leader_addr = await find_controller_leader(client, controllers)
                assert leader_addr == addrs[leaders[0]]
                await _register_master(client, controllers)
                beats.start_soon(_keep_heartbeating, client, controllers)
                before = await _replica_info(client, controllers)
                assert before.code == ResponseCode.SUCCESS
                assert before.ext_fields["masterBrokerId"] == "1"

                # mqadmin's controller commands, against any node of the list.
                a = ";".join(reversed(controllers))
                meta = assert_ok(await rmq("admin", "getControllerMetaData", "-a", a))
                assert f"#ControllerLeaderAddress\t{leader_addr}" in meta.splitlines(), meta
                assert meta.count("#Peer:\t") == 3, meta
                sss = assert_ok(await rmq("admin", "getSyncStateSet", "-a", a, "-b", GROUP))
                for line in ("#brokerName\tbroker-a", "#MasterBrokerId\t1", "#MasterEpoch\t1"):
                    assert line in sss.splitlines(), sss
                assert "InSyncReplica:\tReplicaIdentity{brokerName='broker-a', brokerId=1" in sss
                elect = await rmq(
                    "admin", "electMaster", "-a", a, "-b", "1", "-bn", GROUP, "-c", CLUSTER
                )
                assert "already is the master" in assert_ok(elect), elect.describe()
                clean = await rmq("admin", "cleanBrokerMetadata", "-a", a, "-bn", "nope", "-c", "x")
                assert clean.returncode == 1, clean.describe()
                assert "CONTROLLER_INVALID_CLEAN_BROKER_METADATA" in clean.stderr

                pid = recorded_pids(root)[leaders[0]]
                killed_at = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                survivors = [a for n, a in addrs.items() if n != leaders[0]]
                while True:
                    try:
                        after = await _replica_info(client, survivors)
                        if after.code == ResponseCode.SUCCESS:
                            break
                    except RocketError:
                        pass
                    await trio.sleep(0.05)
                took = time.monotonic() - killed_at
                print(f"new controller leader served {took:.2f} s after kill -9 of the leader")
                assert took < 5.0
                assert after.ext_fields == before.ext_fields  # master 1, epoch 1: intact
                assert SyncStateSet.from_bytes(after.body) == SyncStateSet.from_bytes(before.body)
                new_leader = await find_controller_leader(client, survivors)
                assert new_leader != leader_addr
                meta = await get_controller_metadata(client, new_leader)
                assert meta.is_leader
                beats.cancel_scope.cancel()

        status = json.loads(assert_ok(await rmq("quorum", "status", "--dir", str(root), "--json")))
        alive = {n["name"]: n["alive"] for n in status["nodes"]}
        assert alive == {n: n != leaders[0] for n in addrs}, status
        assert sum(1 for n in status["nodes"] if n["is_leader"]) == 1, status

        again = await rmq("quorum", "bootstrap", "--dir", str(root))
        assert again.returncode == 1 and "already holds" in again.stderr, again.describe()

        stopped = assert_ok(await rmq("quorum", "down", "--dir", str(root)))
        assert stopped.count(": stopped") == 2, stopped
        assert stopped.count(": was not running") == 1, stopped
        assert not any(rmq_running(pid, root) for pid in recorded_pids(root).values())


async def test_namesrv_with_an_embedded_controller(tmp_path: Path) -> None:
    (config,) = quorum_configs(tmp_path / "ctl", nodes=1, host="127.0.0.1", base_port=None)
    path = tmp_path / "ctl" / "controller.toml"
    write_toml(path, config)
    argv = rmq_argv(
        "namesrv", "--port", "0", "--enable-controller", "--controller-config", str(path)
    )
    with trio.fail_after(60):
        async with managed_process(argv, name="namesrv+controller", ready=NAMESRV_READY) as proc:
            line = await proc.wait_for_line(CONTROLLER_READY, stream="stdout")
            controller = f"{line.group('host')}:{line.group('port')}"
            assert controller == config.remoting_address
            async with open_client(default_timeout_s=5.0) as client:
                # The NameServer answers on its port, the controller on its own.
                names = RemotingCommand.request(RequestCode.GET_BROKER_CLUSTER_INFO)
                assert (await client.call(proc.address, names)).code == ResponseCode.SUCCESS
                await _until_leader(client, controller)
                await _register_master(client, [controller])
                info = await _replica_info(client, [controller])
                assert info.ext_fields["masterBrokerId"] == "1"
            assert await proc.stop() == 0
        assert (config.data_dir / "logs" / "namesrv.log").is_file()


async def test_single_node_controller_without_config(tmp_path: Path) -> None:
    argv = rmq_argv("controller", "--port", "0", "--dir", str(tmp_path / "data"))
    with trio.fail_after(60):
        async with managed_process(argv, name="controller", ready=CONTROLLER_READY) as proc:
            async with open_client(default_timeout_s=5.0) as client:
                await _until_leader(client, proc.address)
                await _register_master(client, [proc.address])
            assert await proc.stop() == 0
    log = (tmp_path / "data" / "logs" / "controller.log").read_text()
    assert "became the controller leader" in log
    assert "became master of broker-a at epoch 1" in log
