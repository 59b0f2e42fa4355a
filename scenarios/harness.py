"""The chaos harness: scenarios as data, and a run: a real local cluster, a workload, a
fault loop, a checked history.

Rules:
- Modes are data: a scenario names the deployment modes it runs in. Whether a mode exists
  is asked of what ``rmq cluster up`` accepts (``launcher/plans.py``'s table) at run time;
  a missing one makes the scenario unavailable with a reason naming what is missing,
  never a silent pass.
- The cluster is ``scenarios/local_cluster.py``'s ``LocalCluster`` (processes, proxies,
  the master watcher, probes, fault targets); everything it started is stopped when the
  run ends, however it ends.
- The fault loop is OpenChaos's FaultWorker: wait ``interval_s``, inject, wait the fault's
  duration, heal — until the run's duration is over; then every fault still active is
  healed, producers go on until a send succeeds (at most ``RECOVERY_TAIL_S``, so the last
  fault's window can close), stop, consumers drain (bounded), and the history is checked.
- Every wait has a deadline; network traffic stays on this machine (loopback, or the
  private bridge of separate hosts, ``Scenario.netns``).
"""

from __future__ import annotations

import functools
import math
import random
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from launcher.netns import netns_unavailable
from launcher.plans import BROKERS_BY_MODE, LATER_MODES
from scenarios.checkers import CheckReport, Expectations, check_history
from scenarios.faults import FaultKind, LinkCut
from scenarios.history import Phase, make_extra
from scenarios.history_file import HistoryFile
from scenarios.load import CpuMark, LoadFigures, load_figures
from scenarios.local_cluster import (
    READY_TIMEOUT_S,
    HarnessError,
    LocalCluster,
    create_topic,
    local_cluster,
)
from scenarios.powerfs import powerfs_unavailable
from scenarios.workload import Recorder, WorkloadConfig, open_workload, poll_until

#: After the last heal, sends go on at most this long waiting for the first success.
RECOVERY_TAIL_S = 60.0


class ScenarioUnavailable(HarnessError):
    """The scenario needs something this build does not have yet; the message says what."""


def mode_unavailable(mode: str) -> str | None:
    """Why ``rmq cluster up --mode MODE`` would be refused now; None when it is accepted."""
    if mode in BROKERS_BY_MODE:
        return None
    known = ", ".join(BROKERS_BY_MODE)
    if mode in LATER_MODES:
        return (
            f"deployment mode {mode!r} does not exist yet: `rmq cluster up --mode {mode}` is "
            f"refused (launcher/plans.py plans only: {known})"
        )
    return f"unknown deployment mode {mode!r} (rmq cluster up knows: {known})"


# --- scenarios as data ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FaultPlan:
    """Which fault, on which target, how often."""

    kind: FaultKind
    #: Hit together, each one of: ``master:GROUP``, ``slave:GROUP``, ``any-master``,
    #: ``any-broker``, ``namesrv``, ``node:NAME``, ``controller-leader``,
    #: ``controller-majority`` (a random majority of the controllers, each one hit), and
    #: ``group:GROUP`` (the group itself, for fault sequences).
    targets: tuple[str, ...]
    #: How long a fault lasts before it is healed (None: the run's interval).
    duration_s: float | None = None


@attrs.frozen(kw_only=True)
class Scenario:
    """One chaos scenario: a deployment, a workload, faults, and what must hold."""

    name: str
    summary: str
    #: Rows of the test matrix (anchors.md §2.6) this scenario covers.
    matrix_rows: tuple[int, ...] = ()
    #: Modes it runs in; the first is the default.
    modes: tuple[str, ...]
    flush: str = "ASYNC_FLUSH"
    workload: WorkloadConfig = attrs.field(factory=WorkloadConfig)
    faults: FaultPlan
    expect: Expectations = attrs.field(factory=Expectations)
    #: Broker groups that host the topic (empty: every master of the cluster).
    topic_on: tuple[str, ...] = ()
    #: Brokers reach the NameServer through a fault proxy each (``proxy(broker)``).
    proxy_namesrv_links: bool = False
    #: Controller mode: brokers reach each controller through a fault proxy of their own
    #: (``proxy(broker)`` switches all of a broker's).
    proxy_controller_links: bool = False
    #: ``broker.conf`` settings for every broker (``rmq cluster up --broker-set``).
    broker_settings: tuple[tuple[str, object], ...] = ()
    #: Every node on its own network host (``rmq cluster up --netns``). Without network
    #: namespaces here the run falls back to loopback, saying so, unless its faults act
    #: on links (``LinkCut``): then it is unavailable, with the reason.
    netns: bool = False
    #: Every broker's store on a powerfs mount (``PowerLoss`` faults need it; root only).
    power_store: bool = False
    #: Something besides the mode that does not exist yet (None: nothing).
    missing: str | None = None
    #: What the results mean, for the report (e.g. why some loss is expected).
    notes: str = ""

    def unavailable(self, mode: str) -> str | None:
        if mode not in self.modes:
            return f"scenario {self.name} runs in modes {', '.join(self.modes)}, not {mode!r}"
        return mode_unavailable(mode) or self.missing or self.hosts_unavailable()

    def hosts_unavailable(self) -> str | None:
        """Why this scenario's link or power faults cannot run here (None: they can)."""
        if isinstance(self.faults.kind, LinkCut):
            reason = netns_unavailable()
            return None if reason is None else f"its link faults need separate hosts: {reason}"
        if self.power_store:
            reason = powerfs_unavailable()
            return None if reason is None else f"its power faults need powerfs: {reason}"
        return None


@attrs.frozen(kw_only=True)
class RunOptions:
    duration_s: float = 300.0
    interval_s: float = 25.0
    seed: int = 0
    mode: str | None = None
    out_dir: Path = Path("chaos-out")
    drain_timeout_s: float | None = None
    #: The load: messages per second over all producers (None: the scenario's).
    rate_per_s: float | None = None
    #: Every node on its own network host, whatever the scenario says.
    netns: bool = False

    def __attrs_post_init__(self) -> None:
        if self.duration_s <= 0 or self.interval_s <= 0:
            raise ValueError("duration and interval must be positive")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ValueError("the rate must be positive")


def replay_command(scenario: Scenario, options: RunOptions, mode: str) -> str:
    """The exact ``rmq chaos run`` command line that replays a run."""
    return shlex.join(
        [
            "rmq",
            "chaos",
            "run",
            scenario.name,
            "--duration",
            f"{options.duration_s:g}",
            "--interval",
            f"{options.interval_s:g}",
            "--seed",
            str(options.seed),
            "--mode",
            mode,
            "--out",
            str(options.out_dir),
            *(["--rate", f"{options.rate_per_s:g}"] if options.rate_per_s else []),
            *(["--netns"] if options.netns else []),
        ]
    )


# --- a run ---------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RunResult:
    scenario: str
    mode: str
    seed: int
    history: Path
    report: CheckReport
    faults_injected: int
    drained: bool
    replay: str
    #: The rate reached and the CPU used (None: the run ended before its load did).
    load: LoadFigures | None = None

    @property
    def ok(self) -> bool:
        return self.report.ok


async def fault_loop(
    cluster: LocalCluster,
    plan: FaultPlan,
    recorder: Recorder,
    *,
    interval_s: float,
    until_s: float,
    active: list[tuple[FaultKind, str]],
) -> int:
    """Inject and heal faults until ``until_s`` (trio clock); the number injected.

    A fault still active at ``until_s`` stays in ``active`` for the caller to heal.
    """
    duration_s = plan.duration_s if plan.duration_s is not None else interval_s
    injected = 0
    while True:
        await trio.sleep_until(min(trio.current_time() + interval_s, until_s))
        if trio.current_time() >= until_s:
            return injected
        targets = [node for t in plan.targets for node in await cluster.resolve_all(t)]
        for target in targets:
            recorder.fault(plan.kind.name, Phase.START, make_extra(target=target))
            active.append((plan.kind, target))
        await run_together([functools.partial(plan.kind.inject, cluster, t) for t in targets])
        injected += 1
        await trio.sleep_until(min(trio.current_time() + duration_s, until_s))
        await heal(cluster, recorder, active)


async def run_together(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    """Run ``jobs`` at once (faults on several nodes hit together) and wait for all."""
    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(job)


async def heal(
    cluster: LocalCluster, recorder: Recorder, active: list[tuple[FaultKind, str]]
) -> None:
    """Heal every active fault (in injection order) and record each end."""
    while active:
        kind, target = active[0]
        await kind.heal(cluster, target)
        active.pop(0)
        recorder.fault(kind.name, Phase.END, make_extra(target=target))


async def run_scenario(
    scenario: Scenario,
    options: RunOptions,
    *,
    progress: Callable[[str], None] = lambda _line: None,
) -> RunResult:
    """Run ``scenario`` once; raises ``ScenarioUnavailable`` when it cannot run here."""
    mode = options.mode or scenario.modes[0]
    reason = scenario.unavailable(mode)
    if reason is not None:
        raise ScenarioUnavailable(f"{scenario.name}: {reason}")
    out = options.out_dir.absolute()
    out.mkdir(parents=True, exist_ok=True)
    history = out / "history.log"
    if history.exists():
        raise HarnessError(f"{history} exists; give another --out")
    rng = random.Random(options.seed)
    config = scenario.workload
    if options.rate_per_s is not None:
        config = config.at_rate(options.rate_per_s)
    # The message cap is a safety bound, not the run's end: it leaves room for the whole
    # duration and the recovery tail at the rate asked (a fixed 200,000 is 100 s at 2,000/s).
    config = attrs.evolve(
        config,
        max_messages=max(
            config.max_messages,
            math.ceil(config.rate_per_s * (options.duration_s + RECOVERY_TAIL_S) * 1.2),
        ),
    )
    if options.netns:
        scenario = attrs.evolve(scenario, netns=True)
    if options.drain_timeout_s is not None:
        config = attrs.evolve(config, drain_timeout_s=options.drain_timeout_s)
    recorder = Recorder(history)
    injected = 0
    drained = False
    load: LoadFigures | None = None
    try:
        # The background nursery (proxies, the master watcher) outlives the cluster, so
        # proxied links stay up while the brokers stop.
        async with (
            trio.open_nursery() as background,
            local_cluster(
                out / "cluster",
                mode,
                scenario.flush,
                rng,
                recorder=recorder,
                broker_settings=scenario.broker_settings,
                controller_proxies=background if scenario.proxy_controller_links else None,
                netns=scenario.netns,
                power_store=scenario.power_store,
            ) as cluster,
        ):
            if cluster.fallback is not None:
                progress(f"separate hosts unavailable ({cluster.fallback}): running on loopback")
            if scenario.proxy_namesrv_links:
                await cluster.proxy_namesrv_links(background)
            await create_topic(cluster, config, scenario.topic_on)
            progress(f"cluster ({mode}) up: {', '.join(cluster.node_names())}")
            if cluster.controllers():
                background.start_soon(cluster.watch_masters)
            active: list[tuple[FaultKind, str]] = []
            async with open_workload(config, cluster.namesrv, recorder, rng) as workload:
                cluster.workload = workload
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(workload.run_producers)
                    load_start = CpuMark.now()
                    try:
                        injected = await fault_loop(
                            cluster,
                            scenario.faults,
                            recorder,
                            interval_s=options.interval_s,
                            until_s=trio.current_time() + options.duration_s,
                            active=active,
                        )
                    finally:
                        with trio.CancelScope(shield=True), trio.fail_after(2 * READY_TIMEOUT_S):
                            await heal(cluster, recorder, active)
                        # Sends go on until one succeeds after the last heal, so the last
                        # fault's unavailability window can end (bounded).
                        healed_s = trio.current_time()
                        await poll_until(
                            lambda: workload.progress.last_ack_s > healed_s, RECOVERY_TAIL_S
                        )
                        workload.stop_producing()
                p = workload.progress
                load = load_figures(
                    load_start,
                    CpuMark.now(),
                    asked_per_s=config.rate_per_s,
                    sent=p.sent,
                    acked=len(p.acked),
                )
                progress(load.describe())
                progress(
                    f"sent {p.sent}, acked {len(p.acked)}; draining ({p.missing()} unconsumed)"
                )
                drained = await workload.drain(config.drain_timeout_s)
            background.cancel_scope.cancel()
    finally:
        recorder.close()
    report = check_history(HistoryFile(history), scenario.expect)
    return RunResult(
        scenario=scenario.name,
        mode=mode,
        seed=options.seed,
        history=history,
        report=report,
        faults_injected=injected,
        drained=drained,
        replay=replay_command(scenario, options, mode),
        load=load,
    )
