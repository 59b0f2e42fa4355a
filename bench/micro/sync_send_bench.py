"""A SYNC_MASTER's replicated single sends, in one process: Trio work and CPU per send.

    .venv/bin/python -m bench.micro.sync_send_bench [--count 3000] [--size 1024] \
        [--concurrency 1] [--slaves 2]

A Broker (SYNC_MASTER, ASYNC_FLUSH, no NameServer), ``--slaves`` HASlaves on their own
stores, and a RemotingClient sending SEND_MESSAGE_V2 as a Java producer does
(``bench/wire.py``), ``--concurrency`` in flight, all over loopback in this process. Every
send is answered only after every slave acked it (all-ack). Prints, per send: this
process's CPU (``time.process_time``; client, master and slaves together), and the Trio
task steps, tasks spawned and scheduler batches (an Instrument; one batch is one turn of
Trio's run loop, one epoll wait). Those counts do not move with the machine's load, so
two trees compare on a shared machine where msg/s and latency do not; run each tree from
outside the worktree with PYTHONPATH set to it, interleaved.

Under callgrind (instructions do not move with the load either), pass ``--clock-rate``:
valgrind runs the process ~50x slower, so timers that depend on the gap between puts (the
HA master's confirm linger) would take another path than at full speed; a Trio
``MockClock`` running at that rate keeps the virtual gap near the real one (0.015 gives
~0.4-1.4 ms at the 10-50 sends a second seen under valgrind). Instructions per send: the
difference of two runs' totals (``--count`` 300 and 1300) over 1000::

    PYTHONHASHSEED=0 valgrind --tool=callgrind python -m bench.micro.sync_send_bench \
        --count 1300 --clock-rate 0.015
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio.abc
import trio.testing

from bench.wire import SendRequests
from broker.config import BrokerConfig
from broker.ha import EpochFile, HAConfig, HASlave
from broker.server import Broker
from broker.store.config import FlushMode, StoreConfig
from broker.store.store import MessageStore
from protocol.codes import ResponseCode
from protocol.rpc import open_client

TOPIC = "sync-send-bench"


class _Counts(trio.abc.Instrument):
    """Trio's work while counting: task steps, spawns and run-loop turns."""

    def __init__(self) -> None:
        self.on = False
        self.steps = self.spawned = self.batches = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.steps += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.spawned += 1

    def before_io_wait(self, timeout: float) -> None:
        if self.on:
            self.batches += 1


async def _run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    config = BrokerConfig(
        namesrv_addrs=(),
        listen_port=0,
        store_dir=directory / "master",
        min_free_disk_bytes=0,
        broker_role="SYNC_MASTER",
    )
    broker = Broker(config)
    counts = _Counts()
    trio.lowlevel.add_instrument(counts)
    stores = [
        MessageStore.open(
            directory / f"slave{i}",
            StoreConfig(flush_mode=FlushMode.ASYNC_FLUSH, min_free_disk_bytes=0, node_name=f"s{i}"),
        )
        for i in range(1, args.slaves + 1)
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve)
        master = broker.ha_master
        assert master is not None
        for i, store in enumerate(stores, start=1):
            await nursery.start(store.run)
            slave = HASlave(
                store,
                EpochFile.load(store.store_dir),
                HAConfig(),
                broker_id=i,
                node_name=f"s{i}",
                master_address=f"127.0.0.1:{broker.ha_port}",
            )
            await nursery.start(slave.run)
        with trio.fail_after(10):
            while len(master.sync_state_set[0]) != args.slaves + 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
        requests = SendRequests(TOPIC, args.size, queues=4, batch=1)
        address = f"127.0.0.1:{broker.listen_port}"
        codes: dict[int, int] = {}
        async with open_client() as client:

            async def sender(count: int) -> None:
                for _ in range(count):
                    response = await client.call(address, requests.single(), timeout_s=5.0)
                    codes[response.code] = codes.get(response.code, 0) + 1

            await sender(200)  # topic auto-created, connections up, caches warm
            codes.clear()
            counts.on = True
            start, cpu = time.perf_counter(), time.process_time()
            async with trio.open_nursery() as senders:
                for _ in range(args.concurrency):
                    senders.start_soon(sender, args.count // args.concurrency)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            counts.on = False
        nursery.cancel_scope.cancel()
    for store in stores:
        await store.close()
    sent = sum(codes.values())
    if codes.get(ResponseCode.SUCCESS) != sent:
        raise SystemExit(f"not every send was SEND_OK: {codes}")
    return {
        "count": sent,
        "concurrency": args.concurrency,
        "slaves": args.slaves,
        "msg_per_s": round(sent / elapsed),
        "cpu_us_per_msg": round(cpu / sent * 1e6, 1),
        "task_steps_per_msg": round(counts.steps / sent, 2),
        "tasks_spawned_per_msg": round(counts.spawned / sent, 2),
        "batches_per_msg": round(counts.batches / sent, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--slaves", type=int, default=2)
    parser.add_argument(
        "--clock-rate", type=float, default=None, help="run Trio's clock at this rate (valgrind)"
    )
    args = parser.parse_args()
    clock = None if args.clock_rate is None else trio.testing.MockClock(rate=args.clock_rate)
    with tempfile.TemporaryDirectory(prefix="sync-send-bench-") as tmp:
        row = trio.run(_run, args, Path(tmp), clock=clock)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
