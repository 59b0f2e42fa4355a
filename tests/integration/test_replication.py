"""Master/slave replication with real ``rmq namesrv`` / ``rmq broker`` processes.

Everything goes over the wire (sends, pulls, GET_BROKER_HA_STATUS, the HA port itself),
except the comparison of replicas, which reads the CommitLog segment files on disk.
Brokers get short HA timers from a TOML file (RocketMQ key names); every process is
stopped by ``managed_process`` when its block ends, and every wait has a deadline.
"""

from __future__ import annotations

import itertools
import json
import signal
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from broker.ha.wire import Ack, SlaveHandshake
from client.consumer import ConsumeFrom, ConsumeResult, open_push_consumer
from client.message import ReceivedMessage
from launcher.ready import BROKER_READY
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import NetworkError, RemotingTimeout
from protocol.headers import QueryConsumerOffsetRequestHeader
from protocol.message import PROPERTY_KEYS, MessageRecord, decode_record
from protocol.rpc import RemotingClient, check_success, open_client
from tests.integration.broker_wire import (
    create_topic,
    pull_all,
    scan_commitlog,
    send_message,
)
from tests.support.processes import (
    ManagedProcess,
    managed_process,
    namesrv_process,
    rmq_argv,
    run_command,
)

pytestmark = pytest.mark.integration

TOPIC = "ReplTopic"
QUEUES = 4
SEGMENT_BYTES = 1024 * 1024
#: Short HA timers (RocketMQ's keys, milliseconds) and fast slave bookkeeping.
FAST_HA = {
    "haSendHeartbeatInterval": 200,
    "haHousekeepingInterval": 3000,
    "checkSyncStateSetPeriod": 200,
    "slaveTimeout": 1000,
    "mappedFileSizeCommitLog": SEGMENT_BYTES,
    "slave_register_interval_s": 0.2,
    "slave_sync_interval_s": 0.5,
    "min_free_disk_bytes": 0,
}
TEST_TIMEOUT_S = 120.0
IN_FLIGHT = 32


def write_config(path: Path, **extra: Any) -> Path:
    lines = ["[broker]"]
    for key, value in {**FAST_HA, **extra}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def broker(tmp: Path, namesrv: str, store: Path, role: str, broker_id: int, **extra: Any) -> Any:
    """``rmq broker`` of group broker-a on ``store`` with the fast timers, as a managed
    process ready once it printed its boot line."""
    store.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp / f"{store.name}-{role}-{broker_id}.toml", **extra)
    argv = rmq_argv(
        "broker",
        "-c",
        str(config),
        "--name",
        "broker-a",
        "--role",
        role,
        "--broker-id",
        str(broker_id),
        "--port",
        "0",
        "-n",
        namesrv,
        "--dir",
        str(store),
    )
    return managed_process(argv, name=f"{store.name}:{role}", ready=BROKER_READY)


# --- wire helpers -------------------------------------------------------------------------------


async def ha_status(client: RemotingClient, addr: str) -> dict[str, Any]:
    request = RemotingCommand.request(RequestCode.GET_BROKER_HA_STATUS)
    doc: dict[str, Any] = json.loads(check_success(await client.call(addr, request)).body)
    return doc


async def slave_max(client: RemotingClient, slave: ManagedProcess) -> int:
    return int((await ha_status(client, slave.address))["haClientRuntimeInfo"]["maxOffset"])


async def master_max(client: RemotingClient, master: ManagedProcess) -> int:
    return int((await ha_status(client, master.address))["masterCommitLogMaxOffset"])


async def wait_for(condition: Any, *, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll the async ``condition`` every 50 ms; fail after ``timeout_s``."""
    try:
        with trio.fail_after(timeout_s):
            while not await condition():  # noqa: ASYNC110 - state in other processes
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"{what} did not hold within {timeout_s} s") from None


async def caught_up(client: RemotingClient, master: ManagedProcess, slave: ManagedProcess) -> int:
    """Wait until the slave holds everything the master has; that offset."""
    end = 0

    async def same() -> bool:
        nonlocal end
        end = await master_max(client, master)
        return await slave_max(client, slave) == end

    await wait_for(same, what="the slave caught up")
    return end


async def in_sync(client: RemotingClient, master: ManagedProcess) -> None:
    async def member() -> bool:
        rows = (await ha_status(client, master.address)).get("haConnectionInfo", [])
        return any(r["brokerId"] == 1 and r["inSync"] for r in rows)

    await wait_for(member, what="slave 1 in the in-sync set")


async def knows_topic(client: RemotingClient, slave: ManagedProcess) -> None:
    """Wait until the slave's metadata copy has TOPIC: a topic the master created less
    than slave_sync_interval_s ago is not readable on the slave yet (RocketMQ's too)."""

    async def known() -> bool:
        request = RemotingCommand.request(RequestCode.GET_ALL_TOPIC_CONFIG)
        body = check_success(await client.call(slave.address, request)).body
        return TOPIC in json.loads(body)["topicConfigTable"]

    await wait_for(known, what=f"{TOPIC} copied to the slave")


def log_bytes(store: Path, end: int) -> bytes:
    """CommitLog bytes [0, end) read from the segment files."""
    out = bytearray()
    for seg in sorted(p for p in (store / "commitlog").iterdir() if p.name.isdigit()):
        start = int(seg.name)
        if start >= end:
            break
        assert start == len(out), (seg, len(out))
        out += seg.read_bytes()[: end - start]
    assert len(out) >= end, (store, len(out), end)
    return bytes(out[:end])


def records_on_disk(store: Path) -> tuple[list[MessageRecord], int]:
    """Every record of a (stopped or quiet) store's CommitLog, and where it ends."""
    places, end = scan_commitlog(store)
    cache: dict[Path, bytes] = {}
    out = []
    for place in places:
        data = cache.setdefault(place.segment, place.segment.read_bytes())
        record, _ = decode_record(data, place.file_pos)
        out.append(record)
    return out, end


@attrs.define
class Load:
    """Senders with ``in_flight`` requests outstanding; what was acked, and with what."""

    client: RemotingClient
    addr: str
    prefix: str
    acked: dict[str, bytes] = attrs.field(factory=dict)
    codes: dict[int, int] = attrs.field(factory=dict)
    _numbers: itertools.count[int] = attrs.field(factory=itertools.count)

    async def worker(self, count: int | None, stop: trio.Event) -> None:
        while not stop.is_set():
            n = next(self._numbers)
            if count is not None and n >= count:
                return
            key, body = f"{self.prefix}-{n:06d}", f"{self.prefix}-{n}".encode() * 80
            try:
                response = await send_message(self.client, self.addr, TOPIC, n % QUEUES, key, body)
            except (NetworkError, RemotingTimeout):
                return  # the broker is gone: the outcome of this send is unknown
            self.codes[response.code] = self.codes.get(response.code, 0) + 1
            if response.code == ResponseCode.SUCCESS:
                self.acked[key] = body

    async def run(self, count: int, in_flight: int = IN_FLIGHT) -> Load:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(self.worker, count, stop)
        return self


def keys_of(records: list[MessageRecord]) -> dict[str, bytes]:
    return {r.properties[PROPERTY_KEYS]: r.body for r in records if r.topic == TOPIC}


@asynccontextmanager
async def master_and_slave(
    tmp_path: Path, master_role: str = "ASYNC_MASTER"
) -> AsyncIterator[tuple[ManagedProcess, ManagedProcess, ManagedProcess, RemotingClient]]:
    async with (
        namesrv_process() as ns,
        open_client(default_timeout_s=10.0) as client,
        broker(tmp_path, ns.address, tmp_path / "a", master_role, 0) as master,
        broker(tmp_path, ns.address, tmp_path / "b", "SLAVE", 1) as slave,
    ):
        await create_topic(client, master.address, TOPIC, QUEUES)
        yield ns, master, slave, client


# --- tests --------------------------------------------------------------------------------------


async def test_a_late_slave_catches_up_and_a_killed_slave_resumes(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with (
            namesrv_process() as ns,
            open_client(default_timeout_s=10.0) as client,
            broker(tmp_path, ns.address, tmp_path / "a", "ASYNC_MASTER", 0) as master,
        ):
            assert master.ready is not None and master.ready.group("ha")
            await create_topic(client, master.address, TOPIC, QUEUES)
            early = await Load(client, master.address, "early").run(1500)
            assert len(early.acked) == 1500  # > 1 segment before the slave exists
            async with broker(tmp_path, ns.address, tmp_path / "b", "SLAVE", 1) as slave:
                end = await caught_up(client, master, slave)
                assert end > SEGMENT_BYTES
                assert log_bytes(tmp_path / "b", end) == log_bytes(tmp_path / "a", end)
                slave.send_signal(signal.SIGKILL)
                assert await slave.wait(10) == -signal.SIGKILL
            more = await Load(client, master.address, "more").run(500)
            assert len(more.acked) == 500
            async with broker(tmp_path, ns.address, tmp_path / "b", "SLAVE", 1) as slave:
                end = await caught_up(client, master, slave)
                assert log_bytes(tmp_path / "b", end) == log_bytes(tmp_path / "a", end)
                client_info = (await ha_status(client, slave.address))["haClientRuntimeInfo"]
                # Resumed from where the killed slave's log ended, not from 0.
                assert 0 < client_info["transferredBytes"] < end
                await knows_topic(client, slave)
                records = await pull_all(client, slave.address, TOPIC, QUEUES)
                stored = keys_of([r for queue in records.values() for r in queue])
                assert stored == {**early.acked, **more.acked}


async def test_sync_master_acked_messages_are_on_the_slave_byte_for_byte(
    tmp_path: Path,
) -> None:
    """SYNC_MASTER under load, the master killed mid-stream: every SEND_OK message is in
    the slave's CommitLog, which is a byte-for-byte prefix of the master's."""
    with trio.fail_after(TEST_TIMEOUT_S):
        async with master_and_slave(tmp_path, "SYNC_MASTER") as (_ns, master, slave, client):
            await in_sync(client, master)
            load = Load(client, master.address, "sync")
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(IN_FLIGHT):
                    nursery.start_soon(load.worker, None, stop)
                await wait_for(lambda: _at_least(load, 1500), what="1500 acked sends")
                master.send_signal(signal.SIGKILL)
                assert await master.wait(10) == -signal.SIGKILL
                stop.set()
            assert load.codes.get(ResponseCode.SUCCESS, 0) >= 1500
            await slave.stop()
        slave_records, slave_end = records_on_disk(tmp_path / "b")
        _, master_end = records_on_disk(tmp_path / "a")
        assert 0 < slave_end <= master_end
        assert log_bytes(tmp_path / "b", slave_end) == log_bytes(tmp_path / "a", slave_end)
        on_slave = keys_of(slave_records)
        missing = sorted(set(load.acked) - set(on_slave))
        assert not missing, f"{len(missing)} SEND_OK messages not on the slave: {missing[:5]}"
        assert all(on_slave[key] == body for key, body in load.acked.items())


async def _at_least(load: Load, count: int) -> bool:
    return len(load.acked) >= count


async def test_sync_master_answers_flush_slave_timeout_while_the_slave_hangs(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with master_and_slave(tmp_path, "SYNC_MASTER") as (_ns, master, slave, client):
            await in_sync(client, master)
            ok = await send_message(client, master.address, TOPIC, 0, "first", b"first")
            assert ok.code == ResponseCode.SUCCESS
            slave.send_signal(signal.SIGSTOP)  # connected, but no ack will come
            try:
                took: list[tuple[int, float]] = []

                async def send(i: int) -> None:
                    started = trio.current_time()
                    response = await send_message(
                        client, master.address, TOPIC, i % QUEUES, f"hung-{i}", b"x" * 100
                    )
                    took.append((response.code, trio.current_time() - started))

                async with trio.open_nursery() as nursery:
                    for i in range(20):
                        nursery.start_soon(send, i)
                # slaveTimeout is 1 s: answered after about that, never left hanging.
                assert {code for code, _ in took} == {ResponseCode.FLUSH_SLAVE_TIMEOUT}, took
                assert all(0.9 <= t < 5.0 for _, t in took), took
            finally:
                slave.send_signal(signal.SIGKILL)  # a stopped process still dies of this
            assert await slave.wait(10) == -signal.SIGKILL

            async def no_slave() -> bool:
                return not (await ha_status(client, master.address)).get("haConnectionInfo")

            await wait_for(no_slave, what="the master saw the slave die")
            started = trio.current_time()
            alone = await send_message(client, master.address, TOPIC, 0, "alone", b"alone")
            assert alone.code == ResponseCode.SLAVE_NOT_AVAILABLE
            assert trio.current_time() - started < 0.9
            # Stored in every case: 1 + 20 + 1 messages.
            stored = await pull_all(client, master.address, TOPIC, QUEUES)
            assert sum(len(q) for q in stored.values()) == 22


@attrs.define
class Consumed:
    keys: list[str] = attrs.field(factory=list)
    after_kill: list[str] = attrs.field(factory=list)
    killed: bool = False
    gate: trio.Event = attrs.field(factory=trio.Event)

    async def listener(self, messages: list[ReceivedMessage]) -> ConsumeResult:
        for message in messages:
            key = message.keys[0] if message.keys else ""
            if key.startswith("late") and not self.gate.is_set():
                await self.gate.wait()  # hold the queue: the rest must come from the slave
            self.keys.append(key)
            if self.killed:
                self.after_kill.append(key)
        return ConsumeResult.SUCCESS


async def test_a_push_consumer_reads_from_the_slave_while_the_master_is_down(
    tmp_path: Path,
) -> None:
    """The SDK's push consumer keeps consuming from the slave after the master is killed
    (its queues were assigned while the master lived), and commits its offsets to the
    master once it is back."""
    with trio.fail_after(TEST_TIMEOUT_S):
        async with master_and_slave(tmp_path) as (ns, master, slave, client):
            seen = Consumed()
            async with open_push_consumer(
                ns.address,
                group="FailoverGroup",
                listener=seen.listener,
                subscriptions={TOPIC: "*"},
                consume_from=ConsumeFrom.FIRST,
                max_inflight_per_queue=1,  # a held message stops its queue's pulls
                rebalance_interval_s=1.0,
                persist_interval_s=0.5,
                suspend_timeout_s=1.0,
                route_refresh_interval_s=0.5,
                pull_backoff_s=0.2,
                timeout_s=2.0,
            ):
                first = await Load(client, master.address, "early").run(40, in_flight=4)
                await wait_for(lambda: _consumed(seen, set(first.acked)), what="early consumed")
                late = await Load(client, master.address, "late").run(200, in_flight=8)
                await caught_up(client, master, slave)
                await knows_topic(client, slave)
                master.send_signal(signal.SIGKILL)
                assert await master.wait(10) == -signal.SIGKILL
                seen.killed = True
                seen.gate.set()
                await wait_for(
                    lambda: _consumed(seen, set(late.acked)),
                    timeout_s=60.0,
                    what="late messages consumed with the master down",
                )
                # At most one held message per queue came from the master before the kill.
                assert len(set(seen.after_kill) & set(late.acked)) >= 200 - QUEUES

                # The master returns (new ports): new messages reach the consumer, and its
                # offsets reach the master again.
                async with broker(tmp_path, ns.address, tmp_path / "a", "ASYNC_MASTER", 0) as back:
                    await create_topic(client, back.address, TOPIC, QUEUES)
                    last = await Load(client, back.address, "back").run(40, in_flight=4)
                    await wait_for(lambda: _consumed(seen, set(last.acked)), what="back consumed")

                    async def committed() -> bool:
                        for queue_id in range(QUEUES):
                            offset = await _committed(client, back.address, queue_id)
                            if offset is None or offset < await _queue_max(back, queue_id):
                                return False
                        return True

                    await wait_for(committed, timeout_s=30.0, what="offsets on the master")

                    async def pulls_back_on_the_master() -> bool:
                        on_master = await _held_pulls(client, back)
                        return on_master >= QUEUES and await _held_pulls(client, slave) == 0

                    # The slave sends its consumers back once it follows the master again.
                    await wait_for(pulls_back_on_the_master, what="long polls back on the master")


async def _held_pulls(client: RemotingClient, broker_proc: ManagedProcess) -> int:
    request = RemotingCommand.request(RequestCode.GET_BROKER_RUNTIME_INFO)
    body = check_success(await client.call(broker_proc.address, request)).body
    return int(json.loads(body)["table"]["heldPulls"])


async def _consumed(seen: Consumed, keys: set[str]) -> bool:
    return keys <= set(seen.keys)


async def _committed(client: RemotingClient, addr: str, queue_id: int) -> int | None:
    header = QueryConsumerOffsetRequestHeader(
        consumer_group="FailoverGroup",
        topic=TOPIC,
        queue_id=queue_id,
        set_zero_if_not_found=False,
    )
    request = RemotingCommand.request(RequestCode.QUERY_CONSUMER_OFFSET, header.to_ext_fields())
    response = await client.call(addr, request)
    if response.code != ResponseCode.SUCCESS:
        return None
    return int(response.ext_fields["offset"])


async def _queue_max(broker_proc: ManagedProcess, queue_id: int) -> int:
    async with open_client(default_timeout_s=5.0) as client:
        request = RemotingCommand.request(
            RequestCode.GET_MAX_OFFSET, {"topic": TOPIC, "queueId": str(queue_id)}
        )
        response = check_success(await client.call(broker_proc.address, request))
        return int(response.ext_fields["offset"])


async def test_an_old_master_with_a_diverged_tail_is_truncated_when_it_returns_as_slave(
    tmp_path: Path,
) -> None:
    """Static roles, promotion by configuration:

    1. A is master (epoch 1), B its slave; both hold the "common" messages.
    2. B dies; A, an ASYNC_MASTER, keeps accepting writes ("lost") that only A has.
    3. A stops. The operator restarts B with brokerId 0: B begins epoch 2 at the end of
       the common part and takes new writes ("new").
    4. A comes back as B's slave (brokerId 1). Its epoch 1 ends later than B's epoch 1:
       the consistent point is where B's epoch 2 starts, so A cuts its "lost" tail there,
       then copies epoch 2. A ends byte-identical to B.
    """
    a, b = tmp_path / "a", tmp_path / "b"
    with trio.fail_after(TEST_TIMEOUT_S * 2):
        async with namesrv_process() as ns, open_client(default_timeout_s=10.0) as client:
            async with broker(tmp_path, ns.address, a, "ASYNC_MASTER", 0) as master_a:
                await create_topic(client, master_a.address, TOPIC, QUEUES)
                async with broker(tmp_path, ns.address, b, "SLAVE", 1) as slave_b:
                    common = await Load(client, master_a.address, "common").run(300)
                    point = await caught_up(client, master_a, slave_b)
                    slave_b.send_signal(signal.SIGKILL)
                    assert await slave_b.wait(10) == -signal.SIGKILL
                lost = await Load(client, master_a.address, "lost").run(200)
                assert len(lost.acked) == 200
                a_end = await master_max(client, master_a)
                assert a_end > point
            async with broker(tmp_path, ns.address, b, "ASYNC_MASTER", 0) as master_b:
                await create_topic(client, master_b.address, TOPIC, QUEUES)
                new = await Load(client, master_b.address, "new").run(100)
                async with broker(tmp_path, ns.address, a, "SLAVE", 1) as slave_a:
                    b_end = await caught_up(client, master_b, slave_a)
                    await knows_topic(client, slave_a)
                    await slave_a.wait_for_line(
                        f"truncating the CommitLog from {a_end} to {point}", timeout_s=5.0
                    )
                    assert log_bytes(a, b_end) == log_bytes(b, b_end)
                    pulled = await pull_all(client, slave_a.address, TOPIC, QUEUES)
                    on_a = keys_of([r for q in pulled.values() for r in q])
                    assert on_a == {**common.acked, **new.acked}
                    assert not set(on_a) & set(lost.acked)
                    status = await ha_status(client, slave_a.address)
                    assert status["haClientRuntimeInfo"]["lastEpoch"] == 2
                await master_b.stop()
        records, end = records_on_disk(a)
        assert end == b_end and not set(keys_of(records)) & set(lost.acked)


async def test_bad_peers_on_the_ha_port_are_dropped_and_change_no_watermark(
    tmp_path: Path,
) -> None:
    """apache/rocketmq#3015: garbage, a wrong handshake, and acks of data never sent."""
    with trio.fail_after(TEST_TIMEOUT_S):
        async with master_and_slave(tmp_path, "SYNC_MASTER") as (_ns, master, slave, client):
            await in_sync(client, master)
            await Load(client, master.address, "before").run(100, in_flight=8)
            end = await caught_up(client, master, slave)
            before = await ha_status(client, master.address)
            assert master.ready is not None
            host, _, port = master.ready.group("ha").rpartition(":")
            liar_ack = Ack(max_offset=end).encode()
            for what, data in (
                ("garbage", b"\x00\xff" * 300),
                ("a handshake with state 7", struct.pack(">ihhq", 7, 0, 0, 9)),
                (
                    "acks past what was sent",
                    SlaveHandshake(slave_broker_id=9).encode()
                    + Ack(max_offset=0).encode()
                    + liar_ack,
                ),
            ):
                assert await _dropped(host, int(port), data), what
            after = await ha_status(client, master.address)
            assert [r["brokerId"] for r in after["haConnectionInfo"]] == [1]
            for key in ("masterCommitLogMaxOffset", "confirmOffset", "syncStateSet"):
                assert after[key] == before[key], key
            (row,) = after["haConnectionInfo"]
            (old,) = before["haConnectionInfo"]
            assert (row["slaveAckOffset"], row["addr"]) == (old["slaveAckOffset"], old["addr"])
            # Still replicating, synchronously.
            ok = await send_message(client, master.address, TOPIC, 0, "after", b"after")
            assert ok.code == ResponseCode.SUCCESS
            await caught_up(client, master, slave)


async def _dropped(host: str, port: int, data: bytes) -> bool:
    """Send ``data`` on a fresh HA connection; True when the master closes it."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(5.0):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return True
                if not chunk:
                    return True
    return False


async def test_cluster_up_sync_mode_and_ha_status(tmp_path: Path) -> None:
    root = tmp_path / "c"
    rmq_timeout_s = 120.0
    try:
        with trio.fail_after(TEST_TIMEOUT_S * 2):
            up = await run_command(
                rmq_argv(
                    "cluster",
                    "up",
                    "--mode",
                    "sync",
                    "--dir",
                    str(root),
                    "--namesrv-port",
                    "0",
                    "--no-dashboard",
                    "--no-proxy",
                ),
                timeout_s=rmq_timeout_s,
            )
            assert up.returncode == 0, up.describe()
            lines = up.stdout.splitlines()
            namesrv = lines[0].split()[1]
            roles = [tuple(line.split()[:2]) for line in lines[1:]]
            assert roles == [
                ("broker-a", "master"),
                ("broker-a-s", "slave"),
                ("broker-b", "master"),
                ("broker-b-s", "slave"),
            ], up.describe()

            async def both_in_sync() -> bool:
                done = await run_command(
                    rmq_argv("admin", "haStatus", "-c", "DefaultCluster", "-n", namesrv, "--json"),
                    timeout_s=rmq_timeout_s,
                )
                assert done.returncode == 0, done.describe()
                doc = json.loads(done.stdout)
                return sorted(d["brokerName"] for d in doc) == ["broker-a", "broker-b"] and all(
                    [(r["brokerId"], r["inSync"]) for r in d["haConnectionInfo"]] == [(1, True)]
                    for d in doc
                )

            await wait_for(both_in_sync, timeout_s=60.0, what="both slaves in sync")
            sent = await run_command(
                rmq_argv("admin", "sendMessage", "-t", "TBW102", "-p", "hi", "-n", namesrv),
                timeout_s=rmq_timeout_s,
            )
            assert sent.returncode == 0 and "SEND_OK" in sent.stdout, sent.describe()
            table = await run_command(
                rmq_argv("admin", "haStatus", "-c", "DefaultCluster", "-n", namesrv),
                timeout_s=rmq_timeout_s,
            )
            assert table.returncode == 0, table.describe()
            for column in ("#SlaveAddr", "#SlaveAckOffset", "#Diff", "#TransferSpeed(KB/s)"):
                assert column in table.stdout, table.stdout
            assert table.stdout.count("#InSyncSlaveNum: 1") == 2, table.stdout
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(60.0):
            if (root / "cluster.json").exists():
                down = await run_command(
                    rmq_argv("cluster", "down", "--dir", str(root), "--timeout", "5"),
                    timeout_s=rmq_timeout_s,
                )
                assert down.returncode == 0, down.describe()


async def test_a_slave_without_a_broker_id_is_refused_in_one_line(tmp_path: Path) -> None:
    done = await run_command(
        rmq_argv("broker", "--role", "slave", "--port", "0", "--dir", str(tmp_path / "s")),
        timeout_s=60.0,
    )
    assert done.returncode == 1, done.describe()
    assert done.stderr.splitlines() == ["error: a SLAVE needs a broker id > 0 (brokerId), not 0"], (
        done.describe()
    )
