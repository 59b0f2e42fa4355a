"""A slave stops under thousands of sync sends: how long the master's loop is held when
its SyncStateSet shrink answers them all at once (issue 14; docs/CHAOS.md, finding 1).

    python -m bench.stall_bench [--sends 20000] [--connections 8] [--size 1024] [--dir D]

Rules:
- The default cluster (``rmq cluster up``: 3 controllers, group broker-a of 3 replicas,
  allAckInSyncStateSet), with ``slaveTimeout`` at 60 s so the sends wait for the shrink
  rather than their own timeout.
- One slave is stopped (SIGSTOP), then ``--sends`` single SEND_MESSAGE_V2 (as a Java
  producer sends them) go in flight to the master over ``--connections`` connections:
  none can get the stopped slave's ack. The master drops the silent slave (its HA send
  times out) and proposes the set without it; once the controllers agree, every waiting
  send is answered at once.
- Measured: a GET_MAX_OFFSET probe every 5 ms from a process of its own (this one is busy
  with the answers); its latency from the first SEND_OK to the last is the master loop's
  hold (max, p99). Also the time from the first SEND_OK to the last, the answers' codes,
  and the master's epoch before and after (a higher one: the controllers deposed it, a
  spurious election). Times are ``time.monotonic()``, one clock for both processes.
- Also counted: the controllers' reports of the master as inactive (its heartbeats late
  past ``controllerHeartBeatTimeoutMills``), and the probe's max from the stop on (the
  sends' intake too).
- The slave is resumed (SIGCONT) and the cluster stopped and removed (``--keep``: kept) at
  the end, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.matrix import GROUP, RmqCluster, rmq_cluster
from bench.matrix_cells import DEPLOYMENTS
from bench.measure import percentile
from bench.wire import SendRequests, create_topic, open_clients
from client.admin import open_admin
from launcher.pids import signal_node
from launcher.ready import BROKER
from launcher.record import load_cluster
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import ReplicasInfo
from protocol.errors import RocketError
from protocol.headers import GetMaxOffsetRequestHeader
from protocol.rpc import RemotingClient, open_client

TOPIC = "StallBench"
QUEUES = 8
PROBE_EVERY_S = 0.005
#: How long the sends may wait for the shrink (the HA send timeout is 10 s).
RELEASE_TIMEOUT_S = 90.0


async def replicas(cluster: RmqCluster) -> ReplicasInfo:
    async with open_admin(cluster.namesrv, timeout_s=5.0) as admin:
        info = await admin.sync_state_set(list(cluster.controllers), broker_name=GROUP)
    return info.replicas_info_table[GROUP]


async def stall(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    deployment = DEPLOYMENTS["controller"]
    extra = ("--broker-set", "slaveTimeout=60000", "--no-proxy")
    async with rmq_cluster(root, deployment, extra) as cluster:
        before = await replicas(cluster)
        master = before.master_address
        assert master is not None
        record = load_cluster(root)
        assert record is not None
        slave = next(n for n in record.nodes if n.kind == BROKER and n.address != master)
        async with (
            open_client(name="bench", default_timeout_s=10.0) as client,
            open_clients(args.connections) as senders,
        ):
            await create_topic(client, master, TOPIC, QUEUES)
            requests = SendRequests(TOPIC, args.size, queues=QUEUES, batch=1)
            codes: dict[str, int] = {}
            answered: list[float] = []

            async def send(sender: RemotingClient, request: RemotingCommand) -> None:
                try:
                    response = await sender.call(master, request, timeout_s=RELEASE_TIMEOUT_S)
                    name = ResponseCode(response.code).name
                except RocketError as exc:
                    name = type(exc).__name__
                codes[name] = codes.get(name, 0) + 1
                answered.append(time.monotonic())

            stop_file = root / "probe.stop"
            probe_argv = [sys.executable, "-m", "bench.stall_bench", "--probe", master]
            probe_argv += ["--stop-file", str(stop_file)]
            probed: list[list[float]] = []

            async def probing() -> None:
                done = await trio.run_process(probe_argv, capture_stdout=True)
                probed.extend(json.loads(done.stdout))

            try:
                with trio.fail_after(RELEASE_TIMEOUT_S):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(probing)
                        await trio.sleep(1.0)  # the probe process up and probing
                        stopped = time.monotonic()
                        signal_node(slave, signal.SIGSTOP)
                        async with trio.open_nursery() as sending:
                            for n in range(args.sends):
                                sending.start_soon(
                                    send, senders[n % len(senders)], requests.single()
                                )
                        stop_file.touch()
            finally:
                signal_node(slave, signal.SIGCONT)
                stop_file.touch()
        after = await replicas(cluster)
    first, last = min(answered), max(answered)
    during = [latency for at, latency in probed if first - 0.5 <= at <= last]
    whole = [latency for at, latency in probed if stopped <= at <= last]
    # The controllers' word for a master whose heartbeats stopped coming in time.
    missed = f"broker {GROUP}-{before.master_broker_id} ("
    inactive = sum(
        line.count("is inactive: no heartbeat")  # not "its connection closed": the end
        for log in root.glob("n*/stderr.log")
        for line in log.read_text(errors="replace").splitlines()
        if missed in line
    )
    row: dict[str, Any] = {
        "sends": args.sends,
        "connections": args.connections,
        "codes": codes,
        "answers_spread_s": round(last - first, 3),
        "probe_max_ms": round(1000 * max(during, default=0.0), 1),
        "probe_p99_ms": round(1000 * (percentile(during, 99) or 0.0), 1),
        "probes_during": len(during),
        "probe_max_whole_ms": round(1000 * max(whole, default=0.0), 1),
        "master_inactive_reports": inactive,
        "master_epoch_before": before.master_epoch,
        "master_epoch_after": after.master_epoch,
        "in_sync_after": len(after.in_sync_replicas),
    }
    print(
        f"{args.sends} sends answered within {row['answers_spread_s']} s; probe max "
        f"{row['probe_max_ms']} ms, p99 {row['probe_p99_ms']} ms ({len(during)} probes); "
        f"from the stop {row['probe_max_whole_ms']} ms; codes {codes}; master epoch "
        f"{before.master_epoch} -> {after.master_epoch}, its heartbeats reported late {inactive} times",
        flush=True,
    )
    return row


async def probe(address: str, stop_file: Path) -> None:
    """Until ``stop_file`` exists: GET_MAX_OFFSET to ``address`` every ``PROBE_EVERY_S``;
    then print [[sent at, latency s], ...] as JSON (a failure counts its time to fail)."""
    request = RemotingCommand.request(
        RequestCode.GET_MAX_OFFSET,
        GetMaxOffsetRequestHeader(topic=TOPIC, queue_id=0).to_ext_fields(),
    )
    samples: list[tuple[float, float]] = []
    async with open_client(name="probe", default_timeout_s=10.0) as client:
        while not stop_file.exists():
            started = time.monotonic()
            with contextlib.suppress(RocketError):
                await client.call(address, request, timeout_s=10.0)
            samples.append((started, time.monotonic() - started))
            await trio.sleep(PROBE_EVERY_S)
    print(json.dumps(samples))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", metavar="ADDR", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sends", type=int, default=20_000, help="sync sends in flight")
    parser.add_argument("--connections", type=int, default=8, help="their connections")
    parser.add_argument("--size", type=int, default=1024, help="message body bytes")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the cluster dir")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the cluster directory")
    args = parser.parse_args(argv)
    if args.probe:
        trio.run(probe, args.probe, args.stop_file)
        return
    root = Path(tempfile.mkdtemp(prefix="stall-bench-", dir=args.dir))
    try:
        row = trio.run(stall, args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
