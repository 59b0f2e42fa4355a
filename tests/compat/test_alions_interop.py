"""Our SDK and unmodified ali-ons interoperate through our broker, both ways.

Messages produced by one are consumed by the other with body, tag, keys and user
properties intact, and both sides agree on the broker's message id (ali-ons' msgId is the
offset id our SDK reports as ``offset_msg_id``).
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

import pytest
import trio

from client.consumer import ConsumeFrom, ConsumeResult, open_push_consumer
from client.message import Message, ReceivedMessage
from client.producer import open_producer
from tests.compat.test_alions_broker import by_msg_id, user_properties

if TYPE_CHECKING:
    from tests.compat.conftest import AlionsCluster

pytestmark = [pytest.mark.compat]

TEST_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 20.0


def bodies() -> list[bytes]:
    rng = random.Random(7)
    return [b"", "héllo wörld".encode(), rng.randbytes(1024), rng.randbytes(10 * 1024)]


async def test_sdk_producer_to_alions_consumer(alions: AlionsCluster) -> None:
    topic = "InteropSdkToAlions"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        messages = [
            Message(
                topic=topic,
                body=body,
                tags=f"Tag{i}",
                keys=[f"k{i}", "shared"],
                properties={"order": str(i), "city": "Zürich"},
            )
            for i, body in enumerate(bodies())
        ]
        async with open_producer(alions.namesrv, group="PID_interop") as producer:
            results = [await producer.send(m) for m in messages]
        async with alions.consumer("GID_interop_alions", [(topic, "*")]) as run:
            await run.wait_messages(len(messages), timeout_s=DELIVERY_TIMEOUT_S)
            await run.close()
    got = by_msg_id(run.messages())
    assert set(got) == {r.offset_msg_id for r in results}
    for message, result in zip(messages, results, strict=True):
        (delivery,) = got[result.offset_msg_id]
        assert delivery["bodySha256"] == hashlib.sha256(message.body).hexdigest()
        assert delivery["tags"] == message.tags
        assert delivery["keys"] == " ".join(message.keys)
        assert user_properties(delivery) == dict(message.properties)
        assert delivery["properties"]["UNIQ_KEY"] == result.msg_id


async def test_alions_producer_to_sdk_push_consumer(alions: AlionsCluster) -> None:
    topic = "InteropAlionsToSdk"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        out = [
            alions.message(
                topic=topic,
                body=body,
                tags=f"Tag{i}",
                keys=(f"k{i}",),
                properties={"order": str(i), "city": "Zürich"},
            )
            for i, body in enumerate(bodies())
        ]
        sent = await alions.produce(out)
        received: dict[str, ReceivedMessage] = {}
        all_in = trio.Event()

        async def listener(batch: list[ReceivedMessage]) -> ConsumeResult:
            for m in batch:
                received[m.offset_msg_id] = m
            if len(received) >= len(sent):
                all_in.set()
            return ConsumeResult.SUCCESS

        async with open_push_consumer(
            alions.namesrv,
            group="GID_interop_sdk",
            subscriptions={topic: "*"},
            listener=listener,
            consume_from=ConsumeFrom.FIRST,
        ):
            with trio.fail_after(DELIVERY_TIMEOUT_S):
                await all_in.wait()
    assert set(received) == {s.msg_id for s in sent}
    for s in sent:
        m = received[s.msg_id]
        assert m.body == s.message.body
        assert m.tags == s.message.tags
        assert m.keys == s.message.keys
        assert {k: m.properties[k] for k in s.message.properties} == dict(s.message.properties)
        assert m.queue.queue_id == s.queue_id and m.queue_offset == s.queue_offset
