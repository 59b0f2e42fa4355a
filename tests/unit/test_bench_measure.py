"""``bench/measure.py``: the one percentile definition, histogram percentiles against a
sorted-list model, per-second bucketing, the meter, and the /proc parsers on sample text."""

from __future__ import annotations

import math
from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.measure import (
    SUB_BUCKET_BITS,
    CpuSample,
    CpuTimes,
    LatencyHistogram,
    Meter,
    SecondSeries,
    Tally,
    bucket_ceiling,
    bucket_floor,
    cpu_between,
    loopback_port,
    merged,
    nearest_rank,
    parse_listening_inodes,
    parse_machine_busy_s,
    parse_proc_memory,
    parse_proc_stat_cpu,
    percentile,
    proc_hex_ipv4,
    us_per_msg,
)

REL_ERROR = 2.0**-SUB_BUCKET_BITS
latencies = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=300)
percentiles = st.sampled_from([0, 1, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100]) | st.floats(
    min_value=0, max_value=100, allow_nan=False
)


def naive_percentile(values: list[int], percentile: float) -> int:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    rank = math.ceil(Decimal(repr(percentile)) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


# --- histogram -------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**40))
def test_bucket_bounds_contain_the_value_within_the_relative_error(value: int) -> None:
    low, high = bucket_floor(value), bucket_ceiling(value)
    assert low <= value <= high
    assert bucket_floor(low) == bucket_floor(high) == low
    assert bucket_floor(high + 1) == high + 1  # the next bucket starts right after
    assert high - low <= low * REL_ERROR
    if value < 2 ** (SUB_BUCKET_BITS + 1):
        assert low == high == value


@given(latencies, percentiles)
def test_percentile_matches_the_sorted_list_model(values: list[int], percentile: float) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    got = histogram.value_at(percentile)
    exact = naive_percentile(values, percentile)
    assert exact <= got <= exact * (1 + REL_ERROR)
    assert got == min(bucket_ceiling(exact), max(values))


@given(latencies)
def test_count_mean_min_max_are_exact(values: list[int]) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    assert histogram.count == len(values)
    assert histogram.total_us == sum(values)
    assert histogram.mean_us == pytest.approx(sum(values) / len(values))
    assert (histogram.min_us, histogram.max_us) == (min(values), max(values))
    assert histogram.value_at(100) == max(values)


@given(latencies, latencies, st.integers(min_value=1, max_value=64))
def test_merge_and_weights_equal_recording_one_by_one(
    a: list[int], b: list[int], weight: int
) -> None:
    left, right, together = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for value in a:
        left.record(value, weight)
    for value in b:
        right.record(value)
    for value in a * weight + b:
        together.record(value)
    assert merged([left, right]) == together


def test_empty_histogram_reports_zeros() -> None:
    histogram = LatencyHistogram()
    assert histogram.values_at([50, 99]) == [0, 0]
    assert (histogram.mean_us, histogram.max_us) == (0.0, 0)
    with pytest.raises(AssertionError):
        histogram.record(-1)
    assert histogram == LatencyHistogram()


# --- per-second bucketing ----------------------------------------------------------------


def test_events_fall_into_the_second_they_completed_in() -> None:
    series = SecondSeries(100.0, Tally)
    for now_s in (99.5, 100.0, 100.999, 101.0, 103.2):
        series.at(now_s).msgs += 1
    assert [s.msgs for s in series.buckets] == [3, 1, 0, 1]  # early events count as second 0
    assert [span for _, span in series.spans(104.4)] == [1.0, 1.0, 1.0, 1.0]
    spans = series.spans(104.6)
    assert [span for _, span in spans][:4] == [1.0] * 4
    assert spans[4][1] == pytest.approx(0.6)  # a partial second of >= 0.5 s is kept
    assert [span for _, span in series.spans(100.3)] == [pytest.approx(0.3)]  # the only one


@given(st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=200))
def test_bucketing_matches_flooring(offsets: list[float]) -> None:
    series = SecondSeries(1000.0, Tally)
    for offset in sorted(offsets):
        series.at(1000.0 + offset).msgs += 1
    for k, second in enumerate(series.buckets):
        assert second.msgs == sum(1 for o in offsets if math.floor(1000.0 + o - 1000.0) == k)


# --- the one percentile definition ----------------------------------------------------------


@given(
    st.lists(st.integers(min_value=0, max_value=2**10 - 1), min_size=1, max_size=100), percentiles
)
def test_percentile_of_a_list_is_the_nearest_rank_and_agrees_with_the_histogram(
    values: list[int], q: float
) -> None:
    assert percentile(values, q) == naive_percentile(values, q)
    histogram = LatencyHistogram()
    for value in values:  # below 2**(bits + 1): exact buckets, so the same value
        histogram.record(value)
    assert histogram.value_at(q) == percentile(values, q)


def test_which_rank_is_p50_and_p99() -> None:
    assert nearest_rank(4, 50) == 2 and nearest_rank(5, 50) == 3
    assert nearest_rank(100, 99) == 99 and nearest_rank(10, 99) == 10
    assert nearest_rank(100, 7) == 7  # 0.07 * 100 is 7.000000000000001 in floats
    assert nearest_rank(3, 0) == 1 and nearest_rank(3, 100) == 3
    assert percentile([30.0, 10.0, 20.0, 40.0], 50) == 20.0  # a value, not an average
    assert percentile([], 50) is None
    with pytest.raises(AssertionError):
        nearest_rank(0, 50)


# --- the meter ------------------------------------------------------------------------------


def test_meter_counts_messages_requests_bytes_and_failures() -> None:
    meter = Meter.starting(10.0, latency_per_message=False)
    meter.record_ok(10.5, 0.002, 32, 32 * 1024)  # a batch: latency once, per request
    meter.record_ok(11.2, 0.004, 1, 1024)
    meter.record_failed(11.3, response=True, kind="FLUSH_DISK_TIMEOUT", detail="first")
    meter.record_failed(11.4, 2, response=False, kind="TimeoutError", detail="second")
    meter.finish(12.25)
    meter.record_ok(12.5, 0.1, 1, 1024)  # in flight at the end: counted, not in the rate
    assert (meter.msgs, meter.requests, meter.nbytes) == (34, 5, 34 * 1024)
    assert (meter.send_failed, meter.response_failed, meter.failed) == (2, 1, 3)
    assert meter.errors == {"FLUSH_DISK_TIMEOUT": 1, "TimeoutError": 2}
    assert meter.first_error == "first"
    assert meter.latency().count == 3 and meter.latency().max_us == 100_000
    assert meter.rate_per_s() == pytest.approx(33 / 2.25)
    assert [t.msgs for t in meter.whole_seconds()] == [32, 1]
    assert [span for _, span in meter.spans()] == [1.0, 1.0]  # 0.25 s: too short to keep
    per_message = Meter.starting(0.0)
    per_message.record_ok(0.1, 0.002, 32)
    assert per_message.latency().count == 32


# --- CPU and memory from /proc text -------------------------------------------------------------

#: A /proc/<pid>/stat line whose command name holds a space and a parenthesis.
STAT = (
    "4242 (rmq (broker) x) S 1 4242 4242 0 -1 4194560 4805 0 0 0 250 37 0 0 20 0 3 0 "
    "1234 400000000 20000 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0"
)


def test_proc_stat_gives_user_and_system_seconds() -> None:
    times = parse_proc_stat_cpu(STAT, clk_tck=100)
    assert (times.user_s, times.system_s) == (2.5, 0.37)
    assert times.total_s == pytest.approx(2.87)


def test_machine_busy_leaves_out_idle_and_iowait() -> None:
    text = "cpu  100 5 50 1000 40 3 2 1 0 0\ncpu0 50 2 25 500 20 1 1 0 0 0\n"
    assert parse_machine_busy_s(text, clk_tck=100) == pytest.approx(
        (100 + 5 + 50 + 3 + 2 + 1) / 100
    )


def test_proc_status_memory_in_bytes() -> None:
    text = "Name:\trmq\nVmHWM:\t  81234 kB\nVmRSS:\t  80000 kB\nRssAnon:\t  50000 kB\nThreads:\t3\n"
    assert parse_proc_memory(text) == {
        "VmHWM": 81234 * 1024,
        "VmRSS": 80000 * 1024,
        "RssAnon": 50000 * 1024,
    }


def test_cpu_between_two_samples() -> None:
    start = CpuSample(
        wall_s=1.0, own=CpuTimes(1.0, 0.5), others=((7, CpuTimes(2.0, 1.0)),), machine_busy_s=10
    )
    end = CpuSample(
        wall_s=3.0, own=CpuTimes(1.5, 0.6), others=((7, CpuTimes(3.0, 1.2)),), machine_busy_s=12
    )
    use = cpu_between(start, end)
    assert use.wall_s == 2.0 and use.machine_busy_s == 2
    assert use.own.total_s == pytest.approx(0.6)
    assert use.others is not None and use.others.total_s == pytest.approx(1.2)
    assert use.pct(use.others.total_s) == 60.0
    gone = attrs.evolve(end, others=((7, None),))
    assert cpu_between(start, gone).others is None  # a process that ended is not guessed
    assert cpu_between(attrs.evolve(start, others=()), attrs.evolve(end, others=())).others is None
    assert us_per_msg(1.2, 40_000) == 30.0 and us_per_msg(1.2, 0) is None


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2694 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0
   1: 00000000:2A9F 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 222 1 0
   2: 0100007F:2A9F 0100007F:9713 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0
   3: 0200007F:2694 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 444 1 0
"""


def test_listening_sockets_by_port_and_address() -> None:
    loopback = [proc_hex_ipv4("127.0.0.1")]
    assert loopback == ["0100007F"]
    assert parse_listening_inodes(TCP, 9876, loopback) == {111}  # not 127.0.0.2's
    assert parse_listening_inodes(TCP, 10911, loopback) == {222}  # 0.0.0.0; not a connection
    assert parse_listening_inodes(TCP, 1, loopback) == set()
    tcp6 = TCP.replace("00000000:2A9F", "00000000000000000000000000000000:2A9F")
    assert parse_listening_inodes(tcp6, 10911, []) == {222}


def test_only_loopback_addresses_are_local() -> None:
    assert loopback_port("127.0.0.1:10911") == 10911
    assert loopback_port("localhost:9876") == 9876
    assert loopback_port("10.0.0.5:10911") is None
    assert loopback_port("127.0.0.1:x") is None
