"""TLS on every port with real processes (issue 16 part 3).

``rmq cluster up --mode controller --tls``: the SDK (``$RMQ_TLS*``) and ``rmq admin
--tls`` work end to end through a SIGKILL of the master and the election after it; a
plain-TCP client is refused; the controller refuses an unsigned CLEAN_BROKER_DATA and
ELECT_MASTER over TLS, and ``rmq admin --cluster-secret-file`` signs them.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import trio

from client.consumer import ConsumeFrom, ConsumeResult, open_push_consumer
from client.message import Message, ReceivedMessage, SendStatus
from client.producer import open_producer
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError
from protocol.headers import ElectMasterRequestHeader
from protocol.rpc import open_client
from tests.integration.test_cluster_cli import assert_ok, cluster_dir, read_record, rmq
from tests.support.processes import rmq_argv, run_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC = "TlsTopic"
WAIT_S = 120.0


def _tls_env(root: Path) -> dict[str, str]:
    tls = root / "tls"
    return {
        "RMQ_TLS": "1",
        "RMQ_TLS_CA_FILE": str(tls / "ca.pem"),
        "RMQ_TLS_CERT_FILE": str(tls / "client.pem"),
        "RMQ_TLS_KEY_FILE": str(tls / "client.key"),
    }


async def _admin(root: Path, *args: str, secret: bool = False) -> tuple[int, str, str]:
    tls = root / "tls"
    options = ["--tls", "--tls-ca", str(tls / "ca.pem")]
    if secret:
        options += ["--cluster-secret-file", str(root / "cluster.secret")]
    done = await run_command(rmq_argv("admin", *options, *args), timeout_s=60)
    return done.returncode, done.stdout, done.stderr


async def _master(root: Path, controllers: str, ns: str) -> tuple[int, str]:
    """broker-a's master (id, address) as ``rmq admin --tls getSyncStateSet`` shows it."""
    code, out, err = await _admin(
        root, "getSyncStateSet", "-a", controllers, "-b", "broker-a", "-n", ns, "--json"
    )
    assert code == 0, err
    info = json.loads(out)["broker-a"]
    return int(info["masterBrokerId"]), str(info["masterAddress"])


async def test_sdk_and_admin_over_tls_through_a_failover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cluster_dir(tmp_path / "c") as root:
        up = await rmq(
            "cluster", "up", "--mode", "controller", "--tls", "--dir", str(root),
            "--namesrv-port", "0",
        )  # fmt: skip
        stdout = assert_ok(up)
        namesrv = re.search(r"^namesrv (\S+)$", stdout, re.MULTILINE)
        assert namesrv, stdout
        ns = namesrv.group(1)
        controllers = ";".join(
            n["address"] for n in read_record(root)["nodes"] if n["kind"] == "controller"
        )
        # Plain TCP to the NameServer: refused, one line.
        plain = await run_command(rmq_argv("admin", "clusterList", "-n", ns, "--timeout", "2"))
        assert plain.returncode == 1, plain.describe()
        assert plain.stderr.startswith("error: ") and len(plain.stderr.splitlines()) == 1
        for name, value in _tls_env(root).items():
            monkeypatch.setenv(name, value)
        code, _out, err = await _admin(
            root, "updateTopic", "-t", TOPIC, "-c", "DefaultCluster", "-n", ns
        )
        assert code == 0, err

        received: set[str] = set()

        async def listener(messages: list[ReceivedMessage]) -> ConsumeResult:
            received.update(m.body.decode() for m in messages)
            return ConsumeResult.SUCCESS

        acked: list[str] = []
        with trio.fail_after(WAIT_S):
            async with (
                open_producer(ns, group="tls-producer", timeout_s=3.0) as producer,
                open_push_consumer(
                    ns,
                    group="tls-consumer",
                    listener=listener,
                    subscriptions={TOPIC: "*"},
                    consume_from=ConsumeFrom.FIRST,
                    rebalance_interval_s=1.0,
                    route_refresh_interval_s=0.5,
                    timeout_s=2.0,
                ),
            ):

                async def send(body: str) -> bool:
                    try:
                        result = await producer.send(Message(topic=TOPIC, body=body.encode()))
                    except RocketError:
                        return False
                    if result.status == SendStatus.SEND_OK:
                        acked.append(body)
                    return result.status == SendStatus.SEND_OK

                for i in range(50):
                    assert await send(f"before-{i}")
                # No wait for the slaves' metadata copy (every 3 s): the new master takes
                # the topic's 8 queues from its replicated records (broker/topics.py).
                before = await _master(root, controllers, ns)
                pids = {n["address"]: int(n["pid"]) for n in read_record(root)["nodes"]}
                os.kill(pids[before[1]], signal.SIGKILL)
                while not await send("after-kill"):  # noqa: ASYNC110 - the new master
                    await trio.sleep(0.2)
                for i in range(50):
                    await send(f"after-{i}")
                while not set(acked) <= received:  # noqa: ASYNC110 - other tasks consume
                    await trio.sleep(0.2)
        assert len(acked) >= 100

        after = await _master(root, controllers, ns)
        assert after[0] != before[0], (before, after)

        # The controller over TLS: unsigned ELECT_MASTER refused; signed by admin, answered.
        code, out, err = await _admin(
            root, "electMaster", "-a", controllers, "-b", str(after[0]),
            "-bn", "broker-a", "-c", "DefaultCluster", "-n", ns,
        )  # fmt: skip
        assert code == 1 and "NO_PERMISSION" in err, (out, err)
        code, out, err = await _admin(
            root, "electMaster", "-a", controllers, "-b", str(after[0]),
            "-bn", "broker-a", "-c", "DefaultCluster", "-n", ns, secret=True,
        )  # fmt: skip
        assert code == 0, err
        async with open_client(name="forger") as client:  # TLS from the environment
            leader = controllers.split(";")
            header = ElectMasterRequestHeader(
                cluster_name="DefaultCluster", broker_name="broker-a", broker_id=1,
                designate_elect=True,
            )  # fmt: skip
            answers = []
            for addr in leader:
                response = await client.call(
                    addr,
                    RemotingCommand.request(
                        RequestCode.CONTROLLER_ELECT_MASTER, header.to_ext_fields()
                    ),
                )
                answers.append(response.code)
            assert set(answers) == {ResponseCode.NO_PERMISSION}, answers
        logs = "".join((root / n / "stderr.log").read_text() for n in ("n0", "n1", "n2"))
        assert "refused CONTROLLER_ELECT_MASTER" in logs


async def test_demo_runs_with_tls(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    try:
        argv = rmq_argv("demo", "--tls", "--dir", str(root), "--seconds", "10", "--rate", "100")
        done = await run_command(
            [*argv, "--seed", "7", "--keep-data"],
            timeout_s=240,
        )
    finally:
        if (root / "cluster" / "cluster.json").exists():
            await run_command(rmq_argv("cluster", "down", "--dir", str(root / "cluster")))
    assert done.returncode == 0, done.describe()
    last = done.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 lost"), done.describe()
    assert (root / "cluster" / "tls" / "ca.pem").is_file()
    namesrv_log = (root / "cluster" / "namesrv" / "stderr.log").read_text()
    assert "TLS handshake" not in namesrv_log, namesrv_log[-2000:]
