"""Chaos at load: the workload's pacing and live counts, histories checked from their file,
and the load figures a run reports (rate reached, CPU left)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.checkers import FaultSpan, check_history, check_loss_window
from scenarios.history import ENQUEUE, Outcome, Request, Response, format_history
from scenarios.history_file import HistoryFile
from scenarios.load import CpuMark, cpu_ticks, load_figures
from scenarios.workload import CATCH_UP_S, Progress, ValueBits, next_tick


def test_value_bits_keep_values_as_bits() -> None:
    bits = ValueBits(limit=1000)
    assert bits.add("7") and not bits.add("7")
    assert bits.add("1000") and bits.add("0")
    assert not bits.add("1001")  # past the limit: not kept
    assert "7" in bits and "8" not in bits and "1001" not in bits and "99999999" not in bits
    assert len(bits) == 3


def test_progress_counts_missing_whichever_comes_first() -> None:
    progress = Progress(limit=100)
    progress.ack("1")
    progress.consume("2")  # consumed before its ack arrived
    assert progress.missing() == 1
    progress.ack("2")
    assert progress.missing() == 1
    progress.consume("1")
    progress.consume("1")  # a redelivery
    assert progress.missing() == 0
    assert (len(progress.acked), len(progress.consumed), progress.deliveries) == (2, 2, 3)


def test_late_ticks_are_caught_up_within_the_window_only() -> None:
    # 2 ms per send: a wake-up 10 ms late still sends the missed ticks...
    assert next_tick(1.000, 1.010, 0.002) == pytest.approx(1.002)
    # ...a stall longer than the window drops what is older than it.
    assert next_tick(1.000, 2.000, 0.002) == pytest.approx(2.000 - CATCH_UP_S)
    # A slow producer (one send a second) never bursts more than one tick.
    assert next_tick(1.0, 5.0, 1.0) == pytest.approx(4.0)


def _history() -> list[Request | Response]:
    out: list[Request | Response] = []
    for i in range(1, 6):
        out.append(Request(client_id=0, op=ENQUEUE, value=str(i), timestamp_ms=1000 + i))
        out.append(
            Response(
                client_id=0,
                op=ENQUEUE,
                outcome=Outcome.SUCCESS,
                value=str(i),
                timestamp_ms=1010 + i,
                latency_ms=9,
                extra="status=SEND_OK,queue=broker-a:0",
            )
        )
        if i != 3:  # 3 is lost
            out.append(
                Response(
                    client_id=1,
                    op="dequeue",
                    outcome=Outcome.SUCCESS,
                    value=str(i),
                    timestamp_ms=1020 + i,
                )
            )
    return out


def test_a_history_file_is_checked_as_the_list_is(tmp_path: Path) -> None:
    entries = _history()
    path = tmp_path / "history.log"
    path.write_text(format_history(entries), encoding="utf-8")
    from_file = check_history(HistoryFile(path))
    assert from_file == check_history(entries)
    assert from_file.queue.lost == ("3",)
    # A one-shot iterator is read once into a list, not half-consumed by the first checker.
    assert check_history(iter(entries)) == from_file


def test_a_bad_history_file_fails_when_checked(tmp_path: Path) -> None:
    path = tmp_path / "history.log"
    path.write_text("0\tenqueue\tREQUEST\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        check_history(HistoryFile(path))


def test_cpu_ticks_read_the_first_line_of_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n", encoding="ascii")
    assert cpu_ticks(stat) == (160, 1000)  # idle + iowait are not busy
    assert cpu_ticks(tmp_path / "missing") is None
    (tmp_path / "odd").write_text("intr 1 2 3\n", encoding="ascii")
    assert cpu_ticks(tmp_path / "odd") is None


def test_load_figures_count_the_rate_and_the_cpu() -> None:
    start = CpuMark(at_s=10.0, box=(1000, 5000), self_cpu_s=2.0)
    end = CpuMark(at_s=20.0, box=(2400, 7000), self_cpu_s=7.0)
    load = load_figures(start, end, asked_per_s=2000.0, sent=19_000, acked=18_500)
    assert load.sent_per_s == pytest.approx(1900.0)
    assert load.acked_per_s == pytest.approx(1850.0)
    assert load.box_busy_pct == pytest.approx(70.0)
    assert load.harness_cpu_pct == pytest.approx(50.0)
    assert "1,900 msg/s sent" in load.describe() and "box CPU 70 % busy" in load.describe()
    assert load.to_json()["ackedPerSecond"] == 1850.0
    blind = load_figures(
        CpuMark(at_s=0.0, box=None, self_cpu_s=0.0),
        end,
        asked_per_s=1.0,
        sent=0,
        acked=0,
    )
    assert blind.box_busy_pct is None and "box CPU - busy" in blind.describe()


def test_the_loss_window_is_the_ack_before_its_fault() -> None:
    def ack(value: str, at_ms: int) -> Response:
        return Response(
            client_id=0,
            op=ENQUEUE,
            outcome=Outcome.SUCCESS,
            value=value,
            timestamp_ms=at_ms,
            extra="status=SEND_OK",
        )

    entries = [ack("1", 500), ack("2", 9_990), ack("3", 9_950), ack("4", 10_400), ack("5", 30_000)]
    faults = [
        FaultSpan(name="kill", extra=None, start_ms=10_000, end_ms=13_000),
        FaultSpan(name="kill", extra=None, start_ms=20_000, end_ms=23_000),
    ]
    result = check_loss_window(entries, ["1", "2", "3", "4"], faults)
    # 1 before any fault; 2 and 3 acked 10 and 50 ms before the kill; 4 400 ms after it.
    assert result.before_any_fault == 1
    assert result.per_fault == ((10_000, 3, 50),)
    assert result.windows_ms == (-400, 10, 50)
    assert result.to_json()["windowMaxMs"] == 50
    assert (
        result.describe()
        == "loss window: 3 lost over 1 faults, acked p50 10 / max 50 ms before the fault"
    )
    none = check_loss_window(entries, [], faults)
    assert none.describe() is None and none.per_fault == ()
