"""The pure half of ``rmq bench`` (``bench/results.py``, the token bucket of
``bench/runner.py``): the producer's meter, lines and result keys, the token bucket under
an injected clock."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.measure import CpuTimes, CpuUse, Meter
from bench.results import (
    PERCENTILES,
    ConsumeMeter,
    CpuFigures,
    ProduceConfig,
    consume_line,
    cpu_fields,
    cpu_line,
    produce_result,
    send_line,
)
from bench.runner import TokenBucket


def produce_meter() -> Meter:
    meter = Meter.starting(50.0)
    meter.record_ok(50.2, 0.004, 1, status="SEND_OK")
    meter.record_ok(50.9, 0.0008, 32, status="SEND_OK")  # a batch counts once per message
    meter.record_failed(51.1, 1, response=False)
    meter.record_failed(51.2, 2, response=True)
    meter.record_ok(52.7, 0.010, 1, status="FLUSH_DISK_TIMEOUT")
    meter.finish(52.8)
    return meter


def test_produce_meter_counts_messages_per_second_and_in_total() -> None:
    meter = produce_meter()
    assert [(s.msgs, s.send_failed, s.response_failed) for s in meter.seconds.buckets] == [
        (33, 0, 0),
        (0, 1, 2),
        (1, 0, 0),
    ]
    assert (meter.msgs, meter.failed, meter.requests) == (34, 3, 5)
    assert meter.statuses == {"SEND_OK": 33, "FLUSH_DISK_TIMEOUT": 1}
    assert meter.seconds.buckets[0].rt.value_at(50) == 800  # 32 of 33 messages: 0.8 ms
    meter.finish(99.0)  # the first finish wins
    assert meter.elapsed_s() == pytest.approx(2.8)
    meter.record_ok(53.1, 0.5, 5, status="SEND_OK")  # in flight at the end: counted, not in the TPS
    assert (meter.msgs, meter.msgs_in_window) == (39, 34)
    assert meter.rate_per_s() == pytest.approx(34 / 2.8)


def test_produce_result_has_omb_keys_and_per_second_lists() -> None:
    config = ProduceConfig(namesrv="127.0.0.1:9876", topic="T", count=37, batch=32)
    result = produce_result(config, produce_meter(), partitions=4)
    assert result["publishRate"] == [33.0, 0.0, pytest.approx(1 / 0.8, rel=1e-3)]
    assert result["publishErrorRate"] == [0.0, 3.0, 0.0]
    assert result["publishLatency50pct"] == [0.8, 0.0, 10.0]
    assert result["publishLatencyMax"] == [4.0, 0.0, 10.0]
    assert result["aggregatedPublishLatencyMax"] == 10.0
    assert result["aggregatedPublishLatencyQuantiles"]["100.0"] == 10.0
    for suffix in ["Avg", "Max", *(s for s, _ in PERCENTILES)]:
        assert len(result[f"publishLatency{suffix}"]) == 3
        assert f"aggregatedPublishLatency{suffix}" in result
    assert result["consumeRate"] == result["backlog"] == result["endToEndLatencyAvg"] == []
    assert "aggregatedEndToEndLatencyAvg" not in result  # not measured
    assert (result["sent"], result["failed"], result["durationSeconds"]) == (34, 3, 2.8)
    assert result["sendStatusCounts"] == {"FLUSH_DISK_TIMEOUT": 1, "SEND_OK": 33}
    assert (result["messageSize"], result["batch"], result["partitions"]) == (1024, 32, 4)


def test_produce_result_with_a_consumer_has_backlog_and_end_to_end_latency() -> None:
    consume = ConsumeMeter.starting(50.0)
    consume.record(50.5, 1_000_500.0, born_ms=1_000_497, store_ms=1_000_499)
    consume.record(51.5, 1_001_500.0, born_ms=1_001_480, store_ms=1_001_490)
    consume.finish(52.8)
    config = ProduceConfig(namesrv="127.0.0.1:9876", topic="T")
    result = produce_result(config, produce_meter(), partitions=4, consume=consume)
    assert result["backlog"] == [32, 31, 32]
    early = ConsumeMeter.starting(50.0)
    for _ in range(40):  # consumed before the sends' answers were processed
        early.record(50.1, 0.0, born_ms=0, store_ms=0)
    early.finish(52.8)
    assert produce_result(config, produce_meter(), partitions=4, consume=early)["backlog"] == [
        0,
        0,
        0,
    ]
    assert result["consumeRate"] == [1.0, 1.0, 0.0]
    assert result["endToEndLatencyMax"] == [3.0, 20.0, 0.0]
    assert result["aggregatedEndToEndLatencyAvg"] == 11.5
    assert result["consumed"] == 2


# --- lines ---------------------------------------------------------------------------------

SEND_LINE = re.compile(
    r"^Current Time: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \| Send TPS: \d+ \| Max RT\(ms\): \d+ "
    r"\| Average RT\(ms\): +\d+\.\d{3} \| Send Failed: \d+ \| Response Failed: \d+$"
)


def test_lines_are_worded_as_rocketmq_benchmarks() -> None:
    meter = produce_meter()
    line = send_line(1_700_000_000_123, meter, 0)
    assert SEND_LINE.match(line), line
    assert ",123 | Send TPS: 33 | Max RT(ms): 4 | Average RT(ms):   0.897 |" in line
    assert line.endswith("Send Failed: 1 | Response Failed: 2")
    consume = ConsumeMeter.starting(0.0)
    consume.record(0.1, 2_000.0, born_ms=1_000, store_ms=1_500)
    text = consume_line(1_700_000_000_000, consume, 0)
    assert text.endswith(
        "| Consume TPS: 1 | AVG(B2C) RT(ms): 1000.000 | AVG(S2C) RT(ms): 500.000 | "
        "MAX(B2C) RT(ms): 1000 | MAX(S2C) RT(ms): 500 | Consume Fail: 0"
    )


# --- token bucket --------------------------------------------------------------------------


@given(
    st.floats(min_value=1, max_value=1e5),
    st.integers(min_value=1, max_value=64),
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5), st.integers(min_value=1, max_value=64)),
        min_size=1,
        max_size=100,
    ),
)
def test_token_bucket_never_admits_more_than_rate_plus_burst(
    rate: float, burst: int, requests: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket.starting(rate, burst, now_s=10.0)
    now, admitted = 10.0, []
    for gap, tokens in requests:
        now += gap
        wait = bucket.reserve(tokens, now)
        assert wait >= 0
        admitted.append((now + wait, tokens))
    for at, _ in admitted:
        total = sum(n for t, n in admitted if t <= at)
        assert total <= burst + rate * (at - 10.0) + 1e-6 * total


def test_token_bucket_paces_a_greedy_client_at_the_rate() -> None:
    bucket = TokenBucket.starting(1000.0, 32, now_s=0.0)
    now, sent = 0.0, 0
    while now < 5.0:  # each request waits as told, then asks again at once
        now += bucket.reserve(32, now)
        sent += 32
    assert 5000 - 32 <= sent <= 5000 + 2 * 32
    assert bucket.reserve(1, now + 100) == 0.0  # idle time refills, up to the burst only
    assert bucket.tokens == 31


# --- CPU per message -----------------------------------------------------------------------


def cpu_figures(broker: CpuTimes | None, pids: tuple[int, ...]) -> CpuFigures:
    use = CpuUse(wall_s=2.0, own=CpuTimes(0.2, 0.08), others=broker, machine_busy_s=1.5)
    return CpuFigures(use=use, broker_pids=pids)


def test_cpu_per_message_of_the_client_and_the_local_brokers() -> None:
    cpu = cpu_figures(CpuTimes(1.0, 0.4), (4242, 4243))
    assert cpu_line(cpu, 10_000) == "CPU(us/msg): client 28.00 | broker 140.00 (pid 4242, 4243)"
    assert cpu_fields(cpu, 10_000) == {
        "clientCpuSeconds": 0.28,
        "clientCpuUsPerMsg": 28.0,
        "brokerCpuSeconds": 1.4,
        "brokerCpuUsPerMsg": 140.0,
        "brokerPids": [4242, 4243],
    }
    config = ProduceConfig(namesrv="127.0.0.1:9876", topic="T")
    result = produce_result(config, produce_meter(), partitions=4, cpu=cpu)
    assert result["clientCpuUsPerMsg"] == pytest.approx(1e6 * 0.28 / 34, abs=0.01)
    assert cpu_fields(None, 10) == {}  # unmeasured: no keys


def test_cpu_line_says_why_the_broker_figure_is_missing() -> None:
    remote = cpu_figures(None, ())
    assert cpu_line(remote, 100).endswith(
        "| broker - (no local broker process found; give --broker-pid)"
    )
    assert cpu_fields(remote, 100)["brokerCpuUsPerMsg"] is None
    gone = cpu_figures(None, (4242,))
    assert cpu_line(gone, 100).endswith("| broker - (cannot read /proc/PID/stat of pid 4242)")
    assert cpu_line(remote, 0).startswith("CPU(us/msg): client - |")  # no message: no figure
