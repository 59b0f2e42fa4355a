"""Oversized and out-of-range requests are refused, and the broker stays responsive.

Each test replays one row of issue 13 with its real input against a broker in this process
over loopback, while a probe (another client) sends a message every 50 ms: the refusal
carries a clear code and remark, the probe's worst wait stays small (a liveness check, not
a benchmark: the bound is generous), nothing refused is stored or persisted, and the
broker keeps serving.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from broker.offsets import ConsumerOffsetManager
from broker.topics import TopicConfigManager
from protocol.batch_body import BatchItem, encode_batch_body
from protocol.bodies import LockBatchRequestBody
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder
from protocol.headers import (
    CreateTopicRequestHeader,
    GetTopicStatsInfoRequestHeader,
    PullMessageRequestHeader,
    SendMessageRequestHeaderV2,
)
from protocol.route import MessageQueue, TopicConfig
from protocol.rpc import open_client, split_address
from tests.component.broker_fixtures import (
    FLAG_SUBSCRIPTION,
    FLAG_SUSPEND,
    PERM_RW,
    PULL_OFFSET_FIELDS,
    BrokerEnv,
    broker_env,
    expect,
    heartbeat_body,
    now_ms,
    send_header,
    wait_until,
)

#: Deadline of a whole test: the attacks are big, the machine may be busy.
DEADLINE_S = 90.0
#: The probe's worst wait allowed during an attack. Before the fixes it was 8-130 s. Alone
#: on a quiet 2-core machine the worst is 0.2-0.6 s (row 9: the client's 150 MiB of pulls
#: share this process); CI's 3 workers on 2 cores, beside tests of many processes, once
#: measured 3.02 s there, so the bound leaves room for a busy machine.
LIVENESS_S = 5.0
PROBE_INTERVAL_S = 0.05


@attrs.define
class Probe:
    """Another client's sends during an attack, and the worst wait it saw."""

    sent: int = 0
    worst_s: float = 0.0


@asynccontextmanager
async def probing(env: BrokerEnv, topic: str = "P") -> AsyncIterator[Probe]:
    """Send to ``topic`` every 50 ms from a client of its own while the block runs; after
    it, assert the probe got through and never waited longer than ``LIVENESS_S``. A blocked
    event loop shows as a slow send or as a late wake-up (the probe shares the process)."""
    probe = Probe()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_client(name="probe", default_timeout_s=30.0) as client:
            task_status.started()
            while True:
                began = trio.current_time()
                await env.send_ok(topic, b"probe", client=client)
                probe.sent += 1
                slept = trio.current_time()
                probe.worst_s = max(probe.worst_s, slept - began)
                await trio.sleep(PROBE_INTERVAL_S)
                probe.worst_s = max(probe.worst_s, trio.current_time() - slept - PROBE_INTERVAL_S)

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        await trio.sleep(0.2)
        yield probe
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert probe.sent >= 2, probe
    assert probe.worst_s < LIVENESS_S, f"another client waited {probe.worst_s:.2f} s"


def request(code: int, ext: Mapping[str, str], body: bytes = b"") -> RemotingCommand:
    return RemotingCommand.request(code, dict(ext), body)


async def pipelined(addr: str, commands: Iterable[RemotingCommand]) -> list[RemotingCommand]:
    """Write every command at once on one fresh connection (as a hostile client would);
    the responses in request order."""
    frames = [attrs.evolve(c, opaque=i + 1).encode() for i, c in enumerate(commands)]
    host, port = split_address(addr)
    decoder = FrameDecoder()
    answers: dict[int, RemotingCommand] = {}
    stream = await trio.open_tcp_stream(host, port)
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, b"".join(frames))
        while len(answers) < len(frames):
            data = await stream.receive_some(1 << 20)
            assert data, f"connection closed after {len(answers)} of {len(frames)} answers"
            for frame in decoder.feed(data):
                command = RemotingCommand.from_frame(frame)
                if command.is_response:
                    answers[command.opaque] = command
    return [answers[i + 1] for i in range(len(frames))]


def refused(response: RemotingCommand, codes: int | tuple[int, ...], *words: str) -> None:
    allowed = codes if isinstance(codes, tuple) else (codes,)
    assert response.code in allowed, (response.code, response.remark)
    assert response.remark, "a refusal says why"
    for word in words:
        assert word in response.remark, (word, response.remark)


def create_header(topic: str, read: int | str, write: int | str | None = None) -> dict[str, str]:
    """UPDATE_AND_CREATE_TOPIC ext fields, numbers as given (10^20 included)."""
    return {
        "topic": topic,
        "defaultTopic": "TBW102",
        "readQueueNums": str(read),
        "writeQueueNums": str(read if write is None else write),
        "perm": str(PERM_RW),
        "topicFilterType": "SINGLE_TAG",
    }


async def topic_table(env: BrokerEnv) -> dict[str, Any]:
    response = expect(await env.call(RequestCode.GET_ALL_TOPIC_CONFIG), ResponseCode.SUCCESS)
    table: dict[str, Any] = json.loads(response.body)["topicConfigTable"]
    return table


async def stats_entries(env: BrokerEnv, topic: str) -> list[Any]:
    response = await env.call(
        RequestCode.GET_TOPIC_STATS_INFO, GetTopicStatsInfoRequestHeader(topic=topic)
    )
    entries: list[Any] = json.loads(expect(response, ResponseCode.SUCCESS).body)["offsetTable"]
    return entries


async def max_offset(env: BrokerEnv, topic: str, queue_id: int = 0) -> int:
    response = await env.call(
        RequestCode.GET_MAX_OFFSET, {"topic": topic, "queueId": str(queue_id)}
    )
    return int(expect(response, ResponseCode.SUCCESS).ext_fields["offset"])


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[BrokerEnv]:
    async with broker_env(tmp_path) as env:
        await env.create_topic("P", queues=1)
        yield env


# --- row 1: queue counts ------------------------------------------------------------------


async def test_queue_counts_past_the_cap_are_refused_on_create_and_update(env: BrokerEnv) -> None:
    """Row 1: writeQueueNums 10^20 or 10^6 was stored, survived restarts, and
    GET_TOPIC_STATS_INFO then looped on the event loop (10^6: 3.6 s, a 130 MB frame)."""
    with trio.fail_after(DEADLINE_S):
        await env.create_topic("T", queues=4)
        async with probing(env):
            for queues in (10**20, 10**6, 1025):
                for topic in ("New", "T"):  # a create and an update
                    response = await env.call(
                        RequestCode.UPDATE_AND_CREATE_TOPIC, create_header(topic, 4, queues)
                    )
                    # 10^20 is no Java int: the header parser may refuse it first.
                    codes = (ResponseCode.INVALID_PARAMETER, ResponseCode.SYSTEM_ERROR)
                    refused(response, codes, "writeQueueNums")
            response = await env.call(
                RequestCode.UPDATE_AND_CREATE_TOPIC, create_header("New", 10**6, 1)
            )
            refused(response, ResponseCode.INVALID_PARAMETER, "maxTopicQueueNums", "1000000")
            expect(
                await env.call(RequestCode.UPDATE_AND_CREATE_TOPIC, create_header("Max", 1024)),
                ResponseCode.SUCCESS,
            )
            assert len(await stats_entries(env, "Max")) == 1024
            assert len(await stats_entries(env, "T")) == 4
        table = await topic_table(env)
        assert "New" not in table and table["T"]["writeQueueNums"] == 4
        await env.restart()
        table = await topic_table(env)
        assert "New" not in table and table["T"]["writeQueueNums"] == 4


async def test_a_topic_file_from_before_the_cap_is_served_capped(env: BrokerEnv) -> None:
    """Row 1, "survives restart": a topics file already holding 10^6 queues (written
    before the cap, or by hand) is loaded with maxTopicQueueNums queues, and the stats of
    that topic answer at once."""
    with trio.fail_after(DEADLINE_S):
        path = env.config.store_dir / "config" / "topics.cbor"
        await env.stop()
        old = TopicConfigManager(cluster_name="DefaultCluster", broker_name="broker-a")
        old.load(path)
        old.restore(
            {
                "topics": [
                    TopicConfig(
                        topic_name="Huge", read_queue_nums=10**6, write_queue_nums=10**6, perm=6
                    ).to_json()
                ],
                "dataVersion": old.data_version.to_json(),
            }
        )
        old.max_queue_nums = 2**80
        old.save(path)
        await env.start(max_topic_queue_nums=64)
        async with probing(env):
            assert len(await stats_entries(env, "Huge")) == 64
        assert (await topic_table(env))["Huge"]["writeQueueNums"] == 64


# --- row 4: batches ---------------------------------------------------------------------------


async def test_a_batch_of_520k_empty_items_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    """Row 4: SEND_BATCH with 520,000 empty items (11 MB) blocked the broker 9.2 s and took
    580 MB, stored every item, then answered SYSTEM_ERROR (an id list over 16 MiB), so the
    producer retried and duplicated."""
    body = encode_batch_body([BatchItem(body=b"")] * 520_000)
    header = SendMessageRequestHeaderV2.from_v1(send_header("T", batch=True))
    with trio.fail_after(DEADLINE_S):
        # Body size first: at the default maxMessageSize (4 MiB) the body alone is too big.
        async with broker_env(tmp_path) as env:
            await env.create_topic("P", queues=1)
            await env.create_topic("T", queues=1)
            async with probing(env):
                response = await env.call(RequestCode.SEND_BATCH_MESSAGE, header, body)
            refused(response, ResponseCode.MESSAGE_ILLEGAL, "maxMessageSize")
            assert await max_offset(env, "T") == 0
        # Then the count, before decoding: 12 MiB messages allowed, 520,000 items are not.
        async with broker_env(tmp_path, max_message_bytes=12 << 20) as env:
            tracemalloc.start()
            try:
                async with probing(env):
                    began = trio.current_time()
                    response = await env.call(RequestCode.SEND_BATCH_MESSAGE, header, body)
                    took_s = trio.current_time() - began
                _, peak_bytes = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            refused(response, ResponseCode.MESSAGE_ILLEGAL, "maxBatchMessageNums", "10000")
            assert took_s < LIVENESS_S
            # The client's and the broker's copies of the 11 MB frame, no per-item objects.
            assert peak_bytes < 120 << 20, peak_bytes
            assert await max_offset(env, "T") == 0
            # A batch within both limits is stored whole, with an id per message.
            small = encode_batch_body([BatchItem(body=b"x")] * 100)
            sent = expect(
                await env.call(RequestCode.SEND_BATCH_MESSAGE, header, small), ResponseCode.SUCCESS
            )
            assert len(sent.ext_fields["msgId"].split(",")) == 100
            assert await max_offset(env, "T") == 100


# --- row 7: topic creates ----------------------------------------------------------------


async def test_6000_pipelined_topic_creates_share_writes_and_registrations(env: BrokerEnv) -> None:
    """Row 7: each create rewrote and fsynced the whole topic file on the event loop and
    re-registered with the NameServers: another client's send waited 41.9 s. Now
    concurrent creates share one write off the loop, and one registration per interval
    announces a burst; each create is still on disk and announced before it is answered."""
    count = 6000
    creates = [
        request(
            RequestCode.UPDATE_AND_CREATE_TOPIC,
            CreateTopicRequestHeader(
                topic=f"X{i}",
                default_topic="TBW102",
                read_queue_nums=4,
                write_queue_nums=4,
                perm=PERM_RW,
                topic_filter_type="SINGLE_TAG",
            ).to_ext_fields(),
        )
        for i in range(count)
    ]
    with trio.fail_after(DEADLINE_S):
        async with probing(env):
            answers = await pipelined(env.addr, creates)
        assert {a.code for a in answers} == {ResponseCode.SUCCESS}
        # Persisted before answered: the file holds every topic now, before any stop.
        on_disk = TopicConfigManager(cluster_name="DefaultCluster", broker_name="broker-a")
        on_disk.load(env.config.store_dir / "config" / "topics.cbor")
        assert all(f"X{i}" in on_disk for i in range(count))
        # Announced before answered too: the NameServer routes the last one already.
        assert await env.route(f"X{count - 1}") is not None
        await env.restart()
        table = await topic_table(env)
        assert all(f"X{i}" in table for i in range(count))


# --- row 9: held pulls -------------------------------------------------------------------------


def pull_request(topic: str, queue_id: int = 0, body: bytes = b"") -> RemotingCommand:
    header = PullMessageRequestHeader(
        consumer_group="CG",
        topic=topic,
        queue_id=queue_id,
        queue_offset=0,
        max_msg_nums=32,
        sys_flag=FLAG_SUBSCRIPTION | FLAG_SUSPEND,
        commit_offset=0,
        suspend_timeout_millis=15_000,
        sub_version=now_ms(),
        subscription="*",
        expression_type="TAG",
    )
    return request(RequestCode.PULL_MESSAGE, header.to_ext_fields(), body)


async def held(env: BrokerEnv, count: int) -> dict[str, str]:
    info: dict[str, str] = {}

    async def reached() -> bool:
        info.update(await env.runtime_info())
        return int(info["heldPulls"]) >= count

    await wait_until(reached, timeout_s=10.0, what=f"{count} held pulls")
    return info


async def test_held_pulls_of_1_mib_stay_within_the_byte_budget(tmp_path: Path) -> None:
    """Row 9: 150 long-poll PULLs carrying 1 MiB each held 153 MB. Past the hold budget
    (here 8 MiB) a pull is answered SYSTEM_BUSY at once (clients pull again later), with
    the offsets every PULL answer carries; the held ones are still served."""
    budget = 8 << 20
    async with broker_env(tmp_path, max_held_pull_bytes=budget) as env:
        await env.create_topic("P", queues=1)
        await env.create_topic("T", queues=1)
        with trio.fail_after(DEADLINE_S):
            answers: list[RemotingCommand] = []
            async with probing(env), trio.open_nursery() as nursery:

                async def pull() -> None:
                    pulled = await env.client.call(
                        env.addr, pull_request("T", body=b"x" * (1 << 20)), timeout_s=30.0
                    )
                    answers.append(pulled)

                for _ in range(150):
                    nursery.start_soon(pull)
                await wait_until(lambda: len(answers) >= 143, timeout_s=10.0, what="refusals")
                info = await held(env, 7)
                assert int(info["heldPullBytes"]) <= budget
                assert int(info["heldPulls"]) <= 8
                await env.send_ok("T", b"wake up")
            busy = [a for a in answers if a.code == ResponseCode.SYSTEM_BUSY]
            found = [a for a in answers if a.code == ResponseCode.SUCCESS]
            assert len(busy) + len(found) == 150 and len(found) in (7, 8), len(found)
            for answer in busy:
                refused(answer, ResponseCode.SYSTEM_BUSY, "maxHeldPullBytes")
                assert all(name in answer.ext_fields for name in PULL_OFFSET_FIELDS)
            assert int((await env.runtime_info())["heldPullBytes"]) == 0


async def test_held_pulls_stay_within_the_count_budget(tmp_path: Path) -> None:
    async with broker_env(tmp_path, max_held_pull_nums=5) as env:
        await env.create_topic("T", queues=2)
        with trio.fail_after(DEADLINE_S):
            answers = []
            async with trio.open_nursery() as nursery:

                async def pull(queue_id: int) -> None:
                    answer = await env.client.call(
                        env.addr, pull_request("T", queue_id), timeout_s=30.0
                    )
                    answers.append(answer)

                for i in range(8):
                    nursery.start_soon(pull, i % 2)
                await held(env, 5)
                await wait_until(lambda: len(answers) == 3, what="refusals")
                refused(answers[0], ResponseCode.SYSTEM_BUSY, "maxHeldPullNums 5")
                await env.send_ok("T", queue_id=0)
                await env.send_ok("T", queue_id=1)
            assert sorted(a.code for a in answers) == [0] * 5 + [ResponseCode.SYSTEM_BUSY] * 3


# --- row 11: queue ids -----------------------------------------------------------------------


async def test_offset_commits_for_queues_the_topic_lacks_are_refused(env: BrokerEnv) -> None:
    """Row 11: UPDATE_CONSUMER_OFFSET for 20,001 queue ids (up to 10^20) of a 1-queue topic
    were all accepted and persisted."""
    await env.create_topic("T1", queues=1)
    await env.heartbeat("c@1", group="G", topics={"T1": "*"})
    queue_ids: list[int | str] = [*range(20_000), str(10**20)]
    commits = [
        request(
            RequestCode.UPDATE_CONSUMER_OFFSET,
            {"consumerGroup": "G", "topic": "T1", "queueId": str(q), "commitOffset": "5"},
        )
        for q in queue_ids
    ]
    with trio.fail_after(DEADLINE_S):
        async with probing(env):
            answers = await pipelined(env.addr, commits)
        expect(answers[0], ResponseCode.SUCCESS)
        for answer in answers[1:-1]:
            refused(answer, ResponseCode.INVALID_PARAMETER, "is illegal", "topic:[T1] has 1 queues")
        # 10^20 is no Java int: the header parser may refuse it before the handler does.
        refused(answers[-1], (ResponseCode.INVALID_PARAMETER, ResponseCode.SYSTEM_ERROR), "queueId")
        expected = {"offsetTable": {"T1@G": {"0": 5}}}
        response = await env.call(RequestCode.GET_ALL_CONSUMER_OFFSET)
        assert json.loads(expect(response, ResponseCode.SUCCESS).body) == expected
        await env.restart()
        on_disk = ConsumerOffsetManager()
        on_disk.load(env.config.store_dir / "config" / "consumerOffset.cbor")
        assert on_disk.offset_table() == {"T1@G": {0: 5}}


async def test_every_request_naming_a_queue_checks_it(env: BrokerEnv) -> None:
    await env.create_topic("T1", queues=1)
    await env.heartbeat("c@1", group="G", topics={"T1": "*"})
    with trio.fail_after(DEADLINE_S):
        for code, ext in [
            (RequestCode.QUERY_CONSUMER_OFFSET, {"consumerGroup": "G", "topic": "T1"}),
            (RequestCode.GET_MAX_OFFSET, {"topic": "T1"}),
            (RequestCode.GET_MIN_OFFSET, {"topic": "T1"}),
            (RequestCode.GET_EARLIEST_MSG_STORETIME, {"topic": "T1"}),
            (RequestCode.SEARCH_OFFSET_BY_TIMESTAMP, {"topic": "T1", "timestamp": "0"}),
        ]:
            for queue_id in (1, -1, 2**31 - 1):
                response = await env.call(code, {**ext, "queueId": str(queue_id)})
                refused(response, ResponseCode.INVALID_PARAMETER, f"queueId[{queue_id}]")
        refused(
            (await env.pull("T1", 1, group="G")).response,
            ResponseCode.INVALID_PARAMETER,
            "queueId[1]",
        )
        refused(await env.send("T1", queue_id=1), ResponseCode.INVALID_PARAMETER, "queueId[1]")
        # A topic this broker does not have still answers 0 (RocketMQ), within the cap.
        assert await max_offset(env, "Unknown", 1023) == 0
        refused(
            await env.call(RequestCode.GET_MAX_OFFSET, {"topic": "Unknown", "queueId": "1024"}),
            ResponseCode.INVALID_PARAMETER,
            "maxTopicQueueNums",
        )
        # Locks: a queue the topic lacks is refused, a topic the broker lacks is not locked.
        lock = LockBatchRequestBody(
            consumer_group="G",
            client_id="c@1",
            mq_set=(MessageQueue(topic="T1", broker_name="broker-a", queue_id=7),),
        )
        refused(
            await env.call(RequestCode.LOCK_BATCH_MQ, None, lock.to_bytes()),
            ResponseCode.INVALID_PARAMETER,
            "queueId[7]",
        )
        too_many = attrs.evolve(
            lock,
            mq_set=tuple(
                MessageQueue(topic=f"T{i}", broker_name="broker-a", queue_id=0) for i in range(8193)
            ),
        )
        refused(
            await env.call(RequestCode.LOCK_BATCH_MQ, None, too_many.to_bytes()),
            ResponseCode.INVALID_PARAMETER,
            "maxLockBatchQueues",
        )


async def test_oversized_heartbeats_are_refused_before_registering_anything(tmp_path: Path) -> None:
    async with broker_env(tmp_path, max_heartbeat_groups=3) as env:
        with trio.fail_after(DEADLINE_S):
            data = json.loads(heartbeat_body("c@1", group="G1", topics={"T": "*"}))
            data["consumerDataSet"] = [
                {**data["consumerDataSet"][0], "groupName": f"G{i}"} for i in range(4)
            ]
            response = await env.call(RequestCode.HEART_BEAT, None, json.dumps(data).encode())
            refused(response, ResponseCode.INVALID_PARAMETER, "4 groups", "maxHeartbeatGroups")
            assert not any(name.startswith("%RETRY%G") for name in await topic_table(env))


async def test_oversized_header_strings_are_refused_before_parsing(env: BrokerEnv) -> None:
    """A 16 MiB subscription or properties string took seconds to parse, per request."""
    await env.create_topic("T", queues=1)
    with trio.fail_after(DEADLINE_S):
        async with probing(env):
            tags = "||".join(f"t{i}" for i in range(1_000_000))
            pulled = await env.pull("T", subscription=tags)
            refused(
                pulled.response, ResponseCode.SUBSCRIPTION_PARSE_FAILED, "maxSubscriptionLength"
            )
            extra = {f"k{i}": "v" for i in range(500_000)}
            response = await env.send("T", properties=extra)
            refused(response, ResponseCode.MESSAGE_ILLEGAL, "properties", "32767")
            response = await env.send("T", reconsume_times=-1)
            refused(response, ResponseCode.INVALID_PARAMETER, "reconsumeTimes")
        assert await max_offset(env, "T") == 0
