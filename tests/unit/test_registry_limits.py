"""The route table's limits and its registration in slices (issue 13 row 10).

Every limit rejects with a reason naming it and changes nothing; a registration applied in
slices leaves the table consistent between slices, and a newer registration or the
broker's removal stops an older one.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from namesrv.registry import RegisterResult, RegistryLimits, RouteRegistry
from protocol.register_body import topic_queues
from protocol.route import DataVersion, TopicConfig
from protocol.steps import STEP_ITEMS, Steps, finish
from tests.unit.test_registry import A0, B0, S1, T0, X, register, state, topics


def many(count: int, queues: int = 4, prefix: str = "T") -> dict[str, TopicConfig]:
    return {
        f"{prefix}{i}": TopicConfig(
            topic_name=f"{prefix}{i}", read_queue_nums=queues, write_queue_nums=queues
        )
        for i in range(count)
    }


def registry(**limits: Any) -> RouteRegistry:
    return RouteRegistry(limits=RegistryLimits(**limits))


def assert_rejected(r: RouteRegistry, event: Any, needle: str) -> None:
    before = state(r)
    result = event(r)
    assert isinstance(result, RegisterResult) and not result.accepted
    assert needle in (result.rejected_reason or ""), result.rejected_reason
    assert state(r) == before


def test_topics_per_broker() -> None:
    r = registry(max_topics_per_broker=10)
    assert register(A0, now=T0, configs=many(10))(r).accepted
    # Topics a master stops listing are kept, so new names add up.
    assert_rejected(r, register(A0, now=T0, counter=2, configs=many(1, prefix="U")), "11 topics")
    assert register(A0, now=T0, counter=2, configs=many(10))(r).accepted  # same names: fine
    assert_rejected(
        r, register(B0, now=T0, name="broker-b", configs=many(11)), "max_topics_per_broker"
    )


def test_brokers_per_cluster_and_in_all() -> None:
    r = registry(max_brokers_per_cluster=2, max_brokers=3)
    assert register(A0, now=T0)(r).accepted
    assert register(S1, now=T0, broker_id=1)(r).accepted
    assert_rejected(r, register(B0, now=T0, name="broker-b"), "max_brokers_per_cluster=2")
    assert register(A0, now=T0 + 1)(r).accepted  # a known address re-registers
    assert register(B0, now=T0, name="broker-b", cluster="c2")(r).accepted
    assert_rejected(r, register(X, now=T0, name="broker-x", cluster="c3"), "max_brokers")


def test_topic_routes_in_all_with_registrations_in_flight() -> None:
    r = registry(max_queue_datas=STEP_ITEMS * 3)
    first = _steps(r, **_args(A0, "broker-a", many(STEP_ITEMS * 2)))
    while not r.all_topics():
        next(first)  # checked, joined, a slice applied: room for all of it is reserved
    assert_rejected(
        r,
        register(B0, now=T0, name="broker-b", configs=many(STEP_ITEMS + 1, prefix="U")),
        "max_queue_datas",
    )
    finish(first)
    assert register(B0, now=T0, name="broker-b", configs=many(STEP_ITEMS, prefix="U"))(r).accepted
    r.check_invariants()


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (TopicConfig(topic_name="T", read_queue_nums=65_537, write_queue_nums=1), "65537 read"),
        (TopicConfig(topic_name="T", read_queue_nums=1, write_queue_nums=-1), "-1 write"),
        (TopicConfig(topic_name="", read_queue_nums=1, write_queue_nums=1), "0 characters"),
        (TopicConfig(topic_name="x" * 256, read_queue_nums=1, write_queue_nums=1), "256 char"),
    ],
)
def test_each_topic_config_is_checked(config: TopicConfig, needle: str) -> None:
    r = RouteRegistry()
    good = many(5)
    assert_rejected(r, register(A0, now=T0, configs={**good, config.topic_name: config}), needle)


def _steps(r: RouteRegistry, **args: Any) -> Steps[RegisterResult]:
    """``register_steps`` with ``_args``'s topic configs as the tuples it takes."""
    configs = args.pop("topic_configs")
    queues = {name: topic_queues(config) for name, config in configs.items()}
    return r.register_steps(**args, topic_queues=queues)


def _args(
    addr: str, name: str, configs: dict[str, TopicConfig], counter: int = 1
) -> dict[str, Any]:
    return {
        "cluster": "c1",
        "broker_name": name,
        "broker_addr": addr,
        "broker_id": 0,
        "ha_server_addr": addr,
        "data_version": DataVersion(counter=counter),
        "topic_configs": configs,
        "channel_id": f"ch-{addr}",
        "now_ms": T0,
    }


def test_slices_leave_the_table_consistent_and_answering() -> None:
    r = RouteRegistry()
    configs = many(STEP_ITEMS * 3 + 5)
    steps = _steps(r, **_args(A0, "broker-a", configs))
    seen = []
    for _ in steps:
        r.check_invariants()
        seen.append(len(r.all_topics()))
        route = r.topic_route("T0")  # a lookup between slices
        assert route is None or route.queue_datas[0].write_queue_nums == 4
    r.check_invariants()
    assert len(r.all_topics()) == len(configs)
    # Checked in slices, then applied in slices: the table grows a slice at a time.
    assert seen[-3:] == [STEP_ITEMS, STEP_ITEMS * 2, STEP_ITEMS * 3]


def test_a_newer_registration_supersedes_an_older_one_in_flight() -> None:
    r = RouteRegistry()
    old = many(STEP_ITEMS * 3, queues=4)
    new = many(STEP_ITEMS * 3, queues=8)
    first = _steps(r, **_args(A0, "broker-a", old, counter=1))
    while len(r.all_topics()) < STEP_ITEMS:
        next(first)
    # The same master registers again (version 2) before the first one finished.
    assert r.register_broker(**_args(A0, "broker-a", new, counter=2)).accepted
    assert finish(first) == RegisterResult()  # it stops at its next slice
    routes = {t: r.topic_route(t) for t in r.all_topics()}
    assert {route.queue_datas[0].write_queue_nums for route in routes.values() if route} == {8}
    r.check_invariants()


def test_an_interrupted_registration_is_applied_in_full_by_the_next_one() -> None:
    r = RouteRegistry()
    configs = many(STEP_ITEMS * 3)
    first = _steps(r, **_args(A0, "broker-a", configs))
    while len(r.all_topics()) < STEP_ITEMS:
        next(first)
    # Removed mid-way (its connection closed): it stops, nothing dangles.
    assert r.channel_closed(f"ch-{A0}") == [("broker-a", A0)]
    finish(first)
    assert r.all_topics() == []
    r.check_invariants()
    # Same data version again: it was never applied in full, so it is applied in full now.
    partial = _steps(r, **_args(A0, "broker-a", configs))
    while len(r.all_topics()) < STEP_ITEMS:
        next(partial)
    assert r.register_broker(**_args(A0, "broker-a", configs)).accepted
    assert len(r.all_topics()) == len(configs)
    r.check_invariants()


def test_equal_queue_numbers_are_shared_and_not_tracked_by_the_gc() -> None:
    r = RouteRegistry()
    r.register_broker(**_args(A0, "broker-a", many(5_000)))
    gc.collect()  # untracks containers holding only atomic values
    per_topic = list(r._topics.values())
    assert len(per_topic) == 5_000
    assert not any(gc.is_tracked(by_broker) for by_broker in per_topic)
    shared = {id(queues) for by_broker in per_topic for queues in by_broker.values()}
    assert len(shared) <= -(-5_000 // STEP_ITEMS)  # one tuple per slice
    route = r.topic_route("T42")
    assert route is not None and route.queue_datas[0].read_queue_nums == 4


def test_wipe_and_add_write_perm_touch_only_that_group() -> None:
    r = RouteRegistry()
    register(A0, now=T0, configs=topics(("TA", 4, 6), ("Shared", 4, 6)))(r)
    register(B0, now=T0, name="broker-b", configs=topics(("TB", 2, 6), ("Shared", 2, 6)))(r)
    assert r.wipe_write_perm("broker-a") == 2
    perms = {
        (t, q.broker_name): q.perm
        for t in r.all_topics()
        for q in (r.topic_route(t) or pytest.fail()).queue_datas
    }
    assert perms == {
        ("Shared", "broker-a"): 4,
        ("Shared", "broker-b"): 6,
        ("TA", "broker-a"): 4,
        ("TB", "broker-b"): 6,
    }
    assert r.add_write_perm("broker-a") == 2
    assert r.topics_by_cluster("c1") == ["Shared", "TA", "TB"]
    assert r.delete_topic("Shared")
    r.check_invariants()
