"""The broker's single-send path inside one ``functools.reduce`` call, for callgrind.

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        .venv/bin/python -m bench.micro.send_callgrind [--count 2000] [--per-read 64] \
            [--batch 32]

As ``bench.micro.send_bench`` (a Broker in this process, SEND_MESSAGE_V2 frames as a Java
producer builds them, decode, handler, answer encode, the server's ``before_write`` (an
older tree's ``after_requests``) every ``--per-read`` sends: 64 as a busy connection's
reads, 1 as one send in flight), but driven synchronously: after ``--count`` warm-up sends, ``--count`` more run inside one
``functools.reduce``, so callgrind counts only them (instructions per send = collected /
count). Instruction counts do not move with the machine's load, unlike CPU time; compare
two trees by running this with each on ``PYTHONPATH`` (``-m`` imports from the current
directory first). A send whose handler waits (it should not, with ASYNC_FLUSH and no
slave) stops the run with an error. ``--batch N``: each request is a SEND_BATCH_MESSAGE of
N messages as a Java producer's (or the SDK's natural batch), ``--count`` of them;
instructions per message = collected / (count x N).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

import trio

from bench.micro.send_bench import TOPIC, _Peer
from bench.wire import SendRequests
from broker.config import BrokerConfig
from broker.server import Broker
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.frame import Frame, FrameDecoder
from protocol.rpc import LaterAnswer


def _finish(awaitable: Awaitable[RemotingCommand | LaterAnswer | None]) -> RemotingCommand | None:
    """Run a handler that must not wait to its answer (handlers are coroutine functions)."""
    assert isinstance(awaitable, Coroutine)
    coro: Coroutine[Any, Any, RemotingCommand | LaterAnswer | None] = awaitable
    try:
        coro.send(None)
    except StopIteration as stop:
        assert not isinstance(stop.value, LaterAnswer)  # an ASYNC_FLUSH master answers now
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise SystemExit("the send handler waited: not a single-send path this driver can count")


async def _run(count: int, per_read: int, batch: int, directory: Path) -> None:
    config = BrokerConfig(
        namesrv_addrs=(), listen_port=0, store_dir=directory / "store", min_free_disk_bytes=0
    )
    broker = Broker(config)
    requests = SendRequests(TOPIC, 1024, queues=4, batch=batch)
    code = RequestCode.SEND_BATCH_MESSAGE if batch > 1 else RequestCode.SEND_MESSAGE_V2
    handler = broker.server.handlers[code]
    build = requests.batched if batch > 1 else requests.single
    # Older trees run ConsumeQueue writes once a read from this hook; the current one has
    # none (they wait for the flush tick), so it is None here.
    after_requests = getattr(broker.server, "after_requests", None)
    # Newer trees hold each send's CommitLog bytes until the transport's hook runs before
    # a read's answers are written (one pwritev): run it as the transport does, once a read.
    if after_requests is None:
        after_requests = getattr(broker.server, "before_write", None)
    conn: Any = _Peer()
    # Newer trees time each answer in the transport (the server's ``on_answered``), older
    # ones in a wrapper around each handler: counted here either way.
    on_answered = getattr(broker.server, "on_answered", None)

    def step(n: int, frame: Frame) -> int:
        request = RemotingCommand.from_frame(frame)
        started_s = time.perf_counter()
        response = _finish(handler(request, conn))
        if response is None or response.code != ResponseCode.SUCCESS:
            raise SystemExit(f"send refused: {response}")
        if on_answered is not None:
            on_answered(request.code, response.code, time.perf_counter() - started_s)
        response.encode()
        if after_requests is not None and n % per_read == per_read - 1:
            after_requests()
        return n + 1

    def frames() -> list[Frame]:
        return FrameDecoder().feed(b"".join(build().encode() for _ in range(count)))

    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve)
        n = 0
        for frame in frames():  # warm-up: not inside reduce, so not counted
            n = step(n, frame)
        functools.reduce(step, frames(), 0)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--per-read", type=int, default=64, help="sends per read")
    parser.add_argument("--batch", type=int, default=1, help="messages per request")
    args = parser.parse_args()
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    with tempfile.TemporaryDirectory(prefix="send-callgrind-") as tmp:
        trio.run(_run, args.count, args.per_read, args.batch, Path(tmp))


if __name__ == "__main__":
    main()
