"""The broker's own CPU per pulled message, in one process, without sockets or scheduling.

    .venv/bin/python -m bench.micro.pull_bench [--count 32000] [--size 1024] [--queues 4] \
        [--batch 1] [--repeat 3]

A Broker (ASYNC_FLUSH, no NameServer) is served in this process and stores ``--count``
messages of ``--size`` bytes, sent as ``bench/wire.py`` builds them: single sends spread
round-robin over ``--queues`` queues (each queue's records lie with the other queues'
between them), or batches of ``--batch`` (back to back). Then every queue is pulled from
offset 0 to its end, 32 messages a request with subscription ``*`` (what
``bench/broker_bench.py`` phase (d) and the matrix pull cell send): each PULL_MESSAGE is
decoded, handed to the broker's handler and its answer encoded, as ``protocol/rpc.py``
does for a request that never waits. The figure is this process's CPU time
(``time.process_time``) per pulled message, best and median of ``--repeat`` runs: what the
broker spends per message minus the socket syscalls and Trio's per-read costs. Compare
trees alternately, from a directory outside both (``python -m`` puts the current directory
before ``PYTHONPATH``): ``cd /tmp && PYTHONPATH=<tree> <venv>/bin/python -m bench.micro.pull_bench``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import trio

from bench.wire import SendRequests, pull_request
from broker.config import BrokerConfig
from broker.server import Broker
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder
from protocol.rpc import Handler

TOPIC = "pull-bench"


class _Peer:
    """What the handlers read of their connection."""

    peer = "127.0.0.1:50000"


def _served(handler: Handler, request: RemotingCommand, conn: Any) -> RemotingCommand:
    """Run a handler that never waits to its answer (the transport's fast case)."""
    coro = cast(Coroutine[Any, Any, RemotingCommand], handler(request, conn))
    try:
        coro.send(None)
    except StopIteration as done:
        answer: RemotingCommand = done.value
        return answer
    coro.close()
    raise SystemExit(f"request code {request.code} waited: not a fast-path request")


async def _run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    config = BrokerConfig(
        namesrv_addrs=(),
        listen_port=0,
        store_dir=directory / "store",
        min_free_disk_bytes=0,
        default_topic_queue_nums=args.queues,
    )
    broker = Broker(config)
    conn: Any = _Peer()
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve)
        handlers = broker.server.handlers
        requests = SendRequests(TOPIC, args.size, queues=args.queues, batch=args.batch)
        # Older trees run ConsumeQueue writes once a read from this hook; the current one has
        # none (they wait for the flush tick), so it is None here.
        after_requests = getattr(broker.server, "after_requests", None)
        for n in range(args.count // args.batch):
            if args.batch == 1:
                sent = _served(handlers[RequestCode.SEND_MESSAGE_V2], requests.single(), conn)
            else:
                sent = _served(handlers[RequestCode.SEND_BATCH_MESSAGE], requests.batched(), conn)
            if sent.code != ResponseCode.SUCCESS:
                raise SystemExit(f"send refused: {sent}")
            if after_requests is not None and n % 64 == 63:
                after_requests()
        if after_requests is not None:
            after_requests()
        pull = handlers[RequestCode.PULL_MESSAGE]

        def pull_all() -> int:
            pulled = 0
            for queue_id in range(args.queues):
                offset = 0
                while True:
                    data = pull_request(TOPIC, queue_id, offset).encode()
                    frame = next(iter(FrameDecoder().feed(data)))
                    answer = _served(pull, RemotingCommand.from_frame(frame), conn)
                    answer.encode()
                    if answer.code != ResponseCode.SUCCESS:
                        break
                    offset = int(answer.ext_fields["nextBeginOffset"])
                pulled += offset
            return pulled

        pull_all()  # warm: files opened, caches filled
        runs = []
        for _ in range(args.repeat):
            start = time.process_time()
            pulled = pull_all()
            runs.append((time.process_time() - start) / pulled * 1e6)
        nursery.cancel_scope.cancel()
    return {
        "count": args.count,
        "size": args.size,
        "queues": args.queues,
        "batch": args.batch,
        "pulled": pulled,
        "us_per_message_best": round(min(runs), 2),
        "us_per_message_median": round(statistics.median(runs), 2),
        "runs": [round(r, 2) for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.count < args.batch or not 1 <= args.batch <= 32 or args.queues < 1:
        parser.error("need --count >= --batch, --batch in 1..32, --queues >= 1")
    with tempfile.TemporaryDirectory(prefix="pull-bench-") as tmp:
        result = trio.run(_run, args, Path(tmp))
    print(
        f"PULL_MESSAGE in-process: {result['us_per_message_best']} µs/message best, "
        f"{result['us_per_message_median']} median of {result['runs']} "
        f"({result['pulled']} pulled, {args.queues} queues, batch {args.batch})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
