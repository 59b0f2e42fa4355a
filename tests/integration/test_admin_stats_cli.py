"""``rmq admin`` statistics and settings commands (statsAll, brokerConsumeStats,
consumerConnection, producerConnection, getBrokerConfig, updateBrokerConfig) against a
real ``rmq namesrv`` and ``rmq broker`` carrying real SDK traffic."""

from __future__ import annotations

import json
import re

import pytest
import trio

from client.consumer import ConsumeFrom, ConsumeResult, open_push_consumer
from client.message import Message, ReceivedMessage
from client.producer import open_producer

# The live NameServer + broker fixture and the CLI helpers of the other admin tests.
from tests.integration.test_admin_cli import (
    CLUSTER,
    Cluster,
    cluster,  # noqa: F401 (a fixture)
    ok,
    rmq,
)
from tests.integration.test_admin_cli import one_line_error as refused

pytestmark = pytest.mark.integration

TEST_TIMEOUT_S = 120.0
TOPIC = "StatsTopic"
SENT = 7


def words(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.strip()]


async def test_stats_and_connections_follow_real_traffic(cluster: Cluster) -> None:  # noqa: F811
    with trio.fail_after(TEST_TIMEOUT_S):
        ok(await rmq(cluster, "updateTopic", "-t", TOPIC, "-c", CLUSTER, "-r", "1", "-w", "1"))
        consumed: list[ReceivedMessage] = []
        done = trio.Event()

        async def listener(messages: list[ReceivedMessage]) -> ConsumeResult:
            consumed.extend(messages)
            if len(consumed) >= SENT:
                done.set()
            return ConsumeResult.SUCCESS

        async with (
            open_producer(cluster.namesrv, group="StatsProducer", heartbeat_interval_s=1.0) as p,
            open_push_consumer(
                cluster.namesrv,
                group="StatsGroup",
                listener=listener,
                subscriptions={TOPIC: "*"},
                consume_from=ConsumeFrom.FIRST,
                rebalance_interval_s=1.0,
                heartbeat_interval_s=1.0,
                persist_interval_s=0.5,
                suspend_timeout_s=1.0,
            ),
        ):
            for i in range(SENT):
                await p.send(Message(topic=TOPIC, body=f"m{i}".encode()))
            await done.wait()
            await trio.sleep(1.5)  # the consumer commits its offsets (every 0.5 s)

            stats = words(ok(await rmq(cluster, "statsAll", "-t", TOPIC)))
            assert stats[0] == ["#Topic", "#Consumer", "Group", "#Accumulation", "#InTPS",
                                "#OutTPS", "#InMsg24Hour", "#OutMsg24Hour"]  # fmt: skip
            (row,) = stats[1:]
            assert row[0:3] == [TOPIC, "StatsGroup", "0"], row
            assert float(row[3]) > 0 and float(row[4]) > 0, row
            assert row[5:] == [str(SENT), str(SENT)], row

            lag = ok(await rmq(cluster, "brokerConsumeStats", "-b", cluster.broker))
            table = words(lag)
            assert table[0][:2] == ["#Topic", "#Group"]
            mine = [r for r in table if r[0] == TOPIC]
            assert [r[:7] for r in mine] == [
                [TOPIC, "StatsGroup", "broker-a", "0", str(SENT), str(SENT), "0"]
            ]
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", mine[0][7])
            assert table[-1] == ["Diff", "Total:", "0"]

            consumers = ok(await rmq(cluster, "consumerConnection", "-g", "StatsGroup"))
            first = consumers.splitlines()[0].split()
            assert first[0] == "001" and first[2].startswith("127.0.0.1:"), consumers
            assert re.fullmatch(r"V\d+_\d+_\d+", first[4]), consumers
            # The group's retry topic is subscribed too, as RocketMQ's clients do.
            assert re.search(rf"^\d{{3}}  Topic: {TOPIC} +SubExpression: \*$", consumers, re.M)
            assert "MessageModel: CLUSTERING" in consumers

            producers = ok(
                await rmq(cluster, "producerConnection", "-g", "StatsProducer", "-t", TOPIC)
            )
            (line,) = producers.splitlines()
            assert line.split()[0] == "0001" and "127.0.0.1:" in line, producers
        refused(await rmq(cluster, "producerConnection", "-g", "NobodyHere"), "NobodyHere")


async def test_broker_config_is_read_and_changed_live(cluster: Cluster) -> None:  # noqa: F811
    with trio.fail_after(TEST_TIMEOUT_S):

        def settings(out: str, banner: str) -> dict[str, str]:
            """getBrokerConfig's ``key   =  value`` lines under ``banner``."""
            lines = out.splitlines()
            assert lines[0] == banner, out
            pairs = [line.partition("=  ") for line in lines[1:] if line]
            return {k.strip(): v for k, _, v in pairs}

        by_addr = f"============{cluster.broker}============"
        before = settings(ok(await rmq(cluster, "getBrokerConfig", "-b", cluster.broker)), by_addr)
        assert before["brokerName"] == "broker-a" and before["brokerClusterName"] == CLUSTER
        assert before["slaveReadEnable"] == "false" and before["slaveTimeout"] == "3000"
        out = ok(
            await rmq(
                cluster, "updateBrokerConfig", "-b", cluster.broker,
                "-k", "slaveReadEnable", "-v", "true",
            )
        )  # fmt: skip
        assert out == f"update broker config success, {cluster.broker}\n"
        # The running broker's own value now, read back from it (by cluster this time).
        by_cluster = f"============Master: {cluster.broker}============"
        after = settings(ok(await rmq(cluster, "getBrokerConfig", "-c", CLUSTER)), by_cluster)
        assert after["slaveReadEnable"] == "true"

        update = ("updateBrokerConfig", "-b", cluster.broker)
        refused(await rmq(cluster, *update, "-k", "brokerName", "-v", "b"), "brokerName", "restart")
        refused(await rmq(cluster, *update, "-k", "noSuchKey", "-v", "1"), "noSuchKey")
        refused(await rmq(cluster, *update, "-k", "slaveTimeout", "-v", "soon"), "slaveTimeout")
        refused(await rmq(cluster, "updateBrokerConfig", "-k", "a", "-v", "b"), "-b", "-c")
        last = ok(await rmq(cluster, "getBrokerConfig", "-b", cluster.broker, "--json"))
        unchanged = json.loads(last)[cluster.broker]
        assert unchanged["brokerName"] == "broker-a" and unchanged["slaveTimeout"] == "3000"
