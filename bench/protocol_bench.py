"""Protocol benchmarks: the frame codec, and NameServer route lookups over loopback.

(a) codec: one SEND_MESSAGE_V2 request with a 1 KiB body, round-tripped the way a broker
    meets it: ``RemotingCommand.encode`` → ``FrameDecoder.feed`` →
    ``RemotingCommand.from_frame`` → ``SendMessageRequestHeaderV2.from_ext_fields``.
(b) rpc: GET_ROUTEINFO_BY_TOPIC against ``rmq namesrv --port 0`` running as its own
    process (or ``--namesrv ADDR``), from one client connection here: one call in flight,
    then ``--concurrency`` calls in flight. Reports ops/s and p50/p99 latency.

Prints results; writes JSON only with ``--out FILE``. Usage:
    python -m bench.protocol_bench [--codec-seconds 3] [--calls 20000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from bench.measure import Meter
from bench.servers import namesrv_process
from bench.wire import record_error
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError
from protocol.frame import FrameDecoder
from protocol.headers import (
    GetRouteInfoRequestHeader,
    RegisterBrokerRequestHeader,
    SendMessageRequestHeaderV2,
)
from protocol.route import DataVersion, RegisterBrokerBody, TopicConfig
from protocol.rpc import RemotingClient, open_client

_CALL_TIMEOUT_S = 10.0
BENCH_TOPIC = "BenchTopic"


# --- (a) codec ------------------------------------------------------------------------------


def send_request(body_bytes: int) -> RemotingCommand:
    """A SEND_MESSAGE_V2 request as a Java producer sends it."""
    header = SendMessageRequestHeaderV2(
        a="bench-producer-group",
        b=BENCH_TOPIC,
        c="TBW102",
        d=4,
        e=3,
        f=0,
        g=1_700_000_000_000,
        h=0,
        i="KEYS\x01order-12345\x02TAGS\x01TagA\x02WAIT\x01true\x02"
        "UNIQ_KEY\x017F000001A1B218B4AAC27C3D2E0F0000",
        j=0,
        k=False,
        m=False,
        n="broker-a",
    )
    return RemotingCommand.request(
        RequestCode.SEND_MESSAGE_V2, header.to_ext_fields(), b"x" * body_bytes, opaque=42
    )


def bench_codec(seconds: float, body_bytes: int) -> dict[str, Any]:
    request = send_request(body_bytes)
    decoder = FrameDecoder()
    expected = SendMessageRequestHeaderV2.from_ext_fields(request.ext_fields)

    def once() -> None:
        frames = decoder.feed(request.encode())
        command = RemotingCommand.from_frame(frames[0])
        header = SendMessageRequestHeaderV2.from_ext_fields(command.ext_fields)
        assert header.e == expected.e and len(command.body) == body_bytes

    frame_bytes = len(request.encode())
    encode_ops = _rate(request.encode, seconds / 3)
    frame = request.encode()
    decode_ops = _rate(
        lambda: SendMessageRequestHeaderV2.from_ext_fields(
            RemotingCommand.from_frame(decoder.feed(frame)[0]).ext_fields
        ),
        seconds / 3,
    )
    round_trip_ops = _rate(once, seconds / 3)
    return {
        "frame_bytes": frame_bytes,
        "body_bytes": body_bytes,
        "encode_ops_per_s": encode_ops,
        "decode_ops_per_s": decode_ops,
        "round_trip_ops_per_s": round_trip_ops,
        "round_trip_us": 1e6 / round_trip_ops,
    }


def _rate(fn: Callable[[], object], seconds: float, batch: int = 200) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(batch):
        fn()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while (now := time.perf_counter()) < deadline:
        for _ in range(batch):
            fn()
        count += batch
    return count / (now - start)


# --- (b) NameServer round trips ---------------------------------------------------------------


async def register_bench_broker(client: RemotingClient, addr: str) -> None:
    body = RegisterBrokerBody(
        topic_config_table={
            BENCH_TOPIC: TopicConfig(topic_name=BENCH_TOPIC, read_queue_nums=8, write_queue_nums=8)
        },
        data_version=DataVersion(counter=1, timestamp_ms=int(time.time() * 1000)),
    ).encode(compressed=False)
    header = RegisterBrokerRequestHeader(
        broker_name="bench-broker",
        broker_addr="127.0.0.1:10911",
        cluster_name="BenchCluster",
        ha_server_addr="127.0.0.1:10912",
        broker_id=0,
    )
    request = RemotingCommand.request(RequestCode.REGISTER_BROKER, header.to_ext_fields(), body)
    response = await client.call(addr, request)
    if response.code != ResponseCode.SUCCESS:
        raise SystemExit(f"REGISTER_BROKER failed: {response.code} {response.remark}")


async def measure_calls(
    client: RemotingClient, addr: str, calls: int, concurrency: int
) -> dict[str, Any]:
    """``calls`` route lookups with ``concurrency`` in flight; rate and latency percentiles."""
    request = RemotingCommand.request(
        RequestCode.GET_ROUTEINFO_BY_TOPIC,
        GetRouteInfoRequestHeader(topic=BENCH_TOPIC).to_ext_fields(),
    )
    meter = Meter.starting(trio.current_time())
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = trio.current_time()
            try:
                response = await client.call(addr, request, timeout_s=_CALL_TIMEOUT_S)
            except RocketError as exc:  # counted, not fatal: a bench reports what happened
                record_error(meter, trio.current_time(), 1, exc)
                continue
            now = trio.current_time()
            if response.code == ResponseCode.SUCCESS:
                meter.record_ok(now, now - start)
            else:
                record_error(meter, now, 1, response)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    meter.finish(trio.current_time())
    if not meter.msgs:
        raise SystemExit(f"every call failed, e.g. {meter.first_error}")
    rt = meter.latency()
    return {
        "concurrency": concurrency,
        "calls": meter.msgs,
        "errors": meter.failed,
        "first_error": meter.first_error,
        "ops_per_s": meter.rate_per_s(),
        "p50_ms": rt.value_at(50) / 1000,
        "p99_ms": rt.value_at(99) / 1000,
        "max_ms": rt.max_us / 1000,
    }


async def bench_rpc(namesrv: str | None, calls: int, concurrency: int) -> dict[str, Any]:
    async with _namesrv(namesrv) as addr, open_client(name="bench") as client:
        await register_bench_broker(client, addr)
        await measure_calls(client, addr, min(1000, calls), 1)  # warm-up
        sequential = await measure_calls(client, addr, calls, 1)
        concurrent = await measure_calls(client, addr, calls, concurrency)
        return {"namesrv": addr, "sequential": sequential, "concurrent": concurrent}


@asynccontextmanager
async def _namesrv(addr: str | None) -> AsyncIterator[str]:
    if addr is not None:
        yield addr
        return
    async with namesrv_process() as spawned:
        yield spawned.addr


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec-seconds", type=float, default=3.0, help="codec run time (s)")
    parser.add_argument("--body-bytes", type=int, default=1024, help="message body size")
    parser.add_argument("--calls", type=int, default=20_000, help="route lookups per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (phase 2)")
    parser.add_argument("--namesrv", help="use this NameServer instead of starting one")
    parser.add_argument("--skip-codec", action="store_true")
    parser.add_argument("--skip-rpc", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"python": sys.version.split()[0]}
    if not args.skip_codec:
        codec = results["codec"] = bench_codec(args.codec_seconds, args.body_bytes)
        print(
            f"codec  SEND_MESSAGE_V2, {codec['body_bytes']} B body, "
            f"{codec['frame_bytes']} B frame:\n"
            f"  encode            {codec['encode_ops_per_s']:>10,.0f} ops/s\n"
            f"  decode+header     {codec['decode_ops_per_s']:>10,.0f} ops/s\n"
            f"  round trip        {codec['round_trip_ops_per_s']:>10,.0f} ops/s"
            f"  ({codec['round_trip_us']:.1f} µs/op)"
        )
    if not args.skip_rpc:
        rpc = results["rpc"] = trio.run(bench_rpc, args.namesrv, args.calls, args.concurrency)
        print(f"rpc    GET_ROUTEINFO_BY_TOPIC against {rpc['namesrv']}, one connection:")
        for phase in ("sequential", "concurrent"):
            r = rpc[phase]
            print(
                f"  {r['concurrency']:>3} in flight    {r['ops_per_s']:>10,.0f} ops/s"
                f"  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
                f"  max {r['max_ms']:.3f} ms  ({r['calls']} calls, {r['errors']} errors)"
            )
            if r["first_error"]:
                print(f"      first error: {r['first_error']}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
