"""Timer messages with real processes: a timer survives a broker kill -9 and restart, and a
controller-mode failover, and fires within a second of its due time (the store timestamp of
the delivered copy against TIMER_DELIVER_MS; both clocks are this machine's)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio

from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError
from protocol.headers import SendMessageRequestHeaderV2
from protocol.message import MessageRecord
from protocol.rpc import RemotingClient, open_client
from tests.component.broker_fixtures import message_properties, send_header
from tests.integration.broker_wire import broker_process, create_topic, pull_queue
from tests.integration.test_cluster_cli import assert_ok, cluster_dir, read_record, rmq
from tests.support.processes import namesrv_process

pytestmark = pytest.mark.integration

TOPIC = "TimerTopic"
CALL_TIMEOUT_S = 3.0


def now_ms() -> int:
    return int(time.time() * 1000)


async def send_timer(client: RemotingClient, addr: str, body: bytes, due_ms: int) -> int:
    """SEND_MESSAGE_V2 with TIMER_DELIVER_MS; the response code (-1: no answer)."""
    props = message_properties(keys=body.decode(), extra={"TIMER_DELIVER_MS": str(due_ms)})
    header = send_header(TOPIC, properties=props, queue_id=0)
    request = RemotingCommand.request(
        RequestCode.SEND_MESSAGE_V2,
        SendMessageRequestHeaderV2.from_v1(header).to_ext_fields(),
        body,
    )
    try:
        return (await client.call(addr, request, timeout_s=CALL_TIMEOUT_S)).code
    except RocketError:
        return -1


async def wait_delivered(
    client: RemotingClient, addr: str, count: int, wait_s: float
) -> list[MessageRecord]:
    with trio.fail_after(wait_s):
        while True:
            try:
                records = await pull_queue(client, addr, TOPIC, 0)
            except (RocketError, AssertionError):
                records = []  # the topic or queue is not there yet
            if len(records) >= count:
                return records
            await trio.sleep(0.1)


def assert_on_time(records: list[MessageRecord], due_ms: int) -> None:
    for record in records:
        late_ms = record.store_timestamp_ms - due_ms
        assert 0 <= late_ms <= 1000, (record.body, late_ms)


async def test_timers_survive_kill_9_and_restart(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with trio.fail_after(120):
        async with namesrv_process() as ns, open_client(default_timeout_s=15.0) as client:
            async with broker_process(ns.address, store) as broker:
                await create_topic(client, broker.address, TOPIC, 1)
                due_ms = now_ms() + 8000
                for i in range(5):
                    assert await send_timer(client, broker.address, b"t%d" % i, due_ms) == 0
                assert await pull_queue(client, broker.address, TOPIC, 0) == []
                broker.send_signal(signal.SIGKILL)
                assert await broker.wait(10) == -signal.SIGKILL
            async with broker_process(ns.address, store) as broker:
                assert now_ms() < due_ms, "the restart took longer than the delay"
                records = await wait_delivered(client, broker.address, 5, 15)
                await trio.sleep(1.0)
                records = await pull_queue(client, broker.address, TOPIC, 0)
                assert sorted(r.body for r in records) == [b"t%d" % i for i in range(5)]
                assert_on_time(records, due_ms)


@pytest.mark.slow
async def test_timers_resume_on_the_new_master_after_kill_9(tmp_path: Path) -> None:
    async with cluster_dir(tmp_path / "c") as root:
        done = await rmq(
            "cluster", "up", "--mode", "controller", "--dir", str(root), "--namesrv-port", "0"
        )
        lines = assert_ok(done).splitlines()
        addrs = [line.split()[2] for line in lines if line.startswith("broker-a-")]
        pids = {n["address"]: int(n["pid"]) for n in read_record(root)["nodes"] if n["address"]}
        async with open_client(name="timer-failover", default_timeout_s=CALL_TIMEOUT_S) as client:
            master = None
            with trio.fail_after(30):
                while master is None:
                    for addr in addrs:
                        if await send_timer(client, addr, b"probe", now_ms() + 500) == 0:
                            master = addr
                            break
                    else:
                        await trio.sleep(0.2)
            due_ms = now_ms() + 15_000
            for i in range(5):
                assert await send_timer(client, master, b"f%d" % i, due_ms) == 0
            # The probe was delivered by the old master; its checkpoint reaches the slaves
            # within slave_sync_interval_s (3 s).
            await wait_delivered(client, master, 1, 10)
            await trio.sleep(4.0)
            os.kill(pids[master], signal.SIGKILL)
            addrs.remove(master)
            new_master = None
            with trio.fail_after(30):
                while new_master is None:
                    for addr in addrs:
                        if await send_timer(client, addr, b"after", now_ms() - 1) == 0:
                            new_master = addr
                            break
                    else:
                        await trio.sleep(0.1)
            assert now_ms() < due_ms, "the election took longer than the delay"
            records = await wait_delivered(client, new_master, 7, 30)
            await trio.sleep(1.0)
            records = await pull_queue(client, new_master, TOPIC, 0)
            bodies = sorted(r.body for r in records)
            assert bodies == sorted([b"probe", b"after"] + [b"f%d" % i for i in range(5)]), bodies
            assert_on_time([r for r in records if r.body.startswith(b"f")], due_ms)
