"""broker/timers.py: which sends are timers, and the bounded index against a naive model."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.filtering import FilterCache
from broker.slavesync import parse_timer_checkpoint
from broker.timers import (
    TIMER_TOPIC,
    TimerCheckpoint,
    TimerEntry,
    TimerIllegal,
    TimerIndex,
    illegal_remark,
    park_due_ms,
    requested_due_ms,
)
from protocol.codes import ResponseCode
from protocol.errors import MalformedBody, ServerError

NOW = 1_700_000_000_000
MAX_S = 3 * 24 * 3600


@pytest.mark.parametrize(
    ("properties", "due"),
    [
        ({"TIMER_DELAY_SEC": "5"}, NOW + 5000),
        ({"TIMER_DELAY_MS": "1500"}, NOW + 1500),
        ({"TIMER_DELIVER_MS": str(NOW + 7000)}, NOW + 7000),
        ({"__STARTDELIVERTIME": str(NOW + 9000)}, NOW + 9000),
        # Read in RocketMQ's order: seconds, then milliseconds, then the deliver time.
        ({"TIMER_DELAY_SEC": "1", "TIMER_DELAY_MS": "9", "TIMER_DELIVER_MS": "3"}, NOW + 1000),
        ({"TIMER_DELAY_MS": "9", "TIMER_DELIVER_MS": str(NOW + 3)}, NOW + 9),
        ({"TIMER_DELIVER_MS": str(NOW + 3), "__STARTDELIVERTIME": "1"}, NOW + 3),
        ({}, None),
        ({"TIMER_OUT_MS": "1", "TIMER_DELAY_SEC": "5"}, None),  # already delivered once
    ],
)
def test_requested_due_time(properties: dict[str, str], due: int | None) -> None:
    assert requested_due_ms(properties, NOW) == due


def test_park_rules() -> None:
    assert park_due_ms({"TIMER_DELAY_SEC": "5"}, "T", now_ms=NOW, max_delay_s=MAX_S) == NOW + 5000
    # Due now or in the past: stored at once.
    assert park_due_ms({"TIMER_DELIVER_MS": str(NOW)}, "T", now_ms=NOW, max_delay_s=MAX_S) is None
    assert park_due_ms({"TIMER_DELAY_MS": "-5"}, "T", now_ms=NOW, max_delay_s=MAX_S) is None
    # Exactly the maximum is accepted, one millisecond more is not.
    ok = {"TIMER_DELAY_MS": str(MAX_S * 1000)}
    assert park_due_ms(ok, "T", now_ms=NOW, max_delay_s=MAX_S) == NOW + MAX_S * 1000
    with pytest.raises(TimerIllegal, match="more than 259200 s"):
        park_due_ms({"TIMER_DELAY_MS": str(MAX_S * 1000 + 1)}, "T", now_ms=NOW, max_delay_s=MAX_S)
    with pytest.raises(TimerIllegal, match="not an integer"):
        park_due_ms({"TIMER_DELAY_SEC": "soon"}, "T", now_ms=NOW, max_delay_s=MAX_S)
    # A DELAY level wins and the timer properties go.
    props = {"DELAY": "3", "TIMER_DELAY_SEC": "5", "TIMER_DELIVER_MS": "1"}
    assert park_due_ms(props, "T", now_ms=NOW, max_delay_s=MAX_S) is None
    assert props == {"DELAY": "3"}
    # Not parked twice.
    assert park_due_ms({"TIMER_DELAY_SEC": "5"}, TIMER_TOPIC, now_ms=NOW, max_delay_s=MAX_S) is None
    assert "259200000ms" in illegal_remark(MAX_S)


def test_checkpoint_json_round_trip_and_bad_values() -> None:
    cp = TimerCheckpoint(scan_from=3, enqueued=10, delivered_through_ms=NOW)
    assert TimerCheckpoint.from_json(cp.to_json()) == cp
    assert cp.clamped(5) == TimerCheckpoint(scan_from=3, enqueued=5, delivered_through_ms=NOW)
    assert cp.clamped(2) == TimerCheckpoint(scan_from=2, enqueued=2, delivered_through_ms=NOW)
    for bad in ([], {"scanFrom": -1}, {"enqueued": "5"}, {"scanFrom": 5, "enqueued": 1}):
        with pytest.raises(ValueError, match="timer checkpoint"):
            TimerCheckpoint.from_json(bad)


def entry(q: int, due: int) -> TimerEntry:
    return TimerEntry(queue_offset=q, physical_offset=1000 + q, size=100, due_ms=due)


def test_index_delivers_in_due_order_and_moves_its_progress() -> None:
    index = TimerIndex(capacity=10)
    for q, due in enumerate([NOW + 30, NOW + 10, NOW + 20]):
        index.add(entry(q, due), NOW)
    assert index.next_due(NOW + 9) is None
    assert index.wait_ms(NOW) == 10
    got = index.next_due(NOW + 25)
    assert got == entry(1, NOW + 10)
    index.delivered(got, NOW + 25)
    assert index.through == (NOW + 20, 1)  # below the next pending key
    got = index.next_due(NOW + 25)
    assert got == entry(2, NOW + 20)
    index.delivered(got, NOW + 25)
    assert index.through == (NOW + 25, 1 << 62)  # the clock bounds it
    assert index.checkpoint() == TimerCheckpoint(
        scan_from=0, enqueued=3, delivered_through_ms=NOW + 25
    )
    # A late entry is the caller's to deliver at once; the index steps over it.
    late = entry(3, NOW + 24)
    assert index.is_late(late)
    index.add(late, NOW + 26)
    assert index.pending == 1
    index.delivered(index.next_due(NOW + 40) or entry(0, 0), NOW + 40)
    assert index.pending == 0
    assert index.scan_from == 4  # nothing pending: a later rescan starts here


def model_pending(entries: list[tuple[int, int]], delivered: set[int]) -> list[tuple[int, int]]:
    return sorted((due, q) for q, due in entries if q not in delivered)


@settings(max_examples=150, deadline=None)
@given(
    dues=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=60),
    capacity=st.integers(min_value=1, max_value=8),
    step_ms=st.integers(min_value=1, max_value=60),
    restart_at=st.integers(min_value=0, max_value=30),
)
def test_index_against_a_naive_model(
    dues: list[int], capacity: int, step_ms: int, restart_at: int
) -> None:
    """Entries arrive one per step while the clock moves; each is delivered exactly once,
    never before it is due, in due order among the due ones; a restart from the checkpoint
    delivers nothing twice that the checkpoint covers and loses nothing."""
    log = [(q, due) for q, due in enumerate(dues)]
    index = TimerIndex(capacity=capacity)
    delivered: list[int] = []
    now = 0
    arrived = 0
    steps = 0

    def scan(ix: TimerIndex, now_ms: int) -> None:
        rescan = ix.start_rescan(now_ms, horizon_ms=50)
        rescan.feed((q, 1000 + q, 100, d) for q, d in log[ix.scan_from : ix.enqueued])
        ix.finish_rescan(rescan, now_ms)

    while len(delivered) < len(dues):
        steps += 1
        assert steps < 10_000
        now += step_ms
        if arrived < len(log):
            q, due = log[arrived]
            e = entry(q, due)
            if index.is_late(e):
                delivered.append(q)
            index.add(e, now, horizon_ms=50)
            arrived += 1
        if index.needs_scan(now, 10):
            scan(index, now)
        while (got := index.next_due(now)) is not None:
            assert got.due_ms <= now
            # Nothing pending that is due earlier than what is delivered.
            pending = model_pending(log[:arrived], set(delivered))
            assert (got.due_ms, got.queue_offset) == pending[0]
            delivered.append(got.queue_offset)
            index.delivered(got, now)
        assert index.in_memory <= capacity
        index.advance(now)
        cp = index.checkpoint()
        # The checkpoint claims only delivered entries.
        for q, due in log[: cp.enqueued]:
            if q < cp.scan_from or (due, q) <= cp.through:
                assert q in delivered
        if steps == restart_at:
            index = TimerIndex.restore(cp, capacity=capacity)
    assert sorted(delivered) == list(range(len(dues)))
    assert len(set(delivered)) == len(delivered)


def test_slave_copy_of_the_checkpoint_is_checked() -> None:
    cp = TimerCheckpoint(scan_from=1, enqueued=4, delivered_through_ms=NOW)
    assert parse_timer_checkpoint(json.dumps(cp.to_json()).encode()) == cp
    for bad in (b"[]", b"not json", b'{"scanFrom": 9, "enqueued": 2}', b'{"enqueued": true}'):
        with pytest.raises(MalformedBody):
            parse_timer_checkpoint(bad)


def test_filter_cache_is_bounded_and_reports_parse_errors() -> None:
    cache = FilterCache(max_entries=2)
    first = cache.compile("SQL92", "a > 1", enabled=True)
    assert cache.compile("sql92", "a > 1", enabled=True) is first
    cache.compile("SQL92", "b > 1", enabled=True)
    cache.compile("SQL92", "c > 1", enabled=True)
    assert len(cache) == 2
    assert cache.compile("SQL92", "a > 1", enabled=True) is not first  # evicted, compiled again
    with pytest.raises(ServerError, match=r"a > AND") as bad:
        cache.compile("SQL92", "a > AND", enabled=True)
    assert bad.value.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED
    with pytest.raises(ServerError, match="does not support consumer to filter message by SQL92"):
        cache.compile("SQL92", "a > 1", enabled=False)
    with pytest.raises(ServerError, match="by CLASS"):
        cache.compile("CLASS", "x", enabled=True)
