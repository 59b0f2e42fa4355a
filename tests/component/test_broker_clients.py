"""HEART_BEAT (34), UNREGISTER_CLIENT (35), GET_CONSUMER_LIST_BY_GROUP (38), the broker's
NOTIFY_CONSUMER_IDS_CHANGED (40) pushes, and LOCK_BATCH_MQ / UNLOCK_BATCH_MQ (41, 42)."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from protocol.bodies import (
    ConsumerConnection,
    ConsumerListBody,
    LockBatchRequestBody,
    LockBatchResponseBody,
    UnlockBatchRequestBody,
)
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import GetConsumerListByGroupRequestHeader, UnregisterClientRequestHeader
from protocol.route import MessageQueue
from protocol.rpc import Connection, open_client
from tests.component.broker_fixtures import (
    TEST_DEADLINE_S,
    Arrivals,
    BrokerEnv,
    broker_env,
    expect,
    json_frame,
    raw_exchange,
    wait_until,
)

#: A heartbeat body as ali-ons 3.x writes it (JSON.stringify of its HeartbeatData).
ALI_ONS_HEARTBEAT = {
    "clientID": "10.0.0.5@4242",
    "producerDataSet": [{"groupName": "CLIENT_INNER_PRODUCER"}],
    "consumerDataSet": [
        {
            "groupName": "GID_ALI",
            "consumeType": "CONSUME_PASSIVELY",
            "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
            "subscriptionDataSet": [
                {
                    "classFilterMode": False,
                    "topic": "T",
                    "subString": "TagA || TagB",
                    "tagsSet": ["TagA", "TagB"],
                    "codeSet": [2598919, 2598920],  # Java hashCode of each tag
                    "subVersion": 1_700_000_000_000,
                }
            ],
            "unitMode": False,
        }
    ],
}


async def consumer_ids(env: BrokerEnv, group: str) -> list[str] | None:
    """The broker's member list, or None on its "no consumer" SYSTEM_ERROR."""
    response = await env.call(
        RequestCode.GET_CONSUMER_LIST_BY_GROUP,
        GetConsumerListByGroupRequestHeader(consumer_group=group),
    )
    if response.code == ResponseCode.SYSTEM_ERROR:
        assert response.remark and "no consumer" in response.remark
        return None
    expect(response, ResponseCode.SUCCESS)
    return list(ConsumerListBody.from_bytes(response.body).consumer_id_list)


async def test_ali_ons_heartbeat_registers_consumer_and_creates_retry_topic(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            assert await consumer_ids(env, "GID_ALI") is None
            # Sent raw, numbers and all, with ali-ons' header (version 121, JAVA).
            header = {"code": 34, "extFields": {}, "flag": 0, "language": "JAVA",
                      "opaque": 5, "version": 121}  # fmt: skip
            body = json.dumps(ALI_ONS_HEARTBEAT).encode()
            (response,) = await raw_exchange(env.addr, json_frame(header, body))
            expect(response, ResponseCode.SUCCESS)
            # The raw connection closed after the exchange, so the member is gone again:
            # register over our long-lived client instead and check what stuck.
            expect(await env.call(RequestCode.HEART_BEAT, None, body), ResponseCode.SUCCESS)
            assert await consumer_ids(env, "GID_ALI") == ["10.0.0.5@4242"]
            route = await env.wait_route("%RETRY%GID_ALI", queues=1)
            assert route["queueDatas"][0]["perm"] == 6
            listing = expect(
                await env.call(
                    RequestCode.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": "GID_ALI"}
                ),
                ResponseCode.SUCCESS,
            )
            connection = ConsumerConnection.from_bytes(listing.body)
            assert [c.client_id for c in connection.connection_set] == ["10.0.0.5@4242"]
            (sub,) = connection.subscription_table.values()
            assert sub.tags_set == ("TagA", "TagB")
            # The registered subscription filters pulls that do not carry one.
            for tags in ("TagA", "TagC", "TagB"):
                await env.send_ok("T", tags.encode(), tags=tags)
            pulled = await env.pull("T", 0, 0, group="GID_ALI", subscription=None, sys_flag=0)
            assert [r.body for r in pulled.records] == [b"TagA", b"TagB"]


async def test_consumer_list_and_notifications_as_members_come_and_go(tmp_path: Path) -> None:
    notified: Arrivals[tuple[str, str]] = Arrivals()

    async def on_notify(request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
        assert request.is_oneway
        notified.add(("first", request.ext_fields["consumerGroup"]))
        return None

    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(
            tmp_path, client_handlers={RequestCode.NOTIFY_CONSUMER_IDS_CHANGED: on_notify}
        ) as env:
            await env.create_topic("T", queues=4)
            await env.heartbeat("first@1", group="G", topics={"T": "*"})
            assert await consumer_ids(env, "G") == ["first@1"]
            await notified.wait_for(1, timeout_s=3.0)  # told of its own join

            async with open_client(name="second") as second:
                await env.heartbeat("second@2", group="G", topics={"T": "*"}, client=second)
                assert await notified.wait_for(2, timeout_s=3.0) == [("first", "G")] * 2
                assert await consumer_ids(env, "G") == ["first@1", "second@2"]
                # A repeated heartbeat changes nothing: nobody is notified.
                await env.heartbeat("second@2", group="G", topics={"T": "*"}, client=second)
                await env.heartbeat("first@1", group="G", topics={"T": "*"})
                assert await consumer_ids(env, "G") == ["first@1", "second@2"]
                assert len(notified.items) == 2
            # The second client's connection closed: it left the group, the first is told.
            await wait_until(lambda: _list_is(env, "G", ["first@1"]), what="closed member removed")
            await notified.wait_for(3, timeout_s=3.0)  # told the second one left

            # UNREGISTER_CLIENT removes the last member: the group has no consumer.
            response = await env.call(
                RequestCode.UNREGISTER_CLIENT,
                UnregisterClientRequestHeader(client_id="first@1", consumer_group="G"),
            )
            expect(response, ResponseCode.SUCCESS)
            assert await consumer_ids(env, "G") is None


async def _list_is(env: BrokerEnv, group: str, ids: list[str] | None) -> bool:
    return await consumer_ids(env, group) == ids


async def test_unregister_client_keeps_other_members(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env, open_client(name="b") as other:
            await env.heartbeat("a@1", group="G", topics={"T": "*"}, producer_group="PG")
            await env.heartbeat("b@2", group="G", topics={"T": "*"}, client=other)
            expect(
                await env.call(
                    RequestCode.UNREGISTER_CLIENT,
                    UnregisterClientRequestHeader(
                        client_id="b@2", consumer_group="G", producer_group="PG"
                    ),
                ),
                ResponseCode.SUCCESS,
            )
            assert await consumer_ids(env, "G") == ["a@1"]


async def test_broadcasting_consumer_gets_no_retry_topic(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.heartbeat("c@1", group="BG", topics={"T": "*"}, broadcasting=True)
            assert await consumer_ids(env, "BG") == ["c@1"]
            table = json.loads((await env.call(RequestCode.GET_ALL_TOPIC_CONFIG)).body)
            assert "%RETRY%BG" not in table["topicConfigTable"]


async def test_lock_and_unlock_batch(tmp_path: Path) -> None:
    mqs = tuple(MessageQueue(topic="T", broker_name="broker-a", queue_id=i) for i in range(3))

    async def lock(env: BrokerEnv, client_id: str, queues: tuple[MessageQueue, ...]) -> set[int]:
        body = LockBatchRequestBody(consumer_group="OG", client_id=client_id, mq_set=queues)
        response = expect(
            await env.call(RequestCode.LOCK_BATCH_MQ, None, body.to_bytes()),
            ResponseCode.SUCCESS,
        )
        return {
            mq.queue_id for mq in LockBatchResponseBody.from_bytes(response.body).lock_ok_mq_set
        }

    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=3)
            assert await lock(env, "a@1", mqs[:2]) == {0, 1}
            # Another client gets only the free queue; a renewal keeps the owner's.
            assert await lock(env, "b@2", mqs) == {2}
            assert await lock(env, "a@1", mqs) == {0, 1}
            # Unlocking someone else's queue does nothing.
            body = UnlockBatchRequestBody(consumer_group="OG", client_id="b@2", mq_set=mqs[:1])
            expect(
                await env.call(RequestCode.UNLOCK_BATCH_MQ, None, body.to_bytes()),
                ResponseCode.SUCCESS,
            )
            assert await lock(env, "b@2", mqs) == {2}
            body = UnlockBatchRequestBody(consumer_group="OG", client_id="a@1", mq_set=mqs[:1])
            expect(
                await env.call(RequestCode.UNLOCK_BATCH_MQ, None, body.to_bytes()),
                ResponseCode.SUCCESS,
            )
            assert await lock(env, "b@2", mqs) == {0, 2}


async def test_heartbeat_for_a_group_that_may_not_be_created(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, auto_create_subscription_group=False) as env:
            await env.create_topic("T", queues=1)
            # As RocketMQ: the unknown consumer group is skipped, the heartbeat succeeds.
            await env.heartbeat("c@1", group="Unknown", topics={"T": "*"}, producer_group="PG")
            assert await consumer_ids(env, "Unknown") is None
            table = json.loads((await env.call(RequestCode.GET_ALL_TOPIC_CONFIG)).body)
            assert "%RETRY%Unknown" not in table["topicConfigTable"]
            pulled = await env.pull("T", 0, 0, group="Unknown")
            expect(pulled.response, ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST)
            # A predefined group registers normally.
            await env.heartbeat("c@1", group="TOOLS_CONSUMER", topics={"T": "*"})
            assert await consumer_ids(env, "TOOLS_CONSUMER") == ["c@1"]
