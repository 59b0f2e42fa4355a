"""The official RocketMQ 5 Python client through ``rmq proxy`` against the SDK over remoting.

``python -m bench.proxy_compare [--count N] [--concurrency C] [--out FILE.json]`` starts a
NameServer, a broker and a proxy as real processes (launcher/), then measures on one topic:

- send: the official ``Producer`` (gRPC -> proxy -> remoting) one send at a time and
  ``--concurrency`` sends in flight (``send_async``); the SDK ``Producer`` (remoting) the
  same two ways;
- receive: pop consumption of everything sent, each message acked, by the official
  ``SimpleConsumer`` (receive 32, ack each) and by the SDK's ``SimpleConsumer`` (the same
  broker requests without the proxy hop).

Prints one line per measurement and a JSON summary. The official client runs on worker
threads (it is synchronous and starts its own threads); the SDK on this Trio loop.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from client.admin import open_admin
from client.consumer.simple import open_simple_consumer
from client.message import Message
from client.producer import open_producer
from launcher.child import managed_process
from launcher.command import rmq_argv
from launcher.ready import BROKER_READY, NAMESRV_READY, PROXY_READY

TOPIC = "ProxyBench"
BODY = b"x" * 1024


def official_send(proxy: str, topic: str, count: int, concurrency: int) -> float:
    """Messages per second sent by the official client (``concurrency`` 1: sync sends)."""
    from rocketmq import ClientConfiguration, Credentials
    from rocketmq import Message as GrpcMessage
    from rocketmq import Producer as GrpcProducer

    producer = GrpcProducer(ClientConfiguration(proxy, Credentials()), (topic,))
    producer.startup()
    try:

        def message() -> Any:
            m = GrpcMessage()
            m.topic = topic
            m.body = BODY
            return m

        start = time.perf_counter()
        if concurrency == 1:
            for _ in range(count):
                producer.send(message())
        else:
            pending: set[concurrent.futures.Future[Any]] = set()
            for _ in range(count):
                if len(pending) >= concurrency:
                    done, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for f in done:
                        f.result()
                pending.add(producer.send_async(message()))
            for f in concurrent.futures.as_completed(pending):
                f.result()
        return count / (time.perf_counter() - start)
    finally:
        producer.shutdown()


def official_receive(proxy: str, topic: str, group: str, count: int) -> float:
    from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

    consumer = SimpleConsumer(
        ClientConfiguration(proxy, Credentials()),
        group,
        {topic: FilterExpression("*")},
        await_duration=2,
    )
    consumer.startup()
    try:
        got = 0
        start = time.perf_counter()
        deadline = start + 300
        while got < count and time.perf_counter() < deadline:
            messages = consumer.receive(32, 60)
            for m in messages:
                consumer.ack(m)
            got += len(messages)
        return got / (time.perf_counter() - start)
    finally:
        consumer.shutdown()


async def sdk_send(namesrv: str, count: int, concurrency: int) -> float:
    async with open_producer(namesrv, auto_batch=False) as producer:
        for _ in range(20):  # routes and connections first, as the official client's startup
            await producer.send(Message(topic=TOPIC, body=BODY))
        start = trio.current_time()
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await producer.send(Message(topic=TOPIC, body=BODY))

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return count / (trio.current_time() - start)


async def sdk_receive(namesrv: str, group: str, count: int) -> float:
    async with open_simple_consumer(namesrv, group=group) as consumer:
        got = 0
        start = trio.current_time()
        with trio.move_on_after(300):
            while got < count:
                popped = await consumer.receive(TOPIC, max_nums=32, invisible_s=60, long_poll_s=2)
                for p in popped:
                    await consumer.ack(p)
                got += len(popped)
        return got / (trio.current_time() - start)


async def main(count: int, concurrency: int, out: Path | None) -> None:
    results: dict[str, float] = {}

    def report(name: str, rate: float) -> None:
        results[name] = round(rate, 1)
        print(f"{name:48s} {rate:9.1f} msg/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        async with managed_process(
            rmq_argv("namesrv", "--port", "0"), name="namesrv", ready=NAMESRV_READY
        ) as ns:
            broker_argv = rmq_argv("broker", "-n", ns.address, "--port", "0", "--dir", tmp)
            async with (
                managed_process(broker_argv, name="broker", ready=BROKER_READY),
                managed_process(
                    rmq_argv("proxy", "-n", ns.address, "--port", "0", "--log-level", "WARNING"),
                    name="proxy",
                    ready=PROXY_READY,
                ) as proxy,
                open_admin(ns.address) as admin,
            ):
                await admin.create_topic(
                    TOPIC, cluster="DefaultCluster", read_queue_nums=4, write_queue_nums=4
                )
                report("sdk remoting send (1 in flight)", await sdk_send(ns.address, count, 1))
                report(
                    f"sdk remoting send ({concurrency} in flight)",
                    await sdk_send(ns.address, count, concurrency),
                )
                rate = await trio.to_thread.run_sync(official_send, proxy.address, TOPIC, count, 1)
                report("official client via proxy send (sync)", rate)
                rate = await trio.to_thread.run_sync(
                    official_send, proxy.address, TOPIC, count, concurrency
                )
                report(f"official client via proxy send ({concurrency} in flight)", rate)
                total = 4 * count + 40
                report(
                    "sdk remoting pop receive+ack", await sdk_receive(ns.address, "G_sdk", total)
                )
                rate = await trio.to_thread.run_sync(
                    official_receive, proxy.address, TOPIC, "G_grpc", total
                )
                report("official client via proxy receive+ack", rate)
    summary = {"count": count, "concurrency": concurrency, "body_bytes": len(BODY), **results}
    print(json.dumps(summary))
    if out is not None:
        out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.count < 1 or args.concurrency < 1:
        sys.exit("--count and --concurrency must be positive")
    trio.run(main, args.count, args.concurrency, args.out)
