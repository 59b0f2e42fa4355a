"""The SDK consumers against a NameServer and a real broker in this process (port 0).

Every test runs under a deadline, with small intervals so that rebalances, retries (one
second delay levels) and commits happen within a few seconds. What each test proves is in
its docstring; messages are told apart by body, so a duplicate or a loss is visible.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from client.consumer import (
    ConsumeFrom,
    ConsumeResult,
    LitePullConsumer,
    MessageModel,
    PullStatus,
    PushConsumer,
    dlq_topic,
    open_lite_pull_consumer,
    open_pull_consumer,
    open_push_consumer,
    retry_topic,
)
from client.message import Message, ReceivedMessage
from client.producer import Producer, open_producer
from protocol.bodies import LockBatchRequestBody, LockBatchResponseBody
from protocol.codes import RequestCode, ResponseCode
from protocol.route import MessageQueue
from tests.component.sdk_fixtures import SdkCluster, sdk_cluster, wait_until

DEADLINE_S = 25.0
#: Consumer knobs that make periodic work fast enough for tests.
FAST: dict[str, Any] = {
    "persist_interval_s": 0.2,
    "heartbeat_interval_s": 1.0,
    "timeout_s": 2.0,
    "shutdown_timeout_s": 3.0,
}


class Collector:
    """A listener that records what it gets; ``decide`` may ask for a retry (or raise)."""

    def __init__(
        self,
        decide: Callable[[ReceivedMessage], Awaitable[ConsumeResult]] | None = None,
    ) -> None:
        self.messages: list[ReceivedMessage] = []
        self._decide = decide

    async def __call__(self, messages: list[ReceivedMessage]) -> ConsumeResult:
        self.messages.extend(messages)
        result = ConsumeResult.SUCCESS
        for message in messages:
            if self._decide is not None:
                result = await self._decide(message)
        return result

    @property
    def bodies(self) -> list[bytes]:
        return [m.body for m in self.messages]

    def count(self) -> int:
        return len(self.messages)


async def send_bodies(producer: Producer, topic: str, bodies: list[bytes], **kwargs: Any) -> None:
    for body in bodies:
        await producer.send(Message(topic=topic, body=body, **kwargs))


def topic_queues(consumer: PushConsumer | LitePullConsumer, topic: str) -> set[MessageQueue]:
    return {q for q in consumer.assigned_queues() if q.topic == topic}


async def wait_split(
    consumers: list[PushConsumer] | list[LitePullConsumer], topic: str, n: int
) -> None:
    """Until the consumers own disjoint sets of ``topic``'s queues that cover all ``n``."""

    def split() -> bool:
        shares = [topic_queues(c, topic) for c in consumers]
        union = set().union(*shares)
        return len(union) == n and sum(len(s) for s in shares) == n and all(shares)

    await wait_until(split, what=f"{len(consumers)} consumers splitting {topic}")


async def committed(c: SdkCluster, group: str, topic: str) -> dict[int, int | None]:
    async with open_pull_consumer(c.namesrv, group=group) as reader:
        queues = await reader.fetch_subscribe_queues(topic)
        return {q.queue_id: await reader.committed_offset(q) for q in queues}


async def max_offsets(c: SdkCluster, topic: str) -> dict[int, int]:
    async with open_pull_consumer(c.namesrv, group="inspector") as reader:
        queues = await reader.fetch_subscribe_queues(topic)
        return {q.queue_id: await reader.max_offset(q) for q in queues}


# --- clustering ------------------------------------------------------------------------------


async def test_two_consumers_split_the_queues_and_one_takes_over_when_the_other_leaves(
    tmp_path: Path,
) -> None:
    """Clustering: two consumers own disjoint halves, every message reaches exactly one of
    them. When B leaves (graceful: commits, unregisters) the broker's NOTIFY makes A take
    every queue at once (the interval is a minute) and A resumes where B committed: no
    message of B's is delivered again, none sent later is missed."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Split", 4)
            a, b = Collector(), Collector()
            opts = {**FAST, "rebalance_interval_s": 60.0, "consume_from": ConsumeFrom.FIRST}
            async with open_push_consumer(
                c.namesrv, group="G", listener=a, subscriptions={"Split": "*"}, **opts
            ) as ca:
                async with open_push_consumer(
                    c.namesrv, group="G", listener=b, subscriptions={"Split": "*"}, **opts
                ) as cb:
                    await wait_split([ca, cb], "Split", 4)
                    assert len(topic_queues(ca, "Split")) == len(topic_queues(cb, "Split")) == 2
                    first = [b"one-%d" % i for i in range(40)]
                    await send_bodies(producer, "Split", first)
                    await wait_until(lambda: a.count() + b.count() == 40, what="40 consumed")
                    assert a.count() and b.count()
                    assert sorted(a.bodies + b.bodies) == sorted(first)
                    b_had = set(b.bodies)
                await wait_until(lambda: len(topic_queues(ca, "Split")) == 4, what="A owns all")
                second = [b"two-%d" % i for i in range(20)]
                await send_bodies(producer, "Split", second)
                await wait_until(lambda: a.count() + b.count() == 60, what="60 consumed")
                await trio.sleep(0.2)  # a duplicate, if any, would show up now
                assert not b_had & set(a.bodies), "B's committed messages came again"
                assert sorted(a.bodies + b.bodies) == sorted(first + second)


async def test_interval_rebalance_picks_up_new_queues(tmp_path: Path) -> None:
    """Without any notification, the periodic rebalance (with the periodic route refresh)
    takes the queues a topic gains, and their messages are consumed."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Grow", 2)
            got = Collector()
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=got,
                subscriptions={"Grow": "*"},
                rebalance_interval_s=0.2,
                route_refresh_interval_s=0.2,
                **FAST,
            ) as consumer:
                assert len(topic_queues(consumer, "Grow")) == 2
                await c.create_topic("Grow", 6)
                await wait_until(lambda: len(topic_queues(consumer, "Grow")) == 6)
                producer.routes.invalidate("Grow")
                bodies = [b"%d" % i for i in range(24)]
                await send_bodies(producer, "Grow", bodies)
                await wait_until(lambda: got.count() == 24)
                assert sorted(got.bodies) == sorted(bodies)
                assert {m.queue.queue_id for m in got.messages} == set(range(6))


async def test_a_dropped_queue_is_committed_after_its_running_listener(tmp_path: Path) -> None:
    """When a rebalance drops a queue (here: the topic shrinks from 2 queues to 1), pulling
    stops at once, the listener call in progress on that queue is waited for, and only
    then is the queue's offset committed, past the message it was working on."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Shrink", 2)
            entered, release = trio.Event(), trio.Event()

            async def block_on_slow(message: ReceivedMessage) -> ConsumeResult:
                if message.body == b"slow":
                    entered.set()
                    await release.wait()
                return ConsumeResult.SUCCESS

            got = Collector(block_on_slow)
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=got,
                subscriptions={"Shrink": "*"},
                rebalance_interval_s=0.2,
                route_refresh_interval_s=0.2,
                **{**FAST, "persist_interval_s": 3600.0},
            ) as consumer:
                await producer.send(
                    Message(topic="Shrink", body=b"slow"), selector=lambda qs, key: qs[1]
                )
                await entered.wait()
                await c.create_topic("Shrink", 1)
                await wait_until(lambda: len(topic_queues(consumer, "Shrink")) == 1)
                q1 = MessageQueue(topic="Shrink", broker_name="broker-a", queue_id=1)
                async with open_pull_consumer(c.namesrv, group="G") as reader:
                    await trio.sleep(0.3)
                    assert await reader.committed_offset(q1) is None, "committed too early"
                    release.set()

                    async def q1_committed() -> bool:
                        return await reader.committed_offset(q1) == 1

                    await wait_until(q1_committed, what="queue 1 committed past the slow message")
            assert got.bodies == [b"slow"]


async def test_tag_filter_is_exact_and_filtered_messages_do_not_hold_back_offsets(
    tmp_path: Path,
) -> None:
    """The subscription "TagA || Aa" gets exactly those tags; "BB" (same Java hash as
    "Aa", so the broker lets it through) is dropped by the client-side re-filter. The
    committed offsets still reach the end of every queue: skipped messages never block a
    commit."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Tags", 2)
            tags = ["TagA", "TagB", "Aa", "BB", None, "TagA"] * 3
            for i, tag in enumerate(tags):
                await producer.send(Message(topic="Tags", body=b"%d" % i, tags=tag))
            got = Collector()
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=got,
                subscriptions={"Tags": "TagA || Aa"},
                consume_from=ConsumeFrom.FIRST,
                **FAST,
            ):
                await wait_until(lambda: got.count() == 9, what="9 tagged messages")
                ends = await max_offsets(c, "Tags")

                async def all_committed() -> bool:
                    return await committed(c, "G", "Tags") == ends

                await wait_until(all_committed, what="offsets at the end of every queue")
            assert Counter(m.tags for m in got.messages) == {"TagA": 6, "Aa": 3}


# --- retries and the DLQ -------------------------------------------------------------------


async def test_retry_comes_back_through_the_retry_topic(tmp_path: Path) -> None:
    """A message the listener returns RETRY for, and one it raises on, are sent back; each
    comes back once through %RETRY%G with reconsume_times 1, its original topic, body and
    msg_id. After they succeed, the original queue's offset is committed past them."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Retry", 1)

            async def decide(message: ReceivedMessage) -> ConsumeResult:
                if message.reconsume_times == 0 and message.body == b"raise":
                    raise RuntimeError("listener bug")
                if message.reconsume_times == 0 and message.body == b"retry":
                    return ConsumeResult.RETRY
                return ConsumeResult.SUCCESS

            got = Collector(decide)
            async with open_push_consumer(
                c.namesrv, group="G", listener=got, subscriptions={"Retry": "*"}, **FAST
            ) as consumer:
                await send_bodies(producer, "Retry", [b"retry", b"ok", b"raise"])
                await wait_until(lambda: got.count() == 5, what="3 deliveries + 2 retries")
                first, again = got.messages[:3], got.messages[3:]
                assert sorted(m.body for m in again) == [b"raise", b"retry"]
                for message in again:
                    original = next(m for m in first if m.body == message.body)
                    assert message.reconsume_times == 1
                    assert message.topic == "Retry" == message.original_topic
                    assert message.queue.topic == retry_topic("G")
                    assert message.msg_id == original.msg_id
                assert consumer.statistics().sent_back == 2

                async def past_all() -> bool:
                    return await committed(c, "G", "Retry") == {0: 3}

                await wait_until(past_all, what="original queue committed to 3")
                await trio.sleep(1.5)  # one more retry delay: nothing else may come
                assert got.count() == 5


async def test_message_goes_to_the_dlq_after_max_reconsume_times(tmp_path: Path) -> None:
    """A message that always fails is delivered 1 + max_reconsume_times times (reconsume
    0, 1, 2), then lands in %DLQ%G and is not delivered again."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Doomed", 1)

            async def always_fail(message: ReceivedMessage) -> ConsumeResult:
                return ConsumeResult.RETRY

            got = Collector(always_fail)
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=got,
                subscriptions={"Doomed": "*"},
                max_reconsume_times=2,
                **FAST,
            ) as consumer:
                await producer.send(Message(topic="Doomed", body=b"poison", keys="p1"))
                await wait_until(lambda: consumer.statistics().dead_lettered == 1)
                assert [m.reconsume_times for m in got.messages] == [0, 1, 2]
                async with open_pull_consumer(c.namesrv, group="inspector") as reader:

                    async def dlq_routed() -> bool:
                        return await c.route(dlq_topic("G")) is not None

                    await wait_until(dlq_routed, what="DLQ route")
                    (queue,) = await reader.fetch_subscribe_queues(dlq_topic("G"))
                    pulled = await reader.pull(queue, 0)
                assert pulled.status is PullStatus.FOUND
                (dead,) = pulled.messages
                assert dead.body == b"poison" and dead.keys == ("p1",)
                assert dead.original_topic == "Doomed"
                assert dead.msg_id == got.messages[0].msg_id
                await trio.sleep(1.5)
                assert got.count() == 3


# --- offsets and start positions -----------------------------------------------------------


async def test_a_restarted_consumer_resumes_after_the_committed_offsets(tmp_path: Path) -> None:
    """Offsets committed at shutdown (the periodic commit is off here) are where the next
    consumer of the group starts: nothing consumed before is delivered again, even with
    consume_from=FIRST."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Resume", 4)
            opts = {**FAST, "persist_interval_s": 3600.0, "consume_from": ConsumeFrom.FIRST}
            first = [b"a%d" % i for i in range(12)]
            await send_bodies(producer, "Resume", first)
            got1 = Collector()
            async with open_push_consumer(
                c.namesrv, group="G", listener=got1, subscriptions={"Resume": "*"}, **opts
            ):
                await wait_until(lambda: got1.count() == 12)
            assert await committed(c, "G", "Resume") == await max_offsets(c, "Resume")
            second = [b"b%d" % i for i in range(8)]
            await send_bodies(producer, "Resume", second)
            got2 = Collector()
            async with open_push_consumer(
                c.namesrv, group="G", listener=got2, subscriptions={"Resume": "*"}, **opts
            ):
                await wait_until(lambda: got2.count() == 8)
                await trio.sleep(0.2)
            assert sorted(got2.bodies) == sorted(second)


async def test_consume_from_last_first_and_timestamp_for_a_new_group(tmp_path: Path) -> None:
    """A new group with LAST starts at the end of every queue (even a young one), FIRST at
    the beginning, TIMESTAMP at the first message stored at or after the timestamp."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("From", 2)
            old = [b"old-%d" % i for i in range(6)]
            await send_bodies(producer, "From", old)
            await trio.sleep(0.05)
            since_ms = int(time.time() * 1000)  # the broker stamps store times with its clock
            await trio.sleep(0.05)
            middle = [b"mid-%d" % i for i in range(4)]
            await send_bodies(producer, "From", middle)
            last, first, stamp = Collector(), Collector(), Collector()
            subs = {"From": "*"}
            async with (
                open_push_consumer(
                    c.namesrv, group="GL", listener=last, subscriptions=subs, **FAST
                ) as cl,
                open_push_consumer(
                    c.namesrv,
                    group="GF",
                    listener=first,
                    subscriptions=subs,
                    consume_from=ConsumeFrom.FIRST,
                    **FAST,
                ) as cf,
                open_push_consumer(
                    c.namesrv,
                    group="GT",
                    listener=stamp,
                    subscriptions=subs,
                    consume_from=ConsumeFrom.TIMESTAMP,
                    consume_timestamp_ms=since_ms,
                    **FAST,
                ) as ct,
            ):
                for consumer in (cl, cf, ct):
                    assert len(topic_queues(consumer, "From")) == 2
                new = [b"new-%d" % i for i in range(6)]
                await send_bodies(producer, "From", new)
                await wait_until(lambda: first.count() == 16 and last.count() == 6)
                await wait_until(lambda: stamp.count() == 10)
                await trio.sleep(0.2)
            assert sorted(last.bodies) == sorted(new)
            assert sorted(first.bodies) == sorted(old + middle + new)
            assert sorted(stamp.bodies) == sorted(middle + new)


async def test_graceful_shutdown_waits_for_the_listener_and_commits(tmp_path: Path) -> None:
    """Leaving the block while a listener call runs: the call finishes (not cancelled),
    then the offsets, including that message, are committed (periodic commits are off),
    and the consumer unregisters (the broker lists no consumer for the group).

    The block is left only once every message reached the listener (a message pulled but
    not yet handed over is left for the next consumer, so its offset would rightly stay
    uncommitted), and the slow call sleeps only from then on, so it is surely running."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Bye", 2)
            started, leaving, finished = trio.Event(), trio.Event(), trio.Event()

            async def slow_last(message: ReceivedMessage) -> ConsumeResult:
                if message.body == b"slow":
                    started.set()
                    await leaving.wait()
                    await trio.sleep(0.5)
                    finished.set()
                return ConsumeResult.SUCCESS

            got = Collector(slow_last)
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=got,
                subscriptions={"Bye": "*"},
                **{**FAST, "persist_interval_s": 3600.0},
            ):
                await send_bodies(producer, "Bye", [b"%d" % i for i in range(9)] + [b"slow"])
                await started.wait()
                await wait_until(lambda: got.count() == 10)
                leaving.set()
            assert finished.is_set(), "the listener call was cut short"
            assert await committed(c, "G", "Bye") == await max_offsets(c, "Bye")
            members = await c.call(
                c.addr("broker-a"), RequestCode.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": "G"}
            )
            assert members.code == ResponseCode.SYSTEM_ERROR, "the consumer is still listed"


# --- broadcasting ----------------------------------------------------------------------------


async def test_broadcasting_delivers_everything_to_everyone_with_local_offsets(
    tmp_path: Path,
) -> None:
    """Broadcasting: each consumer gets every queue and every message; a failure is not
    retried; offsets go to a local file per client, from which a restarted consumer with
    the same instance name resumes."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Radio", 3)
            store = tmp_path / "offsets"

            async def fail_one(message: ReceivedMessage) -> ConsumeResult:
                return ConsumeResult.RETRY if message.body == b"3" else ConsumeResult.SUCCESS

            one, two = Collector(fail_one), Collector()
            opts = {
                **FAST,
                "message_model": MessageModel.BROADCASTING,
                "consume_from": ConsumeFrom.FIRST,
                "offset_store_dir": store,
            }
            bodies = [b"%d" % i for i in range(12)]
            async with (
                open_push_consumer(
                    c.namesrv,
                    group="B",
                    listener=one,
                    subscriptions={"Radio": "*"},
                    instance="one",
                    **opts,
                ) as c1,
                open_push_consumer(
                    c.namesrv,
                    group="B",
                    listener=two,
                    subscriptions={"Radio": "*"},
                    instance="two",
                    **opts,
                ) as c2,
            ):
                assert len(topic_queues(c1, "Radio")) == len(topic_queues(c2, "Radio")) == 3
                assert retry_topic("B") not in {q.topic for q in c1.assigned_queues()}
                await send_bodies(producer, "Radio", bodies)
                await wait_until(lambda: one.count() == 12 and two.count() == 12)
                await trio.sleep(0.3)
                assert c1.statistics().sent_back == 0
            assert sorted(one.bodies) == sorted(bodies) == sorted(two.bodies)
            path = store / c1.client_id / "B" / "offsets.json"
            doc = json.loads(path.read_text())
            assert sum(e["offset"] for e in doc["offsets"]) == 12
            later = [b"later-%d" % i for i in range(5)]
            await send_bodies(producer, "Radio", later)
            again = Collector()
            async with open_push_consumer(
                c.namesrv,
                group="B",
                listener=again,
                subscriptions={"Radio": "*"},
                instance="one",
                **opts,
            ):
                await wait_until(lambda: again.count() == 5)
                await trio.sleep(0.2)
            assert sorted(again.bodies) == sorted(later)


# --- orderly ---------------------------------------------------------------------------------


async def test_orderly_consumption_keeps_per_key_order_through_retries(tmp_path: Path) -> None:
    """Messages sent with a sharding key are consumed in send order per key, one at a time
    per queue, with the queues locked on the broker; a message that fails twice is
    redelivered locally and nothing after it in its queue runs before it succeeds."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Fifo", 4)
            keys = [f"key-{k}" for k in range(4)]
            per_queue_running: Counter[MessageQueue] = Counter()
            overlap = []
            failures: Counter[bytes] = Counter()
            rng = random.Random(3)

            async def decide(message: ReceivedMessage) -> ConsumeResult:
                per_queue_running[message.queue] += 1
                if per_queue_running[message.queue] > 1:
                    overlap.append(message.queue)
                await trio.sleep(rng.random() * 0.003)
                per_queue_running[message.queue] -= 1
                if message.body == b"key-1:3" and failures[message.body] < 2:
                    failures[message.body] += 1
                    return ConsumeResult.RETRY
                return ConsumeResult.SUCCESS

            got = Collector(decide)
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=got,
                subscriptions={"Fifo": "*"},
                orderly=True,
                orderly_suspend_s=0.1,
                **FAST,
            ) as consumer:
                for seq in range(15):
                    for key in keys:
                        await producer.send(
                            Message(topic="Fifo", body=f"{key}:{seq}".encode()), sharding_key=key
                        )
                await wait_until(lambda: got.count() == 62, what="60 messages + 2 retries")
                stats = consumer.statistics()
                fifo = [s for q, s in stats.queues.items() if q.topic == "Fifo"]
                assert len(fifo) == 4 and all(s.locked for s in fifo)
                assert stats.redelivered_locally == 2
            assert not overlap, "two listener calls ran at once on one queue"
            for key in keys:
                seqs = [int(b.split(b":")[1]) for b in got.bodies if b.startswith(key.encode())]
                expected = list(range(15))
                if key == "key-1":
                    expected = [0, 1, 2, 3, 3, 3, *range(4, 15)]
                assert seqs == expected, key
            retried = [m for m in got.messages if m.body == b"key-1:3"]
            assert [m.reconsume_times for m in retried] == [0, 1, 2]


async def test_two_orderly_consumers_hand_locked_queues_over(tmp_path: Path) -> None:
    """A second orderly consumer takes its half of the queues; each consumer then holds
    the broker locks of its own queues (an intruder's LOCK_BATCH_MQ gets none of them),
    and every key's messages arrive once, in order, at one consumer."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Fifo2", 4)
            a, b = Collector(), Collector()
            opts = {**FAST, "orderly": True, "subscriptions": {"Fifo2": "*"}}
            async with open_push_consumer(c.namesrv, group="G", listener=a, **opts) as ca:
                assert len(topic_queues(ca, "Fifo2")) == 4
                async with open_push_consumer(c.namesrv, group="G", listener=b, **opts) as cb:
                    await wait_split([ca, cb], "Fifo2", 4)
                    for consumer in (ca, cb):
                        for queue, stats in consumer.statistics().queues.items():
                            if queue.topic == "Fifo2":
                                assert stats.locked, (consumer.client_id, queue)
                    intruder = LockBatchRequestBody(
                        consumer_group="G",
                        client_id="intruder@1",
                        mq_set=tuple(sorted(topic_queues(ca, "Fifo2") | topic_queues(cb, "Fifo2"))),
                    )
                    answer = await c.call(
                        c.addr("broker-a"), RequestCode.LOCK_BATCH_MQ, {}, intruder.to_bytes()
                    )
                    assert LockBatchResponseBody.from_bytes(answer.body).lock_ok_mq_set == ()
                    for seq in range(10):
                        for k in range(6):
                            await producer.send(
                                Message(topic="Fifo2", body=f"k{k}:{seq}".encode()),
                                sharding_key=f"k{k}",
                            )
                    await wait_until(lambda: a.count() + b.count() == 60)
            for k in range(6):
                prefix = f"k{k}:".encode()
                in_a = [int(x.split(b":")[1]) for x in a.bodies if x.startswith(prefix)]
                in_b = [int(x.split(b":")[1]) for x in b.bodies if x.startswith(prefix)]
                assert not (in_a and in_b), f"key k{k} went to both consumers"
                assert (in_a or in_b) == list(range(10))


# --- flow control ----------------------------------------------------------------------------


class _PeakListener:
    """A listener that holds each message ``hold_s`` and counts the most calls at once."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.running = self.peak = 0

    async def __call__(self, message: ReceivedMessage) -> ConsumeResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await trio.sleep(self.hold_s)
        self.running -= 1
        return ConsumeResult.SUCCESS


async def test_flow_control_bounds_messages_in_flight_per_queue(tmp_path: Path) -> None:
    """With max_inflight_per_queue=5 and 20 listener workers, a slow listener never has
    more than 5 messages of the queue at once (and does reach 5); all 40 are consumed."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Slow", 1)
            await send_bodies(producer, "Slow", [b"%d" % i for i in range(40)])
            slow = _PeakListener(hold_s=0.03)
            got = Collector(slow)
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=got,
                subscriptions={"Slow": "*"},
                consume_from=ConsumeFrom.FIRST,
                max_inflight_per_queue=5,
                consume_concurrency=20,
                **FAST,
            ) as consumer:
                await wait_until(lambda: got.count() == 40)
                (stats,) = [s for q, s in consumer.statistics().queues.items() if q.topic == "Slow"]
            assert slow.peak == 5
            assert stats.max_inflight_seen == 5
            assert sorted(got.bodies) == sorted(b"%d" % i for i in range(40))


async def test_a_waiting_listener_gets_every_worker(tmp_path: Path) -> None:
    """Workers are woken one at a time (client/consumer/push.py): a listener that waits
    still has ``consume_concurrency`` calls running at once, and every message once."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Spread", 1)
            await send_bodies(producer, "Spread", [b"%d" % i for i in range(60)])
            slow = _PeakListener(hold_s=0.05)
            got = Collector(slow)
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=got,
                subscriptions={"Spread": "*"},
                consume_from=ConsumeFrom.FIRST,
                consume_concurrency=6,
                **FAST,
            ):
                await wait_until(lambda: got.count() == 60)
            assert slow.peak == 6
            assert sorted(got.bodies) == sorted(b"%d" % i for i in range(60))


# --- pull consumers --------------------------------------------------------------------------


async def test_pull_consumer_pulls_exact_offsets_and_commits_what_it_is_told(
    tmp_path: Path,
) -> None:
    """PullConsumer: routes to queues, FOUND / NO_NEW_MSG / OFFSET_ILLEGAL with the right
    next offsets, a tag expression, a long poll woken by an arrival, commit round trip."""
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_producer(c.namesrv) as producer,
            open_pull_consumer(c.namesrv, group="PullG") as reader,
        ):
            await c.create_topic("Pull", 2)
            queues = await reader.fetch_subscribe_queues("Pull")
            assert [(q.broker_name, q.queue_id) for q in queues] == [
                ("broker-a", 0),
                ("broker-a", 1),
            ]
            queue = queues[1]
            for i in range(5):
                await producer.send(
                    Message(topic="Pull", body=b"%d" % i, tags="even" if i % 2 == 0 else "odd"),
                    selector=lambda qs, key: qs[1],
                )
            found = await reader.pull(queue, 0, 32)
            assert found.status is PullStatus.FOUND
            assert [m.body for m in found.messages] == [b"0", b"1", b"2", b"3", b"4"]
            assert (found.next_begin_offset, found.min_offset, found.max_offset) == (5, 0, 5)
            page = await reader.pull(queue, 1, 2)
            assert [m.queue_offset for m in page.messages] == [1, 2] and page.next_begin_offset == 3
            evens = await reader.pull(queue, 0, 32, expression="even")
            assert [m.body for m in evens.messages] == [b"0", b"2", b"4"]
            nothing = await reader.pull(queue, 5)
            assert (nothing.status, nothing.next_begin_offset) == (PullStatus.NO_NEW_MSG, 5)
            beyond = await reader.pull(queue, 99)
            assert (beyond.status, beyond.next_begin_offset) == (PullStatus.OFFSET_ILLEGAL, 5)

            async def send_later() -> None:
                await trio.sleep(0.2)
                await producer.send(
                    Message(topic="Pull", body=b"late"), selector=lambda qs, k: qs[1]
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_later)
                started = trio.current_time()
                woken = await reader.pull(queue, 5, long_poll_s=5.0)
            assert [m.body for m in woken.messages] == [b"late"]
            assert trio.current_time() - started < 3.0, "the arrival woke the long poll"
            assert await reader.committed_offset(queue) is None
            await reader.commit(queue, 3)
            assert await reader.committed_offset(queue) == 3
            with pytest.raises(ValueError):
                await reader.pull(queue, -1)


async def test_lite_pull_consumer_polls_and_auto_commits(tmp_path: Path) -> None:
    """Lite pull: subscribe() after open, poll() batches of at most poll_batch_size until
    everything arrived once; [] after its timeout when idle; two lite consumers of a group
    split the queues; the last poll is committed when the block exits, so the group's next
    consumer sees nothing old."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Lite", 4)
            bodies = [b"%d" % i for i in range(25)]
            await send_bodies(producer, "Lite", bodies)
            polled: list[ReceivedMessage] = []
            async with open_lite_pull_consumer(
                c.namesrv, group="L", consume_from=ConsumeFrom.FIRST, poll_batch_size=10, **FAST
            ) as lite:
                lite.subscribe("Lite", "*")
                while len(polled) < 25:
                    batch = await lite.poll(timeout_s=2.0)
                    assert 0 < len(batch) <= 10
                    polled.extend(batch)
                started = trio.current_time()
                assert await lite.poll(timeout_s=0.3) == []
                assert 0.25 < trio.current_time() - started < 1.0
                async with open_lite_pull_consumer(
                    c.namesrv, group="L", subscriptions={"Lite": "*"}, **FAST
                ) as other:
                    await wait_split([lite, other], "Lite", 4)
            assert sorted(m.body for m in polled) == sorted(bodies)
            async with open_lite_pull_consumer(
                c.namesrv,
                group="L",
                subscriptions={"Lite": "*"},
                consume_from=ConsumeFrom.FIRST,
                **FAST,
            ) as again:
                assert await again.poll(timeout_s=0.5) == []
