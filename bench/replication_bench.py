"""Replication benchmark: real ``rmq namesrv`` / ``rmq broker`` processes, master and slave.

Phases, all in one run (fresh store directories for every broker pair):

(a) async  ASYNC_MASTER + SLAVE: ``--concurrency`` SEND_MESSAGE_V2 of ``--size`` bytes in
           flight for ``--duration`` seconds; msg/s, send latency, and the replication lag
           (the master's haStatus ``diff`` of slave 1, sampled every 50 ms) p50/p99/max.
(b) sync   SYNC_MASTER + SLAVE, the same load: every SEND_OK waited for the slave's ack.
           Reported: sync msg/s ÷ async msg/s (the goal is ≥ 0.6; RocketMQ before
           pipelining managed about 0.1).
    (a) and (b) alternate for ``--rounds`` rounds; the table shows each and the medians.
(c) catch-up  an ASYNC_MASTER alone gets ``--catchup-mb`` MiB (batches of 32 messages), then
           a fresh slave starts; the time from its start until its ack reaches the master's
           max offset, as MB/s (process start included, and shown apart).

The client is this process (raw remoting, like ``bench/broker_bench.py``); every broker
runs with ASYNC_FLUSH, so the figures are about replication, not fsync. Prints a table and,
with ``--out FILE``, the figures as JSON.

Usage:
    python -m bench.replication_bench [--duration 15] [--concurrency 64] [--size 1024]
        [--rounds 2] [--catchup-mb 128] [--dir D] [--out F.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.measure import Meter, percentile
from bench.servers import BROKER_READY, NAMESRV_READY, Server, rmq_argv, server_process
from bench.wire import create_topic, ha_status, record_error
from protocol.batch_body import BatchItem, encode_batch_body
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError
from protocol.headers import SendMessageRequestHeaderV2
from protocol.message import properties_to_string
from protocol.rpc import RemotingClient, check_success, open_client

MIB = 1024 * 1024
TOPIC = "ReplBench"
QUEUES = 8
PRODUCER_GROUP = "repl-bench"
#: Timers of the benchmarked brokers (RocketMQ's keys); defaults otherwise.
_BROKER_TOML = """[broker]
brokerName = "broker-a"
min_free_disk_bytes = 0
slave_register_interval_s = 0.5
"""


# --- processes ----------------------------------------------------------------------------------


def broker(namesrv: str, store: Path, role: str, broker_id: int) -> Any:
    store.mkdir(parents=True, exist_ok=True)
    config = store.parent / f"{store.name}.toml"
    config.write_text(_BROKER_TOML)
    argv = rmq_argv(
        "broker",
        "-c",
        str(config),
        "-n",
        namesrv,
        "--port",
        "0",
        "--dir",
        str(store),
        "--role",
        role,
        "--broker-id",
        str(broker_id),
        "--log-level",
        "WARNING",
    )
    return server_process(f"{store.name} ({role})", argv, BROKER_READY)


# --- wire ---------------------------------------------------------------------------------------


def send_request(queue_id: int, body: bytes, *, batch: bool = False) -> RemotingCommand:
    header = SendMessageRequestHeaderV2(
        a=PRODUCER_GROUP,
        b=TOPIC,
        c="TBW102",
        d=QUEUES,
        e=queue_id,
        f=0,
        g=int(time.time() * 1000),
        h=0,
        i=properties_to_string({}) or None,
        j=0,
        k=False,
        m=batch,
    )
    code = RequestCode.SEND_BATCH_MESSAGE if batch else RequestCode.SEND_MESSAGE_V2
    return RemotingCommand.request(code, header.to_ext_fields(), body=body)


async def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    with trio.move_on_after(timeout_s):
        while not await condition():  # noqa: ASYNC110 - state in other processes
            await trio.sleep(0.05)
        return
    raise SystemExit(f"{what} did not happen within {timeout_s} s")


# --- (a)/(b): a send load against a master with its slave -----------------------------------------


@attrs.define
class LoadResult:
    mode: str
    #: Sends after the warm-up (latency per request: one message each).
    meter: Meter
    lag_bytes: list[int] = attrs.field(factory=list)

    def row(self, size: int) -> dict[str, Any]:
        meter = self.meter
        rate = meter.rate_per_s()
        rt = meter.latency()
        bytes_per_s = rate * size
        lag_p99 = percentile(self.lag_bytes, 99) or 0
        return {
            "mode": self.mode,
            "msgs": meter.msgs,
            "msg_per_s": round(rate, 1),
            "MB_per_s": round(bytes_per_s / MIB, 2),
            "send_p50_ms": round(rt.value_at(50) / 1000, 2),
            "send_p99_ms": round(rt.value_at(99) / 1000, 2),
            "lag_p50_bytes": int(percentile(self.lag_bytes, 50) or 0),
            "lag_p99_bytes": int(lag_p99),
            "lag_max_bytes": max(self.lag_bytes, default=0),
            # Bytes behind ÷ the write rate: how far behind in time the slave was.
            "lag_p99_ms_est": round(1000 * lag_p99 / bytes_per_s, 2) if rate else 0.0,
            "lag_samples": len(self.lag_bytes),
            "errors": dict(meter.errors),
        }


async def run_load(
    client: RemotingClient,
    master: Server,
    mode: str,
    *,
    concurrency: int,
    size: int,
    duration_s: float,
    warmup_s: float,
) -> LoadResult:
    body = b"r" * size
    numbers = itertools.count()
    # Recording starts after the warm-up: the meter's seconds count from then.
    result = LoadResult(mode, Meter.starting(trio.current_time() + warmup_s))
    deadline = result.meter.start_s + duration_s

    def recording() -> bool:
        return trio.current_time() >= result.meter.start_s

    async def worker() -> None:
        while trio.current_time() < deadline:
            request = send_request(next(numbers) % QUEUES, body)
            started = trio.current_time()
            try:
                response = await client.call(master.addr, request, timeout_s=10.0)
            except RocketError as exc:
                record_error(result.meter, trio.current_time(), 1, exc)
                continue
            now = trio.current_time()
            if not recording():
                continue
            if response.code == ResponseCode.SUCCESS:
                result.meter.record_ok(now, now - started)
            else:
                record_error(result.meter, now, 1, response)

    async def lag_sampler() -> None:
        while trio.current_time() < deadline:
            await trio.sleep(0.05)
            if not recording():
                continue
            rows = (await ha_status(client, master.addr)).get("haConnectionInfo", [])
            for row in rows:
                if row["brokerId"] == 1 and row["slaveAckOffset"] >= 0:
                    result.lag_bytes.append(int(row["diff"]))

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
        nursery.start_soon(lag_sampler)
    result.meter.finish(trio.current_time())
    return result


async def pair_run(
    args: argparse.Namespace, namesrv: Server, root: Path, role: str, label: str
) -> dict[str, Any]:
    async with (
        open_client(name="bench", default_timeout_s=10.0) as client,
        broker(namesrv.addr, root / f"{label}-master", role, 0) as master,
        broker(namesrv.addr, root / f"{label}-slave", "SLAVE", 1) as slave,
    ):
        await create_topic(client, master.addr, TOPIC, QUEUES)

        async def in_sync() -> bool:
            rows = (await ha_status(client, master.addr)).get("haConnectionInfo", [])
            return any(r["brokerId"] == 1 and r["inSync"] for r in rows)

        await wait_until(in_sync, 30.0, "the slave joining the in-sync set")
        result = await run_load(
            client,
            master,
            role,
            concurrency=args.concurrency,
            size=args.size,
            duration_s=args.duration,
            warmup_s=args.warmup,
        )

        async def caught_up() -> bool:
            status = await ha_status(client, master.addr)
            want = status["masterCommitLogMaxOffset"]
            slave_max = (await ha_status(client, slave.addr))["haClientRuntimeInfo"]["maxOffset"]
            return bool(slave_max == want)

        await wait_until(caught_up, 60.0, "the slave catching up after the load")
    row = result.row(args.size)
    print(
        f"  {label:<10} {row['msg_per_s']:>10.1f} msg/s  send p50 {row['send_p50_ms']:.2f} ms"
        f"  p99 {row['send_p99_ms']:.2f} ms  lag p99 {row['lag_p99_bytes']} B"
        f" (~{row['lag_p99_ms_est']} ms)  errors {row['errors']}",
        flush=True,
    )
    return row


# --- (c): catch-up of a fresh slave -------------------------------------------------------------


async def catch_up(args: argparse.Namespace, namesrv: Server, root: Path) -> dict[str, Any]:
    per_batch, size = 32, args.size
    body = encode_batch_body([BatchItem(body=b"c" * size) for _ in range(per_batch)])
    target = args.catchup_mb * MIB
    async with (
        open_client(name="bench", default_timeout_s=10.0) as client,
        broker(namesrv.addr, root / "catchup-master", "ASYNC_MASTER", 0) as master,
    ):
        await create_topic(client, master.addr, TOPIC, QUEUES)
        numbers = itertools.count()
        written = 0

        async def fill() -> None:
            nonlocal written
            while written < target:
                request = send_request(next(numbers) % QUEUES, body, batch=True)
                check_success(await client.call(master.addr, request, timeout_s=30.0))
                written += per_batch * size

        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(fill)
        fill_s = time.monotonic() - started
        end = (await ha_status(client, master.addr))["masterCommitLogMaxOffset"]
        print(f"  wrote {end / MIB:.0f} MiB in {fill_s:.1f} s; starting a fresh slave", flush=True)
        spawned = time.monotonic()
        async with broker(namesrv.addr, root / "catchup-slave", "SLAVE", 1) as slave:
            ready = time.monotonic()
            first_byte: float | None = None

            async def done() -> bool:
                nonlocal first_byte
                info = (await ha_status(client, slave.addr))["haClientRuntimeInfo"]
                if first_byte is None and info["maxOffset"] > 0:
                    first_byte = time.monotonic()
                rows = (await ha_status(client, master.addr)).get("haConnectionInfo", [])
                return any(r["brokerId"] == 1 and r["slaveAckOffset"] >= end for r in rows)

            await wait_until(done, 600.0, "the fresh slave catching up")
            finished = time.monotonic()
    copy_s = finished - (first_byte or ready)
    row = {
        "bytes": end,
        "MiB": round(end / MIB, 1),
        "slave_start_s": round(ready - spawned, 2),
        "seconds_from_spawn": round(finished - spawned, 2),
        "seconds_copying": round(copy_s, 2),
        "MB_per_s_from_spawn": round(end / MIB / (finished - spawned), 1),
        "MB_per_s_copying": round(end / MIB / copy_s, 1) if copy_s > 0 else None,
    }
    print(
        f"  {row['MiB']} MiB caught up in {row['seconds_from_spawn']} s from spawn "
        f"({row['MB_per_s_from_spawn']} MB/s; {row['MB_per_s_copying']} MB/s while copying)",
        flush=True,
    )
    return row


# --- main -----------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "config": {
            "size": args.size,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "catchup_mb": args.catchup_mb,
        },
        "rounds": [],
    }
    namesrv_argv = rmq_argv("namesrv", "--port", "0", "--log-level", "WARNING")
    async with server_process("namesrv", namesrv_argv, NAMESRV_READY) as namesrv:
        if "a" in args.phases or "b" in args.phases:
            print(
                f"(a)/(b) {args.size} B messages, {args.concurrency} in flight, "
                f"{args.duration:g} s per run",
                flush=True,
            )
            for n in range(args.rounds):
                entry: dict[str, Any] = {}
                if "a" in args.phases:
                    entry["async"] = await pair_run(
                        args, namesrv, root, "ASYNC_MASTER", f"async{n}"
                    )
                if "b" in args.phases:
                    entry["sync"] = await pair_run(args, namesrv, root, "SYNC_MASTER", f"sync{n}")
                report["rounds"].append(entry)
                for label in ("async", "sync"):
                    shutil.rmtree(root / f"{label}{n}-master", ignore_errors=True)
                    shutil.rmtree(root / f"{label}{n}-slave", ignore_errors=True)
            _summarize(report)
        if "c" in args.phases:
            print(f"(c) catch-up of a fresh slave after {args.catchup_mb} MiB", flush=True)
            report["catch_up"] = await catch_up(args, namesrv, root)
    return report


def _summarize(report: dict[str, Any]) -> None:
    rounds = report["rounds"]

    def median(mode: str, key: str) -> float:
        values = [r[mode][key] for r in rounds if mode in r]
        return statistics.median(values) if values else 0.0

    summary: dict[str, Any] = {}
    for mode in ("async", "sync"):
        if any(mode in r for r in rounds):
            summary[mode] = {
                key: median(mode, key)
                for key in ("msg_per_s", "send_p50_ms", "send_p99_ms", "lag_p99_bytes")
            }
    if "async" in summary and "sync" in summary and summary["async"]["msg_per_s"]:
        ratios = [
            r["sync"]["msg_per_s"] / r["async"]["msg_per_s"]
            for r in rounds
            if "sync" in r and "async" in r and r["async"]["msg_per_s"]
        ]
        summary["sync_over_async"] = round(statistics.median(ratios), 3)
        summary["per_round_ratio"] = [round(x, 3) for x in ratios]
    report["summary"] = summary
    print("summary (medians over rounds):", flush=True)
    print(f"  {'mode':<6} {'msg/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'lag p99 B':>10}")
    for mode in ("async", "sync"):
        if mode in summary:
            s = summary[mode]
            print(
                f"  {mode:<6} {s['msg_per_s']:>10.1f} {s['send_p50_ms']:>8.2f} "
                f"{s['send_p99_ms']:>8.2f} {int(s['lag_p99_bytes']):>10}"
            )
    if "sync_over_async" in summary:
        print(f"  sync / async throughput: {summary['sync_over_async']} (goal >= 0.6)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default="a,b,c", help="a (async), b (sync), c (catch-up)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before recording")
    parser.add_argument("--concurrency", type=int, default=64, help="sends in flight")
    parser.add_argument("--size", type=int, default=1024, help="message body bytes")
    parser.add_argument("--rounds", type=int, default=2, help="async/sync alternations")
    parser.add_argument("--catchup-mb", type=int, default=128, help="MiB before the slave")
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args(argv)
    args.phases = set(args.phases.replace(",", ""))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="repl-bench-", dir=args.dir))
    try:
        report = trio.run(main_async, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
