"""Failover benchmark: how long a controller-mode cluster is without a writable master.

One ``rmq cluster up --mode controller`` cluster of real processes (3 controllers, a
NameServer, group broker-a of 3 replicas, allAckInSyncStateSet), started and stopped by the
chaos harness's ``LocalCluster`` (the one process-management code of the project).

(a) master  ``--rounds`` times: SIGKILL the master while one SDK producer sends back to back
            (send timeout 10 s, so a send begun during the failover waits for the new
            master instead of failing); the figure is the time from the kill to the SEND_OK
            of the first send *begun after* the kill. The old master is then started again
            and the round ends once the controller's SyncStateSet holds all 3 replicas again.
            Every SEND_OK's message is looked for at the end (pulled by a consumer): the
            number lost is reported and must be 0.
(s) silent  with ``--silent``, instead of (a): SIGSTOP the master (a hung host: no FIN, no
            RST; the controllers hear nothing more), while a prober starts a send every
            ``PROBE_INTERVAL_S`` (each its own task, send timeout ``SILENT_SEND_TIMEOUT_S``,
            the route re-read every ``ROUTE_POLL_S``: RocketMQ's pollNameServerInterval,
            whose 30 s default would hide the failover behind the route); the figure is
            the time from the SIGSTOP to the first SEND_OK stored by another broker (the
            store address in its offset msgId). The old master then gets SIGCONT, learns
            it was deposed and rejoins as a slave; the round ends once the SyncStateSet
            holds all 3 again. Targets (issue 19): p50 <= 2 s, max <= 3 s.
            With ``--partition`` (root: every node on its own host, ``--netns``) the master
            is cut off the network instead (every packet to and from its host dropped);
            the heal lets its packets through again.
(b) leader  ``--leader-rounds`` times: SIGKILL the controller leader; the figure is the time
            until another controller says it leads and answers GET_SYNC_STATE_DATA as leader
            (a controller that can serve reads as leader has committed its no-op, so
            elections are possible again). The killed controller is started again.

Reports p50 / p99 / max per phase (RocketMQ's own figure for (a) is about 10 s: a 10 s
broker lease plus a 5 s scan, or the TCP close at once; anchors.md §1.2) and, with
``--out F``, JSON. Numbers from a shared 2-core machine vary; repeat and give the range.

Usage:
    python -m scenarios.failover_bench [--rounds 20] [--leader-rounds 10] [--silent]
                                       [--dir D] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.measure import percentile
from client import admin as admin_api
from client.consumer import ConsumeFrom, ConsumeResult, open_push_consumer
from client.message import Message, ReceivedMessage, SendStatus
from client.producer import open_producer
from protocol.errors import RocketError
from scenarios.faults import link_drops
from scenarios.local_cluster import LocalCluster, create_topic, local_cluster
from scenarios.workload import WorkloadConfig, poll_until, store_address

GROUP = "broker-a"
TOPIC = "FailoverBench"
SEND_TIMEOUT_S = 10.0
#: Silent rounds: a send begun every this often...
PROBE_INTERVAL_S = 0.02
#: ...each given up after this long (those begun before the failover wait on the paused
#: master; bounded so they do not pile up)...
SILENT_SEND_TIMEOUT_S = 5.0
#: ...by a producer that re-reads the route this often.
ROUTE_POLL_S = 0.2
#: How long the old master stays paused after the new one acked (it then rejoins).
PAUSE_AFTER_S = 1.0
ROUND_TIMEOUT_S = 60.0
REJOIN_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 60.0


def summary(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values_s]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    return {
        "rounds": len(ms),
        "p50_ms": round(p50, 1) if p50 is not None else None,
        "p99_ms": round(p99, 1) if p99 is not None else None,
        "max_ms": round(max(ms), 1) if ms else None,
        "all_ms": [round(v, 1) for v in ms],
    }


async def sync_state_size(cluster: LocalCluster) -> int:
    controllers = [c.address for c in cluster.controllers() if c.address]
    try:
        async with admin_api.open_admin(cluster.namesrv, timeout_s=2.0) as admin:
            info = await admin.sync_state_set(controllers, broker_name=GROUP)
    except RocketError:
        return 0
    replicas = info.replicas_info_table.get(GROUP)
    return len(replicas.in_sync_replicas) if replicas is not None else 0


def bench_consumer(cluster: LocalCluster, consumed: set[str]) -> AbstractAsyncContextManager[Any]:
    """A push consumer of the bench topic that adds every body it receives to ``consumed``."""

    async def listener(messages: list[ReceivedMessage]) -> ConsumeResult:
        consumed.update(m.body.decode() for m in messages)
        return ConsumeResult.SUCCESS

    return open_push_consumer(
        cluster.namesrv,
        group="failover-bench",
        listener=listener,
        subscriptions={TOPIC: "*"},
        consume_from=ConsumeFrom.FIRST,
    )


async def wait_rejoined(cluster: LocalCluster) -> None:
    """Until the controller's SyncStateSet holds all 3 replicas again."""
    with trio.fail_after(REJOIN_TIMEOUT_S):
        while True:
            if await sync_state_size(cluster) >= 3:
                return
            await trio.sleep(0.2)


@attrs.define
class _RoundState:
    sent: int = 0
    #: trio clock of the kill of this round (None between rounds).
    killed_at: float | None = None
    #: trio clock of the SEND_OK of the first send begun after the kill.
    first_after: float | None = None

    def arm(self, now: float) -> None:
        self.killed_at = now
        self.first_after = None


async def master_rounds(cluster: LocalCluster, rounds: int) -> dict[str, Any]:
    acked: set[str] = set()
    consumed: set[str] = set()
    times_s: list[float] = []
    state = _RoundState()

    async def send_forever(producer: Any) -> None:
        while True:
            value = f"m{state.sent}"
            state.sent += 1
            begun = trio.current_time()
            try:
                await producer.send(Message(topic=TOPIC, body=value.encode()))
            except RocketError:
                continue
            acked.add(value)
            killed_at = state.killed_at
            if killed_at is not None and begun >= killed_at and state.first_after is None:
                state.first_after = trio.current_time()

    async with (
        bench_consumer(cluster, consumed),
        open_producer(
            cluster.namesrv, group="failover-bench", timeout_s=SEND_TIMEOUT_S
        ) as producer,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_forever, producer)
            for i in range(rounds):
                with trio.fail_after(ROUND_TIMEOUT_S):
                    master = await cluster.resolve(f"master:{GROUP}")
                    await trio.sleep(0.5)  # steady traffic before the kill
                    state.arm(trio.current_time())
                    await cluster.kill(master)
                    await poll_until(lambda: state.first_after is not None, ROUND_TIMEOUT_S)
                    assert state.first_after is not None and state.killed_at is not None
                    took_s = state.first_after - state.killed_at
                    state.killed_at = None
                    times_s.append(took_s)
                    print(
                        f"master round {i + 1}: killed {master}, first SEND_OK after {took_s * 1000:.0f} ms"
                    )
                    await cluster.restart(master)
                await wait_rejoined(cluster)
            nursery.cancel_scope.cancel()
        # The sender has stopped: a send answered while it was being cancelled is in
        # ``acked`` by now (checking before it ended counted such a message lost).
        await poll_until(lambda: acked <= consumed, DRAIN_TIMEOUT_S)
    lost = sorted(acked - consumed)
    return {**summary(times_s), "acked": len(acked), "lost": len(lost), "lost_sample": lost[:10]}


def go_silent(cluster: LocalCluster, node: str, partition: bool) -> None:
    if partition:
        cluster.drop_packets("bench-netsplit", node, link_drops(node, "both", None, 1.0))
    else:
        cluster.pause(node)


def come_back(cluster: LocalCluster, node: str, partition: bool) -> None:
    if partition:
        cluster.heal_packets("bench-netsplit", node)
    else:
        cluster.resume(node)


async def silent_rounds(
    cluster: LocalCluster, rounds: int, *, partition: bool = False
) -> dict[str, Any]:
    """(s): SIGSTOP (or cut off) the master; time to the first SEND_OK stored by another
    broker."""
    acked: set[str] = set()
    consumed: set[str] = set()
    times_s: list[float] = []
    degraded: set[str] = set()
    sent = 0
    #: Per round: the paused master's address and the SIGSTOP time; the first SEND_OK
    #: stored elsewhere lands in ``first``.
    armed: dict[str, Any] = {}

    async def send_one(producer: Any, value: str) -> None:
        try:
            result = await producer.send(Message(topic=TOPIC, body=value.encode()))
        except RocketError:
            return
        if result.status is not SendStatus.SEND_OK:
            # Stored, not as durable as configured (the old master deposed while it
            # waited for replica acks): counted apart, never judged as lost.
            degraded.add(value)
            return
        acked.add(value)
        if (
            armed.get("old") not in (None, store_address(result.offset_msg_id))
            and "first" not in armed
        ):
            armed["first"] = trio.current_time()

    async def probe(producer: Any, nursery: trio.Nursery) -> None:
        nonlocal sent
        while True:
            nursery.start_soon(send_one, producer, f"s{sent}")
            sent += 1
            await trio.sleep(PROBE_INTERVAL_S)

    async with (
        bench_consumer(cluster, consumed),
        open_producer(
            cluster.namesrv,
            group="failover-bench",
            timeout_s=SILENT_SEND_TIMEOUT_S,
            route_refresh_interval_s=ROUTE_POLL_S,
        ) as producer,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe, producer, nursery)
            for i in range(rounds):
                with trio.fail_after(ROUND_TIMEOUT_S):
                    master = await cluster.resolve(f"master:{GROUP}")
                    address = cluster.node(master).address
                    await trio.sleep(0.5)  # steady traffic before the pause
                    armed.clear()
                    armed["old"] = address
                    paused_at = trio.current_time()
                    go_silent(cluster, master, partition)
                    try:
                        await poll_until(lambda: "first" in armed, ROUND_TIMEOUT_S)
                        await trio.sleep(PAUSE_AFTER_S)
                    finally:
                        come_back(cluster, master, partition)
                    took_s = armed["first"] - paused_at
                    armed.clear()
                    times_s.append(took_s)
                    print(
                        f"silent round {i + 1}: {'cut off' if partition else 'paused'} {master}, "
                        "first SEND_OK on another broker "
                        f"after {took_s * 1000:.0f} ms"
                    )
                await wait_rejoined(cluster)
            nursery.cancel_scope.cancel()
        # Every probe has ended: what it was answered while cancelled is in ``acked``.
        await poll_until(lambda: acked <= consumed, DRAIN_TIMEOUT_S)
    lost = sorted(acked - consumed)
    return {
        **summary(times_s),
        "acked": len(acked),
        "lost": len(lost),
        "lost_sample": lost[:10],
        "degraded": len(degraded),
        "degraded_lost": len(degraded - consumed),
    }


async def leader_rounds(cluster: LocalCluster, rounds: int) -> dict[str, Any]:
    times_s: list[float] = []
    async with admin_api.open_admin(cluster.namesrv, timeout_s=1.0) as admin:
        for i in range(rounds):
            with trio.fail_after(ROUND_TIMEOUT_S):
                leader = await cluster.controller_leader()
                survivors = [
                    c.address for c in cluster.controllers() if c.name != leader and c.address
                ]
                killed_at = trio.current_time()
                await cluster.kill(leader)
                while True:
                    try:  # answered only by a leader that committed its no-op
                        await admin.sync_state_set(survivors, broker_name=GROUP)
                        break
                    except RocketError:
                        await trio.sleep(0.02)
                took_s = trio.current_time() - killed_at
                times_s.append(took_s)
                found = await cluster.controller_leader()
                print(
                    f"leader round {i + 1}: killed {leader}, new leader {found} serving after {took_s * 1000:.0f} ms"
                )
                await cluster.restart(leader)
                await trio.sleep(2.0)  # the restarted node catches up before the next kill
    return summary(times_s)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="failover-bench-"))
    try:
        async with local_cluster(
            root / "cluster", "controller", "ASYNC_FLUSH", random.Random(1), netns=args.partition
        ) as cluster:
            if args.partition and not cluster.netns:
                raise SystemExit(f"--partition needs separate hosts: {cluster.fallback}")
            await create_topic(cluster, WorkloadConfig(topic=TOPIC), (GROUP,))
            result: dict[str, Any] = {}
            if args.rounds and args.partition:
                result["master_netsplit_to_first_send_ok"] = await silent_rounds(
                    cluster, args.rounds, partition=True
                )
            elif args.rounds and args.silent:
                result["master_sigstop_to_first_send_ok"] = await silent_rounds(
                    cluster, args.rounds
                )
            elif args.rounds:
                result["master_kill_to_first_send_ok"] = await master_rounds(cluster, args.rounds)
            if args.leader_rounds:
                result["controller_leader_kill_to_serving_leader"] = await leader_rounds(
                    cluster, args.leader_rounds
                )
            return result
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="master kills")
    parser.add_argument("--leader-rounds", type=int, default=10, help="controller leader kills")
    parser.add_argument(
        "--silent", action="store_true", help="SIGSTOP the master instead of SIGKILL (rounds)"
    )
    parser.add_argument(
        "--partition",
        action="store_true",
        help="cut the master off the network instead (separate hosts; root)",
    )
    parser.add_argument("--dir", help="keep the cluster's data and logs here")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args()
    result = trio.run(main, args)
    for phase, figures in result.items():
        extra = f", {figures['acked']} acked, {figures['lost']} lost" if "lost" in figures else ""
        print(
            f"{phase}: {figures['rounds']} rounds, p50 {figures['p50_ms']} ms, "
            f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms{extra}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    masters = [
        result.get(k)
        for k in (
            "master_kill_to_first_send_ok",
            "master_sigstop_to_first_send_ok",
            "master_netsplit_to_first_send_ok",
        )
    ]
    if any(m is not None and m["lost"] for m in masters):
        sys.exit(1)


if __name__ == "__main__":
    cli()
