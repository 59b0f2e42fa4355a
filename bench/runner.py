"""The engine behind ``rmq bench produce`` and ``rmq bench consume``: the Trio half.

Rules:
- This half runs the SDK on Trio and feeds the meters (``bench.measure.Meter`` for sends,
  ``bench.results.ConsumeMeter`` for a consumer); ``bench/results.py`` is the pure half
  (configs, lines, summaries, the OMB result). Batched sends count once per message, so
  percentiles are per message as in OpenMessaging-Benchmark (OMB).
- Per-second figures are bucketed by completion time (``bench/measure.py``): second k of a
  run is printed at ``t0 + k + 1``, when no later event can fall into it (the clock is
  monotonic and Trio single-threaded).
- CPU is sampled when the meter starts and when the run ends: this process's own
  (``os.times()``) and the brokers' from ``/proc/<pid>/stat``. The brokers are the pids
  given (``--broker-pid``), else the processes listening on the topic route's loopback
  broker addresses (``/proc/net/tcp`` and ``/proc/<pid>/fd``); a remote broker is not
  read, and the figure is then unknown rather than guessed.
- Every run is bounded (``duration_s``, ``count``; a consumer with only a count also stops
  after ``idle_timeout_s`` without a message) and stops everything it started. At a
  producer's deadline no request starts and those in flight finish (each under its
  timeout): every message is acknowledged or failed, none left unknown; the TPS counts only
  what was acknowledged before the deadline. A first SIGINT (when ``handle_sigint``) ends
  the run at once and the figures so far are returned; a second raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import attrs
import trio

from bench.measure import CpuSample, Meter, cpu_between, listening_pids, sample_cpu
from bench.results import (
    BenchError,
    ConsumeConfig,
    ConsumeMeter,
    CpuFigures,
    ProduceConfig,
    consume_line,
    send_line,
)
from client.admin import open_admin
from client.consumer import ConsumeFrom, ConsumeResult, Listener, open_push_consumer
from client.message import Message, ReceivedMessage
from client.producer import Producer, open_producer
from protocol.errors import InvalidParameter, RocketError, ServerError, TopicNotExist
from protocol.route import publish_queues, subscribe_queues

#: A worker whose send failed waits this long before the next (producer.sh waits 3 s).
FAILURE_PAUSE_S = 0.5


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


# --- the Trio workload ---------------------------------------------------------------------


class Sink(Protocol):
    """Where a run's live output goes (the CLI prints lines and drives a progress bar)."""

    def line(self, text: str) -> None: ...

    def progress(self, elapsed_s: float, done: int) -> None: ...


@attrs.frozen(kw_only=True)
class ProduceOutcome:
    meter: Meter
    consume: ConsumeMeter | None
    partitions: int
    interrupted: bool
    cpu: CpuFigures


@attrs.frozen(kw_only=True)
class ConsumeOutcome:
    meter: ConsumeMeter
    partitions: int
    interrupted: bool
    cpu: CpuFigures


@attrs.frozen(kw_only=True)
class TopicFacts:
    partitions: int
    #: Every broker address in the topic's route (masters and slaves).
    broker_addrs: tuple[str, ...]


@attrs.define
class _CpuWatch:
    """CPU of this process and of ``pids`` from ``start`` (a meter's start) to the end."""

    pids: tuple[int, ...]
    start: CpuSample

    @classmethod
    def starting(cls, pids: tuple[int, ...]) -> _CpuWatch:
        return cls(pids, sample_cpu(pids))

    def restart(self) -> None:
        self.start = sample_cpu(self.pids)

    def figures(self) -> CpuFigures:
        return CpuFigures(use=cpu_between(self.start, sample_cpu(self.pids)), broker_pids=self.pids)


def broker_pids(given: tuple[int, ...], addrs: Iterable[str]) -> tuple[int, ...]:
    """``given``, else the processes listening on the loopback ones of ``addrs`` (a broker
    elsewhere cannot be read)."""
    if given:
        return given
    found = {pid for addr in addrs for pid in listening_pids(addr)}
    return tuple(sorted(found - {os.getpid()}))


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
) -> TopicFacts:
    """Check (or create) ``topic``; its queues and brokers. Raises ``BenchError``."""
    async with open_admin(namesrv, timeout_s=timeout_s) as admin:
        if create_queues is not None:
            clusters = sorted((await admin.cluster_info()).cluster_addr_table)
            if not clusters:
                raise BenchError(f"no broker is registered with the NameServer at {namesrv}")
            for cluster in clusters:
                try:
                    await admin.create_topic(
                        topic,
                        cluster=cluster,
                        read_queue_nums=create_queues,
                        write_queue_nums=create_queues,
                    )
                except InvalidParameter as exc:  # a system topic, an illegal name
                    raise BenchError(f"{exc}; name another topic with -t") from None
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
                        return TopicFacts(
                            partitions=len(subscribe_queues(topic, route)),
                            broker_addrs=tuple(
                                addr for b in route.broker_datas for addr in b.broker_addrs.values()
                            ),
                        )
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
    plain: Message | None = None

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
            # One value for every send: a Message is immutable and the producer gives each
            # send its own msg_id, so building one per send only measured this loop.
            if self.plain is None:
                self.plain = Message(topic=topic, body=body)
            return [self.plain] * n
        return [
            Message(topic=topic, body=body, keys=(f"{self.key_prefix}-{seq}",))
            for seq in range(first, first + n)
        ]


async def _send_worker(
    producer: Producer, plan: _SendPlan, meter: Meter, limiter: TokenBucket | None
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
            # ``_value_``: the member's value without ``Enum.value``'s two Python calls.
            meter.record_ok(now, now - started, n, status=result.status._value_)


async def report_seconds(start_s: float, emit: Callable[[int], None]) -> None:
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
        meter.record_all(
            trio.current_time(),
            time.time() * 1000,
            [(m.born_timestamp_ms, m.store_timestamp_ms) for m in messages],
        )
        target.check(meter.consumed)
        return ConsumeResult.SUCCESS

    return listener


async def run_produce(
    config: ProduceConfig, sink: Sink, *, handle_sigint: bool = False
) -> ProduceOutcome:
    """Send as configured; the figures (also after a Ctrl-C). Raises ``RocketError``."""
    topic = await prepare_topic(
        config.namesrv,
        config.topic,
        create_queues=config.create_topic_queues,
        timeout_s=config.timeout_s,
    )
    stop = _Stop()
    cpu = _CpuWatch.starting(broker_pids(config.broker_pids, topic.broker_addrs))
    meter = Meter.starting(trio.current_time())
    consume: ConsumeMeter | None = None

    async def body() -> None:
        nonlocal meter, consume
        async with open_producer(
            config.namesrv, group=config.group, timeout_s=config.timeout_s
        ) as producer:
            if not config.e2e:
                meter = Meter.starting(trio.current_time())
                cpu.restart()
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
                meter = Meter.starting(trio.current_time())
                cpu.restart()
                consume.start_at(meter.start_s)
                await _produce(config, producer, meter, consume, sink)
                await _drain(meter, consume, target, config.timeout_s * 3)

    try:
        await _with_sigint(stop, handle_sigint, body)
    finally:
        meter.finish(trio.current_time())
        if consume is not None:
            consume.finish(trio.current_time())
    return ProduceOutcome(
        meter=meter,
        consume=consume,
        partitions=topic.partitions,
        interrupted=stop.interrupted,
        cpu=cpu.figures(),
    )


async def _produce(
    config: ProduceConfig,
    producer: Producer,
    meter: Meter,
    consume: ConsumeMeter | None,
    sink: Sink,
) -> None:
    start_s = meter.start_s
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
        sink.line(send_line(now_ms, meter, k))
        if consume is not None:
            sink.line(consume_line(now_ms, consume, k))
        sink.progress(trio.current_time() - start_s, meter.msgs + meter.failed)

    async def stop_at(deadline_s: float) -> None:
        await trio.sleep_until(deadline_s)
        plan.stopped = True
        meter.finish(trio.current_time())

    bound_s = config.bound_s
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_seconds, start_s, emit)
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


async def _drain(meter: Meter, consume: ConsumeMeter, target: _Target, timeout_s: float) -> None:
    """Wait (bounded) until the in-process consumer has seen everything sent."""
    target.count = meter.msgs
    target.check(consume.consumed)
    with trio.move_on_after(timeout_s):
        await target.reached.wait()
    consume.finish(trio.current_time())


async def run_consume(
    config: ConsumeConfig, sink: Sink, *, handle_sigint: bool = False
) -> ConsumeOutcome:
    """Consume as configured; the figures (also after a Ctrl-C). Raises ``RocketError``."""
    topic = await prepare_topic(
        config.namesrv, config.topic, create_queues=None, timeout_s=config.timeout_s
    )
    stop = _Stop()
    cpu = _CpuWatch.starting(broker_pids(config.broker_pids, topic.broker_addrs))
    meter = ConsumeMeter.starting(trio.current_time())
    target = _Target(count=config.count)

    def emit(k: int) -> None:
        sink.line(consume_line(time.time() * 1000, meter, k))
        sink.progress(trio.current_time() - meter.meter.start_s, meter.consumed)

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
            nursery.start_soon(report_seconds, meter.meter.start_s, emit)
            if bound is None:
                nursery.start_soon(idle_stop, nursery.cancel_scope)
            try:
                with trio.move_on_at(meter.meter.start_s + bound if bound else math.inf):
                    await target.reached.wait()
            finally:
                meter.finish(trio.current_time())
            nursery.cancel_scope.cancel()

    try:
        await _with_sigint(stop, handle_sigint, body)
    finally:
        meter.finish(trio.current_time())
    return ConsumeOutcome(
        meter=meter, partitions=topic.partitions, interrupted=stop.interrupted, cpu=cpu.figures()
    )
