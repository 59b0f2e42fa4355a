"""Chaos smoke: real clusters, one master kill each, judged by the checkers' verdict.

The default suite runs two short scenarios (about 20 s each): ``master_kill_multi_master``
in this process and ``broker_restart_no_loss`` through the ``rmq chaos run`` CLI. The full
runs (minutes of faults every 20 s) are marked ``slow``. Every test leaves no process
behind: the harness stops its cluster; a CLI run is followed by ``rmq cluster down`` and a
SIGKILL of any pid its cluster.json still names.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from launcher.pids import is_alive
from launcher.record import load_cluster
from scenarios import SCENARIOS
from scenarios.harness import RunOptions, RunResult, ScenarioUnavailable, run_scenario
from scenarios.history import ENQUEUE, FaultEvent, Phase, Response, iter_history
from tests.support.processes import managed_process, rmq_argv, run_command

pytestmark = pytest.mark.integration

#: A smoke run: one fault at 4 s, healed at 8 s, sends stop at 10 s, then a short drain.
SMOKE = {"duration_s": 10.0, "interval_s": 4.0, "seed": 7}
RUN_DEADLINE_S = 150.0


def assert_nothing_left(root: Path) -> None:
    record = load_cluster(root)
    assert record is not None, f"no cluster.json in {root}"
    alive = [n.name for n in record.nodes if is_alive(n)]
    assert not alive, f"still running after the run: {alive}"


@asynccontextmanager
async def leave_nothing(root: Path) -> AsyncIterator[None]:
    """Whatever happens, stop the cluster under ``root`` (and SIGKILL what survives)."""
    try:
        yield
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(60):
            if (root / "cluster.json").exists():
                await run_command(rmq_argv("cluster", "down", "--dir", str(root), "--timeout", "5"))
                record = load_cluster(root)
                for node in record.nodes if record else []:
                    if is_alive(node):
                        os.kill(node.pid, signal.SIGKILL)


def check_one_kill(result: RunResult) -> None:
    report = result.report
    assert result.faults_injected == 1, result
    assert report.ok, report.failures
    assert report.queue.acked > 50, report.queue
    assert report.queue.lost == () and report.queue.unexpected == ()
    assert result.drained
    with result.history.open(encoding="utf-8") as f:
        entries = list(iter_history(f))
    faults = [e for e in entries if isinstance(e, FaultEvent)]
    assert [(f.name, f.phase) for f in faults] == [("kill", Phase.START), ("kill", Phase.END)]
    # Sends went on after the restart (the workload did not stall on the fault).
    assert any(
        isinstance(e, Response) and e.op == ENQUEUE and e.timestamp_ms > faults[1].timestamp_ms
        for e in entries
    )


async def test_master_kill_multi_master_smoke(tmp_path: Path) -> None:
    """Kill one of two masters: the other group takes the sends, nothing acked is lost."""
    scenario = SCENARIOS["master_kill_multi_master"]
    async with leave_nothing(tmp_path / "cluster"):
        with trio.fail_after(RUN_DEADLINE_S):
            result = await run_scenario(scenario, RunOptions(out_dir=tmp_path, **SMOKE))
    check_one_kill(result)
    # Two groups: the retries hid the dead master from the producers almost entirely.
    assert result.report.recovery.recovery_times_ms()[0] <= 5_000
    assert_nothing_left(tmp_path / "cluster")


async def test_broker_restart_no_loss_smoke_through_the_cli(tmp_path: Path) -> None:
    """``rmq chaos run``: kill -9 + restart the SYNC_FLUSH broker; the verdict is PASS."""
    out = tmp_path / "run"
    argv = rmq_argv(
        "chaos", "run", "broker_restart_no_loss", "--duration", "10", "--interval", "4",
        "--seed", "11", "--out", str(out),
    )  # fmt: skip
    async with leave_nothing(out / "cluster"):
        done = await run_command(argv, timeout_s=RUN_DEADLINE_S)
    assert done.returncode == 0, done.describe()
    assert done.stdout.startswith("PASS broker_restart_no_loss (single, seed 11): 1 faults")
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "PASS" and report["seed"] == 11
    assert report["queue"]["lostMessageCount"] == 0
    assert report["queue"]["enqueueSuccessCount"] > 50
    # The load reached and the CPU it took are measured and printed.
    assert report["load"]["sentPerSecond"] > 0 and report["load"]["cores"] >= 1
    assert "\nload: " in done.stdout and "msg/s sent" in done.stdout
    # The only group was down: sends failed until the restarted broker was routed again.
    (per_fault,) = report["recovery"]["perFault"]
    assert 3_000 <= per_fault["recoveryMs"] <= 30_000
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The dashboard's page, saved by the cluster's dashboard, is linked from the report.
    page = out / "dashboard.html"
    assert report["dashboard"] == f"{page.as_uri()}#timeline"
    assert f"timeline of the faults: {page.as_uri()}#timeline" in done.stdout
    assert "window.RMQ_SNAPSHOT" in page.read_text()
    assert_nothing_left(out / "cluster")

    checked = await run_command(
        rmq_argv("chaos", "check", str(out / "history.log"), "--scenario", "broker_restart_no_loss")
    )
    assert checked.returncode == 0, checked.describe()
    assert checked.stdout.startswith("PASS ")


async def test_sigterm_stops_a_run_and_its_cluster(tmp_path: Path) -> None:
    """SIGTERM (how a run started with ``&`` from a script is stopped: it ignores SIGINT)
    ends ``rmq chaos run`` as a Ctrl-C does: cluster stopped, exit status 130."""
    out = tmp_path / "run"
    argv = rmq_argv(
        "chaos", "run", "broker_restart_no_loss", "--duration", "120", "--interval", "60",
        "--seed", "12", "--out", str(out),
    )  # fmt: skip
    async with leave_nothing(out / "cluster"), managed_process(argv) as proc:
        with trio.fail_after(RUN_DEADLINE_S):
            await proc.stderr.wait_for(r"cluster \(single\) up")
        proc.send_signal(signal.SIGTERM)
        returncode = await proc.wait(RUN_DEADLINE_S)
    assert returncode == 130, proc.describe("exit status")
    assert "interrupted; the cluster" in proc.stderr.text
    assert_nothing_left(out / "cluster")


async def test_a_failing_verdict_prints_seed_and_replay(tmp_path: Path) -> None:
    """``rmq chaos check`` of a history with a lost message fails and says which."""
    history = tmp_path / "history.log"
    history.write_text(
        "fault\tkill\tstart\t1\n"
        "0\tenqueue\tREQUEST\t1\tnull\t10\tnull\n"
        "0\tenqueue\tRESPONSE\tSUCCESS\t1\tnull\t11\t1\tstatus=SEND_OK\t0\n"
        "fault\tkill\tend\t20\n"
    )
    done = await run_command(rmq_argv("chaos", "check", str(history)))
    assert done.returncode == 1, done.describe()
    assert done.stdout.startswith("FAIL ")
    assert "1 acked (SEND_OK) messages lost" in done.stdout


async def test_a_scenario_that_cannot_run_is_refused_with_what_is_missing(
    tmp_path: Path,
) -> None:
    listing = await run_command(rmq_argv("chaos", "list", "--json"))
    assert listing.returncode == 0, listing.describe()
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert set(rows) == set(SCENARIOS)
    assert rows["master_kill_multi_master"]["runnable"]
    blocked = [name for name, row in rows.items() if not row["runnable"]]
    for name in blocked:
        assert rows[name]["unavailable_because"], name
    wrong_mode = await run_command(
        rmq_argv(
            "chaos", "run", "broker_restart_no_loss", "--mode", "sync", "--out", str(tmp_path / "m")
        )
    )
    assert wrong_mode.returncode == 1, wrong_mode.describe()
    assert "runs in modes single, multi-master" in wrong_mode.stderr
    if blocked:
        done = await run_command(rmq_argv("chaos", "run", blocked[0], "--out", str(tmp_path / "x")))
        assert done.returncode == 1, done.describe()
        assert "cannot run here" in done.stderr
        assert rows[blocked[0]]["unavailable_because"][:40] in done.stderr.replace("\n", " ")
    assert not (tmp_path / "x").exists() and not (tmp_path / "m").exists()


# --- full runs -------------------------------------------------------------------------------

RUNNABLE = [
    "master_kill_multi_master",
    "broker_restart_no_loss",
    "commitlog_torn_tail_restart",
    "master_pause_multi_master",
    "namesrv_link_partition",
    "slave_pause_sync_master_writes_resume",
    "master_kill_allack_no_loss",
    "master_and_controller_leader_kill",
    "ordered_messages_through_failover",
    "master_kill_async_replication_loss",
    "syncstateset_expand_then_kill",
    "paused_old_master_fenced",
    "master_isolated_from_controllers",
    "controller_majority_down_data_path",
    "topic_offsets_on_new_master",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNNABLE)
async def test_full_scenario(name: str, tmp_path: Path) -> None:
    """Two minutes of faults every 20 s; the scenario's own promises must hold."""
    scenario = SCENARIOS[name]
    options = RunOptions(duration_s=120, interval_s=20, seed=5, out_dir=tmp_path)
    async with leave_nothing(tmp_path / "cluster"):
        with trio.fail_after(600):
            try:
                result = await run_scenario(scenario, options)
            except ScenarioUnavailable as exc:
                pytest.skip(str(exc))
    assert result.faults_injected >= 2
    assert result.ok, f"{result.report.failures}; replay: {result.replay}"
    assert_nothing_left(tmp_path / "cluster")
