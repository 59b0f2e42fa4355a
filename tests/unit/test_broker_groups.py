"""Subscription-group configs: step the manager, assert the whole table after each event."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from broker.groups import (
    PREDEFINED_GROUPS,
    SubscriptionGroupConfig,
    SubscriptionGroupManager,
    validate_group,
)
from broker.store import metadata
from protocol.errors import InvalidParameter, StorageError
from protocol.route import DataVersion

T0 = 1_700_000_000_000


def state(m: SubscriptionGroupManager) -> dict[str, Any]:
    """Non-default fields of every non-predefined group, plus the version."""
    configs = m.configs()
    assert m.groups() == sorted(configs)
    for name in PREDEFINED_GROUPS:
        assert configs[name] == SubscriptionGroupConfig(group_name=name)
    default = SubscriptionGroupConfig(group_name="x").to_json()
    return {
        "groups": {
            name: {k: v for k, v in c.to_json().items() if k != "groupName" and default[k] != v}
            for name, c in configs.items()
            if name not in PREDEFINED_GROUPS
        },
        "version": (m.data_version.counter, m.data_version.timestamp_ms),
    }


RAISES = object()
SAME = object()


@attrs.frozen
class Step:
    label: str
    event: Callable[[SubscriptionGroupManager], Any]
    result: Any
    state: Any = SAME


def run(steps: list[Step]) -> None:
    m = SubscriptionGroupManager()
    before = state(m)
    assert before == {"groups": {}, "version": (0, 0)}
    for step in steps:
        if isinstance(step.result, tuple) and step.result and step.result[0] is RAISES:
            with pytest.raises(InvalidParameter, match=step.result[1]):
                step.event(m)
        else:
            assert step.event(m) == step.result, step.label
        after = state(m)
        assert after == (before if step.state is SAME else step.state), step.label
        before = after


def find(group: str, now: int, auto: bool = True, sys: bool = True) -> Callable[[Any], Any]:
    return lambda m: m.find_or_create(group, auto_create=auto, now_ms=now, create_sys_group=sys)


def cfg(group: str, **kw: Any) -> SubscriptionGroupConfig:
    return SubscriptionGroupConfig(group_name=group, **kw)


LIFECYCLE = [
    Step("unknown group, auto-create off", find("GID_a", T0, auto=False), None),
    Step(
        "auto-create on: created with defaults",
        find("GID_a", T0),
        cfg("GID_a"),
        {"groups": {"GID_a": {}}, "version": (1, T0)},
    ),
    Step("found again: no change", find("GID_a", T0 + 1, auto=False), cfg("GID_a")),
    Step(
        "predefined group is there from the start",
        find("TOOLS_CONSUMER", T0, auto=False),
        cfg("TOOLS_CONSUMER"),
    ),
    Step(
        "system group is created even with auto-create off",
        find("CID_RMQ_SYS_X", T0 + 2, auto=False),
        cfg("CID_RMQ_SYS_X"),
        {"groups": {"GID_a": {}, "CID_RMQ_SYS_X": {}}, "version": (2, T0 + 2)},
    ),
    Step(
        "...unless enableCreateSysGroup is off",
        find("CID_RMQ_SYS_Y", T0 + 3, auto=False, sys=False),
        None,
    ),
    Step("illegal name is never auto-created", find("bad group", T0 + 3), None),
    Step("121-character name is never auto-created", find("g" * 121, T0 + 3), None),
    Step(
        "update: notify off, 3 retries",
        lambda m: m.update(
            cfg("GID_a", notify_consumer_ids_changed_enable=False, retry_max_times=3), now_ms=T0 + 4
        ),
        True,
        {
            "groups": {
                "GID_a": {"notifyConsumerIdsChangedEnable": False, "retryMaxTimes": 3},
                "CID_RMQ_SYS_X": {},
            },
            "version": (3, T0 + 4),
        },
    ),
    Step(
        "same update again",
        lambda m: m.update(
            cfg("GID_a", notify_consumer_ids_changed_enable=False, retry_max_times=3), now_ms=T0 + 5
        ),
        False,
    ),
    Step(
        "update creates an unknown group",
        lambda m: m.update(cfg("GID_b", consume_message_orderly=True), now_ms=T0 + 6),
        True,
        {
            "groups": {
                "GID_a": {"notifyConsumerIdsChangedEnable": False, "retryMaxTimes": 3},
                "CID_RMQ_SYS_X": {},
                "GID_b": {"consumeMessageOrderly": True},
            },
            "version": (4, T0 + 6),
        },
    ),
    Step(
        "update with an illegal name",
        lambda m: m.update(cfg("a b"), now_ms=T0 + 7),
        (RAISES, "illegal characters"),
    ),
    Step("update with a blank name", lambda m: m.update(cfg(""), now_ms=T0 + 7), (RAISES, "blank")),
    Step(
        "update with negative retry queues",
        lambda m: m.update(cfg("GID_c", retry_queue_nums=-1), now_ms=T0 + 7),
        (RAISES, "retryQueueNums"),
    ),
    Step(
        "disable consumption of GID_b",
        lambda m: m.disable_consume("GID_b", now_ms=T0 + 8),
        True,
        {
            "groups": {
                "GID_a": {"notifyConsumerIdsChangedEnable": False, "retryMaxTimes": 3},
                "CID_RMQ_SYS_X": {},
                "GID_b": {"consumeMessageOrderly": True, "consumeEnable": False},
            },
            "version": (5, T0 + 8),
        },
    ),
    Step("disable again", lambda m: m.disable_consume("GID_b", now_ms=T0 + 9), False),
    Step("disable unknown", lambda m: m.disable_consume("nope", now_ms=T0 + 9), False),
    Step(
        "delete GID_a",
        lambda m: m.delete("GID_a", now_ms=T0 + 10),
        cfg("GID_a", notify_consumer_ids_changed_enable=False, retry_max_times=3),
        {
            "groups": {
                "CID_RMQ_SYS_X": {},
                "GID_b": {"consumeMessageOrderly": True, "consumeEnable": False},
            },
            "version": (6, T0 + 10),
        },
    ),
    Step("delete it again", lambda m: m.delete("GID_a", now_ms=T0 + 11), None),
]


def test_lifecycle() -> None:
    run(LIFECYCLE)


def test_predefined_groups() -> None:
    m = SubscriptionGroupManager()
    assert m.groups() == sorted(PREDEFINED_GROUPS)
    assert "CID_ONS-HTTP-PROXY" in m and "SELF_TEST_C_GROUP" in m and "CID_RMQ_SYS_TRANS" in m
    assert len(m) == 8


@pytest.mark.parametrize(
    ("group", "problem"),
    [
        ("GID_x", None),
        ("g" * 120, None),
        ("a%b|c-d_e", None),
        ("", "blank"),
        ("g" * 121, "max length: 120"),
        ("a@b", "illegal characters"),
    ],
)
def test_validate_group(group: str, problem: str | None) -> None:
    got = validate_group(group)
    assert (got is None) if problem is None else (got is not None and problem in got)


def test_snapshot_body() -> None:
    m = SubscriptionGroupManager()
    m.find_or_create("GID_a", auto_create=True, now_ms=T0)
    body = json.loads(m.snapshot().to_bytes())
    assert body["dataVersion"] == {"counter": 1, "stateVersion": 0, "timestamp": T0}
    assert sorted(body["subscriptionGroupTable"]) == sorted([*PREDEFINED_GROUPS, "GID_a"])
    assert body["subscriptionGroupTable"]["GID_a"]["retryQueueNums"] == 1


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "groups.cbor"
    m = SubscriptionGroupManager()
    m.update(cfg("GID_a", retry_queue_nums=2, attributes={"k": "v"}), now_ms=T0)
    m.delete("TOOLS_CONSUMER", now_ms=T0 + 1)
    m.save(path)
    loaded = SubscriptionGroupManager()
    assert loaded.load(path) is True
    # Java merges the file over init(): a deleted predefined group comes back.
    assert loaded.configs() == {**m.configs(), "TOOLS_CONSUMER": cfg("TOOLS_CONSUMER")}
    assert loaded.data_version == DataVersion(counter=2, timestamp_ms=T0 + 1)
    assert SubscriptionGroupManager().load(tmp_path / "missing.cbor") is False


def test_corrupt_file_raises_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.cbor"
    SubscriptionGroupManager().save(good)
    truncated = tmp_path / "truncated.cbor"
    truncated.write_bytes(good.read_bytes()[:-3])
    wrong = tmp_path / "wrong.cbor"
    metadata.save_document(wrong, kind="broker.subscription-groups", version=1, payload=[1])
    bad_item = tmp_path / "bad-item.cbor"
    metadata.save_document(
        bad_item, kind="broker.subscription-groups", version=1, payload={"groups": [{"x": 1}]}
    )
    for path, message in [
        (truncated, "not valid CBOR"),
        (wrong, "expected {groups"),
        (bad_item, "missing 'groupName'"),
    ]:
        m = SubscriptionGroupManager()
        m.find_or_create("GID_a", auto_create=True, now_ms=T0)
        before = (m.configs(), m.data_version)
        with pytest.raises(StorageError, match=message) as info:
            m.load(path)
        assert str(path) in str(info.value)
        assert (m.configs(), m.data_version) == before


def test_retry_queue_nums_are_capped() -> None:
    m = SubscriptionGroupManager(max_queue_nums=16)
    assert m.update(SubscriptionGroupConfig(group_name="G", retry_queue_nums=16), now_ms=T0)
    with pytest.raises(InvalidParameter, match=r"retryQueueNums must be in 0\.\.16"):
        m.update(SubscriptionGroupConfig(group_name="G", retry_queue_nums=10**6), now_ms=T0 + 1)
    config = m.get("G")
    assert config is not None and config.retry_queue_nums == 16
