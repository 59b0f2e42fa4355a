"""Brokers in controller mode: three in-process controllers, a NameServer, three Brokers.

The brokers learn their ids and roles only from the controller (``controller_addrs``):
the first registration elects a master, the others replicate from it; closing the master
makes a SyncStateSet member master within seconds; the old master comes back as a slave
with its id; a broker whose role is not known refuses writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from broker.agent import IDENTITY_FILE, TEMP_IDENTITY_FILE, IdentityError, read_identity
from broker.config import BrokerConfig
from broker.server import Broker
from client.admin import open_admin
from namesrv.server import NameServer, NameServerConfig
from protocol.codes import RequestCode, ResponseCode
from protocol.controller_bodies import EpochEntryCache, SyncStateSet
from protocol.headers import AlterSyncStateSetRequestHeader, DeleteTopicRequestHeader
from protocol.rpc import open_client
from tests.component.broker_fixtures import (
    CALL_TIMEOUT_S,
    SEGMENT_BYTES,
    BrokerEnv,
    expect,
    wait_until,
)
from tests.component.controller_fixtures import controller_quorum

TOPIC = "AgentTopic"
FAST_HA: dict[str, Any] = {
    "ha_send_heartbeat_interval_s": 0.1,
    "ha_housekeeping_interval_s": 2.0,
    "check_sync_state_set_period_s": 0.1,
    "slave_sync_interval_s": 0.2,
    "slave_timeout_s": 2.0,
}


@attrs.define
class Group:
    envs: list[BrokerEnv]
    quorum: Any = None

    def running(self) -> list[BrokerEnv]:
        return [e for e in self.envs if e.broker is not None]

    def masters(self) -> list[BrokerEnv]:
        return [e for e in self.running() if e.b.accepts_writes]

    async def ha(self, env: BrokerEnv) -> dict[str, Any]:
        response = expect(await env.call(RequestCode.GET_BROKER_HA_STATUS), ResponseCode.SUCCESS)
        doc: dict[str, Any] = json.loads(response.body)
        return doc

    async def one_master(self, timeout_s: float = 10.0) -> BrokerEnv:
        await wait_until(lambda: len(self.masters()) == 1, timeout_s=timeout_s, what="one master")
        return self.masters()[0]

    async def in_sync(self, master: BrokerEnv, members: int) -> None:
        async def full() -> bool:
            return len((await self.ha(master)).get("syncStateSet", [])) == members

        await wait_until(full, timeout_s=10.0, what=f"a SyncStateSet of {members}")


@asynccontextmanager
async def controller_group(
    tmp_path: Path,
    replicas: int = 3,
    controller_overrides: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Group]:
    async with (
        controller_quorum(tmp_path / "controllers", **(controller_overrides or {})) as quorum,
        trio.open_nursery() as nursery,
    ):
        namesrv = NameServer(NameServerConfig(port=0))
        port = await nursery.start(namesrv.serve)
        namesrv_addr = f"127.0.0.1:{port}"
        async with open_client(name="test-client", default_timeout_s=CALL_TIMEOUT_S) as client:
            envs = []
            for i in range(replicas):
                config = BrokerConfig(
                    namesrv_addrs=(namesrv_addr,),
                    controller_addrs=tuple(quorum.addrs),
                    listen_port=0,
                    store_dir=tmp_path / f"replica{i}",
                    commitlog_segment_bytes=SEGMENT_BYTES,
                    min_free_disk_bytes=0,
                    **(FAST_HA | overrides),
                )
                envs.append(BrokerEnv(nursery, client, namesrv, namesrv_addr, config))
            group = Group(envs, quorum)
            try:
                for env in envs:
                    await env.start()
                yield group
            finally:
                with trio.CancelScope(shield=True):
                    for env in group.running():
                        await env.stop()
        nursery.cancel_scope.cancel()


async def test_first_registration_elects_a_master_and_the_others_replicate(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with controller_group(tmp_path) as group:
            master = await group.one_master()
            await group.in_sync(master, 3)
            ids = sorted(e.b.role.controller_id or 0 for e in group.envs)
            assert ids == [1, 2, 3]
            for env in group.envs:
                # The role is runtime state; the config stays what was configured.
                assert env.b.config is env.config
                assert env.b.role.is_master == (env is master)
                assert env.b.role.broker_id == (0 if env is master else env.b.role.controller_id)
            for i in range(20):
                expect(await master.send(TOPIC, b"m%d" % i), ResponseCode.SUCCESS)
            max_offset = master.b.store.max_physical_offset
            for env in group.envs:
                assert env.b.store.max_physical_offset == max_offset  # allAck: all hold it
                if env is not master:
                    refused = await env.send(TOPIC, b"to a slave")
                    assert refused.code == ResponseCode.SERVICE_NOT_AVAILABLE
            identity = read_identity(master.config.store_dir / IDENTITY_FILE)
            assert identity is not None and identity.broker_id == master.b.role.controller_id
            cache = EpochEntryCache.from_bytes(
                expect(
                    await master.call(RequestCode.GET_BROKER_EPOCH_CACHE), ResponseCode.SUCCESS
                ).body
            )
            assert cache.broker_id == master.b.role.controller_id
            assert [e.epoch for e in cache.epoch_list] == [1]
            assert cache.max_offset == max_offset


async def test_master_closed_a_member_takes_over_and_the_old_master_returns_as_slave(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        async with controller_group(tmp_path) as group:
            master = await group.one_master()
            await group.in_sync(master, 3)
            for i in range(10):
                expect(await master.send(TOPIC, b"before %d" % i), ResponseCode.SUCCESS)
            old_id = master.b.role.controller_id
            old_epoch = master.b.epochs.cache.last_epoch  # type: ignore[union-attr]
            before = master.b.store.max_physical_offset
            killed_at = time.monotonic()
            await master.stop()
            new_master = await group.one_master(timeout_s=10.0)
            assert new_master is not master

            # Sends work again on the new master (its SyncStateSet shrinks to who is left).
            async def sends() -> bool:
                response = await new_master.send(TOPIC, b"after")
                return response.code == ResponseCode.SUCCESS

            await wait_until(sends, timeout_s=10.0, what="a send to the new master succeeds")
            took_s = time.monotonic() - killed_at
            assert took_s < 8.0, took_s
            assert new_master.b.store.max_physical_offset > before
            assert new_master.b.epochs.cache.last_epoch > old_epoch  # type: ignore[union-attr]
            # The old master returns: same id (identity file), now a slave that catches up.
            await master.start(listen_port=0)
            assert master.b.role.controller_id == old_id

            async def follows() -> bool:
                b = master.b
                return (
                    not b.role.fenced
                    and not b.role.is_master
                    and b.store.max_physical_offset == new_master.b.store.max_physical_offset
                )

            await wait_until(follows, timeout_s=10.0, what="the old master follows as a slave")
            refused = await master.send(TOPIC, b"to the old master")
            assert refused.code == ResponseCode.SERVICE_NOT_AVAILABLE


async def test_a_new_master_registers_at_once_though_its_last_change_was_recent(
    tmp_path: Path,
) -> None:
    """A role change is announced to the NameServer at once, not after
    ``register_min_interval_s`` (which holds back bursts of topic changes): every slave
    registered its own role change moments ago, and with a 60 s minimum the route would
    name no master for a minute after the master is gone (issue 14's ~335 ms failover
    rounds, with the default 1 s)."""
    with trio.fail_after(60):
        async with controller_group(tmp_path, register_min_interval_s=60.0) as group:
            master = await group.one_master()
            await group.in_sync(master, 3)
            old_address = master.addr
            await master.stop()
            new_master = await group.one_master(timeout_s=10.0)

            async def routed_to_new_master() -> bool:
                route = await new_master.route("TBW102")
                if route is None:
                    return False
                addrs = {d["brokerName"]: d["brokerAddrs"] for d in route["brokerDatas"]}
                return addrs.get(new_master.config.broker_name, {}).get("0") == new_master.addr

            await wait_until(
                routed_to_new_master, timeout_s=20.0, what="the route names the new master"
            )
            assert new_master.addr != old_address


async def test_a_broker_without_a_reachable_controller_is_fenced(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            namesrv = NameServer(NameServerConfig(port=0))
            port = await nursery.start(namesrv.serve)
            namesrv_addr = f"127.0.0.1:{port}"
            async with open_client(name="test-client", default_timeout_s=CALL_TIMEOUT_S) as client:
                config = BrokerConfig(
                    namesrv_addrs=(namesrv_addr,),
                    controller_addrs=("127.0.0.1:1",),
                    listen_port=0,
                    store_dir=tmp_path / "fenced",
                    min_free_disk_bytes=0,
                )
                env = BrokerEnv(nursery, client, namesrv, namesrv_addr, config)
                await env.start()
                try:
                    response = await env.send(TOPIC, b"nope")
                    assert response.code == ResponseCode.SERVICE_NOT_AVAILABLE
                    assert env.b.role.fenced
                    # Not registered with the NameServer either.
                    assert await env.route(TOPIC) is None
                    assert await env.route("TBW102") is None
                finally:
                    await env.stop()
            nursery.cancel_scope.cancel()


async def test_a_master_past_its_lease_without_the_leader_stops_acking_writes(
    tmp_path: Path,
) -> None:
    """apache/rocketmq#7017: the whole quorum gone, the master fences itself after lease_s."""
    with trio.fail_after(60):
        async with (
            controller_quorum(tmp_path / "controllers") as quorum,
            trio.open_nursery() as nursery,
        ):
            namesrv = NameServer(NameServerConfig(port=0))
            port = await nursery.start(namesrv.serve)
            namesrv_addr = f"127.0.0.1:{port}"
            async with open_client(name="t", default_timeout_s=CALL_TIMEOUT_S) as client:
                config = BrokerConfig(
                    namesrv_addrs=(namesrv_addr,),
                    controller_addrs=tuple(quorum.addrs),
                    listen_port=0,
                    store_dir=tmp_path / "lone",
                    min_free_disk_bytes=0,
                    lease_s=1.0,
                )
                env = BrokerEnv(nursery, client, namesrv, namesrv_addr, config)
                await env.start()
                try:
                    await wait_until(lambda: env.b.accepts_writes, what="master")
                    expect(await env.send(TOPIC, b"leased"), ResponseCode.SUCCESS)
                    for node_id in list(quorum.servers):
                        await quorum.kill(node_id)
                    await wait_until(lambda: not env.b.accepts_writes, timeout_s=5.0, what="fenced")
                    response = await env.send(TOPIC, b"past the lease")
                    assert response.code == ResponseCode.SERVICE_NOT_AVAILABLE
                finally:
                    await env.stop()
            nursery.cancel_scope.cancel()


async def test_whole_quorum_down_an_all_ack_master_with_members_keeps_acking(
    tmp_path: Path,
) -> None:
    """Controller loss stops failover only: past its lease, a master whose every ack waits
    for other SyncStateSet members keeps serving (a deposal would stop those acks)."""
    with trio.fail_after(90):
        async with controller_group(tmp_path, replicas=2, lease_s=1.0) as group:
            master = await group.one_master()
            await group.in_sync(master, 2)
            expect(await master.send(TOPIC, b"with the quorum"), ResponseCode.SUCCESS)
            quorum = group.quorum
            for node_id in list(quorum.servers):
                await quorum.kill(node_id)
            await trio.sleep(2.5)  # well past the 1 s lease
            assert master.b.agent is not None and not master.b.agent.lease_valid()
            assert master.b.accepts_writes
            for i in range(5):
                expect(await master.send(TOPIC, b"no quorum %d" % i), ResponseCode.SUCCESS)
            slave = next(e for e in group.envs if e is not master)
            assert slave.b.store.max_physical_offset == master.b.store.max_physical_offset


async def test_whole_quorum_down_under_unclean_election_the_lease_binds(
    tmp_path: Path,
) -> None:
    """With enableElectUncleanMaster the controller may elect outside the SyncStateSet, so
    the members' acks no longer fence a deposed master: the lease binds again."""
    with trio.fail_after(90):
        async with controller_group(
            tmp_path,
            replicas=2,
            controller_overrides={"enable_elect_unclean_master": True},
            lease_s=1.0,
        ) as group:
            master = await group.one_master()
            await group.in_sync(master, 2)
            agent = master.b.agent
            assert agent is not None
            await wait_until(lambda: agent.unclean_election is True, what="the flag heard")
            expect(await master.send(TOPIC, b"with the quorum"), ResponseCode.SUCCESS)
            for node_id in list(group.quorum.servers):
                await group.quorum.kill(node_id)
            await wait_until(lambda: not master.b.accepts_writes, timeout_s=10.0, what="fenced")
            response = await master.send(TOPIC, b"past the lease")
            assert response.code == ResponseCode.SERVICE_NOT_AVAILABLE


async def test_a_living_master_cleaned_by_the_admin_fences_and_a_member_takes_over(
    tmp_path: Path,
) -> None:
    """cleanBrokerMetadata -l of the living master: the controller bumps the master epoch
    with no master; the old master sees it at its next poll, stops acking, and the
    SyncStateSet member left is elected."""
    with trio.fail_after(90):
        async with controller_group(tmp_path, replicas=2) as group:
            master = await group.one_master()
            await group.in_sync(master, 2)
            ha_ports = [env.b.ha_port for env in group.envs]
            expect(await master.send(TOPIC, b"before"), ResponseCode.SUCCESS)
            assert master.b.role.controller_id is not None
            async with open_admin("127.0.0.1:1") as admin:
                await admin.clean_broker_metadata(
                    group.quorum.addrs,
                    broker_name=master.config.broker_name,
                    broker_ids=[master.b.role.controller_id],
                    clean_living=True,
                )
            await wait_until(
                lambda: not master.b.accepts_writes, timeout_s=20.0, what="old master fenced"
            )
            other = next(e for e in group.envs if e is not master)
            await wait_until(lambda: other.b.accepts_writes, timeout_s=20.0, what="new master")
            expect(await other.send(TOPIC, b"after"), ResponseCode.SUCCESS)
            # Both kept the HA port bound at start: the new master serves the one it
            # advertised as a slave, and no port was bound twice.
            assert [env.b.ha_port for env in group.envs] == ha_ports
            assert other.b.ha_master is not None and other.b.ha_master.port == other.b.ha_port


async def test_a_sync_state_set_committed_without_the_masters_knowledge_is_adopted(
    tmp_path: Path,
) -> None:
    """An AlterSyncStateSet committed whose answer the master never saw (reference §4.8):
    the master takes the controller's newer set at its next poll instead of counting acks
    over a set the controller no longer holds."""
    with trio.fail_after(60):
        async with controller_group(tmp_path) as group:
            master = await group.one_master()
            await group.in_sync(master, 3)
            agent, ha = master.b.agent, master.b.ha_master
            assert agent is not None and ha is not None and agent.broker_id is not None
            members, epoch = ha.sync_state_set
            shrunk = frozenset({agent.broker_id, min(members - {agent.broker_id})})
            header = AlterSyncStateSetRequestHeader(
                broker_name=master.config.broker_name,
                master_broker_id=agent.broker_id,
                master_epoch=agent.epoch,
            )
            body = SyncStateSet(sync_state_set=shrunk, sync_state_set_epoch=epoch)
            response = await agent.call(
                RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET, header.to_ext_fields(), body.to_bytes()
            )
            expect(response, ResponseCode.SUCCESS)  # committed; the master did not hear it
            await wait_until(
                lambda: ha.sync_state_set[1] > epoch, timeout_s=15.0, what="the newer set taken"
            )
            # Taken, and then grown back by the master's own check (every member caught up).
            await group.in_sync(master, 3)
            expect(await master.send(TOPIC, b"after"), ResponseCode.SUCCESS)


async def test_an_identity_file_of_another_group_refuses_to_start(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / IDENTITY_FILE).write_bytes(b"OtherCluster#broker-z#2#127.0.0.1:1;0")
    config = BrokerConfig(controller_addrs=("127.0.0.1:1",), listen_port=0, store_dir=store_dir)
    with pytest.raises(IdentityError, match="belongs to OtherCluster/broker-z"):
        await Broker(config).serve()


async def test_a_temp_identity_left_by_a_crash_is_applied_and_made_final(tmp_path: Path) -> None:
    """A crash between the temp identity file and the final one: the same id and check
    code are applied again (idempotent), the final file is written, the temp one removed."""
    store_dir = tmp_path / "replica0"
    store_dir.mkdir()
    temp = store_dir / TEMP_IDENTITY_FILE
    temp.write_bytes(b"DefaultCluster#broker-a#1#127.0.0.1:9;1700000000000")
    with trio.fail_after(60):
        async with controller_group(tmp_path, replicas=1) as group:
            env = await group.one_master()
            assert env.b.role.controller_id == 1
            identity = read_identity(store_dir / IDENTITY_FILE)
            assert identity is not None
            assert identity.check_code == "127.0.0.1:9;1700000000000"
            assert not temp.exists()


async def test_a_topic_created_after_the_last_metadata_copy_survives_the_masters_death(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slaves copy topic configs every ``slave_sync_interval_s`` (RocketMQ's
    SlaveSynchronize), so a topic created on the master since the last copy reaches them
    only as replicated records. The new master covers those: the topic comes back with a
    queue for every queue that holds messages, which stay readable and writable there
    (before, the new master auto-created it with 4 queues and refused queue 7)."""
    late = "LateTopic"
    with trio.fail_after(90):
        async with controller_group(tmp_path, slave_sync_interval_s=3600.0) as group:
            master = await group.one_master()
            await group.in_sync(master, 3)
            for env in group.envs:  # the early copy a new queue asks for (tested below) off
                monkeypatch.setattr(env.b.slave_sync, "soon", lambda: None)
            await master.create_topic(late, 8)
            sent = [await master.send_ok(late, b"q%d" % q, queue_id=q) for q in (0, 5, 7)]
            expect(await master.send(TOPIC, b"known"), ResponseCode.SUCCESS)
            await master.stop()
            new_master = await group.one_master(timeout_s=10.0)
            config = new_master.b.topics.get(late)
            assert config is not None, "the topic's records made its config"
            assert (config.read_queue_nums, config.write_queue_nums) == (8, 8)
            for s in sent:
                records = await new_master.pull_all(late, s.queue_id)
                assert [r.msg_id for r in records] == [s.msg_id]

            async def sends_to_queue_7() -> bool:
                response = await new_master.send(late, b"after", queue_id=7)
                return response.code == ResponseCode.SUCCESS

            await wait_until(sends_to_queue_7, timeout_s=10.0, what="queue 7 writable")
            await new_master.wait_route(late, queues=8)


async def test_a_topic_deleted_before_the_last_metadata_copy_stays_deleted_on_a_new_master(
    tmp_path: Path,
) -> None:
    """Only records past the last copy make configs: a topic the master deleted, and its
    slaves copied so, does not come back on the next master from its old records (nor
    does a re-elected master resurrect what it deleted itself)."""
    with trio.fail_after(90):
        async with controller_group(tmp_path) as group:
            master = await group.one_master()
            await group.in_sync(master, 3)
            await master.create_topic("Doomed", 4)
            await master.send_ok("Doomed", b"old", queue_id=3)
            expect(
                await master.call(
                    RequestCode.DELETE_TOPIC_IN_BROKER, DeleteTopicRequestHeader(topic="Doomed")
                ),
                ResponseCode.SUCCESS,
            )
            slaves = [e for e in group.envs if e is not master]
            rounds = {id(e): e.b.slave_sync.rounds for e in slaves}

            def copied() -> bool:
                return all(e.b.slave_sync.rounds >= rounds[id(e)] + 2 for e in slaves)

            await wait_until(copied, timeout_s=10.0, what="two more metadata copies")
            assert all(e.b.topics.get("Doomed") is None for e in slaves)
            await master.stop()
            new_master = await group.one_master(timeout_s=10.0)
            assert new_master.b.topics.get("Doomed") is None


async def test_a_record_of_a_topic_a_slave_lacks_brings_the_metadata_copy_forward(
    tmp_path: Path,
) -> None:
    """With the period at an hour, a topic created on the master reaches its slaves, with
    its attributes, as soon as its first record does."""
    with trio.fail_after(60):
        async with controller_group(tmp_path, slave_sync_interval_s=3600.0) as group:
            master = await group.one_master()
            await group.in_sync(master, 3)
            await trio.sleep(1.0)  # past the gap after the copy each slave made at start
            await master.create_topic("Ordered", 6, order=True)
            await master.send_ok("Ordered", b"first", queue_id=5)
            slaves = [e for e in group.envs if e is not master]

            def copied() -> bool:
                configs = [e.b.topics.get("Ordered") for e in slaves]
                return all(c is not None and c.order and c.write_queue_nums == 6 for c in configs)

            await wait_until(copied, timeout_s=5.0, what="the new topic copied to the slaves")
