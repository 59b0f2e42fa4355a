"""The SDK consumers through a master failover and through route changes (issues #6, #8).

Real brokers in this process over loopback: a master (brokerId 0) and a slave (brokerId 1)
of one broker group with static roles and fast HA timers, and for route changes a second
group. Tests talk to the brokers only over the wire. Messages are told apart by body, so a
loss or a duplicate is visible; duplicates are counted and bounded, losses never allowed.
Every wait is a condition polled under a deadline: no timing is asserted beyond those.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from client.consumer import (
    ConsumeFrom,
    ConsumerConfig,
    ConsumeResult,
    InflightOffsets,
    MessageModel,
    PullResult,
    PullStatus,
    PushConsumer,
    RouteHealth,
    failover_broker_id,
    open_lite_pull_consumer,
    open_pull_consumer,
    open_push_consumer,
    pull_replica,
)
from client.consumer.rebalancing import _QueueState
from client.message import Message, ReceivedMessage
from client.offsets import BrokerOffsetStore
from client.producer import Producer, open_producer
from client.routes import RouteCache, TopicInfo
from protocol.codes import RequestCode, ResponseCode
from protocol.headers import GetMaxOffsetRequestHeader, QueryConsumerOffsetRequestHeader
from protocol.route import BrokerData, MessageQueue, QueueData, TopicRouteData
from tests.component.sdk_fixtures import SdkCluster, sdk_cluster, wait_until

DEADLINE_S = 60.0
TOPIC = "FailoverTopic"
GROUP = "FailoverGroup"
SLAVE = "broker-a-s"
#: Fast HA: a slave finds its master, copies metadata and acks within a fraction of a second.
FAST_HA: dict[str, Any] = {
    "ha_send_heartbeat_interval_s": 0.1,
    "ha_housekeeping_interval_s": 2.0,
    "check_sync_state_set_period_s": 0.1,
    "slave_register_interval_s": 0.1,
    "slave_sync_interval_s": 0.1,
    "slave_timeout_s": 1.0,
}
#: Consumer knobs: frequent commits and heartbeats; small batches so that a failover finds
#: messages still to pull. Rebalance and route timers are long unless a test says otherwise:
#: whatever happens within a test's deadline happened because of an event, not a timer.
CONSUMER: dict[str, Any] = {
    "persist_interval_s": 0.2,
    "heartbeat_interval_s": 1.0,
    "timeout_s": 2.0,
    "shutdown_timeout_s": 3.0,
    "pull_batch_size": 2,
    "max_inflight_per_queue": 4,
    "consume_concurrency": 1,
    "rebalance_interval_s": 60.0,
    "route_refresh_interval_s": 60.0,
    "pull_backoff_s": 0.2,
    #: Held pulls answer within a second, so who answers them shows soon after a change.
    "suspend_timeout_s": 1.0,
}
#: At most what can be in flight on two queues: a failover that keeps the position
#: redelivers no more than this (in fact none when the queue is not moved).
DUPLICATE_BOUND = 2 * CONSUMER["max_inflight_per_queue"]


class Gate:
    """A listener that records bodies and, once ``hold_after`` messages were seen, waits
    for ``open`` before finishing more (so some messages are still on the broker)."""

    def __init__(self, hold_after: int | None = None) -> None:
        self.bodies: list[bytes] = []
        self.hold_after = hold_after
        self.opened = trio.Event()
        if hold_after is None:
            self.opened.set()

    async def __call__(self, messages: list[ReceivedMessage]) -> ConsumeResult:
        if self.hold_after is not None and len(self.bodies) >= self.hold_after:
            await self.opened.wait()
        self.bodies.extend(m.body for m in messages)
        return ConsumeResult.SUCCESS

    def open(self) -> None:
        self.opened.set()

    def distinct(self) -> set[bytes]:
        return set(self.bodies)

    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(self.bodies).values())


def bodies(tag: str, count: int) -> list[bytes]:
    return [f"{tag}-{i}".encode() for i in range(count)]


async def send_all(producer: Producer, topic: str, items: list[bytes]) -> None:
    for body in items:
        await producer.send(Message(topic=topic, body=body))


async def query_offset(c: SdkCluster, addr: str, topic: str, queue_id: int) -> int | None:
    header = QueryConsumerOffsetRequestHeader(
        consumer_group=GROUP, topic=topic, queue_id=queue_id, set_zero_if_not_found=False
    )
    response = await c.call(addr, RequestCode.QUERY_CONSUMER_OFFSET, header.to_ext_fields())
    if response.code == ResponseCode.QUERY_NOT_FOUND:
        return None
    assert response.code == ResponseCode.SUCCESS, response.remark
    return int(response.ext_fields["offset"])


async def max_offset(c: SdkCluster, addr: str, topic: str, queue_id: int) -> int:
    header = GetMaxOffsetRequestHeader(topic=topic, queue_id=queue_id)
    response = await c.call(addr, RequestCode.GET_MAX_OFFSET, header.to_ext_fields())
    assert response.code == ResponseCode.SUCCESS, response.remark
    return int(response.ext_fields["offset"])


async def wait_committed(c: SdkCluster, addr: str, topic: str, queues: int) -> None:
    """Until the broker at ``addr`` stores, for every queue, its max offset as GROUP's."""

    async def done() -> bool:
        for qid in range(queues):
            if await query_offset(c, addr, topic, qid) != await max_offset(c, addr, topic, qid):
                return False
        return True

    await wait_until(done, timeout_s=20.0, what=f"{GROUP} committed everything at {addr}")


async def wait_replicated(c: SdkCluster, master: str, slave: str, topic: str, n: int) -> None:
    async def same() -> bool:
        for qid in range(n):
            if await max_offset(c, slave, topic, qid) != await max_offset(c, master, topic, qid):
                return False
        return True

    await wait_until(same, timeout_s=20.0, what="the slave has every message of the master")


async def slave_knows_topic(c: SdkCluster, slave: str, topic: str) -> None:
    async def known() -> bool:
        response = await c.call(slave, RequestCode.GET_ALL_TOPIC_CONFIG, {})
        return topic in json.loads(response.body).get("topicConfigTable", {})

    await wait_until(known, what=f"the slave copied {topic}")


async def wait_brokers(c: SdkCluster, topic: str, expected: dict[str, set[int]]) -> None:
    """Until the route of ``topic`` lists exactly these groups with these broker ids."""

    async def listed() -> bool:
        route = await c.route(topic)
        found = (
            {}
            if route is None
            else {b["brokerName"]: {int(i) for i in b["brokerAddrs"]} for b in route["brokerDatas"]}
        )
        queues = {} if route is None else {q["brokerName"] for q in route["queueDatas"]}
        return found == expected and set(queues) == set(expected)

    await wait_until(listed, timeout_s=20.0, what=f"route of {topic} = {expected}")


@asynccontextmanager
async def master_and_slave(
    tmp_path: Path, *, queues: int = 2, **slave: Any
) -> AsyncIterator[SdkCluster]:
    """broker-a's master and slave (async replication), ``TOPIC`` on it with ``queues``."""
    async with sdk_cluster(tmp_path, brokers=("broker-a",), **FAST_HA) as c:
        await c.create_topic(TOPIC, queues, brokers=["broker-a"])
        await c.start_broker(
            SLAVE, broker_name="broker-a", broker_id=1, broker_role="SLAVE", **slave
        )
        await wait_brokers(c, TOPIC, {"broker-a": {0, 1}})
        await slave_knows_topic(c, c.addr(SLAVE), TOPIC)
        yield c


def owned(consumer: PushConsumer, topic: str = TOPIC) -> set[MessageQueue]:
    return {q for q in consumer.assigned_queues() if q.topic == topic}


def pulls_go_to(consumer: PushConsumer, broker_id: int, topic: str = TOPIC) -> bool:
    queues = consumer.statistics().queues
    return all(s.broker_id == broker_id for q, s in queues.items() if q.topic == topic)


def answered_by(consumer: PushConsumer, broker_id: int, topic: str = TOPIC) -> bool:
    queues = consumer.statistics().queues
    return all(s.answered_by == broker_id for q, s in queues.items() if q.topic == topic)


async def consume_through_master_stop(
    c: SdkCluster, consumer: PushConsumer, gate: Gate, producer: Producer, first: list[bytes]
) -> None:
    """Phase 1 of the failover tests: a consumer in the middle of ``first`` loses the master
    and finishes ``first`` from the slave, committing to the slave meanwhile."""
    await send_all(producer, TOPIC, first)
    assert gate.hold_after is not None
    await wait_until(lambda: len(gate.bodies) >= gate.hold_after, what="the first messages")
    master, slave = c.addr("broker-a"), c.addr(SLAVE)
    await wait_replicated(c, master, slave, TOPIC, 2)
    await c.stop_broker("broker-a")
    gate.open()
    await wait_until(lambda: gate.distinct() >= set(first), timeout_s=20.0, what="all from slave")
    assert owned(consumer) == {
        MessageQueue(topic=TOPIC, broker_name="broker-a", queue_id=i) for i in range(2)
    }
    # Pulled from the slave (the master is gone), and the position went to the slave too.
    await wait_until(lambda: answered_by(consumer, 1), what="pulls answered by the slave")
    await wait_committed(c, slave, TOPIC, 2)


# --- (a) the master stops: consume on from the slave ------------------------------------------


async def test_a_consumer_keeps_consuming_from_the_slave_when_the_master_stops(
    tmp_path: Path,
) -> None:
    """(a) The master stops while a push consumer is in the middle of the topic: it keeps
    its queues, pulls what is left from the slave (which had replicated it), commits its
    progress to the slave, and redelivers nothing beyond what was in flight: its position
    was never lost."""
    with trio.fail_after(DEADLINE_S):
        async with master_and_slave(tmp_path) as c, open_producer(c.namesrv) as producer:
            gate = Gate(hold_after=8)
            async with open_push_consumer(
                c.namesrv,
                group=GROUP,
                listener=gate,
                subscriptions={TOPIC: "*"},
                consume_from=ConsumeFrom.FIRST,
                **CONSUMER,
            ) as consumer:
                first = bodies("first", 40)
                await consume_through_master_stop(c, consumer, gate, producer, first)
                assert gate.distinct() == set(first)
                assert gate.duplicates() <= DUPLICATE_BOUND, gate.duplicates()


# --- (b) a consumer started while the master is down ------------------------------------------


@pytest.mark.parametrize("kind", ["push", "lite"])
async def test_b_a_consumer_started_while_the_master_is_down_starts_at_the_committed_offset(
    tmp_path: Path, kind: str
) -> None:
    """(b) The group committed 20 messages (the slave copied the offsets); 20 more arrive
    and are replicated; the master stops; a new consumer of the group starts (push, or
    lite pull). It reads the committed offsets from the slave and gets exactly the 20 new
    messages: not from 0 (consume_from=FIRST would redeliver the old ones), not from the
    end (it would skip them)."""
    with trio.fail_after(DEADLINE_S):
        async with master_and_slave(tmp_path) as c, open_producer(c.namesrv) as producer:
            master, slave = c.addr("broker-a"), c.addr(SLAVE)
            old, new = bodies("old", 20), bodies("new", 20)
            gate = Gate()
            options = {**CONSUMER, "consume_from": ConsumeFrom.FIRST}
            async with open_push_consumer(
                c.namesrv, group=GROUP, listener=gate, subscriptions={TOPIC: "*"}, **options
            ):
                await send_all(producer, TOPIC, old)
                await wait_until(lambda: gate.distinct() == set(old), what="the old messages")
            await wait_committed(c, master, TOPIC, 2)
            await send_all(producer, TOPIC, new)
            await wait_replicated(c, master, slave, TOPIC, 2)
            # The slave has copied the committed offsets (its metadata sync, every 0.1 s).
            await wait_until(
                lambda: all_equal_offsets(c, master, slave), what="the slave copied the offsets"
            )
            await c.stop_broker("broker-a")
            if kind == "push":
                late = Gate()
                async with open_push_consumer(
                    c.namesrv, group=GROUP, listener=late, subscriptions={TOPIC: "*"}, **options
                ) as consumer:
                    await wait_until(lambda: late.distinct() == set(new), what="the new ones")
                    await wait_until(lambda: answered_by(consumer, 1), what="pulls from slave")
                got = late.bodies
            else:
                got = []
                async with open_lite_pull_consumer(
                    c.namesrv, group=GROUP, subscriptions={TOPIC: "*"}, **options
                ) as lite:
                    while set(got) != set(new):
                        got += [m.body for m in await lite.poll(timeout_s=1.0)]
            assert not set(got) & set(old), "started below the committed offset"
            assert sorted(got) == sorted(new), "a loss or a duplicate"


async def all_equal_offsets(c: SdkCluster, master: str, slave: str) -> bool:
    for qid in range(2):
        if await query_offset(c, slave, TOPIC, qid) != await query_offset(c, master, TOPIC, qid):
            return False
    return True


async def test_a_group_the_slave_has_no_offset_for_waits_for_the_master(tmp_path: Path) -> None:
    """A slave without an offset for the group may just not have copied it: the consumer
    must not apply consume_from on its word (FIRST would restart at 0, LAST skip). Its
    queues stay unstarted, round after round, until the master is back and answers."""
    with trio.fail_after(DEADLINE_S):
        async with master_and_slave(tmp_path) as c, open_producer(c.namesrv) as producer:
            master, slave = c.addr("broker-a"), c.addr(SLAVE)
            items = bodies("m", 10)
            await send_all(producer, TOPIC, items)
            await wait_replicated(c, master, slave, TOPIC, 2)
            await c.stop_broker("broker-a")
            gate = Gate()
            async with open_push_consumer(
                c.namesrv,
                group=GROUP,
                listener=gate,
                subscriptions={TOPIC: "*"},
                consume_from=ConsumeFrom.FIRST,
                **CONSUMER,
            ) as consumer:
                start = consumer.rebalances
                # Failed rounds come again after 0.5, 1, 2 s: three of them, none started.
                await wait_until(lambda: consumer.rebalances >= start + 3, what="three rounds")
                assert not owned(consumer)
                assert gate.bodies == []
                await c.start_broker("broker-a")
                await wait_until(
                    lambda: len(owned(consumer)) == 2, timeout_s=20.0, what="queues started"
                )
                await wait_until(lambda: gate.distinct() == set(items), what="consumed from 0")
                assert gate.duplicates() == 0


# --- (c) the master returns ----------------------------------------------------------------------


async def test_c_after_the_master_returns_the_consumer_continues_there_and_commits_there(
    tmp_path: Path,
) -> None:
    """(c) After consuming through the outage from the slave (commits went to the slave),
    the master comes back with older offsets. Pulls go back to it (the slave says so), new
    messages are consumed, none lost, and the commits reach the master: its offsets end at
    its max, not at what it had before the outage (the slave's copy is overwritten by
    the master's, so a commit only the slave took must be sent again)."""
    with trio.fail_after(DEADLINE_S):
        async with master_and_slave(tmp_path) as c, open_producer(c.namesrv) as producer:
            gate = Gate(hold_after=8)
            async with open_push_consumer(
                c.namesrv,
                group=GROUP,
                listener=gate,
                subscriptions={TOPIC: "*"},
                consume_from=ConsumeFrom.FIRST,
                **CONSUMER,
            ) as consumer:
                first, second = bodies("first", 40), bodies("second", 30)
                await consume_through_master_stop(c, consumer, gate, producer, first)
                await c.start_broker("broker-a")
                await wait_brokers(c, TOPIC, {"broker-a": {0, 1}})
                producer.routes.invalidate(TOPIC)
                await send_all(producer, TOPIC, second)
                await wait_until(
                    lambda: gate.distinct() == set(first + second),
                    timeout_s=20.0,
                    what="everything consumed",
                )
                # The slave sends us back (suggestWhichBrokerId=0); new messages come from there.
                await wait_until(lambda: pulls_go_to(consumer, 0), what="pulls go to the master")
                third = bodies("third", 6)
                await send_all(producer, TOPIC, third)
                await wait_until(lambda: gate.distinct() >= set(third), what="third consumed")
                await wait_until(lambda: answered_by(consumer, 0), what="the master answers")
                await wait_committed(c, c.addr("broker-a"), TOPIC, 2)
                assert gate.duplicates() <= DUPLICATE_BOUND, gate.duplicates()


async def test_a_slave_behind_the_consumer_is_waited_for_not_followed_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A slave that had not replicated everything when its master died answers a pull at
    our offset with "offset moved" to its own, lower end. Following it would deliver again
    what we consumed from the master. The consumer keeps its position and asks the master
    next; the same answer from a master (a new store) is followed."""
    queue = MessageQueue(topic=TOPIC, broker_name="broker-a", queue_id=0)

    def moved(broker_id: int, to: int) -> PullResult:
        return PullResult(
            status=PullStatus.OFFSET_ILLEGAL,
            next_begin_offset=to,
            min_offset=0,
            max_offset=to,
            suggest_which_broker_id=broker_id,
            broker_id=broker_id,
        )

    async with trio.open_nursery() as nursery:
        config = ConsumerConfig(
            group=GROUP,
            message_model=MessageModel.BROADCASTING,  # offsets in a file: no broker here
            offset_store_dir=tmp_path,
        )
        routes = RouteCache(client=None, namesrv=["127.0.0.1:1"])  # type: ignore[arg-type]
        consumer = PushConsumer(
            None,  # type: ignore[arg-type]
            routes,
            config,
            Gate(),
            client_id="c",
            nursery=nursery,
        )
        state = _QueueState(queue=queue, tracker=InflightOffsets(next_offset=20))
        await consumer._handle_pull(state, moved(broker_id=1, to=12))
        assert state.tracker.next_offset == 20 and state.tracker.generation == 0
        assert state.waiting_for_replica and state.broker_id == 0
        await consumer._handle_pull(state, moved(broker_id=1, to=25))  # forward: followed
        assert state.tracker.next_offset == 25 and not state.waiting_for_replica
        await consumer._handle_pull(state, moved(broker_id=0, to=5))  # a master decides
        assert state.tracker.next_offset == 5 and state.tracker.generation == 2


async def test_a_lagging_offset_copy_never_moves_a_dropped_queue_back(tmp_path: Path) -> None:
    """Two groups; broker-a's slave copied the group's offsets once, before anything was
    committed. Both of broker-a's brokers stop, so its queues leave the route and are
    dropped (their final commit has nowhere to go). The slave is then restarted as the
    group's master (a manual failover): it has every message, but no offset for the group.
    The consumer takes the queues back at its own last position, not at consume_from
    (FIRST would redeliver everything)."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path, brokers=("broker-a", "broker-b"), **FAST_HA) as c:
            await c.create_topic(TOPIC, 2)
            await c.start_broker(
                SLAVE,
                broker_name="broker-a",
                broker_id=1,
                broker_role="SLAVE",
                slave_sync_interval_s=3600.0,  # one copy at start, none after
            )
            await wait_brokers(c, TOPIC, {"broker-a": {0, 1}, "broker-b": {0}})
            await slave_knows_topic(c, c.addr(SLAVE), TOPIC)
            gate = Gate()
            async with (
                open_producer(c.namesrv) as producer,
                open_push_consumer(
                    c.namesrv,
                    group=GROUP,
                    listener=gate,
                    subscriptions={TOPIC: "*"},
                    consume_from=ConsumeFrom.FIRST,
                    **CONSUMER,
                ) as consumer,
            ):
                first, second = bodies("first", 30), bodies("second", 20)
                await send_all(producer, TOPIC, first)
                await wait_until(lambda: gate.distinct() == set(first), what="first consumed")
                master_a, slave_a = c.addr("broker-a"), c.addr(SLAVE)
                await wait_committed(c, master_a, TOPIC, 2)
                await wait_replicated(c, master_a, slave_a, TOPIC, 2)
                assert await query_offset(c, slave_a, TOPIC, 0) is None  # the copy lags
                a_queues = {
                    MessageQueue(topic=TOPIC, broker_name="broker-a", queue_id=i) for i in range(2)
                }
                await c.stop_broker(SLAVE)
                await c.stop_broker("broker-a")
                await wait_until(lambda: not owned(consumer) & a_queues, what="a dropped")
                await c.start_broker(SLAVE, broker_id=0, broker_role="ASYNC_MASTER")
                await wait_until(lambda: owned(consumer) >= a_queues, what="a taken back")
                producer.routes.invalidate(TOPIC)
                await send_all(producer, TOPIC, second)
                await wait_until(
                    lambda: gate.distinct() == set(first + second), what="second consumed"
                )
                assert gate.duplicates() == 0, Counter(gate.bodies).most_common(3)


# --- (d) route changes rebalance at once -------------------------------------------------------


async def test_d_a_group_joining_the_route_is_rebalanced_without_the_timer(
    tmp_path: Path,
) -> None:
    """(d) The topic gains a second broker group. With the rebalance timer at 60 s, the
    route refresh that sees the new queues rebalances at once: two consumers split all four
    queues, and the new group's messages are consumed exactly once."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path, brokers=("broker-a", "broker-b")) as c:
            await c.create_topic(TOPIC, 2, brokers=["broker-a"])
            g1, g2 = Gate(), Gate()
            options = {**CONSUMER, "route_refresh_interval_s": 0.5}
            async with (
                open_producer(c.namesrv) as producer,
                open_push_consumer(
                    c.namesrv,
                    group=GROUP,
                    listener=g1,
                    subscriptions={TOPIC: "*"},
                    instance="c1",
                    **options,
                ) as c1,
                open_push_consumer(
                    c.namesrv,
                    group=GROUP,
                    listener=g2,
                    subscriptions={TOPIC: "*"},
                    instance="c2",
                    **options,
                ) as c2,
            ):
                await wait_until(lambda: len(owned(c1)) == len(owned(c2)) == 1, what="1 each")
                await c.create_topic(TOPIC, 2, brokers=["broker-a", "broker-b"])
                await wait_until(
                    lambda: len(owned(c1)) == len(owned(c2)) == 2 and owned(c1) != owned(c2),
                    what="4 queues split after the route change",
                )
                assert c1.route_changes >= 1 and c2.route_changes >= 1
                producer.routes.invalidate(TOPIC)
                items = bodies("m", 40)
                await send_all(producer, TOPIC, items)
                await wait_until(
                    lambda: set(g1.bodies + g2.bodies) == set(items), what="all consumed"
                )
                assert len(g1.bodies) + len(g2.bodies) == len(items), "a duplicate"


async def test_d_a_group_leaving_and_rejoining_rebalances_every_consumer_at_once(
    tmp_path: Path,
) -> None:
    """(d) Two groups, two consumers: c1 owns broker-a's queues, c2 broker-b's. broker-a
    stops (no slave): its group leaves the route. c2 pulls nothing from broker-a, yet sees
    it leave at once (its connection to broker-a was lost) instead of at its 60 s route
    poll, so both consumers split broker-b's queues; then broker-a returns, and the
    degraded route, polled every second, brings both back to owning two queues each.
    Nothing is lost, and (everything committed before each change) nothing redelivered."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path, brokers=("broker-a", "broker-b")) as c:
            await c.create_topic(TOPIC, 2)
            g1, g2 = Gate(), Gate()
            a_queues = {
                MessageQueue(topic=TOPIC, broker_name="broker-a", queue_id=i) for i in range(2)
            }
            b_queues = {
                MessageQueue(topic=TOPIC, broker_name="broker-b", queue_id=i) for i in range(2)
            }
            async with (
                open_producer(c.namesrv) as producer,
                open_push_consumer(
                    c.namesrv,
                    group=GROUP,
                    listener=g1,
                    subscriptions={TOPIC: "*"},
                    instance="c1",
                    **CONSUMER,
                ) as c1,
                open_push_consumer(
                    c.namesrv,
                    group=GROUP,
                    listener=g2,
                    subscriptions={TOPIC: "*"},
                    instance="c2",
                    **CONSUMER,
                ) as c2,
            ):
                await wait_until(lambda: owned(c1) == a_queues and owned(c2) == b_queues)
                sent: list[bytes] = []

                async def send_and_settle(tag: str, brokers: list[str]) -> None:
                    items = bodies(tag, 20)
                    sent.extend(items)
                    producer.routes.invalidate(TOPIC)
                    await send_all(producer, TOPIC, items)
                    await wait_until(
                        lambda: set(g1.bodies + g2.bodies) == set(sent), what=f"{tag} consumed"
                    )
                    for name in brokers:
                        await wait_committed(c, c.addr(name), TOPIC, 2)

                await send_and_settle("both", ["broker-a", "broker-b"])
                await c.stop_broker("broker-a")
                await wait_until(
                    lambda: owned(c1) | owned(c2) == b_queues and len(owned(c2)) == 1,
                    what="broker-b's queues split after broker-a left",
                )
                await send_and_settle("b-only", ["broker-b"])
                await c.start_broker("broker-a")
                await wait_until(
                    lambda: owned(c1) == a_queues and owned(c2) == b_queues,
                    what="back to two queues each after broker-a returned",
                )
                await send_and_settle("again", ["broker-a", "broker-b"])
                everything = g1.bodies + g2.bodies
                assert len(everything) == len(sent), Counter(everything).most_common(3)


# --- pull consumer -------------------------------------------------------------------------------


async def test_the_pull_consumer_reads_and_commits_offsets_on_the_slave_meanwhile(
    tmp_path: Path,
) -> None:
    """The explicit pull consumer while the master is down: max offset, committed offset
    and pulls are answered by the slave, and a commit goes to the slave (``commit`` says a
    master did not take it); once the master is back, a commit reaches it again."""
    with trio.fail_after(DEADLINE_S):
        async with master_and_slave(tmp_path) as c, open_producer(c.namesrv) as producer:
            master, slave = c.addr("broker-a"), c.addr(SLAVE)
            await send_all(producer, TOPIC, bodies("m", 10))
            queue = MessageQueue(topic=TOPIC, broker_name="broker-a", queue_id=0)
            async with open_pull_consumer(c.namesrv, group=GROUP, timeout_s=2.0) as pc:
                top = await pc.max_offset(queue)
                assert top > 1
                await pc.pull(queue, 0, 1)  # the master creates the group (commits need it)
                assert await pc.commit(queue, 1) is True
                await wait_replicated(c, master, slave, TOPIC, 2)
                await wait_until(lambda: all_equal_offsets(c, master, slave), what="copied")
                await c.stop_broker("broker-a")
                await wait_brokers(c, TOPIC, {"broker-a": {1}})
                await pc.fetch_subscribe_queues(TOPIC)
                assert await pc.max_offset(queue) == top
                assert await pc.committed_offset(queue) == 1
                result = await pc.pull(queue, 1, 4)
                assert (
                    result.broker_id == 1
                    and [m.queue_offset for m in result.messages]
                    == [
                        1,
                        2,
                        3,
                        4,
                    ][: len(result.messages)]
                )
                assert await pc.commit(queue, 2) is False
                assert await query_offset(c, slave, TOPIC, 0) == 2
                await c.start_broker("broker-a")
                await wait_brokers(c, TOPIC, {"broker-a": {0, 1}})
                await pc.fetch_subscribe_queues(TOPIC)
                assert await pc.commit(queue, 3) is True
                assert await query_offset(c, c.addr("broker-a"), TOPIC, 0) == 3


# --- the pure parts --------------------------------------------------------------------------------


def _info(**groups: dict[int, str]) -> TopicInfo:
    route = TopicRouteData(
        queue_datas=[
            QueueData(broker_name=n, read_queue_nums=1, write_queue_nums=1, perm=6) for n in groups
        ],
        broker_datas=[
            BrokerData(cluster="c", broker_name=n, broker_addrs=addrs)
            for n, addrs in groups.items()
        ],
    )
    return TopicInfo(topic="T", route=route, publish=(), subscribe=())


def test_a_failed_master_pull_is_tried_at_the_slave_with_the_lowest_id() -> None:
    info = _info(a={0: "m:1", 3: "s3:1", 2: "s2:1"}, b={0: "mb:1"})
    assert failover_broker_id(info, "a", 0) == 2
    assert pull_replica(info, "a", failover_broker_id(info, "a", 0)) == (2, "s2:1")
    assert failover_broker_id(info, "a", 2) == 0  # after a slave, the master again
    assert failover_broker_id(info, "b", 0) == 0  # no slave: the master again
    assert failover_broker_id(None, "a", 0) == 0
    assert pull_replica(_info(a={1: "s1:1"}), "a", 0) == (1, "s1:1")  # no master routed


def test_route_health_degraded_while_a_group_or_a_master_is_missing() -> None:
    health = RouteHealth(forget_s=100.0)
    health.note(_info(a={0: "m:1", 1: "s:1"}, b={0: "mb:1"}), now_s=0.0)
    assert not health.degraded()
    health.note(_info(a={1: "s:1"}, b={0: "mb:1"}), now_s=1.0)
    assert health.degraded()  # broker-a lost its master
    health.note(_info(b={0: "mb:1"}), now_s=2.0)
    assert health.degraded()  # broker-a left
    health.note(_info(a={0: "m2:1"}, b={0: "mb:1"}), now_s=3.0)
    assert not health.degraded()
    health.note(_info(b={0: "mb:1"}), now_s=4.0)
    assert health.degraded()
    health.note(_info(b={0: "mb:1"}), now_s=200.0)
    assert not health.degraded()  # broker-a is forgotten: no fast polling forever
    health.note(_info(b={0: "mb:1"}, c={1: "sc:1"}), now_s=201.0)
    assert health.degraded()  # a group first seen without a master is expected to get one
    health.note(_info(b={0: "mb:1"}, c={1: "sc:1"}), now_s=302.0)
    assert not health.degraded()  # ... for forget_s, not forever
    health.vanished("T", now_s=303.0)
    assert health.degraded()  # the topic's route is gone entirely
    health.vanished("T", now_s=500.0)
    assert not health.degraded()


def test_a_dropped_queue_keeps_its_last_position_as_a_floor() -> None:
    store = BrokerOffsetStore(client=None, routes=None, group="G", timeout_s=1.0)  # type: ignore[arg-type]
    q = MessageQueue(topic="T", broker_name="a", queue_id=0)
    store.update(q, 7)
    store.remove(q)  # never persisted to a master
    assert store.floor(q) == 7 and store.get(q) is None and q in store._unsaved
    store.update(q, 9)  # owned again: memory rules, the floor is used up
    assert store.floor(q) is None and q not in store._unsaved
    store._persisted[q] = 9  # a master took it: still a floor, nothing to offer
    store.remove(q)
    assert store.floor(q) == 9 and q not in store._unsaved
