"""Timer-message benchmark: the broker's memory with many pending timers, and its restart.

A real NameServer and broker (``rmq namesrv`` / ``rmq broker`` processes); this process
sends ``--count`` timer messages through the SDK (``Message.delay_s``, delays spread
evenly over ``--min-delay``..``--max-delay`` seconds, so every one stays pending), with
``--concurrency`` sends in flight. It reports:

- the broker's VmRSS before and after the sends, and the difference per pending timer;
- what the broker says of its timers (GET_BROKER_RUNTIME_INFO: timerPending,
  timerInMemory, timerRescans);
- a restart (SIGTERM, start again on the same store): seconds until the broker is ready
  and its timer index has rescanned the pending entries, and VmRSS after that.

Usage:
    python -m bench.timer_bench [--count 100000] [--concurrency 64] [--min-delay 600]
        [--max-delay 3600] [--size 64] [--dir D] [--out F.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from bench.measure import proc_memory
from bench.servers import BROKER_READY, Server, namesrv_process, rmq_argv, server_process
from client.admin import open_admin
from client.message import Message
from client.producer import open_producer

TOPIC = "TimerBench"
MIB = 1024 * 1024


@asynccontextmanager
async def broker(namesrv: str, store: Path) -> AsyncIterator[Server]:
    argv = rmq_argv(
        "broker", "-n", namesrv, "--port", "0", "--dir", str(store), "--log-level", "WARNING"
    )
    async with server_process("broker", argv, BROKER_READY) as server:
        yield server


async def runtime(namesrv: str, addr: str) -> dict[str, str]:
    async with open_admin(namesrv) as admin:
        return await admin.broker_status(addr)


def rss_mib(pid: int) -> float:
    return proc_memory(pid)["VmRSS"] / MIB


def anon_mib(pid: int) -> float:
    return proc_memory(pid)["RssAnon"] / MIB


async def send_timers(namesrv: str, args: argparse.Namespace) -> float:
    """Send the timers; the send rate (msg/s)."""
    spread_s = max(args.max_delay - args.min_delay, 0)
    numbers = itertools.count()
    body = b"t" * args.size
    async with open_producer(namesrv, group="timer-bench", auto_batch=False) as producer:

        async def worker() -> None:
            while (n := next(numbers)) < args.count:
                delay_s = args.min_delay + (n * 7919 % args.count) / args.count * spread_s
                await producer.send(Message(topic=TOPIC, body=body, delay_s=delay_s))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(args.concurrency):
                nursery.start_soon(worker)
        return float(args.count / (time.perf_counter() - started))


async def wait_rescanned(namesrv: str, addr: str, count: int, timeout_s: float) -> dict[str, str]:
    """Until the restarted broker's index rescanned the timer log (and counts every one)."""
    with trio.fail_after(timeout_s):
        while True:
            info = await runtime(namesrv, addr)
            if int(info.get("timerRescans", "0")) >= 1:
                assert int(info["timerPending"]) == count, info
                return info
            await trio.sleep(0.2)


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    store = root / "broker"
    async with namesrv_process() as ns:
        async with broker(ns.addr, store) as b:
            async with open_admin(ns.addr) as admin:
                await admin.create_topic(
                    TOPIC, broker_addr=b.addr, read_queue_nums=4, write_queue_nums=4
                )
            idle_mib, idle_anon = rss_mib(b.pid), anon_mib(b.pid)
            rate = await send_timers(ns.addr, args)
            await trio.sleep(2.0)  # the index takes the last entries in
            loaded = await runtime(ns.addr, b.addr)
            loaded_mib, loaded_anon = rss_mib(b.pid), anon_mib(b.pid)
        started = time.perf_counter()
        async with broker(ns.addr, store) as b:
            ready_s = time.perf_counter() - started
            after = await wait_rescanned(ns.addr, b.addr, args.count, 120.0)
            rescanned_s = time.perf_counter() - started
            restarted_mib = rss_mib(b.pid)
    return {
        "count": args.count,
        "sendRatePerSec": round(rate),
        "rssIdleMiB": round(idle_mib, 1),
        "rssWithPendingMiB": round(loaded_mib, 1),
        "rssBytesPerPendingTimer": round((loaded_mib - idle_mib) * MIB / args.count, 1),
        "rssAnonIdleMiB": round(idle_anon, 1),
        "rssAnonWithPendingMiB": round(loaded_anon, 1),
        "timerPending": int(loaded.get("timerPending", "-1")),
        "timerInMemory": int(loaded.get("timerInMemory", "-1")),
        "restartReadyS": round(ready_s, 2),
        "restartRescannedS": round(rescanned_s, 2),
        "rssAfterRestartMiB": round(restarted_mib, 1),
        "timerInMemoryAfterRestart": int(after.get("timerInMemory", "-1")),
        "timerPendingAfterRestart": int(after.get("timerPending", "-1")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--min-delay", type=float, default=600.0)
    parser.add_argument("--max-delay", type=float, default=3600.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="timer-bench-"))
    try:
        result = trio.run(run, args, root)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    for key, value in result.items():
        print(f"{key:28} {value}")
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
