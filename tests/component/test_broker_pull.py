"""PULL_MESSAGE (11): bodies, tag filtering, the status → code table, long polling, commits."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from protocol.bodies import SubscriptionGroupConfig
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import QueryConsumerOffsetRequestHeader, ViewMessageRequestHeader
from protocol.message import parse_offset_msg_id
from protocol.rpc import open_client
from tests.component.broker_fixtures import (
    FLAG_COMMIT_OFFSET,
    FLAG_SUBSCRIPTION,
    FLAG_SUSPEND,
    PULL_OFFSET_FIELDS,
    TEST_DEADLINE_S,
    Arrivals,
    BrokerEnv,
    Pulled,
    broker_env,
    expect,
    wait_until,
)


async def _held_pulls(env: BrokerEnv) -> int:
    """Pulls the broker holds, as GET_BROKER_RUNTIME_INFO reports them."""
    return int((await env.runtime_info())["heldPulls"])


async def _wait_held(env: BrokerEnv, count: int) -> None:
    async def holds() -> bool:
        return await _held_pulls(env) == count

    await wait_until(holds, what=f"{count} held pulls")


async def test_found_body_is_the_commitlog_records_byte_for_byte(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            sent = [await env.send_ok("T", f"m{i}".encode() * (i + 1)) for i in range(5)]
            pulled = await env.pull("T", 0, 0)
            expect(pulled.response, ResponseCode.SUCCESS)
            assert pulled.response.remark == "FOUND"
            assert [r.msg_id for r in pulled.records] == [s.msg_id for s in sent]
            # The body is the stored records concatenated, exactly as VIEW_MESSAGE_BY_ID
            # reads each of them from the CommitLog.
            stored = b""
            for s in sent:
                _, _, offset = parse_offset_msg_id(s.msg_id)
                view = await env.call(
                    RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageRequestHeader(offset=offset)
                )
                stored += expect(view, ResponseCode.SUCCESS).body
            assert pulled.response.body == stored
            assert (pulled.next_begin_offset, pulled.min_offset, pulled.max_offset) == (5, 0, 5)
            assert pulled.response.ext_fields["suggestWhichBrokerId"] == "0"


async def test_max_msg_nums_limits_a_page(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            for i in range(7):
                await env.send_ok("T", str(i).encode())
            page = await env.pull("T", 0, 2, max_nums=3)
            assert [r.body for r in page.records] == [b"2", b"3", b"4"]
            assert page.next_begin_offset == 5


async def test_tag_filter_returns_only_matching_messages(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            for tags in ("TagA", "TagC", "TagB", None, "TagA", "TagC", "TagC"):
                await env.send_ok("T", (tags or "none").encode(), tags=tags)
            pulled = await env.pull("T", 0, 0, subscription="TagA || TagB")
            expect(pulled.response, ResponseCode.SUCCESS)
            assert [r.body for r in pulled.records] == [b"TagA", b"TagB", b"TagA"]
            assert [r.queue_offset for r in pulled.records] == [0, 2, 4]
            assert pulled.next_begin_offset == 7  # the trailing TagC entries were scanned too
            # Only non-matching entries from here: 20 with the scanned range skipped.
            skipped = await env.pull("T", 0, 5, subscription="TagA || TagB")
            expect(skipped.response, ResponseCode.PULL_RETRY_IMMEDIATELY)
            assert skipped.response.remark == "NO_MATCHED_MESSAGE"
            assert skipped.next_begin_offset == 7
            everything = await env.pull("T", 0, 0, subscription="*")
            assert len(everything.records) == 7


async def test_registered_subscription_is_used_without_the_subscription_flag(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            for tags in ("X", "Y", "X"):
                await env.send_ok("T", tags.encode(), tags=tags)
            refused = await env.pull("T", 0, 0, group="G", subscription=None, sys_flag=0)
            expect(refused.response, ResponseCode.SUBSCRIPTION_NOT_EXIST)
            await env.heartbeat("c1", group="G", topics={"T": "Y"})
            pulled = await env.pull("T", 0, 0, group="G", subscription=None, sys_flag=0)
            assert [r.body for r in pulled.records] == [b"Y"]


@pytest.mark.parametrize(
    ("offset", "code", "remark", "next_begin"),
    [
        (-3, ResponseCode.PULL_OFFSET_MOVED, "OFFSET_TOO_SMALL", 0),
        (3, ResponseCode.PULL_NOT_FOUND, "OFFSET_OVERFLOW_ONE", 3),
        (4, ResponseCode.PULL_OFFSET_MOVED, "OFFSET_OVERFLOW_BADLY", 3),
        (1000, ResponseCode.PULL_OFFSET_MOVED, "OFFSET_OVERFLOW_BADLY", 3),
    ],
)
async def test_offset_status_to_code_table(
    tmp_path: Path, offset: int, code: int, remark: str, next_begin: int
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            for _ in range(3):
                await env.send_ok("T", b"x", queue_id=0)
            pulled = await env.pull("T", 0, offset)
            expect(pulled.response, code)
            assert pulled.response.remark == remark
            assert pulled.next_begin_offset == next_begin
            assert (pulled.min_offset, pulled.max_offset) == (0, 3)
            assert pulled.records == ()


async def test_empty_queue_codes(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            at_zero = await env.pull("T", 1, 0)
            expect(at_zero.response, ResponseCode.PULL_NOT_FOUND)
            assert (at_zero.next_begin_offset, at_zero.min_offset, at_zero.max_offset) == (0, 0, 0)
            ahead = await env.pull("T", 1, 5)
            expect(ahead.response, ResponseCode.PULL_OFFSET_MOVED)
            assert ahead.next_begin_offset == 0


async def test_refusals_carry_the_four_offsets_too(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, auto_create_subscription_group=False) as env:
            await env.create_topic("T", queues=1)
            await env.send_ok("T")
            cases: list[tuple[Pulled, int]] = [
                (await env.pull("Missing", 0, 0, group="TOOLS_CONSUMER"), 17),
                (await env.pull("T", 9, 0, group="TOOLS_CONSUMER"), 29),
                (await env.pull("T", 0, 0, group="NoSuchGroup"), 26),
            ]
            for pulled, code in cases:
                expect(pulled.response, code)
                assert pulled.response.remark
                assert set(PULL_OFFSET_FIELDS) <= set(pulled.response.ext_fields)
                assert pulled.next_begin_offset == 0


async def test_held_pull_returns_as_soon_as_a_message_arrives(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        # A re-check interval and suspend far longer than the test's deadline for the answer:
        # only the arrival can wake the pull in time.
        async with broker_env(tmp_path, long_polling_check_interval_s=30.0) as env:
            await env.create_topic("T", queues=2)
            results: Arrivals[Pulled] = Arrivals()

            async def held() -> None:
                results.add(await env.pull("T", 0, 0, suspend_ms=20_000, timeout_s=25.0))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(held)
                await _wait_held(env, 1)
                # A message to another queue does not answer it.
                await env.send_ok("T", b"other", queue_id=1)
                sent = await env.send_ok("T", b"wake", queue_id=0)
                (pulled,) = await results.wait_for(1, timeout_s=2.0)
            expect(pulled.response, ResponseCode.SUCCESS)
            assert [r.msg_id for r in pulled.records] == [sent.msg_id]
            assert await _held_pulls(env) == 0


async def test_empty_held_pull_answers_not_found_after_its_suspend_timeout(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, long_polling_check_interval_s=0.1) as env:
            await env.create_topic("T", queues=1)
            await env.send_ok("T")
            started = trio.current_time()
            pulled = await env.pull("T", 0, 1, suspend_ms=400)
            elapsed = trio.current_time() - started
            expect(pulled.response, ResponseCode.PULL_NOT_FOUND)
            assert pulled.next_begin_offset == 1
            assert 0.35 <= elapsed < 3.0
            # Without the SUSPEND flag the answer is immediate.
            started = trio.current_time()
            quick = await env.pull("T", 0, 1, sys_flag=FLAG_SUBSCRIPTION, suspend_ms=10_000)
            expect(quick.response, ResponseCode.PULL_NOT_FOUND)
            assert trio.current_time() - started < 1.0


async def test_held_pull_of_a_disconnected_client_is_released(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, long_polling_check_interval_s=30.0) as env:
            await env.create_topic("T", queues=1)
            async with trio.open_nursery() as nursery:
                async with open_client(name="leaver") as leaver:

                    async def held() -> None:
                        # The connection closing under the call ends it with ConnectionLost.
                        try:
                            await env.pull("T", 0, 0, suspend_ms=20_000, client=leaver)
                        except Exception as exc:
                            assert "lost" in str(exc) or "closed" in str(exc), exc

                    nursery.start_soon(held)
                    await _wait_held(env, 1)
                # The leaver's connection is closed here.
                await _wait_held(env, 0)
                nursery.cancel_scope.cancel()
            # The broker still serves pulls and sends.
            await env.send_ok("T")
            expect((await env.pull("T", 0, 0)).response, ResponseCode.SUCCESS)


async def test_commit_offset_flag_commits_the_piggybacked_offset(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            for _ in range(4):
                await env.send_ok("T")

            async def committed() -> RemotingCommand:
                return await env.call(
                    RequestCode.QUERY_CONSUMER_OFFSET,
                    QueryConsumerOffsetRequestHeader(
                        consumer_group="G", topic="T", queue_id=0, set_zero_if_not_found=False
                    ),
                )

            # Without the flag the piggybacked offset is ignored.
            await env.pull("T", 0, 2, group="G", commit_offset=2, sys_flag=FLAG_SUBSCRIPTION)
            expect(await committed(), ResponseCode.QUERY_NOT_FOUND)
            flags = FLAG_SUBSCRIPTION | FLAG_COMMIT_OFFSET | FLAG_SUSPEND
            pulled = await env.pull(
                "T", 0, 2, group="G", commit_offset=2, sys_flag=flags, suspend_ms=1000
            )
            expect(pulled.response, ResponseCode.SUCCESS)
            response = expect(await committed(), ResponseCode.SUCCESS)
            assert response.ext_fields["offset"] == "2"


async def test_one_arrival_answers_every_pull_held_on_the_queue(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, long_polling_check_interval_s=30.0) as env:
            await env.create_topic("T", queues=1)
            results: Arrivals[Pulled] = Arrivals()

            async def held(group: str) -> None:
                results.add(await env.pull("T", 0, 0, group=group, suspend_ms=20_000))

            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(held, f"G{i}")
                await _wait_held(env, 5)
                sent = await env.send_ok("T", b"fan-out")
                answers = await results.wait_for(5, timeout_s=2.0)
            for pulled in answers:
                expect(pulled.response, ResponseCode.SUCCESS)
                assert [r.msg_id for r in pulled.records] == [sent.msg_id]


async def test_tag_filtered_held_pull_waits_for_a_matching_tag(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, long_polling_check_interval_s=30.0) as env:
            await env.create_topic("T", queues=1)
            results: Arrivals[Pulled] = Arrivals()

            async def held() -> None:
                results.add(await env.pull("T", 0, 0, subscription="Wanted", suspend_ms=20_000))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(held)
                await _wait_held(env, 1)
                # An arrival it does not want leaves it held (RocketMQ's tag pre-match) ...
                await env.send_ok("T", b"skip", tags="Other")
                assert await _held_pulls(env) == 1
                assert results.items == []
                # ... one it wants answers it at once, the unwanted entry skipped.
                sent = await env.send_ok("T", b"want", tags="Wanted")
                (pulled,) = await results.wait_for(1, timeout_s=2.0)
            expect(pulled.response, ResponseCode.SUCCESS)
            assert [r.msg_id for r in pulled.records] == [sent.msg_id]
            assert pulled.next_begin_offset == 2


async def test_unwanted_arrivals_are_answered_at_the_recheck(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, long_polling_check_interval_s=0.2) as env:
            await env.create_topic("T", queues=1)
            await env.send_ok("T", b"skip", tags="Other")
            async with trio.open_nursery() as nursery:
                results: Arrivals[Pulled] = Arrivals()

                async def held() -> None:
                    results.add(await env.pull("T", 0, 1, subscription="Wanted", suspend_ms=20_000))

                nursery.start_soon(held)
                await _wait_held(env, 1)
                await env.send_ok("T", b"skip", tags="Other")
                # The 0.2 s re-check answers it, not the 20 s suspend.
                (answer,) = await results.wait_for(1, timeout_s=3.0)
            expect(answer.response, ResponseCode.PULL_RETRY_IMMEDIATELY)
            assert answer.next_begin_offset == 2


async def test_broker_stops_promptly_with_pulls_held(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, long_polling_check_interval_s=30.0) as env:
            await env.create_topic("T", queues=1)
            outcomes: Arrivals[str] = Arrivals()

            async def held() -> None:
                try:
                    await env.pull("T", 0, 0, suspend_ms=20_000, timeout_s=25.0)
                    outcomes.add("answered")
                except Exception as exc:  # the connection dies with the broker
                    outcomes.add(type(exc).__name__)

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(held)
                await _wait_held(env, 3)
                started = trio.current_time()
                await env.stop()
                assert trio.current_time() - started < 3.0
                assert await outcomes.wait_for(3, timeout_s=3.0) == ["ConnectionLost"] * 3
            await env.start()
            await env.send_ok("T")


async def test_group_with_consumption_disabled_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            await env.send_ok("T")

            async def set_group(enabled: bool) -> None:
                config = SubscriptionGroupConfig(group_name="Paused", consume_enable=enabled)
                response = await env.call(
                    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, config.to_bytes()
                )
                expect(response, ResponseCode.SUCCESS)

            await set_group(False)
            pulled = await env.pull("T", 0, 0, group="Paused")
            expect(pulled.response, ResponseCode.NO_PERMISSION)
            assert pulled.response.remark and "Paused" in pulled.response.remark
            await set_group(True)
            expect((await env.pull("T", 0, 0, group="Paused")).response, ResponseCode.SUCCESS)
