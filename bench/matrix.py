"""``rmq bench matrix``: the benchmark that decides, ours and the peer's in the same run.

Rules:
- One machine, one deployment at a time (``bench/matrix_cells.py`` names them and their
  cells): each is started, measured and stopped before the next starts, so no two share
  the cores. All data lives in a fresh temporary directory, removed at the end.
- Our clusters are ``rmq cluster up --mode single|controller --namesrv-port 0`` (real
  processes, found again through their ``cluster.json``), stopped by ``rmq cluster down``
  (then SIGKILL for any recorded process still alive) whenever the block ends: normally,
  on a failure, on Ctrl-C. Controller mode is measured only once the group's SyncStateSet
  holds all 3 replicas (allAckInSyncStateSet: a SEND_OK then means all 3 stored it), and
  a produce cell notes it when fewer were in sync at its end.
- The peer's servers are ``bench/nats_peer.py``'s managed processes.
- Every cell's client is a process of its own: ``rmq bench produce|consume --json``,
  ``python -m bench.pull`` (raw pull), ``python -m bench.nats_client`` (the peer, on
  asyncio). Each measures its own CPU and the servers' over its measured window; the
  server pids are passed explicitly (every broker of the group, every nats-server).
- A warm-up run (not measured) creates the topic or stream first; the consume cells drain
  what the produce cells stored.
- Every wait has a deadline. A cell whose client fails is recorded as failed with the
  reason, and the run goes on; a deployment that cannot start fails its cells the same way.
- At the end, also after a failure or Ctrl-C, ``DIR/matrix.json`` and ``DIR/matrix.png``
  are written with the cells measured so far, and the table is printed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.matrix_cells import (
    NATS,
    PRODUCE,
    PULL,
    PUSH,
    RMQ,
    Cell,
    CellResult,
    Deployment,
    Figures,
    MatrixConfig,
    cells_of,
    from_consume,
    from_produce,
    matrix_doc,
    planned_deployments,
    skipped,
    table_lines,
    with_end_to_end,
)
from bench.matrix_chart import write_chart
from bench.measure import loadavg_1m
from bench.nats_peer import find_nats_server, nats_server_version, nats_servers, peer_problem
from bench.results import BenchError
from client.admin import open_admin
from launcher.child import ProcessFailed, managed_process
from launcher.command import rmq_argv
from launcher.pids import is_alive, signal_node
from launcher.ready import BROKER, CONTROLLER, NAMESRV
from launcher.record import ClusterError, load_cluster
from protocol.errors import RocketError

TOPIC = "rmq-matrix"
STREAM = "BENCH"
GROUP = "broker-a"
UP_TIMEOUT_S = 180.0
DOWN_TIMEOUT_S = 60.0
IN_SYNC_TIMEOUT_S = 60.0
KILL_WAIT_S = 5.0
#: A client gets this long beyond its cell's duration (start-up, draining, teardown).
CLIENT_SLACK_S = 90.0
WARMUP_MSGS = 2000
REQUEST_TIMEOUT_S = 3.0

Say = Callable[[str], None]


class CellFailed(Exception):
    """A cell (or a deployment) could not be measured; the message says why."""


@attrs.frozen(kw_only=True)
class RmqCluster:
    namesrv: str
    broker_pids: tuple[int, ...]
    controllers: tuple[str, ...]

    def pid_args(self, flag: str = "--broker-pid") -> list[str]:
        return [arg for pid in self.broker_pids for arg in (flag, str(pid))]


@attrs.define
class Run:
    config: MatrixConfig
    say: Say
    results: list[CellResult] = attrs.field(factory=list)

    @property
    def duration(self) -> str:
        return f"{self.config.duration_s:g}"


# --- clients -----------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


async def run_client(argv: Sequence[str], name: str, timeout_s: float) -> str:
    """Run a cell's client to its end; its stdout. ``CellFailed`` when it fails."""
    try:
        async with managed_process(argv, name=name) as proc:
            code = await proc.wait(timeout_s)
    except ProcessFailed:
        raise CellFailed(f"{name} did not finish within {timeout_s:g} s") from None
    if code != 0:
        raise CellFailed(f"{name} exit {code}: {_last_line(proc.stderr.text or proc.stdout.text)}")
    return proc.stdout.text


async def client_json(argv: Sequence[str], name: str, timeout_s: float) -> dict[str, Any]:
    text = await run_client(argv, name, timeout_s)
    try:
        doc: dict[str, Any] = json.loads(text)
    except ValueError:
        raise CellFailed(f"{name} printed no JSON: {_last_line(text)}") from None
    return doc


async def measure_cell(
    run: Run, cell: Cell, body: Callable[[], Awaitable[tuple[Figures, tuple[str, ...]]]]
) -> None:
    """Run one cell, record its result and say it."""
    load = loadavg_1m()
    try:
        figures, notes = await body()
    except CellFailed as exc:
        result = CellResult(cell=cell, missing=f"failed: {exc}", failed=True, loadavg_1m=load)
    else:
        complete = figures.complete
        if not complete:
            notes = (*notes, "a column has no figure")
        if figures.failed:
            notes = (*notes, f"{figures.failed:,} messages failed")
        result = CellResult(
            cell=cell, figures=figures, failed=not complete, loadavg_1m=load, notes=notes
        )
    run.results.append(result)
    run.say(_cell_line(result))


def _cell_line(result: CellResult) -> str:
    label = f"  {result.cell.name:<14}"
    f = result.figures
    if f is None:
        return f"{label} {result.missing}"
    p50 = "-" if f.p50_ms is None else f"{f.p50_ms:.2f}"
    p99 = "-" if f.p99_ms is None else f"{f.p99_ms:.2f}"
    cpu = f"client {f.client_cpu_us} us/msg, server {f.server_cpu_us} us/msg"
    return f"{label} {f.msgs_per_s:>10,.0f} msg/s  p50 {p50} ms  p99 {p99} ms  {cpu}"


def fail_rest(run: Run, cells: Sequence[Cell], reason: str) -> None:
    """Record every cell of ``cells`` not measured yet as failed for ``reason``."""
    done = {r.cell for r in run.results}
    for cell in cells:
        if cell not in done:
            run.results.append(CellResult(cell=cell, missing=f"failed: {reason}", failed=True))
    run.say(f"  failed: {reason}")


# --- our clusters ------------------------------------------------------------------------------


async def _in_sync_replicas(cluster: RmqCluster) -> int:
    try:
        async with open_admin(cluster.namesrv, timeout_s=REQUEST_TIMEOUT_S) as admin:
            info = await admin.sync_state_set(list(cluster.controllers), broker_name=GROUP)
    except RocketError:
        return 0
    replicas = info.replicas_info_table.get(GROUP)
    return len(replicas.in_sync_replicas) if replicas is not None else 0


async def _wait_in_sync(cluster: RmqCluster, replicas: int) -> None:
    with trio.move_on_after(IN_SYNC_TIMEOUT_S):
        while True:  # the controller is another process: nothing to wait on but the clock
            if await _in_sync_replicas(cluster) >= replicas:
                return
            await trio.sleep(0.5)
    raise CellFailed(f"the SyncStateSet did not reach {replicas} in {IN_SYNC_TIMEOUT_S:g} s")


async def _cluster_down(root: Path) -> None:
    """``rmq cluster down``, then SIGKILL whatever recorded process survived it."""
    if not (root / "cluster.json").exists():
        return
    argv = rmq_argv("cluster", "down", "--dir", str(root), "--timeout", "10")
    with trio.move_on_after(DOWN_TIMEOUT_S):
        await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    with contextlib.suppress(ClusterError):
        record = load_cluster(root)
        left = [n for n in record.nodes if is_alive(n)] if record is not None else []
        for node in left:
            signal_node(node, signal.SIGKILL)
        with trio.move_on_after(KILL_WAIT_S):
            while True:
                if not any(is_alive(n) for n in left):
                    break
                await trio.sleep(0.05)


@asynccontextmanager
async def rmq_cluster(
    root: Path, deployment: Deployment, extra: Sequence[str] = ()
) -> AsyncIterator[RmqCluster]:
    """``rmq cluster up --mode MODE`` (and ``extra`` options) under ``root``, ready to
    measure; down at the end."""
    argv = rmq_argv(
        "cluster", "up", "--mode", deployment.mode, "--dir", str(root), "--namesrv-port", "0",
        "--no-dashboard",  # measured processes only
        *extra,
    )  # fmt: skip
    try:
        with trio.move_on_after(UP_TIMEOUT_S) as up:
            done = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
        if up.cancelled_caught:
            raise CellFailed(f"`{shlex.join(argv)}` took over {UP_TIMEOUT_S:g} s")
        if done.returncode != 0:
            error = _last_line(done.stderr.decode(errors="replace"))
            raise CellFailed(f"`{shlex.join(argv)}` failed: {error}")
        record = load_cluster(root)
        assert record is not None, root
        cluster = RmqCluster(
            namesrv=next(n.address or "" for n in record.nodes if n.kind == NAMESRV),
            broker_pids=tuple(n.pid for n in record.nodes if n.kind == BROKER),
            controllers=tuple(n.address or "" for n in record.nodes if n.kind == CONTROLLER),
        )
        if deployment.replicas > 1:
            await _wait_in_sync(cluster, deployment.replicas)
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            await _cluster_down(root)


def _rmq_bench(cluster: RmqCluster, *args: str) -> list[str]:
    return [
        *rmq_argv("bench", *args, "-n", cluster.namesrv, "-t", TOPIC, "--json"),
        *cluster.pid_args(),
    ]


def _client_timeout(run: Run) -> float:
    return run.config.duration_s + CLIENT_SLACK_S


async def _rmq_produce(run: Run, cluster: RmqCluster, cell: Cell) -> Figures:
    argv = _rmq_bench(
        cluster, "produce", "-w", str(cell.inflight), "--size", str(run.config.size_bytes),
        "--duration", run.duration,
    )  # fmt: skip
    return from_produce(await client_json(argv, "rmq bench produce", _client_timeout(run)))


async def _backlog(cluster: RmqCluster) -> int:
    """Messages the topic holds (every queue's max - min offset)."""
    try:
        async with open_admin(cluster.namesrv, timeout_s=REQUEST_TIMEOUT_S) as admin:
            offsets = await admin.topic_status(TOPIC)
    except RocketError as exc:
        raise CellFailed(f"cannot read the topic's offsets: {exc}") from None
    return sum(o.max_offset - o.min_offset for o in offsets)


async def _rmq_push(run: Run, cluster: RmqCluster) -> tuple[Figures, tuple[str, ...]]:
    """Drain the backlog with a push consumer (msg/s, CPU), then born -> consumed latency
    of a producer and a push consumer at 1 in flight."""
    backlog = await _backlog(cluster)
    if backlog <= 0:
        raise CellFailed("the produce cells left nothing to consume")
    group = f"matrix_push_{secrets.token_hex(4)}"
    argv = _rmq_bench(
        cluster, "consume", "-g", group, "--from", "first", "--count", str(backlog),
        "--duration", run.duration,
    )  # fmt: skip
    drain = from_consume(await client_json(argv, "rmq bench consume", _client_timeout(run)))
    argv = _rmq_bench(
        cluster, "produce", "--e2e", "-w", "1", "--size", str(run.config.size_bytes),
        "--duration", run.duration,
    )  # fmt: skip
    e2e = await client_json(argv, "rmq bench produce --e2e", _client_timeout(run))
    note = f"drained {drain.msgs:,} of a backlog of {backlog:,} messages"
    return with_end_to_end(drain, e2e), (note,)


async def _rmq_pull(run: Run, cluster: RmqCluster) -> Figures:
    argv = [
        sys.executable, "-m", "bench.pull", "-n", cluster.namesrv, "-t", TOPIC,
        "--duration", run.duration, *cluster.pid_args(),
    ]  # fmt: skip
    return Figures.from_json(await client_json(argv, "bench.pull", _client_timeout(run)))


async def rmq_deployment(run: Run, deployment: Deployment, root: Path, cells: list[Cell]) -> None:
    async with rmq_cluster(root, deployment) as cluster:
        warmup = _rmq_bench(
            cluster, "produce", "--create-topic", str(run.config.queues),
            "--count", str(WARMUP_MSGS), "--size", str(run.config.size_bytes),
        )  # fmt: skip
        await client_json(warmup, "rmq bench produce (warm-up)", _client_timeout(run))
        for cell in cells:
            await measure_cell(run, cell, _rmq_cell(run, cluster, deployment, cell))


def _rmq_cell(
    run: Run, cluster: RmqCluster, deployment: Deployment, cell: Cell
) -> Callable[[], Awaitable[tuple[Figures, tuple[str, ...]]]]:
    async def body() -> tuple[Figures, tuple[str, ...]]:
        if cell.kind == PUSH:
            return await _rmq_push(run, cluster)
        if cell.kind == PULL:
            return await _rmq_pull(run, cluster), ()
        figures = await _rmq_produce(run, cluster, cell)
        notes: tuple[str, ...] = ()
        if deployment.replicas > 1:
            in_sync = await _in_sync_replicas(cluster)
            if in_sync < deployment.replicas:
                notes = (f"{in_sync} of {deployment.replicas} replicas in sync at the end",)
        return figures, notes

    return body


# --- the peer ----------------------------------------------------------------------------------


def _nats_client(command: str, url: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.nats_client",
        command,
        "-s",
        url,
        "--stream",
        STREAM,
        *args,
    ]


async def nats_deployment(
    run: Run, deployment: Deployment, root: Path, cells: list[Cell], binary: str
) -> None:
    async with nats_servers(root, deployment.replicas, binary) as servers:
        url = servers.urls[0]
        pids = [arg for pid in servers.pids for arg in ("--server-pid", str(pid))]
        size = ["--size", str(run.config.size_bytes)]
        setup = _nats_client(
            "setup", url, "--replicas", str(deployment.replicas), "--warmup", str(WARMUP_MSGS),
            *size,
        )  # fmt: skip
        await run_client(setup, "nats setup", _client_timeout(run))
        for cell in cells:
            if cell.kind == PRODUCE:
                argv = _nats_client(
                    "publish", url, "--inflight", str(cell.inflight), "--duration", run.duration,
                    *size, *pids,
                )  # fmt: skip
            else:
                argv = _nats_client("consume", url, "--duration", run.duration, *pids)
            name = f"nats {cell.kind}"
            await measure_cell(run, cell, _json_figures(argv, name, _client_timeout(run)))


def _json_figures(
    argv: list[str], name: str, timeout_s: float
) -> Callable[[], Awaitable[tuple[Figures, tuple[str, ...]]]]:
    async def body() -> tuple[Figures, tuple[str, ...]]:
        return Figures.from_json(await client_json(argv, name, timeout_s)), ()

    return body


# --- the run -------------------------------------------------------------------------------------


def host_facts() -> dict[str, Any]:
    binary = find_nats_server()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["rmq", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
        "loadavgBefore": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "natsServer": nats_server_version(binary) if binary is not None else None,
    }


def peer_check(config: MatrixConfig) -> str | None:
    """Why the peer's cells are skipped (None: they run). ``BenchError`` when the peer was
    asked for by name and cannot run."""
    if config.peer == "none":
        return None
    problem = peer_problem()
    if problem is not None and config.peer == "nats":
        raise BenchError(f"--peer nats: {problem}")
    return problem


async def run_matrix(config: MatrixConfig, out_dir: Path, say: Say) -> dict[str, Any]:
    """Run every cell; write ``out_dir/matrix.json`` and ``matrix.png`` (also when stopped
    early); the JSON document."""
    problem = peer_check(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    host = host_facts()
    run = Run(config=config, say=say)
    root = Path(tempfile.mkdtemp(prefix="rmq-matrix-"))
    complete = False
    try:
        for deployment in planned_deployments(config):
            await _deployment(run, deployment, root / deployment.key, problem)
        complete = True
    finally:
        host["loadavgAfter"] = [round(v, 2) for v in os.getloadavg()]
        doc = matrix_doc(config=config, results=run.results, host=host, complete=complete)
        write_outputs(out_dir, doc, run.results)
        shutil.rmtree(root, ignore_errors=True)
        if not complete:
            say("Stopped early: the table holds the cells measured so far.")
        for line in ["", *table_lines(run.results), ""]:
            say(line)
        say(f"Wrote {out_dir / 'matrix.json'} and {out_dir / 'matrix.png'}.")
    return doc


async def _deployment(run: Run, deployment: Deployment, root: Path, problem: str | None) -> None:
    cells = cells_of(deployment, run.config)
    run.say(f"{deployment.label}:")
    if deployment.system == NATS and problem is not None:
        run.results.extend(skipped(cells, f"skipped: {problem}"))
        run.say(f"  skipped: {problem}")
        return
    try:
        if deployment.system == RMQ:
            await rmq_deployment(run, deployment, root, cells)
        else:
            binary = find_nats_server()
            assert binary is not None
            await nats_deployment(run, deployment, root, cells, binary)
    except (CellFailed, ProcessFailed) as exc:
        fail_rest(run, cells, str(exc).splitlines()[0])


def write_outputs(out_dir: Path, doc: dict[str, Any], results: list[CellResult]) -> None:
    (out_dir / "matrix.json").write_text(json.dumps(doc, indent=2) + "\n")
    host = doc["host"]
    load = "/".join(f"{v:g}" for v in host["loadavgBefore"])
    title = (
        f"rmq bench matrix, {host['date']}: {host['cpus']} CPUs, load average {load} before, "
        f"{doc['config']['messageSize']} B messages, {doc['config']['durationSeconds']:g} s a cell"
    )
    write_chart(out_dir / "matrix.png", results, title=title)
