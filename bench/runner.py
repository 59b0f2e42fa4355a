"""The engine behind ``rmq bench produce`` and ``rmq bench consume``.

Rules:
- Two halves. The statistics half (``LatencyHistogram``, ``SecondSeries``, the meters,
  ``TokenBucket``, the line formatters and the result builders) is pure: time comes in as
  ``now_s`` (a monotonic clock) and wall time as ``now_ms``. The workload half runs the SDK
  on Trio and feeds the meters.
- Latencies are kept in whole microseconds in log-linear buckets (HdrHistogram's layout:
  exact below 1024 us, then 512 sub-buckets per power of two), so a percentile is within
  0.2 % of the exact nearest-rank value; mean, min and max are exact. Batched sends count
  once per message, so percentiles are per message as in OpenMessaging-Benchmark (OMB).
- Per-second figures are bucketed by completion time: second k of a run holds what
  completed in ``[t0 + k, t0 + k + 1)`` and is printed at ``t0 + k + 1``, when no later
  event can fall into it (the clock is monotonic and Trio single-threaded). The JSON's
  per-second lists keep the whole seconds and a last partial second of at least 0.5 s
  (its rate scaled to its length).
- Output mirrors RocketMQ's ``benchmark/producer.sh`` and ``consumer.sh`` lines; the JSON
  uses OMB's ``TestResult`` key names (rates in msg/s, latencies in ms) plus our own fields.
  The printed Max RT is the maximum of that second, failure counts are run totals.
- Every run is bounded (``duration_s``, ``count``; a consumer with only a count also stops
  after ``idle_timeout_s`` without a message) and stops everything it started. At a
  producer's deadline no request starts and those in flight finish (each under its
  timeout): every message is acknowledged or failed, none left unknown; the TPS counts only
  what was acknowledged before the deadline. A first SIGINT (when ``handle_sigint``) ends
  the run at once and the figures so far are returned; a second raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import datetime
import math
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from client.admin import open_admin
from client.consumer import ConsumeFrom, ConsumeResult, Listener, open_push_consumer
from client.message import Message, ReceivedMessage
from client.producer import Producer, open_producer
from protocol.errors import RocketError, ServerError, TopicNotExist
from protocol.route import publish_queues, subscribe_queues

T = TypeVar("T")

#: Sub-bucket bits: values below 2**(bits + 1) us are exact, relative error <= 2**-bits.
SUB_BUCKET_BITS = 9
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
#: A trailing partial second shorter than this is left out of the per-second lists.
MIN_PARTIAL_SECOND_S = 0.5
#: A worker whose send failed waits this long before the next (producer.sh waits 3 s).
FAILURE_PAUSE_S = 0.5
DEFAULT_DURATION_S = 10.0


class BenchError(RocketError):
    """A benchmark cannot run as asked; the message says what to do."""


# --- latency histogram (pure) ------------------------------------------------------------


def bucket_floor(value_us: int) -> int:
    """The lowest value sharing ``value_us``'s bucket (the bucket's key)."""
    shift = max(0, value_us.bit_length() - SUB_BUCKET_BITS - 1)
    return (value_us >> shift) << shift


def bucket_ceiling(value_us: int) -> int:
    """The highest value sharing ``value_us``'s bucket (HdrHistogram's highestEquivalent)."""
    shift = max(0, value_us.bit_length() - SUB_BUCKET_BITS - 1)
    return (((value_us >> shift) + 1) << shift) - 1


def nearest_rank(count: int, percentile: float) -> int:
    """1-based rank of the ``percentile`` value among ``count`` sorted values (>= 1)."""
    assert count > 0 and 0 <= percentile <= 100, (count, percentile)
    return max(1, math.ceil(Fraction(str(percentile)) * count / 100))


@attrs.define
class LatencyHistogram:
    """Counts of latencies (us) by bucket; exact count, sum, min and max."""

    counts: dict[int, int] = attrs.field(factory=dict)
    count: int = 0
    total_us: int = 0
    min_us: int = 0
    max_us: int = 0

    def record(self, value_us: int, times: int = 1) -> None:
        assert value_us >= 0 and times >= 1, (value_us, times)
        key = bucket_floor(value_us)
        self.counts[key] = self.counts.get(key, 0) + times
        self.min_us = value_us if not self.count else min(self.min_us, value_us)
        self.count += times
        self.total_us += value_us * times
        self.max_us = max(self.max_us, value_us)

    def merge(self, other: LatencyHistogram) -> None:
        if not other.count:
            return
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.min_us = other.min_us if not self.count else min(self.min_us, other.min_us)
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    @property
    def mean_us(self) -> float:
        return self.total_us / self.count if self.count else 0.0

    def values_at(self, percentiles: Sequence[float]) -> list[int]:
        """The value (us) at each percentile: its bucket's highest value, at most the max;
        0 when empty."""
        if not self.count:
            return [0 for _ in percentiles]
        keys = sorted(self.counts)
        out = []
        for percentile in percentiles:
            rank = nearest_rank(self.count, percentile)
            seen = 0
            for key in keys:
                seen += self.counts[key]
                if seen >= rank:
                    out.append(min(bucket_ceiling(key), self.max_us))
                    break
        return out

    def value_at(self, percentile: float) -> int:
        return self.values_at([percentile])[0]


def merged(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    total = LatencyHistogram()
    for histogram in histograms:
        total.merge(histogram)
    return total


def us_to_ms(value_us: float) -> float:
    return round(value_us / 1000, 3)


# --- per-second series and meters (pure) ---------------------------------------------------


class SecondSeries(Generic[T]):
    """One value of ``T`` per second since ``start_s``, created on first use."""

    def __init__(self, start_s: float, factory: Callable[[], T]) -> None:
        self.start_s = start_s
        self._factory = factory
        self.buckets: list[T] = []

    def index(self, now_s: float) -> int:
        """The second ``now_s`` falls in (times before the start count as second 0)."""
        return max(0, math.floor(now_s - self.start_s))

    def get(self, index: int) -> T:
        """Second ``index``, created (with every second before it) when new."""
        assert index >= 0, index
        while len(self.buckets) <= index:
            self.buckets.append(self._factory())
        return self.buckets[index]

    def at(self, now_s: float) -> T:
        return self.get(self.index(now_s))

    def spans(self, end_s: float) -> list[tuple[T, float]]:
        """(second, its length in s) up to ``end_s``: whole seconds, plus a trailing partial
        one of at least ``MIN_PARTIAL_SECOND_S`` (or the only one, in a run under 1 s)."""
        elapsed = max(0.0, end_s - self.start_s)
        whole = math.floor(elapsed)
        out = [(self.get(k), 1.0) for k in range(whole)]
        partial = elapsed - whole
        if partial >= MIN_PARTIAL_SECOND_S or (whole == 0 and partial > 0):
            out.append((self.get(whole), partial))
        return out


@attrs.define
class SendSecond:
    """Sends that completed in one second (counts are messages, not requests)."""

    sent: int = 0
    send_failed: int = 0
    response_failed: int = 0
    rt: LatencyHistogram = attrs.field(factory=LatencyHistogram)


@attrs.define
class ConsumeSecond:
    """Messages consumed in one second, with born→consume and store→consume latencies."""

    consumed: int = 0
    b2c: LatencyHistogram = attrs.field(factory=LatencyHistogram)
    s2c: LatencyHistogram = attrs.field(factory=LatencyHistogram)


@attrs.define
class ProduceMeter:
    """Everything a producer run measured."""

    seconds: SecondSeries[SendSecond]
    statuses: dict[str, int] = attrs.field(factory=dict)
    sent: int = 0
    requests: int = 0
    send_failed: int = 0
    response_failed: int = 0
    #: Messages acknowledged before ``end_s`` (a send in flight at the end finishes later).
    sent_in_window: int = 0
    end_s: float | None = None

    @classmethod
    def starting(cls, now_s: float) -> ProduceMeter:
        return cls(SecondSeries(now_s, SendSecond))

    @property
    def failed(self) -> int:
        return self.send_failed + self.response_failed

    def record_sent(self, now_s: float, latency_s: float, messages: int, status: str) -> None:
        second = self.seconds.at(now_s)
        second.sent += messages
        second.rt.record(max(0, round(latency_s * 1_000_000)), messages)
        self.sent += messages
        if self.end_s is None:
            self.sent_in_window += messages
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + messages

    def record_failed(self, now_s: float, messages: int, *, response: bool) -> None:
        """``response``: the broker answered with an error (producer.sh's Response Failed);
        otherwise the request got no answer (Send Failed)."""
        second = self.seconds.at(now_s)
        self.requests += 1
        if response:
            second.response_failed += messages
            self.response_failed += messages
        else:
            second.send_failed += messages
            self.send_failed += messages

    def finish(self, now_s: float) -> None:
        """The run ended at ``now_s`` (the first call wins)."""
        if self.end_s is None:
            self.end_s = now_s

    def elapsed_s(self, now_s: float | None = None) -> float:
        end = self.end_s if now_s is None else now_s
        assert end is not None, "finish() the meter first"
        return max(0.0, end - self.seconds.start_s)

    def send_tps(self) -> float:
        """Messages acknowledged within the run's window per second of it."""
        elapsed = self.elapsed_s()
        return self.sent_in_window / elapsed if elapsed > 0 else 0.0


@attrs.define
class ConsumeMeter:
    """Everything a consumer run measured."""

    seconds: SecondSeries[ConsumeSecond]
    consumed: int = 0
    last_s: float = 0.0
    end_s: float | None = None

    @classmethod
    def starting(cls, now_s: float) -> ConsumeMeter:
        return cls(SecondSeries(now_s, ConsumeSecond), last_s=now_s)

    def record(self, now_s: float, now_ms: float, born_ms: int, store_ms: int) -> None:
        """One message consumed at ``now_s`` (monotonic) = ``now_ms`` (wall clock)."""
        second = self.seconds.at(now_s)
        second.consumed += 1
        second.b2c.record(max(0, round((now_ms - born_ms) * 1000)))
        second.s2c.record(max(0, round((now_ms - store_ms) * 1000)))
        self.consumed += 1
        self.last_s = now_s

    def finish(self, now_s: float) -> None:
        """The run ended at ``now_s`` (the first call wins)."""
        if self.end_s is None:
            self.end_s = now_s

    def elapsed_s(self, now_s: float | None = None) -> float:
        end = self.end_s if now_s is None else now_s
        assert end is not None, "finish() the meter first"
        return max(0.0, end - self.seconds.start_s)


# --- rate limiter (pure) -------------------------------------------------------------------


@attrs.define
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; a reservation may go
    into debt, and its holder waits until the debt is paid."""

    rate_per_s: float
    burst: float
    tokens: float
    last_s: float

    @classmethod
    def starting(cls, rate_per_s: float, burst: float, now_s: float) -> TokenBucket:
        assert rate_per_s > 0 and burst > 0, (rate_per_s, burst)
        return cls(rate_per_s, burst, burst, now_s)

    def reserve(self, tokens: float, now_s: float) -> float:
        """Take ``tokens``; seconds to wait from ``now_s`` before using them (0: now)."""
        assert tokens > 0, tokens
        if now_s > self.last_s:
            refill = (now_s - self.last_s) * self.rate_per_s
            self.tokens = min(self.burst, self.tokens + refill)
            self.last_s = now_s
        self.tokens -= tokens
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate_per_s


# --- lines and results (pure) --------------------------------------------------------------


def human_time(now_ms: float) -> str:
    """``yyyy-MM-dd HH:mm:ss,SSS`` local time (RocketMQ's UtilAll.timeMillisToHumanString2)."""
    ms = int(now_ms)
    text = datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text},{ms % 1000:03d}"


def send_line(now_ms: float, second: SendSecond, meter: ProduceMeter) -> str:
    """producer.sh's line for one second (failures are run totals, as there)."""
    return (
        f"Current Time: {human_time(now_ms)} | Send TPS: {second.sent} | "
        f"Max RT(ms): {second.rt.max_us // 1000} | "
        f"Average RT(ms): {second.rt.mean_us / 1000:7.3f} | "
        f"Send Failed: {meter.send_failed} | Response Failed: {meter.response_failed}"
    )


def consume_line(now_ms: float, second: ConsumeSecond) -> str:
    """consumer.sh's line for one second (RocketMQ 5 wording)."""
    return (
        f"Current Time: {human_time(now_ms)} | Consume TPS: {second.consumed} | "
        f"AVG(B2C) RT(ms): {second.b2c.mean_us / 1000:7.3f} | "
        f"AVG(S2C) RT(ms): {second.s2c.mean_us / 1000:7.3f} | "
        f"MAX(B2C) RT(ms): {second.b2c.max_us // 1000} | "
        f"MAX(S2C) RT(ms): {second.s2c.max_us // 1000} | Consume Fail: 0"
    )


def _percentile_text(histogram: LatencyHistogram) -> str:
    values = histogram.values_at([p for _, p in PERCENTILES])
    parts = [f"p{p:g} {us_to_ms(v):.3f}" for (_, p), v in zip(PERCENTILES, values, strict=True)]
    return " | ".join([*parts, f"max {us_to_ms(histogram.max_us):.3f}"])


def produce_summary(meter: ProduceMeter) -> list[str]:
    """producer.sh's ``[Complete]`` line, then latency percentiles and send statuses."""
    rt = merged(s.rt for s in meter.seconds.buckets)
    tps = round(meter.send_tps())
    lines = [
        f"[Complete] Send Total: {meter.sent + meter.failed} | Send TPS: {tps} | "
        f"Max RT(ms): {rt.max_us // 1000} | Average RT(ms): {rt.mean_us / 1000:7.3f} | "
        f"Send Failed: {meter.send_failed} | Response Failed: {meter.response_failed}",
        f"Send RT(ms): {_percentile_text(rt)}",
    ]
    if meter.statuses:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(meter.statuses.items()))
        lines.append(f"Send status: {statuses} | Elapsed(s): {meter.elapsed_s():.3f}")
    return lines


def consume_summary(meter: ConsumeMeter) -> list[str]:
    b2c = merged(s.b2c for s in meter.seconds.buckets)
    s2c = merged(s.s2c for s in meter.seconds.buckets)
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
    spans = meter.seconds.spans(end_s) if meter is not None else []
    out: dict[str, Any] = {"consumeRate": _rates([(s.consumed, span) for s, span in spans])}
    out |= latency_lists("endToEndLatency", [s.b2c for s, _ in spans])
    if meter is not None:
        out |= latency_aggregate("endToEndLatency", merged(s.b2c for s in meter.seconds.buckets))
        out["consumed"] = meter.consumed
    return out


def _backlog(produce: ProduceMeter, consume: ConsumeMeter | None, seconds: int) -> list[int]:
    """Sent minus consumed at the end of each second (OMB's backlog); [] without a consumer."""
    if consume is None:
        return []
    out, sent, consumed = [], 0, 0
    for k in range(seconds):
        sent += produce.seconds.get(k).sent
        consumed += consume.seconds.get(k).consumed
        # A message may be consumed before its send's answer is processed: never below 0.
        out.append(max(0, sent - consumed))
    return out


def produce_result(
    config: ProduceConfig,
    meter: ProduceMeter,
    *,
    partitions: int,
    consume: ConsumeMeter | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The run as OMB's TestResult (plus our own fields)."""
    end_s = meter.end_s
    assert end_s is not None, "finish() the meter first"
    spans = meter.seconds.spans(end_s)
    result: dict[str, Any] = {
        "workload": f"rmq bench produce {config.size_bytes}B x{config.concurrency}"
        + (f" batch {config.batch}" if config.batch > 1 else ""),
        "driver": "trio-rocketmq",
        "messageSize": config.size_bytes,
        "topics": 1,
        "partitions": partitions,
        "producersPerTopic": 1,
        "consumersPerTopic": 1 if consume is not None else 0,
        "publishRate": _rates([(s.sent, span) for s, span in spans]),
        "publishErrorRate": _rates([(s.send_failed + s.response_failed, sp) for s, sp in spans]),
        "backlog": _backlog(meter, consume, len(spans)),
    }
    result |= latency_lists("publishLatency", [s.rt for s, _ in spans])
    result |= latency_aggregate("publishLatency", merged(s.rt for s in meter.seconds.buckets))
    result |= consume_fields(consume, end_s)
    result |= {
        "topic": config.topic,
        "concurrency": config.concurrency,
        "batch": config.batch,
        "keys": config.keys,
        "rateLimit": config.rate_per_s,
        "sent": meter.sent,
        "failed": meter.failed,
        "sendFailed": meter.send_failed,
        "responseFailed": meter.response_failed,
        "requests": meter.requests,
        "sendTps": round(meter.send_tps(), 3),
        "durationSeconds": round(meter.elapsed_s(), 3),
        "sendStatusCounts": dict(sorted(meter.statuses.items())),
        "interrupted": interrupted,
    }
    return result


def consume_result(
    config: ConsumeConfig, meter: ConsumeMeter, *, partitions: int, interrupted: bool = False
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
    return result


# --- configuration -------------------------------------------------------------------------


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


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

    @property
    def bound_s(self) -> float | None:
        """The run's duration limit (the default one when neither limit was given)."""
        if self.duration_s is None and self.count is None:
            return DEFAULT_DURATION_S
        return self.duration_s


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

    @property
    def bound_s(self) -> float | None:
        if self.duration_s is None and self.count is None:
            return DEFAULT_DURATION_S
        return self.duration_s


# --- the Trio workload ---------------------------------------------------------------------


class Sink(Protocol):
    """Where a run's live output goes (the CLI prints lines and drives a progress bar)."""

    def line(self, text: str) -> None: ...

    def progress(self, elapsed_s: float, done: int) -> None: ...


@attrs.frozen(kw_only=True)
class ProduceOutcome:
    meter: ProduceMeter
    consume: ConsumeMeter | None
    partitions: int
    interrupted: bool


@attrs.frozen(kw_only=True)
class ConsumeOutcome:
    meter: ConsumeMeter
    partitions: int
    interrupted: bool


@attrs.define
class _Stop:
    """How a run ended early (SIGINT) and the scope to cancel for it."""

    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    interrupted: bool = False


async def _watch_sigint(stop: _Stop) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            if stop.interrupted:
                raise KeyboardInterrupt
            stop.interrupted = True
            stop.scope.cancel()


async def _with_sigint(
    stop: _Stop, handle_sigint: bool, body: Callable[[], Awaitable[None]]
) -> None:
    """Run ``body`` in ``stop.scope``; with ``handle_sigint`` a Ctrl-C cancels it."""
    async with trio.open_nursery() as nursery:
        if handle_sigint:
            nursery.start_soon(_watch_sigint, stop)
        with stop.scope:
            await body()
        nursery.cancel_scope.cancel()


async def prepare_topic(
    namesrv: str, topic: str, *, create_queues: int | None, timeout_s: float
) -> int:
    """Check (or create) ``topic``; the number of its queues. Raises ``BenchError``."""
    async with open_admin(namesrv, timeout_s=timeout_s) as admin:
        if create_queues is not None:
            clusters = sorted((await admin.cluster_info()).cluster_addr_table)
            if not clusters:
                raise BenchError(f"no broker is registered with the NameServer at {namesrv}")
            for cluster in clusters:
                await admin.create_topic(
                    topic,
                    cluster=cluster,
                    read_queue_nums=create_queues,
                    write_queue_nums=create_queues,
                )
        # The brokers register a new topic at once; give the NameServer a moment anyway.
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    route = await admin.topic_route(topic)
                except TopicNotExist:
                    if create_queues is None:
                        raise BenchError(
                            f"topic {topic} does not exist; create it with "
                            f"`rmq admin updateTopic -n {namesrv} -t {topic} -c CLUSTER` "
                            "or pass --create-topic 8"
                        ) from None
                else:
                    if publish_queues(topic, route):
                        return len(subscribe_queues(topic, route))
                await trio.sleep(0.1)
        raise BenchError(f"topic {topic} has no writable queue with a live master broker")


@attrs.define
class _SendPlan:
    """Hands out the messages to send: counts (bounded by ``count``), bodies and keys."""

    config: ProduceConfig
    body: bytes
    key_prefix: str
    remaining: int | None
    next_seq: int = 0
    stopped: bool = False

    def claim(self) -> int:
        """How many messages the next request carries (0: none left, or stopped)."""
        if self.stopped:
            return 0
        n = self.config.batch
        if self.remaining is not None:
            n = min(n, self.remaining)
            self.remaining -= n
        return n

    def messages(self, n: int) -> list[Message]:
        first, self.next_seq = self.next_seq, self.next_seq + n
        topic, body = self.config.topic, self.body
        if not self.config.keys:
            return [Message(topic=topic, body=body) for _ in range(n)]
        return [
            Message(topic=topic, body=body, keys=(f"{self.key_prefix}-{seq}",))
            for seq in range(first, first + n)
        ]


async def _send_worker(
    producer: Producer, plan: _SendPlan, meter: ProduceMeter, limiter: TokenBucket | None
) -> None:
    while n := plan.claim():
        if limiter is not None:
            wait_s = limiter.reserve(n, trio.current_time())
            if wait_s > 0:
                await trio.sleep(wait_s)
                if plan.stopped:
                    return
        messages = plan.messages(n)
        started = trio.current_time()
        try:
            if plan.config.batch > 1:
                result = await producer.send_batch(messages)
            else:
                result = await producer.send(messages[0])
        except ServerError:
            meter.record_failed(trio.current_time(), n, response=True)
            await trio.sleep(FAILURE_PAUSE_S)
        except RocketError:
            meter.record_failed(trio.current_time(), n, response=False)
            await trio.sleep(FAILURE_PAUSE_S)
        else:
            now = trio.current_time()
            meter.record_sent(now, now - started, n, result.status.value)


async def _report_seconds(start_s: float, emit: Callable[[int], None]) -> None:
    """Call ``emit(k)`` once second k of the run is over, for k = 0, 1, ..."""
    k = 0
    while True:
        await trio.sleep_until(start_s + k + 1)
        emit(k)
        k += 1


@attrs.define
class _Target:
    """A consumed-message count to wait for (None: none yet) and the event set on reaching it."""

    count: int | None = None
    reached: trio.Event = attrs.field(factory=trio.Event)

    def check(self, consumed: int) -> None:
        if self.count is not None and consumed >= self.count:
            self.reached.set()


def _consume_listener(meter: ConsumeMeter, target: _Target) -> Listener:
    async def listener(messages: list[ReceivedMessage]) -> ConsumeResult:
        now_s, now_ms = trio.current_time(), time.time() * 1000
        for message in messages:
            meter.record(now_s, now_ms, message.born_timestamp_ms, message.store_timestamp_ms)
        target.check(meter.consumed)
        return ConsumeResult.SUCCESS

    return listener


async def run_produce(
    config: ProduceConfig, sink: Sink, *, handle_sigint: bool = False
) -> ProduceOutcome:
    """Send as configured; the figures (also after a Ctrl-C). Raises ``RocketError``."""
    partitions = await prepare_topic(
        config.namesrv,
        config.topic,
        create_queues=config.create_topic_queues,
        timeout_s=config.timeout_s,
    )
    stop = _Stop()
    meter = ProduceMeter.starting(trio.current_time())
    consume: ConsumeMeter | None = None

    async def body() -> None:
        nonlocal meter, consume
        async with open_producer(
            config.namesrv, group=config.group, timeout_s=config.timeout_s
        ) as producer:
            if not config.e2e:
                meter = ProduceMeter.starting(trio.current_time())
                await _produce(config, producer, meter, None, sink)
                return
            group = f"benchmark_e2e_{secrets.token_hex(4)}"
            consume = ConsumeMeter.starting(trio.current_time())
            target = _Target()
            async with open_push_consumer(
                config.namesrv,
                group=group,
                listener=_consume_listener(consume, target),
                subscriptions={config.topic: "*"},
                consume_from=ConsumeFrom.LAST,
                timeout_s=config.timeout_s,
            ):
                meter = ProduceMeter.starting(trio.current_time())
                consume.seconds.start_s = meter.seconds.start_s
                await _produce(config, producer, meter, consume, sink)
                await _drain(meter, consume, target, config.timeout_s * 3)

    try:
        await _with_sigint(stop, handle_sigint, body)
    finally:
        meter.finish(trio.current_time())
        if consume is not None:
            consume.finish(trio.current_time())
    return ProduceOutcome(
        meter=meter, consume=consume, partitions=partitions, interrupted=stop.interrupted
    )


async def _produce(
    config: ProduceConfig,
    producer: Producer,
    meter: ProduceMeter,
    consume: ConsumeMeter | None,
    sink: Sink,
) -> None:
    start_s = meter.seconds.start_s
    plan = _SendPlan(
        config=config,
        body=os.urandom(config.size_bytes),
        key_prefix=f"bench-{secrets.token_hex(4)}",
        remaining=config.count,
    )
    limiter = None
    if config.rate_per_s is not None:
        limiter = TokenBucket.starting(config.rate_per_s, config.batch, start_s)

    def emit(k: int) -> None:
        now_ms = time.time() * 1000
        sink.line(send_line(now_ms, meter.seconds.get(k), meter))
        if consume is not None:
            sink.line(consume_line(now_ms, consume.seconds.get(k)))
        sink.progress(trio.current_time() - start_s, meter.sent + meter.failed)

    async def stop_at(deadline_s: float) -> None:
        await trio.sleep_until(deadline_s)
        plan.stopped = True
        meter.finish(trio.current_time())

    bound_s = config.bound_s
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_report_seconds, start_s, emit)
        if bound_s is not None:
            nursery.start_soon(stop_at, start_s + bound_s)
        # After the deadline no request starts; those in flight finish (each under its
        # timeout), so every message is either acknowledged or failed, never left unknown.
        with trio.move_on_at(start_s + (bound_s or math.inf) + config.timeout_s + 1):
            try:
                async with trio.open_nursery() as workers:
                    for _ in range(config.concurrency):
                        workers.start_soon(_send_worker, producer, plan, meter, limiter)
            finally:
                meter.finish(trio.current_time())
        nursery.cancel_scope.cancel()


async def _drain(
    meter: ProduceMeter, consume: ConsumeMeter, target: _Target, timeout_s: float
) -> None:
    """Wait (bounded) until the in-process consumer has seen everything sent."""
    target.count = meter.sent
    target.check(consume.consumed)
    with trio.move_on_after(timeout_s):
        await target.reached.wait()
    consume.finish(trio.current_time())


async def run_consume(
    config: ConsumeConfig, sink: Sink, *, handle_sigint: bool = False
) -> ConsumeOutcome:
    """Consume as configured; the figures (also after a Ctrl-C). Raises ``RocketError``."""
    partitions = await prepare_topic(
        config.namesrv, config.topic, create_queues=None, timeout_s=config.timeout_s
    )
    stop = _Stop()
    meter = ConsumeMeter.starting(trio.current_time())
    target = _Target(count=config.count)

    def emit(k: int) -> None:
        sink.line(consume_line(time.time() * 1000, meter.seconds.get(k)))
        sink.progress(trio.current_time() - meter.seconds.start_s, meter.consumed)

    async def idle_stop(scope: trio.CancelScope) -> None:
        # Each wake-up re-reads the last message's time: a message meanwhile moves it on.
        while True:
            deadline = meter.last_s + config.idle_timeout_s
            if trio.current_time() >= deadline:
                break
            await trio.sleep_until(deadline)
        sink.line(f"No message for {config.idle_timeout_s:g} s; stopping.")
        meter.finish(meter.last_s)
        scope.cancel()

    async def body() -> None:
        bound = config.bound_s
        async with (
            open_push_consumer(
                config.namesrv,
                group=config.group,
                listener=_consume_listener(meter, target),
                subscriptions={config.topic: "*"},
                consume_from=ConsumeFrom.FIRST if config.from_first else ConsumeFrom.LAST,
                timeout_s=config.timeout_s,
            ),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_report_seconds, meter.seconds.start_s, emit)
            if bound is None:
                nursery.start_soon(idle_stop, nursery.cancel_scope)
            try:
                with trio.move_on_at(meter.seconds.start_s + bound if bound else math.inf):
                    await target.reached.wait()
            finally:
                meter.finish(trio.current_time())
            nursery.cancel_scope.cancel()

    try:
        await _with_sigint(stop, handle_sigint, body)
    finally:
        meter.finish(trio.current_time())
    return ConsumeOutcome(meter=meter, partitions=partitions, interrupted=stop.interrupted)
