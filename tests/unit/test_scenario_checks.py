"""Checkers added for the controller-mode scenarios: acks of deposed masters (fencing),
elections, redelivery rewind, probes; and their verdicts. Worked examples, each with the
violation it must catch and the look-alike it must not."""

from __future__ import annotations

import attrs
import pytest

from scenarios.checkers import (
    REELECTED_SLACK_MS,
    Expectations,
    check_fencing,
    check_history,
    check_probes,
    check_recovery,
    check_redelivery,
    masters_seen,
)
from scenarios.history import (
    DEQUEUE,
    ENQUEUE,
    HARNESS_CLIENT,
    MASTER,
    PROBE,
    PROBE_CLIENT,
    Entry,
    FaultEvent,
    Outcome,
    Phase,
    Request,
    Response,
    format_history,
    make_extra,
    parse_history,
)

A, B, C = "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"


def master(t: int, epoch: int, address: str | None, group: str = "broker-a") -> Response:
    return Response(
        client_id=HARNESS_CLIENT,
        op=MASTER,
        outcome=Outcome.SUCCESS,
        value=str(epoch),
        timestamp_ms=t,
        extra=make_extra(group=group, broker=address or "none"),
    )


def ack(value: str, store: str, *, start: int, latency: int = 5, status: str = "SEND_OK",
        group: str = "broker-a", client: int = 0) -> list[Entry]:  # fmt: skip
    """A send started at ``start`` and acked by the broker at ``store``."""
    return [
        Request(client_id=client, op=ENQUEUE, value=value, timestamp_ms=start),
        Response(
            client_id=client,
            op=ENQUEUE,
            outcome=Outcome.SUCCESS,
            value=value,
            timestamp_ms=start + latency,
            latency_ms=latency,
            extra=make_extra(status=status, queue=f"{group}:0", offset=1, store=store),
        ),
    ]


def deliver(value: str, t: int, queue: str = "broker-a:0") -> Response:
    return Response(
        client_id=9,
        op=DEQUEUE,
        outcome=Outcome.SUCCESS,
        value=value,
        timestamp_ms=t,
        extra=make_extra(queue=queue, offset=1),
    )


def probe(t: int, passed: bool) -> Response:
    return Response(
        client_id=HARNESS_CLIENT,
        op=PROBE,
        outcome=Outcome.SUCCESS if passed else Outcome.FAILURE,
        value="new-master-metadata",
        timestamp_ms=t,
        extra=make_extra(detail="queues 6"),
    )


# --- fencing -----------------------------------------------------------------------------


def test_master_lines_round_trip_through_the_history_format() -> None:
    entries = [master(10, 1, A), master(20, 2, None)]
    again = parse_history(format_history(entries))
    assert again == entries
    seen = masters_seen(again)
    assert [(m.at_ms, m.epoch, m.address, m.group) for m in seen] == [
        (10, 1, A, "broker-a"),
        (20, 2, None, "broker-a"),
    ]


def test_acks_of_the_master_of_the_time_are_fine() -> None:
    history = [master(0, 1, A), *ack("1", A, start=10), master(100, 2, B), *ack("2", B, start=200)]
    result = check_fencing(history)
    assert result.acks_judged == 2
    assert result.deposed == () and result.deposed_degraded == ()
    assert result.elections() == {"broker-a": 1}
    assert result.failovers() == {"broker-a": 1}


def test_an_ack_of_the_old_master_after_the_new_one_was_seen_is_flagged() -> None:
    history = [master(0, 1, A), master(100, 2, B), *ack("7", A, start=150, latency=20)]
    (flagged,) = check_fencing(history).deposed
    assert (flagged.value, flagged.store, flagged.master_then, flagged.epoch_then) == ("7", A, B, 2)
    assert (flagged.started_ms, flagged.acked_ms, flagged.status) == (150, 170, "SEND_OK")
    report = check_history([*history, FaultEvent(name="pause", phase=Phase.START, timestamp_ms=1)])
    assert any("deposed master" in f for f in report.failures), report.failures


def test_a_degraded_ack_of_the_old_master_is_counted_apart_and_not_judged() -> None:
    history = [
        master(0, 1, A),
        master(100, 2, B),
        *ack("7", A, start=150, status="SLAVE_NOT_AVAILABLE"),
        FaultEvent(name="pause", phase=Phase.START, timestamp_ms=1),
        deliver("7", 160),
    ]
    result = check_fencing(history)
    assert result.deposed == ()
    assert [d.value for d in result.deposed_degraded] == ["7"]
    assert check_history(history).ok


def test_a_call_that_started_before_the_election_was_seen_is_not_flagged() -> None:
    """The old master may have acked it while it still was master."""
    history = [master(0, 1, A), *ack("3", A, start=90, latency=30), master(100, 2, B)]
    assert check_fencing(history).deposed == ()


def test_a_new_master_seen_late_is_not_a_deposed_one() -> None:
    """B was elected before the watcher saw it: its acks before that are legitimate."""
    history = [master(0, 1, A), *ack("4", B, start=50), master(900, 2, B)]
    assert check_fencing(history).deposed == ()


def test_an_old_master_elected_again_and_seen_late_is_not_flagged() -> None:
    history = [
        master(0, 1, A),
        master(100, 2, B),
        *ack("5", A, start=150),
        master(150 + REELECTED_SLACK_MS - 100, 3, A),
    ]
    assert check_fencing(history).deposed == ()
    # Seen again much later than the slack: the ack was a deposed master's.
    late = [*history[:-1], master(150 + 2 * REELECTED_SLACK_MS, 3, A)]
    assert [d.value for d in check_fencing(late).deposed] == ["5"]


def test_no_master_deposes_nobody() -> None:
    """A controller that found no master to elect leaves no other broker acking."""
    history = [master(0, 1, A), master(100, 2, None), *ack("6", A, start=150)]
    result = check_fencing(history)
    assert result.deposed == ()
    assert result.elections() == {"broker-a": 1}
    assert result.failovers() == {"broker-a": 0}


def test_acks_are_judged_per_group_and_only_with_a_store_address() -> None:
    history = [
        master(0, 1, A, group="broker-a"),
        master(0, 1, C, group="broker-b"),
        master(100, 2, B, group="broker-a"),
        *ack("8", C, start=200, group="broker-b"),  # broker-b's own master: fine
        *ack("9", A, start=5_000, group="broker-c"),  # no master seen for broker-c
        Request(client_id=0, op=ENQUEUE, value="10", timestamp_ms=300),
        Response(client_id=0, op=ENQUEUE, outcome=Outcome.SUCCESS, value="10",
                 timestamp_ms=301, latency_ms=1, extra=make_extra(status="SEND_OK")),
    ]  # fmt: skip
    result = check_fencing(history)
    assert result.acks_judged == 1 and result.deposed == ()


def test_max_elections_judges_the_master_lines() -> None:
    base: list[Entry] = [
        FaultEvent(name="kill", phase=Phase.START, timestamp_ms=1),
        master(0, 1, A),
        *ack("1", A, start=10),
        deliver("1", 20),
    ]
    expect = Expectations(max_elections=0)
    assert check_history(base, expect).ok
    report = check_history([*base, master(50, 2, A)], expect)
    assert report.failures == ("master elections {'broker-a': 1} (at most 0 expected)",)


# --- redelivery ------------------------------------------------------------------------------


def test_no_redelivery_no_rewind() -> None:
    result = check_redelivery([deliver("1", 10), deliver("2", 20)])
    assert (result.redeliveries, result.max_rewind_ms, result.deepest) == (0, 0, ())


def test_a_rewind_is_how_far_back_the_queue_position_went() -> None:
    history = [deliver(str(v), 1000 * v) for v in range(1, 11)]  # 1..10 at 1 s each
    history += [deliver("8", 12_000), deliver("9", 12_100), deliver("10", 12_200)]
    result = check_redelivery(history)
    assert result.redeliveries == 3
    assert result.max_rewind_ms == 10_000 - 8_000
    assert result.deepest[0] == ("8", "broker-a:0", 2_000)


def test_a_restart_from_zero_rewinds_to_the_start_and_fails_the_bound() -> None:
    history: list[Entry] = [FaultEvent(name="kill", phase=Phase.START, timestamp_ms=1)]
    for v in range(1, 101):  # one a second for 100 s
        history += [*ack(str(v), A, start=1000 * v), deliver(str(v), 1000 * v + 50)]
    history += [deliver(str(v), 200_000 + v) for v in range(1, 101)]  # all over again
    report = check_history(history, Expectations(max_rewind_ms=12_000))
    assert report.redelivery.max_rewind_ms == 99_000
    assert any("rewound broker-a:0 by 99000 ms" in f for f in report.failures), report.failures
    assert check_history(history, Expectations(max_rewind_ms=99_000)).ok


def test_rewinds_are_measured_per_queue() -> None:
    history = [
        deliver("1", 1_000, "broker-a:0"),
        deliver("2", 9_000, "broker-a:1"),  # another queue moves on
        deliver("1", 9_500, "broker-a:0"),
    ]
    assert check_redelivery(history).max_rewind_ms == 0


# --- probes ----------------------------------------------------------------------------------


def test_a_failed_probe_fails_the_verdict() -> None:
    base: list[Entry] = [
        FaultEvent(name="kill", phase=Phase.START, timestamp_ms=1),
        *ack("1", A, start=10),
        deliver("1", 20),
    ]
    assert check_history([*base, probe(30, True)]).ok
    report = check_history([*base, probe(30, True), probe(40, False)])
    assert [p.passed for p in check_probes([probe(30, True), probe(40, False)])] == [True, False]
    assert report.failures == ("1 probes failed, e.g. new-master-metadata: detail=queues 6",)


def test_probe_writes_refused_by_design_are_no_unavailability() -> None:
    """A resumed old master refuses the harness's probes: clients saw no outage then."""
    history: list[Entry] = [
        FaultEvent(name="pause", phase=Phase.START, timestamp_ms=0),
        *ack("1", B, start=100),
        Request(client_id=PROBE_CLIENT, op=ENQUEUE, value="2", timestamp_ms=200),
        Response(client_id=PROBE_CLIENT, op=ENQUEUE, outcome=Outcome.FAILURE, value="2",
                 timestamp_ms=201, latency_ms=1),
        *ack("3", B, start=300),
    ]  # fmt: skip
    assert check_recovery(history).windows == ()
    # The same refusal to an ordinary producer is a window.
    ordinary = [
        attrs.evolve(e, client_id=1) if isinstance(e, Request | Response) else e for e in history
    ]
    assert len(check_recovery(ordinary).windows) == 1


@pytest.mark.parametrize("op", [MASTER, PROBE, "step"])
def test_harness_lines_are_no_sends_or_deliveries(op: str) -> None:
    line = Response(client_id=HARNESS_CLIENT, op=op, outcome=Outcome.SUCCESS, value="1",
                    timestamp_ms=5)  # fmt: skip
    report = check_history([line], Expectations(min_acked=0, min_faults=0))
    q = report.queue
    assert (q.enqueue_invoked, q.acked, q.dequeued, len(q.unexpected)) == (0, 0, 0, 0)
    assert report.recovery.windows == ()
