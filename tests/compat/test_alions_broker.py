"""Unmodified ali-ons (3.12.0) produces to and consumes from our broker.

Real processes: ``rmq namesrv`` and ``rmq broker`` (fixture ``alions`` in conftest.py), and
ali-ons' own Producer and push Consumer in node processes (``alions_produce.js``,
``alions_consume.js``). Each test checks what ali-ons hands its application: bodies byte
for byte (SHA-256), tags, keys, user properties, the msgId ``send`` returned, queue ids
and offsets; and, over the wire, what the broker stored (committed offsets, routes).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pytest
import trio

if TYPE_CHECKING:  # the fixture's types (conftest modules are not imported by tests)
    from tests.compat.conftest import AlionsCluster, DriverRun, Sent

pytestmark = [pytest.mark.compat]

#: A whole test, start to finish, on a slow 2-core machine.
TEST_TIMEOUT_S = 60.0
#: From "consumer ready" (or the last send) until every expected delivery arrived.
DELIVERY_TIMEOUT_S = 20.0
#: Quiet time after the expected deliveries, so that an extra one would be seen.
SETTLE_S = 1.5
#: A held (long-polling) pull answered this long after its message arrived was not woken
#: by the arrival but found by the broker's periodic re-check (every 5 s).
HELD_PULL_WAKEUP_S = 3.0

KIB = 1024
MIB = 1024 * KIB


def bodies() -> dict[str, bytes]:
    """Bodies around ali-ons' 4 KiB compression threshold, plus the edges."""
    rng = random.Random(20240501)
    return {
        "empty": b"",
        "small": "hello from ali-ons ✓".encode(),
        "binary": bytes(range(256)) * 4,
        "under-threshold": rng.randbytes(4 * KIB - 1),  # sent as is
        "at-threshold": rng.randbytes(4 * KIB),  # zlib'ed by ali-ons (random: no gain)
        "compressible": b"RocketMQ on Trio. " * (64 * KIB // 18),  # zlib shrinks it
        "one-mib": rng.randbytes(MIB),
    }


def by_msg_id(deliveries: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        found.setdefault(d["msgId"], []).append(d)
    return found


def user_properties(delivery: dict[str, Any]) -> dict[str, str]:
    """The properties the application set: without RocketMQ's own, ali-ons' and the empty
    key ali-ons' decoder makes of the trailing separator."""
    system = {
        "TAGS",
        "KEYS",
        "UNIQ_KEY",
        "CLUSTER",
        "MIN_OFFSET",
        "MAX_OFFSET",
        "RETRY_TOPIC",
        "ORIGIN_MESSAGE_ID",
        "MAX_RECONSUME_TIMES",
        "REAL_TOPIC",
        "REAL_QID",
        "DELAY",
        "",
    }
    return {k: v for k, v in delivery["properties"].items() if k not in system}


def assert_same_message(delivery: dict[str, Any], sent: Sent) -> None:
    """What the application got is what was sent: body, tag, keys, user properties."""
    m = sent.message
    what = f"message {sent.msg_id} ({m.tags}, {len(m.body)} bytes)"
    assert delivery["topic"] == m.topic, what
    assert delivery["bodyLength"] == len(m.body), what
    assert delivery["bodySha256"] == m.sha256, what
    # ali-ons sends an untagged message with the literal tag "null" (wire.md §5.3 #7).
    assert delivery["tags"] == (m.tags if m.tags is not None else "null"), what
    assert delivery["keys"] == (" ".join(m.keys) or None), what
    assert user_properties(delivery) == dict(m.properties), what


def unexpected_errors(run: DriverRun, group: str, *allowed: str) -> list[dict[str, Any]]:
    """Errors ali-ons emitted, except the ones a healthy run has.

    Always allowed, because RocketMQ answers the same:
    - the ``%RETRY%<group>`` route is missing until the consumer's first heartbeat made the
      broker create the topic (wire.md §5.3 #9);
    - QUERY_CONSUMER_OFFSET answers QUERY_NOT_FOUND (22) for a group without an offset on
      a queue that never held a message; ali-ons emits it and applies consumeFromWhere
      (wire.md §2.6). Where each queue started is asserted through ``queueStart`` events.

    Allowed once the driver began ``close()`` (its ``closing`` event): a READ_FROM_STORE
    offset read failing with "The socket was closed". ali-ons 3.12.0's ``close()`` clears
    its queue table while a rebalance (every second here) may be waiting on the broker;
    that rebalance then reads an offset for the queue it thinks is new, and ``close()``
    shuts the socket under it (mq_push_consumer.js ``close``/``updateProcessQueueTable
    InRebalance``). The client's own race, not the broker's answer.
    """
    patterns = [
        re.compile(re.escape(f"No topic route info in name server for the topic: %RETRY%{group}")),
        re.compile(
            r"RemoteBrokerOffsetStore\.readOffset failed, .* type: READ_FROM_STORE "
            r"Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first"
        ),
        *(re.compile(a) for a in allowed),
    ]
    closing_race = re.compile(
        r"RemoteBrokerOffsetStore\.readOffset failed, .* type: READ_FROM_STORE "
        r"The socket was closed"
    )
    run.of("error")  # read every event so far
    unexpected: list[dict[str, Any]] = []
    closing = False
    for event in run.events:
        if event["event"] == "closing":
            closing = True
        elif event["event"] == "error":
            accepted = [*patterns, closing_race] if closing else patterns
            if not any(p.search(event["message"]) for p in accepted):
                unexpected.append(event)
    return unexpected


def expected_offsets(sent: Sequence[Sent]) -> dict[int, int]:
    """Queue → next offset after the given messages (what a consumer of all commits)."""
    offsets: dict[int, int] = {}
    for s in sent:
        offsets[s.queue_id] = max(offsets.get(s.queue_id, 0), s.queue_offset + 1)
    return offsets


# --- 1. round trip ---------------------------------------------------------------------------


async def test_producer_and_push_consumer_round_trip(alions: AlionsCluster) -> None:
    topic, group = "AlionsRoundTrip", "GID_alions_round_trip"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        messages = [
            alions.message(
                topic=topic,
                body=body,
                tags=f"Tag{i % 3}",
                keys=(f"order-{i}", f"name-{name}"),
                properties={"index": str(i), "kind": name, "note": "héllo wörld ✓ a=b;c"},
            )
            for i, (name, body) in enumerate(bodies().items())
        ]
        sent = await alions.produce(messages)
        assert len({s.msg_id for s in sent}) == len(sent)
        assert {s.queue_id for s in sent} <= {0, 1, 2, 3}

        async with alions.consumer(group, [(topic, "*")]) as consumer:
            await consumer.wait_messages(len(sent), timeout_s=DELIVERY_TIMEOUT_S)
            await consumer.settle(SETTLE_S)
            await consumer.close()

        got = by_msg_id(consumer.messages())
        assert set(got) == {s.msg_id for s in sent}, "msgIds differ from what send() returned"
        uniq_keys = set()
        for s in sent:
            (delivery,) = got[s.msg_id]  # exactly once
            assert delivery["outcome"] == "ok"
            assert_same_message(delivery, s)
            assert delivery["reconsumeTimes"] == 0
            assert (delivery["queueId"], delivery["queueOffset"]) == (s.queue_id, s.queue_offset)
            assert delivery["storeHost"] == alions.broker
            # ali-ons sets no UNIQ_KEY; the broker adds one (wire.md §2.3) and CLUSTER.
            assert re.fullmatch("[0-9A-F]{32}", delivery["properties"]["UNIQ_KEY"])
            assert delivery["properties"]["CLUSTER"] == "DefaultCluster"
            uniq_keys.add(delivery["properties"]["UNIQ_KEY"])
        assert len(uniq_keys) == len(sent)
        assert unexpected_errors(consumer, group) == []


# --- 2. retry ------------------------------------------------------------------------------


async def test_failed_message_comes_back_through_the_retry_topic(alions: AlionsCluster) -> None:
    topic, group = "AlionsRetry", "GID_alions_retry"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        rng = random.Random(7)
        messages = [
            alions.message(
                topic=topic,
                body=b"fail me once",
                tags="TagA",
                keys=("retry-1",),
                properties={"attempt": "first"},
            ),
            # Compressed by ali-ons: the retry copy must keep the sysFlag with the body.
            alions.message(
                topic=topic,
                body=rng.randbytes(5 * KIB),
                tags="TagB",
                keys=("retry-2",),
                properties={"size": "5k"},
            ),
        ]
        sent = await alions.produce(messages)

        async with alions.consumer(group, [(topic, "*")], fail_first_delivery=True) as consumer:
            await consumer.wait_messages(
                len(sent), timeout_s=DELIVERY_TIMEOUT_S + alions.retry_delay_s
            )
            await consumer.settle(SETTLE_S)
            # ali-ons moves past a message once CONSUMER_SEND_MSG_BACK succeeded, and past
            # its retry copy (one %RETRY% queue) once the handler took it.
            await alions.wait_committed(group, topic, expected_offsets(sent))
            await alions.wait_committed(group, f"%RETRY%{group}", {0: len(sent)}, queues=1)
            await consumer.close()

        failed = by_msg_id(consumer.messages("failed"))
        retried = {d["originMsgId"]: d for d in consumer.messages("ok")}
        assert len(consumer.messages("ok")) == len(sent), "a message came back more than once"
        assert set(failed) == set(retried) == {s.msg_id for s in sent}
        for s in sent:
            (first,) = failed[s.msg_id]
            again = retried[s.msg_id]
            assert first["reconsumeTimes"] == 0 and first["queueTopic"] == topic
            assert_same_message(first, s)
            # The copy from %RETRY%<group>: a new record, ali-ons gives it to the original
            # topic's handler with the original topic restored.
            assert again["msgId"] != s.msg_id
            assert again["reconsumeTimes"] == 1
            assert again["retryTopic"] == topic
            assert_same_message(again, s)
            assert again["bornTimestamp"] == first["bornTimestamp"]
            # The copy is stored in %RETRY% when delay level 3 is due (broker's clock; the
            # handler failed at "at" on ours, and the send-back came right after).
            delay_s = (again["storeTimestamp"] - first["at"]) / 1000
            assert alions.retry_delay_s - 0.1 <= delay_s < alions.retry_delay_s + 5, (
                f"the retry was stored {delay_s} s after the failure (level 3)"
            )

        on_purpose = "failing the first delivery .* on purpose"
        assert unexpected_errors(consumer, group, on_purpose) == []
        thrown = [e for e in consumer.of("error") if re.search(on_purpose, e["message"])]
        assert len(thrown) == len(sent)


# --- 3. restart ----------------------------------------------------------------------------


async def test_restarted_consumer_resumes_from_committed_offsets(alions: AlionsCluster) -> None:
    topic, group = "AlionsResume", "GID_alions_resume"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        first = await alions.produce(
            [alions.message(topic=topic, body=f"old {i}".encode(), tags="Old") for i in range(8)]
        )
        async with alions.consumer(group, [(topic, "*")]) as a:
            await a.wait_messages(len(first), timeout_s=DELIVERY_TIMEOUT_S)
            # Committed while A still runs: ali-ons' periodic oneway UPDATE_CONSUMER_OFFSET.
            await alions.wait_committed(group, topic, expected_offsets(first))
            await a.close()
        assert Counter(d["msgId"] for d in a.messages()) == Counter(s.msg_id for s in first)
        # Unchanged by the commit A's close() sent.
        assert await alions.committed_offsets(group, topic, 4) == expected_offsets(first)

        second = await alions.produce(
            [alions.message(topic=topic, body=f"new {i}".encode(), tags="New") for i in range(6)]
        )
        async with alions.consumer(group, [(topic, "*")]) as b:
            await b.wait_messages(len(second), timeout_s=DELIVERY_TIMEOUT_S)
            await b.settle(SETTLE_S)
            await b.close()

        starts = {
            e["queueId"]: int(e["nextOffset"]) for e in b.of("queueStart") if e["topic"] == topic
        }
        committed = expected_offsets(first)
        assert starts == {q: committed.get(q, 0) for q in range(4)}
        got = by_msg_id(b.messages())
        assert set(got) == {s.msg_id for s in second}, "B got old messages"
        for s in second:
            (delivery,) = got[s.msg_id]  # exactly once
            assert_same_message(delivery, s)
        assert unexpected_errors(a, group) == [] and unexpected_errors(b, group) == []


# --- 4. tag filtering ----------------------------------------------------------------------


async def test_tag_subscription_gets_only_its_tags(alions: AlionsCluster) -> None:
    topic = "AlionsTags"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        tags = ["TagA", "TagB", "TagC", None, "tagA", "TagA", "TagAB", "TagB", "Aa", "BB"]
        sent = await alions.produce(
            [
                alions.message(topic=topic, body=f"{i}:{t}".encode(), tags=t)
                for i, t in enumerate(tags)
            ]
        )
        wanted = [s for s in sent if s.message.tags in ("TagA", "TagB")]
        # "Aa" and "BB" have the same Java String.hashCode (2112): the broker filters by
        # hash code, as RocketMQ does, and ali-ons drops the collision by exact tag.
        colliding = [s for s in sent if s.message.tags in ("Aa", "BB")]
        wanted_aa = [s for s in sent if s.message.tags == "Aa"]

        async with (
            alions.consumer("GID_alions_tags", [(topic, "TagA || TagB")]) as ab,
            alions.consumer("GID_alions_tags_aa", [(topic, "Aa")]) as aa,
        ):
            await ab.wait_messages(len(wanted), timeout_s=DELIVERY_TIMEOUT_S)
            await aa.wait_messages(len(wanted_aa), timeout_s=DELIVERY_TIMEOUT_S)
            await ab.settle(SETTLE_S)
            await ab.close()
            await aa.close()

        def pulled(run: DriverRun) -> Counter[str]:
            return Counter(i for e in run.of("pulled") if e["topic"] == topic for i in e["msgIds"])

        got = by_msg_id(ab.messages())
        assert set(got) == {s.msg_id for s in wanted}
        for s in wanted:
            (delivery,) = got[s.msg_id]
            assert_same_message(delivery, s)
        # The broker, not only ali-ons' own check, left the other tags out.
        assert pulled(ab) == Counter(s.msg_id for s in wanted)
        assert pulled(aa) == Counter(s.msg_id for s in colliding)
        assert [d["msgId"] for d in aa.messages()] == [s.msg_id for s in wanted_aa]
        assert unexpected_errors(ab, "GID_alions_tags") == []
        assert unexpected_errors(aa, "GID_alions_tags_aa") == []


# --- 5. broadcasting, and where a new group starts ---------------------------------------------


async def test_broadcasting_consumers_each_get_every_new_message(alions: AlionsCluster) -> None:
    topic, group = "AlionsBroadcast", "GID_alions_broadcast"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        old = await alions.produce(
            [alions.message(topic=topic, body=f"before {i}".encode(), tags="T") for i in range(4)]
        )
        async with (
            alions.consumer(
                group,
                [(topic, "*")],
                broadcast=True,
                consume_from="CONSUME_FROM_LAST_OFFSET",
                instance_name="one",
            ) as one,
            alions.consumer(
                group,
                [(topic, "*")],
                broadcast=True,
                consume_from="CONSUME_FROM_LAST_OFFSET",
                instance_name="two",
            ) as two,
        ):
            for run in (one, two):
                # Broadcasting offsets live in ali-ons' memory: with none, it starts at the
                # queue's end (GET_MAX_OFFSET); send only after every queue has its start.
                await run.wait_until(
                    lambda r: {e["queueId"] for e in r.of("queueStart")} == {0, 1, 2, 3},
                    what="a start offset for all 4 queues",
                    timeout_s=DELIVERY_TIMEOUT_S,
                )
                starts = {e["queueId"]: int(e["nextOffset"]) for e in run.of("queueStart")}
                assert starts == {q: expected_offsets(old).get(q, 0) for q in range(4)}
            new = await alions.produce(
                [
                    alions.message(topic=topic, body=f"after {i}".encode(), tags="T")
                    for i in range(6)
                ]
            )
            for run in (one, two):
                await run.wait_messages(len(new), timeout_s=DELIVERY_TIMEOUT_S)
            await one.settle(SETTLE_S)
            await one.close()
            await two.close()

        for run in (one, two):
            assert Counter(d["msgId"] for d in run.messages()) == Counter(s.msg_id for s in new)
            assert unexpected_errors(run, group) == []
        # The broker keeps no offsets and no retry topic for a broadcasting group.
        assert await alions.committed_offsets(group, topic, 4) == {}
        assert not await alions.has_route(f"%RETRY%{group}")


async def test_new_group_from_last_offset_starts_at_zero_on_a_young_queue(
    alions: AlionsCluster,
) -> None:
    """CONSUME_FROM_LAST_OFFSET applies only when the broker has no offset; like RocketMQ's
    ConsumerManageProcessor, ours answers QUERY_CONSUMER_OFFSET with 0 for a new group while
    the queue still holds its first message (wire.md §2.6), so ali-ons reads from the start.
    Then messages sent later reach it through held pulls (long polling)."""
    topic, group = "AlionsLastOffset", "GID_alions_last_offset"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        old = await alions.produce(
            [alions.message(topic=topic, body=f"before {i}".encode(), tags="T") for i in range(5)]
        )
        async with alions.consumer(
            group, [(topic, "*")], consume_from="CONSUME_FROM_LAST_OFFSET"
        ) as consumer:
            await consumer.wait_messages(len(old), timeout_s=DELIVERY_TIMEOUT_S)
            # ali-ons' next pulls find nothing and are held by the broker (long polling).
            new = await alions.produce(
                [
                    alions.message(topic=topic, body=f"after {i}".encode(), tags="T")
                    for i in range(3)
                ]
            )
            sent_at = trio.current_time()
            await consumer.wait_messages(len(old) + len(new), timeout_s=DELIVERY_TIMEOUT_S)
            waited_s = trio.current_time() - sent_at
            await consumer.settle(SETTLE_S)
            await consumer.close()

        # A held pull is answered when a message arrives, not at the next re-check (5 s).
        assert waited_s < HELD_PULL_WAKEUP_S, f"new messages came {waited_s:.1f} s after sending"

        starts = {
            e["queueId"]: int(e["nextOffset"])
            for e in consumer.of("queueStart")
            if e["topic"] == topic
        }
        assert starts == {0: 0, 1: 0, 2: 0, 3: 0}
        got = Counter(d["msgId"] for d in consumer.messages())
        assert got == Counter(s.msg_id for s in [*old, *new])
        assert unexpected_errors(consumer, group) == []


# --- 6. two members of one group ----------------------------------------------------------------


def latest_queues(run: DriverRun, topic: str) -> set[int]:
    """The queues of ``topic`` ali-ons' last rebalance gave this consumer."""
    assigned = [e for e in run.of("assigned") if e["topic"] == topic]
    return {q["queueId"] for q in assigned[-1]["queues"]} if assigned else set()


async def test_two_members_of_a_group_share_the_queues(alions: AlionsCluster) -> None:
    """ali-ons splits the queues by the member list the broker returns
    (GET_CONSUMER_LIST_BY_GROUP); together the members consume every message once."""
    topic, group = "AlionsShared", "GID_alions_shared"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic)
        async with (
            alions.consumer(group, [(topic, "*")]) as one,
            alions.consumer(group, [(topic, "*")]) as two,
        ):

            def split() -> bool:
                mine, theirs = latest_queues(one, topic), latest_queues(two, topic)
                return len(mine) == len(theirs) == 2 and mine | theirs == {0, 1, 2, 3}

            await alions.wait_until_all(
                [one, two], split, what="2 queues each", timeout_s=DELIVERY_TIMEOUT_S
            )
            sent = await alions.produce(
                [alions.message(topic=topic, body=f"m{i}".encode(), tags="T") for i in range(20)]
            )
            await alions.wait_until_all(
                [one, two],
                lambda: len(one.messages()) + len(two.messages()) >= len(sent),
                what=f"{len(sent)} deliveries between the two",
                timeout_s=DELIVERY_TIMEOUT_S,
            )
            await one.settle(SETTLE_S)
            await one.close()
            await two.close()

        for run in (one, two):
            queues = latest_queues(run, topic)
            assert {d["queueId"] for d in run.messages()} <= queues
            assert unexpected_errors(run, group) == []
        together = Counter(d["msgId"] for d in [*one.messages(), *two.messages()])
        assert together == Counter(s.msg_id for s in sent)


# --- 6. timer messages (ali-ons setStartDeliverTime) -------------------------------------------


async def test_start_deliver_time_holds_the_message_until_due(alions: AlionsCluster) -> None:
    """ali-ons' ``setStartDeliverTime`` writes ``__STARTDELIVERTIME`` (epoch ms): the broker
    keeps the message in its timer topic and stores it in the real topic when due."""
    topic, group = "AlionsTimer", "GID_alions_timer"
    with trio.fail_after(TEST_TIMEOUT_S):
        await alions.create_topic(topic, queues=1)
        due_ms = int(time.time() * 1000) + 4000
        sent = await alions.produce(
            [
                alions.message(
                    topic=topic,
                    body=b"timed %d" % i,
                    tags="T",
                    properties={"__STARTDELIVERTIME": str(due_ms)},
                )
                for i in range(2)
            ]
        )
        async with alions.consumer(group, [(topic, "*")]) as consumer:
            await consumer.wait_messages(len(sent), timeout_s=DELIVERY_TIMEOUT_S)
            await consumer.settle(SETTLE_S)
            await consumer.close()
        got = consumer.messages()
        assert sorted(d["bodySha256"] for d in got) == sorted(s.message.sha256 for s in sent)
        for delivery in got:
            assert 0 <= delivery["storeTimestamp"] - due_ms <= 1000, delivery
            assert delivery["properties"]["__STARTDELIVERTIME"] == str(due_ms)
        assert unexpected_errors(consumer, group) == []
