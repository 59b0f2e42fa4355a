"""Consumer offsets (14, 15) and queue offsets (29, 30, 31, 32), persisted across restarts."""

from __future__ import annotations

from pathlib import Path

import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import (
    GetEarliestMsgStoretimeRequestHeader,
    GetMaxOffsetRequestHeader,
    GetMinOffsetRequestHeader,
    Header,
    QueryConsumerOffsetRequestHeader,
    SearchOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader,
)
from tests.component.broker_fixtures import (
    FLAG_COMMIT_OFFSET,
    FLAG_SUBSCRIPTION,
    TEST_DEADLINE_S,
    BrokerEnv,
    broker_env,
    expect,
    wait_until,
)


async def _query(
    env: BrokerEnv, topic: str, queue_id: int, *, group: str = "G", zero: bool | None = None
) -> RemotingCommand:
    header = QueryConsumerOffsetRequestHeader(
        consumer_group=group, topic=topic, queue_id=queue_id, set_zero_if_not_found=zero
    )
    return await env.call(RequestCode.QUERY_CONSUMER_OFFSET, header)


async def _update(
    env: BrokerEnv, topic: str, queue_id: int, offset: int, *, group: str = "G"
) -> RemotingCommand:
    header = UpdateConsumerOffsetRequestHeader(
        consumer_group=group, topic=topic, queue_id=queue_id, commit_offset=offset
    )
    return await env.call(RequestCode.UPDATE_CONSUMER_OFFSET, header)


async def _offset(env: BrokerEnv, code: int, header: Header) -> int:
    response = expect(await env.call(code, header), ResponseCode.SUCCESS)
    return int(response.ext_fields["offset"])


async def max_offset(env: BrokerEnv, topic: str, queue_id: int) -> int:
    header = GetMaxOffsetRequestHeader(topic=topic, queue_id=queue_id)
    return await _offset(env, RequestCode.GET_MAX_OFFSET, header)


async def min_offset(env: BrokerEnv, topic: str, queue_id: int) -> int:
    header = GetMinOffsetRequestHeader(topic=topic, queue_id=queue_id)
    return await _offset(env, RequestCode.GET_MIN_OFFSET, header)


async def test_query_consumer_offset_stored_young_queue_and_not_found(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            await env.heartbeat("c1", group="G", topics={"T": "*"})
            await env.send_ok("T", queue_id=0)
            # Queue 0 still holds its first message: a new group starts at 0.
            young = expect(await _query(env, "T", 0), ResponseCode.SUCCESS)
            assert young.ext_fields["offset"] == "0"
            # ... unless the client says not to (setZeroIfNotFound=false).
            refused = expect(await _query(env, "T", 0, zero=False), ResponseCode.QUERY_NOT_FOUND)
            assert refused.remark
            # An empty queue has no first message: QUERY_NOT_FOUND, consumeFromWhere decides.
            expect(await _query(env, "T", 1), ResponseCode.QUERY_NOT_FOUND)
            # A stored offset wins over everything.
            expect(await _update(env, "T", 1, 7), ResponseCode.SUCCESS)
            stored = expect(await _query(env, "T", 1, zero=False), ResponseCode.SUCCESS)
            assert stored.ext_fields["offset"] == "7"
            # Other groups are not affected.
            expect(await _query(env, "T", 1, group="Other"), ResponseCode.QUERY_NOT_FOUND)


async def test_update_consumer_offset_rules(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, auto_create_subscription_group=False) as env:
            await env.create_topic("T", queues=1)
            # Only known groups commit (TOOLS_CONSUMER is predefined).
            unknown_group = await _update(env, "T", 0, 3, group="NoGroup")
            expect(unknown_group, ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST)
            assert unknown_group.remark and "NoGroup" in unknown_group.remark
            unknown_topic = await _update(env, "NoTopic", 0, 3, group="TOOLS_CONSUMER")
            expect(unknown_topic, ResponseCode.TOPIC_NOT_EXIST)
            assert unknown_topic.remark and "NoTopic" in unknown_topic.remark

            expect(await _update(env, "T", 0, 5, group="TOOLS_CONSUMER"), ResponseCode.SUCCESS)
            # ali-ons commits -1 for queues it never consumed: ignored, 5 stays.
            expect(await _update(env, "T", 0, -1, group="TOOLS_CONSUMER"), ResponseCode.SUCCESS)
            got = await _query(env, "T", 0, group="TOOLS_CONSUMER", zero=False)
            assert expect(got, ResponseCode.SUCCESS).ext_fields["offset"] == "5"
            # A lower commit is taken (a consumer reset to an older offset re-consumes).
            expect(await _update(env, "T", 0, 2, group="TOOLS_CONSUMER"), ResponseCode.SUCCESS)
            got = await _query(env, "T", 0, group="TOOLS_CONSUMER", zero=False)
            assert got.ext_fields["offset"] == "2"


async def test_oneway_update_like_ali_ons(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            await env.heartbeat("c1", group="G", topics={"T": "*"})
            header = UpdateConsumerOffsetRequestHeader(
                consumer_group="G", topic="T", queue_id=0, commit_offset=9
            )
            await env.client.oneway(
                env.addr,
                RemotingCommand.request(
                    RequestCode.UPDATE_CONSUMER_OFFSET, header.to_ext_fields(), oneway=True
                ),
            )

            async def committed() -> bool:
                response = await _query(env, "T", 0, zero=False)
                return response.code == ResponseCode.SUCCESS

            await wait_until(committed, what="oneway commit applied")
            assert (await _query(env, "T", 0)).ext_fields["offset"] == "9"


async def test_max_min_offsets_and_earliest_store_time(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            for _ in range(3):
                await env.send_ok("T", queue_id=1)
            assert await max_offset(env, "T", 1) == 3
            assert await min_offset(env, "T", 1) == 0
            # Unknown queues and topics answer 0, as RocketMQ does.
            for topic, queue_id in (("T", 0), ("Unknown", 3)):
                assert await max_offset(env, topic, queue_id) == 0
                assert await min_offset(env, topic, queue_id) == 0
            first = (await env.pull_all("T", 1))[0]
            response = expect(
                await env.call(
                    RequestCode.GET_EARLIEST_MSG_STORETIME,
                    GetEarliestMsgStoretimeRequestHeader(topic="T", queue_id=1),
                ),
                ResponseCode.SUCCESS,
            )
            assert int(response.ext_fields["timestamp"]) == first.store_timestamp_ms


async def test_search_offset_by_timestamp(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            # Messages in several distinct milliseconds, a few per millisecond.
            times: list[int] = []
            while len(set(times)) < 4:
                await env.send_ok("T")
                times = [r.store_timestamp_ms for r in await env.pull_all("T", 0)]
            assert times == sorted(times)

            async def search(ts: int, boundary: str | None) -> int:
                header = SearchOffsetRequestHeader(
                    topic="T", queue_id=0, timestamp=ts, boundary_type=boundary
                )
                return await _offset(env, RequestCode.SEARCH_OFFSET_BY_TIMESTAMP, header)

            n = len(times)
            probes = sorted({times[0] - 1000, *times, times[-1] + 1000})
            for ts in probes:
                lower = next((i for i, t in enumerate(times) if t >= ts), n)
                upper = max([i for i, t in enumerate(times) if t <= ts], default=0)
                assert await search(ts, None) == lower, ts
                assert await search(ts, "lower") == lower, ts
                assert await search(ts, "upper") == upper, ts
            assert await search(times[0], None) == 0


async def test_offsets_persist_across_a_broker_restart(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=3)
            await env.heartbeat("c1", group="G", topics={"T": "*"})
            for queue_id in range(3):
                for _ in range(queue_id + 2):
                    await env.send_ok("T", queue_id=queue_id)
            expect(await _update(env, "T", 0, 1), ResponseCode.SUCCESS)
            expect(await _update(env, "T", 2, 3), ResponseCode.SUCCESS)
            # Piggybacked commits are persisted too.
            await env.pull(
                "T",
                1,
                2,
                group="G",
                commit_offset=2,
                sys_flag=FLAG_COMMIT_OFFSET | FLAG_SUBSCRIPTION,
            )

            await env.restart()

            for queue_id, offset in ((0, 1), (1, 2), (2, 3)):
                response = expect(
                    await _query(env, "T", queue_id, zero=False), ResponseCode.SUCCESS
                )
                assert response.ext_fields["offset"] == str(offset)
                assert await max_offset(env, "T", queue_id) == queue_id + 2
            # The group is remembered too, so commits keep working without a heartbeat.
            expect(await _update(env, "T", 0, 2), ResponseCode.SUCCESS)


def _zero_last_record(commitlog_dir: Path) -> int:
    """What a power loss does to a record no fsync covered: its bytes read back as zeros
    (the preallocated segment's old content). Returns the record's offset."""
    segment = sorted(commitlog_dir.iterdir())[0]
    data = bytearray(segment.read_bytes())
    pos = last = 0
    while pos + 4 <= len(data) and (size := int.from_bytes(data[pos : pos + 4], "big")) > 0:
        last, pos = pos, pos + size
    data[last:pos] = bytes(pos - last)
    segment.write_bytes(data)
    return last


async def test_offsets_past_the_recovered_queue_end_are_lowered(tmp_path: Path) -> None:
    """Issue 19 finding 1: a consumer committed offset 3 past a message the store lost
    (acknowledged from the page cache: ASYNC_FLUSH); after the restart the offset is the
    queue's end, and a pull at 3 is moved back, so the next message stored at offset 2 is
    delivered, not skipped."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            await env.heartbeat("c1", group="G", topics={"T": "*"})
            for _ in range(3):
                await env.send_ok("T", queue_id=0)
            expect(await _update(env, "T", 0, 3), ResponseCode.SUCCESS)
            await env.stop()
            store_dir = env.config.store_dir
            _zero_last_record(store_dir / "commitlog")
            (store_dir / "checkpoint").unlink()  # it was written after the record's fsync
            (store_dir / "abort").write_bytes(b"")  # the marker a power loss leaves behind

            await env.start()

            assert await max_offset(env, "T", 0) == 2
            response = expect(await _query(env, "T", 0, zero=False), ResponseCode.SUCCESS)
            assert response.ext_fields["offset"] == "2"
            sent = await env.send_ok("T", b"after the power loss", queue_id=0)
            assert sent.queue_offset == 2
            # A consumer still running pulls from its own next offset, 3, which is now the
            # queue's end: its first pull since the restart is moved back to 2 ...
            moved = await env.pull("T", 0, 3, group="G")
            assert moved.code == ResponseCode.PULL_OFFSET_MOVED, moved
            assert moved.next_begin_offset == 2
            pulled = await env.pull("T", 0, 2, group="G")
            assert pulled.code == ResponseCode.SUCCESS
            assert [r.body for r in pulled.records] == [b"after the power loss"]
            # ... and only the first: from then on it reads from this broker.
            again = await env.pull("T", 0, 3, group="G")
            assert again.code == ResponseCode.PULL_NOT_FOUND, again
            # Another group at offset 3 has its own first pull checked.
            other = await env.pull("T", 0, 3, group="G2")
            assert other.code == ResponseCode.PULL_OFFSET_MOVED, other
