"""The remoting transport's own cost per request, both ends: no broker, a handler that
answers at once.

    .venv/bin/python -m bench.micro.transport_bench [--in-flight 1,64] [--duration 4] \
        [--size 1024] [--repeat 1]

A server (``protocol.rpc.RemotingServer`` with one handler that answers SUCCESS at once)
runs in a child process; this process drives it with ``protocol.rpc.open_client``,
``--in-flight`` calls outstanding on one connection, each call a
``--size``-byte body (a send's size). For each level it reports requests/s and, per
request, each side's CPU (µs: ``time.process_time`` in each process, read over the
measured window), Trio task steps and **Trio batches** (run-loop passes, counted by an instrument's
``before_io_wait``: each is an ``epoll_wait`` and a pass over the runnable tasks). The
batch counts do not move with the machine's load; CPU per request moves less than
requests/s. Run it under ``strace -c -f`` for the system calls.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import trio
import trio.lowlevel

from protocol.codes import ResponseCode
from protocol.command import RemotingCommand
from protocol.connection import Connection
from protocol.rpc import RemotingServer, open_client

ECHO = 9001
STATS = 9002


class _Batches(trio.abc.Instrument):
    """Counts run-loop passes (one ``epoll_wait`` each) and task steps."""

    def __init__(self) -> None:
        self.count = 0
        self.steps = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


def _stats(batches: _Batches) -> dict[str, float]:
    return {"batches": batches.count, "steps": batches.steps, "cpu_s": time.process_time()}


async def _serve() -> None:
    batches = _Batches()
    trio.lowlevel.add_instrument(batches)

    async def echo(request: RemotingCommand, _conn: Connection) -> RemotingCommand:
        return request.respond(ResponseCode.SUCCESS)

    async def stats(request: RemotingCommand, _conn: Connection) -> RemotingCommand:
        body = json.dumps(_stats(batches)).encode()
        return request.respond(ResponseCode.SUCCESS, body=body)

    server = RemotingServer({ECHO: echo, STATS: stats}, name="transport-bench")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        print(port, flush=True)
        await trio.sleep_forever()


async def _level(addr: str, in_flight: int, args: argparse.Namespace) -> dict[str, Any]:
    batches = _Batches()
    trio.lowlevel.add_instrument(batches)
    body = b"x" * args.size
    done = 0
    measuring = False
    async with open_client(name="transport-bench", tls=False) as client:

        async def server_stats() -> dict[str, float]:
            answer = await client.call(addr, RemotingCommand.request(STATS), timeout_s=10)
            stats: dict[str, float] = json.loads(answer.body)
            return stats

        async def caller() -> None:
            nonlocal done
            while True:
                await client.call(addr, RemotingCommand.request(ECHO, body=body), timeout_s=10)
                if measuring:
                    done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(caller)
            await trio.sleep(1.0)  # warm-up
            before_server = await server_stats()
            before = _stats(batches)
            measuring = True
            t0 = time.monotonic()
            await trio.sleep(args.duration)
            measuring = False
            elapsed = time.monotonic() - t0
            after = _stats(batches)
            after_server = await server_stats()
            nursery.cancel_scope.cancel()
    trio.lowlevel.remove_instrument(batches)
    n = max(done, 1)
    return {
        "in_flight": in_flight,
        "requests": done,
        "requests_per_s": round(done / elapsed),
        "client_cpu_us": round((after["cpu_s"] - before["cpu_s"]) / n * 1e6, 1),
        "server_cpu_us": round((after_server["cpu_s"] - before_server["cpu_s"]) / n * 1e6, 1),
        "client_batches": round((after["batches"] - before["batches"]) / n, 2),
        # the two STATS calls add ~2 batches to the server's window: negligible
        "server_batches": round((after_server["batches"] - before_server["batches"]) / n, 2),
        "client_steps": round((after["steps"] - before["steps"]) / n, 2),
        "server_steps": round((after_server["steps"] - before_server["steps"]) / n, 2),
    }


async def _drive(args: argparse.Namespace, port: int) -> list[dict[str, Any]]:
    addr = f"127.0.0.1:{port}"
    results = []
    for _ in range(args.repeat):
        for level in args.in_flight:
            results.append(await _level(addr, level, args))
            print(json.dumps(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="run the server (internal)")
    parser.add_argument(
        "--in-flight", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64]
    )
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(_serve)
        return
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.micro.transport_bench", "--serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        print(f"server pid {server.pid} port {port}", flush=True)
        trio.run(_drive, args, port)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
