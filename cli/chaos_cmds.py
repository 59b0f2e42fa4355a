"""``rmq chaos run|check|list``: chaos scenarios against a local cluster of real processes.

Rules:
- ``run`` writes ``DIR/history.log`` (OpenChaos format), ``DIR/report.json``,
  ``DIR/latency.png``, ``DIR/harness.log`` and ``DIR/dashboard.html`` (the cluster's
  dashboard as it last saw it; the report links its timeline), the cluster's data and logs under
  ``DIR/cluster``; it prints one verdict line. A failing run also prints why, its seed and
  the exact command that replays it. Exit status: 0 pass, 1 fail or cannot run, 130 after
  a Ctrl-C or a SIGTERM (the cluster is stopped first).
- ``check`` runs the checkers over any history file (ours or OpenChaos's) and prints the
  same verdict; ``--scenario`` judges it by that scenario's promises.
- Progress goes to stderr, results to stdout; ``--json`` prints the report as JSON.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
from pathlib import Path
from typing import Annotated, Any

import trio
import typer
from rich.table import Table

from cli.output import err, fail, out
from protocol.errors import RocketError
from scenarios import SCENARIOS
from scenarios.checkers import CheckReport, Expectations, check_history, percentile
from scenarios.harness import RunOptions, RunResult, replay_command, run_scenario
from scenarios.history import HistoryError
from scenarios.history_file import HistoryFile
from scenarios.local_cluster import HarnessError
from scenarios.report import (
    keep_dashboard,
    plot_latency,
    report_json,
    summary_row,
    timeline_link,
    write_json,
)

#: Exit status after a Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

chaos_app = typer.Typer(
    no_args_is_help=True,
    help="Chaos scenarios: kill, pause and partition nodes under load; check the history.",
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def verdict_line(name: str, report: CheckReport, faults: int) -> str:
    q = report.queue
    times = report.recovery.recovery_times_ms()
    line = (
        f"{'PASS' if report.ok else 'FAIL'} {name}: {faults} faults, {q.acked} acked, "
        f"{len(q.lost)} lost, {len(q.lost_degraded)} lost (degraded acks), "
        f"{len(q.duplicated)} duplicated, {len(q.recovered)} recovered (unknown outcome), "
        f"recovery p50 {_ms(percentile(times, 50))} / p99 {_ms(percentile(times, 99))} / "
        f"max {_ms(max(times) if times else None)}"
    )
    fencing = report.fencing
    if fencing.masters:  # controller mode: who was master is known, so acks are judged
        elections = sum(fencing.elections().values())
        line += (
            f"; {elections} elections, {len(fencing.deposed)} SEND_OK acks from deposed "
            f"masters ({len(fencing.deposed_degraded)} degraded)"
        )
    loss = report.loss_window.describe()
    if loss is not None:
        line += f"; {loss}"
    if report.probes:
        passed = sum(p.passed for p in report.probes)
        line += f"; probes {passed}/{len(report.probes)} passed"
    return line


def _print_failures(report: CheckReport) -> None:
    for reason in report.failures:
        print(f"  - {reason}")


def _scenario_or_fail(name: str) -> Any:
    if name not in SCENARIOS:
        raise fail(f"no scenario {name!r}; see: rmq chaos list")
    return SCENARIOS[name]


@chaos_app.command("list")
def list_scenarios(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every scenario: modes, matrix rows, whether it can run here (and why not)."""
    rows: list[dict[str, Any]] = []
    for scenario in SCENARIOS.values():
        reason = scenario.unavailable(scenario.modes[0])
        rows.append(
            {
                "name": scenario.name,
                "modes": list(scenario.modes),
                "matrix_rows": list(scenario.matrix_rows),
                "runnable": reason is None,
                "unavailable_because": reason,
                "summary": scenario.summary,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("#Scenario", "#Modes", "#Rows", "#Runs here", "#What it does", box=None)
    for row in rows:
        table.add_row(
            row["name"],
            ",".join(row["modes"]),
            ",".join(map(str, row["matrix_rows"])) or "-",
            "yes" if row["runnable"] else "no",
            row["summary"],
        )
    out.print(table)
    for row in rows:
        if not row["runnable"]:
            out.print(f"{row['name']}: {row['unavailable_because']}", markup=False)


def _configure_logging(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


@chaos_app.command("run")
def run(
    scenario_name: Annotated[str, typer.Argument(metavar="SCENARIO", help="See rmq chaos list.")],
    duration: Annotated[
        float, typer.Option("--duration", help="Seconds of load with faults (then drain).")
    ] = 300.0,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between faults (and each fault's length).")
    ] = 25.0,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Replays a run (default: a random one).")
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="Deployment mode (default: the scenario's first).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default ./chaos-NAME-SEED).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json too.")] = False,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Messages per second over all producers (the load)."),
    ] = None,
    use_netns: Annotated[
        bool,
        typer.Option("--netns", help="Every node on its own network host (root only)."),
    ] = False,
) -> None:
    """Run a scenario: cluster up, load, faults every INTERVAL s, heal, drain, check."""
    scenario = _scenario_or_fail(scenario_name)
    if duration <= 0 or interval <= 0:
        raise fail("--duration and --interval must be positive")
    if rate is not None and rate <= 0:
        raise fail("--rate must be positive")
    seed = secrets.randbelow(2**31) if seed is None else seed
    directory = (out_dir or Path(f"chaos-{scenario.name}-{seed}")).absolute()
    options = RunOptions(
        duration_s=duration,
        interval_s=interval,
        seed=seed,
        mode=mode,
        out_dir=directory,
        rate_per_s=rate,
        netns=use_netns,
    )
    reason = scenario.unavailable(mode or scenario.modes[0])
    if reason is not None:
        raise fail(f"scenario {scenario.name} cannot run here: {reason}")
    directory.mkdir(parents=True, exist_ok=True)
    _configure_logging(directory / "harness.log")
    err.print(f"{scenario.name}: seed {seed}, output in {directory}", markup=False)
    try:
        result = trio.run(_run, scenario, options)
    except BaseException as exc:  # re-raised below unless it is one we explain
        leaves = _leaves(exc)
        if any(isinstance(e, KeyboardInterrupt) for e in leaves):
            err.print(f"interrupted; the cluster in {directory / 'cluster'} was stopped")
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        if leaves and all(isinstance(e, HarnessError | OSError | RocketError) for e in leaves):
            raise fail(
                f"{scenario.name} could not run: {leaves[0]}",
                f"seed {seed}; replay with: {_replay(scenario.name, options, mode)}",
            ) from None
        raise
    _finish(result, directory, as_json)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _replay(name: str, options: RunOptions, mode: str | None) -> str:
    scenario = SCENARIOS[name]
    return replay_command(scenario, options, mode or scenario.modes[0])


async def _run(scenario: Any, options: RunOptions) -> RunResult:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_interrupt_on_sigterm)
        result = await run_scenario(
            scenario, options, progress=lambda line: err.print(line, markup=False)
        )
        nursery.cancel_scope.cancel()
    return result


async def _interrupt_on_sigterm() -> None:
    """SIGTERM stops a run as a Ctrl-C does (cluster stopped first). A run started in the
    background by a non-interactive shell ignores SIGINT, so ``kill PID`` is how it is
    stopped."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            raise KeyboardInterrupt


def _finish(result: RunResult, directory: Path, as_json: bool) -> None:
    entries = HistoryFile(result.history)
    facts = {
        "scenario": result.scenario,
        "mode": result.mode,
        "seed": result.seed,
        "replay": result.replay,
        "faultsInjected": result.faults_injected,
        "drained": result.drained,
        "summary": summary_row(result.scenario, result.report, result.faults_injected),
    }
    if result.load is not None:
        facts["load"] = result.load.to_json()
    dashboard = keep_dashboard(directory, directory / "cluster")
    if dashboard is not None:
        facts["dashboard"] = timeline_link(dashboard)
    data = report_json(result.report, facts)
    write_json(directory / "report.json", data)
    plot_latency(
        entries,
        directory / "latency.png",
        title=f"{result.scenario} ({result.mode}, seed {result.seed}): send latency",
    )
    if as_json:
        print(json.dumps(data, indent=2))
    print(
        verdict_line(
            f"{result.scenario} ({result.mode}, seed {result.seed})",
            result.report,
            result.faults_injected,
        )
    )
    if result.load is not None:
        print(result.load.describe())
    print(f"wrote {directory}/history.log, report.json, latency.png")
    if dashboard is not None:
        print(f"the dashboard's timeline of the faults: {timeline_link(dashboard)}")
    if not result.ok:
        _print_failures(result.report)
        if not result.drained:
            print("  (consumers had not caught up when the drain timeout ended)")
        print(f"seed {result.seed}; replay with: {result.replay}")
        raise typer.Exit(code=1)


@chaos_app.command("check")
def check(
    history: Annotated[Path, typer.Argument(metavar="HISTORY", help="A history file.")],
    scenario_name: Annotated[
        str | None, typer.Option("--scenario", help="Judge by this scenario's promises.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a history file: lost, duplicated, order, unavailability, latency."""
    # Without a scenario: no-loss and recovery judged, a fault-free history allowed.
    expect = (
        _scenario_or_fail(scenario_name).expect if scenario_name else Expectations(min_faults=0)
    )
    try:  # the checkers read the file pass by pass: an error stops the first one
        report = check_history(HistoryFile(history), expect)
    except OSError as exc:
        raise fail(f"cannot read {history}: {exc.strerror}") from None
    except HistoryError as exc:
        raise fail(f"{history}: {exc}") from None
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    print(verdict_line(str(history), report, len(report.recovery.per_fault)))
    if not report.ok:
        _print_failures(report)
        raise typer.Exit(code=1)
