"""Administration and queries: topic configs, runtime info, stats, subscription groups,
QUERY_MESSAGE (by key and by UNIQ_KEY), VIEW_MESSAGE_BY_ID."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from protocol.bodies import SubscriptionGroupConfig, SubscriptionGroupWrapper
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import (
    DeleteSubscriptionGroupRequestHeader,
    GetConsumeStatsRequestHeader,
    GetTopicStatsInfoRequestHeader,
    QueryConsumerOffsetRequestHeader,
    QueryMessageRequestHeader,
    UpdateConsumerOffsetRequestHeader,
    ViewMessageRequestHeader,
)
from protocol.message import decode_record, iter_records, parse_offset_msg_id
from tests.component.broker_fixtures import (
    TEST_DEADLINE_S,
    BrokerEnv,
    broker_env,
    expect,
    now_ms,
)


def _json(response: RemotingCommand) -> Any:
    return json.loads(expect(response, ResponseCode.SUCCESS).body)


async def query(
    env: BrokerEnv,
    topic: str,
    key: str,
    *,
    uniq: bool = False,
    begin: int = 0,
    end: int | None = None,
) -> RemotingCommand:
    header = QueryMessageRequestHeader(
        topic=topic,
        key=key,
        max_num=64,
        begin_timestamp=begin,
        end_timestamp=now_ms() + 60_000 if end is None else end,
    )
    ext = header.to_ext_fields()
    if uniq:
        ext["_UNIQUE_KEY_QUERY"] = "true"
    return await env.call(RequestCode.QUERY_MESSAGE, ext)


async def test_all_topic_config_lists_created_and_system_topics(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("Orders", queues=3, order=True)
            body = _json(await env.call(RequestCode.GET_ALL_TOPIC_CONFIG))
            table = body["topicConfigTable"]
            orders = table["Orders"]
            assert orders["topicName"] == "Orders"
            assert (orders["readQueueNums"], orders["writeQueueNums"], orders["perm"]) == (3, 3, 6)
            assert orders["order"] is True
            for system in ("TBW102", "SCHEDULE_TOPIC_XXXX", "SELF_TEST_TOPIC", "broker-a"):
                assert system in table
            assert body["dataVersion"]["counter"] >= 1


async def test_runtime_info_counts_puts_and_offsets(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            before = await env.runtime_info()
            assert before["brokerRole"] == "ASYNC_MASTER"
            assert before["msgPutTotalTodayNow"] == "0"
            for _ in range(3):
                await env.send_ok("T", b"abc")
            after = await env.runtime_info()
            assert after["msgPutTotalTodayNow"] == "3"
            records = await env.pull_all("T", 0)
            last = records[-1]
            view = await env.call(
                RequestCode.VIEW_MESSAGE_BY_ID,
                ViewMessageRequestHeader(offset=last.physical_offset),
            )
            assert int(after["commitLogMaxOffset"]) == last.physical_offset + len(view.body)
            assert after["heldPulls"] == "0"
            assert after["diskFull"] == "false"


async def test_topic_stats_per_queue(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=3)
            for queue_id, count in ((0, 2), (2, 5)):
                for _ in range(count):
                    await env.send_ok("T", queue_id=queue_id)
            body = _json(
                await env.call(
                    RequestCode.GET_TOPIC_STATS_INFO, GetTopicStatsInfoRequestHeader(topic="T")
                )
            )
            entries = {e["messageQueue"]["queueId"]: e for e in body["offsetTable"]}
            assert sorted(entries) == [0, 1, 2]
            assert [entries[q]["maxOffset"] for q in range(3)] == [2, 0, 5]
            assert [entries[q]["minOffset"] for q in range(3)] == [0, 0, 0]
            last = (await env.pull_all("T", 2))[-1]
            assert entries[2]["lastUpdateTimestamp"] == last.store_timestamp_ms
            assert entries[1]["lastUpdateTimestamp"] == 0
            assert entries[0]["messageQueue"]["brokerName"] == "broker-a"
            missing = await env.call(
                RequestCode.GET_TOPIC_STATS_INFO, GetTopicStatsInfoRequestHeader(topic="None")
            )
            expect(missing, ResponseCode.TOPIC_NOT_EXIST)


async def test_consume_stats_show_broker_and_consumer_offsets(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            await env.heartbeat("c@1", group="G", topics={"T": "*"})
            for _ in range(4):
                await env.send_ok("T", queue_id=0)
            await env.send_ok("T", queue_id=1)
            expect(
                await env.call(
                    RequestCode.UPDATE_CONSUMER_OFFSET,
                    UpdateConsumerOffsetRequestHeader(
                        consumer_group="G", topic="T", queue_id=0, commit_offset=3
                    ),
                ),
                ResponseCode.SUCCESS,
            )
            for header in (
                GetConsumeStatsRequestHeader(consumer_group="G", topic="T"),
                GetConsumeStatsRequestHeader(consumer_group="G"),  # every topic of the group
            ):
                body = _json(await env.call(RequestCode.GET_CONSUME_STATS, header))
                entries = {
                    (e["messageQueue"]["topic"], e["messageQueue"]["queueId"]): e
                    for e in body["offsetTable"]
                }
                assert entries[("T", 0)]["brokerOffset"] == 4
                assert entries[("T", 0)]["consumerOffset"] == 3
                assert entries[("T", 1)]["brokerOffset"] == 1
                assert entries[("T", 1)]["consumerOffset"] == 0
                third = (await env.pull_all("T", 0))[2]
                assert entries[("T", 0)]["lastTimestamp"] == third.store_timestamp_ms


async def test_subscription_group_create_get_delete(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, auto_create_subscription_group=False) as env:
            config = SubscriptionGroupConfig(
                group_name="Billing", retry_max_times=5, retry_queue_nums=2, consume_enable=True
            )
            expect(
                await env.call(
                    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, config.to_bytes()
                ),
                ResponseCode.SUCCESS,
            )
            got = expect(
                await env.call(RequestCode.GET_SUBSCRIPTIONGROUP_CONFIG, {"group": "Billing"}),
                ResponseCode.SUCCESS,
            )
            assert SubscriptionGroupConfig.from_bytes(got.body) == config
            everything = SubscriptionGroupWrapper.from_bytes(
                expect(
                    await env.call(RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG),
                    ResponseCode.SUCCESS,
                ).body
            )
            assert everything.subscription_group_table["Billing"] == config
            assert "TOOLS_CONSUMER" in everything.subscription_group_table

            # The group now accepts commits; delete it with its offsets.
            await env.create_topic("T", queues=1)
            expect(
                await env.call(
                    RequestCode.UPDATE_CONSUMER_OFFSET,
                    UpdateConsumerOffsetRequestHeader(
                        consumer_group="Billing", topic="T", queue_id=0, commit_offset=1
                    ),
                ),
                ResponseCode.SUCCESS,
            )
            expect(
                await env.call(
                    RequestCode.DELETE_SUBSCRIPTIONGROUP,
                    DeleteSubscriptionGroupRequestHeader(group_name="Billing", clean_offset=True),
                ),
                ResponseCode.SUCCESS,
            )
            missing = await env.call(RequestCode.GET_SUBSCRIPTIONGROUP_CONFIG, {"group": "Billing"})
            expect(missing, ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST)
            offset = await env.call(
                RequestCode.QUERY_CONSUMER_OFFSET,
                QueryConsumerOffsetRequestHeader(
                    consumer_group="Billing", topic="T", queue_id=0, set_zero_if_not_found=False
                ),
            )
            expect(offset, ResponseCode.QUERY_NOT_FOUND)
            # Survives a restart: the delete was persisted.
            await env.restart()
            missing = await env.call(RequestCode.GET_SUBSCRIPTIONGROUP_CONFIG, {"group": "Billing"})
            expect(missing, ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST)


async def test_query_message_by_key_and_by_uniq_key(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            await env.create_topic("Other", queues=1)
            a = await env.send_ok("T", b"a", keys="order-1 shared", queue_id=0)
            b = await env.send_ok("T", b"b", keys="shared", queue_id=1)
            await env.send_ok("T", b"c", keys="order-2")
            await env.send_ok("Other", b"o", keys="shared")

            response = expect(await query(env, "T", "shared"), ResponseCode.SUCCESS)
            assert {r.msg_id for r in iter_records(response.body)} == {a.msg_id, b.msg_id}
            assert int(response.ext_fields["indexLastUpdateTimestamp"]) > 0
            assert int(response.ext_fields["indexLastUpdatePhyoffset"]) >= 0

            (only_a,) = iter_records(expect(await query(env, "T", "order-1"), 0).body)
            assert only_a.body == b"a"

            record_a = (await env.pull_all("T", 0))[0]
            assert record_a.uniq_key is not None
            by_id = expect(await query(env, "T", record_a.uniq_key, uniq=True), 0)
            assert [r.msg_id for r in iter_records(by_id.body)] == [a.msg_id]

            for missing in (
                await query(env, "T", "no-such-key"),
                await query(env, "Other", "order-1"),
                await query(env, "T", "shared", begin=0, end=1000),  # time range before them
            ):
                expect(missing, ResponseCode.QUERY_NOT_FOUND)
                assert missing.remark


async def test_a_key_longer_than_int_conversion_allows_is_indexed_and_found(
    tmp_path: Path,
) -> None:
    # Java hashes any length; ours hashed through int(..., 31), which refuses 4301+ digits:
    # the query answered "internal error" (a live fuzz found it).
    long_key = "k" * 5000
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            sent = await env.send_ok("T", b"long", keys=f"{long_key} short")
            (found,) = iter_records(expect(await query(env, "T", long_key), 0).body)
            assert found.msg_id == sent.msg_id
            expect(await query(env, "T", "x" * 5000), ResponseCode.QUERY_NOT_FOUND)


async def test_view_message_by_id(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            await env.send_ok("T", b"first")
            sent = await env.send_ok("T", b"second", tags="X")
            ip, port, offset = parse_offset_msg_id(sent.msg_id)
            assert f"{ip}:{port}" == env.addr  # the id names the broker to ask
            response = expect(
                await env.call(
                    RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageRequestHeader(offset=offset)
                ),
                ResponseCode.SUCCESS,
            )
            record, _ = decode_record(response.body)
            assert (record.body, record.tags, record.msg_id) == (b"second", "X", sent.msg_id)
            for bad in (offset + 1, offset + 10_000_000):
                miss = await env.call(
                    RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageRequestHeader(offset=bad)
                )
                expect(miss, ResponseCode.SYSTEM_ERROR)
                assert miss.remark and str(bad) in miss.remark
