"""Controller mode with real processes: ``rmq cluster up --mode controller``, kill -9 the
master under a stream of sends → a SyncStateSet member takes over, no SEND_OK is lost.

The sender tries the broker it last saw as master first, then the others: a slave and a
fenced broker answer SERVICE_NOT_AVAILABLE, a dead one refuses the connection.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError
from protocol.headers import PullMessageRequestHeader, SendMessageRequestHeaderV2
from protocol.message import iter_records
from protocol.rpc import RemotingClient, open_client
from tests.component.broker_fixtures import message_properties, send_header
from tests.integration.test_cluster_cli import assert_ok, cluster_dir, read_record, rmq

pytestmark = pytest.mark.integration

TOPIC = "FailoverTopic"
CALL_TIMEOUT_S = 3.0
FLAG_SUBSCRIPTION = 0x4


async def _send(client: RemotingClient, addr: str, body: bytes) -> int:
    header = send_header(TOPIC, properties=message_properties(), queue_id=0)
    request = RemotingCommand.request(
        RequestCode.SEND_MESSAGE_V2,
        SendMessageRequestHeaderV2.from_v1(header).to_ext_fields(),
        body,
    )
    try:
        return (await client.call(addr, request, timeout_s=CALL_TIMEOUT_S)).code
    except RocketError:
        return -1


async def _pull_bodies(client: RemotingClient, addr: str) -> list[bytes]:
    bodies: list[bytes] = []
    offset = 0
    for _ in range(1000):
        header = PullMessageRequestHeader(
            consumer_group="CG",
            topic=TOPIC,
            queue_id=0,
            queue_offset=offset,
            max_msg_nums=32,
            sys_flag=FLAG_SUBSCRIPTION,
            commit_offset=0,
            suspend_timeout_millis=0,
            sub_version=int(time.time() * 1000),
            subscription="*",
            expression_type="TAG",
        )
        request = RemotingCommand.request(RequestCode.PULL_MESSAGE, header.to_ext_fields())
        response = await client.call(addr, request, timeout_s=CALL_TIMEOUT_S)
        if response.code != ResponseCode.SUCCESS:
            assert response.code == ResponseCode.PULL_NOT_FOUND, (response.code, response.remark)
            return bodies
        bodies.extend(r.body for r in iter_records(response.body))
        offset = int(response.ext_fields["nextBeginOffset"])
    raise AssertionError("the queue never ended")


async def test_kill_9_the_master_a_member_takes_over_and_no_send_ok_is_lost(
    tmp_path: Path,
) -> None:
    async with cluster_dir(tmp_path / "c") as root:
        done = await rmq(
            "cluster", "up", "--mode", "controller", "--dir", str(root), "--namesrv-port", "0"
        )
        lines = assert_ok(done).splitlines()
        replicas = [line.split() for line in lines if line.startswith("broker-a-")]
        assert len(replicas) == 3 and all(r[1] == "replica" for r in replicas), done.describe()
        addrs = [r[2] for r in replicas]
        pids = {n["address"]: int(n["pid"]) for n in read_record(root)["nodes"] if n["address"]}
        acked: list[bytes] = []
        async with open_client(name="failover-test", default_timeout_s=CALL_TIMEOUT_S) as client:
            master: str | None = None

            async def send_one(body: bytes) -> str | None:
                order = [master] + [a for a in addrs if a != master] if master else addrs
                for addr in order:
                    if addr is not None and await _send(client, addr, body) == ResponseCode.SUCCESS:
                        acked.append(body)
                        return addr
                return None

            with trio.fail_after(30):
                while master is None:
                    master = await send_one(b"first")
                    if master is None:
                        await trio.sleep(0.1)
            for i in range(200):
                master = await send_one(b"before %d" % i) or master
            old_master = master
            os.kill(pids[old_master], signal.SIGKILL)
            killed_at = time.monotonic()
            addrs.remove(old_master)
            master = None
            with trio.fail_after(20):
                while master is None:
                    master = await send_one(b"after kill")
                    if master is None:
                        await trio.sleep(0.05)
            took_s = time.monotonic() - killed_at
            for i in range(200):
                master = await send_one(b"after %d" % i) or master
            print(f"kill -9 of the master → first SEND_OK on {master} after {took_s:.2f} s")
            assert took_s < 10.0, took_s
            stored = await _pull_bodies(client, master)
        missing = [b for b in acked if b not in set(stored)]
        assert not missing, f"{len(missing)} of {len(acked)} SEND_OK messages lost: {missing[:5]}"
