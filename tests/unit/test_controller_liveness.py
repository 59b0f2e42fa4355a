"""The controller's per-node broker liveness table (controller/liveness.py)."""

from __future__ import annotations

import pytest

from controller.election import DEFAULT_ELECTION_PRIORITY, LiveInfo
from controller.liveness import (
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    BrokerKey,
    BrokerLive,
    LivenessTable,
    StallGuard,
)

A1 = BrokerKey("c", "broker-a", 1)
A2 = BrokerKey("c", "broker-a", 2)
B1 = BrokerKey("c", "broker-b", 1)


def beat(table: LivenessTable, key: BrokerKey, now_s: float, **kwargs: object) -> bool:
    defaults: dict[str, object] = {"address": f"10.0.0.{key.broker_id}:10911", "channel_id": 7}
    return table.heartbeat(key, now_s=now_s, **{**defaults, **kwargs})  # type: ignore[arg-type]


def test_first_heartbeat_inserts_with_defaults() -> None:
    table = LivenessTable()
    assert beat(table, A1, 100.0) is True
    assert table.entries() == [
        BrokerLive(
            key=A1,
            address="10.0.0.1:10911",
            last_heartbeat_s=100.0,
            timeout_s=DEFAULT_HEARTBEAT_TIMEOUT_S,
            epoch=-1,
            max_offset=-1,
            confirm_offset=-1,
            election_priority=DEFAULT_ELECTION_PRIORITY,
            channel_id=7,
            ha_address=None,
        )
    ]
    assert beat(table, A1, 101.0) is False  # a refresh, not a new broker


def test_refresh_replaces_time_timeout_priority_address_and_channel() -> None:
    table = LivenessTable()
    beat(table, A1, 100.0, timeout_s=10.0, election_priority=5, epoch=1, max_offset=10)
    beat(table, A1, 103.0, timeout_s=3.0, election_priority=9, address="10.9.9.9:1", channel_id=8)
    entry = table.get(A1)
    assert entry is not None
    assert (entry.last_heartbeat_s, entry.timeout_s, entry.election_priority) == (103.0, 3.0, 9)
    assert (entry.address, entry.channel_id) == ("10.9.9.9:1", 8)


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        ({"epoch": 2, "max_offset": 5, "confirm_offset": 4}, (2, 5, 4)),  # higher epoch wins
        ({"epoch": 1, "max_offset": 20, "confirm_offset": 15}, (1, 20, 15)),  # same, more data
        ({"epoch": 1, "max_offset": 10, "confirm_offset": 99}, (1, 10, 8)),  # equal: kept
        ({"epoch": 1, "max_offset": 3, "confirm_offset": 3}, (1, 10, 8)),  # truncated: kept
        ({"epoch": 0, "max_offset": 50, "confirm_offset": 50}, (1, 10, 8)),  # older epoch
        ({}, (1, 10, 8)),  # a heartbeat without offsets keeps them
    ],
)
def test_epoch_and_offsets_only_move_forward(
    second: dict[str, int], expected: tuple[int, int, int]
) -> None:
    table = LivenessTable()
    beat(table, A1, 1.0, epoch=1, max_offset=10, confirm_offset=8)
    beat(table, A1, 2.0, **second)
    entry = table.get(A1)
    assert entry is not None
    assert (entry.epoch, entry.max_offset, entry.confirm_offset) == expected


def test_bad_timeout_is_refused_and_changes_nothing() -> None:
    table = LivenessTable()
    beat(table, A1, 1.0)
    before = table.entries()
    with pytest.raises(ValueError, match="positive"):
        beat(table, A1, 2.0, timeout_s=0.0)
    assert table.entries() == before


def test_scan_removes_only_the_expired() -> None:
    table = LivenessTable()
    beat(table, A1, 100.0, timeout_s=10.0)
    beat(table, A2, 105.0, timeout_s=10.0)
    beat(table, B1, 100.0, timeout_s=30.0)
    assert table.scan(110.0) == []  # exactly at the timeout: still alive
    assert table.scan(110.5) == [A1]
    assert [e.key for e in table.entries()] == [A2, B1]
    assert table.scan(200.0) == [A2, B1]
    assert len(table) == 0


def test_channel_close_removes_the_brokers_on_that_channel_only() -> None:
    table = LivenessTable()
    beat(table, A1, 1.0, channel_id=1)
    beat(table, A2, 1.0, channel_id=2)
    beat(table, B1, 1.0, channel_id=1)
    assert table.channel_closed(1) == [A1, B1]
    assert [e.key for e in table.entries()] == [A2]
    assert table.channel_closed(1) == []


def test_late_close_of_an_old_channel_keeps_the_reconnected_broker() -> None:
    table = LivenessTable()
    beat(table, A1, 1.0, channel_id=1)
    beat(table, A1, 2.0, channel_id=2)  # reconnected before the old close was seen
    assert table.channel_closed(1) == []
    assert table.alive_ids("broker-a") == frozenset({1})


def test_alive_ids_and_live_info_per_group_and_expiry() -> None:
    table = LivenessTable()
    beat(table, A1, 100.0, timeout_s=10.0, epoch=3, max_offset=30, election_priority=1)
    beat(table, A2, 100.0, timeout_s=2.0, epoch=3, max_offset=20)
    beat(table, B1, 100.0)
    assert table.alive_ids("broker-a") == frozenset({1, 2})
    assert table.alive_ids("broker-a", now_s=101.0) == frozenset({1, 2})
    # A2 is past its timeout: not alive any more, although the scan has not removed it yet.
    assert table.alive_ids("broker-a", now_s=103.0) == frozenset({1})
    assert table.live_info("broker-a", now_s=103.0) == {
        1: LiveInfo(epoch=3, max_offset=30, confirm_offset=-1, election_priority=1)
    }
    assert table.alive_ids("broker-c") == frozenset()
    assert len(table) == 3


def test_ha_address_is_heartbeat_data() -> None:
    table = LivenessTable()
    beat(table, A1, 1.0, ha_address="10.0.0.1:10912")
    beat(table, A1, 2.0)  # a heartbeat without one keeps it
    assert table.ha_address("broker-a", 1) == "10.0.0.1:10912"
    assert table.ha_address("broker-a", 2) is None
    assert table.ha_address("broker-a", None) is None
    assert table.set_ha_address("broker-a", 1, "10.0.0.1:20912") is True
    assert table.ha_address("broker-a", 1) == "10.0.0.1:20912"
    assert table.set_ha_address("broker-a", 2, "10.0.0.2:10912") is False  # not alive
    assert table.ha_address("broker-a", 1, now_s=100.0) is None  # expired: not handed out
    table.channel_closed(7)
    assert table.ha_address("broker-a", 1) is None  # gone with the broker


def test_a_poll_refreshes_the_time_of_a_known_broker_only() -> None:
    table = LivenessTable()
    beat(table, A1, 100.0, timeout_s=1.2, epoch=3, max_offset=50)
    assert table.touch("broker-a", 1, 100.9) is True
    entry = table.get(A1)
    assert entry is not None
    assert entry.last_heartbeat_s == 100.9
    assert (entry.epoch, entry.max_offset, entry.timeout_s) == (3, 50, 1.2)
    assert table.touch("broker-a", 1, 100.5) is True  # an older poll moves nothing back
    assert table.get(A1) == entry
    assert table.touch("broker-a", 2, 101.0) is False  # unknown: nothing is made up
    assert table.get(A2) is None
    assert table.scan(102.0) == []  # alive until 100.9 + 1.2
    assert table.scan(102.2) == [A1]


def test_next_expiry_is_the_earliest_deadline() -> None:
    table = LivenessTable()
    assert table.next_expiry_s() is None
    assert table.max_timeout_s(7.0) == 7.0
    beat(table, A1, 100.0, timeout_s=1.2)
    beat(table, B1, 100.5, timeout_s=0.5)
    assert table.next_expiry_s() == pytest.approx(101.0)
    assert table.max_timeout_s(7.0) == 1.2
    beat(table, B1, 101.0, timeout_s=0.5)
    assert table.next_expiry_s() == pytest.approx(101.2)


@pytest.mark.parametrize(
    ("target_s", "woke_s", "allowed_at"),
    [
        (10.0, 10.1, {10.1: True}),  # on time (within tolerance): judge at once
        (10.0, 11.0, {11.0: False, 11.49: False, 11.5: True}),  # stalled 1 s: settle 0.5 s
    ],
)
def test_stall_guard_waits_after_a_late_wake_up(
    target_s: float, woke_s: float, allowed_at: dict[float, bool]
) -> None:
    guard = StallGuard(tolerance_s=0.2, settle_s=0.5)
    assert guard.allows(0.0)
    guard.woke(target_s, woke_s)
    assert {t: guard.allows(t) for t in allowed_at} == allowed_at
