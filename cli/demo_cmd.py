"""``rmq demo``: a controller-mode cluster loses its master under load, and nothing acked is lost.

``--silent``: the master is frozen with SIGSTOP (a hung host: no connection closes, the
controllers only stop hearing its heartbeats) instead of killed; the demo shows the
controller electing another master about 1.2 s later and the first SEND_OK the new master
stores, then SIGCONT: the old master learns it was deposed and rejoins as a slave.

What it does, in order (every step real: processes, sockets, files, SIGKILL):
1. ``rmq cluster up --mode controller`` in a fresh directory: 3 controllers (Raft), a
   NameServer, broker group ``broker-a`` of 3 replicas with allAckInSyncStateSet on.
2. Shows the controller leader and the group's master, epochs and SyncStateSet.
3. Producers and push consumers of the SDK run on one topic at ``--rate`` messages per
   second; every call is written to ``DIR/history.log`` (OpenChaos format).
4. After a quarter of ``--seconds`` the master gets SIGKILL (SIGSTOP with ``--silent``);
   every change the controller
   makes (the election, the SyncStateSet shrinking and growing back) is printed as it
   happens, with the time since the kill; the report gives when the first send begun
   after the kill was acked.
5. Half way through, the old master is started again (SIGCONT with ``--silent``); it
   rejoins as a slave. The cluster's dashboard (its URL is printed at the start) shows all
   of it; the page it saved is kept as ``DIR/dashboard.html`` and the report links its
   failover timeline.
6. Sends stop, consumers drain, and the OpenChaos checkers read the history: the last line
   is ``N sent, N acked, N consumed, 0 lost`` from that check, never from counters.

Exit status 0 when nothing acked was lost, 1 otherwise (or when the demo cannot run), 130
after a Ctrl-C. The cluster is always stopped; its data and logs are removed after a run
that passed, unless ``--keep-data``, and kept after one that did not.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import attrs
import trio
import typer

from cli.output import err, fail, out
from cli.security import ClusterSecurity
from client import admin as admin_api
from launcher.ready import DASHBOARD, PROXY
from protocol.controller_bodies import ReplicasInfo
from protocol.errors import RocketError
from protocol.rpc import open_client
from scenarios.checkers import CheckReport, Expectations, check_history
from scenarios.checkers.queue import SEND_OK
from scenarios.history import (
    ENQUEUE,
    Entry,
    FaultEvent,
    Outcome,
    Phase,
    Request,
    Response,
    extra_fields,
    iter_history,
    make_extra,
)
from scenarios.local_cluster import HarnessError, LocalCluster, create_topic, local_cluster
from scenarios.report import keep_dashboard, timeline_link
from scenarios.workload import Recorder, Workload, WorkloadConfig, open_workload

GROUP = "broker-a"
TOPIC = "DemoTopic"
#: How often the controller is asked for the group's SyncStateSet.
WATCH_INTERVAL_S = 0.1
PROGRESS_INTERVAL_S = 2.0
#: After the last send, how long the consumers have to receive every acked message.
DRAIN_TIMEOUT_S = 60.0
#: ``--silent``: how often producers re-read the route (pollNameServerInterval, 30 s by
#: default, would hide the failover behind the route). Each producer also keeps as many
#: sends in flight as its rate starts within a send timeout, so those the frozen master
#: holds do not hold up the sends after them.
SILENT_ROUTE_POLL_S = 0.2
PRODUCERS = 4


@attrs.frozen(kw_only=True)
class GroupView:
    """What the demo shows of the group: the controller's ReplicasInfo, by node name."""

    master: str | None
    master_id: int | None
    master_epoch: int
    sync_state_set: tuple[str, ...]
    sync_state_set_epoch: int

    def describe(self) -> str:
        master = f"{self.master} (id {self.master_id})" if self.master else "no master"
        members = ", ".join(self.sync_state_set) or "-"
        return (
            f"master {master} at epoch {self.master_epoch}; "
            f"SyncStateSet {{{members}}} (epoch {self.sync_state_set_epoch})"
        )


def group_view(info: ReplicasInfo, names: dict[str, str]) -> GroupView:
    """``names``: broker address -> node name (an unknown address is shown as it is)."""

    def name(address: str | None) -> str | None:
        return None if not address else names.get(address, address)

    return GroupView(
        master=name(info.master_address),
        master_id=info.master_broker_id,
        master_epoch=info.master_epoch,
        sync_state_set=tuple(sorted(name(r.broker_address) or "?" for r in info.in_sync_replicas)),
        sync_state_set_epoch=info.sync_state_set_epoch,
    )


def summary_line(report: CheckReport) -> str:
    """The demo's last line, from the checker's counts: acked means SEND_OK (acks with a
    degraded status, such as FLUSH_SLAVE_TIMEOUT, are reported on the line before)."""
    q = report.queue
    return (
        f"{q.enqueue_invoked} sent, {q.acked - q.acked_degraded} acked, "
        f"{q.distinct_dequeued} consumed, {len(q.lost)} lost"
    )


@attrs.frozen(kw_only=True)
class FailoverFigures:
    """What producers felt of the kill, read from the history."""

    #: From the kill to the SEND_OK of the first send begun after it (None: none acked).
    first_ack_after_kill_ms: int | None
    #: The slowest acked send of the run (the SDK waits for the new master within it).
    slowest_ack_ms: int
    #: From the fault to the first SEND_OK stored by another broker than ``old_address``
    #: (None: none, or no old address given).
    first_ok_elsewhere_ms: int | None = None


def failover_figures(entries: Sequence[Entry], old_address: str | None = None) -> FailoverFigures:
    kill_ms = next(
        (e.timestamp_ms for e in entries if isinstance(e, FaultEvent) and e.phase is Phase.START),
        None,
    )
    begun: dict[tuple[int, str | None], int] = {}
    first: int | None = None
    elsewhere: int | None = None
    slowest = 0
    for e in entries:
        if isinstance(e, Request) and e.op == ENQUEUE:
            begun[(e.client_id, e.value)] = e.timestamp_ms
        elif isinstance(e, Response) and e.op == ENQUEUE and e.outcome is Outcome.SUCCESS:
            slowest = max(slowest, e.latency_ms)
            started = begun.get((e.client_id, e.value))
            if kill_ms is not None and started is not None and started >= kill_ms:
                after = e.timestamp_ms - kill_ms
                first = after if first is None else min(first, after)
            fields = extra_fields(e.extra)
            if (
                kill_ms is not None
                and old_address is not None
                and e.timestamp_ms >= kill_ms
                and fields.get("status", SEND_OK) == SEND_OK
                and fields.get("store") not in (None, old_address)
            ):
                after = e.timestamp_ms - kill_ms
                elsewhere = after if elsewhere is None else min(elsewhere, after)
    return FailoverFigures(
        first_ack_after_kill_ms=first, slowest_ack_ms=slowest, first_ok_elsewhere_ms=elsewhere
    )


class Demo:
    """One run: the cluster, the workload and what the watchers saw."""

    def __init__(
        self, cluster: LocalCluster, workload: Workload, recorder: Recorder, *, silent: bool
    ) -> None:
        self.cluster = cluster
        self.workload = workload
        self.recorder = recorder
        self.silent = silent
        self.fault = "pause" if silent else "kill"
        self.started_s = trio.current_time()
        self.killed_s: float | None = None
        #: The client address of the master the fault hit.
        self.old_address: str | None = None
        self.view: GroupView | None = None

    def say(self, text: str) -> None:
        if self.killed_s is None:
            stamp = f"{trio.current_time() - self.started_s:6.1f} s"
        else:
            stamp = f"kill{trio.current_time() - self.killed_s:+6.2f} s"
        out.print(f"[{stamp}] {text}", markup=False, highlight=False)

    def _names(self) -> dict[str, str]:
        return {n.address: n.name for n in self.cluster.brokers() if n.address}

    def _controllers(self) -> list[str]:
        return [c.address for c in self.cluster.controllers() if c.address]

    async def read_view(self) -> GroupView | None:
        """The group as the controller leader sees it now (None: no leader answered)."""
        try:
            async with admin_api.open_admin(self.cluster.namesrv, timeout_s=1.0) as admin:
                info = await admin.sync_state_set(self._controllers(), broker_name=GROUP)
        except RocketError:
            return None
        replicas = info.replicas_info_table.get(GROUP)
        return group_view(replicas, self._names()) if replicas is not None else None

    async def watch_controller(self) -> None:
        """Print every change of the group's master, epochs or SyncStateSet."""
        while True:
            view = await self.read_view()
            if view is not None and view != self.view:
                before, self.view = self.view, view
                if before is not None and view.master_epoch > before.master_epoch:
                    self.say(f"controller elected a new master: {view.describe()}")
                elif before is not None:
                    self.say(f"controller changed the SyncStateSet: {view.describe()}")
            await trio.sleep(WATCH_INTERVAL_S)

    async def show_progress(self) -> None:
        p = self.workload.progress
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            self.say(
                f"sent {p.sent}, acked {len(p.acked)}, consumed {len(p.consumed)}, "
                f"failed {p.failed}, unknown outcome {p.unknown}"
            )

    async def kill_master(self) -> str:
        master = await self.cluster.resolve(f"master:{GROUP}")
        node = self.cluster.node(master)
        self.old_address = node.address
        self.recorder.fault(self.fault, Phase.START, make_extra(target=master))
        self.killed_s = trio.current_time()
        if self.silent:
            self.say(
                f"SIGSTOP {master} (pid {node.pid}), the master of {GROUP}: it hangs with "
                "its connections open; the controllers only stop hearing its heartbeats"
            )
            self.cluster.pause(master)
        else:
            self.say(f"SIGKILL {master} (pid {node.pid}), the master of {GROUP}")
            await self.cluster.kill(master)
        return master

    async def restart(self, node: str) -> None:
        if self.silent:
            self.cluster.resume(node)
            self.recorder.fault(self.fault, Phase.END, make_extra(target=node))
            self.say(f"SIGCONT {node}: it learns it was deposed and rejoins as a slave")
            return
        await self.cluster.restart(node)
        self.recorder.fault(self.fault, Phase.END, make_extra(target=node))
        self.say(f"{node} started again on its old ports; it rejoins as a slave")


async def run_demo(
    root: Path,
    *,
    seconds: float,
    rate_per_s: float,
    seed: int,
    silent: bool = False,
    tls: bool = False,
) -> tuple[CheckReport, list[Entry], str | None] | None:
    """The whole demo; None when a Ctrl-C stopped it (the cluster is stopped either way).

    SIGINT is taken here, not as KeyboardInterrupt: the first one cancels the traffic, and
    later ones are ignored while the cluster is stopped, so no node is left running.
    """
    interrupted = False
    async with trio.open_nursery() as guard:
        work = trio.CancelScope()

        async def on_sigint(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal interrupted
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    if not interrupted:
                        interrupted = True
                        err.print("interrupted: stopping the cluster (Ctrl-C again is ignored)")
                        work.cancel()

        await guard.start(on_sigint)
        with work:
            result = await _run(
                root, seconds=seconds, rate_per_s=rate_per_s, seed=seed, silent=silent, tls=tls
            )
        guard.cancel_scope.cancel()
    return None if interrupted else result


async def _run(
    root: Path, *, seconds: float, rate_per_s: float, seed: int, silent: bool, tls: bool
) -> tuple[CheckReport, list[Entry], str | None]:
    rng = random.Random(seed)
    config = WorkloadConfig(
        topic=TOPIC,
        producers=PRODUCERS,
        consumers=2,
        rate_per_s=rate_per_s,
        drain_timeout_s=DRAIN_TIMEOUT_S,
    )
    if silent:
        config = attrs.evolve(
            config.at_rate(rate_per_s), route_refresh_interval_s=SILENT_ROUTE_POLL_S
        )
    history = root / "history.log"
    recorder = Recorder(history)
    err.print(
        f"starting a controller-mode cluster in {root / 'cluster'}: 3 controllers (Raft), "
        f"a NameServer, group {GROUP} of 3 replicas (allAckInSyncStateSet)",
        markup=False,
    )
    try:
        cluster_dir = root / "cluster"
        async with local_cluster(
            cluster_dir, "controller", "ASYNC_FLUSH", rng, tls=tls, grpc_proxy=True
        ) as cluster:
            # The SDK, the admin calls and the harness connect as $RMQ_TLS* say (plain
            # unless --tls: then the cluster's CA and client certificate).
            os.environ.update(ClusterSecurity.of(cluster_dir).client_env())
            await _show_cluster(cluster)
            await create_topic(cluster, config, (GROUP,))
            async with open_workload(config, cluster.namesrv, recorder, rng) as workload:
                demo = Demo(cluster, workload, recorder, silent=silent)
                demo.view = await demo.read_view()
                await _traffic(demo, seconds)
                p = workload.progress
                demo.say(f"sends stopped; consumers draining ({p.missing()} acked not yet seen)")
                await workload.drain(config.drain_timeout_s, settle_s=1.0)
    finally:
        recorder.close()
    with history.open(encoding="utf-8") as f:
        entries = list(iter_history(f))
    report = check_history(entries, Expectations(no_loss=True, must_recover=True))
    return report, entries, demo.old_address


async def _show_cluster(cluster: LocalCluster) -> None:
    for node in cluster.record.nodes:
        role = node.role if node.kind != "controller" else "controller"
        out.print(f"  {node.name:<12} {role:<10} {node.address}  pid {node.pid}", markup=False)
    controllers = [c.address for c in cluster.controllers() if c.address]
    async with open_client(name="rmq-demo", default_timeout_s=3.0) as client:
        with trio.fail_after(20):
            leader = await admin_api.find_controller_leader(client, controllers)
    out.print(f"  controller leader: {leader}", markup=False)
    proxy = next((n for n in cluster.record.nodes if n.kind == PROXY), None)
    if proxy is not None and proxy.address:
        out.print(f"  RocketMQ 5 clients (gRPC proxy): {proxy.address}", markup=False)
    else:
        out.print("  gRPC proxy: not started (the 'proxy' extra is not installed)", markup=False)
    dashboard = next((n for n in cluster.record.nodes if n.kind == DASHBOARD), None)
    if dashboard is not None and dashboard.address:
        url = f"http://{dashboard.address}/"
        out.print(f"  dashboard: {url} (the failover's timeline: {url}#timeline)", markup=False)


async def _traffic(demo: Demo, seconds: float) -> None:
    """Traffic for ``seconds``: the kill at a quarter, the restart at a half."""
    workload = demo.workload
    async with trio.open_nursery() as watchers:
        watchers.start_soon(demo.watch_controller)
        watchers.start_soon(demo.show_progress)
        if demo.view is not None:
            demo.say(demo.view.describe())
        async with trio.open_nursery() as producers:
            producers.start_soon(workload.run_producers)
            await trio.sleep(seconds / 4)
            killed = await demo.kill_master()
            await trio.sleep_until(max(trio.current_time(), demo.started_s + seconds / 2))
            await demo.restart(killed)
            await trio.sleep_until(max(trio.current_time(), demo.started_s + seconds))
            # Producers finish their sends in flight (each bounded by the send timeout).
            workload.stop_producing()
        watchers.cancel_scope.cancel()


def _report(
    report: CheckReport, entries: Sequence[Entry], root: Path, old_address: str | None = None
) -> None:
    q = report.queue
    times = report.recovery.recovery_times_ms()
    doc = report.to_json()
    dashboard = keep_dashboard(root, root / "cluster")
    if dashboard is not None:
        doc["dashboard"] = timeline_link(dashboard)
    (root / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    out.print(
        f"checked {root / 'history.log'} with the OpenChaos checkers "
        f"(report: {root / 'report.json'}):",
        markup=False,
    )
    if dashboard is not None:
        out.print(
            f"  the dashboard's timeline of the failover: {timeline_link(dashboard)}",
            markup=False,
        )
    figures = failover_figures(entries, old_address)
    if figures.first_ok_elsewhere_ms is not None:
        out.print(
            f"  the first SEND_OK stored by the new master came {figures.first_ok_elsewhere_ms} "
            "ms after the fault",
            markup=False,
        )
    if figures.first_ack_after_kill_ms is not None:
        out.print(
            f"  the first send begun after the kill was acked {figures.first_ack_after_kill_ms} "
            f"ms after it; the slowest acked send took {figures.slowest_ack_ms} ms",
            markup=False,
        )
    if times and max(times) > 0:
        out.print(f"  producers saw errors for {max(times)} ms after the kill", markup=False)
    if q.acked_degraded:
        out.print(
            f"  {q.acked_degraded} sends answered with a degraded status (stored, not as "
            f"durable as configured, e.g. FLUSH_SLAVE_TIMEOUT): {len(q.lost_degraded)} of "
            "them not consumed",
            markup=False,
        )
    out.print(
        f"  {q.duplicate_deliveries} duplicate deliveries (at-least-once), "
        f"{q.unknown} sends with an unknown outcome ({len(q.recovered)} of them consumed), "
        f"{q.failed} refused",
        markup=False,
    )
    for reason in report.failures:
        out.print(f"  FAIL: {reason}", markup=False)
    out.print(summary_line(report), markup=False)


def demo_command(
    root: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where the cluster, history and report go (default: a new temp dir)."
        ),
    ] = None,
    seconds: Annotated[
        float, typer.Option(help="Seconds of traffic (the kill at a quarter).")
    ] = 20.0,
    rate: Annotated[float, typer.Option(help="Messages per second over all producers.")] = 200.0,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: from the clock).")] = None,
    keep_data: Annotated[
        bool, typer.Option("--keep-data", help="Keep the stopped cluster's data and logs.")
    ] = False,
    silent: Annotated[
        bool,
        typer.Option(
            "--silent",
            help="Freeze the master with SIGSTOP (a hung host) instead of killing it: the "
            "controllers replace it in under 2 s without any connection closing.",
        ),
    ] = False,
    tls: Annotated[
        bool, typer.Option("--tls", help="Every port TLS only (a test CA made for the run).")
    ] = False,
) -> None:
    """Kill -9 the master of a controller-mode cluster under load; prove nothing acked is lost."""
    if seconds < 8:
        raise fail("--seconds must be at least 8 (the kill, the election and the rejoin)")
    if not 0 < rate <= 5000:
        raise fail("--rate must be in (0, 5000] messages per second")
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="rmq-demo-"))
    root = root.absolute()
    if (root / "history.log").exists() or (root / "cluster").exists():
        raise fail(f"{root} holds an earlier demo; give a new --dir")
    root.mkdir(parents=True, exist_ok=True)
    seed = seed if seed is not None else time.time_ns() % 1_000_000
    # The SDK's and harness's log lines (a pull that lost its connection, ...) go to a file;
    # the terminal shows the story.
    logging.basicConfig(
        filename=root / "demo.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        outcome = trio.run(
            lambda: run_demo(
                root, seconds=seconds, rate_per_s=rate, seed=seed, silent=silent, tls=tls
            )
        )
    except* (HarnessError, RocketError) as group:
        first = _leaves(group)[0]
        err.print(f"cluster data and logs kept in {root / 'cluster'}", markup=False)
        raise fail(f"the demo could not run: {first}") from None
    if outcome is None:
        raise typer.Exit(130)
    report, entries, old_address = outcome
    _report(report, entries, root, old_address)
    if not report.ok:
        err.print(f"cluster data and logs kept in {root / 'cluster'}", markup=False)
        again = " --silent" if silent else ""
        err.print(
            f"replay with: rmq demo --seed {seed} --seconds {seconds:g} --rate {rate:g}{again}"
        )
        raise typer.Exit(1)
    if not keep_data:
        shutil.rmtree(root / "cluster", ignore_errors=True)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside a (nested) exception group, in order."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
