"""The chaos workload: N producers and M push consumers on one topic, every call recorded.

Rules:
- Producers send at ``rate_per_s`` in total (each its share), one call at a time per
  producer (closed loop, as OpenChaos's clients) unless ``in_flight`` allows more. Ticks
  missed by less than ``CATCH_UP_S`` (a busy event loop at 2,000 msg/s wakes late every
  few ms) are sent at once, so the rate holds; older ones are dropped, never sent in a
  burst after a stall. Every value is a decimal number unique in the run; the body carries it.
- Ordered runs give each producer its own sharding keys and send with ``sharding_key``, so
  per key there is one sender and one call in flight: the acked order is the send order.
- Every send is a REQUEST line and a RESPONSE line (``history.py``): SUCCESS for any
  ``SendResult`` (its SendStatus as ``status=``), UNKNOWN when the call may have been
  processed (timeout, connection lost mid-call, SYSTEM_ERROR), FAILURE for a refusal or a
  connection that never opened. Every delivery is a dequeue RESPONSE line with its
  end-to-end latency (receive time minus born time).
- Bounded: sends stop at ``max_messages`` or when told; ``drain`` waits at most
  ``drain_timeout_s``. Consumers stop when the block exits.
- Network: the NameServer address given (127.0.0.1 in every scenario) and the brokers it
  names.
- An ack's extra info names the broker that stored it (``store=ip:port``, read from the
  offset message id), so a checker can tell an ack of a deposed master. ``probe_writes``
  sends straight to one broker (no route, no retry) and records those sends the same way.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import attrs
import trio

from client.consumer import ConsumeFrom, ConsumeResult, Listener, open_push_consumer
from client.message import Message, ReceivedMessage, SendResult
from client.producer import Producer, open_producer
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    ConnectionLost,
    NetworkError,
    RemotingTimeout,
    RocketError,
    ServerError,
    SystemError_,
)
from protocol.headers import SendMessageRequestHeaderV2, SendMessageResponseHeader
from protocol.message import parse_offset_msg_id, properties_to_string
from protocol.rpc import RemotingClient, open_client
from scenarios.history import (
    DEQUEUE,
    ENQUEUE,
    PROBE_CLIENT,
    Entry,
    FaultEvent,
    Outcome,
    Phase,
    Request,
    Response,
    format_entry,
    make_extra,
)

log = logging.getLogger(__name__)

#: Ticks a producer missed by at most this long are still sent (see the rules).
CATCH_UP_S = 0.25
#: User property carrying the sharding key to the consumer.
KEY_PROPERTY = "chaosShardingKey"
PRODUCER_GROUP = "chaos-producer"
CONSUMER_GROUP = "chaos-consumer"
#: A probe write's answer codes that say "stored" (the SDK's SendStatus names).
_PROBE_STATUS: dict[int, str] = {
    ResponseCode.SUCCESS: "SEND_OK",
    ResponseCode.FLUSH_DISK_TIMEOUT: "FLUSH_DISK_TIMEOUT",
    ResponseCode.FLUSH_SLAVE_TIMEOUT: "FLUSH_SLAVE_TIMEOUT",
    ResponseCode.SLAVE_NOT_AVAILABLE: "SLAVE_NOT_AVAILABLE",
}


@attrs.frozen(kw_only=True)
class WorkloadConfig:
    topic: str = "ChaosTopic"
    producers: int = 4
    consumers: int = 2
    #: Sends per second over all producers.
    rate_per_s: float = 40.0
    #: Sends stop after this many, whatever the duration.
    max_messages: int = 200_000
    ordered: bool = False
    keys_per_producer: int = 2
    body_bytes: int = 64
    send_timeout_s: float = 3.0
    send_retries: int = 2
    #: Sends one producer may have in flight: 1 waits for each answer before the next
    #: send (ordered workloads always do); more keep the rate while a hung broker holds
    #: some (a silent master must not stop the clock of the whole workload).
    in_flight: int = 1
    #: How often producers re-read their topic's route (pollNameServerInterval).
    route_refresh_interval_s: float = 30.0
    drain_timeout_s: float = 60.0
    #: Write queues created per master.
    queues_per_broker: int = 4

    def at_rate(self, rate_per_s: float) -> WorkloadConfig:
        """This workload at ``rate_per_s``, each producer keeping as many sends in flight as
        its share starts within a send timeout (a hung broker then holds up nothing else;
        ordered workloads still send one at a time)."""
        per_timeout = self.send_timeout_s * rate_per_s / self.producers
        in_flight = max(self.in_flight, math.ceil(per_timeout) + 1)
        return attrs.evolve(self, rate_per_s=rate_per_s, in_flight=in_flight)

    def __attrs_post_init__(self) -> None:
        assert self.producers > 0 and self.consumers > 0, self
        assert self.rate_per_s > 0 and self.max_messages > 0, self
        assert self.keys_per_producer > 0 and self.body_bytes >= 16, self
        assert self.in_flight >= 1 and self.route_refresh_interval_s > 0, self


#: Scenarios that cut a master off: each producer keeps sends in flight while some wait
#: on the cut master, and re-reads its route every second.
PARTITION_WORKLOAD = WorkloadConfig(
    producers=4, consumers=2, rate_per_s=40, in_flight=16, route_refresh_interval_s=1.0
)


def next_tick(last_s: float, now_s: float, interval_s: float) -> float:
    """When a producer's next send is due after the one due at ``last_s``: one interval on,
    unless that is more than ``CATCH_UP_S`` (or one interval) behind ``now_s``: ticks that
    old are dropped (see the module rules)."""
    return max(last_s + interval_s, now_s - max(interval_s, CATCH_UP_S))


def now_ms() -> int:
    return int(time.time() * 1000)


class Recorder:
    """Appends history lines to a file as they happen (flushed at least once a second)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("x", encoding="utf-8")
        self._last_flush_s = time.monotonic()
        self.lines = 0

    def record(self, entry: Entry) -> None:
        self._file.write(format_entry(entry))
        self.lines += 1
        now = time.monotonic()
        if isinstance(entry, FaultEvent) or now - self._last_flush_s >= 1.0:
            self._file.flush()
            self._last_flush_s = now

    def fault(self, name: str, phase: Phase, extra: str | None = None) -> None:
        self.record(FaultEvent(name=name, phase=phase, timestamp_ms=now_ms(), extra=extra))

    def close(self) -> None:
        self._file.close()


def classify(error: RocketError) -> Outcome:
    """What a send's error says about whether the message may be stored."""
    if isinstance(error, RemotingTimeout | ConnectionLost | SystemError_):
        return Outcome.UNKNOWN
    if isinstance(error, NetworkError | ServerError):
        return Outcome.FAILURE
    return Outcome.UNKNOWN


def store_address(offset_msg_id: str) -> str | None:
    """The ``ip:port`` of the broker that stored (and acked) a message, from its offset
    message id; None when the id does not read as one."""
    try:
        ip, port, _ = parse_offset_msg_id(offset_msg_id)
    except ValueError:
        return None
    return f"{ip}:{port}"


def make_body(value: str, size: int) -> bytes:
    head = f"{value}\n".encode()
    return head + b"x" * max(0, size - len(head))


def value_of(body: bytes) -> str | None:
    head, sep, _ = body.partition(b"\n")
    text = head.decode(errors="replace")
    return text if sep and text.isdigit() else None


async def poll_until(
    predicate: Callable[[], bool], timeout_s: float, *, every_s: float = 0.05
) -> bool:
    """Check ``predicate`` every ``every_s`` until it holds (True) or ``timeout_s`` passed.

    For states nothing can wake us on (another process's liveness, counters fed by
    several tasks).
    """
    with trio.move_on_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but time
            await trio.sleep(every_s)
        return True
    return predicate()


class ValueBits:
    """A set of the workload's values (decimal numbers from 1 up): one bit each, so ten
    minutes at 2,000 msg/s (1.2 M values) take 150 KB, not the ~100 MB of a set of strings.
    Values past ``limit`` (a stray message's body) are not kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._bits = bytearray()
        self._count = 0

    def add(self, value: str) -> bool:
        """Keep ``value``; True when it is new (and within the limit)."""
        number = int(value)
        if not 0 <= number <= self.limit:
            return False
        byte, bit = divmod(number, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        if self._bits[byte] >> bit & 1:
            return False
        self._bits[byte] |= 1 << bit
        self._count += 1
        return True

    def __contains__(self, value: str) -> bool:
        number = int(value)
        byte, bit = divmod(number, 8)
        return number >= 0 and byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)

    def __len__(self) -> int:
        return self._count


#: Values a run may use beyond ``max_messages`` (the harness's probe writes).
PROBE_VALUES = 100_000


@attrs.define
class Progress:
    """What the workload knows live (for draining and the verdict line), in memory that
    does not grow with the history (bits per value, counters)."""

    limit: int = 2 * PROBE_VALUES
    sent: int = 0
    acked: ValueBits = attrs.field(init=False)
    consumed: ValueBits = attrs.field(init=False)
    #: Trio clock of the last ack (-inf before the first).
    last_ack_s: float = float("-inf")
    deliveries: int = 0
    failed: int = 0
    unknown: int = 0
    _missing: int = 0

    def __attrs_post_init__(self) -> None:
        self.acked = ValueBits(self.limit)
        self.consumed = ValueBits(self.limit)

    def ack(self, value: str) -> None:
        if self.acked.add(value) and value not in self.consumed:
            self._missing += 1

    def consume(self, value: str) -> None:
        self.deliveries += 1
        if self.consumed.add(value) and value in self.acked:
            self._missing -= 1

    def missing(self) -> int:
        """Acked values not consumed yet."""
        return self._missing


class Workload:
    """Producers and consumers of one run; build it with ``open_workload``."""

    def __init__(
        self, config: WorkloadConfig, namesrv: str, recorder: Recorder, rng: random.Random
    ) -> None:
        self.config = config
        self.namesrv = namesrv
        self.recorder = recorder
        self.rng = rng
        self.progress = Progress(limit=config.max_messages + PROBE_VALUES)
        self._values = itertools.count(1)
        self._stop = trio.Event()

    # --- consumers ---------------------------------------------------------------------

    def listener_for(self, client_id: int) -> Listener:
        async def listener(messages: list[ReceivedMessage]) -> ConsumeResult:
            received = now_ms()
            for message in messages:
                value = value_of(message.body)
                if value is None:
                    continue  # not ours (a stray message on the topic)
                self.progress.consume(value)
                self.recorder.record(
                    Response(
                        client_id=client_id,
                        op=DEQUEUE,
                        outcome=Outcome.SUCCESS,
                        value=value,
                        sharding_key=message.properties.get(KEY_PROPERTY) or None,
                        timestamp_ms=received,
                        extra=make_extra(
                            queue=f"{message.queue.broker_name}:{message.queue.queue_id}",
                            offset=message.queue_offset,
                            reconsume=message.reconsume_times or None,
                        ),
                        e2e_latency_ms=max(-1, received - message.born_timestamp_ms),
                    )
                )
            return ConsumeResult.SUCCESS

        return listener

    # --- producers ---------------------------------------------------------------------

    def stop_producing(self) -> None:
        self._stop.set()

    async def produce(self, client_id: int, producer: Producer) -> None:
        """One producer's loop: its share of the rate until stopped or the count is reached."""
        config = self.config
        interval_s = config.producers / config.rate_per_s
        keys = [f"k{client_id}-{j}" for j in range(config.keys_per_producer)]
        next_s = trio.current_time() + self.rng.random() * interval_s
        turn = 0
        # Ordered sends wait for each answer: the per-key order is the acked order.
        slots = trio.Semaphore(1 if config.ordered else config.in_flight)
        async with trio.open_nursery() as sends:
            while not self._stop.is_set() and self.progress.sent < config.max_messages:
                next_s = max(next_s + interval_s, trio.current_time() - max(interval_s, CATCH_UP_S))
                with trio.move_on_at(next_s):
                    await self._stop.wait()
                if self._stop.is_set():
                    break
                key = keys[turn % len(keys)] if config.ordered else None
                turn += 1
                await slots.acquire()
                sends.start_soon(self._send_in_slot, slots, client_id, producer, key)

    async def _send_in_slot(
        self, slots: trio.Semaphore, client_id: int, producer: Producer, key: str | None
    ) -> None:
        try:
            await self._send_one(client_id, producer, key)
        finally:
            slots.release()

    async def _send_one(self, client_id: int, producer: Producer, key: str | None) -> None:
        value = str(next(self._values))
        self.progress.sent += 1
        message = Message(
            topic=self.config.topic,
            body=make_body(value, self.config.body_bytes),
            keys=(value,),
            properties={KEY_PROPERTY: key} if key else {},
        )
        self.recorder.record(
            Request(
                client_id=client_id,
                op=ENQUEUE,
                value=value,
                sharding_key=key,
                timestamp_ms=now_ms(),
            )
        )
        started = trio.current_time()
        result: SendResult | None = None
        error: RocketError | None = None
        try:
            result = await producer.send(message, sharding_key=key)
        except RocketError as exc:
            error = exc
        latency_ms = int((trio.current_time() - started) * 1000)
        if result is not None:
            outcome = Outcome.SUCCESS
            self.progress.ack(value)
            self.progress.last_ack_s = trio.current_time()
            extra = make_extra(
                status=result.status.value,
                queue=f"{result.queue.broker_name}:{result.queue.queue_id}",
                offset=result.queue_offset,
                store=store_address(result.offset_msg_id),
            )
        else:
            assert error is not None
            outcome = classify(error)
            if outcome is Outcome.FAILURE:
                self.progress.failed += 1
            else:
                self.progress.unknown += 1
            extra = make_extra(error=type(error).__name__, detail=str(error)[:120])
        self.recorder.record(
            Response(
                client_id=client_id,
                op=ENQUEUE,
                outcome=outcome,
                value=value,
                sharding_key=key,
                timestamp_ms=now_ms(),
                latency_ms=latency_ms,
                extra=extra,
            )
        )

    async def run_producers(self) -> None:
        """Every producer until ``stop_producing`` or the count bound."""
        config = self.config
        async with trio.open_nursery() as nursery:
            for i in range(config.producers):
                nursery.start_soon(self._run_producer, i)

    async def _run_producer(self, client_id: int) -> None:
        async with open_producer(
            self.namesrv,
            group=PRODUCER_GROUP,
            timeout_s=self.config.send_timeout_s,
            retries=self.config.send_retries,
            instance=f"chaos-p{client_id}",
            route_refresh_interval_s=self.config.route_refresh_interval_s,
            rng=random.Random(self.rng.random()),
        ) as producer:
            await self.produce(client_id, producer)

    # --- probe writes -------------------------------------------------------------------

    async def probe_writes(
        self, address: str, broker_name: str, *, count: int, every_s: float = 0.1
    ) -> list[str]:
        """Send ``count`` messages straight to the broker at ``address`` (no route, no
        retry), as a producer with a stale route would: each one recorded like any send
        (client ``PROBE_CLIENT``), so the checkers judge its answer. The statuses seen."""
        seen: list[str] = []
        async with open_client(
            name="chaos-probe", default_timeout_s=self.config.send_timeout_s
        ) as client:
            for i in range(count):
                if i:
                    await trio.sleep(every_s)
                seen.append(await self._probe_one(client, address, broker_name))
        return seen

    async def _probe_one(self, client: RemotingClient, address: str, broker_name: str) -> str:
        value = str(next(self._values))
        self.progress.sent += 1
        message = Message(
            topic=self.config.topic, body=make_body(value, self.config.body_bytes), keys=(value,)
        )
        uniq = f"{int(value):032X}"  # hex, as a uniq key reads
        header = SendMessageRequestHeaderV2(
            a=PRODUCER_GROUP, b=self.config.topic, c="TBW102", d=4, e=0, f=0,
            g=now_ms(), h=0, i=properties_to_string(message.wire_properties(uniq)),
            j=0, k=False, m=False, n=broker_name,
        )  # fmt: skip
        request = RemotingCommand.request(
            RequestCode.SEND_MESSAGE_V2, header.to_ext_fields(), body=message.body
        )
        self.recorder.record(
            Request(client_id=PROBE_CLIENT, op=ENQUEUE, value=value, timestamp_ms=now_ms())
        )
        started = trio.current_time()
        extra: str | None
        try:
            response = await client.call(address, request)
        except RocketError as exc:
            outcome, what = classify(exc), type(exc).__name__
            extra = make_extra(error=what, detail=str(exc)[:120], store=address)
        else:
            status = _PROBE_STATUS.get(response.code)
            if status is None:
                outcome, what = Outcome.FAILURE, f"code {response.code}"
                extra = make_extra(
                    error=f"code{response.code}",
                    detail=(response.remark or "")[:120],
                    store=address,
                )
            else:
                outcome, what = Outcome.SUCCESS, status
                reply = SendMessageResponseHeader.from_ext_fields(response.ext_fields)
                if status == "SEND_OK":  # a drain waits for these only
                    self.progress.ack(value)
                extra = make_extra(
                    status=status,
                    queue=f"{broker_name}:{reply.queue_id}",
                    offset=reply.queue_offset,
                    store=store_address(reply.msg_id) or address,
                )
        self.recorder.record(
            Response(
                client_id=PROBE_CLIENT,
                op=ENQUEUE,
                outcome=outcome,
                value=value,
                timestamp_ms=now_ms(),
                latency_ms=int((trio.current_time() - started) * 1000),
                extra=extra,
            )
        )
        return what

    # --- draining ----------------------------------------------------------------------

    async def drain(self, timeout_s: float, *, settle_s: float = 2.0) -> bool:
        """Wait until every acked value was consumed (True) or ``timeout_s`` passed.

        Waits ``settle_s`` more either way, so late redeliveries make it into the history.
        """
        done = await poll_until(lambda: not self.progress.missing(), timeout_s, every_s=0.2)
        await trio.sleep(settle_s)
        return done


@asynccontextmanager
async def open_workload(
    config: WorkloadConfig, namesrv: str, recorder: Recorder, rng: random.Random
) -> AsyncIterator[Workload]:
    """A workload whose consumers run for the whole block (producers: ``run_producers``)."""
    workload = Workload(config, namesrv, recorder, rng)
    async with trio.open_nursery() as nursery:
        ready = [trio.Event() for _ in range(config.consumers)]
        stop = trio.Event()
        for j in range(config.consumers):
            nursery.start_soon(_consumer, workload, config.producers + j, ready[j], stop)
        for event in ready:
            await event.wait()
        try:
            yield workload
        finally:
            workload.stop_producing()
            stop.set()


async def _consumer(
    workload: Workload, client_id: int, ready: trio.Event, stop: trio.Event
) -> None:
    config = workload.config
    async with open_push_consumer(
        workload.namesrv,
        group=CONSUMER_GROUP,
        listener=workload.listener_for(client_id),
        subscriptions={config.topic: "*"},
        consume_from=ConsumeFrom.FIRST,
        orderly=config.ordered,
        instance=f"chaos-c{client_id}",
    ):
        ready.set()
        await stop.wait()
