"""CONSUMER_SEND_MSG_BACK (36), %RETRY% sends and the dead-letter queue (wire.md §2.10, §3.10).

Brokers here run with 18 one-second delay levels, so a retry is due about a second after
it was sent back; waits for it are held pulls on the retry queue, each under a deadline.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

from protocol.bodies import SubscriptionGroupConfig
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import ConsumerSendMsgBackRequestHeader
from protocol.message import MessageRecord, parse_offset_msg_id
from tests.component.broker_fixtures import (
    FAST_DELAY_LEVELS,
    TEST_DEADLINE_S,
    BrokerEnv,
    broker_env,
    expect,
    now_ms,
)

GROUP = "G"
RETRY = "%RETRY%G"
DLQ = "%DLQ%G"


async def send_back(
    env: BrokerEnv,
    record: MessageRecord,
    *,
    delay_level: int = 0,
    max_reconsume_times: int | None = 16,
    origin_msg_id: str | None = None,
) -> RemotingCommand:
    header = ConsumerSendMsgBackRequestHeader(
        offset=record.physical_offset,
        group=GROUP,
        delay_level=delay_level,
        origin_msg_id=origin_msg_id,
        origin_topic=record.topic,
        max_reconsume_times=max_reconsume_times,
    )
    return await env.call(RequestCode.CONSUMER_SEND_MSG_BACK, header)


async def next_message(
    env: BrokerEnv, topic: str, offset: int, *, wait_s: float = 4.0
) -> MessageRecord:
    """The message at ``offset`` of queue 0, waiting for it with a held pull."""
    with trio.fail_after(wait_s + 1):
        pulled = await env.pull(
            topic, 0, offset, group=GROUP, suspend_ms=int(wait_s * 1000), max_nums=1
        )
    expect(pulled.response, ResponseCode.SUCCESS)
    (record,) = pulled.records
    return record


async def original(env: BrokerEnv) -> MessageRecord:
    await env.create_topic("T", queues=1)
    await env.heartbeat("c@1", group=GROUP, topics={"T": "*"})
    sent = await env.send_ok("T", b"payload", tags="TagA", keys="order-1", properties={"u": "1"})
    (record,) = await env.pull_all("T", 0)
    assert record.msg_id == sent.msg_id
    return record


async def test_send_back_goes_to_the_retry_topic_after_its_delay(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            msg = await original(env)
            sent_back_ms = now_ms()
            expect(await send_back(env, msg, origin_msg_id=msg.msg_id), ResponseCode.SUCCESS)
            # Not there before its delay (level 3 = 1 s here).
            early = await env.pull(RETRY, 0, 0, group=GROUP)
            assert early.code in (ResponseCode.PULL_NOT_FOUND, ResponseCode.PULL_OFFSET_MOVED)
            retry = await next_message(env, RETRY, 0)
            assert retry.store_timestamp_ms - sent_back_ms >= 990
            assert retry.topic == RETRY
            assert retry.reconsume_times == 1
            assert retry.body == b"payload"
            assert retry.born_timestamp_ms == msg.born_timestamp_ms
            assert retry.born_host == msg.born_host
            props = retry.properties
            assert props["RETRY_TOPIC"] == "T"
            assert props["ORIGIN_MESSAGE_ID"] == msg.msg_id
            assert props["UNIQ_KEY"] == msg.uniq_key
            assert (props["TAGS"], props["KEYS"], props["u"]) == ("TagA", "order-1", "1")
            assert "DELAY" not in props


async def test_exhausted_retries_land_in_the_dlq(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            msg = await original(env)
            expect(await send_back(env, msg, max_reconsume_times=2), ResponseCode.SUCCESS)
            first = await next_message(env, RETRY, 0)
            assert first.reconsume_times == 1
            expect(await send_back(env, first, max_reconsume_times=2), ResponseCode.SUCCESS)
            second = await next_message(env, RETRY, 1)
            assert second.reconsume_times == 2
            # reconsumeTimes (2) >= maxReconsumeTimes (2): dead letter, no delay.
            expect(await send_back(env, second, max_reconsume_times=2), ResponseCode.SUCCESS)
            dead = await next_message(env, DLQ, 0, wait_s=0.5)
            assert dead.topic == DLQ and dead.queue_id == 0
            assert dead.reconsume_times == 3
            assert dead.body == b"payload"
            assert dead.properties["RETRY_TOPIC"] == "T"
            # The first message id is kept across every hop.
            assert dead.properties["ORIGIN_MESSAGE_ID"] == msg.msg_id
            await env.wait_route(DLQ, queues=1)


async def test_negative_delay_level_goes_straight_to_the_dlq(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            msg = await original(env)
            expect(await send_back(env, msg, delay_level=-1), ResponseCode.SUCCESS)
            dead = await next_message(env, DLQ, 0, wait_s=0.5)
            assert dead.reconsume_times == 1
            assert dead.properties["ORIGIN_MESSAGE_ID"] == msg.msg_id
            nothing = await env.pull(RETRY, 0, 0, group=GROUP)
            assert nothing.code != ResponseCode.SUCCESS


async def test_group_retry_max_times_applies_without_the_header_field(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            config = SubscriptionGroupConfig(group_name=GROUP, retry_max_times=0)
            expect(
                await env.call(
                    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, config.to_bytes()
                ),
                ResponseCode.SUCCESS,
            )
            msg = await original(env)
            expect(await send_back(env, msg, max_reconsume_times=None), ResponseCode.SUCCESS)
            dead = await next_message(env, DLQ, 0, wait_s=0.5)
            assert dead.reconsume_times == 1


async def test_send_back_of_an_unknown_offset_is_a_system_error(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            msg = await original(env)
            bogus = msg.physical_offset + 3  # not the start of a record
            header = ConsumerSendMsgBackRequestHeader(
                offset=bogus, group=GROUP, delay_level=0, origin_topic="T"
            )
            response = await env.call(RequestCode.CONSUMER_SEND_MSG_BACK, header)
            expect(response, ResponseCode.SYSTEM_ERROR)
            assert response.remark and str(bogus) in response.remark


async def test_send_back_must_name_the_topic_of_the_message_at_its_offset(tmp_path: Path) -> None:
    # Else a consumer of T copied any topic's message into its retry topic by offset and
    # read it there (beyond RocketMQ, which takes any offset).
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            msg = await original(env)
            await env.create_topic("Secret", queues=1)
            await env.send_ok("Secret", b"not yours")
            (secret,) = await env.pull_all("Secret", 0)
            header = ConsumerSendMsgBackRequestHeader(
                offset=secret.physical_offset, group=GROUP, delay_level=0, origin_topic="T"
            )
            refused = await env.call(RequestCode.CONSUMER_SEND_MSG_BACK, header)
            expect(refused, ResponseCode.MESSAGE_ILLEGAL)
            assert "is of topic Secret, not originTopic T" in (refused.remark or "")
            # A retry message names the topic it came from (RETRY_TOPIC) or its own.
            expect(await send_back(env, msg), ResponseCode.SUCCESS)
            retry = await next_message(env, RETRY, 0)
            for origin in ("T", RETRY):
                again = attrs.evolve(header, offset=retry.physical_offset, origin_topic=origin)
                expect(await env.call(RequestCode.CONSUMER_SEND_MSG_BACK, again), 0)
            assert [r.body for r in await env.pull_all(RETRY, 0)][:1] == [b"payload"]


async def test_retry_topic_send_past_max_reconsume_times_goes_to_the_dlq(tmp_path: Path) -> None:
    """A client's own fallback re-send to %RETRY% (what ali-ons does when send-back fails)."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            await env.heartbeat("c@1", group=GROUP, topics={"T": "*"})
            # Within the limit: stored in the retry topic (no DELAY given: at once).
            kept = await env.send_ok(RETRY, b"again", reconsume_times=2, max_reconsume_times=2)
            (in_retry,) = await env.pull_all(RETRY, 0, group=GROUP)
            assert in_retry.msg_id == kept.msg_id and in_retry.reconsume_times == 2
            # Past it: the broker rewrites the send into the group's DLQ, even with a DELAY.
            dead = await env.send_ok(
                RETRY, b"dead", reconsume_times=3, max_reconsume_times=2, properties={"DELAY": "3"}
            )
            _, _, offset = parse_offset_msg_id(dead.msg_id)
            (record,) = await env.pull_all(DLQ, 0, group=GROUP)
            assert record.physical_offset == offset
            assert record.body == b"dead" and record.reconsume_times == 3
            assert record.properties.get("DELAY") in (None, "-1", "0")
            assert len(await env.pull_all(RETRY, 0, group=GROUP)) == 1


async def test_batch_to_a_retry_topic_is_illegal(tmp_path: Path) -> None:
    from protocol.batch_body import BatchItem, encode_batch_body
    from protocol.headers import SendMessageRequestHeaderV2
    from tests.component.broker_fixtures import send_header

    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.heartbeat("c@1", group=GROUP, topics={"T": "*"})
            header = SendMessageRequestHeaderV2.from_v1(send_header(RETRY, batch=True))
            body = encode_batch_body([BatchItem(body=b"a"), BatchItem(body=b"b")])
            response = await env.call(RequestCode.SEND_BATCH_MESSAGE, header, body)
            expect(response, ResponseCode.MESSAGE_ILLEGAL)
            assert response.remark and "retry" in response.remark


async def test_retry_topic_send_with_any_queue_spreads_over_retry_queues(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            config = SubscriptionGroupConfig(group_name=GROUP, retry_queue_nums=4)
            expect(
                await env.call(
                    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, config.to_bytes()
                ),
                ResponseCode.SUCCESS,
            )
            await env.heartbeat("c@1", group=GROUP, topics={"T": "*"})
            await env.wait_route(RETRY, queues=4)
            queues = {
                (await env.send_ok(RETRY, b"r", queue_id=-1, reconsume_times=1)).queue_id
                for _ in range(40)
            }
            assert queues <= {0, 1, 2, 3}
            assert len(queues) > 1
            stored = sum([len(await env.pull_all(RETRY, q, group=GROUP)) for q in range(4)])
            assert stored == 40


async def test_group_without_retry_queues_drops_sent_back_messages(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            config = SubscriptionGroupConfig(group_name=GROUP, retry_queue_nums=0)
            expect(
                await env.call(
                    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, config.to_bytes()
                ),
                ResponseCode.SUCCESS,
            )
            msg = await original(env)
            expect(await send_back(env, msg), ResponseCode.SUCCESS)
            info = await env.runtime_info()
            assert info["msgPutTotalTodayNow"] == "1"  # only the original was ever stored
