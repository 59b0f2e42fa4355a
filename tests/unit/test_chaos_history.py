"""Chaos history lines: OpenChaos's exact layout, round trips, refusals that name the line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scenarios.history import (
    DEQUEUE,
    ENQUEUE,
    NULL,
    Entry,
    FaultEvent,
    HistoryError,
    Outcome,
    Phase,
    Request,
    Response,
    extra_fields,
    format_entry,
    format_history,
    iter_history,
    parse_history,
    parse_line,
)

# --- the layout, field by field (recorder/*LogEntry.java toString) ------------------------


def test_request_line_is_openchaos_layout() -> None:
    entry = Request(client_id=3, op=ENQUEUE, value="17", sharding_key="k1", timestamp_ms=1000)
    assert format_entry(entry) == "3\tenqueue\tREQUEST\t17\tk1\t1000\tnull\n"


def test_response_line_is_openchaos_layout() -> None:
    entry = Response(
        client_id=0,
        op=DEQUEUE,
        outcome=Outcome.SUCCESS,
        value="9",
        timestamp_ms=2000,
        latency_ms=0,
        extra="queue=broker-a:1",
        e2e_latency_ms=12,
    )
    line = "0\tdequeue\tRESPONSE\tSUCCESS\t9\tnull\t2000\t0\tqueue=broker-a:1\t12\n"
    assert format_entry(entry) == line
    # OpenChaos's checkers index the split line: value [4], timestamp [6], latency [7],
    # e2e [9].
    fields = line.rstrip("\n").split("\t")
    assert (fields[4], fields[6], fields[7], fields[9]) == ("9", "2000", "0", "12")


def test_fault_line_is_openchaos_layout_with_optional_extra() -> None:
    bare = FaultEvent(name="kill", phase=Phase.START, timestamp_ms=5)
    assert format_entry(bare) == "fault\tkill\tstart\t5\n"
    tagged = FaultEvent(name="kill", phase=Phase.END, timestamp_ms=6, extra="target=broker-a")
    assert format_entry(tagged) == "fault\tkill\tend\t6\ttarget=broker-a\n"
    assert parse_line("fault\tkill\tend\t6\ttarget=broker-a") == tagged


def test_reads_a_line_openchaos_wrote() -> None:
    # Java prints a null String as "null" and the default long as 0.
    line = "2\tenqueue\tRESPONSE\tUNKNOWN\t41\tnull\t1600000000123\t3001\tnull\t0\n"
    entry = parse_line(line)
    assert entry == Response(
        client_id=2,
        op=ENQUEUE,
        outcome=Outcome.UNKNOWN,
        value="41",
        timestamp_ms=1600000000123,
        latency_ms=3001,
    )
    assert isinstance(entry, Response) and entry.started_ms == 1599999997122


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("1\tenqueue\tREQUEST\t5\tnull\t10", "7 fields"),
        ("1\tenqueue\tRESPONSE\tMAYBE\t5\tnull\t10\t1\tnull\t0", "MAYBE"),
        ("x\tenqueue\tREQUEST\t5\tnull\t10\tnull", "clientId"),
        ("1\tenqueue\tREPLY\t5\tnull\t10\tnull", "REPLY"),
        ("fault\tkill\tmiddle\t10", "middle"),
        ("fault\tkill\tstart", "4 or 5 fields"),
        ("1\tenqueue\tREQUEST\t5\tnull\tsoon\tnull", "timestamp"),
        ("1\tenqueue", "too few"),
        ("-1\tenqueue\tREQUEST\t5\tnull\t10\tnull", "client_id"),
    ],
)
def test_malformed_lines_are_refused_with_the_line_number(line: str, needle: str) -> None:
    text = "fault\tkill\tstart\t1\n" + line + "\n"
    with pytest.raises(HistoryError) as info:
        parse_history(text)
    assert "line 2" in str(info.value)
    assert needle in str(info.value)


@pytest.mark.parametrize("bad", ["", NULL, "a\tb", "a\nb", "a\rb"])
def test_values_that_cannot_round_trip_are_refused_when_built(bad: str) -> None:
    with pytest.raises(ValueError):
        Request(client_id=0, op=ENQUEUE, value=bad, timestamp_ms=0)
    with pytest.raises(ValueError):
        FaultEvent(name=bad, phase=Phase.START, timestamp_ms=0)


def test_op_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="fault"):
        Request(client_id=0, op="fault", timestamp_ms=0)


def test_blank_lines_are_skipped() -> None:
    assert parse_history("\n\nfault\tkill\tstart\t1\n\n") == [
        FaultEvent(name="kill", phase=Phase.START, timestamp_ms=1)
    ]


def test_extra_fields() -> None:
    assert extra_fields("status=SEND_OK,queue=broker-a:1,junk") == {
        "status": "SEND_OK",
        "queue": "broker-a:1",
    }
    assert extra_fields(None) == {}


# --- round trips ------------------------------------------------------------------------

_field = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"),
    min_size=1,
    max_size=20,
).filter(lambda s: s != NULL)
_maybe = st.none() | _field
_op = _field.filter(lambda s: s != "fault")
_ts = st.integers(min_value=0, max_value=2**62)

requests = st.builds(
    Request,
    client_id=st.integers(0, 2**31),
    op=_op,
    value=_maybe,
    sharding_key=_maybe,
    timestamp_ms=_ts,
    extra=_maybe,
)
responses = st.builds(
    Response,
    client_id=st.integers(0, 2**31),
    op=_op,
    outcome=st.sampled_from(Outcome),
    value=_maybe,
    sharding_key=_maybe,
    timestamp_ms=_ts,
    latency_ms=st.integers(0, 10**7),
    extra=_maybe,
    e2e_latency_ms=st.integers(-1, 10**7),
)
faults = st.builds(
    FaultEvent, name=_field, phase=st.sampled_from(Phase), timestamp_ms=_ts, extra=_maybe
)
entries = st.one_of(requests, responses, faults)


@given(entries)
def test_every_entry_round_trips(entry: Entry) -> None:
    line = format_entry(entry)
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_line(line) == entry


@given(st.lists(entries, max_size=30))
def test_histories_round_trip(history: list[Entry]) -> None:
    assert parse_history(format_history(history)) == history


@given(history=st.lists(entries, max_size=30))
def test_histories_round_trip_through_a_file(
    history: list[Entry], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("h") / "history.log"
    path.write_text(format_history(history), encoding="utf-8")
    with path.open(encoding="utf-8") as f:
        assert list(iter_history(f)) == history
