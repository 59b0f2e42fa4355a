"""The SDK producer against a NameServer and real brokers in this process (port 0).

What each test proves is in its docstring. Messages are read back with the SDK's
``PullConsumer`` from exactly the queue and offset the ``SendResult`` names, so a test
fails if the result points anywhere else.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from client.consumer import PullConsumer, PullStatus, open_pull_consumer
from client.message import Message, ReceivedMessage, SendResult, SendStatus
from client.producer import open_producer
from protocol.errors import RocketError, TopicNotExist
from protocol.message import SYSFLAG_COMPRESSED, parse_offset_msg_id
from tests.component.sdk_fixtures import sdk_cluster

DEADLINE_S = 20.0


async def read_back(
    consumer: PullConsumer, result: SendResult, count: int = 1
) -> list[ReceivedMessage]:
    pulled = await consumer.pull(result.queue, result.queue_offset, count)
    assert pulled.status is PullStatus.FOUND, pulled
    return list(pulled.messages[:count])


async def test_round_trip_keeps_tags_keys_properties_and_compressed_bodies(tmp_path: Path) -> None:
    """What a consumer receives is what was sent, field by field; a 10 KiB body travels
    zlib-compressed (sysFlag bit 0) and comes out inflated."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_producer(c.namesrv, group="PG") as producer,
            open_pull_consumer(c.namesrv, group="check") as reader,
        ):
            await c.create_topic("RoundTrip")
            big = bytes(random.Random(7).choice(b"abcdef") for _ in range(10 * 1024))
            sent = [
                Message(
                    topic="RoundTrip",
                    body=b"small",
                    tags="TagA",
                    keys=("k1", "k2"),
                    properties={"color": "red", "n": "1"},
                    flag=5,
                ),
                Message(topic="RoundTrip", body=big, tags="TagB", keys="only-key"),
            ]
            for message in sent:
                result = await producer.send(message)
                assert result.status is SendStatus.SEND_OK
                (got,) = await read_back(reader, result)
                assert got.body == message.body
                assert got.tags == message.tags
                assert got.keys == message.keys
                for name, value in message.properties.items():
                    assert got.properties[name] == value
                assert got.flag == message.flag
                assert got.msg_id == result.msg_id
                assert got.offset_msg_id == result.offset_msg_id
                assert (got.queue, got.queue_offset) == (result.queue, result.queue_offset)
                assert got.reconsume_times == 0
                compressed = bool(got.sys_flag & SYSFLAG_COMPRESSED)
                assert compressed == (len(message.body) >= 4096)


async def test_send_result_ids_name_the_broker_and_commit_log_offset(tmp_path: Path) -> None:
    """offset_msg_id decodes to the storing broker's address and the record's CommitLog
    offset; msg_id is the client's UNIQ_KEY; queue offsets grow by one per message."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_producer(c.namesrv) as producer,
            open_pull_consumer(c.namesrv, group="check") as reader,
        ):
            await c.create_topic("Ids", 1)
            results = [await producer.send(Message(topic="Ids", body=b"%d" % i)) for i in range(3)]
            host, port = c.addr("broker-a").split(":")
            for i, result in enumerate(results):
                ip, store_port, commit_offset = parse_offset_msg_id(result.offset_msg_id)
                assert (ip, store_port) == (host, int(port))
                (got,) = await read_back(reader, result)
                assert got.commit_log_offset == commit_offset
                assert got.store_host == (host, int(port))
                assert result.queue.broker_name == "broker-a"
                assert result.queue_offset == i
                assert len(result.msg_id) == 32 and result.msg_id != result.offset_msg_id
            assert len({r.msg_id for r in results}) == 3


async def test_batch_gets_consecutive_offsets_in_order(tmp_path: Path) -> None:
    """send_batch stores the messages as one request on one queue, in order, each with its
    own properties and id."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_producer(c.namesrv) as producer,
            open_pull_consumer(c.namesrv, group="check") as reader,
        ):
            await c.create_topic("Batch")
            batch = [
                Message(topic="Batch", body=b"b%d" % i, tags=f"T{i}", properties={"i": str(i)})
                for i in range(5)
            ]
            result = await producer.send_batch(batch)
            ids = result.msg_id.split(",")
            assert len(ids) == 5
            got = await read_back(reader, result, 5)
            assert [m.body for m in got] == [m.body for m in batch]
            assert [m.queue_offset for m in got] == list(
                range(result.queue_offset, result.queue_offset + 5)
            )
            assert [m.properties["i"] for m in got] == [str(i) for i in range(5)]
            assert [m.tags for m in got] == [f"T{i}" for i in range(5)]
            assert [m.msg_id for m in got] == ids
            with pytest.raises(ValueError, match="one topic"):
                await producer.send_batch(
                    [Message(topic="A", body=b""), Message(topic="B", body=b"")]
                )


async def test_sharding_key_pins_a_key_to_one_queue_in_order(tmp_path: Path) -> None:
    """Every message of one sharding key lands on one queue with increasing offsets;
    different keys spread over the queues."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Ordered", 8)
            by_key: dict[str, list[SendResult]] = {}
            for i in range(40):
                key = f"order-{i % 8}"
                result = await producer.send(
                    Message(topic="Ordered", body=b"%d" % i), sharding_key=key
                )
                by_key.setdefault(key, []).append(result)
            for key, results in by_key.items():
                assert len({r.queue for r in results}) == 1, key
                offsets = [r.queue_offset for r in results]
                assert offsets == sorted(offsets)
            assert len({rs[0].queue for rs in by_key.values()}) >= 3


async def test_send_fails_over_to_the_other_broker_group_and_refreshes_the_route(
    tmp_path: Path,
) -> None:
    """Multi-master: the first attempt goes to a stopped broker (connection refused); the
    send is retried on the other group and succeeds, the dead broker is isolated, and the
    cached route is re-read at once (the 30 s refresh is set to an hour here)."""
    # A seed whose first round-robin pick is a broker-b queue (queues sort a0..a3, b0..b3).
    seed = next(s for s in range(1000) if random.Random(s).randrange(1 << 16) % 8 >= 4)
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path, brokers=("broker-a", "broker-b")) as c,
            open_producer(
                c.namesrv, rng=random.Random(seed), route_refresh_interval_s=3600
            ) as producer,
        ):
            await c.create_topic("Failover")
            cached = await producer.routes.get("Failover")
            assert {q.broker_name for q in cached.publish} == {"broker-a", "broker-b"}
            await c.stop_broker("broker-b")
            await c.wait_route("Failover", {"broker-a": 4})
            assert producer.routes.cached("Failover") is cached, "still the stale route"
            result = await producer.send(Message(topic="Failover", body=b"x"))
            assert result.status is SendStatus.SEND_OK
            assert result.queue.broker_name == "broker-a"
            assert not producer.faults.is_available("broker-b", trio.current_time())
            fresh = producer.routes.cached("Failover")
            assert fresh is not None and fresh is not cached
            assert {q.broker_name for q in fresh.publish} == {"broker-a"}
            for i in range(8):  # and every later send goes to the live group at once
                later = await producer.send(Message(topic="Failover", body=b"%d" % i))
                assert later.queue.broker_name == "broker-a"


async def test_unknown_topic_without_auto_create_is_a_clear_rocket_error(tmp_path: Path) -> None:
    """With auto-create off, a send to a topic nobody created raises TopicNotExist (a
    RocketError) naming the topic, within the send timeout."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path, auto_create_topic_enable=False) as c,
            open_producer(c.namesrv, timeout_s=2.0) as producer,
        ):
            started = trio.current_time()
            with pytest.raises(TopicNotExist) as info:
                await producer.send(Message(topic="NoSuchTopic", body=b"x"))
            assert isinstance(info.value, RocketError)
            assert "NoSuchTopic" in str(info.value)
            assert trio.current_time() - started < 2.5


async def test_oneway_send_is_stored(tmp_path: Path) -> None:
    """send_oneway returns without an answer, and the message is stored all the same."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_producer(c.namesrv) as producer,
            open_pull_consumer(c.namesrv, group="check") as reader,
        ):
            await c.create_topic("Oneway", 1)
            await producer.send_oneway(Message(topic="Oneway", body=b"fire"))
            (queue,) = await reader.fetch_subscribe_queues("Oneway")
            for _ in range(200):
                pulled = await reader.pull(queue, 0)
                if pulled.status is PullStatus.FOUND:
                    break
                await trio.sleep(0.01)
            assert [m.body for m in pulled.messages] == [b"fire"]
