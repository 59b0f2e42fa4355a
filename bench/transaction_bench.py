"""Transactional send rate against plain send, with CPU per message, on real processes.

Usage (from the repository root, with the project's venv):

    python -m bench.transaction_bench [--count 3000] [-w 32] [--size 256] [--out F.json]

Rules:
- Starts ``rmq namesrv`` and one ``rmq broker`` (ASYNC_FLUSH) in a temporary directory,
  creates the topic, and runs three phases of ``--count`` messages each, ``-w`` sends in
  flight: plain ``send`` with natural batching off (one request per message, what a
  transaction also costs at least), plain ``send`` as shipped (natural batching on), and
  ``send_in_transaction`` whose local transaction commits at once (a half message, then
  END_TRANSACTION: two requests and three CommitLog records per message).
- Measured per phase: messages per second, p50/p99 latency of one call (a transaction:
  both requests), and CPU microseconds per message of this process and of the broker
  (user + system from /proc) between the first call and the last answer.
- Every phase checks its messages arrived: the topic's queues grow by ``--count``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from bench.broker_bench import broker_process
from bench.measure import LatencyHistogram, cpu_between, sample_cpu, to_us, us_per_msg
from bench.servers import namesrv_process
from client.admin import open_admin
from client.message import Message, SendResult
from client.producer import open_producer
from client.transaction import LocalTransactionState, open_transaction_producer

TOPIC = "TxBench"
QUEUES = 8


def commit_now(message: Message, result: SendResult) -> LocalTransactionState:
    return LocalTransactionState.COMMIT_MESSAGE


def never_checked(message: Any) -> LocalTransactionState:
    return LocalTransactionState.COMMIT_MESSAGE


async def phase(
    name: str,
    send: Callable[[Message], Awaitable[object]],
    *,
    count: int,
    workers: int,
    size: int,
    broker_pid: int,
) -> dict[str, Any]:
    body = b"x" * size
    latency = LatencyHistogram()
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = trio.current_time()
            await send(Message(topic=TOPIC, body=body))
            latency.record(to_us(trio.current_time() - started))

    start = sample_cpu([broker_pid])
    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    elapsed_s = trio.current_time() - began
    use = cpu_between(start, sample_cpu([broker_pid]))
    broker_cpu = use.others.total_s if use.others is not None else None
    return {
        "phase": name,
        "messages": count,
        "msgPerSec": round(count / elapsed_s, 1),
        "p50Ms": latency.ms_at(50),
        "p99Ms": latency.ms_at(99),
        "clientCpuUsPerMsg": us_per_msg(use.own.total_s, count),
        "brokerCpuUsPerMsg": None if broker_cpu is None else us_per_msg(broker_cpu, count),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tx-bench-") as tmp:
        async with (
            namesrv_process() as namesrv,
            broker_process(
                namesrv.addr, Path(tmp) / "store", name="broker-a", flush="ASYNC_FLUSH",
                segment_bytes=None,
            ) as broker,
            open_admin(namesrv.addr) as admin,
        ):  # fmt: skip
            with trio.fail_after(60):
                await admin.create_topic(
                    TOPIC, broker_addr=broker.addr, read_queue_nums=QUEUES, write_queue_nums=QUEUES
                )
            common = {"count": args.count, "workers": args.workers, "size": args.size}
            common["broker_pid"] = broker.pid
            async with open_producer(namesrv.addr, group="BenchPlain", auto_batch=False) as p:
                await p.send(Message(topic=TOPIC, body=b"warm-up"))
                results.append(await phase("plain (one request each)", p.send, **common))
            async with open_producer(namesrv.addr, group="BenchBatched") as p:
                results.append(await phase("plain (natural batching)", p.send, **common))
            async with open_transaction_producer(
                namesrv.addr, group="BenchTx", checker=never_checked
            ) as tx:

                async def send_tx(message: Message) -> object:
                    result = await tx.send_in_transaction(message, commit_now)
                    assert result.end_error is None, result.end_error
                    return result

                results.append(await phase("transactional (commit)", send_tx, **common))
            total = sum(q.max_offset for q in await admin.topic_status(TOPIC))
            expected = 1 + 3 * args.count
            assert total == expected, f"{total} messages stored, expected {expected}"
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transaction_bench", description=__doc__)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("-w", "--workers", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = trio.run(run, args)
    print(
        f"{'phase':28} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'client us':>10} {'broker us':>10}"
    )
    for r in results:
        print(
            f"{r['phase']:28} {r['msgPerSec']:>9} {r['p50Ms']:>8} {r['p99Ms']:>8} "
            f"{r['clientCpuUsPerMsg']:>10} {r['brokerCpuUsPerMsg']:>10}"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
