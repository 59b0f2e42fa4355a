"""Master and slave Brokers with a NameServer in one process: replication end to end.

The brokers are real ``Broker.serve`` instances on loopback with small HA timers; tests
talk to them over the wire (sends, pulls, GET_BROKER_HA_STATUS, the metadata requests).
Only CommitLog bytes are read from the store directories, as files, to compare replicas.
A FakeSlave (tests/component/ha_fixtures.py) speaks the HA wire by hand where a test must
decide when acks go out.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from broker.config import ConfigError, config_from_mapping
from broker.ha.wire import Ack, SlaveHandshake
from client.admin import open_admin
from protocol.bodies import SubscriptionGroupConfig
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import (
    DeleteTopicRequestHeader,
    QueryConsumerOffsetRequestHeader,
    SendMessageRequestHeaderV2,
    UpdateConsumerOffsetRequestHeader,
)
from protocol.message import PROPERTY_DELAY
from tests.component.broker_fixtures import (
    FAST_DELAY_LEVELS,
    TEST_DEADLINE_S,
    BrokerEnv,
    broker_env,
    expect,
    send_header,
    wait_until,
)
from tests.component.ha_fixtures import FakeSlave

#: Small HA timers: a slave finds its master, syncs metadata and acks within a fraction of a
#: second; a sync send gives up after one second.
FAST_HA: dict[str, Any] = {
    "ha_send_heartbeat_interval_s": 0.1,
    "ha_housekeeping_interval_s": 2.0,
    "check_sync_state_set_period_s": 0.1,
    "slave_register_interval_s": 0.1,
    "slave_sync_interval_s": 0.1,
    "slave_timeout_s": 1.0,
}
TOPIC = "ReplTopic"


@attrs.define
class Pair:
    """A master env and its slave env (same NameServer, nursery and client)."""

    master: BrokerEnv
    slave: BrokerEnv

    async def start_slave(self, **overrides: Any) -> None:
        await self.slave.start(**overrides)

    async def ha(self, env: BrokerEnv) -> dict[str, Any]:
        response = expect(await env.call(RequestCode.GET_BROKER_HA_STATUS), ResponseCode.SUCCESS)
        doc: dict[str, Any] = json.loads(response.body)
        return doc

    async def master_max(self) -> int:
        return int((await self.ha(self.master))["masterCommitLogMaxOffset"])

    async def slave_max(self) -> int:
        return int((await self.ha(self.slave))["haClientRuntimeInfo"]["maxOffset"])

    async def in_sync(self) -> bool:
        rows = (await self.ha(self.master)).get("haConnectionInfo", [])
        return any(r["brokerId"] == 1 and r["inSync"] for r in rows)

    async def caught_up(self) -> None:
        async def same() -> bool:
            return await self.slave_max() == await self.master_max()

        await wait_until(same, what="the slave caught up with the master")

    async def knows_topic(self, topic: str) -> None:
        async def known() -> bool:
            pulled = await self.slave.pull(topic, 0, 0)
            return pulled.code != ResponseCode.TOPIC_NOT_EXIST

        await wait_until(known, what=f"the slave knows {topic}")


@asynccontextmanager
async def pair(
    tmp_path: Path, *, start_slave: bool = True, slave: dict[str, Any] | None = None, **master: Any
) -> AsyncIterator[Pair]:
    """A NameServer, a master (``master`` overrides) and, unless told not to, its slave."""
    async with broker_env(tmp_path, store_dir=tmp_path / "master", **{**FAST_HA, **master}) as env:
        slave_config = attrs.evolve(
            env.config,
            broker_id=1,
            broker_role="SLAVE",
            store_dir=tmp_path / "slave",
            **(slave or {}),
        )
        slave_env = BrokerEnv(env.nursery, env.client, env.namesrv, env.namesrv_addr, slave_config)
        p = Pair(env, slave_env)
        if start_slave:
            await p.start_slave()
        try:
            yield p
        finally:
            with trio.CancelScope(shield=True):
                if slave_env.broker is not None:
                    await slave_env.stop()


def commitlog_bytes(store_dir: Path, end: int) -> bytes:
    """The CommitLog from offset 0 up to ``end``, read from the segment files."""
    out = bytearray()
    for seg in sorted((store_dir / "commitlog").iterdir()):
        if not (len(seg.name) == 20 and seg.name.isdigit()):
            continue
        start = int(seg.name)
        assert start == len(out) or start >= end, (seg, len(out))
        if start >= end:
            break
        out += seg.read_bytes()[: end - start]
    assert len(out) >= end, (len(out), end)
    return bytes(out[:end])


async def ha_port(p: Pair) -> int:
    addr = (await p.ha(p.master))["haServerAddr"]
    return int(addr.rpartition(":")[2])


# --- replication, reads from the slave -----------------------------------------------------


async def test_async_master_replicates_and_the_slave_serves_reads(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path) as p:
            await p.master.create_topic(TOPIC, queues=2)
            for i in range(40):
                await p.master.send_ok(TOPIC, f"m{i}".encode() * (i + 1), queue_id=i % 2)
            await p.caught_up()
            end = await p.master_max()
            assert end > 0
            assert commitlog_bytes(tmp_path / "slave", end) == commitlog_bytes(
                tmp_path / "master", end
            )
            # Reads: the slave has the topic (copied) and the same queues, record for record.
            await p.knows_topic(TOPIC)
            for queue_id in (0, 1):
                from_slave = await p.slave.pull_all(TOPIC, queue_id)
                from_master = await p.master.pull_all(TOPIC, queue_id)
                assert [(r.queue_offset, r.body) for r in from_slave] == [
                    (r.queue_offset, r.body) for r in from_master
                ]
                assert len(from_slave) == 20
            pulled = await p.slave.pull(TOPIC, 0, 0)
            assert pulled.response.ext_fields["suggestWhichBrokerId"] == "0"  # master alive
            # Writes: refused by the slave.
            response = await p.slave.send(TOPIC, b"nope")
            assert response.code == ResponseCode.SERVICE_NOT_AVAILABLE, response.remark
            assert await p.slave_max() == end


async def test_ha_status_on_both_ends_and_through_the_admin(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path) as p:
            await p.master.create_topic(TOPIC, queues=1)
            await p.master.send_ok(TOPIC, b"x" * 1000)
            await p.caught_up()
            await wait_until(p.in_sync, what="slave 1 in sync")
            master = await p.ha(p.master)
            end = master["masterCommitLogMaxOffset"]
            assert master["master"] is True and master["brokerId"] == 0
            assert master["syncStateSet"] == [0, 1] and master["inSyncSlaveNums"] == 1
            (row,) = master["haConnectionInfo"]
            assert (row["brokerId"], row["slaveAckOffset"], row["diff"], row["inSync"]) == (
                1,
                end,
                0,
                True,
            )
            assert row["status"] == "TRANSFER"
            slave = await p.ha(p.slave)
            client = slave["haClientRuntimeInfo"]
            assert slave["master"] is False and slave["brokerId"] == 1
            assert client["isActivated"] is True and client["maxOffset"] == end
            assert client["masterAddr"] == master["haServerAddr"]
            assert client["masterBrokerAddr"] == p.master.addr
            assert client["transferredBytes"] == end
            async with open_admin(p.master.namesrv_addr) as admin:
                (status,) = await admin.cluster_ha_status("DefaultCluster")
                assert not isinstance(status, Exception)
                assert status.master and status.max_offset == end
                (conn,) = status.connections
                assert (conn.broker_id, conn.ack_offset, conn.diff, conn.in_sync) == (
                    1,
                    end,
                    0,
                    True,
                )
                of_slave = await admin.ha_status(p.slave.addr)
                assert not of_slave.master and of_slave.client is not None
                assert of_slave.client["maxOffset"] == end


async def test_held_sends_wake_the_slave_once_written_oneway_ones_too(tmp_path: Path) -> None:
    """An ASYNC_MASTER holds a client's send in the CommitLog until the read's answers are
    written, and wakes the HA streamers then (once for the read's sends); a oneway send,
    which queues no answer, is written and wakes them at the end of its read. With the
    heartbeat out of reach, only those wake-ups can bring the slave each message."""
    # No heartbeat, and no metadata sync from the slave (its answers would write the held
    # bytes and give the wake-up too).
    quiet = {
        "ha_send_heartbeat_interval_s": 60.0,
        "ha_housekeeping_interval_s": 120.0,
        "slave_sync_interval_s": 60.0,
    }
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, **quiet) as p:
            await p.master.create_topic(TOPIC, queues=1)
            await wait_until(p.in_sync, what="slave 1 in sync")
            await p.caught_up()
            for i in range(3):
                await p.master.send_ok(TOPIC, b"answered %d" % i)
                with trio.fail_after(3.0):
                    await p.caught_up()
            header = SendMessageRequestHeaderV2.from_v1(send_header(TOPIC))
            for i in range(3):
                # Nothing asks the master anything until the slave has it: an answered
                # request would write the held bytes and give the wake-up itself.
                before = await p.slave_max()
                request = RemotingCommand.request(
                    RequestCode.SEND_MESSAGE_V2, header.to_ext_fields(), b"oneway %d" % i
                )
                await p.master.client.oneway(p.master.addr, request)
                with trio.fail_after(3.0):
                    await wait_until(
                        functools.partial(_slave_grew, p, before), what="the slave got it"
                    )
            assert await p.slave_max() == await p.master_max()


async def _slave_grew(p: Pair, before: int) -> bool:
    return await p.slave_max() > before


async def test_a_slave_started_late_catches_up_and_resumes_after_a_restart(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, start_slave=False) as p:
            await p.master.create_topic(TOPIC, queues=1)
            for i in range(30):
                await p.master.send_ok(TOPIC, b"early %d" % i)
            await p.start_slave()
            await p.caught_up()
            await p.slave.stop()
            for i in range(30):
                await p.master.send_ok(TOPIC, b"while the slave was down %d" % i)
            await p.start_slave()
            await p.caught_up()
            end = await p.master_max()
            assert commitlog_bytes(tmp_path / "slave", end) == commitlog_bytes(
                tmp_path / "master", end
            )
            # One session after the restart: it resumed, it did not start over.
            client = (await p.ha(p.slave))["haClientRuntimeInfo"]
            assert client["connects"] == 1
            assert client["transferredBytes"] < end


async def test_the_configured_master_ha_address_is_the_fallback(tmp_path: Path) -> None:
    """No NameServer answers the slave (haMasterAddress from config is all it has): it
    still replicates; only the metadata copy, which needs the master's client address
    from a NameServer, waits."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, start_slave=False) as p:
            await p.master.create_topic(TOPIC, queues=1)
            await p.master.send_ok(TOPIC, b"via the configured address")
            master_ha = (await p.ha(p.master))["haServerAddr"]
            await p.start_slave(namesrv_addrs=("127.0.0.1:1",), master_ha_addr=master_ha)
            await p.caught_up()
            client = (await p.ha(p.slave))["haClientRuntimeInfo"]
            assert client["masterAddr"] == master_ha
            assert client["masterBrokerAddr"] is None


# --- synchronous double write --------------------------------------------------------------


async def test_sync_master_answers_only_once_the_slave_stored_the_message(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, broker_role="SYNC_MASTER") as p:
            await p.master.create_topic(TOPIC, queues=4)
            await wait_until(p.in_sync, what="slave 1 in sync")
            for i in range(20):
                await p.master.send_ok(TOPIC, b"sync %d" % i, queue_id=i % 4)
                # Answered: the slave already has everything the master has.
                assert await p.slave_max() >= await p.master_max()
            # Pipelined: a thousand sends in flight on one connection, all acknowledged.
            results: list[int] = []

            async def send(i: int) -> None:
                response = await p.master.send(TOPIC, b"burst %d" % i, queue_id=i % 4)
                results.append(response.code)

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for i in range(1000):
                    nursery.start_soon(send, i)
            elapsed = trio.current_time() - started
            assert results == [ResponseCode.SUCCESS] * 1000
            # Far below 1000 round trips of replication one after another.
            assert elapsed < 15.0
            assert await p.slave_max() >= await p.master_max()
            # The slave gone, a send has nobody to replicate to: SLAVE_NOT_AVAILABLE, stored.
            await p.slave.stop()
            await wait_until(lambda: _no_connections(p), what="the master saw the slave go")
            response = await p.master.send(TOPIC, b"alone", queue_id=0)
            assert response.code == ResponseCode.SLAVE_NOT_AVAILABLE, response.remark
            assert response.ext_fields["msgId"]


async def _no_connections(p: Pair) -> bool:
    return not (await p.ha(p.master)).get("haConnectionInfo")


async def test_sync_master_answers_flush_slave_timeout_when_no_ack_comes(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        # The silent slave must outlive the sends: no housekeeping drop in between.
        async with pair(
            tmp_path, start_slave=False, broker_role="SYNC_MASTER", ha_housekeeping_interval_s=6.0
        ) as p:
            await p.master.create_topic(TOPIC, queues=1)
            async with FakeSlave.connect(await ha_port(p)) as silent:
                await silent.handshake(1, ack=await p.master_max())
                await wait_until(p.in_sync, what="the silent slave in sync")
                # It never acks again: every send waits slave_timeout_s (1 s), all at once.
                results: list[tuple[int, float]] = []

                async def send(i: int) -> None:
                    started = trio.current_time()
                    response = await p.master.send(TOPIC, b"unacked %d" % i)
                    results.append((response.code, trio.current_time() - started))

                started = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for i in range(50):
                        nursery.start_soon(send, i)
                assert {code for code, _ in results} == {ResponseCode.FLUSH_SLAVE_TIMEOUT}
                assert all(0.9 <= took < 3.0 for _, took in results), results
                assert trio.current_time() - started < 4.0  # side by side, not one by one
                # Stored all the same (FLUSH_SLAVE_TIMEOUT is a status, not a failure).
                assert len(await p.master.pull_all(TOPIC, 0)) == 50
            # The fake slave hung up: no slave at all is SLAVE_NOT_AVAILABLE, at once.
            await wait_until(lambda: _no_connections(p), what="the fake slave dropped")
            started = trio.current_time()
            response = await p.master.send(TOPIC, b"no slave")
            assert response.code == ResponseCode.SLAVE_NOT_AVAILABLE, response.remark
            assert trio.current_time() - started < 0.9


async def test_sync_flush_sync_master_answers_after_the_fsync_and_the_ack(
    tmp_path: Path,
) -> None:
    """SYNC_FLUSH and a SYNC_MASTER: both waits side by side (the awaiting path, not the
    LaterAnswer one), every send SEND_OK and on the slave; a silent slave still times out."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, broker_role="SYNC_MASTER", flush_disk_type="SYNC_FLUSH") as p:
            await p.master.create_topic(TOPIC, queues=1)
            await wait_until(p.in_sync, what="slave 1 in sync")
            codes: list[int] = []

            async def send(i: int) -> None:
                codes.append((await p.master.send(TOPIC, b"both %d" % i)).code)

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(send, i)
            assert codes == [ResponseCode.SUCCESS] * 50
            assert await p.slave_max() >= await p.master_max()
            assert len(await p.master.pull_all(TOPIC, 0)) == 50
            await p.slave.stop()
            await wait_until(lambda: _no_connections(p), what="the master saw the slave go")
            response = await p.master.send(TOPIC, b"alone", queue_id=0)
            assert response.code == ResponseCode.SLAVE_NOT_AVAILABLE, response.remark


async def test_fewer_in_sync_replicas_than_the_minimum_refuses_before_writing(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(
            tmp_path, start_slave=False, broker_role="SYNC_MASTER", min_in_sync_replicas=2
        ) as p:
            await p.master.create_topic(TOPIC, queues=1)
            before = await p.master_max()
            response = await p.master.send(TOPIC, b"refused")
            assert response.code == ResponseCode.SYSTEM_ERROR
            assert response.remark == "in-sync replicas not enough"
            assert await p.master_max() == before  # nothing was written
            assert await p.master.pull_all(TOPIC, 0) == []
            await p.start_slave()
            await wait_until(p.in_sync, what="slave 1 in sync")
            await p.master.send_ok(TOPIC, b"accepted")


async def test_an_ack_past_what_was_sent_releases_no_sync_write(tmp_path: Path) -> None:
    """apache/rocketmq#3015: a peer acking data the master never sent it is dropped before
    its ack counts, so it cannot acknowledge a sync write that no replica holds."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, start_slave=False, broker_role="SYNC_MASTER") as p:
            await p.master.create_topic(TOPIC, queues=1)
            for i in range(20):  # something to have sent, or not
                await p.master.send(TOPIC, b"before %d" % i)
            port = await ha_port(p)
            async with FakeSlave.connect(port) as honest:
                await honest.handshake(1, ack=await p.master_max())
                await wait_until(p.in_sync, what="slave 1 in sync")
                async with trio.open_nursery() as nursery:
                    codes: list[int] = []

                    async def send() -> None:
                        codes.append((await p.master.send(TOPIC, b"must not be acked")).code)

                    nursery.start_soon(send)
                    await wait_until(lambda: _waiters(p), what="the send waits for the slave")
                    target = await p.master_max()
                    async with FakeSlave.connect(port) as liar:
                        # Claims slave 1, starts at 0, and acks the master's max at once:
                        # past anything this connection was sent.
                        await liar.send(
                            SlaveHandshake(slave_broker_id=1).encode()
                            + Ack(max_offset=0).encode()
                            + Ack(max_offset=target).encode()
                        )
                        assert await liar.closed_by_peer(3.0)
                assert codes == [ResponseCode.FLUSH_SLAVE_TIMEOUT]
            rows = (await p.ha(p.master)).get("haConnectionInfo", [])
            assert all(r["slaveAckOffset"] < target for r in rows), rows


async def _waiters(p: Pair) -> bool:
    return int((await p.ha(p.master))["syncWaiters"]) == 1


# --- suggestWhichBrokerId --------------------------------------------------------------------


async def test_far_behind_consumers_are_sent_to_the_slave(tmp_path: Path) -> None:
    far = {"slave_read_enable": True, "slave_read_behind_bytes": 20_000}
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, slave=far, **far) as p:
            await p.master.create_topic(TOPIC, queues=1)
            for i in range(100):
                await p.master.send_ok(TOPIC, bytes([i]) * 1000)
            await p.caught_up()
            await p.knows_topic(TOPIC)

            def suggested(pulled: Any) -> str:
                return str(pulled.response.ext_fields["suggestWhichBrokerId"])

            # ~99 KB unread after one message: far behind, go to the slave (id 1).
            assert suggested(await p.master.pull(TOPIC, 0, 0, max_nums=1)) == "1"
            assert suggested(await p.slave.pull(TOPIC, 0, 0, max_nums=1)) == "1"
            # Near the end: back to (or stay on) the master.
            assert suggested(await p.master.pull(TOPIC, 0, 90)) == "0"
            assert suggested(await p.slave.pull(TOPIC, 0, 90)) == "0"
            # With the master gone the slave keeps its consumers.
            await p.master.stop()

            async def kept() -> bool:
                return suggested(await p.slave.pull(TOPIC, 0, 90)) == "1"

            await wait_until(kept, what="the slave keeps its consumers")
            pulled = await p.slave.pull(TOPIC, 0, 90)
            assert pulled.code == ResponseCode.SUCCESS and len(pulled.records) == 10


async def test_without_slave_read_enable_the_master_keeps_its_consumers(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, start_slave=False, slave_read_behind_bytes=1) as p:
            await p.master.create_topic(TOPIC, queues=1)
            for _ in range(10):
                await p.master.send_ok(TOPIC, b"x" * 1000)
            pulled = await p.master.pull(TOPIC, 0, 0, max_nums=1)
            assert pulled.response.ext_fields["suggestWhichBrokerId"] == "0"


# --- metadata copy ---------------------------------------------------------------------------


async def _query_offset(env: BrokerEnv, group: str, queue_id: int) -> int | None:
    header = QueryConsumerOffsetRequestHeader(
        consumer_group=group, topic=TOPIC, queue_id=queue_id, set_zero_if_not_found=False
    )
    response = await env.call(RequestCode.QUERY_CONSUMER_OFFSET, header)
    if response.code == ResponseCode.QUERY_NOT_FOUND:
        return None
    expect(response, ResponseCode.SUCCESS)
    return int(response.ext_fields["offset"])


async def _commit(env: BrokerEnv, group: str, queue_id: int, offset: int) -> None:
    header = UpdateConsumerOffsetRequestHeader(
        consumer_group=group, topic=TOPIC, queue_id=queue_id, commit_offset=offset
    )
    expect(await env.call(RequestCode.UPDATE_CONSUMER_OFFSET, header), ResponseCode.SUCCESS)


async def _body(env: BrokerEnv, code: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(expect(await env.call(code), ResponseCode.SUCCESS).body)
    return doc


async def test_metadata_is_copied_from_the_master(tmp_path: Path) -> None:
    delays = {"message_delay_level": FAST_DELAY_LEVELS}
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, slave=delays, **delays) as p:
            m, s = p.master, p.slave
            await m.create_topic(TOPIC, queues=8)
            await m.create_topic("Doomed", queues=1)
            group = SubscriptionGroupConfig(group_name="RG", retry_max_times=3)
            expect(
                await m.call(
                    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, group.to_bytes()
                ),
                ResponseCode.SUCCESS,
            )
            await _commit(m, "RG", 2, 7)
            # A delayed message (level 1 = 1 s here) moves the master's delay offset.
            await m.send_ok(TOPIC, b"later", properties={PROPERTY_DELAY: "1"}, queue_id=0)
            await wait_until(
                lambda: _delivered(m), timeout_s=10.0, what="the delayed message delivered"
            )
            master_delays = await _body(m, RequestCode.GET_ALL_DELAY_OFFSET)
            assert master_delays == {"offsetTable": {"1": 1}}

            async def copied() -> bool:
                topics = (await _body(s, RequestCode.GET_ALL_TOPIC_CONFIG))["topicConfigTable"]
                groups = (await _body(s, RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG))[
                    "subscriptionGroupTable"
                ]
                return (
                    topics.get(TOPIC, {}).get("writeQueueNums") == 8
                    and "Doomed" in topics
                    and groups.get("RG", {}).get("retryMaxTimes") == 3
                    and await _query_offset(s, "RG", 2) == 7
                    and await _body(s, RequestCode.GET_ALL_DELAY_OFFSET) == master_delays
                )

            await wait_until(copied, what="topics, groups and offsets on the slave")
            assert await _body(s, RequestCode.GET_ALL_CONSUMER_OFFSET) == {
                "offsetTable": {f"{TOPIC}@RG": {"2": 7}}
            }
            # The slave delivered nothing itself.
            assert (await s.runtime_info())["scheduleDelivered"] == "0"
            assert (await m.runtime_info())["scheduleDelivered"] == "1"

            # A topic deleted on the master goes from the slave too.
            expect(
                await m.call(
                    RequestCode.DELETE_TOPIC_IN_BROKER, DeleteTopicRequestHeader(topic="Doomed")
                ),
                ResponseCode.SUCCESS,
            )

            async def gone() -> bool:
                topics = (await _body(s, RequestCode.GET_ALL_TOPIC_CONFIG))["topicConfigTable"]
                return "Doomed" not in topics

            await wait_until(gone, what="the deleted topic gone from the slave")

            # Commits to the slave: kept where the master has nothing, overwritten by the
            # master's value where it has one (RocketMQ's putAll; broker/slavesync.py).
            await _commit(s, "RG", 5, 11)
            await _commit(s, "RG", 2, 9)

            async def master_wins() -> bool:
                return await _query_offset(s, "RG", 2) == 7

            await wait_until(master_wins, what="the master's offset back on the slave")
            assert await _query_offset(s, "RG", 5) == 11
            assert await _query_offset(m, "RG", 5) is None


async def _delivered(env: BrokerEnv) -> bool:
    return (await env.runtime_info())["scheduleDelivered"] == "1"


async def test_a_slave_follows_its_master_to_a_new_address(tmp_path: Path) -> None:
    """The master restarts on new ports (--port 0): the slave learns its new HA address
    from the NameServer (it re-registers every slave_register_interval_s while cut off)."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path, slave={"register_interval_s": 60.0}) as p:
            await p.master.create_topic(TOPIC, queues=1)
            await p.master.send_ok(TOPIC, b"one")
            await p.caught_up()
            # Let the slave's registration loop settle into its 60 s period: losing the
            # master must cut it short.
            await trio.sleep(0.5)
            old = (await p.ha(p.master))["haServerAddr"]
            await p.master.restart()
            assert (await p.ha(p.master))["haServerAddr"] != old
            await p.master.send_ok(TOPIC, b"two")
            await p.caught_up()
            client = (await p.ha(p.slave))["haClientRuntimeInfo"]
            assert client["masterAddr"] == (await p.ha(p.master))["haServerAddr"]
            assert client["masterBrokerAddr"] == p.master.addr
            assert client["lastEpoch"] == 2  # the restart began epoch 2


# --- configuration ---------------------------------------------------------------------------


def test_roles_and_broker_ids_are_checked_as_rocketmq_does() -> None:
    for values in (
        {"brokerRole": "SLAVE"},  # brokerId 0
        {"brokerRole": "SLAVE", "brokerId": -1},
        {"brokerRole": "SYNC_MASTER", "brokerId": 1},
        {"brokerRole": "ASYNC_MASTER", "brokerId": 2},
    ):
        with pytest.raises(ConfigError, match=r"broker id|'brokerId' must not be negative"):
            config_from_mapping(values)
    assert config_from_mapping({"brokerRole": "SLAVE", "brokerId": 2}).broker_id == 2


def test_replication_keys_take_rocketmq_names_and_units() -> None:
    config = config_from_mapping(
        {
            "brokerRole": "SYNC_MASTER",
            "slaveTimeout": 1500,
            "haSendHeartbeatInterval": 1000,
            "haHousekeepingInterval": 8000,
            "haMaxTimeSlaveNotCatchup": 9000,
            "checkSyncStateSetPeriod": 700,
            "haTransferBatchSize": 65536,
            "haMasterAddress": "10.0.0.1:10912",
            "minInSyncReplicas": 2,
            "allAckInSyncStateSet": False,
            "inSyncReplicas": 3,
            "slaveReadEnable": True,
            "accessMessageInMemoryMaxRatio": 30,
        }
    )
    assert (config.slave_timeout_s, config.master_ha_addr) == (1.5, "10.0.0.1:10912")
    assert (config.min_in_sync_replicas, config.slave_read_enable) == (2, True)
    assert config.access_message_in_memory_max_ratio == 30.0
    ha = config.ha_config()
    assert (ha.heartbeat_interval_s, ha.ack_interval_s, ha.housekeeping_timeout_s) == (1, 1, 8)
    assert (ha.max_time_slave_not_catchup_s, ha.check_interval_s) == (9.0, 0.7)
    assert (ha.batch_bytes, ha.all_ack_in_sync_state_set, ha.in_sync_replicas) == (65536, False, 3)
    assert not ha.controller_mode
    with pytest.raises(ConfigError, match="haSendHeartbeatInterval"):
        config_from_mapping({"haSendHeartbeatInterval": 20000})  # >= housekeeping 20 s
    with pytest.raises(ConfigError, match="slave_timeout_s"):
        config_from_mapping({"slaveTimeout": 0})
