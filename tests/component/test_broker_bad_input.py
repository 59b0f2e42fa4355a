"""Bad requests get RocketMQ's response code and a remark, and the broker keeps serving.

After every refusal the same client sends and pulls a good message on the same connection
(``still_serving``): one bad request must never cost anyone else anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from protocol.batch_body import BatchItem, encode_batch_body
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.frame import encode_frame
from protocol.headers import (
    ConsumerSendMsgBackRequestHeader,
    CreateTopicRequestHeader,
    SendMessageRequestHeaderV2,
    ViewMessageRequestHeader,
)
from protocol.message import parse_offset_msg_id
from tests.component.broker_fixtures import (
    TEST_DEADLINE_S,
    BrokerEnv,
    broker_env,
    expect,
    json_frame,
    raw_exchange,
    send_header,
)

MAX_BODY = 64 * 1024


async def still_serving(env: BrokerEnv, topic: str = "T") -> None:
    sent = await env.send_ok(topic, b"good", queue_id=0)
    pulled = await env.pull(topic, 0, sent.queue_offset)
    expect(pulled.response, ResponseCode.SUCCESS)
    assert pulled.records[0].msg_id == sent.msg_id


def refused(response: RemotingCommand, code: int, *words: str) -> None:
    """The response has ``code`` and a remark naming every one of ``words``."""
    expect(response, code)
    assert response.remark, f"code {code} without a remark"
    for word in words:
        assert word in response.remark, (word, response.remark)


def one_queue_topic(topic: str, filter_type: str = "SINGLE_TAG") -> CreateTopicRequestHeader:
    return CreateTopicRequestHeader(
        topic=topic,
        default_topic="TBW102",
        read_queue_nums=1,
        write_queue_nums=1,
        perm=6,
        topic_filter_type=filter_type,
    )


@pytest.fixture
async def env(tmp_path: Path) -> Any:
    async with broker_env(
        tmp_path, auto_create_topic_enable=False, max_message_bytes=MAX_BODY
    ) as env:
        await env.create_topic("T", queues=4)
        yield env


async def test_unknown_topic(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        refused(await env.send("Unknown"), ResponseCode.TOPIC_NOT_EXIST, "Unknown")
        refused((await env.pull("Unknown")).response, ResponseCode.TOPIC_NOT_EXIST, "Unknown")
        await still_serving(env)


async def test_oversize_message_body_batch_and_properties(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        await env.send_ok("T", b"x" * MAX_BODY)  # exactly the limit is fine
        refused(await env.send("T", b"x" * (MAX_BODY + 1)), ResponseCode.MESSAGE_ILLEGAL)
        items = [BatchItem(body=b"y" * (MAX_BODY // 2 + 1)) for _ in range(2)]
        header = SendMessageRequestHeaderV2.from_v1(send_header("T", batch=True))
        refused(
            await env.call(RequestCode.SEND_BATCH_MESSAGE, header, encode_batch_body(items)),
            ResponseCode.MESSAGE_ILLEGAL,
        )
        huge = {"big": "p" * 33_000}
        refused(await env.send("T", b"x", properties=huge), ResponseCode.MESSAGE_ILLEGAL)
        assert len(await env.pull_all("T", 0)) == 1  # only the message at the limit
        await still_serving(env)


async def test_bad_queue_id(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        refused(await env.send("T", queue_id=4), ResponseCode.INVALID_PARAMETER, "queueId[4]")
        refused((await env.pull("T", 7)).response, ResponseCode.INVALID_PARAMETER, "queueId[7]")
        refused((await env.pull("T", -1)).response, ResponseCode.INVALID_PARAMETER)
        await still_serving(env)


@pytest.mark.parametrize(
    "topic",
    ["bad topic", "semi;colon", "x" * 128, "ünïcode", ""],
    ids=["space", "semicolon", "too-long", "non-ascii", "blank"],
)
async def test_illegal_topic_name(env: BrokerEnv, topic: str) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        # RocketMQ 5.3 answers INVALID_PARAMETER for both send and topic creation.
        refused(await env.send(topic), ResponseCode.INVALID_PARAMETER, "topic")
        refused(
            await env.call(RequestCode.UPDATE_AND_CREATE_TOPIC, one_queue_topic(topic)),
            ResponseCode.INVALID_PARAMETER,
        )
        await still_serving(env)


async def test_an_unknown_topic_filter_type_is_refused_and_registration_goes_on(
    env: BrokerEnv,
) -> None:
    # Stored, it made every NameServer refuse the broker's whole registration body, so
    # no topic created after it got a route (found by a live fuzz of every request code).
    with trio.fail_after(TEST_DEADLINE_S):
        refused(
            await env.call(RequestCode.UPDATE_AND_CREATE_TOPIC, one_queue_topic("F", "T")),
            ResponseCode.INVALID_PARAMETER,
            "topicFilterType",
        )
        assert env.b.topics.get("F") is None
        await env.create_topic("AFTER", queues=2)
        assert await env.route("AFTER") is not None
        await still_serving(env)


async def test_system_topics_refuse_direct_sends(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        for topic in ("SCHEDULE_TOPIC_XXXX", "RMQ_SYS_TRANS_HALF_TOPIC"):
            refused(
                await env.send(topic, properties={"REAL_TOPIC": "T", "REAL_QID": "0"}),
                ResponseCode.NO_PERMISSION,
                topic,
            )
        await still_serving(env)


async def test_malformed_properties_in_the_header(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        # Junk that RocketMQ's tolerant parser skips: the message is stored, junk dropped.
        for junk in ("no separators at all", "\x02\x02\x01\x01", "k\x01\x02\x01v\x02"):
            header = SendMessageRequestHeaderV2.from_v1(send_header("T", queue_id=1))
            ext = {**header.to_ext_fields(), "i": junk}
            expect(await env.call(RequestCode.SEND_MESSAGE_V2, ext, b"j"), ResponseCode.SUCCESS)
        for record in await env.pull_all("T", 1):
            assert set(record.properties) == {"UNIQ_KEY", "CLUSTER"}
        # A DELAY that is not a level is illegal.
        refused(
            await env.send("T", properties={"DELAY": "soon"}),
            ResponseCode.MESSAGE_ILLEGAL,
            "DELAY",
        )
        # A lone surrogate (legal JSON text, not encodable as UTF-8) cannot be stored.
        frame = json_frame(
            {
                "code": 310, "flag": 0, "language": "JAVA", "opaque": 1, "version": 479,
                "extFields": {
                    "a": "PG", "b": "T", "c": "TBW102", "d": "4", "e": "0", "f": "0",
                    "g": "1", "h": "0", "i": "TAGS\x01\ud800\x02",
                },
            },
            b"s",
        )  # fmt: skip
        (response,) = await raw_exchange(env.addr, frame)
        refused(response, ResponseCode.MESSAGE_ILLEGAL)
        await still_serving(env)


@pytest.mark.parametrize(
    ("code", "drop", "field"),
    [
        (RequestCode.SEND_MESSAGE_V2, "b", "b"),
        (RequestCode.SEND_MESSAGE_V2, "e", "e"),
        (RequestCode.PULL_MESSAGE, "queueOffset", "queueOffset"),
        (RequestCode.QUERY_CONSUMER_OFFSET, "topic", "topic"),
        (RequestCode.CONSUMER_SEND_MSG_BACK, "offset", "offset"),
        (RequestCode.GET_MAX_OFFSET, "queueId", "queueId"),
    ],
)
async def test_missing_required_header_field(
    env: BrokerEnv, code: int, drop: str, field: str
) -> None:
    complete: dict[int, dict[str, str]] = {
        RequestCode.SEND_MESSAGE_V2: SendMessageRequestHeaderV2.from_v1(
            send_header("T")
        ).to_ext_fields(),
        RequestCode.PULL_MESSAGE: {
            "consumerGroup": "G", "topic": "T", "queueId": "0", "queueOffset": "0",
            "maxMsgNums": "32", "sysFlag": "4", "commitOffset": "0",
            "suspendTimeoutMillis": "0", "subVersion": "0", "subscription": "*",
        },
        RequestCode.QUERY_CONSUMER_OFFSET: {"consumerGroup": "G", "topic": "T", "queueId": "0"},
        RequestCode.CONSUMER_SEND_MSG_BACK: ConsumerSendMsgBackRequestHeader(
            offset=0, group="G", delay_level=0
        ).to_ext_fields(),
        RequestCode.GET_MAX_OFFSET: {"topic": "T", "queueId": "0"},
    }  # fmt: skip
    with trio.fail_after(TEST_DEADLINE_S):
        ext = dict(complete[code])
        del ext[drop]
        refused(await env.call(code, ext, b"body"), ResponseCode.SYSTEM_ERROR, repr(field))
        # A field that is there but not a number is refused the same way.
        bad = {**complete[code], drop: "not-a-number"} if drop not in ("b", "topic") else None
        if bad is not None:
            refused(await env.call(code, bad, b"body"), ResponseCode.SYSTEM_ERROR, field)
        await still_serving(env)


async def test_pull_at_out_of_range_offsets(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        for _ in range(2):
            await env.send_ok("T", queue_id=2)
        for offset, next_begin in ((-10, 0), (50, 2)):
            pulled = await env.pull("T", 2, offset)
            expect(pulled.response, ResponseCode.PULL_OFFSET_MOVED)
            assert pulled.response.remark
            assert pulled.next_begin_offset == next_begin
        await still_serving(env)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        b'{"producerDataSet": []}',  # no clientID
        b'{"clientID": "c", "consumerDataSet": [{"groupName": 7}]}',
        b'{"clientID": "c", "consumerDataSet": [{"groupName": "G", "messageModel": "X"}]}',
        b"",
    ],
    ids=["binary", "array", "no-client-id", "group-not-string", "bad-enum", "empty"],
)
async def test_garbage_heartbeat_body(env: BrokerEnv, body: bytes) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        refused(await env.call(RequestCode.HEART_BEAT, None, body), ResponseCode.SYSTEM_ERROR)
        await still_serving(env)


async def test_garbage_batch_body(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        header = SendMessageRequestHeaderV2.from_v1(send_header("T", batch=True))
        for body in (b"\x00\x00\x00\x07garbage", b""):
            response = await env.call(RequestCode.SEND_BATCH_MESSAGE, header, body)
            assert response.code in (ResponseCode.MESSAGE_ILLEGAL, ResponseCode.SYSTEM_ERROR)
            assert response.remark
        delayed = [BatchItem(body=b"d", properties={"DELAY": "2"})]
        refused(
            await env.call(RequestCode.SEND_BATCH_MESSAGE, header, encode_batch_body(delayed)),
            ResponseCode.MESSAGE_ILLEGAL,
            "delay",
        )
        assert await env.pull_all("T", 0) == []
        await still_serving(env)


async def test_unknown_request_code_and_broken_frames(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        refused(await env.call(9999), ResponseCode.REQUEST_CODE_NOT_SUPPORTED, "9999")
        # A header that is not JSON closes that connection only, with no answer.
        broken = encode_frame(b"{not json", b"")
        assert await raw_exchange(env.addr, broken) == []
        # A frame declaring more than the frame cap is refused before allocation.
        oversized = (1 << 30).to_bytes(4, "big") + b"\x00\x00\x00\x02{}"
        assert await raw_exchange(env.addr, oversized) == []
        await still_serving(env)


async def test_slave_refuses_sends_and_send_backs(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, broker_role="SLAVE", broker_id=1) as env:
            refused(await env.send("TBW102"), ResponseCode.SERVICE_NOT_AVAILABLE, "SLAVE")
            header = ConsumerSendMsgBackRequestHeader(offset=0, group="G", delay_level=0)
            refused(
                await env.call(RequestCode.CONSUMER_SEND_MSG_BACK, header),
                ResponseCode.SERVICE_NOT_AVAILABLE,
            )
            info = await env.runtime_info()
            assert info["brokerRole"] == "SLAVE"
            assert info["msgPutTotalTodayNow"] == "0"
            # It registered as a slave (id 1) of its group; with no master, no topic routes.
            cluster = expect(
                await env.call(RequestCode.GET_BROKER_CLUSTER_INFO, addr=env.namesrv_addr),
                ResponseCode.SUCCESS,
            )
            groups = json.loads(cluster.body)["brokerAddrTable"]
            assert groups["broker-a"]["brokerAddrs"] == {"1": env.addr}
            assert await env.route("TBW102") is None


async def test_disk_full_refuses_writes_and_keeps_reads(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            sent = [await env.send_ok("T", f"m{i}".encode()) for i in range(3)]
            free = shutil.disk_usage(tmp_path).free
            await env.restart(min_free_disk_bytes=free + (1 << 40))

            response = await env.send("T", b"no room")
            refused(response, ResponseCode.SERVICE_NOT_AVAILABLE, "disk", "full")
            await env.heartbeat("c@1", group="G", topics={"T": "*"})
            _, _, offset = parse_offset_msg_id(sent[0].msg_id)
            back = await env.call(
                RequestCode.CONSUMER_SEND_MSG_BACK,
                ConsumerSendMsgBackRequestHeader(offset=offset, group="G", delay_level=0),
            )
            refused(back, ResponseCode.SERVICE_NOT_AVAILABLE, "disk")
            # Everything stored before stays readable.
            records = await env.pull_all("T", 0)
            assert [r.msg_id for r in records] == [s.msg_id for s in sent]
            view = await env.call(
                RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageRequestHeader(offset=offset)
            )
            expect(view, ResponseCode.SUCCESS)
            assert (await env.runtime_info())["diskFull"] == "true"

            # With room again, writes resume where they stopped.
            await env.restart(min_free_disk_bytes=0)
            after = await env.send_ok("T", b"room again")
            assert after.queue_offset == 3


async def test_topic_permissions(env: BrokerEnv) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        await env.create_topic("ReadOnly", queues=1, perm=4)
        await env.create_topic("WriteOnly", queues=1, perm=2)
        refused(await env.send("ReadOnly"), ResponseCode.NO_PERMISSION, "ReadOnly")
        await env.send_ok("WriteOnly")
        refused((await env.pull("WriteOnly")).response, ResponseCode.NO_PERMISSION, "WriteOnly")
        await still_serving(env)


@pytest.mark.parametrize(
    ("subscription", "expression_type"),
    [("||", "TAG"), ("a > AND", "SQL92")],
    ids=["empty-tags", "bad-sql92"],
)
async def test_unusable_subscription(
    env: BrokerEnv, subscription: str, expression_type: str
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        await env.send_ok("T")
        ext = {
            "consumerGroup": "G", "topic": "T", "queueId": "0", "queueOffset": "0",
            "maxMsgNums": "32", "sysFlag": "4", "commitOffset": "0",
            "suspendTimeoutMillis": "0", "subVersion": "0", "subscription": subscription,
            "expressionType": expression_type,
        }  # fmt: skip
        response = await env.call(RequestCode.PULL_MESSAGE, ext)
        refused(response, ResponseCode.SUBSCRIPTION_PARSE_FAILED)
        await still_serving(env)
