"""SQL92 subscriptions on the broker: CHECK_CLIENT_CONFIG vets the expression, pulls (by the
pull's own subscription or the group's heartbeat) return exactly the matching messages, and
a held pull is answered only when a matching message arrives (or at its deadline)."""

from __future__ import annotations

from pathlib import Path

import trio

from protocol.bodies import (
    CLUSTERING,
    CheckClientRequestBody,
    ConsumerData,
    HeartbeatData,
    SubscriptionData,
)
from protocol.codes import RequestCode, ResponseCode
from protocol.message import MessageRecord
from tests.component.broker_fixtures import (
    TEST_DEADLINE_S,
    BrokerEnv,
    broker_env,
    expect,
    now_ms,
)

EXPR = "a > 5 AND color IN ('red', 'blue')"


def sql(expr: str, topic: str = "T") -> SubscriptionData:
    return SubscriptionData(
        topic=topic, sub_string=expr, sub_version=now_ms(), expression_type="SQL92"
    )


async def check_config(env: BrokerEnv, expr: str, expression_type: str = "SQL92") -> object:
    body = CheckClientRequestBody(
        client_id="c1",
        group="G",
        subscription_data=SubscriptionData(
            topic="T", sub_string=expr, expression_type=expression_type
        ),
    )
    return await env.call(RequestCode.CHECK_CLIENT_CONFIG, None, body.to_bytes())


async def send_props(env: BrokerEnv, props: dict[str, str], body: bytes) -> None:
    await env.send_ok("T", body, properties=props)


async def pull_sql(env: BrokerEnv, offset: int, expr: str = EXPR, **kw: object) -> object:
    return await env.pull(
        "T", 0, offset, group="G", subscription=expr, expression_type="SQL92", **kw
    )


def bodies(records: list[MessageRecord] | tuple[MessageRecord, ...]) -> list[bytes]:
    return [r.body for r in records]


async def test_check_client_config_reports_the_parse_error(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            expect(await check_config(env, EXPR), ResponseCode.SUCCESS)
            expect(await check_config(env, "TagA || TagB", "TAG"), ResponseCode.SUCCESS)
            bad = await check_config(env, "a > AND b")
            expect(bad, ResponseCode.SUBSCRIPTION_PARSE_FAILED)
            assert "a > AND b" in (bad.remark or "") and "failed" in (bad.remark or "")
            for body, words in ((b"", "invalid JSON"), (b'{"subscriptionData": 5}', "object")):
                broken = await env.call(RequestCode.CHECK_CLIENT_CONFIG, None, body)
                expect(broken, ResponseCode.SYSTEM_ERROR)
                assert words in (broken.remark or "")
            await env.create_topic("T", queues=1)
            refused = await pull_sql(env, 0, "a >")
            expect(refused.response, ResponseCode.SUBSCRIPTION_PARSE_FAILED)


async def test_property_filter_off_refuses_sql92(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, enable_property_filter=False) as env:
            refused = await check_config(env, EXPR)
            expect(refused, ResponseCode.SYSTEM_ERROR)
            assert "does not support consumer to filter message by SQL92" in (refused.remark or "")


async def test_sql92_pulls_return_exactly_the_matching_messages(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            cases = [
                ({"a": "6", "color": "red"}, True),
                ({"a": "5", "color": "red"}, False),
                ({"a": "9", "color": "green"}, False),
                ({"color": "blue"}, False),
                ({"a": "10", "color": "blue"}, True),
                ({"a": "x", "color": "red"}, False),  # a > 5 throws: no match
            ]
            for i, (props, _) in enumerate(cases):
                await send_props(env, props, b"m%d" % i)
            want = [b"m%d" % i for i, (_, ok) in enumerate(cases) if ok]
            got = []
            offset = 0
            for _ in range(20):
                pulled = await pull_sql(env, offset)
                if pulled.code == ResponseCode.PULL_NOT_FOUND:
                    break
                assert pulled.code in (ResponseCode.SUCCESS, ResponseCode.PULL_RETRY_IMMEDIATELY)
                got += bodies(pulled.records)
                offset = pulled.next_begin_offset
            assert got == want
            assert offset == len(cases)

            # The group's heartbeat subscription serves a pull without one of its own.
            heartbeat = HeartbeatData(
                client_id="c1",
                consumer_data_set=(
                    ConsumerData(
                        group_name="G",
                        message_model=CLUSTERING,
                        subscription_data_set=(sql("color = 'blue'"),),
                    ),
                ),
            )
            expect(
                await env.call(RequestCode.HEART_BEAT, None, heartbeat.to_bytes()),
                ResponseCode.SUCCESS,
            )
            pulled = await env.pull("T", 0, 0, group="G", subscription=None)
            assert bodies(pulled.records) == [b"m3", b"m4"]


async def test_held_sql92_pull_wakes_only_for_a_match(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, long_polling_check_interval_s=5.0) as env:
            await env.create_topic("T", queues=1)
            answered: list[tuple[float, object]] = []

            async def held(offset: int = 0, suspend_ms: int = 8000) -> None:
                pulled = await pull_sql(env, offset, suspend_ms=suspend_ms, timeout_s=12.0)
                answered.append((trio.current_time(), pulled))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(held)
                await trio.sleep(0.3)
                for i in range(3):
                    await send_props(env, {"a": "1", "color": "red"}, b"no%d" % i)
                await trio.sleep(0.5)
                assert answered == [], "a pull woke for a message it does not want"
                sent_at = trio.current_time()
                await send_props(env, {"a": "7", "color": "red"}, b"yes")
            ((when, pulled),) = answered
            assert pulled.code == ResponseCode.SUCCESS
            assert bodies(pulled.records) == [b"yes"]
            assert pulled.next_begin_offset == 4
            assert when - sent_at < 2.0

            # Only non-matching arrivals: answered at the deadline, past what it skipped.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(held, 4, 1500)
                await trio.sleep(0.3)
                await send_props(env, {"a": "1"}, b"no-more")
            (_, pulled) = answered[-1]
            assert pulled.code == ResponseCode.PULL_NOT_FOUND
            assert pulled.next_begin_offset == 5
