"""Latency-based broker avoidance (``FaultStrategy``, RocketMQ's MQFaultStrategy) and the
producer's queue selection on top of it.

The table is wire.md §4.3: latency thresholds 50/100/550/1800/3000/5000/15000 ms isolate a
broker for 0/0/2/5/6/10/30 s; a failed send isolates it for 30 s. Time is an argument.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio

from client.producer import (
    REFUSED_PAUSE_MAX_S,
    REFUSED_PAUSE_S,
    Producer,
    hash_selector,
    refused_pause_s,
)
from client.routes import FAILURE_ISOLATION_S, FaultStrategy, TopicInfo
from protocol.errors import ServerError
from protocol.route import MessageQueue, TopicRouteData


@pytest.mark.parametrize(
    ("latency_ms", "isolated_s"),
    [
        (0, 0),
        (49, 0),
        (99, 0),
        (549, 0),
        (550, 2),
        (1799, 2),
        (1800, 5),
        (3000, 6),
        (4999, 6),
        (5000, 10),
        (15000, 30),
        (60000, 30),
    ],
)
def test_latency_isolates_per_the_table(latency_ms: float, isolated_s: float) -> None:
    faults = FaultStrategy()
    faults.record("a", latency_ms, failed=False, now_s=100.0)
    if isolated_s == 0:
        assert faults.is_available("a", 100.0)
    else:
        assert not faults.is_available("a", 100.0)
        assert not faults.is_available("a", 100.0 + isolated_s - 0.001)
        assert faults.is_available("a", 100.0 + isolated_s)
    assert faults.is_available("b", 100.0), "other brokers are not affected"


def test_a_failure_isolates_for_thirty_seconds_and_a_fast_send_clears_it() -> None:
    faults = FaultStrategy()
    faults.record("a", 1, failed=True, now_s=10.0)
    assert not faults.is_available("a", 10.0 + FAILURE_ISOLATION_S - 0.001)
    assert faults.is_available("a", 10.0 + FAILURE_ISOLATION_S)
    faults.record("a", 1, failed=True, now_s=50.0)
    faults.record("a", 3, failed=False, now_s=51.0)  # e.g. a retry that went through
    assert faults.is_available("a", 51.0)


def test_a_later_record_replaces_the_isolation() -> None:
    faults = FaultStrategy()
    faults.record("a", 20000, failed=False, now_s=0.0)  # 30 s
    faults.record("a", 600, failed=False, now_s=1.0)  # 2 s from t=1
    assert not faults.is_available("a", 2.9)
    assert faults.is_available("a", 3.0)


# --- selection ---------------------------------------------------------------------------


def info(*brokers: str, queues: int = 2) -> TopicInfo:
    publish = tuple(
        MessageQueue(topic="T", broker_name=b, queue_id=i) for b in brokers for i in range(queues)
    )
    return TopicInfo(topic="T", route=TopicRouteData(), publish=publish, subscribe=publish)


def producer(seed: int = 1) -> Producer:
    # Selection touches neither the client nor the route cache.
    return Producer(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        group="PG",
        client_id="c",
        timeout_s=3.0,
        retries=2,
        rng=random.Random(seed),
    )


async def test_round_robin_covers_every_queue() -> None:
    p = producer()
    topic = info("a", "b")
    picks = Counter(p._select(topic, None, trio.current_time()) for _ in range(40))
    assert set(picks) == set(topic.publish)
    assert set(picks.values()) == {10}


async def test_selection_skips_isolated_and_just_failed_brokers() -> None:
    p = producer()
    topic = info("a", "b", "c")
    p.faults.record("b", 0, failed=True, now_s=trio.current_time())
    for _ in range(30):
        assert p._select(topic, None, trio.current_time()).broker_name != "b"
    for _ in range(30):
        assert (
            p._select(topic, "a", trio.current_time()).broker_name == "c"
        )  # a just failed, b isolated


async def test_when_every_broker_is_isolated_any_but_the_last_failed_is_used() -> None:
    p = producer()
    topic = info("a", "b")
    for name in ("a", "b"):
        p.faults.record(name, 0, failed=True, now_s=trio.current_time())
    assert {p._select(topic, "a", trio.current_time()).broker_name for _ in range(10)} == {"b"}
    only_one = info("a")
    assert p._select(only_one, "a", trio.current_time()).broker_name == "a"  # nothing else exists


async def test_no_writable_queue_is_a_clear_error() -> None:
    with pytest.raises(ServerError, match="no writable queue"):
        producer()._select(info(), None, 0.0)


def test_hash_selector_pins_a_key_to_one_queue() -> None:
    queues = info("a", "b", queues=4).publish
    for key in ("order-1", "order-2", "x"):
        assert len({hash_selector(queues, key) for _ in range(5)}) == 1
    spread = {hash_selector(queues, f"key-{i}") for i in range(64)}
    assert len(spread) >= 6, "keys spread over the queues"


def test_refused_sends_are_tried_every_20_ms_at_first_then_less_often() -> None:
    """After a group refused (no master yet, nothing stored) a send tries again every
    20 ms for its first five refusals (a failover of ~50 ms is seen within 20 ms of the new
    master's registration), then backs off to at most 5 tries a second."""
    pauses = [refused_pause_s(n) for n in range(1, 16)]
    assert pauses[:5] == [REFUSED_PAUSE_S] * 5
    assert sum(pauses[:5]) == pytest.approx(0.1)
    assert pauses[5] == pytest.approx(2 * REFUSED_PAUSE_S)
    assert pauses == sorted(pauses)
    assert pauses[-1] == REFUSED_PAUSE_MAX_S
    assert refused_pause_s(10_000) == REFUSED_PAUSE_MAX_S
