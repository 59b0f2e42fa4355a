"""The SDK's own CPU per message against a running cluster: producer or push consumer alone.

    .venv/bin/python -m bench.micro.sdk_bench produce -n 127.0.0.1:9876 [-t rmq-bench] [-w 64] [-d 5]
    .venv/bin/python -m bench.micro.sdk_bench consume -n 127.0.0.1:9876 [-t rmq-bench] [--count 100000]

``produce``: ``-w`` tasks each ``await producer.send(Message(...))`` in a loop for ``-d``
seconds (1 KiB bodies by default, autoBatch on); ``consume``: a push consumer of a new
group reads ``--count`` stored messages from the first, with a listener that only counts.
No meter, no per-second lines: the figure is this process's CPU time
(``time.process_time``) per message over the run, which, unlike msg/s over loopback,
holds on a machine shared with other work; run the old and the new tree interleaved
(``PYTHONPATH``). The result is one JSON line (``requests`` and ``perRequest`` tell how
the producer batched).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from typing import Any

import trio

from client.consumer import ConsumeFrom, ConsumeResult, open_push_consumer
from client.message import Message, ReceivedMessage
from client.producer import open_producer


async def produce(args: argparse.Namespace) -> dict[str, Any]:
    body = os.urandom(args.size)
    sent = 0
    stop = False
    async with open_producer(args.namesrv, group="sdk_bench_producer") as producer:
        await producer.send(Message(topic=args.topic, body=body))  # route and connection

        async def worker() -> None:
            nonlocal sent
            while not stop:
                await producer.send(Message(topic=args.topic, body=body))
                sent += 1

        before = producer.statistics()
        wall, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(args.workers):
                nursery.start_soon(worker)
            await trio.sleep(args.duration)
            stop = True
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        requests = producer.statistics().requests - before.requests
    return {
        "msgs": sent,
        "msgsPerSecond": round(sent / wall),
        "cpuUsPerMsg": round(cpu / max(1, sent) * 1e6, 1),
        "requests": requests,
        "perRequest": round(sent / max(1, requests), 1),
    }


async def consume(args: argparse.Namespace) -> dict[str, Any]:
    seen = 0
    marks: list[tuple[float, float]] = []
    done = trio.Event()

    async def listener(messages: list[ReceivedMessage]) -> ConsumeResult:
        nonlocal seen
        if not seen:
            marks.append((time.perf_counter(), time.process_time()))
        seen += len(messages)
        if seen >= args.count and not done.is_set():
            marks.append((time.perf_counter(), time.process_time()))
            done.set()
        return ConsumeResult.SUCCESS

    async with open_push_consumer(
        args.namesrv,
        group=f"sdk_bench_{secrets.token_hex(4)}",
        listener=listener,
        subscriptions={args.topic: "*"},
        consume_from=ConsumeFrom.FIRST,
    ):
        with trio.fail_after(args.timeout):
            await done.wait()
    (wall0, cpu0), (wall1, cpu1) = marks
    return {
        "msgs": seen,
        "msgsPerSecond": round(seen / (wall1 - wall0)),
        "cpuUsPerMsg": round((cpu1 - cpu0) / seen * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="The SDK's CPU per message (module docstring).")
    parser.add_argument("mode", choices=("produce", "consume"))
    parser.add_argument("-n", "--namesrv", default=os.environ.get("NAMESRV_ADDR", "127.0.0.1:9876"))
    parser.add_argument("-t", "--topic", default="rmq-bench")
    parser.add_argument("-w", "--workers", type=int, default=64)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("-s", "--size", type=int, default=1024)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=120.0, help="consume: give up after")
    args = parser.parse_args()
    result = trio.run(produce if args.mode == "produce" else consume, args)
    print(json.dumps({"mode": args.mode} | result))


if __name__ == "__main__":
    main()
