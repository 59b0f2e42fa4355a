"""The broker's own CPU per SEND_MESSAGE_V2, in one process, without sockets or scheduling.

    .venv/bin/python -m bench.micro.send_bench [--count 50000] [--size 1024] [--repeat 3] \
        [--per-read 64] [--profile F]

A Broker (ASYNC_FLUSH, no NameServer) is served in this process; requests built as a Java
producer builds them (``bench/wire.py``: fresh UNIQ_KEY, WAIT, a tag) are encoded to
frames up front, then each is decoded (frame bytes -> command), handed to the broker's
SEND_MESSAGE_V2 handler and its answer encoded, as ``protocol/rpc.py`` does for a request
that never waits, and after every ``--per-read`` requests the server's ``before_write`` (the
held CommitLog bytes' write; an older tree's ``after_requests``) runs, as the transport runs
it once for the answers of one read (a busy connection's read
brings ~64; 1 is what a single request in flight costs). The figure is this process's CPU time (``time.process_time``) per send:
what the broker spends per message minus the socket syscalls and Trio's per-read costs,
and, unlike msg/s over loopback, steady on a machine shared with other work (best and
median of ``--repeat`` runs). ``--profile F`` writes a cProfile of one more run to F.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.wire import SendRequests
from broker.config import BrokerConfig
from broker.server import Broker
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder

TOPIC = "send-bench"


class _Peer:
    """What the send handler reads of its connection."""

    peer = "127.0.0.1:50000"


async def _run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    config = BrokerConfig(
        namesrv_addrs=(),
        listen_port=0,
        store_dir=directory / "store",
        min_free_disk_bytes=0,
    )
    broker = Broker(config)
    requests = SendRequests(TOPIC, args.size, queues=4, batch=1)  # auto-created: 4 queues
    handler = broker.server.handlers[RequestCode.SEND_MESSAGE_V2]
    conn: Any = _Peer()
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve)
        first = await handler(requests.single(), conn)
        if not isinstance(first, RemotingCommand) or first.code != ResponseCode.SUCCESS:
            raise SystemExit(f"send refused: {first}")

        # Older trees run ConsumeQueue writes once a read from this hook; the current one has
        # none (they wait for the flush tick), so it is None here.
        after_requests = getattr(broker.server, "after_requests", None)
        # Newer trees hold each send's CommitLog bytes until the transport's hook runs before
        # a read's answers are written (one pwritev): run it as the transport does.
        if after_requests is None:
            after_requests = getattr(broker.server, "before_write", None)
        per_read = args.per_read
        # Newer trees time each answer in the transport (the server's ``on_answered``),
        # older ones in a wrapper around each handler: counted here either way.
        on_answered = getattr(broker.server, "on_answered", None)

        async def one_run() -> float:
            data = b"".join(requests.single().encode() for _ in range(args.count))
            start = time.process_time()
            for n, frame in enumerate(FrameDecoder().feed(data), 1):
                request = RemotingCommand.from_frame(frame)
                started_s = time.perf_counter()
                response = await handler(request, conn)
                assert isinstance(response, RemotingCommand)  # an ASYNC_FLUSH master
                if on_answered is not None:
                    on_answered(request.code, response.code, time.perf_counter() - started_s)
                response.encode()
                if after_requests is not None and n % per_read == 0:
                    after_requests()
            return float((time.process_time() - start) / args.count * 1e6)

        runs = [await one_run() for _ in range(args.repeat)]
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await one_run()
            profiler.disable()
            profiler.dump_stats(args.profile)
        nursery.cancel_scope.cancel()
    return {
        "count": args.count,
        "size": args.size,
        "per_read": args.per_read,
        "us_per_send_best": round(min(runs), 2),
        "us_per_send_median": round(statistics.median(runs), 2),
        "runs": [round(r, 2) for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-read", type=int, default=64)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="send-bench-") as tmp:
        result = trio.run(_run, args, Path(tmp))
    print(
        f"SEND_MESSAGE_V2 in-process: {result['us_per_send_best']} µs/send best, "
        f"{result['us_per_send_median']} median of {result['runs']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
