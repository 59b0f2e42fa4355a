"""The pure half of ``rmq bench``: what a run is asked, what a consumer measured, and how
a run is reported.

Rules:
- Pure: time comes in as ``now_s`` (a monotonic clock) and wall time as ``now_ms``.
  Producers measure with ``bench.measure.Meter``; a consumer with ``ConsumeMeter`` (two
  latencies per message: born → consumed and stored → consumed). Percentiles are
  ``bench.measure``'s (nearest rank over the histogram, per message as in OMB).
- Output mirrors RocketMQ's ``benchmark/producer.sh`` and ``consumer.sh`` lines; the JSON
  uses OpenMessaging-Benchmark's ``TestResult`` key names (rates in msg/s, latencies in ms)
  plus our own fields. The printed Max RT is the maximum of that second, failure counts
  are run totals. The JSON's per-second lists keep the whole seconds and a last partial
  second of at least ``MIN_PARTIAL_SECOND_S`` (its rate scaled to its length).
- CPU per message: this client's CPU and the watched brokers' (together, from
  ``/proc/<pid>/stat``) over the measured span, divided by the messages sent (produce) or
  consumed (consume); our own keys ``clientCpuUsPerMsg`` and ``brokerCpuUsPerMsg``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from bench.measure import (
    CpuTimes,
    CpuUse,
    LatencyHistogram,
    Meter,
    SecondSeries,
    merged,
    to_us,
    us_per_msg,
    us_to_ms,
)
from protocol.errors import RocketError

#: OMB's percentile columns: key suffix → percentile.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("50pct", 50.0),
    ("75pct", 75.0),
    ("95pct", 95.0),
    ("99pct", 99.0),
    ("999pct", 99.9),
    ("9999pct", 99.99),
)
#: Percentiles written to ``aggregated…Quantiles``.
QUANTILES: tuple[float, ...] = (1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100)
DEFAULT_DURATION_S = 10.0
#: The topic ``rmq bench`` uses unless told another. RocketMQ's benchmark tools default to
#: ``BenchmarkTest``, a system topic: it cannot be created or changed (``--create-topic``).
BENCH_TOPIC = "rmq-bench"


class BenchError(RocketError):
    """A benchmark cannot run as asked; the message says what to do."""


# --- what a run is asked -------------------------------------------------------------------------


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _bound_s(duration_s: float | None, count: int | None) -> float | None:
    """A run's duration limit: the default one when neither limit was given."""
    if duration_s is None and count is None:
        return DEFAULT_DURATION_S
    return duration_s


@attrs.frozen(kw_only=True)
class ProduceConfig:
    namesrv: str
    topic: str
    size_bytes: int = attrs.field(default=1024, validator=_positive)
    concurrency: int = attrs.field(default=64, validator=_positive)
    batch: int = attrs.field(default=1, validator=_positive)
    keys: bool = False
    duration_s: float | None = attrs.field(default=None, validator=_positive)
    count: int | None = attrs.field(default=None, validator=_positive)
    rate_per_s: float | None = attrs.field(default=None, validator=_positive)
    #: Create the topic with this many queues on every master first.
    create_topic_queues: int | None = attrs.field(default=None, validator=_positive)
    #: Also run a push consumer in this process: consumeRate, backlog, end-to-end latency.
    e2e: bool = False
    group: str = "benchmark_producer"
    timeout_s: float = attrs.field(default=3.0, validator=_positive)
    #: Broker processes whose CPU to read (none: those found listening on the topic's
    #: loopback broker addresses).
    broker_pids: tuple[int, ...] = ()

    @property
    def bound_s(self) -> float | None:
        return _bound_s(self.duration_s, self.count)


@attrs.frozen(kw_only=True)
class ConsumeConfig:
    namesrv: str
    topic: str
    group: str
    duration_s: float | None = attrs.field(default=None, validator=_positive)
    count: int | None = attrs.field(default=None, validator=_positive)
    #: With a count and no duration: stop after this long without a message.
    idle_timeout_s: float = attrs.field(default=30.0, validator=_positive)
    from_first: bool = True
    timeout_s: float = attrs.field(default=3.0, validator=_positive)
    #: As ``ProduceConfig.broker_pids``.
    broker_pids: tuple[int, ...] = ()

    @property
    def bound_s(self) -> float | None:
        return _bound_s(self.duration_s, self.count)


# --- the consumer's meter -----------------------------------------------------------------


@attrs.define
class ConsumeMeter:
    """A consumer run: messages and their born → consumed latency (B2C) per second in
    ``meter``, their stored → consumed latency (S2C) per second beside it."""

    meter: Meter
    s2c: SecondSeries[LatencyHistogram]
    last_s: float

    @classmethod
    def starting(cls, now_s: float) -> ConsumeMeter:
        return cls(Meter.starting(now_s), SecondSeries(now_s, LatencyHistogram), now_s)

    def start_at(self, start_s: float) -> None:
        """Count seconds from ``start_s`` (a producer's start: the seconds line up)."""
        self.meter.seconds.start_s = self.s2c.start_s = start_s

    @property
    def consumed(self) -> int:
        return self.meter.msgs

    @property
    def end_s(self) -> float | None:
        return self.meter.end_s

    def record(self, now_s: float, now_ms: float, born_ms: int, store_ms: int) -> None:
        """One message consumed at ``now_s`` (monotonic) = ``now_ms`` (wall clock)."""
        self.record_all(now_s, now_ms, ((born_ms, store_ms),))

    def record_all(self, now_s: float, now_ms: float, times: Iterable[tuple[int, int]]) -> None:
        """Messages consumed together at ``now_s`` = ``now_ms``: their (born, stored) ms."""
        meter = self.meter
        b2c = meter.seconds.at(now_s).rt
        s2c = self.s2c.at(now_s)
        n = 0
        for born_ms, store_ms in times:
            b2c.record(to_us((now_ms - born_ms) / 1000))
            s2c.record(to_us((now_ms - store_ms) / 1000))
            n += 1
        meter.record_many_ok(now_s, n)
        self.last_s = now_s

    def finish(self, now_s: float) -> None:
        """The run ended at ``now_s`` (the first call wins)."""
        self.meter.finish(now_s)

    def elapsed_s(self) -> float:
        return self.meter.elapsed_s()


# --- CPU per message ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CpuFigures:
    """CPU used during a run by this client and by the broker processes watched."""

    use: CpuUse
    #: The brokers' pids: given, or found listening on the topic's loopback broker
    #: addresses; () when there were none.
    broker_pids: tuple[int, ...]

    @property
    def broker(self) -> CpuTimes | None:
        """The brokers' CPU together; None when none was watched or one could not be read."""
        return self.use.others


def cpu_line(cpu: CpuFigures, msgs: int) -> str:
    """Client and broker CPU microseconds per message (``-`` where unknown)."""
    client = us_per_msg(cpu.use.own.total_s, msgs)
    line = f"CPU(us/msg): client {_us(client)} | broker "
    pids = ", ".join(str(pid) for pid in cpu.broker_pids)
    if cpu.broker is not None:
        return line + f"{_us(us_per_msg(cpu.broker.total_s, msgs))} (pid {pids})"
    if not cpu.broker_pids:
        return line + "- (no local broker process found; give --broker-pid)"
    return line + f"- (cannot read /proc/PID/stat of pid {pids})"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cpu_fields(cpu: CpuFigures | None, msgs: int) -> dict[str, Any]:
    """CPU seconds and microseconds per message of the client and the brokers (None where
    unknown); empty when unmeasured."""
    if cpu is None:
        return {}
    broker = cpu.broker
    return {
        "clientCpuSeconds": round(cpu.use.own.total_s, 3),
        "clientCpuUsPerMsg": us_per_msg(cpu.use.own.total_s, msgs),
        "brokerCpuSeconds": round(broker.total_s, 3) if broker is not None else None,
        "brokerCpuUsPerMsg": us_per_msg(broker.total_s, msgs) if broker is not None else None,
        "brokerPids": list(cpu.broker_pids),
    }


# --- lines and results --------------------------------------------------------------


def human_time(now_ms: float) -> str:
    """``yyyy-MM-dd HH:mm:ss,SSS`` local time (RocketMQ's UtilAll.timeMillisToHumanString2)."""
    ms = int(now_ms)
    text = datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text},{ms % 1000:03d}"


def send_line(now_ms: float, meter: Meter, k: int) -> str:
    """producer.sh's line for second ``k`` (failures are run totals, as there)."""
    second = meter.seconds.get(k)
    return (
        f"Current Time: {human_time(now_ms)} | Send TPS: {second.msgs} | "
        f"Max RT(ms): {second.rt.max_us // 1000} | "
        f"Average RT(ms): {second.rt.mean_us / 1000:7.3f} | "
        f"Send Failed: {meter.send_failed} | Response Failed: {meter.response_failed}"
    )


def consume_line(now_ms: float, meter: ConsumeMeter, k: int) -> str:
    """consumer.sh's line for second ``k`` (RocketMQ 5 wording)."""
    second, s2c = meter.meter.seconds.get(k), meter.s2c.get(k)
    return (
        f"Current Time: {human_time(now_ms)} | Consume TPS: {second.msgs} | "
        f"AVG(B2C) RT(ms): {second.rt.mean_us / 1000:7.3f} | "
        f"AVG(S2C) RT(ms): {s2c.mean_us / 1000:7.3f} | "
        f"MAX(B2C) RT(ms): {second.rt.max_us // 1000} | "
        f"MAX(S2C) RT(ms): {s2c.max_us // 1000} | Consume Fail: 0"
    )


def _percentile_text(histogram: LatencyHistogram) -> str:
    values = histogram.values_at([p for _, p in PERCENTILES])
    parts = [f"p{p:g} {us_to_ms(v):.3f}" for (_, p), v in zip(PERCENTILES, values, strict=True)]
    return " | ".join([*parts, f"max {us_to_ms(histogram.max_us):.3f}"])


def produce_summary(meter: Meter) -> list[str]:
    """producer.sh's ``[Complete]`` line, then latency percentiles and send statuses."""
    rt = meter.latency()
    tps = round(meter.rate_per_s())
    lines = [
        f"[Complete] Send Total: {meter.msgs + meter.failed} | Send TPS: {tps} | "
        f"Max RT(ms): {rt.max_us // 1000} | Average RT(ms): {rt.mean_us / 1000:7.3f} | "
        f"Send Failed: {meter.send_failed} | Response Failed: {meter.response_failed}",
        f"Send RT(ms): {_percentile_text(rt)}",
    ]
    if meter.statuses:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(meter.statuses.items()))
        lines.append(f"Send status: {statuses} | Elapsed(s): {meter.elapsed_s():.3f}")
    return lines


def consume_summary(meter: ConsumeMeter) -> list[str]:
    b2c = meter.meter.latency()
    s2c = merged(meter.s2c.buckets)
    elapsed = meter.elapsed_s()
    tps = round(meter.consumed / elapsed) if elapsed > 0 else 0
    return [
        f"[Complete] Consume Total: {meter.consumed} | Consume TPS: {tps} | "
        f"AVG(B2C) RT(ms): {b2c.mean_us / 1000:7.3f} | AVG(S2C) RT(ms): {s2c.mean_us / 1000:7.3f} | "
        f"MAX(B2C) RT(ms): {b2c.max_us // 1000} | MAX(S2C) RT(ms): {s2c.max_us // 1000}",
        f"End-to-end (B2C) RT(ms): {_percentile_text(b2c)} | Elapsed(s): {elapsed:.3f}",
    ]


def latency_lists(prefix: str, histograms: Sequence[LatencyHistogram]) -> dict[str, list[float]]:
    """OMB per-interval lists: ``{prefix}Avg``, ``{prefix}50pct`` … ``{prefix}Max`` (ms)."""
    out: dict[str, list[float]] = {f"{prefix}Avg": [us_to_ms(h.mean_us) for h in histograms]}
    for suffix, _ in PERCENTILES:
        out[f"{prefix}{suffix}"] = []
    for histogram in histograms:
        values = histogram.values_at([p for _, p in PERCENTILES])
        for (suffix, _), value in zip(PERCENTILES, values, strict=True):
            out[f"{prefix}{suffix}"].append(us_to_ms(value))
    out[f"{prefix}Max"] = [us_to_ms(h.max_us) for h in histograms]
    return out


def latency_aggregate(prefix: str, histogram: LatencyHistogram) -> dict[str, Any]:
    """OMB's ``aggregated{Prefix}Avg`` … ``Max`` (ms) and ``aggregated{Prefix}Quantiles``."""
    name = "aggregated" + prefix[0].upper() + prefix[1:]
    out: dict[str, Any] = {f"{name}Avg": us_to_ms(histogram.mean_us)}
    values = histogram.values_at([p for _, p in PERCENTILES])
    for (suffix, _), value in zip(PERCENTILES, values, strict=True):
        out[f"{name}{suffix}"] = us_to_ms(value)
    out[f"{name}Max"] = us_to_ms(histogram.max_us)
    quantiles = histogram.values_at(QUANTILES)
    out[f"{name}Quantiles"] = {
        str(float(q)): us_to_ms(v) for q, v in zip(QUANTILES, quantiles, strict=True)
    }
    return out


def _rates(counts: Sequence[tuple[int, float]]) -> list[float]:
    return [round(n / span, 3) for n, span in counts]


def consume_fields(meter: ConsumeMeter | None, end_s: float) -> dict[str, Any]:
    """consumeRate and the end-to-end (born → consumed) latency keys; empty when unmeasured."""
    spans = meter.meter.seconds.spans(end_s) if meter is not None else []
    out: dict[str, Any] = {"consumeRate": _rates([(s.msgs, span) for s, span in spans])}
    out |= latency_lists("endToEndLatency", [s.rt for s, _ in spans])
    if meter is not None:
        out |= latency_aggregate("endToEndLatency", meter.meter.latency())
        out["consumed"] = meter.consumed
    return out


def _backlog(produce: Meter, consume: ConsumeMeter | None, seconds: int) -> list[int]:
    """Sent minus consumed at the end of each second (OMB's backlog); [] without a consumer."""
    if consume is None:
        return []
    out, sent, consumed = [], 0, 0
    for k in range(seconds):
        sent += produce.seconds.get(k).msgs
        consumed += consume.meter.seconds.get(k).msgs
        # A message may be consumed before its send's answer is processed: never below 0.
        out.append(max(0, sent - consumed))
    return out


def produce_result(
    config: ProduceConfig,
    meter: Meter,
    *,
    partitions: int,
    consume: ConsumeMeter | None = None,
    interrupted: bool = False,
    cpu: CpuFigures | None = None,
) -> dict[str, Any]:
    """The run as OMB's TestResult (plus our own fields)."""
    end_s = meter.end_s
    assert end_s is not None, "finish() the meter first"
    spans = meter.spans()
    result: dict[str, Any] = {
        "workload": f"rmq bench produce {config.size_bytes}B x{config.concurrency}"
        + (f" batch {config.batch}" if config.batch > 1 else ""),
        "driver": "trio-rocketmq",
        "messageSize": config.size_bytes,
        "topics": 1,
        "partitions": partitions,
        "producersPerTopic": 1,
        "consumersPerTopic": 1 if consume is not None else 0,
        "publishRate": _rates([(s.msgs, span) for s, span in spans]),
        "publishErrorRate": _rates([(s.failed, span) for s, span in spans]),
        "backlog": _backlog(meter, consume, len(spans)),
    }
    result |= latency_lists("publishLatency", [s.rt for s, _ in spans])
    result |= latency_aggregate("publishLatency", meter.latency())
    result |= consume_fields(consume, end_s)
    result |= {
        "topic": config.topic,
        "concurrency": config.concurrency,
        "batch": config.batch,
        "keys": config.keys,
        "rateLimit": config.rate_per_s,
        "sent": meter.msgs,
        "failed": meter.failed,
        "sendFailed": meter.send_failed,
        "responseFailed": meter.response_failed,
        "requests": meter.requests,
        "sendTps": round(meter.rate_per_s(), 3),
        "durationSeconds": round(meter.elapsed_s(), 3),
        "sendStatusCounts": dict(sorted(meter.statuses.items())),
        "interrupted": interrupted,
    }
    return result | cpu_fields(cpu, meter.msgs)


def consume_result(
    config: ConsumeConfig,
    meter: ConsumeMeter,
    *,
    partitions: int,
    interrupted: bool = False,
    cpu: CpuFigures | None = None,
) -> dict[str, Any]:
    end_s = meter.end_s
    assert end_s is not None, "finish() the meter first"
    result: dict[str, Any] = {
        "workload": "rmq bench consume",
        "driver": "trio-rocketmq",
        "topics": 1,
        "partitions": partitions,
        "producersPerTopic": 0,
        "consumersPerTopic": 1,
        "publishRate": [],
        "backlog": [],
    }
    result |= consume_fields(meter, end_s)
    result |= {
        "topic": config.topic,
        "group": config.group,
        "durationSeconds": round(meter.elapsed_s(), 3),
        "interrupted": interrupted,
    }
    return result | cpu_fields(cpu, meter.consumed)
