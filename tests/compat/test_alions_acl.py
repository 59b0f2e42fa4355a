"""Unmodified ali-ons with its accessKey/secretKey options against servers with ACL on.

- Signatures: ali-ons' own ``Channel#beforeRequest`` (alions_sign.js) signs requests with
  numbers, booleans, non-ASCII text and binary bodies; our codec decodes the frame it
  wrote and ``signature_matches`` accepts it, and refuses it with another secret.
- End to end: an ali-ons producer and push consumer with an account send and receive
  through a NameServer and broker that check every request; with a wrong secret the
  producer is refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from protocol.acl_sign import Credentials, signature_matches
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder
from tests.compat.conftest import HERE, NODE, PRODUCE_TIMEOUT_S, alions_cluster
from tests.support.processes import run_command

if TYPE_CHECKING:
    from tests.compat.conftest import AlionsCluster

pytestmark = [pytest.mark.compat]

SIGN_JS = HERE / "alions_sign.js"
TEST_TIMEOUT_S = 90.0
TOPIC = "AclAlionsTopic"
ADMIN = Credentials(access_key="alions_admin", secret_key="admin_secret_1")
USER = Credentials(access_key="alions_user", secret_key="user_secret_1")
PLAIN_ACL = f"""
accounts:
  - accessKey: {ADMIN.access_key}
    secretKey: {ADMIN.secret_key}
    admin: true
  - accessKey: {USER.access_key}
    secretKey: {USER.secret_key}
    defaultGroupPerm: SUB
    topicPerms: ["{TOPIC}=PUB|SUB", "%RETRY%GID_acl_alions=PUB|SUB"]
"""

SIGN_CASES: list[dict[str, Any]] = [
    {"code": 105, "header": {"topic": "TopicTest"}},
    {
        "code": 310,
        "header": {"a": "PID", "b": "T", "d": 4, "g": 1733000000123, "k": False, "m": True},
        "bodyBase64": base64.b64encode(bytes(range(256))).decode(),
    },
    {"code": 11, "header": {"consumerGroup": "GID_é", "topic": "话题", "subscription": "a || b"}},
]


async def test_alions_signatures_verify(alions_installed: None, tmp_path: Path) -> None:
    assert NODE is not None
    for index, case in enumerate(SIGN_CASES):
        spec = tmp_path / f"sign-{index}.json"
        spec.write_text(json.dumps({**case, **_keys(USER)}))
        with trio.fail_after(PRODUCE_TIMEOUT_S):
            done = await run_command([NODE, str(SIGN_JS), str(spec)], cwd=HERE)
        assert done.returncode == 0, done.describe()
        out = json.loads(done.stdout.splitlines()[-1])
        [frame] = FrameDecoder(max_frame_bytes=1 << 20).feed(base64.b64decode(out["frameBase64"]))
        request = RemotingCommand.from_frame(frame)
        assert request.ext_fields["Signature"] == out["signature"]
        assert signature_matches(request.ext_fields, request.body, USER.secret_key), case
        assert not signature_matches(request.ext_fields, request.body, ADMIN.secret_key)


def _keys(creds: Credentials) -> dict[str, str]:
    return {"accessKey": creds.access_key, "secretKey": creds.secret_key}


@pytest.fixture
async def acl_alions(alions_installed: None, tmp_path: Path) -> AsyncIterator[AlionsCluster]:
    acl_file = tmp_path / "plain_acl.yml"
    acl_file.write_text(PLAIN_ACL)
    async with alions_cluster(tmp_path, acl_file=acl_file, admin=ADMIN) as cluster:
        yield cluster


async def test_alions_with_keys_produces_and_consumes(acl_alions: AlionsCluster) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        await acl_alions.create_topic(TOPIC)
        acl_alions.account = USER
        messages = [
            acl_alions.message(topic=TOPIC, body=b"acl %d" % i, tags="TagA") for i in range(3)
        ]
        sent = await acl_alions.produce(messages, group="PID_acl_alions")
        async with acl_alions.consumer("GID_acl_alions", [(TOPIC, "*")]) as run:
            await run.wait_messages(len(messages), timeout_s=30.0)
            await run.close()
        assert {m["msgId"] for m in run.messages()} >= {s.msg_id for s in sent}


async def test_alions_with_a_wrong_secret_is_refused(acl_alions: AlionsCluster) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        await acl_alions.create_topic(TOPIC)
        acl_alions.account = Credentials(access_key=USER.access_key, secret_key="wrong_secret")
        with pytest.raises(AssertionError, match="signature check failed"):
            await acl_alions.produce([acl_alions.message(topic=TOPIC, body=b"x")])
