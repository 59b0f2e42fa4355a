"""Timer messages (TIMER_DELAY_MS, TIMER_DELAY_SEC, TIMER_DELIVER_MS, __STARTDELIVERTIME):
parked in rmq_sys_wheel_timer, delivered when due, across a restart; a delay past the
maximum refused with RocketMQ's remark."""

from __future__ import annotations

from pathlib import Path

import trio

from protocol.codes import ResponseCode
from tests.component.broker_fixtures import (
    TEST_DEADLINE_S,
    broker_env,
    expect,
    now_ms,
)
from tests.component.test_broker_delay import wait_count


async def test_timer_message_is_parked_then_delivered_within_a_second(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            due = now_ms() + 1500
            sent = await env.send_ok(
                "T", b"at", tags="A", properties={"TIMER_DELIVER_MS": str(due)}
            )
            await env.send_ok("T", b"ms", properties={"TIMER_DELAY_MS": "1200"})
            await env.send_ok("T", b"sec", properties={"TIMER_DELAY_SEC": "1"})
            await env.send_ok("T", b"ons", properties={"__STARTDELIVERTIME": str(due)})
            # Due now: stored at once.
            await env.send_ok("T", b"now", properties={"TIMER_DELIVER_MS": str(now_ms() - 5)})
            early = await env.pull_all("T", 0)
            assert [r.body for r in early] == [b"now"]
            parked = await env.pull_all("rmq_sys_wheel_timer", 0, group="TOOLS_CONSUMER")
            assert len(parked) == 4
            assert parked[0].msg_id == sent.msg_id
            assert parked[0].properties["REAL_TOPIC"] == "T"
            assert parked[0].properties["TIMER_OUT_MS"] == str(due)

            records = await wait_count(env, "T", 5)
            by_body = {r.body: r for r in records}
            assert set(by_body) == {b"now", b"at", b"ms", b"sec", b"ons"}
            at = by_body[b"at"]
            lateness_ms = at.store_timestamp_ms - due
            assert 0 <= lateness_ms <= 1000, lateness_ms
            assert at.properties["TAGS"] == "A"
            assert "REAL_TOPIC" not in at.properties
            assert int(at.properties["TIMER_DEQUEUE_MS"]) >= due
            assert at.uniq_key == parked[0].uniq_key
            assert env.b.timers.delivered == 4


async def test_delay_past_the_maximum_is_refused_with_remark(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, timer_max_delay_s=60) as env:
            await env.create_topic("T", queues=1)
            response = await env.send("T", b"x", properties={"TIMER_DELAY_SEC": "61"})
            expect(response, ResponseCode.MESSAGE_ILLEGAL)
            assert "max delay 60000ms" in (response.remark or "")
            bad = await env.send("T", b"x", properties={"TIMER_DELAY_MS": "soon"})
            expect(bad, ResponseCode.MESSAGE_ILLEGAL)
            assert "not an integer" in (bad.remark or "")
            assert await env.pull_all("T", 0) == []
            assert await env.pull_all("rmq_sys_wheel_timer", 0, group="TOOLS_CONSUMER") == []
            # A DELAY level wins over timer properties (RocketMQ drops them).
            await env.send_ok("T", b"lvl", properties={"DELAY": "1", "TIMER_DELAY_SEC": "61"})


async def test_pending_timers_survive_a_restart_once(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, flush_consumer_offset_interval_s=0.2) as env:
            await env.create_topic("T", queues=1)
            await env.send_ok("T", b"soon", properties={"TIMER_DELAY_MS": "300"})
            await wait_count(env, "T", 1)
            await trio.sleep(0.5)  # the checkpoint is written
            due = now_ms() + 2500
            for i in range(3):
                await env.send_ok(
                    "T", f"late-{i}".encode(), properties={"TIMER_DELIVER_MS": str(due)}
                )
            await env.restart()
            records = await wait_count(env, "T", 4, wait_s=8.0)
            await trio.sleep(0.5)
            records = await env.pull_all("T", 0)
            assert sorted(r.body for r in records) == [b"late-0", b"late-1", b"late-2", b"soon"]
            assert all(r.store_timestamp_ms >= due for r in records if r.body != b"soon")
