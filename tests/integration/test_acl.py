"""ACL 1.0 with real processes: a NameServer and a broker with ``aclEnable``, and a
controller with ``--acl-file``; the SDK, ``rmq admin`` and raw remoting requests as an
attacker would send them (issue 16)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from client.admin import open_admin
from client.consumer.lifecycle import open_pull_consumer
from client.message import Message
from client.producer import open_producer
from launcher.ready import BROKER_READY, CONTROLLER_READY
from protocol.acl_client import open_client
from protocol.acl_sign import Credentials
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import NoPermission, RocketError
from tests.support.processes import (
    START_TIMEOUT_S,
    Completed,
    managed_process,
    namesrv_process,
    rmq_argv,
    run_command,
)

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 60.0
CLUSTER = "AclCluster"
TOPIC = "TopicAcl"
ADMIN = Credentials(access_key="rmq_admin", secret_key="admin_secret_1")
USER = Credentials(access_key="rmq_user", secret_key="user_secret_1")
PUB_ONLY = Credentials(access_key="rmq_pub_only", secret_key="pub_secret_1")
PLAIN_ACL = f"""
globalWhiteRemoteAddresses: []
accounts:
  - accessKey: {ADMIN.access_key}
    secretKey: {ADMIN.secret_key}
    admin: true
  - accessKey: {USER.access_key}
    secretKey: {USER.secret_key}
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms: ["{TOPIC}=PUB|SUB"]
  - accessKey: {PUB_ONLY.access_key}
    secretKey: {PUB_ONLY.secret_key}
    defaultGroupPerm: SUB
    topicPerms: ["{TOPIC}=PUB"]
"""


@attrs.frozen(kw_only=True)
class Cluster:
    namesrv: str
    broker: str
    namesrv_log: Path
    broker_dir: Path


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A NameServer and a broker, both with ACL on; the broker signs as the admin."""
    acl_file = tmp_path / "plain_acl.yml"
    acl_file.write_text(PLAIN_ACL)
    broker_conf = tmp_path / "broker.toml"
    broker_conf.write_text(
        f'aclEnable = true\naclFilePath = "{acl_file}"\n'
        f'accessKey = "{ADMIN.access_key}"\nsecretKey = "{ADMIN.secret_key}"\n'
    )
    log_dir = tmp_path / "ns-logs"
    with trio.fail_after(2 * START_TIMEOUT_S + 10):
        async with namesrv_process(
            "--acl-enable", "--acl-file", str(acl_file), "--log-dir", str(log_dir)
        ) as ns:
            argv = rmq_argv(
                "broker", "-c", str(broker_conf), "-n", ns.address, "--port", "0",
                "--cluster", CLUSTER, "--name", "broker-a", "--dir", str(tmp_path / "broker-a"),
            )  # fmt: skip
            async with managed_process(argv, name="broker", ready=BROKER_READY) as broker:
                yield Cluster(
                    namesrv=ns.address,
                    broker=broker.address,
                    namesrv_log=log_dir / "namesrv.log",
                    broker_dir=tmp_path / "broker-a",
                )


async def admin_cli(cluster: Cluster, creds: Credentials | None, *args: str) -> Completed:
    """``rmq admin [--access-key AK] ARGS -n NS``, the secret passed in the environment."""
    env = dict(os.environ)
    env.pop("RMQ_ACCESS_KEY", None)
    env.pop("RMQ_SECRET_KEY", None)
    account: list[str] = []
    if creds is not None:
        account = ["--access-key", creds.access_key]
        env["RMQ_SECRET_KEY"] = creds.secret_key
    argv = rmq_argv("admin", *account, *args, "-n", cluster.namesrv)
    return await run_command(argv, timeout_s=CLI_TIMEOUT_S, env=env)


async def raw_call(
    addr: str, code: int, ext: dict[str, str], creds: Credentials | None
) -> RemotingCommand:
    async with open_client(name="attacker", default_timeout_s=5.0, credentials=creds) as client:
        return await client.call(addr, RemotingCommand.request(code, ext))


async def wait_for_line(path: Path, text: str, timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while not (path.exists() and text in path.read_text()):  # noqa: ASYNC110 (a file)
            await trio.sleep(0.1)


async def test_acl_cluster_end_to_end(cluster: Cluster) -> None:
    with trio.fail_after(240):
        # The broker's own secret never leaves it (GET_BROKER_CONFIG lists its key only).
        async with open_admin(cluster.namesrv, credentials=ADMIN) as admin:
            settings = await admin.broker_config(cluster.broker)
        assert settings["accessKey"] == ADMIN.access_key and settings["aclEnable"] == "true"
        assert ADMIN.secret_key not in "".join(settings.values()) and "secretKey" not in settings
        # rmq admin with the admin account creates the topic (broker + NameServer).
        done = await admin_cli(cluster, ADMIN, "updateTopic", "-t", TOPIC, "-c", CLUSTER)
        assert done.returncode == 0, done.describe()
        assert ADMIN.secret_key not in done.stdout + done.stderr
        # Without keys rmq admin gets NO_PERMISSION, in one line.
        done = await admin_cli(cluster, None, "topicRoute", "-t", TOPIC)
        assert done.returncode == 1, done.describe()
        assert "no AccessKey" in done.stderr and "rmq admin --access-key AK" in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1

        # The SDK with an account that may publish: sends go through.
        async with open_producer(cluster.namesrv, group="PID_acl", credentials=USER) as producer:
            for i in range(3):
                result = await producer.send(Message(topic=TOPIC, body=b"m%d" % i))
                assert result.status.name == "SEND_OK"
        # ... and it may read them back.
        await _pull_all(cluster, USER, expect=3)
        # A PUB-only account cannot subscribe.
        with pytest.raises(NoPermission, match="may not subscribe to topic TopicAcl"):
            await _pull_all(cluster, PUB_ONLY, expect=3)
        # Unsigned and wrongly signed SDK clients get NO_PERMISSION.
        forged = Credentials(access_key=USER.access_key, secret_key="not_the_secret")
        for creds in (None, forged):
            with trio.fail_after(10), pytest.raises(NoPermission) as refused:  # no retry loop
                async with open_producer(
                    cluster.namesrv, group="PID_acl2", credentials=creds
                ) as producer:
                    await producer.send(Message(topic=TOPIC, body=b"x"))
            assert "AccessKey" in str(refused.value)

        await _attacks_refused(cluster)


async def _pull_all(cluster: Cluster, creds: Credentials, *, expect: int) -> None:
    async with open_pull_consumer(cluster.namesrv, group="GID_acl", credentials=creds) as c:
        total = 0
        for queue in await c.fetch_subscribe_queues(TOPIC):
            page = await c.pull(queue, 0, 32)
            total += len(page.messages)
        assert total == expect


async def _attacks_refused(cluster: Cluster) -> None:
    """Issue 16's attacks at the NameServer, without keys and with a non-admin account."""
    fake_registration = {
        "brokerName": "broker-a",
        "brokerAddr": "127.0.0.1:1",
        "clusterName": CLUSTER,
        "haServerAddr": "127.0.0.1:2",
        "brokerId": "0",
        "compressed": "false",
        "bodyCrc32": "0",
    }
    attacks = [
        (RequestCode.REGISTER_BROKER, fake_registration),
        (RequestCode.DELETE_TOPIC_IN_NAMESRV, {"topic": TOPIC}),
        (RequestCode.WIPE_WRITE_PERM_OF_BROKER, {"brokerName": "broker-a"}),
    ]
    for code, ext in attacks:
        for creds in (None, USER):
            response = await raw_call(cluster.namesrv, code, ext, creds)
            assert response.code == ResponseCode.NO_PERMISSION, (code, creds, response.remark)
    await wait_for_line(cluster.namesrv_log, "refused REGISTER_BROKER from 127.0.0.1")
    # The cluster still works: the route is intact and writable.
    async with open_producer(cluster.namesrv, group="PID_acl3", credentials=USER) as producer:
        result = await producer.send(Message(topic=TOPIC, body=b"after the attacks"))
        assert result.status.name == "SEND_OK"
    # The broker refuses a non-admin's deletes and perm changes too (perm=0: no reads or
    # writes on the topic).
    perm_zero = {"topic": TOPIC, "defaultTopic": "TBW102", "readQueueNums": "8",
                 "writeQueueNums": "8", "perm": "0", "topicFilterType": "SINGLE_TAG"}  # fmt: skip
    for code, ext in (
        (RequestCode.DELETE_TOPIC_IN_BROKER, {"topic": TOPIC}),
        (RequestCode.UPDATE_AND_CREATE_TOPIC, perm_zero),
        (RequestCode.DELETE_SUBSCRIPTIONGROUP, {"groupName": "GID_acl"}),
    ):
        response = await raw_call(cluster.broker, code, ext, USER)
        assert response.code == ResponseCode.NO_PERMISSION, (code, response.remark)
        assert response.remark is not None and "needs an admin account" in response.remark


async def test_non_loopback_bind_without_acl_warns() -> None:
    """Issue 16 part 4: a NameServer bound to every interface without ACL says so at start;
    with ACL, or on loopback, it does not."""
    with trio.fail_after(START_TIMEOUT_S + 10):
        async with namesrv_process("--host", "0.0.0.0") as ns:
            await ns.wait_for_line(re.compile("without ACL"), stream="stderr", timeout_s=10.0)
        async with namesrv_process() as ns:
            pass
    assert "without ACL" not in ns.stderr.text


async def test_namesrv_reloads_the_acl_file(tmp_path: Path) -> None:
    """A running NameServer takes a new account within its 2 s poll, and keeps it when the
    file then goes bad (one log line)."""
    acl_file = tmp_path / "plain_acl.yml"
    acl_file.write_text(PLAIN_ACL)
    acl_file.chmod(0o600)
    newcomer = Credentials(access_key="rmq_newcomer", secret_key="newcomer_secret")
    info = RequestCode.GET_BROKER_CLUSTER_INFO
    log_dir = tmp_path / "logs"
    with trio.fail_after(START_TIMEOUT_S + 30):
        async with namesrv_process("--acl-file", str(acl_file), "--log-dir", str(log_dir)) as ns:
            response = await raw_call(ns.address, info, {}, newcomer)
            assert response.code == ResponseCode.NO_PERMISSION
            assert response.remark == "ACL: no account for AccessKey rmq_newcomer"
            acl_file.write_text(
                PLAIN_ACL
                + f"  - {{accessKey: {newcomer.access_key}, secretKey: {newcomer.secret_key}}}\n"
            )
            while (await raw_call(ns.address, info, {}, newcomer)).code != ResponseCode.SUCCESS:  # noqa: ASYNC110
                await trio.sleep(0.2)
            acl_file.write_text("accounts: [ {accessKey: broken")
            await wait_for_line(log_dir / "namesrv.log", "ACL file not reloaded")
            assert (await raw_call(ns.address, info, {}, newcomer)).code == ResponseCode.SUCCESS


@pytest.mark.slow
async def test_controller_mode_cluster_with_acl(tmp_path: Path) -> None:
    """NameServer, controller and a controller-mode broker, all with ACL on: the broker
    registers with its admin account; CLEAN_BROKER_DATA, ELECT_MASTER, a broker
    registration and heartbeat from anyone else are refused and logged; sends still work
    past the 5 s after which the unguarded attack stopped every write."""
    acl_file = tmp_path / "plain_acl.yml"
    acl_file.write_text(PLAIN_ACL)
    broker_conf = tmp_path / "broker.toml"
    broker_conf.write_text(
        f'aclEnable = true\naclFilePath = "{acl_file}"\n'
        f'accessKey = "{ADMIN.access_key}"\nsecretKey = "{ADMIN.secret_key}"\n'
    )
    ctl_argv = rmq_argv(
        "controller", "--dir", str(tmp_path / "ctl"), "--port", "0", "--acl-file", str(acl_file)
    )
    with trio.fail_after(3 * START_TIMEOUT_S + 90):
        async with (
            namesrv_process("--acl-enable", "--acl-file", str(acl_file)) as ns,
            managed_process(ctl_argv, name="controller", ready=CONTROLLER_READY) as ctl,
        ):
            argv = rmq_argv(
                "broker", "-c", str(broker_conf), "-n", ns.address, "--port", "0",
                "--cluster", CLUSTER, "--name", "broker-a", "--dir", str(tmp_path / "b"),
                "--controller-addrs", ctl.address,
            )  # fmt: skip
            async with managed_process(argv, name="broker", ready=BROKER_READY):
                await _create_topic_when_master(ns.address)
                await _controller_attacks_refused(ctl.address)
                await wait_for_line(
                    tmp_path / "ctl" / "logs" / "controller.log",
                    "refused CLEAN_BROKER_DATA from 127.0.0.1",
                )
                await trio.sleep(6.0)  # the unguarded CLEAN_BROKER_DATA bit from 5 s on
                async with open_producer(ns.address, group="PID_ctl", credentials=USER) as p:
                    for i in range(3):
                        result = await p.send(Message(topic=TOPIC, body=b"after %d" % i))
                        assert result.status.name == "SEND_OK"


async def _create_topic_when_master(namesrv: str) -> None:
    """Create the topic once the controller made the broker master (retried until then)."""
    async with open_admin(namesrv, credentials=ADMIN) as admin:
        while True:
            try:
                if await admin.create_topic(TOPIC, cluster=CLUSTER):
                    return
            except RocketError:
                pass  # no master yet, or no route to one yet
            await trio.sleep(0.2)


async def _controller_attacks_refused(controller: str) -> None:
    clean = {"brokerName": "broker-a", "brokerControllerIdsToClean": "1",
             "isCleanLivingBroker": "true", "clusterName": CLUSTER}  # fmt: skip
    elect = {"clusterName": CLUSTER, "brokerName": "broker-a", "brokerId": "2",
             "designateElect": "true", "invokeTime": "0"}  # fmt: skip
    register = {"clusterName": CLUSTER, "brokerName": "broker-a", "brokerAddress": "127.0.0.1:1",
                "brokerId": "2"}  # fmt: skip
    attacks = [
        (RequestCode.CLEAN_BROKER_DATA, clean),
        (RequestCode.CONTROLLER_ELECT_MASTER, elect),
        (RequestCode.CONTROLLER_REGISTER_BROKER, register),
        (RequestCode.BROKER_HEARTBEAT, register),
    ]
    for code, ext in attacks:
        for creds in (None, USER):
            response = await raw_call(controller, code, ext, creds)
            assert response.code == ResponseCode.NO_PERMISSION, (code, creds, response.remark)
    # The admin account passes the ACL; the controller then judges the request itself
    # (broker id 2 is not in the SyncStateSet: no election happens).
    response = await raw_call(controller, RequestCode.CONTROLLER_ELECT_MASTER, elect, ADMIN)
    assert response.code != ResponseCode.NO_PERMISSION, response.remark
