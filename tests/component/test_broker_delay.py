"""Delayed messages (DELAY=n): parked in SCHEDULE_TOPIC_XXXX, delivered when due, across restarts.

The brokers run with 18 one-second delay levels; a delivery is awaited with a held pull on
the destination queue, under a deadline.
"""

from __future__ import annotations

from pathlib import Path

import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.headers import QueryMessageRequestHeader
from protocol.message import MessageRecord, iter_records
from tests.component.broker_fixtures import (
    FAST_DELAY_LEVELS,
    TEST_DEADLINE_S,
    BrokerEnv,
    broker_env,
    expect,
    now_ms,
)


async def wait_count(
    env: BrokerEnv, topic: str, count: int, *, wait_s: float = 5.0
) -> list[MessageRecord]:
    """Wait (with held pulls) until queue 0 of ``topic`` holds ``count`` messages; return them."""
    with trio.fail_after(wait_s):
        while True:
            records = await env.pull_all(topic, 0)
            if len(records) >= count:
                return records
            await env.pull(topic, 0, len(records), suspend_ms=1000)


async def test_delayed_message_is_invisible_until_due_then_delivered(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(
            tmp_path, message_delay_level="1s 2s 1s 1s", long_polling_check_interval_s=5.0
        ) as env:
            await env.create_topic("T", queues=2)
            sent_ms = now_ms()
            sent = await env.send_ok(
                "T", b"later", queue_id=1, tags="D", keys="dk", properties={"DELAY": "2"}
            )
            assert sent.queue_id == 1
            early = await env.pull("T", 1, 0)
            expect(early.response, ResponseCode.PULL_NOT_FOUND)
            # Parked in the schedule topic's queue for level 2 (queue 1).
            (parked,) = await env.pull_all("SCHEDULE_TOPIC_XXXX", 1, group="TOOLS_CONSUMER")
            assert parked.msg_id == sent.msg_id
            assert parked.properties["REAL_TOPIC"] == "T"
            assert parked.properties["REAL_QID"] == "1"

            with trio.fail_after(5.0):
                pulled = await env.pull("T", 1, 0, suspend_ms=4000)
            expect(pulled.response, ResponseCode.SUCCESS)
            (delivered,) = pulled.records
            assert delivered.store_timestamp_ms - sent_ms >= 1990
            assert delivered.topic == "T" and delivered.queue_id == 1
            assert delivered.body == b"later"
            assert delivered.uniq_key == parked.uniq_key
            assert delivered.properties["TAGS"] == "D"
            assert "DELAY" not in delivered.properties
            assert delivered.msg_id != sent.msg_id  # a new record in the real topic
            # The message is findable by its UNIQ_KEY in its real topic.
            assert delivered.uniq_key is not None
            query = QueryMessageRequestHeader(
                topic="T",
                key=delivered.uniq_key,
                max_num=32,
                begin_timestamp=0,
                end_timestamp=now_ms() + 60_000,
            ).to_ext_fields()
            query["_UNIQUE_KEY_QUERY"] = "true"
            found = expect(await env.call(RequestCode.QUERY_MESSAGE, query), ResponseCode.SUCCESS)
            assert [r.msg_id for r in iter_records(found.body)] == [delivered.msg_id]


async def test_delay_levels_past_the_last_one_use_the_last(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level="1s 1s") as env:
            await env.create_topic("T", queues=1)
            await env.send_ok("T", b"far", properties={"DELAY": "18"})
            (parked,) = await env.pull_all("SCHEDULE_TOPIC_XXXX", 1, group="TOOLS_CONSUMER")
            assert parked.properties["DELAY"] == "2"
            (delivered,) = await wait_count(env, "T", 1)
            assert delivered.body == b"far"


async def test_delay_zero_is_delivered_at_once(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            await env.create_topic("T", queues=1)
            await env.send_ok("T", b"now", properties={"DELAY": "0"})
            (record,) = await env.pull_all("T", 0)
            assert record.body == b"now"


async def test_delayed_delivery_survives_a_restart_without_loss_or_repeat(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, message_delay_level=FAST_DELAY_LEVELS) as env:
            await env.create_topic("T", queues=1)
            # Three delivered before the restart ...
            for i in range(3):
                await env.send_ok("T", f"before-{i}".encode(), properties={"DELAY": "1"})
            await wait_count(env, "T", 3)
            # ... and three still parked when the broker stops.
            pending = [
                (await env.send_ok("T", f"pending-{i}".encode(), properties={"DELAY": "1"}))
                for i in range(3)
            ]
            assert len(await env.pull_all("T", 0)) == 3
            await env.restart()
            records = await wait_count(env, "T", 6)
            bodies = [r.body for r in records]
            assert sorted(bodies[:3]) == [b"before-0", b"before-1", b"before-2"]
            assert sorted(bodies[3:]) == [b"pending-0", b"pending-1", b"pending-2"]
            assert len(pending) == 3
            # Delivered offsets were persisted on shutdown: nothing comes a second time.
            with trio.move_on_after(1.5):
                extra = await env.pull("T", 0, 6, suspend_ms=1200)
                assert extra.code == ResponseCode.PULL_NOT_FOUND, [r.body for r in extra.records]
            assert len(await env.pull_all("T", 0)) == 6
