"""Liveness soak: no fault at all, the box kept busy; how many elections happen anyway.

Issue 19 wants silent masters replaced within 2 s (300 ms heartbeats, a 1.2 s timeout) and
*no spurious election* while the machine is starved: a broker or controller that does not
get the CPU in time must not be taken for dead. This runs a controller-mode cluster (3
controllers, 3 replicas; on separate hosts with ``--netns``), a workload of ``--rate``
messages per second, and ``--burners`` processes spinning on the CPU (one per core makes
the box fully busy; add more to starve it), for ``--minutes``; the history's ``master``
lines (the controller asked every 0.5 s) give the elections, which must be 0, and the
checkers judge the messages. With ``--burn-command`` the load is that command instead
(``pytest -q -m "not slow"``: the test suite), restarted when it ends.

Usage:
    python -m scenarios.liveness_soak [--minutes 30] [--burners 2] [--rate 200] [--netns]
                                      [--burn-command CMD] [--dir D] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from scenarios.checkers import Expectations, check_history
from scenarios.checkers.fencing import check_fencing
from scenarios.history_file import HistoryFile
from scenarios.local_cluster import create_topic, local_cluster
from scenarios.workload import Recorder, WorkloadConfig, open_workload

BURN = "while True: pass"


@contextmanager
def burners(count: int, command: str | None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` CPU spinners (or ``command`` once, restarted by the caller), all killed
    when the block ends."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if command is not None:
            procs.append(_spawn(shlex.split(command)))
        else:
            procs += [_spawn([sys.executable, "-c", BURN]) for _ in range(count)]
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


async def keep_running(procs: list[subprocess.Popen[bytes]], command: str | None) -> None:
    """Restart the burn command whenever it ends (a test suite finishes in minutes)."""
    while command is not None:
        await trio.sleep(1.0)
        if procs and procs[0].poll() is not None:
            procs[0] = _spawn(shlex.split(command))


async def soak(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    config = WorkloadConfig(
        topic="LivenessSoak",
        producers=4,
        consumers=2,
        rate_per_s=args.rate,
        in_flight=16,
        max_messages=int(args.rate * args.minutes * 60) + 1000,  # traffic the whole run
    )
    history = root / "history.log"
    recorder = Recorder(history)
    try:
        async with (
            trio.open_nursery() as background,
            local_cluster(
                root / "cluster",
                "controller",
                "ASYNC_FLUSH",
                random.Random(args.seed),
                recorder=recorder,
                netns=args.netns,
            ) as cluster,
        ):
            await create_topic(cluster, config, ())
            background.start_soon(cluster.watch_masters)
            with burners(args.burners, args.burn_command) as procs:
                background.start_soon(keep_running, procs, args.burn_command)
                async with open_workload(config, cluster.namesrv, recorder, random.Random(1)) as w:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(w.run_producers)
                        await trio.sleep(args.minutes * 60)
                        w.stop_producing()
                    drained = await w.drain(config.drain_timeout_s)
            background.cancel_scope.cancel()
    finally:
        recorder.close()
    entries = HistoryFile(history)
    report = check_history(entries, Expectations(no_loss=True, min_faults=0))
    elections = check_fencing(entries).elections()
    return {
        "minutes": args.minutes,
        "load": args.burn_command or f"{args.burners} CPU burners",
        "cpus": os.cpu_count(),
        "netns": args.netns and cluster.netns,
        "rate_per_s": args.rate,
        "elections": elections,
        "spurious_elections": sum(elections.values()),
        "acked": report.queue.acked,
        "lost": len(report.queue.lost),
        "drained": drained,
        "failures": list(report.failures),
        "verdict": "PASS" if report.ok and not sum(elections.values()) else "FAIL",
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--burn-command", help="load to run instead of CPU burners")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--netns", action="store_true", help="each node on its own host")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="keep the run here (default: a temp dir)")
    parser.add_argument("--out", help="write the result as JSON")
    args = parser.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="liveness-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    result = trio.run(soak, args, root)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if result["verdict"] == "PASS" else 1)


if __name__ == "__main__":
    cli()
