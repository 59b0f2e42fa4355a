"""The broker topic table: step it, assert the whole table and version after each event."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from broker.topics import (
    AUTO_CREATE_TOPIC_KEY_TOPIC,
    SCHEDULE_TOPIC,
    TopicConfigManager,
    dlq_topic,
    retry_topic,
    validate_topic,
)
from protocol.errors import InvalidParameter, StorageError
from protocol.route import DataVersion, TopicConfig

T0 = 1_700_000_000_000
RW = 6


def manager(**kwargs: Any) -> TopicConfigManager:
    return TopicConfigManager(cluster_name="DefaultCluster", broker_name="broker-a", **kwargs)


SYSTEM = {
    # name: (read, write, perm)
    "SELF_TEST_TOPIC": (1, 1, RW),
    "TBW102": (8, 8, 7),
    "BenchmarkTest": (1024, 1024, RW),
    "DefaultCluster": (16, 16, 7),
    "broker-a": (1, 1, 7),
    "OFFSET_MOVED_EVENT": (1, 1, RW),
    "SCHEDULE_TOPIC_XXXX": (18, 18, RW),
    "rmq_sys_wheel_timer": (1, 1, RW),
    "DefaultCluster_REPLY_TOPIC": (1, 1, RW),
    "RMQ_SYS_TRANS_HALF_TOPIC": (1, 1, RW),
    "RMQ_SYS_TRANS_OP_HALF_TOPIC": (1, 1, RW),
}


def compact(c: TopicConfig) -> tuple[int, int, int, int, bool]:
    return (c.read_queue_nums, c.write_queue_nums, c.perm, c.topic_sys_flag, c.order)


def state(m: TopicConfigManager) -> dict[str, Any]:
    """User topics compactly; system topics must never change in these scenarios."""
    configs = m.configs()
    assert {n: compact(configs[n])[:3] for n in m.system_topics()} == SYSTEM
    assert set(m.topics()) == set(configs)
    return {
        "topics": {n: compact(c) for n, c in configs.items() if n not in SYSTEM},
        "version": (
            m.data_version.counter,
            m.data_version.state_version,
            m.data_version.timestamp_ms,
        ),
    }


RAISES = object()
SAME = object()


@attrs.frozen
class Step:
    label: str
    event: Callable[[TopicConfigManager], Any]
    result: Any
    state: Any = SAME


def run(steps: list[Step]) -> None:
    m = manager()
    before = state(m)
    assert before == {"topics": {}, "version": (0, 0, 0)}
    for step in steps:
        if isinstance(step.result, tuple) and step.result and step.result[0] is RAISES:
            with pytest.raises(InvalidParameter, match=step.result[1]):
                step.event(m)
        else:
            assert step.event(m) == step.result, step.label
        after = state(m)
        assert after == (before if step.state is SAME else step.state), step.label
        before = after


def tc(name: str, queues: int, perm: int = RW, **kw: Any) -> TopicConfig:
    return TopicConfig(
        topic_name=name, read_queue_nums=queues, write_queue_nums=queues, perm=perm, **kw
    )


def create(config: TopicConfig, now: int) -> Callable[[TopicConfigManager], Any]:
    return lambda m: m.create_or_update(config, now_ms=now)


LONG_RETRY = retry_topic("g" * 200)
TOO_LONG_DLQ = dlq_topic("g" * 251)

LIFECYCLE = [
    Step(
        "create TopicA",
        create(tc("TopicA", 4), T0),
        True,
        {"topics": {"TopicA": (4, 4, RW, 0, False)}, "version": (1, 0, T0)},
    ),
    Step("same config again: idempotent, no version bump", create(tc("TopicA", 4), T0 + 1), False),
    Step(
        "update TopicA to 8 queues",
        create(tc("TopicA", 8), T0 + 2),
        True,
        {"topics": {"TopicA": (8, 8, RW, 0, False)}, "version": (2, 0, T0 + 2)},
    ),
    Step("illegal characters", create(tc("bad topic", 1), T0 + 3), (RAISES, "illegal characters")),
    Step("blank name", create(tc("", 1), T0 + 3), (RAISES, "is blank")),
    Step("TBW102 is a system topic", create(tc("TBW102", 1), T0 + 3), (RAISES, "conflict")),
    Step("broker's own topic", create(tc("broker-a", 1), T0 + 3), (RAISES, "conflict")),
    Step("rmq_sys_ prefix", create(tc("rmq_sys_x", 1), T0 + 3), (RAISES, "conflict")),
    Step("128 characters", create(tc("t" * 128, 1), T0 + 3), (RAISES, "max length: 127")),
    Step("256-character DLQ", create(tc(TOO_LONG_DLQ, 1), T0 + 3), (RAISES, "max length: 255")),
    Step("negative queues", create(tc("Neg", -1), T0 + 3), (RAISES, r"must be in 0\.\.1024")),
    # Issue 13 row 1: 10^6 (and 10^20) queues were stored, and every per-queue loop ran them.
    Step("queues over the cap", create(tc("Huge", 1025), T0 + 3), (RAISES, "maxTopicQueueNums")),
    Step("10^20 queues", create(tc("Huge", 10**20), T0 + 3), (RAISES, "maxTopicQueueNums")),
    Step("perm out of range", create(tc("P", 1, perm=16), T0 + 3), (RAISES, "perm")),
    Step(
        "unknown topicSysFlag bits",
        create(attrs.evolve(tc("F", 1), topic_sys_flag=4), T0 + 3),
        (RAISES, "topicSysFlag"),
    ),
    Step(
        "127 characters and a 207-character retry topic are fine",
        lambda m: [m.create_or_update(tc(n, 1), now_ms=T0 + 4) for n in ("t" * 127, LONG_RETRY)],
        [True, True],
        {
            "topics": {
                "TopicA": (8, 8, RW, 0, False),
                "t" * 127: (1, 1, RW, 0, False),
                LONG_RETRY: (1, 1, RW, 0, False),
            },
            "version": (4, 0, T0 + 4),
        },
    ),
    Step(
        "delete them again",
        lambda m: [m.delete(n, now_ms=T0 + 5) is not None for n in ("t" * 127, LONG_RETRY)],
        [True, True],
        {"topics": {"TopicA": (8, 8, RW, 0, False)}, "version": (6, 0, T0 + 5)},
    ),
    Step(
        "auto-create from TBW102: requested 4 < template 8",
        lambda m: m.auto_create_for_send("NewT", "TBW102", 4, allow=True, now_ms=T0 + 6),
        tc("NewT", 4),
        {
            "topics": {"TopicA": (8, 8, RW, 0, False), "NewT": (4, 4, RW, 0, False)},
            "version": (7, 0, T0 + 6),
        },
    ),
    Step(
        "auto-create capped by the template's 8 queues, sys flag kept",
        lambda m: m.auto_create_for_send(
            "Big", "TBW102", 16, allow=True, now_ms=T0 + 7, topic_sys_flag=1
        ),
        tc("Big", 8, topic_sys_flag=1),
        {
            "topics": {
                "TopicA": (8, 8, RW, 0, False),
                "NewT": (4, 4, RW, 0, False),
                "Big": (8, 8, RW, 1, False),
            },
            "version": (8, 0, T0 + 7),
        },
    ),
    Step(
        "auto-create not allowed",
        lambda m: m.auto_create_for_send("X", "TBW102", 4, allow=False, now_ms=T0 + 8),
        None,
    ),
    Step(
        "an existing topic is returned even when not allowed",
        lambda m: m.auto_create_for_send("NewT", "TBW102", 1, allow=False, now_ms=T0 + 8),
        tc("NewT", 4),
    ),
    Step(
        "template without PERM_INHERIT",
        lambda m: m.auto_create_for_send("X", "TopicA", 4, allow=True, now_ms=T0 + 8),
        None,
    ),
    Step(
        "unknown template",
        lambda m: m.auto_create_for_send("X", "Nope", 4, allow=True, now_ms=T0 + 8),
        None,
    ),
    Step(
        "auto-create of an illegal name",
        lambda m: m.auto_create_for_send("a/b", "TBW102", 4, allow=True, now_ms=T0 + 8),
        (RAISES, "illegal characters"),
    ),
    Step(
        "auto-create into the system namespace",
        lambda m: m.auto_create_for_send("rmq_sys_q", "TBW102", 4, allow=True, now_ms=T0 + 8),
        (RAISES, "conflict"),
    ),
    Step(
        "delete the auto-created topics",
        lambda m: [m.delete(n, now_ms=T0 + 9) is not None for n in ("NewT", "Big")],
        [True, True],
        {"topics": {"TopicA": (8, 8, RW, 0, False)}, "version": (10, 0, T0 + 9)},
    ),
    Step(
        "retry topic of g1",
        lambda m: m.create_retry_topic("g1", now_ms=T0 + 10),
        tc("%RETRY%g1", 1),
        {
            "topics": {"TopicA": (8, 8, RW, 0, False), "%RETRY%g1": (1, 1, RW, 0, False)},
            "version": (11, 0, T0 + 10),
        },
    ),
    Step(
        "retry topic again (other queue count): kept as is",
        lambda m: m.create_retry_topic("g1", 4, now_ms=T0 + 11),
        tc("%RETRY%g1", 1),
    ),
    Step(
        "the group subscribed to an order topic: order flag follows",
        lambda m: m.create_retry_topic("g1", now_ms=T0 + 12, order=True),
        tc("%RETRY%g1", 1, order=True),
        {
            "topics": {"TopicA": (8, 8, RW, 0, False), "%RETRY%g1": (1, 1, RW, 0, True)},
            "version": (12, 0, T0 + 12),
        },
    ),
    Step(
        "retry topic of a group whose name makes it too long",
        lambda m: m.create_retry_topic("g" * 249, now_ms=T0 + 13),
        (RAISES, "max length: 255"),
    ),
    Step(
        "DLQ of g1: one queue, RW",
        lambda m: m.create_dlq_topic("g1", now_ms=T0 + 13),
        tc("%DLQ%g1", 1),
        {
            "topics": {
                "TopicA": (8, 8, RW, 0, False),
                "%RETRY%g1": (1, 1, RW, 0, True),
                "%DLQ%g1": (1, 1, RW, 0, False),
            },
            "version": (13, 0, T0 + 13),
        },
    ),
    Step(
        "an admin-edited DLQ is returned as is",
        lambda m: (
            m.create_or_update(tc("%DLQ%g1", 2, perm=2), now_ms=T0 + 14),
            m.create_dlq_topic("g1", now_ms=T0 + 15),
        ),
        (True, tc("%DLQ%g1", 2, perm=2)),
        {
            "topics": {
                "TopicA": (8, 8, RW, 0, False),
                "%RETRY%g1": (1, 1, RW, 0, True),
                "%DLQ%g1": (2, 2, 2, 0, False),
            },
            "version": (14, 0, T0 + 14),
        },
    ),
    Step(
        "delete TopicA",
        lambda m: m.delete("TopicA", now_ms=T0 + 16),
        tc("TopicA", 8),
        {
            "topics": {"%RETRY%g1": (1, 1, RW, 0, True), "%DLQ%g1": (2, 2, 2, 0, False)},
            "version": (15, 0, T0 + 16),
        },
    ),
    Step("delete it again", lambda m: m.delete("TopicA", now_ms=T0 + 17), None),
    Step(
        "delete a system topic",
        lambda m: m.delete(SCHEDULE_TOPIC, now_ms=T0 + 17),
        (RAISES, "conflict"),
    ),
    Step("delete a blank name", lambda m: m.delete(" ", now_ms=T0 + 17), (RAISES, "blank")),
    Step(
        "new master epoch",
        lambda m: m.set_state_version(5, now_ms=T0 + 18),
        None,
        {
            "topics": {"%RETRY%g1": (1, 1, RW, 0, True), "%DLQ%g1": (2, 2, 2, 0, False)},
            "version": (16, 5, T0 + 18),
        },
    ),
    Step("same epoch again", lambda m: m.set_state_version(5, now_ms=T0 + 19), None),
    Step(
        "later changes keep the epoch",
        lambda m: m.delete("%DLQ%g1", now_ms=T0 + 20) is not None,
        True,
        {"topics": {"%RETRY%g1": (1, 1, RW, 0, True)}, "version": (17, 5, T0 + 20)},
    ),
]


def test_lifecycle() -> None:
    run(LIFECYCLE)


def test_system_topics_follow_broker_config() -> None:
    m = manager(
        auto_create_topic_enable=False,
        cluster_topic_enable=False,
        broker_topic_enable=False,
        trace_topic_enable=True,
        default_topic_queue_nums=4,
    )
    got = {n: compact(c)[:3] for n, c in m.configs().items()}
    expected = dict(SYSTEM)
    del expected["TBW102"]
    expected["DefaultCluster"] = (16, 16, 1)
    expected["broker-a"] = (1, 1, 1)
    expected["RMQ_SYS_TRACE_TOPIC"] = (1, 1, RW)
    assert got == expected
    assert m.system_topics() == sorted(expected)
    assert m.auto_create_for_send("X", AUTO_CREATE_TOPIC_KEY_TOPIC, 4, allow=True, now_ms=1) is None
    # Reserved names stay reserved even when the broker did not create them.
    assert m.is_system_topic("TBW102") and m.is_system_topic("rmq_sys_anything")
    assert not m.is_system_topic("%RETRY%g") and not m.is_system_topic("TopicA")
    assert manager(default_topic_queue_nums=4).get("TBW102") == tc("TBW102", 4, perm=7)


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("TopicA", None),
        ("a%b|c_d-e", None),
        ("t" * 127, None),
        ("%RETRY%" + "g" * 248, None),
        ("", "The specified topic is blank."),
        ("   ", "The specified topic is blank."),
        ("a.b", "contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$"),
        ("ünï", "contains illegal characters"),
        ("t" * 128, "is longer than topic max length: 127"),
        ("%RETRY%" + "g" * 249, "DLQ or Retry topic"),
    ],
)
def test_validate_topic(topic: str, problem: str | None) -> None:
    got = validate_topic(topic)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_snapshot_is_the_wrapper_json() -> None:
    m = manager()
    m.create_or_update(tc("TopicA", 4), now_ms=T0)
    snap = m.snapshot()
    assert snap.data_version == DataVersion(counter=1, timestamp_ms=T0)
    assert snap.topic_config_table == m.configs()
    body = json.loads(snap.to_bytes())
    assert set(body) == {"topicConfigTable", "dataVersion"}
    assert body["topicConfigTable"]["TopicA"] == tc("TopicA", 4).to_json()
    assert body["dataVersion"] == {"counter": 1, "stateVersion": 0, "timestamp": T0}
    # The snapshot is a copy: later changes do not leak into it.
    m.delete("TopicA", now_ms=T0 + 1)
    assert "TopicA" in snap.topic_config_table


# --- persistence ----------------------------------------------------------------------------


def populated() -> TopicConfigManager:
    m = manager()
    m.create_or_update(tc("TopicA", 4, attributes={"+message.type": "NORMAL"}), now_ms=T0)
    m.create_retry_topic("g1", now_ms=T0 + 1, order=True)
    m.set_state_version(3, now_ms=T0 + 2)
    return m


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "topics.cbor"
    m = populated()
    m.save(path)
    loaded = manager()
    assert loaded.load(path) is True
    assert loaded.configs() == m.configs()
    assert (
        loaded.data_version
        == m.data_version
        == DataVersion(counter=3, state_version=3, timestamp_ms=T0 + 2)
    )
    assert loaded.system_topics() == m.system_topics()


def test_load_merges_over_system_topics(tmp_path: Path) -> None:
    """A persisted TBW102 (perm 7) survives a restart with auto-create off, as in Java."""
    path = tmp_path / "topics.cbor"
    manager().save(path)
    m = manager(auto_create_topic_enable=False)
    assert m.get("TBW102") is None
    m.load(path)
    assert m.get("TBW102") == tc("TBW102", 8, perm=7)


def test_load_missing_file(tmp_path: Path) -> None:
    m = manager()
    assert m.load(tmp_path / "nope.cbor") is False
    assert state(m) == {"topics": {}, "version": (0, 0, 0)}


def corrupt_files(tmp_path: Path) -> list[tuple[Path, str]]:
    good = tmp_path / "good.cbor"
    populated().save(good)
    data = good.read_bytes()
    cases = {
        "truncated.cbor": (data[: len(data) // 2], "not valid CBOR"),
        "garbage.cbor": (b"\x00not cbor at all", "bytes after the CBOR item"),
        "empty.cbor": (b"", "not valid CBOR"),
    }
    out = []
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        out.append((path, message))
    return out


def test_corrupt_file_raises_naming_the_file(tmp_path: Path) -> None:
    for path, message in corrupt_files(tmp_path):
        m = populated()
        before = (m.configs(), m.data_version)
        with pytest.raises(StorageError, match=message) as info:
            m.load(path)
        assert str(path) in str(info.value)
        assert (m.configs(), m.data_version) == before


def test_wrong_kind_or_shape_raises(tmp_path: Path) -> None:
    from broker.store import metadata

    cases = [
        ("other-kind.cbor", "groups-file", {"topics": []}, "expected kind"),
        ("no-topics.cbor", "broker.topics", {"dataVersion": {}}, "expected {topics"),
        ("bad-topic.cbor", "broker.topics", {"topics": [{"perm": 6}]}, "missing 'topicName'"),
    ]
    for name, kind, payload, message in cases:
        path = tmp_path / name
        metadata.save_document(path, kind=kind, version=1, payload=payload)
        m = populated()
        before = m.configs()
        with pytest.raises(StorageError, match=message) as info:
            m.load(path)
        assert str(path) in str(info.value)
        assert m.configs() == before
    newer = tmp_path / "newer.cbor"
    metadata.save_document(newer, kind="broker.topics", version=2, payload={"topics": []})
    with pytest.raises(StorageError, match="newer than supported"):
        manager().load(newer)


def test_queue_counts_are_capped_on_every_way_in(tmp_path: Path) -> None:
    """Issue 13 row 1: no way in leaves a topic with more than ``max_queue_nums`` queues."""
    m = manager(max_queue_nums=16)
    assert m.create_or_update(tc("Sixteen", 16), now_ms=T0) is True
    with pytest.raises(InvalidParameter, match=r"must be in 0\.\.16 \(maxTopicQueueNums\)"):
        m.create_or_update(tc("Sixteen", 17), now_ms=T0 + 1)
    assert m.get("Sixteen") == tc("Sixteen", 16)
    # Auto-creation takes min(requested, template, cap); a retry topic at most the cap.
    big = m.auto_create_for_send("Auto", AUTO_CREATE_TOPIC_KEY_TOPIC, 10**6, allow=True, now_ms=T0)
    assert big is not None and big.write_queue_nums == 8
    with pytest.raises(InvalidParameter, match="defaultTopicQueueNums must be >= 1"):
        m.auto_create_for_send("None", AUTO_CREATE_TOPIC_KEY_TOPIC, 0, allow=True, now_ms=T0)
    assert m.get("None") is None
    assert m.create_retry_topic("g", 10**6, now_ms=T0).write_queue_nums == 16
    # A file written before the cap (or by a broker with a higher one) is served capped.
    path = tmp_path / "topics.cbor"
    unbounded = manager(max_queue_nums=2**70)
    unbounded.create_or_update(tc("Huge", 10**6), now_ms=T0)
    unbounded.create_or_update(tc("Fine", 4), now_ms=T0)
    unbounded.save(path)
    loaded = manager(max_queue_nums=16)
    assert loaded.load(path) is True
    assert loaded.get("Huge") == tc("Huge", 16)
    assert loaded.get("Fine") == tc("Fine", 4)
    assert manager(max_queue_nums=16).restore(unbounded.to_payload()) == ["Huge"]
    # A count no Java int can hold is not a topic config at all: the file is refused, named.
    unbounded.create_or_update(tc("Garbage", 10**20), now_ms=T0)
    unbounded.save(path)
    with pytest.raises(StorageError, match=r"topics\.cbor.*does not fit a Java int"):
        manager(max_queue_nums=16).load(path)


def test_cover_stored_queues_creates_and_widens_user_topics_only() -> None:
    """A new master's replicated records since its last metadata copy: a missing topic is
    created with a queue past the highest queue id that holds records, a narrower one
    widened (read and write), a wide enough one, system topics and bad names left."""
    m = manager(max_queue_nums=16)
    m.create_or_update(tc("Narrow", 4, perm=4, order=True), now_ms=1)
    m.create_or_update(tc("Wide", 8), now_ms=1)
    version = m.data_version
    changed = m.cover_stored_queues(
        {
            "Late": 7,
            "Narrow": 5,
            "Wide": 3,
            "SCHEDULE_TOPIC_XXXX": 40,
            "rmq_sys_anything": 0,
            "bad name": 0,
            "Huge": 99,
            "%RETRY%g": 0,
        },
        now_ms=2,
    )
    assert changed == [
        tc("%RETRY%g", 1),
        tc("Huge", 16),
        tc("Late", 8),
        tc("Narrow", 6, perm=4, order=True),
    ]
    assert m.get("Narrow") == tc("Narrow", 6, perm=4, order=True)
    assert m.get("Wide") == tc("Wide", 8)
    assert m.get("bad name") is None and m.get("rmq_sys_anything") is None
    schedule = m.get("SCHEDULE_TOPIC_XXXX")
    assert schedule is not None and compact(schedule)[:3] == SYSTEM["SCHEDULE_TOPIC_XXXX"]
    assert m.data_version != version
    version = m.data_version
    assert m.cover_stored_queues({"Late": 7, "Wide": 7}, now_ms=3) == []
    assert m.data_version == version, "nothing changed: the version stays"
