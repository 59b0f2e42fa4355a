"""Micro-benchmark of replication alone: one master and its slave stores in one process.

Usage: python -m bench.micro.ha_bench [--count N] [--size BYTES] [--concurrency K] [--dir D]
                                      [--slaves S] [--confirmed] [--sync-only] [--apply-only]

Runs, each on fresh store directories, HAMaster and ``--slaves`` HASlaves (default 1) over
loopback (default HAConfig: 32 KiB batches, all-ack), every store ASYNC_FLUSH;
``--confirmed``: stores dispatch only confirmed data, as in controller mode:
- sync: K concurrent tasks each doing put + ``notify_appended`` + ``wait_replicated``
  (pipelined sync double write, all-ack) until N are acknowledged;
- async: N puts back to back, then the time until the slave holds everything.
- apply (``--apply-only``): a slave's store work alone, without sockets (validation and
  write of each transfer, then the dispatch its confirm releases), CPU per record.
Prints msg/s, MB/s, latency percentiles of the sync waits and this process's CPU per sync
write (master and slaves together: ``time.process_time``, steady on a shared machine,
unlike msg/s), and a final JSON line.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.measure import LatencyHistogram, to_us, us_to_ms
from bench.micro import common
from bench.micro.common import store_records
from broker.ha import EpochFile, HAConfig, HAMaster, HASlave, ReplicaOutcome
from broker.store.config import FlushMode, StoreConfig
from broker.store.store import MessageStore


@attrs.define
class _Pair:
    master_store: MessageStore
    slave_store: MessageStore
    master: HAMaster


def _store(directory: Path, name: str, *, confirmed: bool = False) -> MessageStore:
    config = StoreConfig(
        flush_mode=FlushMode.ASYNC_FLUSH,
        min_free_disk_bytes=64 * 1024 * 1024,
        node_name=name,
        dispatch_confirmed_only=confirmed,
    )
    return MessageStore.open(directory / name, config)


@asynccontextmanager
async def _pair(
    directory: Path, *, slaves: int = 1, confirmed: bool = False
) -> AsyncIterator[_Pair]:
    ms = _store(directory, "master", confirmed=confirmed)
    stores = [_store(directory, f"slave{i}", confirmed=confirmed) for i in range(1, slaves + 1)]
    config = HAConfig()
    master = HAMaster(ms, EpochFile.load(ms.store_dir), config, node_name="master")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ms.run)
            port = await nursery.start(master.serve)
            for i, ss in enumerate(stores, start=1):
                await nursery.start(ss.run)
                slave = HASlave(
                    ss,
                    EpochFile.load(ss.store_dir),
                    config,
                    broker_id=i,
                    node_name=f"slave{i}",
                    master_address=f"127.0.0.1:{port}",
                )
                await nursery.start(slave.run)
            with trio.fail_after(10):
                while len(master.sync_state_set[0]) != slaves + 1:  # noqa: ASYNC110 - polls
                    await trio.sleep(0.01)
            yield _Pair(ms, stores[0], master)
            nursery.cancel_scope.cancel()
    finally:
        await ms.close()
        for ss in stores:
            await ss.close()


async def bench_sync(
    directory: Path,
    count: int,
    size: int,
    concurrency: int,
    *,
    slaves: int = 1,
    confirmed: bool = False,
) -> dict[str, float]:
    msgs = store_records(size)
    latencies = LatencyHistogram()
    outcomes: dict[ReplicaOutcome, int] = dict.fromkeys(ReplicaOutcome, 0)
    remaining = [count]
    async with _pair(directory, slaves=slaves, confirmed=confirmed) as p:

        async def sender() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                began = time.perf_counter()
                result = p.master_store.put_message(msgs[remaining[0] % len(msgs)])
                p.master.notify_appended()
                outcome = await p.master.wait_replicated(result.end_offset, 3.0)
                latencies.record(to_us(time.perf_counter() - began))
                outcomes[outcome] += 1

        start, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as senders:
            for _ in range(concurrency):
                senders.start_soon(sender)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        put_bytes = p.master_store.statistics().put_bytes
        assert p.slave_store.max_physical_offset == p.master_store.max_physical_offset
    row = {
        "msg_per_s": count / elapsed,
        "mb_per_s": put_bytes / elapsed / 1e6,
        "p50_ms": us_to_ms(latencies.value_at(50)),
        "p99_ms": us_to_ms(latencies.value_at(99)),
        "max_ms": us_to_ms(latencies.max_us),
        "ok": outcomes[ReplicaOutcome.OK],
        "timeouts": outcomes[ReplicaOutcome.TIMEOUT],
        "no_slave": outcomes[ReplicaOutcome.NO_SLAVE],
        "cpu_us_per_msg": cpu / count * 1e6,
    }
    print(
        f"  sync: {count} msgs x {size} B, {concurrency} waiters, {slaves} slaves: "
        f"{row['msg_per_s']:,.0f} msg/s, {row['mb_per_s']:.1f} MB/s, p50 {row['p50_ms']:.2f} "
        f"ms, p99 {row['p99_ms']:.2f} ms, max {row['max_ms']:.1f} ms, {row['timeouts']} "
        f"timeouts, CPU {row['cpu_us_per_msg']:.1f} us/msg"
    )
    return row


async def bench_async(directory: Path, count: int, size: int) -> dict[str, float]:
    msgs = store_records(size)
    async with _pair(directory) as p:
        start = time.perf_counter()
        for i in range(count):
            p.master_store.put_message(msgs[i % len(msgs)])
            p.master.notify_appended()
            if i % 256 == 255:
                await trio.lowlevel.checkpoint()  # let the streamer run, as a server would
        put_done = time.perf_counter() - start
        with trio.fail_after(120):
            while p.slave_store.max_physical_offset < p.master_store.max_physical_offset:  # noqa: ASYNC110
                await trio.sleep(0.001)
        elapsed = time.perf_counter() - start
        put_bytes = p.master_store.statistics().put_bytes
    row = {
        "msg_per_s": count / elapsed,
        "mb_per_s": put_bytes / elapsed / 1e6,
        "put_s": put_done,
        "replicated_s": elapsed,
    }
    print(
        f" async: {count} msgs x {size} B: replicated in {elapsed:.2f} s "
        f"(puts took {put_done:.2f} s) = {row['msg_per_s']:,.0f} msg/s, "
        f"{row['mb_per_s']:.1f} MB/s"
    )
    return row


async def bench_apply(directory: Path, count: int, size: int, rounds: int = 3) -> dict[str, float]:
    """A slave's store work alone, no sockets: ``append_raw`` of the master's log in
    transfers of ``HAConfig.batch_bytes`` (validation and write) with the slave's own
    record check, then the confirm move that dispatches them; CPU per record, best of
    ``rounds`` fresh slave stores."""
    master = _store(directory, "master", confirmed=True)
    msgs = store_records(size)
    for i in range(count):
        master.put_message(msgs[i % len(msgs)])
    batches, pos = [], master.min_physical_offset
    while pos < master.max_physical_offset:
        data = master.read_raw(pos, HAConfig().batch_bytes)
        batches.append((pos, data))
        pos += len(data)
    await master.close()
    best_append = best_dispatch = float("inf")
    for r in range(rounds):
        store = _store(directory, f"slave{r}", confirmed=True)
        check = HASlave(store, EpochFile.load(store.store_dir), broker_id=1)._check_record
        append_s = dispatch_s = 0.0
        for offset, data in batches:
            t0 = time.process_time()
            store.append_raw(data, offset, check=check)
            t1 = time.process_time()
            store.set_confirm_offset(offset + len(data))
            store.write_queue_entries()
            append_s, dispatch_s = append_s + t1 - t0, dispatch_s + time.process_time() - t1
        await store.close()
        best_append, best_dispatch = min(best_append, append_s), min(best_dispatch, dispatch_s)
    row = {
        "append_us_per_msg": best_append / count * 1e6,
        "dispatch_us_per_msg": best_dispatch / count * 1e6,
    }
    print(
        f" apply: {count} msgs x {size} B in {len(batches)} transfers: append_raw "
        f"{row['append_us_per_msg']:.2f} us/msg, dispatch {row['dispatch_us_per_msg']:.2f} "
        f"us/msg (best of {rounds})"
    )
    return row


async def _runs(parent: Path, args: argparse.Namespace) -> dict[str, Any]:
    if args.apply_only:
        return {"apply": await bench_apply(parent / "apply", args.count, args.size)}
    sync = await bench_sync(
        parent / "sync",
        args.count,
        args.size,
        args.concurrency,
        slaves=args.slaves,
        confirmed=args.confirmed,
    )
    if args.sync_only:
        return {"sync": sync}
    return {"sync": sync, "async": await bench_async(parent / "async", args.count, args.size)}


def _more_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slaves", type=int, default=1, help="slaves of the sync run")
    parser.add_argument(
        "--confirmed", action="store_true", help="dispatch only confirmed data (controller mode)"
    )
    parser.add_argument("--sync-only", action="store_true", help="skip the async run")
    parser.add_argument(
        "--apply-only", action="store_true", help="only a slave's store work, in process"
    )


def main() -> None:
    common.main(
        __doc__.splitlines()[0],
        _runs,
        prefix="ha-bench-",
        default_count=50_000,
        more_args=_more_args,
    )


if __name__ == "__main__":
    main()
