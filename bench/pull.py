"""Raw pull throughput: PULL_MESSAGE of a whole topic from offset 0, as a process of its own.

Usage (the matrix runs it; it prints one JSON object, ``bench.matrix_cells.Figures``):

    python -m bench.pull -n NS -t TOPIC [--duration 5] [--broker-pid PID ...]

Rules:
- The queues come from the topic's route: every queue of every group, pulled from its
  group's master with one PULL_MESSAGE of up to 32 messages in flight per queue (what
  ``bench/broker_bench.py`` phase (d) does, over one connection), from offset 0 until the
  queue answers PULL_NOT_FOUND (its end) or ``--duration`` is over. No offset is committed.
- Measured: messages pulled per second, latency per request, this process's CPU and the
  brokers' (``--broker-pid``, summed) from the first request to the last answer.
- Every call has a deadline (``--timeout``); a failed request ends its queue and is counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import trio

from bench.broker_bench import Stop, pull_worker
from bench.matrix_cells import Figures, measured
from bench.measure import Meter, cpu_between, sample_cpu
from client.admin import open_admin
from protocol.route import master_address, subscribe_queues
from protocol.rpc import open_client


async def pull_topic(
    namesrv: str, topic: str, *, duration_s: float, timeout_s: float, broker_pids: Sequence[int]
) -> Figures:
    """Pull every queue of ``topic`` to its end (at most ``duration_s``); the figures."""
    async with open_admin(namesrv, timeout_s=timeout_s) as admin:
        route = await admin.topic_route(topic)
    masters = {b.broker_name: master_address(b) for b in route.broker_datas}
    queues = [(masters[q.broker_name], q.queue_id) for q in subscribe_queues(topic, route)]
    if not queues or any(addr is None for addr, _ in queues):
        raise SystemExit(f"topic {topic} has no readable queue with a live master")
    async with open_client(name="bench-pull", default_timeout_s=timeout_s) as client:
        meter = Meter.starting(trio.current_time(), latency_per_message=False)
        start = sample_cpu(broker_pids)
        stop = Stop(trio.current_time() + duration_s)
        async with trio.open_nursery() as nursery:
            for addr, queue_id in queues:
                assert addr is not None
                worker = pull_worker(topic, [queue_id], timeout_s)
                nursery.start_soon(worker, client, addr, meter, stop)
        meter.finish(trio.current_time())
        use = cpu_between(start, sample_cpu(broker_pids))
    return measured(meter, use, broker_pids)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pull", description=__doc__)
    parser.add_argument("-n", "--namesrv", required=True)
    parser.add_argument("-t", "--topic", required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--broker-pid", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    figures = trio.run(
        lambda: pull_topic(
            args.namesrv,
            args.topic,
            duration_s=args.duration,
            timeout_s=args.timeout,
            broker_pids=args.broker_pid,
        )
    )
    json.dump(figures.to_json(), sys.stdout)
    print()


if __name__ == "__main__":
    main()
