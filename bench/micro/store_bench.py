"""Micro-benchmark of the message store alone (no network): append and read throughput.

Usage: python -m bench.micro.store_bench [--count N] [--size BYTES] [--concurrency K] [--dir D]

Runs, each on a fresh store directory:
- ASYNC_FLUSH: N ``put_message`` calls back to back (the background flusher fsyncs every
  500 ms);
- SYNC_FLUSH: K concurrent tasks each doing put + ``wait_flushed`` until N are acknowledged
  (group commit: one fsync serves every waiter pending when it starts);
- pull: read everything back with ``get_messages`` (32 per call).
Prints msg/s, MB/s and fsync counts per run, and a final JSON line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import trio

from bench.micro import common
from bench.micro.common import QUEUES, TOPIC, store_records
from broker.store.config import FlushMode, StoreConfig
from broker.store.pull import GetMessageStatus
from broker.store.store import MessageStore


def _config(mode: FlushMode) -> StoreConfig:
    return StoreConfig(flush_mode=mode, min_free_disk_bytes=64 * 1024 * 1024)


def _report(
    name: str, count: int, put_bytes: int, elapsed_s: float, store: MessageStore
) -> dict[str, float]:
    stats = store.statistics()
    row = {
        "msg_per_s": count / elapsed_s,
        "mb_per_s": put_bytes / elapsed_s / 1e6,
        "us_per_msg": elapsed_s / count * 1e6,
        "flush_rounds": stats.flush_rounds,
        "fsync_calls": stats.fsync_calls,
    }
    print(
        f"{name:>6}: {count} msgs in {elapsed_s:.2f} s = {row['msg_per_s']:,.0f} msg/s, "
        f"{row['mb_per_s']:.1f} MB/s, {row['us_per_msg']:.1f} us/msg, "
        f"{stats.flush_rounds} flush rounds, {stats.fsync_calls} fsync calls"
    )
    return row


async def bench_async(directory: Path, count: int, size: int) -> dict[str, float]:
    msgs = store_records(size)
    store = MessageStore.open(directory, _config(FlushMode.ASYNC_FLUSH))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        start = time.perf_counter()
        for i in range(count):
            store.put_message(msgs[i % len(msgs)])
            if i % 1000 == 999:
                await trio.lowlevel.checkpoint()  # let the flusher run, as a server would
        elapsed = time.perf_counter() - start
        row = _report("async", count, store.statistics().put_bytes, elapsed, store)
        await store.close()
    return row


async def bench_sync(directory: Path, count: int, size: int, concurrency: int) -> dict[str, float]:
    msgs = store_records(size)
    store = MessageStore.open(directory, _config(FlushMode.SYNC_FLUSH))
    remaining = [count]
    timeouts = [0]

    async def sender() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            result = store.put_message(msgs[remaining[0] % len(msgs)])
            if not await store.wait_flushed(result.end_offset, timeout_s=5.0):
                timeouts[0] += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        start = time.perf_counter()
        async with trio.open_nursery() as senders:
            for _ in range(concurrency):
                senders.start_soon(sender)
        elapsed = time.perf_counter() - start
        row = _report("sync", count, store.statistics().put_bytes, elapsed, store)
        row["flush_timeouts"] = timeouts[0]
        row["msgs_per_flush_round"] = count / max(1, store.statistics().flush_rounds)
        await store.close()
    return row


async def bench_pull(directory: Path) -> dict[str, float]:
    store = MessageStore.open(directory, _config(FlushMode.ASYNC_FLUSH))
    start = time.perf_counter()
    count = 0
    nbytes = 0
    for q in range(QUEUES):
        offset = 0
        while True:
            res = store.get_messages("bench", TOPIC, q, offset, max_count=32, max_bytes=256 * 1024)
            if res.status is not GetMessageStatus.FOUND:
                break
            count += res.message_count
            nbytes += res.total_bytes
            offset = res.next_begin_offset
    elapsed = time.perf_counter() - start
    row = _report("pull", count, nbytes, elapsed, store)
    await store.close()
    return row


async def _runs(parent: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "async": await bench_async(parent / "async", args.count, args.size),
        "sync": await bench_sync(parent / "sync", args.count, args.size, args.concurrency),
        "pull": await bench_pull(parent / "async"),
    }


def main() -> None:
    common.main(__doc__.splitlines()[0], _runs, prefix="store-bench-", default_count=100_000)


if __name__ == "__main__":
    main()
