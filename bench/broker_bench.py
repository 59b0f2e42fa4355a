"""Broker benchmark: a real NameServer and broker, driven over the wire from this process.

The NameServer and each broker run as their own processes (``rmq namesrv --port 0``,
``rmq broker -n ADDR --port 0 --dir D``); this process is the client and talks raw
remoting (``protocol.rpc.open_client``, ``--connections`` connections). Phases, each after
a short warm-up and bounded by ``--duration``:

(a) send   SEND_MESSAGE_V2, ``--size`` bodies, ``--concurrency`` in flight, ASYNC_FLUSH broker
(b) batch  SEND_BATCH_MESSAGE, ``--batch`` messages per request, same broker
(d) pull   PULL_MESSAGE (32 per request, sysFlag SUBSCRIPTION, "*") of what (a)+(b) wrote,
           one queue after another, one request in flight; then all queues at once
(c) sync   a SYNC_FLUSH broker, single sends with each of ``--sync-concurrency`` in flight;
           fsync calls the broker made and their latency (``perf trace -s``, when perf
           works) compared with this disk's write+fdatasync rate in the same directory
(e) rss    a fresh ASYNC_FLUSH broker's VmRSS before and after ``--rss-gib`` GiB of CommitLog

Prints one line per second while a phase runs (RocketMQ ``producer.sh`` columns), a summary
table at the end (with the broker's and this client's CPU µs per message, the steadier
figure on a shared machine), and with ``--out FILE`` the figures as JSON. ``--profile DIR``
records the broker (and this client) with py-spy during (a), (b) and (c) and prints where
the time goes.

Usage:
    python -m bench.broker_bench [--phases a,b,c,d,e] [--duration 10] [--concurrency 64]
        [--batch 32] [--size 1024] [--connections 1] [--rss-gib 4] [--dir D] [--out F.json]
    python -m bench.broker_bench --summarize-profile broker-a.speedscope.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.measure import (
    CpuTimes,
    CpuUse,
    Meter,
    cpu_between,
    loadavg_1m,
    proc_memory,
    sample_cpu,
    us_per_msg,
    us_to_ms,
)
from bench.profiling import print_profile, record_profile, summarize_profile
from bench.runner import report_seconds
from bench.servers import BROKER_READY, Server, namesrv_process, rmq_argv, server_process
from bench.wire import (
    PULL_BATCH,
    SendRequests,
    create_topic,
    open_clients,
    pull_request,
    record_error,
    runtime_info,
)
from protocol.codes import ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError
from protocol.headers import PullMessageResponseHeader
from protocol.message import iter_records
from protocol.rpc import RemotingClient

GIB = 1024**3
MIB = 1024**2
_ALL_PHASES = "a,b,c,d,e"


# --- server processes ---------------------------------------------------------------------------


def broker_process(
    namesrv: str, store_dir: Path, *, name: str, flush: str, segment_bytes: int | None
) -> AbstractAsyncContextManager[Server]:
    argv = rmq_argv(
        "broker",
        "-n",
        namesrv,
        "--port",
        "0",
        "--dir",
        str(store_dir),
        "--name",
        name,
        "--flush",
        flush,
        "--log-level",
        "WARNING",
    )
    if segment_bytes is not None:
        argv += ["--segment-bytes", str(segment_bytes)]
    return server_process(name, argv, BROKER_READY)


# --- a load and its figures ---------------------------------------------------------------------


@attrs.define
class Stop:
    """When the workers of a phase stop starting requests (may be moved earlier)."""

    at: float

    def now(self) -> None:
        self.at = min(self.at, trio.current_time())

    @property
    def due(self) -> bool:
        return trio.current_time() >= self.at


#: A worker: (client, broker address, meter, stop) → runs until ``stop`` is due.
Worker = Callable[[RemotingClient, str, Meter, Stop], Awaitable[None]]


@attrs.frozen(kw_only=True)
class Load:
    """What a phase runs: ``concurrency`` copies of ``worker`` spread over ``clients``."""

    label: str
    kind: str  # "Send" or "Pull": the column names of the per-second line
    worker: Worker
    concurrency: int
    duration_s: float
    warmup_s: float = 1.0
    extra: Callable[[], str] | None = None
    until: Callable[[], Awaitable[bool]] | None = None  # polled each second; True stops


def second_line(meter: Meter, k: int, kind: str) -> str:
    """The producer.sh-style line of second ``k`` (latency per request; failures in total)."""
    second = meter.seconds.get(k)
    mb = f" | MB/s: {second.nbytes / 1e6:7.1f}" if kind == "Pull" else ""
    return (
        f"Current Time: {time.strftime('%H:%M:%S')} | {kind} TPS: {second.msgs:8,.0f}{mb} | "
        f"Max RT(ms): {second.rt.max_us / 1000:7.1f} | "
        f"Average RT(ms): {second.rt.mean_us / 1000:7.3f} | "
        f"{kind} Failed: {meter.send_failed} | Response Failed: {meter.response_failed}"
    )


def figures(meter: Meter) -> dict[str, Any]:
    """A finished phase's rates, latency percentiles (per request) and failures."""
    elapsed = meter.elapsed_s()
    rt = meter.latency()
    # Whole seconds only: a partial last second would widen the range.
    per_second = [t.msgs for t in meter.whole_seconds()]
    return {
        "elapsed_s": round(elapsed, 3),
        "msgs": meter.msgs,
        "requests": meter.requests,
        "msg_per_s": round(meter.rate_per_s(), 1),
        "mb_per_s": round(meter.nbytes / elapsed / 1e6, 2) if elapsed > 0 else 0.0,
        "p50_ms": rt.ms_at(50),
        "p99_ms": rt.ms_at(99),
        "max_ms": us_to_ms(rt.max_us) if rt.count else None,
        "avg_ms": us_to_ms(rt.mean_us) if rt.count else None,
        "per_second_min": min(per_second, default=None),
        "per_second_max": max(per_second, default=None),
        "send_failed": meter.send_failed,
        "response_failed": meter.response_failed,
        "first_error": meter.first_error,
    }


def cpu_figures(use: CpuUse, msgs: int) -> dict[str, Any]:
    """CPU of the broker (the watched process), this client and the rest of the machine, in
    % of one core, and the broker's and client's CPU µs per message (steadier than msg/s on
    a shared machine: they do not count the time a core was held by another process)."""
    broker = use.others or CpuTimes(0.0, 0.0)
    broker_pct, client_pct = use.pct(broker.total_s), use.pct(use.own.total_s)
    machine_pct = use.pct(use.machine_busy_s)
    return {
        "broker_cpu_s": round(broker.total_s, 3),
        "client_cpu_s": round(use.own.total_s, 3),
        "broker_cpu_pct": broker_pct,
        "broker_sys_pct": use.pct(broker.system_s),
        "client_cpu_pct": client_pct,
        "machine_cpu_pct": machine_pct,
        "other_cpu_pct": round(max(0.0, machine_pct - broker_pct - client_pct), 1),
        "loadavg_1m": loadavg_1m(),
        "broker_us_per_msg": us_per_msg(broker.total_s, msgs),
        "client_us_per_msg": us_per_msg(use.own.total_s, msgs),
    }


async def run_load(load: Load, clients: Sequence[RemotingClient], broker: Server) -> dict[str, Any]:
    """Warm up, then run ``load`` for its duration (or until ``until``); its figures."""
    if load.warmup_s > 0:
        warmup = Meter.starting(trio.current_time())
        await _drive(load, clients, broker, warmup, Stop(trio.current_time() + load.warmup_s))
    meter = Meter.starting(trio.current_time(), latency_per_message=False)
    start = sample_cpu([broker.pid])
    stop = Stop(trio.current_time() + load.duration_s)

    def emit(k: int) -> None:
        suffix = f" | {load.extra()}" if load.extra is not None else ""
        print(f"[{load.label}] {second_line(meter, k, load.kind)}{suffix}", flush=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_seconds, meter.start_s, emit)
        if load.until is not None:
            nursery.start_soon(_watch, load.until, stop)
        await _drive(load, clients, broker, meter, stop)
        nursery.cancel_scope.cancel()
    meter.finish(trio.current_time())
    use = cpu_between(start, sample_cpu([broker.pid]))
    return figures(meter) | cpu_figures(use, meter.msgs) | {"concurrency": load.concurrency}


async def _drive(
    load: Load, clients: Sequence[RemotingClient], broker: Server, meter: Meter, stop: Stop
) -> None:
    async with trio.open_nursery() as workers:
        for i in range(load.concurrency):
            workers.start_soon(load.worker, clients[i % len(clients)], broker.addr, meter, stop)


async def _watch(until: Callable[[], Awaitable[bool]], stop: Stop) -> None:
    while not stop.due:
        await trio.sleep(1.0)
        if await until():
            stop.now()
            return


# --- workers ------------------------------------------------------------------------------------


def send_worker(
    make: Callable[[], RemotingCommand], msgs: int, size: int, timeout_s: float
) -> Worker:
    async def worker(client: RemotingClient, addr: str, meter: Meter, stop: Stop) -> None:
        while not stop.due:
            request = make()
            start = trio.current_time()
            try:
                response = await client.call(addr, request, timeout_s=timeout_s)
            except RocketError as exc:  # counted, not fatal: a bench reports what happened
                record_error(meter, trio.current_time(), msgs, exc)
                await trio.sleep(0.01)  # a dead connection must not spin
                continue
            now = trio.current_time()
            if response.code == ResponseCode.SUCCESS:
                meter.record_ok(now, now - start, msgs, msgs * size)
            else:
                record_error(meter, now, msgs, response)

    return worker


def pull_worker(topic: str, queue_ids: Sequence[int], timeout_s: float) -> Worker:
    """Pull each of ``queue_ids`` in turn from offset 0 to its end, one request in flight."""

    async def worker(client: RemotingClient, addr: str, meter: Meter, stop: Stop) -> None:
        checked = False
        for queue_id in queue_ids:
            offset = 0
            while not stop.due:
                start = trio.current_time()
                try:
                    response = await client.call(
                        addr, pull_request(topic, queue_id, offset), timeout_s=timeout_s
                    )
                except RocketError as exc:
                    record_error(meter, trio.current_time(), 1, exc)
                    return
                now = trio.current_time()
                if response.code == ResponseCode.PULL_NOT_FOUND:
                    break  # the end of this queue
                if response.code != ResponseCode.SUCCESS:
                    record_error(meter, now, 1, response)
                    break
                reply = PullMessageResponseHeader.from_ext_fields(response.ext_fields)
                count = reply.next_begin_offset - offset
                if not checked:  # once: the body holds exactly that many good records
                    assert sum(1 for _ in iter_records(response.body)) == count, "bad pull body"
                    checked = True
                meter.record_ok(now, now - start, count, len(response.body))
                offset = reply.next_begin_offset

    return worker


# --- disk and syscalls ---------------------------------------------------------------------------


def disk_fsync_rate(directory: Path, block_bytes: int, seconds: float) -> dict[str, float]:
    """pwrite ``block_bytes`` at the end of a sparse file + fdatasync, in a loop: rate, latency."""
    path = directory / f"fsync-probe-{block_bytes}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        size = 256 * MIB
        os.ftruncate(fd, size)  # sparse, like a new CommitLog segment
        block = b"\xab" * block_bytes
        count = pos = 0
        start = time.perf_counter()
        deadline = start + seconds
        while (now := time.perf_counter()) < deadline:
            os.pwrite(fd, block, pos)
            os.fdatasync(fd)
            count += 1
            pos = (pos + block_bytes) % (size - block_bytes)
        elapsed = now - start
    finally:
        os.close(fd)
        path.unlink()
    return {
        "block_bytes": block_bytes,
        "fsyncs_per_s": round(count / elapsed, 1),
        "mean_ms": round(1000 * elapsed / max(1, count), 3),
    }


async def count_syncs(pid: int, seconds: float) -> dict[str, float] | None:
    """fdatasync/fsync calls ``pid`` makes during ``seconds`` and their latency (``perf
    trace -s``; filtered in the kernel, so the broker is not slowed), if perf works here."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    argv = [perf, "trace", "-s", "-e", "fdatasync,fsync", "-p", str(pid), "--", "sleep", f"{seconds:.2f}"]  # fmt: skip
    result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    text = (result.stdout + result.stderr).decode(errors="replace")
    calls, total_ms, max_ms = 0, 0.0, 0.0
    for line in text.splitlines():
        fields = line.split()
        # syscall  calls  errors  total  min  avg  max  stddev  (one row per thread)
        if len(fields) >= 7 and fields[0] in ("fdatasync", "fsync") and fields[1].isdigit():
            calls += int(fields[1])
            total_ms += float(fields[3])
            max_ms = max(max_ms, float(fields[6]))
    if not calls:
        return None
    return {"calls": calls, "mean_ms": round(total_ms / calls, 3), "max_ms": max_ms}


# --- phases --------------------------------------------------------------------------------------


def _header(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


async def phases_async(args: argparse.Namespace, namesrv: Server, parent: Path) -> dict[str, Any]:
    """(a) single sends, (b) batch sends, (d) pulls, against one ASYNC_FLUSH broker."""
    out: dict[str, Any] = {}
    store = parent / "async"
    async with (
        broker_process(
            namesrv.addr,
            store,
            name="bench-async",
            flush="ASYNC_FLUSH",
            segment_bytes=args.segment_bytes,
        ) as broker,
        open_clients(args.connections) as clients,
    ):
        await create_topic(clients[0], broker.addr, args.topic, args.queues)
        out["rss_boot"] = proc_memory(broker.pid)
        requests = SendRequests(args.topic, args.size, args.queues, 1)
        if "a" in args.phases:
            _header(
                f"(a) SEND_MESSAGE_V2 {args.size} B, {args.concurrency} in flight, "
                f"{args.connections} connection(s), ASYNC_FLUSH broker {broker.addr}"
            )
            load = Load(
                label="a send",
                kind="Send",
                concurrency=args.concurrency,
                duration_s=args.duration,
                worker=send_worker(requests.single, 1, args.size, args.timeout),
            )
            out["a_send"] = await _profiled(args, "a-send", broker, load, clients)
        if "b" in args.phases:
            batches = SendRequests(args.topic, args.size, args.queues, args.batch)
            batches.check_batch()
            _header(
                f"(b) SEND_BATCH_MESSAGE {args.batch} x {args.size} B, "
                f"{args.batch_concurrency} in flight"
            )
            load = Load(
                label="b batch",
                kind="Send",
                concurrency=args.batch_concurrency,
                duration_s=args.duration,
                worker=send_worker(batches.batched, args.batch, args.size, args.timeout),
            )
            out["b_batch"] = await _profiled(args, "b-batch", broker, load, clients)
        if "d" in args.phases:
            out.update(await _pulls(args, broker, clients))
        out["rss_end"] = proc_memory(broker.pid)
        out["runtime_info"] = await runtime_info(clients[0], broker.addr)
    shutil.rmtree(store, ignore_errors=True)
    return out


async def _profiled(
    args: argparse.Namespace, name: str, broker: Server, load: Load, clients: list[RemotingClient]
) -> dict[str, Any]:
    """``run_load``, with py-spy recording the broker and this client when ``--profile``."""
    if args.profile is None:
        return await run_load(load, clients, broker)
    args.profile.mkdir(parents=True, exist_ok=True)
    broker_out = args.profile / f"{name}-broker.speedscope.json"
    client_out = args.profile / f"{name}-client.speedscope.json"
    async with trio.open_nursery() as nursery:

        async def record_after_warmup() -> None:
            await trio.sleep(load.warmup_s + 0.5)
            async with trio.open_nursery() as inner:
                inner.start_soon(record_profile, broker.pid, broker_out, load.duration_s - 1)
                inner.start_soon(record_profile, os.getpid(), client_out, load.duration_s - 1)

        nursery.start_soon(record_after_warmup)
        row = await run_load(load, clients, broker)
    row["profile"] = {}
    for who, path in (("broker", broker_out), ("client", client_out)):
        if path.exists():
            summary = summarize_profile(path)
            row["profile"][who] = summary
            print_profile(f"py-spy {name} {who} ({path})", summary)
    row["profiled"] = True
    return row


async def _pulls(
    args: argparse.Namespace, broker: Server, clients: list[RemotingClient]
) -> dict[str, Any]:
    info = await runtime_info(clients[0], broker.addr)
    stored = int(info.get("putMessageTimesTotal", "0"))
    queues = list(range(args.queues))
    _header(
        f"(d) PULL_MESSAGE {PULL_BATCH}/request, queues one after another, 1 in flight "
        f"({stored:,} messages stored)"
    )
    seq = Load(
        label="d pull x1",
        kind="Pull",
        concurrency=1,
        duration_s=args.duration,
        warmup_s=0,
        worker=pull_worker(args.topic, queues, args.timeout),
    )
    out = {"d_pull_sequential": await run_load(seq, clients, broker)}
    _header(
        f"(d) PULL_MESSAGE {PULL_BATCH}/request, {args.queues} queues at once, "
        "1 in flight per queue"
    )
    per_queue = [pull_worker(args.topic, [q], args.timeout) for q in queues]

    async def one_per_queue(client: RemotingClient, addr: str, meter: Meter, stop: Stop) -> None:
        await per_queue[next(assign) % len(per_queue)](client, addr, meter, stop)

    assign = itertools.count()
    par = Load(
        label=f"d pull x{args.queues}",
        kind="Pull",
        concurrency=args.queues,
        duration_s=args.duration,
        warmup_s=0,
        worker=one_per_queue,
    )
    out["d_pull_parallel"] = await run_load(par, clients, broker)
    return out


async def phase_sync(args: argparse.Namespace, namesrv: Server, parent: Path) -> dict[str, Any]:
    """(c) SYNC_FLUSH: single sends at each concurrency; fsyncs made vs the disk's rate."""
    store = parent / "sync"
    store.mkdir(parents=True)
    _header(f"(c) disk: pwrite + fdatasync loop in {store}")
    disk = []
    for block in (4096, 128 * 1024):
        probe = await trio.to_thread.run_sync(disk_fsync_rate, store, block, args.fsync_probe_s)
        print(
            f"  {block // 1024:>4} KiB writes: {probe['fsyncs_per_s']:,.0f} fdatasync/s "
            f"({probe['mean_ms']:.2f} ms each)",
            flush=True,
        )
        disk.append(probe)
    out: dict[str, Any] = {"disk_fsync": disk}
    async with (
        broker_process(
            namesrv.addr,
            store,
            name="bench-sync",
            flush="SYNC_FLUSH",
            segment_bytes=args.segment_bytes,
        ) as broker,
        open_clients(args.connections) as clients,
    ):
        await create_topic(clients[0], broker.addr, args.topic, args.queues)
        requests = SendRequests(args.topic, args.size, args.queues, 1)
        for concurrency in args.sync_concurrency:
            _header(
                f"(c) SEND_MESSAGE_V2 {args.size} B, {concurrency} in flight, "
                f"SYNC_FLUSH broker {broker.addr}"
            )
            load = Load(
                label=f"c sync x{concurrency}",
                kind="Send",
                concurrency=concurrency,
                duration_s=args.duration,
                worker=send_worker(requests.single, 1, args.size, args.timeout),
            )
            out[f"c_sync_{concurrency}"] = await _sync_run(
                args, f"c-sync{concurrency}", load, clients, broker
            )
        out["rss_end"] = proc_memory(broker.pid)
    shutil.rmtree(store, ignore_errors=True)
    return out


async def _sync_run(
    args: argparse.Namespace,
    name: str,
    load: Load,
    clients: list[RemotingClient],
    broker: Server,
) -> dict[str, Any]:
    syncs: dict[str, Any] = {}
    info_before = await runtime_info(clients[0], broker.addr)

    async def count_after_warmup() -> None:
        await trio.sleep(load.warmup_s)
        syncs["counts"] = await count_syncs(broker.pid, load.duration_s)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count_after_warmup)
        row = await _profiled(args, name, broker, load, clients)
    info_after = await runtime_info(clients[0], broker.addr)
    flush_keys = sorted(k for k in info_after if "flush" in k.lower() or "fsync" in k.lower())
    row["runtime_info_flush_keys"] = {k: (info_before.get(k), info_after[k]) for k in flush_keys}
    counts = syncs.get("counts")
    row["broker_syncs"] = counts
    if counts:
        row["broker_syncs_per_s"] = round(counts["calls"] / load.duration_s, 1)
        row["msgs_per_sync"] = round(row["msg_per_s"] / max(1e-9, row["broker_syncs_per_s"]), 1)
        print(
            f"  broker: {counts['calls']:,} fsync/fdatasync calls in {load.duration_s:.0f} s "
            f"({row['broker_syncs_per_s']:,.0f}/s, {row['msgs_per_sync']:.1f} msgs each, "
            f"{counts['mean_ms']:.2f} ms mean, {counts['max_ms']:.1f} ms max; includes the 1 s "
            "checkpoint round's ConsumeQueue/index syncs)",
            flush=True,
        )
    else:
        print("  broker fsync count not available (perf trace failed or missing)", flush=True)
    return row


async def phase_rss(args: argparse.Namespace, namesrv: Server, parent: Path) -> dict[str, Any]:
    """(e) a fresh broker's RSS before and after ``--rss-gib`` GiB of CommitLog."""
    target = int(args.rss_gib * GIB)
    free = shutil.disk_usage(parent).free
    need = target + 2 * GIB  # + index files, ConsumeQueues, the broker's 256 MiB floor
    if free < need:
        print(f"\n(e) skipped: {free / GIB:.1f} GiB free in {parent}, need {need / GIB:.1f}")
        return {"skipped": f"{free} bytes free, need {need}"}
    store = parent / "rss"
    out: dict[str, Any] = {"target_bytes": target}
    async with (
        broker_process(
            namesrv.addr,
            store,
            name="bench-rss",
            flush="ASYNC_FLUSH",
            segment_bytes=args.segment_bytes,
        ) as broker,
        open_clients(args.connections) as clients,
    ):
        await create_topic(clients[0], broker.addr, args.topic, args.queues)
        out["before"] = proc_memory(broker.pid)
        written = [0]

        async def reached() -> bool:
            info = await runtime_info(clients[0], broker.addr)
            written[0] = int(info["commitLogMaxOffset"])
            return written[0] >= target

        def extra() -> str:
            rss = proc_memory(broker.pid)["VmRSS"]
            return f"CommitLog {written[0] / GIB:5.2f} GiB | broker VmRSS {rss / MIB:,.0f} MiB"

        batches = SendRequests(args.topic, args.size, args.queues, args.batch)
        _header(
            f"(e) writing {args.rss_gib} GiB with SEND_BATCH_MESSAGE {args.batch} x "
            f"{args.size} B; broker VmRSS before: {out['before']['VmRSS'] / MIB:,.0f} MiB"
        )
        load = Load(
            label="e rss",
            kind="Send",
            concurrency=args.batch_concurrency,
            duration_s=args.rss_timeout,
            warmup_s=0,
            extra=extra,
            until=reached,
            worker=send_worker(batches.batched, args.batch, args.size, args.timeout),
        )
        out["write"] = await run_load(load, clients, broker)
        await reached()
        out["commitlog_bytes"] = written[0]
        out["after"] = proc_memory(broker.pid)
        await trio.sleep(2.0)  # one async flush round and a checkpoint later
        out["after_settle"] = proc_memory(broker.pid)
    out["store_bytes_on_disk"] = _disk_usage(store)
    shutil.rmtree(store, ignore_errors=True)
    return out


def _disk_usage(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


# --- summary ------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_summary(results: dict[str, Any]) -> None:
    rows = [
        ("(a) send 1 msg/request", results.get("a_send")),
        (f"(b) batch {results['config']['batch']} msgs/request", results.get("b_batch")),
        *[
            (f"(c) SYNC_FLUSH {k.rsplit('_', 1)[1]} in flight", v)
            for k, v in results.get("sync", {}).items()
            if k.startswith("c_sync_")
        ],
        ("(d) pull, 1 in flight", results.get("d_pull_sequential")),
        (f"(d) pull, {results['config']['queues']} in flight", results.get("d_pull_parallel")),
    ]
    print("\n=== summary ===")
    print(
        f"{'phase':<28}{'msg/s':>10}{'MB/s':>8}{'per-s range':>19}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'fail':>6}{'broker%':>9}{'client%':>9}{'other%':>8}"
        f"{'brk µs/msg':>12}{'cli µs/msg':>12}"
    )
    for name, r in rows:
        if r is None:
            continue
        span = f"{_fmt(r['per_second_min'], ',.0f')}-{_fmt(r['per_second_max'], ',.0f')}"
        print(
            f"{name:<28}{r['msg_per_s']:>10,.0f}{r['mb_per_s']:>8.1f}{span:>19}"
            f"{_fmt(r['p50_ms'], '.2f'):>9}{_fmt(r['p99_ms'], '.2f'):>9}"
            f"{_fmt(r['max_ms'], '.1f'):>9}{r['send_failed'] + r['response_failed']:>6}"
            f"{r['broker_cpu_pct']:>9.0f}{r['client_cpu_pct']:>9.0f}{r['other_cpu_pct']:>8.0f}"
            f"{_fmt(r['broker_us_per_msg'], '.1f'):>12}{_fmt(r['client_us_per_msg'], '.1f'):>12}"
        )
        if r.get("first_error"):
            print(f"{'':<28}first error: {r['first_error']}")
        if r.get("broker_syncs_per_s") is not None:
            print(
                f"{'':<28}broker fsyncs {r['broker_syncs_per_s']:,.0f}/s, "
                f"{r['msgs_per_sync']:.1f} msgs per fsync"
            )
    sync = results.get("sync", {})
    for probe in sync.get("disk_fsync", []):
        print(
            f"{'disk write+fdatasync':<28}{probe['fsyncs_per_s']:>10,.0f}/s at "
            f"{probe['block_bytes'] // 1024} KiB ({probe['mean_ms']:.2f} ms each)"
        )
    rss = results.get("rss")
    if rss and "after" in rss:
        b, a = rss["before"], rss["after_settle"]
        print(
            f"(e) broker VmRSS {b['VmRSS'] / MIB:,.0f} MiB before → {a['VmRSS'] / MIB:,.0f} MiB "
            f"after {rss['commitlog_bytes'] / GIB:.2f} GiB of CommitLog (anon "
            f"{a.get('RssAnon', 0) / MIB:,.0f} MiB, file {a.get('RssFile', 0) / MIB:,.0f} MiB, "
            f"peak VmHWM {a['VmHWM'] / MIB:,.0f} MiB); write rate "
            f"{rss['write']['msg_per_s']:,.0f} msg/s"
        )


# --- main ---------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(value)
    return value


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "config": {k: _jsonable(v) for k, v in vars(args).items()},
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    parent = Path(tempfile.mkdtemp(prefix="broker-bench-", dir=args.dir))
    print(f"stores under {parent}; phases {','.join(sorted(args.phases))}", flush=True)
    try:
        async with namesrv_process() as namesrv:
            if args.phases & {"a", "b", "d"}:
                results.update(await phases_async(args, namesrv, parent))
            if "c" in args.phases:
                results["sync"] = await phase_sync(args, namesrv, parent)
            if "e" in args.phases:
                results["rss"] = await phase_rss(args, namesrv, parent)
    finally:
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--phases", default=_ALL_PHASES, help=f"comma list of a-e (default {_ALL_PHASES})"
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    p.add_argument("--size", type=int, default=1024, help="message body bytes (default 1024)")
    p.add_argument("--concurrency", type=int, default=64, help="(a) requests in flight")
    p.add_argument("--batch", type=int, default=32, help="(b, e) messages per batch request")
    p.add_argument("--batch-concurrency", type=int, default=16, help="(b, e) requests in flight")
    p.add_argument("--sync-concurrency", default="64,256", help="(c) in-flight levels")
    p.add_argument("--connections", type=int, default=1, help="connections to the broker")
    p.add_argument("--topic", default="BenchTopic")
    p.add_argument("--queues", type=int, default=8)
    p.add_argument("--timeout", type=float, default=10.0, help="per-request deadline (s)")
    p.add_argument("--segment-bytes", type=int, default=None, help="broker CommitLog segment size")
    p.add_argument("--rss-gib", type=float, default=4.0, help="(e) GiB of CommitLog to write")
    p.add_argument("--rss-timeout", type=float, default=900.0, help="(e) give up after (s)")
    p.add_argument("--fsync-probe-s", type=float, default=2.0, help="(c) disk probe seconds")
    p.add_argument("--dir", type=Path, default=None, help="parent of the store dirs (temp)")
    p.add_argument("--keep", action="store_true", help="keep the store dirs")
    p.add_argument("--profile", type=Path, default=None, help="py-spy (a), (b), (c) into DIR")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument(
        "--summarize-profile",
        type=Path,
        default=None,
        help="only print the summary of a py-spy speedscope file",
    )
    args = p.parse_args(argv)
    args.phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if not args.phases <= set(_ALL_PHASES.split(",")):
        p.error(f"--phases takes letters from {_ALL_PHASES}")
    args.sync_concurrency = [int(x) for x in args.sync_concurrency.split(",") if x.strip()]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.summarize_profile is not None:
        print_profile(str(args.summarize_profile), summarize_profile(args.summarize_profile))
        return
    results = trio.run(run, args)
    print_summary(results)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
