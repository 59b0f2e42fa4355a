"""The SDK's SQL92 subscriptions (push, lite pull, pull) and timer messages
(``Message.deliver_at_ms`` / ``delay_s``) against a real broker in this process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from client.consumer import (
    ConsumeFrom,
    MessageSelector,
    open_lite_pull_consumer,
    open_pull_consumer,
    open_push_consumer,
)
from client.message import Message, ReceivedMessage
from client.producer import open_producer
from protocol.errors import ServerError
from tests.component.sdk_fixtures import sdk_cluster, wait_until
from tests.component.test_sdk_consumer import DEADLINE_S, FAST, Collector

EXPR = "price > 10 AND region IN ('eu', 'us')"
#: (properties, matches EXPR)
CASES = [
    ({"price": "11", "region": "eu"}, True),
    ({"price": "10", "region": "eu"}, False),
    ({"price": "50", "region": "asia"}, False),
    ({"region": "us"}, False),
    ({"price": "99", "region": "us"}, True),
    ({"price": "99.5", "region": "us"}, False),  # Integer.valueOf("99.5") throws: no match
]


def wanted(offset: int = 0) -> list[bytes]:
    return [b"%d" % (i + offset) for i, (_, ok) in enumerate(CASES) if ok]


async def test_push_consumer_gets_exactly_the_sql92_matches_through_long_polling(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Sql", 2)
            got = Collector()
            async with open_push_consumer(
                c.namesrv,
                group="S",
                listener=got,
                subscriptions={"Sql": MessageSelector.by_sql(EXPR)},
                consume_from=ConsumeFrom.FIRST,
                **FAST,
            ):
                await trio.sleep(0.5)  # the pulls are held now
                for i, (props, _) in enumerate(CASES):
                    await producer.send(Message(topic="Sql", body=b"%d" % i, properties=props))
                await wait_until(lambda: got.count() >= 2, what="the matching messages")
                await trio.sleep(0.5)
            assert sorted(got.bodies) == wanted()


async def test_lite_pull_and_pull_consumers_filter_by_sql92(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Sql", 1)
            for i, (props, _) in enumerate(CASES):
                await producer.send(Message(topic="Sql", body=b"%d" % i, properties=props))
            polled: list[ReceivedMessage] = []
            async with open_lite_pull_consumer(
                c.namesrv,
                group="L",
                subscriptions={"Sql": MessageSelector.by_sql(EXPR)},
                consume_from=ConsumeFrom.FIRST,
                **FAST,
            ) as lite:
                while len(polled) < 2:
                    polled += await lite.poll(timeout_s=2.0)
            assert sorted(m.body for m in polled) == wanted()
            async with open_pull_consumer(c.namesrv, group="P") as puller:
                (queue,) = await puller.fetch_subscribe_queues("Sql")
                got: list[bytes] = []
                offset = 0
                while offset < len(CASES):
                    result = await puller.pull(
                        queue, offset, expression=MessageSelector.by_sql(EXPR)
                    )
                    got += [m.body for m in result.messages]
                    offset = result.next_begin_offset
                assert got == wanted()
                with pytest.raises(ServerError, match="failed"):
                    await puller.pull(queue, 0, expression=MessageSelector.by_sql("price >"))


async def test_a_bad_sql92_subscription_fails_the_consumer_start(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic("Sql", 1)
            with pytest.raises(ServerError, match="price > AND"):
                async with open_push_consumer(
                    c.namesrv,
                    group="Bad",
                    listener=Collector(),
                    subscriptions={"Sql": MessageSelector.by_sql("price > AND")},
                    **FAST,
                ):
                    pass
    with pytest.raises(ValueError, match="TAG or SQL92"):
        MessageSelector("x", "FOO")


async def test_timer_messages_from_the_sdk(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic("Later", 1)
            due_ms = int(time.time() * 1000) + 1500
            await producer.send(Message(topic="Later", body=b"at", deliver_at_ms=due_ms))
            await producer.send(Message(topic="Later", body=b"in", delay_s=1.0))
            got = Collector()
            async with open_push_consumer(
                c.namesrv,
                group="T",
                listener=got,
                subscriptions={"Later": "*"},
                consume_from=ConsumeFrom.FIRST,
                **FAST,
            ):
                await wait_until(lambda: got.count() >= 2, what="the timer messages")
            at = next(m for m in got.messages if m.body == b"at")
            assert 0 <= at.store_timestamp_ms - due_ms <= 1000
            with pytest.raises(ValueError, match="one of"):
                Message(topic="Later", body=b"x", delay_s=1.0, deliver_at_ms=due_ms)
            with pytest.raises(ValueError, match="batch"):
                await producer.send_batch([Message(topic="Later", body=b"x", delay_s=1.0)])
