"""Natural batching (issue 14, item 3) against a real broker in this process.

Concurrent ``send`` calls leave as few SEND_BATCH_MESSAGE requests, and every caller's
``SendResult`` names exactly the record a consumer then reads (msg id, offset id, queue,
offset). A batch the broker refuses gives each caller what a single send would have got:
sent again alone when it was refused for being a batch, retried when nothing was stored,
``ConnectionLost`` / ``RemotingTimeout`` when the outcome is unknown (a TCP proxy in front
of the broker cuts the connection or swallows the answers). Ordered sends keep their
order; a caller cancelled while its message waits is never sent and costs the others
nothing; ``auto_batch=False`` sends one request per message.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from client.batching import BatchConfig
from client.consumer import PullStatus, open_pull_consumer
from client.message import Message, ReceivedMessage, SendResult, SendStatus
from client.producer import Producer, not_stored, open_producer
from client.routes import TopicInfo
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.errors import ConnectionLost, MessageIllegal, RemotingTimeout, RocketError
from protocol.headers import CreateTopicRequestHeader
from protocol.route import BrokerData, MessageQueue, QueueData, TopicRouteData
from protocol.rpc import open_client
from tests.component.sdk_fixtures import SdkCluster, sdk_cluster, wait_until

DEADLINE_S = 30.0


async def send_concurrently(
    producer: Producer, messages: Sequence[Message], **kwargs: object
) -> list[SendResult | RocketError]:
    """Every message from its own task, all at once; each outcome, in message order."""
    out: list[SendResult | RocketError] = [RemotingTimeout("not run")] * len(messages)

    async def one(i: int) -> None:
        try:
            out[i] = await producer.send(messages[i], **kwargs)  # type: ignore[arg-type]
        except RocketError as exc:
            out[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(len(messages)):
            nursery.start_soon(one, i)
    return out


async def read_all(c: SdkCluster, topic: str) -> dict[MessageQueue, list[ReceivedMessage]]:
    """Every stored message of ``topic``, per queue, in offset order."""
    out: dict[MessageQueue, list[ReceivedMessage]] = {}
    async with open_pull_consumer(c.namesrv, group="inspector") as reader:
        for queue in await reader.fetch_subscribe_queues(topic):
            got: list[ReceivedMessage] = []
            while True:
                pulled = await reader.pull(queue, len(got), 256)
                if pulled.status is not PullStatus.FOUND:
                    break
                got += pulled.messages
            out[queue] = got
    return out


def bodies_of(stored: dict[MessageQueue, list[ReceivedMessage]]) -> list[bytes]:
    return sorted(m.body for messages in stored.values() for m in messages)


def assert_results_name_their_records(
    messages: Sequence[Message],
    results: Sequence[SendResult | RocketError],
    stored: dict[MessageQueue, list[ReceivedMessage]],
) -> None:
    """Each result's queue and offset hold exactly its message, with its ids."""
    for message, result in zip(messages, results, strict=True):
        assert isinstance(result, SendResult), result
        assert result.status is SendStatus.SEND_OK
        got = stored[result.queue][result.queue_offset]
        assert got.queue_offset == result.queue_offset
        assert got.body == message.body
        assert got.msg_id == result.msg_id
        assert got.offset_msg_id == result.offset_msg_id
    assert bodies_of(stored) == sorted(m.body for m in messages)


async def test_concurrent_sends_leave_in_few_batches_and_each_result_is_its_record(
    tmp_path: Path,
) -> None:
    """200 sends at once: a handful of requests (the first alone, the rest batched as
    they queued behind it); each result's msg id, offset id, queue and offset name the
    record a consumer reads there, and nothing is stored twice."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Natural", 4)
            messages = [
                Message(topic="Natural", body=b"m%03d" % i, tags=f"T{i % 3}", keys=f"k{i}")
                for i in range(200)
            ]
            results = await send_concurrently(producer, messages)
            stats = producer.statistics()
            assert stats.requests <= 20, stats
            assert stats.batch_requests >= 1 and stats.batched_messages >= 150, stats
            assert stats.waiting_messages == 0
            stored = await read_all(c, "Natural")
            assert_results_name_their_records(messages, results, stored)
            by_body = {m.body: m for ms in stored.values() for m in ms}
            for message in messages:  # each record keeps its own tags and keys
                assert by_body[message.body].tags == message.tags
                assert by_body[message.body].keys == message.keys


async def test_natural_batches_spread_over_the_brokers_queues(tmp_path: Path) -> None:
    """Each batch takes the broker's next queue, as RocketMQ selects a queue per batch.
    Taken from its first message, every batch of 8 (the queue count) went to the same
    queue: at 256 in flight the default cluster filled 4 of 8 queues and left 4 empty."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_producer(c.namesrv, batch_max_count=8) as producer,
        ):
            await c.create_topic("Spread", 8)
            messages = [Message(topic="Spread", body=b"s%04d" % i) for i in range(800)]
            results = await send_concurrently(producer, messages)
            assert producer.statistics().batch_requests >= 50, producer.statistics()
            stored = await read_all(c, "Spread")
            assert_results_name_their_records(messages, results, stored)
            counts = sorted(len(got) for got in stored.values())
            assert len(counts) == 8 and counts[0] >= 50, counts


async def test_auto_batch_off_sends_one_request_per_message(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_producer(c.namesrv, auto_batch=False) as producer,
        ):
            await c.create_topic("Single", 2)
            messages = [Message(topic="Single", body=b"s%02d" % i) for i in range(50)]
            results = await send_concurrently(producer, messages)
            stats = producer.statistics()
            assert (stats.requests, stats.batch_requests) == (50, 0)
            assert_results_name_their_records(messages, results, await read_all(c, "Single"))


async def test_what_cannot_be_batched_goes_alone(tmp_path: Path) -> None:
    """Delayed, compressed (>= 4 KiB) and wait_store=False messages never share a request;
    the rest do."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Mixed", 1)
            alone = [
                Message(topic="Mixed", body=b"big" + bytes(5000)),
                Message(topic="Mixed", body=b"nowait", wait_store=False),
                Message(topic="Mixed", body=b"later", delay_level=1),
            ] * 10
            results = await send_concurrently(producer, alone)
            assert all(isinstance(r, SendResult) for r in results)
            assert producer.statistics().batch_requests == 0


async def test_a_batch_refused_for_being_one_is_sent_again_alone(tmp_path: Path) -> None:
    """The broker takes 2 KiB per request: batches of 1 KiB bodies are refused
    (MESSAGE_ILLEGAL) and each message is sent again alone and stored once; a message too
    big on its own gets the refusal a single send gets, and costs the others nothing."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path, max_message_bytes=2048) as c,
            open_producer(c.namesrv) as producer,
        ):
            await c.create_topic("Refused", 1)
            messages = [Message(topic="Refused", body=b"%04d" % i + bytes(1000)) for i in range(30)]
            too_big = Message(topic="Refused", body=b"X" * 3000)
            results = await send_concurrently(producer, [*messages, too_big])
            assert isinstance(results[-1], MessageIllegal), results[-1]
            stats = producer.statistics()
            assert stats.batch_requests >= 1, stats
            assert_results_name_their_records(messages, results[:-1], await read_all(c, "Refused"))


async def set_topic_perm(c: SdkCluster, topic: str, perm: int) -> None:
    header = CreateTopicRequestHeader(
        topic=topic,
        default_topic="TBW102",
        read_queue_nums=2,
        write_queue_nums=2,
        perm=perm,
        topic_filter_type="SINGLE_TAG",
    )
    response = await c.call(
        c.addr("broker-a"), RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext_fields()
    )
    assert response.code == ResponseCode.SUCCESS, response.remark


@pytest.mark.parametrize("auto_batch", [True, False])
async def test_a_refusal_that_stored_nothing_is_retried_as_for_a_single_send(
    tmp_path: Path, auto_batch: bool
) -> None:
    """The topic turns read-only: every caller is refused (nothing stored) and retries
    within its deadline, batched or not; once it is writable again they all succeed and
    each message is stored once. Left read-only, every caller hears a not-stored error."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_producer(c.namesrv, auto_batch=auto_batch, timeout_s=5.0) as producer,
        ):
            await c.create_topic("ReadOnly", 2)
            await producer.send(Message(topic="ReadOnly", body=b"warm"))  # route cached
            await set_topic_perm(c, "ReadOnly", PERM_READ)
            messages = [Message(topic="ReadOnly", body=b"r%02d" % i) for i in range(40)]
            results: list[SendResult | RocketError] = []

            async def send() -> None:
                results.extend(await send_concurrently(producer, messages))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await trio.sleep(0.5)
                await set_topic_perm(c, "ReadOnly", PERM_READ | PERM_WRITE)
            stored = await read_all(c, "ReadOnly")
            assert bodies_of(stored) == sorted([b"warm", *(m.body for m in messages)])
            assert all(isinstance(r, SendResult) for r in results), results

            await set_topic_perm(c, "ReadOnly", PERM_READ)
            refused = await send_concurrently(
                producer, [Message(topic="ReadOnly", body=b"never")] * 20, timeout_s=1.0
            )
            assert all(isinstance(r, RocketError) and not_stored(r) for r in refused), refused
            assert b"never" not in bodies_of(await read_all(c, "ReadOnly"))


# --- unknown outcomes: a proxy in front of the broker ----------------------------------------


@asynccontextmanager
async def tcp_proxy(
    target: str,
    *,
    delay_s: float = 0.0,
    drop_replies: bool = False,
    cut_after_s: float | None = None,
) -> AsyncIterator[str]:
    """A TCP proxy to ``target``: requests forwarded ``delay_s`` late; answers swallowed
    (``drop_replies``); each client connection closed ``cut_after_s`` after its first
    request bytes went through (``None``: never)."""
    host, port = target.rsplit(":", 1)

    async def handle(client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream(host, int(port)) as upstream,
            trio.open_nursery() as nursery,
        ):

            async def up() -> None:
                async for data in client:
                    await trio.sleep(delay_s)
                    await upstream.send_all(data)
                    if cut_after_s is not None:
                        await trio.sleep(cut_after_s)
                        break
                nursery.cancel_scope.cancel()

            async def down() -> None:
                async for data in upstream:
                    if not drop_replies:
                        await client.send_all(data)
                nursery.cancel_scope.cancel()

            nursery.start_soon(up)
            nursery.start_soon(down)

    async def guarded(client: trio.SocketStream) -> None:
        try:
            await handle(client)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # a side hung up: the proxy's connection ends with it

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, guarded, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


@attrs.define
class FixedRoutes:
    """Routes that always name ``addr`` as the master of broker-a (the proxy)."""

    info: TopicInfo

    @classmethod
    def through(cls, topic: str, addr: str, queues: int) -> FixedRoutes:
        route = TopicRouteData(
            queue_datas=[
                QueueData(
                    broker_name="broker-a",
                    read_queue_nums=queues,
                    write_queue_nums=queues,
                    perm=PERM_READ | PERM_WRITE,
                )
            ],
            broker_datas=[BrokerData(cluster="c", broker_name="broker-a", broker_addrs={0: addr})],
        )
        mqs = tuple(
            MessageQueue(topic=topic, broker_name="broker-a", queue_id=i) for i in range(queues)
        )
        return cls(TopicInfo(topic=topic, route=route, publish=mqs, subscribe=mqs))

    def cached(self, topic: str) -> TopicInfo:
        return self.info

    async def get(self, topic: str) -> TopicInfo:
        return self.info

    def invalidate(self, topic: str) -> None:
        pass


@asynccontextmanager
async def producer_via(addr: str, topic: str, *, timeout_s: float) -> AsyncIterator[Producer]:
    """A batching producer (no retries) whose every request goes to ``addr``."""
    async with (
        open_client(name="producer via proxy", default_timeout_s=timeout_s) as client,
        trio.open_nursery() as nursery,
    ):
        yield Producer(
            client,
            FixedRoutes.through(topic, addr, 1),  # type: ignore[arg-type]
            group="PG",
            client_id="test",
            timeout_s=timeout_s,
            retries=0,
            rng=random.Random(1),
            batching=(nursery, BatchConfig()),
        )
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("proxy", "error"),
    [
        ({"drop_replies": True, "cut_after_s": 0.2}, ConnectionLost),
        ({"drop_replies": True}, RemotingTimeout),
    ],
)
async def test_a_batch_whose_outcome_is_unknown_is_unknown_to_every_caller(
    tmp_path: Path, proxy: dict[str, object], error: type[RocketError]
) -> None:
    """The broker gets the requests but its answers never arrive (the connection is cut,
    or they are swallowed): the first caller (alone, with a short deadline) and every
    caller of the batch that queued behind it hear ConnectionLost or RemotingTimeout (it
    may be stored), never a definite refusal."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic("Unknown", 1)
            async with (
                tcp_proxy(c.addr("broker-a"), **proxy) as addr,  # type: ignore[arg-type]
                producer_via(addr, "Unknown", timeout_s=2.0) as producer,
            ):
                messages = [Message(topic="Unknown", body=b"u%02d" % i) for i in range(20)]
                results: list[SendResult | RocketError] = []

                async def first() -> None:
                    pilot = Message(topic="Unknown", body=b"pilot")
                    results.extend(await send_concurrently(producer, [pilot], timeout_s=0.5))

                async def batch() -> None:
                    results.extend(await send_concurrently(producer, messages))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(first)
                    await wait_until(lambda: producer.statistics().requests == 1, what="pilot")
                    nursery.start_soon(batch)
                assert len(results) == 21
                assert all(isinstance(r, error) for r in results), results
                stats = producer.statistics()
                assert (stats.batch_requests, stats.batched_messages) == (1, 20), stats
            stored = bodies_of(await read_all(c, "Unknown"))  # all reached the broker
            assert stored == sorted([b"pilot", *(m.body for m in messages)])


async def test_a_cancelled_caller_costs_the_others_nothing(tmp_path: Path) -> None:
    """While a slow request is in flight, 60 sends queue; half are cancelled there. The
    cancelled ones are never stored; every other one is stored exactly once and its
    result names its record."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic("Cancel", 1)
            async with (
                tcp_proxy(c.addr("broker-a"), delay_s=0.5) as addr,
                producer_via(addr, "Cancel", timeout_s=10.0) as producer,
            ):
                first = Message(topic="Cancel", body=b"first")
                messages = [Message(topic="Cancel", body=b"c%02d" % i) for i in range(60)]
                results: dict[int, SendResult] = {}
                scopes = [trio.CancelScope() for _ in messages]

                async def one(i: int) -> None:
                    with scopes[i]:
                        results[i] = await producer.send(messages[i])

                async def send_first() -> None:
                    results[-1] = await producer.send(first)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_first)
                    await wait_until(lambda: producer.statistics().requests == 1, what="first")
                    for i in range(len(messages)):
                        nursery.start_soon(one, i)
                    await wait_until(
                        lambda: producer.statistics().waiting_messages == len(messages),
                        what="all queued behind the first",
                    )
                    for scope in scopes[::2]:
                        scope.cancel()
            kept = range(1, len(messages), 2)
            assert sorted(results) == [-1, *kept]
            assert_results_name_their_records(
                [first, *(messages[i] for i in kept)],
                [results[i] for i in [-1, *kept]],
                await read_all(c, "Cancel"),
            )


async def test_ordered_sends_keep_their_order_while_batched(tmp_path: Path) -> None:
    """Eight keys on two queues, each key's sends one after another from its own task,
    all keys at once (and one task choosing its queue with a selector): sends to a
    queue are batched, and every key's messages lie on one queue in send order."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Ordered", 2)
            per_key = 40
            results: dict[str, list[SendResult]] = {}

            async def key_task(key: str) -> None:
                for i in range(per_key):
                    message = Message(topic="Ordered", body=f"{key}-{i:03d}".encode())
                    if key == "picked":
                        result = await producer.send(message, selector=lambda qs, _: qs[1])
                    else:
                        result = await producer.send(message, sharding_key=key)
                    results.setdefault(key, []).append(result)

            keys = [f"key{k}" for k in range(7)] + ["picked"]
            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(key_task, key)
            assert producer.statistics().batch_requests >= 1
            stored = await read_all(c, "Ordered")
            for key in keys:
                queues = {r.queue for r in results[key]}
                assert len(queues) == 1, key
                in_queue = [m.body.decode() for m in stored[queues.pop()]]
                mine = [b for b in in_queue if b.startswith(f"{key}-")]
                assert mine == [f"{key}-{i:03d}" for i in range(per_key)], key


async def test_batched_sends_fail_over_and_duplicates_keep_their_msg_id(tmp_path: Path) -> None:
    """Multi-master: broker-b stops while 300 sends are under way. Every send succeeds
    (on broker-a after a refusal or a lost connection, or on broker-b before it went),
    every result names its record, and a message stored twice (its first outcome was
    unknown) has one msg_id in both copies, so consumers can de-duplicate it."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path, brokers=("broker-a", "broker-b")) as c,
            open_producer(c.namesrv, timeout_s=10.0) as producer,
        ):
            await c.create_topic("Failover", 2)
            messages = [Message(topic="Failover", body=b"f%03d" % i) for i in range(300)]
            results: list[SendResult | RocketError] = []

            async def send() -> None:
                results.extend(await send_concurrently(producer, messages))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                await wait_until(lambda: producer.statistics().requests > 0, what="sending")
                await c.stop_broker("broker-b")
            assert producer.statistics().requests > 2  # some went to broker-b, then again
            await c.start_broker("broker-b")  # to read what it stored before it stopped
            await c.wait_route("Failover", {"broker-a": 2, "broker-b": 2})
            stored = await read_all(c, "Failover")
            for message, result in zip(messages, results, strict=True):
                assert isinstance(result, SendResult), result
                got = stored[result.queue][result.queue_offset]
                assert (got.body, got.msg_id) == (message.body, result.msg_id)
            copies: dict[bytes, set[str]] = {}
            for got in (m for ms in stored.values() for m in ms):
                copies.setdefault(got.body, set()).add(got.msg_id)
            assert sorted(copies) == sorted(m.body for m in messages)
            assert all(len(ids) == 1 for ids in copies.values()), copies
