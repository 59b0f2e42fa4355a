"""The peer's client: NATS JetStream through nats-py, on asyncio, as a process of its own.

Usage (the matrix runs it; ``publish`` and ``consume`` print one JSON object,
``bench.matrix_cells.Figures``):

    python -m bench.nats_client setup   -s URL --stream S --replicas 3 [--warmup 2000]
    python -m bench.nats_client publish -s URL --stream S --inflight 64 [--duration 5] [--server-pid PID ...]
    python -m bench.nats_client consume -s URL --stream S [--batch 256] [--duration 5] [--server-pid PID ...]

Rules:
- The only module that imports ``nats`` (the ``bench`` extra) and asyncio: it runs in its
  own process, so the matrix's Trio process never mixes event loops, and its CPU is its
  own, measured as ``rmq bench produce`` measures ours (``os.times()`` of this process,
  the servers' from ``/proc/<pid>/stat``, over the measured window).
- The same client concurrency model as ``rmq bench produce``: ``--inflight`` tasks, each
  publishing ``--size`` random bytes and awaiting its PubAck before the next. At the
  deadline no publish starts; those in flight finish (each under ``--timeout``), and only
  acks before the deadline count towards msg/s (``bench.measure.Meter``).
- ``setup`` creates the stream (file storage, ``--replicas``), retrying until the
  JetStream cluster has a meta leader (under ``--timeout-total``), then publishes the
  warm-up messages, which are not measured.
- ``consume`` drains the stream with a durable pull consumer (AckAll: the last message of
  each fetch is acked, as a RocketMQ consumer commits an offset per pull), one fetch of up
  to ``--batch`` in flight, until it has every message the stream held at the start or
  ``--duration`` is over.
- Every wait has a deadline; the whole run is bounded by ``--timeout-total``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import APIError

from bench.matrix_cells import Figures, measured
from bench.measure import Meter, cpu_between, sample_cpu

#: Pause between attempts to create the stream while the cluster elects its meta leader.
SETUP_RETRY_S = 0.25
WARMUP_INFLIGHT = 64


def subject_of(stream: str) -> str:
    return f"bench.{stream.lower()}"


async def _connect(url: str, timeout_s: float) -> NATS:
    return await nats.connect(
        servers=[url], connect_timeout=timeout_s, max_reconnect_attempts=2, allow_reconnect=True
    )


async def setup(js: JetStreamContext, args: argparse.Namespace) -> None:
    config = StreamConfig(
        name=args.stream,
        subjects=[subject_of(args.stream)],
        storage=StorageType.FILE,
        num_replicas=args.replicas,
    )
    while True:
        try:
            await js.add_stream(config)
            break
        except (APIError, NatsTimeout):  # no meta leader yet: the cluster is electing
            await asyncio.sleep(SETUP_RETRY_S)
    if args.warmup > 0:
        meter = Meter.starting(_now())
        left: list[int] = [args.warmup]

        def more() -> bool:
            left[0] -= 1
            return left[0] >= 0

        await _publishers(js, args, meter, WARMUP_INFLIGHT, more)


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _publishers(
    js: JetStreamContext,
    args: argparse.Namespace,
    meter: Meter,
    inflight: int,
    more: Callable[[], bool],
) -> None:
    """``inflight`` tasks, each publishing and awaiting its ack while ``more()``."""
    subject, body = subject_of(args.stream), os.urandom(args.size)

    async def worker() -> None:
        while more():
            started = _now()
            try:
                await js.publish(subject, body, timeout=args.timeout, stream=args.stream)
            except APIError as exc:
                meter.record_failed(_now(), response=True, kind=type(exc).__name__)
            except NatsError as exc:
                meter.record_failed(_now(), response=False, kind=type(exc).__name__)
            else:
                now = _now()
                meter.record_ok(now, now - started, 1, len(body))

    await asyncio.gather(*(worker() for _ in range(inflight)))


async def publish(js: JetStreamContext, args: argparse.Namespace) -> Figures:
    meter = Meter.starting(_now())
    start = sample_cpu(args.server_pid)
    deadline = meter.start_s + args.duration
    # Acks after the deadline are counted, but not towards msg/s (as rmq bench produce).
    timer = asyncio.get_running_loop().call_at(deadline, meter.finish, deadline)
    await _publishers(js, args, meter, args.inflight, lambda: _now() < deadline)
    timer.cancel()
    meter.finish(_now())
    return measured(meter, cpu_between(start, sample_cpu(args.server_pid)), args.server_pid)


async def consume(js: JetStreamContext, args: argparse.Namespace) -> Figures:
    info = await js.stream_info(args.stream)
    total = info.state.messages
    config = ConsumerConfig(
        durable_name="bench-pull",
        ack_policy=AckPolicy.ALL,
        deliver_policy=DeliverPolicy.ALL,
        max_ack_pending=max(1000, 4 * args.batch),
    )
    sub = await js.pull_subscribe(
        subject_of(args.stream), durable="bench-pull", stream=args.stream, config=config
    )
    meter = Meter.starting(_now(), latency_per_message=False)
    start = sample_cpu(args.server_pid)
    deadline = meter.start_s + args.duration
    while meter.msgs < total and _now() < deadline:
        started = _now()
        try:
            msgs = await sub.fetch(args.batch, timeout=args.timeout)
        except NatsTimeout:
            meter.record_failed(_now(), response=False, kind="fetch timeout")
            break
        now = _now()
        await msgs[-1].ack()
        meter.record_ok(now, now - started, len(msgs), sum(len(m.data) for m in msgs))
    meter.finish(_now())
    return measured(meter, cpu_between(start, sample_cpu(args.server_pid)), args.server_pid)


async def run(args: argparse.Namespace) -> dict[str, Any] | None:
    commands: dict[str, Callable[[JetStreamContext, argparse.Namespace], Awaitable[Any]]] = {
        "setup": setup,
        "publish": publish,
        "consume": consume,
    }
    nc = await _connect(args.server, args.timeout)
    try:
        result = await commands[args.command](nc.jetstream(timeout=args.timeout), args)
    finally:
        await nc.close()
    return result.to_json() if isinstance(result, Figures) else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.nats_client", description=__doc__)
    parser.add_argument("command", choices=("setup", "publish", "consume"))
    parser.add_argument("-s", "--server", required=True, help="nats://host:port")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=3.0, help="per request (s)")
    parser.add_argument("--timeout-total", type=float, default=120.0, help="whole run (s)")
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = asyncio.run(asyncio.wait_for(run(args), args.timeout_total))
    except (NatsError, OSError, TimeoutError) as exc:
        raise SystemExit(f"error: nats {args.command}: {type(exc).__name__}: {exc}") from None
    if result is not None:
        json.dump(result, sys.stdout)
        print()


if __name__ == "__main__":
    main()
