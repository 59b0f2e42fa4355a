"""The broker's stats codes (28, 315, 317, 204, 25, 26) and its scrape-time metrics."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import trio

from broker.metrics import broker_registry
from broker.processors.stats import UNTRACKED_RUNTIME_KEYS
from broker.stats import TOPIC_PUT_NUMS
from cli.metrics_http import serve_metrics
from protocol.codes import RequestCode, ResponseCode
from tests.component.broker_fixtures import broker_env, expect
from tests.support.scrape import samples, scrape_text, value

TEST_DEADLINE_S = 30.0
#: Every key rocketmq-exporter's BrokerRuntimeStats parses (it fails on a missing one).
EXPORTER_KEYS = (
    "msgPutTotalTodayNow", "putMessageDistributeTime", "putTps", "getMissTps",
    "getTransferredTps", "getTotalTps", "getFoundTps", "commitLogDirCapacity",
    "sendThreadPoolQueueHeadWaitTimeMills", "queryThreadPoolQueueHeadWaitTimeMills",
    "remainHowManyDataToFlush", "msgGetTotalTodayNow", "queryThreadPoolQueueSize",
    "bootTimestamp", "msgPutTotalYesterdayMorning", "msgGetTotalYesterdayMorning",
    "pullThreadPoolQueueSize", "commitLogMinOffset", "pullThreadPoolQueueHeadWaitTimeMills",
    "runtime", "dispatchMaxBuffer", "brokerVersion", "consumeQueueDiskRatio",
    "pageCacheLockTimeMills", "commitLogDiskRatio", "commitLogMaxOffset",
    "getMessageEntireTimeMax", "msgPutTotalTodayMorning", "putMessageTimesTotal",
    "msgGetTotalTodayMorning", "brokerVersionDesc", "sendThreadPoolQueueSize",
    "startAcceptSendRequestTimeStamp", "putMessageEntireTimeMax", "earliestMessageTimeStamp",
    "remainTransientStoreBufferNumbs", "queryThreadPoolQueueCapacity", "putMessageAverageSize",
    "dispatchBehindBytes", "putMessageSizeTotal", "sendThreadPoolQueueCapacity",
    "pullThreadPoolQueueCapacity", "putLatency99", "putLatency999",
)  # fmt: skip


async def test_runtime_info_has_every_key_the_exporter_parses_in_its_format(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            for _ in range(3):
                await env.send_ok("T", b"abc")
            table = await env.runtime_info()
            assert [k for k in EXPORTER_KEYS if k not in table] == []
            # The parses rocketmq-exporter does, on our values.
            for key in ("putTps", "getTotalTps", "getFoundTps", "getTransferredTps"):
                assert len([float(x) for x in table[key].split(" ")]) == 3, table[key]
            cap = table["commitLogDirCapacity"].split(" ")
            assert cap[0:2] == ["Total", ":"] and cap[4:6] == ["Free", ":"], cap
            float(cap[2]), float(cap[6])
            assert re.fullmatch(r"[KMGTPE]iB,|B,", cap[3]) and cap[7].endswith(".")
            assert float(table["remainHowManyDataToFlush"].split(" ")[0]) >= 0
            assert 0 <= float(table["commitLogDiskRatio"]) <= 1
            float(table["putMessageAverageSize"])
            assert table["msgPutTotalTodayNow"] == table["putMessageTimesTotal"] == "3"
            assert int(table["earliestMessageTimeStamp"]) > 0
            assert re.fullmatch(r"\[ 0 days, 0 hours, 0 minutes, \d+ seconds \]", table["runtime"])
            for key, untracked in UNTRACKED_RUNTIME_KEYS.items():
                assert table[key] == untracked
            schedule = [v for k, v in table.items() if k.startswith("scheduleMessageOffset_")]
            assert all(re.fullmatch(r"-?\d+,-?\d+", v) for v in schedule), schedule


async def test_view_broker_stats_data_and_broker_consume_stats(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            missing = await env.call(
                RequestCode.VIEW_BROKER_STATS_DATA, {"statsName": TOPIC_PUT_NUMS, "statsKey": "T"}
            )
            assert missing.code == ResponseCode.SYSTEM_ERROR
            assert missing.remark == f"The stats <{TOPIC_PUT_NUMS}> <T> not exist"
            env.b.stats.sample(trio.current_time(), env.b.clock.wall_ms())
            env.b.stats.on_put("T", 5, 500)  # what the send path's call site does
            found = expect(
                await env.call(
                    RequestCode.VIEW_BROKER_STATS_DATA,
                    {"statsName": TOPIC_PUT_NUMS, "statsKey": "T"},
                ),
                ResponseCode.SUCCESS,
            )
            body = json.loads(found.body)
            assert set(body) == {"statsMinute", "statsHour", "statsDay"}
            assert body["statsMinute"]["sum"] == 5 and body["statsMinute"]["avgpt"] == 5.0

            sent = [await env.send_ok("T", b"x") for _ in range(4)]
            await env.heartbeat("c1", group="G", topics={"T": "*"})
            queue = sent[0].queue_id
            await env.call(
                RequestCode.UPDATE_CONSUMER_OFFSET,
                {"consumerGroup": "G", "topic": "T", "queueId": str(queue), "commitOffset": "1"},
            )
            stats = expect(
                await env.call(RequestCode.GET_BROKER_CONSUME_STATS, {"isOrder": "false"}),
                ResponseCode.SUCCESS,
            )
            listing = json.loads(stats.body)
            assert listing["brokerAddr"] == env.addr
            groups = {g: v for entry in listing["consumeStatsList"] for g, v in entry.items()}
            (consume,) = groups["G"]
            behind = sum(e["brokerOffset"] - e["consumerOffset"] for e in consume["offsetTable"])
            assert listing["totalDiff"] == behind == 3


async def test_producer_connections_and_broker_config(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            gone = await env.call(RequestCode.GET_PRODUCER_CONNECTION_LIST, {"producerGroup": "P"})
            assert gone.code == ResponseCode.SYSTEM_ERROR
            await env.heartbeat("p1", producer_group="P")
            listing = expect(
                await env.call(RequestCode.GET_PRODUCER_CONNECTION_LIST, {"producerGroup": "P"}),
                ResponseCode.SUCCESS,
            )
            assert [c["clientId"] for c in json.loads(listing.body)["connectionSet"]] == ["p1"]

            config = expect(await env.call(RequestCode.GET_BROKER_CONFIG), ResponseCode.SUCCESS)
            lines = dict(line.split("=", 1) for line in config.body.decode().splitlines())
            assert lines["brokerName"] == "broker-a" and lines["slaveTimeout"] == "3000"
            assert lines["autoCreateTopicEnable"] == "true"
            update = await env.call(
                RequestCode.UPDATE_BROKER_CONFIG,
                None,
                b"slaveTimeout=1500\nautoCreateTopicEnable=false\n",
            )
            assert update.code == ResponseCode.SUCCESS, update.remark
            assert env.b.config.slave_timeout_s == 1.5
            assert env.b.config.auto_create_topic_enable is False
            # The running broker acts on it: a send to a new topic no longer creates it.
            fresh = await env.send("FreshTopic")
            assert fresh.code == ResponseCode.TOPIC_NOT_EXIST, (fresh.code, fresh.remark)
            assert env.b.topics.get("FreshTopic") is None
            refused = await env.call(RequestCode.UPDATE_BROKER_CONFIG, None, b"brokerName=b\n")
            assert refused.code == ResponseCode.NO_PERMISSION
            assert "brokerName" in (refused.remark or "")
            assert env.b.config.broker_name == "broker-a"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b"maxMessageSize=NaN", "maxMessageSize"),
        (b"listenPort=1e400", "listenPort"),
        (b"syncFlushTimeout=-5000", "syncFlushTimeout"),
        (b"slaveTimeout=" + b"9" * 5000, "slaveTimeout"),
        (b"request_timeout_s=1_000", "request_timeout_s"),
    ],
    ids=["nan", "inf", "negative", "5000-digits", "underscore"],
)
async def test_update_broker_config_refuses_numbers_no_setting_can_hold(
    tmp_path: Path, body: bytes, key: str
) -> None:
    # Each answered "internal error" (NaN, inf, 5000 digits) or was taken (a negative
    # timeout, which Trio refuses at its next use as a deadline); found by a live fuzz.
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            before = env.b.config
            refused = await env.call(RequestCode.UPDATE_BROKER_CONFIG, None, body)
            assert refused.code == ResponseCode.SYSTEM_ERROR
            assert key in (refused.remark or "") and "internal error" not in (refused.remark or "")
            assert env.b.config == before
            await env.create_topic("T", queues=1)
            await env.send_ok("T")


async def test_broker_metrics_follow_topics_puts_and_lag(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env, trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(serve_metrics, broker_registry(env.b), host="127.0.0.1", port=0)
            )
            address = f"127.0.0.1:{port}"
            before = samples(await scrape_text(address))
            await env.create_topic("T", queues=1)
            for _ in range(3):
                sent = await env.send_ok("T", b"abcd")
            await env.heartbeat("c1", group="G", topics={"T": "*"})
            pulled = await env.pull("T", sent.queue_id, 0, group="G")
            assert len(pulled.records) == 3
            await env.call(
                RequestCode.UPDATE_CONSUMER_OFFSET,
                {
                    "consumerGroup": "G",
                    "topic": "T",
                    "queueId": str(sent.queue_id),
                    "commitOffset": "1",
                },
            )
            await trio.sleep(0.05)  # the oldest unconsumed message is at least this old
            after = samples(await scrape_text(address))
            node = {"cluster": "DefaultCluster", "node_type": "broker", "node_id": "broker-a"}
            topics = len(env.b.topics.topics())
            assert value(before, "rocketmq_topic_number", **node) < topics
            assert value(after, "rocketmq_topic_number", **node) == topics
            assert value(after, "rocketmq_messages_in_total", topic="T", **node) == 3
            # Stored bytes (RocketMQ's wroteBytes): the whole records, as the store counts them.
            stored = int((await env.runtime_info())["putMessageSizeTotal"])
            assert stored > 12
            assert value(after, "rocketmq_throughput_in_total", topic="T", **node) == stored
            assert (
                value(
                    after, "rocketmq_consumer_lag_messages", topic="T", consumer_group="G", **node
                )
                == 2
            )
            group_t = {"topic": "T", "consumer_group": "G", **node}
            assert 50 <= value(after, "rocketmq_consumer_lag_latency", **group_t) < 30_000
            # Pulled up to 3, committed 1: two messages in flight.
            assert value(after, "rocketmq_consumer_inflight_messages", **group_t) == 2
            # Three puts of small messages: all in the first size bucket (1 KiB).
            size = functools.partial(value, after, topic="T", **node)
            assert size("rocketmq_message_size_bucket", le="1024.0") == 3
            assert size("rocketmq_message_size_bucket", le="+Inf") == 3
            assert size("rocketmq_message_size_count") == 3
            assert size("rocketmq_message_size_sum") == stored  # single messages: sum = bytes
            # Every request is timed, by request and response code (the three sends: 310).
            sends = {"request_code": "310", "response_code": "0", "protocol_type": "remoting"}
            assert value(after, "rocketmq_rpc_latency_count", **sends, **node) == 3
            assert value(after, "rocketmq_rpc_latency_bucket", le="+Inf", **sends, **node) == 3
            assert 0 < value(after, "rocketmq_rpc_latency_sum", **sends, **node) < 3 * 10_000
            assert value(after, "rocketmq_storage_size", **node) > 0
            assert value(after, "rocketmq_broker_role", **node) == 1
            assert value(after, "rocketmq_broker_accepts_writes", **node) == 1
            nursery.cancel_scope.cancel()


async def test_a_thousand_sends_add_a_thousand_to_their_topic_and_pulls_to_their_group(
    tmp_path: Path,
) -> None:
    """rocketmq_messages_in_total follows the send path (issue 18's "metric values follow
    what was done"), on the topic's own label only; messages_out follows the pull path."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env, trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(serve_metrics, broker_registry(env.b), host="127.0.0.1", port=0)
            )
            address = f"127.0.0.1:{port}"
            await env.create_topic("Hot", queues=1)
            await env.create_topic("Cold", queues=1)
            await env.send_ok("Cold", b"x")
            node = {"cluster": "DefaultCluster", "node_type": "broker", "node_id": "broker-a"}
            before = samples(await scrape_text(address))
            for _ in range(1000):
                await env.send_ok("Hot", b"0123456789")
            after = samples(await scrape_text(address))
            grown = value(after, "rocketmq_messages_in_total", topic="Hot", **node) - value(
                before, "rocketmq_messages_in_total", topic="Hot", **node
            )
            assert grown == 1000
            assert value(after, "rocketmq_messages_in_total", topic="Cold", **node) == 1
            assert value(before, "rocketmq_messages_out_total", topic="Hot", **node) == 0
            pulled = await env.pull_all("Hot", group="CG")
            assert len(pulled) == 1000
            read = samples(await scrape_text(address))
            out = functools.partial(value, read, topic="Hot", consumer_group="CG", **node)
            assert out("rocketmq_messages_out_total") == 1000
            assert out("rocketmq_throughput_out_total") > 1000 * 10
            nursery.cancel_scope.cancel()


async def test_query_topic_consume_by_who_names_subscribers_and_offset_holders(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            await env.heartbeat("c1", group="Online", topics={"T": "*"})
            await env.send_ok("T", b"x")
            # A group that subscribes elsewhere now, but holds an offset of T.
            await env.heartbeat("c2", group="Offline", topics={"Other": "*"})
            committed = await env.call(
                RequestCode.UPDATE_CONSUMER_OFFSET,
                {"consumerGroup": "Offline", "topic": "T", "queueId": "0", "commitOffset": "1"},
            )
            expect(committed, ResponseCode.SUCCESS)

            async def who(topic: str) -> list[str]:
                answer = expect(
                    await env.call(RequestCode.QUERY_TOPIC_CONSUME_BY_WHO, {"topic": topic}),
                    ResponseCode.SUCCESS,
                )
                groups: list[str] = json.loads(answer.body)["groupList"]
                return groups

            assert await who("T") == ["Offline", "Online"]
            assert await who("Nobody") == []
