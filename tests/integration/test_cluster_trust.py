"""Cluster-internal trust with real processes (issue 16 part 2).

``rmq cluster up --mode sync`` runs with a fresh cluster secret (its default): a forged
REGISTER_BROKER without it is refused and logged while the real master keeps its route,
and a fake HA slave that sends RocketMQ's 16-byte handshake gets the challenge and
nothing else, so its acks never complete a SYNC_MASTER send.
"""

from __future__ import annotations

import os
import re
import signal
import stat
from pathlib import Path

import pytest
import trio

from broker.ha.wire import Ack, SlaveHandshake
from client import admin
from protocol import trust
from protocol.codes import ResponseCode
from protocol.rpc import open_client
from tests.integration.broker_wire import create_topic, send_message
from tests.integration.test_cluster_cli import assert_ok, cluster_dir, rmq
from tests.support import FakeBroker, topic_config
from tests.support.processes import recorded_pids

pytestmark = pytest.mark.integration

WAIT_S = 60.0
TOPIC = "TrustTopic"
NOT_REPLICATED = (ResponseCode.SLAVE_NOT_AVAILABLE, ResponseCode.FLUSH_SLAVE_TIMEOUT)


def _address(stdout: str, pattern: str) -> str:
    match = re.search(pattern, stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


async def _fake_slave(ha_address: str, *, duration_s: float) -> bytes:
    """Connect like a RocketMQ slave without the secret: its 16-byte handshake, then acks
    claiming everything; every byte the master sends back, until it closes."""
    host, _, port = ha_address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    received = b""
    async with stream:
        await stream.send_all(SlaveHandshake(slave_broker_id=1).encode())

        async def ack_forever() -> None:
            ack = Ack(max_offset=2**40).encode()
            while True:
                await trio.sleep(0.05)
                await stream.send_all(ack)

        with trio.move_on_after(duration_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ack_forever)
                try:
                    while data := await stream.receive_some(65536):
                        received += data
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()
    return received


async def test_forged_registration_and_fake_slave_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    async with cluster_dir(root):
        up = await rmq(
            "cluster", "up", "--mode", "sync", "--dir", str(root), "--namesrv-port", "0",
            "--broker-set", "haHandshakeTimeout=1000",
        )  # fmt: skip
        stdout = assert_ok(up)
        secret_file = root / "cluster.secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        secret = secret_file.read_text().strip()
        assert secret not in (root / "cluster.json").read_text()
        assert all(secret not in " ".join(p.read_text()) for p in root.glob("*/stdout.log"))
        namesrv = _address(stdout, r"^namesrv (\S+)$")
        master = _address(stdout, r"^broker-a master (\S+)$")
        ready = (root / "broker-a" / "stdout.log").read_text()
        ha_address = _address(ready, r" ha=(\S+) ")

        with trio.fail_after(WAIT_S):
            # A send waits up to syncFlushTimeout for slave acks: room for that.
            async with open_client(name="attacker", default_timeout_s=15.0, tls=False) as client:
                # 1. A forged REGISTER_BROKER (id 0, a huge stateVersion) is refused.
                impostor = FakeBroker(
                    name="broker-a",
                    addr="127.0.0.1:1",
                    state_version=2**62,
                    topics=(topic_config(TOPIC),),
                )
                response = await client.call(namesrv, impostor.register_request())
                assert response.code == ResponseCode.NO_PERMISSION, response.remark
                assert "cluster signature" in (response.remark or "")
                info = await admin.get_cluster_info(client, [namesrv])
                assert info.broker_addr_table["broker-a"].broker_addrs[0] == master
                unregister = await client.call(namesrv, impostor.unregister_request())
                assert unregister.code == ResponseCode.NO_PERMISSION

                # 2. With its real slave gone, a SYNC_MASTER send is not acked...
                await create_topic(client, master, TOPIC, 4)
                first = await send_message(client, master, TOPIC, 0, "k0", b"replicated")
                assert first.code == ResponseCode.SUCCESS, first.remark
                os.kill(recorded_pids(root)["broker-a-s"], signal.SIGKILL)
                while True:  # the master notices the slave's connection closing
                    lone = await send_message(client, master, TOPIC, 0, "k1", b"alone")
                    if lone.code != ResponseCode.SUCCESS:
                        break
                    await trio.sleep(0.2)
                assert lone.code in NOT_REPLICATED, (lone.code, lone.remark)

                # ...and a fake slave's acks change nothing: it gets the challenge only.
                async with trio.open_nursery() as nursery:
                    got: list[bytes] = []

                    async def fake() -> None:
                        got.append(await _fake_slave(ha_address, duration_s=5.0))

                    nursery.start_soon(fake)
                    await trio.sleep(0.3)
                    during = await send_message(client, master, TOPIC, 0, "k2", b"fake ack")
                    assert during.code in NOT_REPLICATED, (during.code, during.remark)
            assert len(got[0]) == trust.HA_CHALLENGE_BYTES, got[0]
            assert got[0].startswith(trust.HA_CHALLENGE_MAGIC)

        namesrv_log = (root / "namesrv" / "stderr.log").read_text()
        assert "refused REGISTER_BROKER from" in namesrv_log
        broker_log = (root / "broker-a" / "stderr.log").read_text()
        assert "failed the cluster challenge" in broker_log
        assert secret not in namesrv_log + broker_log
