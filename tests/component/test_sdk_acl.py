"""The SDK's push consumer and producer with ACL credentials, against an in-process
NameServer and broker with ACL on (the guard and the signing client in one process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from broker.config import BrokerConfig
from broker.server import Broker
from client.admin import open_admin
from client.consumer import open_push_consumer
from client.message import Message
from client.producer import open_producer
from namesrv.server import NameServer, NameServerConfig
from protocol.acl_sign import Credentials, signed_ext_fields
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.rpc import open_client
from tests.component.sdk_fixtures import wait_until
from tests.component.test_sdk_consumer import FAST, Collector

ADMIN = Credentials(access_key="sdk_admin", secret_key="sdk_admin_secret")
USER = Credentials(access_key="sdk_user", secret_key="sdk_user_secret")
PUB_ONLY = Credentials(access_key="sdk_pub_only", secret_key="sdk_pub_secret")
TOPIC = "AclPush"
PLAIN_ACL = f"""
accounts:
  - {{accessKey: {ADMIN.access_key}, secretKey: {ADMIN.secret_key}, admin: true}}
  - accessKey: {USER.access_key}
    secretKey: {USER.secret_key}
    defaultGroupPerm: SUB
    topicPerms: ["{TOPIC}=PUB|SUB"]
  - accessKey: {PUB_ONLY.access_key}
    secretKey: {PUB_ONLY.secret_key}
    defaultGroupPerm: SUB
    topicPerms: ["{TOPIC}=PUB"]
"""


async def test_push_consumer_with_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acl_file = tmp_path / "plain_acl.yml"
    acl_file.write_text(PLAIN_ACL)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            namesrv = NameServer(NameServerConfig(port=0, acl_enable=True, acl_file=str(acl_file)))
            ns = f"127.0.0.1:{await nursery.start(namesrv.serve)}"
            broker = Broker(
                BrokerConfig(
                    broker_name="broker-a",
                    namesrv_addrs=(ns,),
                    listen_port=0,
                    ha_port=0,
                    store_dir=tmp_path / "broker-a",
                    commitlog_segment_bytes=8 * 1024 * 1024,
                    acl_enable=True,
                    acl_file_path=str(acl_file),
                    access_key=ADMIN.access_key,
                    secret_key=ADMIN.secret_key,
                )
            )
            await nursery.start(broker.serve)
            async with open_admin(ns, credentials=ADMIN) as admin:
                await admin.create_topic(TOPIC, broker_addr=broker.address)
            got, ordered, refused = Collector(), Collector(), Collector()
            async with (
                open_producer(ns, group="PID_acl", credentials=USER) as producer,
                open_push_consumer(
                    ns, group="GID_acl", listener=got, subscriptions={TOPIC: "*"},
                    credentials=USER, **FAST,
                ),
                open_push_consumer(
                    ns, group="GID_acl_orderly", listener=ordered, subscriptions={TOPIC: "*"},
                    credentials=USER, orderly=True, **FAST,
                ),
                open_push_consumer(
                    ns, group="GID_pub_only", listener=refused, subscriptions={TOPIC: "*"},
                    credentials=PUB_ONLY, **FAST,
                ),
            ):  # fmt: skip
                bodies = [b"acl-%d" % i for i in range(5)]
                for body in bodies:
                    await producer.send(Message(topic=TOPIC, body=body))
                await wait_until(lambda: got.count() == 5, timeout_s=20, what="5 consumed")
                assert sorted(got.bodies) == sorted(bodies)
                # An orderly consumer locks its queues (LOCK_BATCH_MQ) with the same account.
                await wait_until(lambda: ordered.count() == 5, timeout_s=20, what="5 in order")
            # The PUB-only consumer got nothing: its heartbeats and pulls were refused.
            assert refused.count() == 0
            assert broker.acl is not None and broker.acl.refused > 0
            assert "AccessKey sdk_pub_only may not subscribe to topic AclPush" in caplog.text
            await _send_back_names_its_topic_under_acl(broker.address)
            nursery.cancel_scope.cancel()


async def _send_back_names_its_topic_under_acl(broker_addr: str) -> None:
    """With ACL on, CONSUMER_SEND_MSG_BACK must name the message's topic (which the ACL
    then checks): without it any topic's message could be copied into a retry topic."""
    async with open_client(name="raw") as client:

        async def send_back(**origin: str) -> RemotingCommand:
            ext = {"offset": "0", "group": "GID_acl", "delayLevel": "0", **origin}
            request = RemotingCommand.request(
                RequestCode.CONSUMER_SEND_MSG_BACK, signed_ext_fields(ext, b"", USER)
            )
            return await client.call(broker_addr, request, timeout_s=5)

        missing = await send_back()
        assert missing.code == ResponseCode.NO_PERMISSION, missing.remark
        assert "needs originTopic" in (missing.remark or "")
        named = await send_back(originTopic=TOPIC)  # offset 0: the first message sent
        assert named.code == ResponseCode.SUCCESS, named.remark
