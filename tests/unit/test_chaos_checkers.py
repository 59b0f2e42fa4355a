"""Chaos checkers against ground truth and naive models (Hypothesis), plus worked examples."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scenarios.checkers import (
    E2E_BOUNDS_MS,
    Expectations,
    Window,
    check_history,
    check_latency,
    check_order,
    check_queue,
    check_recovery,
    e2e_bucket,
    fault_spans,
    percentile,
    unavailability_windows,
)
from scenarios.history import (
    DEQUEUE,
    ENQUEUE,
    Entry,
    FaultEvent,
    Outcome,
    Phase,
    Request,
    Response,
    make_extra,
)


def send(value: str, outcome: Outcome | None, *, t: int = 0, status: str | None = None,
         latency: int = 1, key: str | None = None, client: int = 0) -> list[Entry]:  # fmt: skip
    """A send's REQUEST line and (unless ``outcome`` is None) its RESPONSE line."""
    out: list[Entry] = [
        Request(client_id=client, op=ENQUEUE, value=value, sharding_key=key, timestamp_ms=t)
    ]
    if outcome is not None:
        out.append(
            Response(
                client_id=client,
                op=ENQUEUE,
                outcome=outcome,
                value=value,
                sharding_key=key,
                timestamp_ms=t + latency,
                latency_ms=latency,
                extra=make_extra(status=status) if outcome is Outcome.SUCCESS else None,
            )
        )
    return out


def deliver(value: str, *, t: int = 0, key: str | None = None, e2e: int = 5) -> Response:
    return Response(
        client_id=9,
        op=DEQUEUE,
        outcome=Outcome.SUCCESS,
        value=value,
        sharding_key=key,
        timestamp_ms=t,
        e2e_latency_ms=e2e,
    )


def fault(phase: Phase, t: int, target: str = "broker-a", name: str = "kill") -> FaultEvent:
    return FaultEvent(name=name, phase=phase, timestamp_ms=t, extra=f"target={target}")


# --- queue: ground truth -------------------------------------------------------------------

#: What happened to one message: (enqueue outcome or None for no answer, status, deliveries).
FATES = {
    "lost": (Outcome.SUCCESS, "SEND_OK", 0),
    "acked": (Outcome.SUCCESS, "SEND_OK", 1),
    "acked_dup": (Outcome.SUCCESS, "SEND_OK", 3),
    "degraded_lost": (Outcome.SUCCESS, "FLUSH_SLAVE_TIMEOUT", 0),
    "degraded_ok": (Outcome.SUCCESS, "SLAVE_NOT_AVAILABLE", 1),
    "unknown_recovered": (Outcome.UNKNOWN, None, 1),
    "unknown_gone": (Outcome.UNKNOWN, None, 0),
    "no_answer_recovered": (None, None, 2),
    "no_answer_gone": (None, None, 0),
    "failed": (Outcome.FAILURE, None, 0),
    "failed_delivered": (Outcome.FAILURE, None, 1),
    "unexpected": ("never sent", None, 2),
}


@given(st.lists(st.sampled_from(sorted(FATES)), max_size=40), st.randoms(use_true_random=False))
def test_queue_checker_recovers_every_fate(fates: list[str], rnd: random.Random) -> None:
    history: list[Entry] = []
    for value, fate in enumerate(fates):
        outcome, status, deliveries = FATES[fate]
        if outcome != "never sent":
            assert not isinstance(outcome, str)
            history += send(str(value), outcome, status=status)
        history += [deliver(str(value)) for _ in range(deliveries)]
    rnd.shuffle(history)  # the checker must not depend on line order

    result = check_queue(history)

    def values(*names: str) -> tuple[str, ...]:
        return tuple(str(v) for v, f in enumerate(fates) if f in names)

    assert result.lost == values("lost")
    assert result.lost_degraded == values("degraded_lost")
    assert result.recovered == values("unknown_recovered", "no_answer_recovered")
    assert result.failed_delivered == values("failed_delivered")
    assert result.unexpected == values("unexpected")
    assert dict(result.duplicated) == {
        str(v): FATES[f][2] for v, f in enumerate(fates) if FATES[f][2] > 1
    }
    sent = [f for f in fates if f != "unexpected"]
    assert result.enqueue_invoked == len(sent)
    assert result.acked == sum(FATES[f][0] is Outcome.SUCCESS for f in sent)
    assert result.acked_degraded == sum(f.startswith("degraded") for f in sent)
    assert result.failed == sum(f.startswith("failed") for f in sent)
    assert result.unknown == sum(FATES[f][0] in (Outcome.UNKNOWN, None) for f in sent)
    assert result.dequeued == sum(FATES[f][2] for f in fates)
    assert result.distinct_dequeued == sum(FATES[f][2] > 0 for f in fates)


def test_a_value_sent_twice_takes_its_best_outcome() -> None:
    history = [*send("1", Outcome.FAILURE), *send("1", Outcome.SUCCESS), deliver("1")]
    assert check_queue(history).failed_delivered == ()
    history = [*send("2", Outcome.UNKNOWN), *send("2", Outcome.FAILURE)]
    assert check_queue(history).unknown == 1


def test_queue_json_uses_openchaos_names() -> None:
    data = check_queue([*send("1", Outcome.SUCCESS), deliver("1"), deliver("1")]).to_json()
    assert data["enqueueSuccessCount"] == 1
    assert data["lostMessageCount"] == 0
    assert data["duplicateMessages"] == {"1": 2}
    assert data["atLeastOnce"] and not data["exactlyOnce"]


# --- order: a naive model ----------------------------------------------------------------


def naive_violations(acked: Sequence[str], dequeued: Sequence[str]) -> list[str]:
    """v violates iff some u acked after v was first delivered before v's first delivery."""
    first: dict[str, int] = {}
    for i, v in enumerate(dequeued):
        first.setdefault(v, i)
    index: dict[str, int] = {}
    for i, v in enumerate(acked):
        index.setdefault(v, i)
    out = []
    for v in sorted(first, key=first.__getitem__):
        if v not in index:
            continue
        if any(u in index and index[u] > index[v] and first[u] < first[v] for u in first):
            out.append(v)
    return out


def naive_subsequence(needle: Sequence[str], haystack: Sequence[str]) -> bool:
    for picks in itertools.combinations(range(len(haystack)), len(needle)):
        if [haystack[i] for i in picks] == list(needle):
            return True
    return not needle


@given(
    st.permutations([str(i) for i in range(6)]),
    st.lists(st.sampled_from([str(i) for i in range(8)]), max_size=10),
)
def test_order_checker_matches_the_naive_model(acked: list[str], dequeued: list[str]) -> None:
    history: list[Entry] = []
    for value in acked:
        history += send(value, Outcome.SUCCESS, key="k")
    history += [deliver(v, key="k") for v in dequeued]
    result = check_order(history)
    assert [v.value for v in result.violations] == naive_violations(acked, dequeued)
    delivered_acked = [v for v in acked if v in dequeued]
    expect_sub_ok = naive_subsequence(delivered_acked, dequeued)
    assert (result.subsequence_failures == ()) == expect_sub_ok
    assert result.keys_checked == 1


def test_order_examples() -> None:
    history = [*send("1", Outcome.SUCCESS, key="a"), *send("2", Outcome.SUCCESS, key="a")]
    history += [*send("3", Outcome.SUCCESS, key="b")]
    # Redelivery from an older offset is fine; key b is independent.
    ok = check_order([*history, *(deliver(v, key=k) for v, k in
                                  [("1", "a"), ("3", "b"), ("2", "a"), ("1", "a"), ("2", "a")])])  # fmt: skip
    assert ok.ok and ok.keys_checked == 2
    bad = check_order([*history, deliver("2", key="a"), deliver("1", key="a")])
    assert not bad.ok
    assert [(v.key, v.value, v.overtaken_by) for v in bad.violations] == [("a", "1", "2")]
    # A lost message is the queue checker's business, not an order violation.
    assert check_order([*history, deliver("2", key="a")]).ok
    # Unacked (unknown) values are not ordered.
    unknown = [*send("5", Outcome.UNKNOWN, key="a")]
    assert check_order([*history, *unknown, deliver("5", key="a"), deliver("1", key="a")]).ok


# --- unavailability: a naive model ------------------------------------------------------


def naive_windows(responses: list[Response], gap: int) -> list[tuple[int, int | None, int]]:
    """Each failure spans [its start, the next success]; spans merge when closer than gap.

    Returns (start, end, first failure seen) per merged span.
    """
    ordered = sorted(responses, key=lambda r: r.timestamp_ms)
    spans: list[tuple[int, int | None, int]] = []
    for i, r in enumerate(ordered):
        if r.outcome is Outcome.SUCCESS:
            continue
        later = [s.timestamp_ms for s in ordered[i + 1 :] if s.outcome is Outcome.SUCCESS]
        spans.append((r.started_ms, later[0] if later else None, r.timestamp_ms))
    spans.sort(key=lambda s: s[0])
    merged: list[tuple[int, int | None, int]] = []
    for start, end, seen in spans:
        if merged:
            last_start, last_end, last_seen = merged[-1]
            if last_end is None or start - last_end < gap:
                new_end = None if last_end is None or end is None else max(last_end, end)
                merged[-1] = (last_start, new_end, min(last_seen, seen))
                continue
        merged.append((start, end, seen))
    return merged


calls = st.lists(
    st.tuples(
        st.integers(0, 60_000),
        st.integers(0, 5_000),
        st.sampled_from([Outcome.SUCCESS, Outcome.SUCCESS, Outcome.FAILURE, Outcome.UNKNOWN]),
    ),
    max_size=40,
)


@given(calls, st.sampled_from([0, 500, 2000]))
def test_windows_match_the_naive_model(spec: list[tuple[int, int, Outcome]], gap: int) -> None:
    responses = [
        Response(
            client_id=0,
            op=ENQUEUE,
            outcome=o,
            value=str(i),
            timestamp_ms=t + lat,
            latency_ms=lat,
        )
        for i, (t, lat, o) in enumerate(spec)
    ]
    windows = unavailability_windows(responses, merge_gap_ms=gap)
    assert [(w.start_ms, w.end_ms, w.first_failure_ms) for w in windows] == naive_windows(
        responses, gap
    )
    assert sum(w.failures for w in windows) == sum(o is not Outcome.SUCCESS for *_, o in spec)
    # Every failed call lies inside a window.
    for r in responses:
        if r.outcome is not Outcome.SUCCESS:
            assert any(
                w.start_ms <= r.started_ms and (w.end_ms is None or r.timestamp_ms <= w.end_ms)
                for w in windows
            )


def test_recovery_is_attributed_to_the_fault_before_it() -> None:
    history: list[Entry] = [
        *send("1", Outcome.FAILURE, t=500, latency=100),  # before any fault
        *send("2", Outcome.SUCCESS, t=1_000),
        fault(Phase.START, 10_000),
        *send("3", Outcome.FAILURE, t=10_100, latency=3_000),  # window 10_100..14_000
        *send("4", Outcome.SUCCESS, t=13_990, latency=10),
        *send("5", Outcome.UNKNOWN, t=15_000, latency=50),  # merges (< 2 s after)
        *send("6", Outcome.SUCCESS, t=15_500, latency=10),
        fault(Phase.END, 16_000),
        fault(Phase.START, 40_000, target="broker-b"),
        fault(Phase.END, 45_000, target="broker-b"),
        *send("7", Outcome.SUCCESS, t=50_000),
    ]
    result = check_recovery(history)
    assert result.unattributed == (
        Window(start_ms=500, end_ms=1_001, failures=1, first_failure_ms=600),
    )
    first, second = result.per_fault
    assert first.fault.extra == "target=broker-a"
    assert (first.fault.start_ms, first.fault.end_ms) == (10_000, 16_000)
    assert first.windows == (
        Window(start_ms=10_100, end_ms=15_510, failures=2, first_failure_ms=13_100),
    )
    assert first.recovery_ms == 5_410 and first.unavailable_ms == 5_410
    assert second.windows == () and second.recovery_ms == 0
    assert result.recovery_times_ms() == [5_410, 0]
    assert result.unrecovered == 0
    data = result.to_json()
    assert data["recoveryMsMax"] == 5_410 and data["faults"] == 2


def test_a_window_that_never_ends_is_unrecovered() -> None:
    history: list[Entry] = [fault(Phase.START, 0), *send("1", Outcome.FAILURE, t=10)]
    result = check_recovery(history)
    assert result.per_fault[0].recovery_ms is None
    assert result.unrecovered == 1
    assert fault_spans(history)[0].end_ms is None


def test_degraded_acks_can_count_as_unavailable() -> None:
    history: list[Entry] = [
        fault(Phase.START, 0),
        *send("1", Outcome.SUCCESS, t=100, status="FLUSH_SLAVE_TIMEOUT", latency=3000),
        *send("2", Outcome.SUCCESS, t=20_000, status="SEND_OK"),
    ]
    assert check_recovery(history).windows == ()
    strict = check_recovery(history, degraded_unavailable=True)
    assert strict.per_fault[0].recovery_ms == 20_001 - 100


# --- latency -------------------------------------------------------------------------------


@given(st.integers(-5, 10_000))
def test_e2e_bucket_boundaries(latency: int) -> None:
    bucket = e2e_bucket(latency)
    bounds = (*E2E_BOUNDS_MS, float("inf"))
    assert latency <= bounds[bucket]
    assert bucket == 0 or latency > bounds[bucket - 1]


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_is_nearest_rank(values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p in values
    below = sum(v <= p for v in values) if p is not None else 0
    assert below >= q / 100 * len(values) - 1e-9
    assert percentile([], q) is None


def test_latency_buckets_and_percentiles() -> None:
    history: list[Entry] = [deliver(str(i), e2e=e) for i, e in enumerate([0, 1, 4, 50, 4000, -1])]
    history += send("9", Outcome.SUCCESS, latency=7)
    result = check_latency(history)
    assert result.e2e_buckets == (2, 1, 0, 1, 0, 0, 1)
    assert result.send_max_ms == 7
    assert result.to_json()["endToEnd"]["e2eIn1msLatency"] == {"count": 2, "percent": 40.0}


# --- verdict ------------------------------------------------------------------------------


def test_an_empty_history_fails() -> None:
    report = check_history([])
    assert not report.ok
    assert any("acked" in f for f in report.failures)
    assert any("faults" in f for f in report.failures)


def _run(*extra: Entry) -> list[Entry]:
    return [
        fault(Phase.START, 0),
        *send("1", Outcome.SUCCESS, t=10),
        deliver("1", t=20),
        fault(Phase.END, 30),
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "expect", "needle"),
    [
        (send("2", Outcome.SUCCESS, t=40), Expectations(), "lost"),
        (
            send("2", Outcome.SUCCESS, t=40, status="FLUSH_SLAVE_TIMEOUT"),
            Expectations(no_degraded_loss=True),
            "degraded",
        ),
        ([deliver("77", t=50)], Expectations(), "unexpected"),
        ([*send("2", Outcome.FAILURE, t=40), deliver("2", t=60)], Expectations(), "FAILURE"),
        (send("2", Outcome.FAILURE, t=40), Expectations(), "never ended"),
        (
            [
                *send("2", Outcome.SUCCESS, t=40, key="k"),
                *send("3", Outcome.SUCCESS, t=50, key="k"),
                deliver("3", t=60, key="k"),
                deliver("2", t=70, key="k"),
            ],
            Expectations(ordered=True),
            "order",
        ),
        (
            [
                *send("2", Outcome.FAILURE, t=100, latency=1),
                *send("3", Outcome.SUCCESS, t=9000),
                deliver("3", t=9100),
            ],
            Expectations(max_recovery_ms=1000),
            "slower",
        ),
    ],
)
def test_each_broken_promise_fails_the_verdict(
    extra: list[Entry], expect: Expectations, needle: str
) -> None:
    assert check_history(_run(), expect).ok
    report = check_history(_run(*extra), expect)
    assert not report.ok
    assert any(needle in f for f in report.failures), report.failures
    assert report.to_json()["verdict"] == "FAIL"


def test_loss_is_reported_but_not_judged_when_not_promised() -> None:
    report = check_history(_run(*send("2", Outcome.SUCCESS, t=40)), Expectations(no_loss=False))
    assert report.ok and report.queue.lost == ("2",)


def test_windows_merge_only_when_closer_than_the_gap() -> None:
    def windows(second_failure_at: int) -> list[tuple[int, int | None]]:
        history: list[Entry] = [
            *send("1", Outcome.FAILURE, t=0, latency=10),
            *send("2", Outcome.SUCCESS, t=990, latency=10),  # first window ends at 1000
            *send("3", Outcome.FAILURE, t=second_failure_at, latency=10),
            *send("4", Outcome.SUCCESS, t=5000, latency=10),
        ]
        return [(w.start_ms, w.end_ms) for w in unavailability_windows(history)]

    assert windows(2999) == [(0, 5010)]
    assert windows(3000) == [(0, 1000), (3000, 5010)]


def test_a_call_in_flight_when_a_fault_began_counts_for_that_fault() -> None:
    history: list[Entry] = [
        fault(Phase.START, 0),
        *send("1", Outcome.SUCCESS, t=100),
        fault(Phase.END, 1_000),
        *send("2", Outcome.UNKNOWN, t=49_990, latency=3_000),  # in flight at 50_000
        fault(Phase.START, 50_000),
        *send("3", Outcome.SUCCESS, t=60_000, latency=5),
        fault(Phase.END, 70_000),
    ]
    first, second = check_recovery(history).per_fault
    assert first.windows == ()
    assert second.recovery_ms == 60_005 - 49_990


def test_targets_hit_together_are_one_fault() -> None:
    history: list[Entry] = [
        fault(Phase.START, 1_000, target="broker-a-0"),
        fault(Phase.START, 1_000, target="n0"),
        *send("1", Outcome.FAILURE, t=1_100, latency=10),
        *send("2", Outcome.SUCCESS, t=2_000, latency=10),
        fault(Phase.END, 5_000, target="broker-a-0"),
        fault(Phase.END, 6_000, target="n0"),
    ]
    (only,) = check_recovery(history).per_fault
    assert only.fault.extra == "target=broker-a-0+n0"
    assert (only.fault.start_ms, only.fault.end_ms) == (1_000, 6_000)
    assert only.recovery_ms == 2_010 - 1_100
