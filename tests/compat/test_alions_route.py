"""ali-ons (the pure-JavaScript RocketMQ client, unmodified) reads routes from our NameServer.

The driver ``alions_route.js`` calls ali-ons' own ``MQClientAPI.getTopicRouteInfoFromNameServer``
(its JSON2 parser, its sorting, its error mapping) and prints what ali-ons returned.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from namesrv.server import NameServer, NameServerConfig
from protocol.codes import PERM_READ, ResponseCode
from protocol.rpc import RemotingClient, open_client
from tests.support import FakeBroker, topic_config
from tests.support.processes import run_command

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "alions_route.js"
NODE = shutil.which("node")
ALIONS = HERE / "node_modules" / "ali-ons" / "lib" / "mq_client_api.js"

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(NODE is None, reason="node (Node.js) is not on PATH"),
    pytest.mark.skipif(
        not ALIONS.is_file(),
        reason="ali-ons is not installed: run `npm ci` in tests/compat (.ci/run does)",
    ),
]

#: One node run: start-up, a few requests, close; generous for a slow machine.
NODE_TIMEOUT_S = 60.0
#: ali-ons' own per-request timeout.
ALIONS_TIMEOUT_MS = 10_000

MASTER_A = FakeBroker(
    name="broker-a",
    addr="127.0.0.1:10911",
    topics=(topic_config("AlionsTopic", 4), topic_config("AlionsShared", 2)),
)
SLAVE_A = FakeBroker(name="broker-a", broker_id=1, addr="127.0.0.1:20911", topics=MASTER_A.topics)
MASTER_B = FakeBroker(
    cluster="OtherCluster",
    name="broker-b",
    addr="127.0.0.1:30911",
    topics=(topic_config("AlionsShared", 8, perm=PERM_READ),),
)


@pytest.fixture
async def namesrv(nursery: trio.Nursery) -> str:
    port = await nursery.start(NameServer(NameServerConfig(port=0)).serve)
    return f"127.0.0.1:{port}"


@pytest.fixture
async def client() -> AsyncIterator[RemotingClient]:
    async with open_client(name="fake-broker", default_timeout_s=10.0) as c:
        yield c


async def alions_routes(namesrv: str, *topics: str) -> list[dict[str, Any]]:
    """What ali-ons answered for each topic, in order (one node process, killed on timeout)."""
    assert NODE is not None
    done = await run_command(
        [NODE, str(DRIVER), namesrv, str(ALIONS_TIMEOUT_MS), *topics],
        timeout_s=NODE_TIMEOUT_S,
        cwd=HERE,
    )
    assert done.returncode == 0, done.describe()
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["topic"] for a in answers] == list(topics), done.describe()
    return answers


def assert_topic_not_exist(answer: dict[str, Any]) -> None:
    assert answer["ok"] is False, answer
    assert answer["name"] == "MQClientException", answer
    assert answer["code"] == 17  # ResponseCode.TOPIC_NOT_EXIST, as ali-ons reports it
    assert answer["topic"] in answer["message"], answer


async def test_alions_reads_routes_as_registered(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(3 * NODE_TIMEOUT_S):
        # Before any broker registered: TOPIC_NOT_EXIST, ali-ons' error names the topic.
        (before,) = await alions_routes(namesrv, "AlionsTopic")
        assert_topic_not_exist(before)

        # Registered out of name order: ali-ons sorts by brokerName, so must we.
        for broker in (MASTER_B, MASTER_A, SLAVE_A):
            await broker.register(client, namesrv)
        topic, shared, unknown = await alions_routes(
            namesrv, "AlionsTopic", "AlionsShared", "NoSuchTopic"
        )

        assert topic["ok"] is True, topic
        assert topic["route"] == MASTER_A.route_json("AlionsTopic", SLAVE_A)
        assert topic["route"]["brokerDatas"][0]["brokerAddrs"] == {
            "0": MASTER_A.addr,
            "1": SLAVE_A.addr,
        }
        assert shared["ok"] is True, shared
        assert shared["route"] == {
            "queueDatas": [
                MASTER_A.queue_data_json("AlionsShared"),
                MASTER_B.queue_data_json("AlionsShared"),
            ],
            "brokerDatas": [MASTER_A.broker_data_json(SLAVE_A), MASTER_B.broker_data_json()],
            "filterServerTable": {},
        }
        assert [q["perm"] for q in shared["route"]["queueDatas"]] == [6, PERM_READ]
        assert [q["writeQueueNums"] for q in shared["route"]["queueDatas"]] == [2, 8]
        assert_topic_not_exist(unknown)


async def test_alions_sees_a_withdrawn_route_disappear(
    namesrv: str, client: RemotingClient
) -> None:
    with trio.fail_after(3 * NODE_TIMEOUT_S):
        await MASTER_A.register(client, namesrv)
        (present,) = await alions_routes(namesrv, "AlionsTopic")
        assert present["ok"] is True and present["route"] == MASTER_A.route_json("AlionsTopic")

        response = await client.call(namesrv, MASTER_A.unregister_request())
        assert response.code == ResponseCode.SUCCESS
        (gone,) = await alions_routes(namesrv, "AlionsTopic")
        assert_topic_not_exist(gone)
