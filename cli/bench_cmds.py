"""``rmq bench produce|consume``: RocketMQ's ``producer.sh`` / ``consumer.sh`` on our SDK;
``rmq bench matrix``: every deployment and the peer in one run (``bench/matrix.py``).

Rules:
- One line a second, worded as RocketMQ's benchmark prints it; on a terminal also a rich
  progress bar (refreshed by those same ticks: no refresh thread). With ``--json`` the lines
  go to stderr and the result JSON to stdout.
- At the end a ``[Complete]`` summary, a ``CPU(us/msg)`` line (this client's CPU and the
  local brokers', read from /proc, per message) and, with ``--out FILE``, the result as
  JSON with OpenMessaging-Benchmark key names (``bench/results.py`` says which).
- Every run is bounded: ``--duration`` and/or ``--count`` (neither: 10 s).
- Ctrl-C stops the run, prints the summary so far, writes ``--out`` and exits 130; a second
  Ctrl-C exits at once. A failure is one line on stderr (``error: ...``) and exit status 1.
- ``matrix`` prints a line per cell and the table; exit status 1 when a cell failed, 130
  after a Ctrl-C (``matrix.json`` and ``matrix.png`` are written either way).
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import trio
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from bench.matrix import run_matrix
from bench.matrix_cells import MatrixConfig
from bench.results import (
    BENCH_TOPIC,
    ConsumeConfig,
    ProduceConfig,
    consume_result,
    consume_summary,
    cpu_line,
    produce_result,
    produce_summary,
)
from bench.runner import run_consume, run_produce
from cli.output import fail
from protocol.errors import RocketError

T = TypeVar("T")

bench_app = typer.Typer(
    no_args_is_help=True, help="Benchmarks in the style of RocketMQ's producer.sh / consumer.sh."
)

#: Exit status after a Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

NamesrvOpt = Annotated[
    str,
    typer.Option(
        "-n", "--namesrv", envvar="NAMESRV_ADDR", help="NameServer address(es) host:port[;...]."
    ),
]
TopicOpt = Annotated[str, typer.Option("-t", "--topic", help="Topic name.")]
DurationOpt = Annotated[
    float | None, typer.Option("--duration", help="Run this many seconds (default 10 s).")
]
CountOpt = Annotated[int | None, typer.Option("--count", help="Stop after this many messages.")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Write the result (OMB key names) to this file.")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Result JSON on stdout; per-second lines on stderr.")
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Per-request deadline in seconds.")]
BrokerPidOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--broker-pid",
        metavar="PID",
        help="Read this broker process's CPU (repeatable; default: the processes listening "
        "on the topic's 127.0.0.1 broker addresses).",
    ),
]
DEFAULT_NAMESRV = "127.0.0.1:9876"
#: Not RocketMQ's ``BenchmarkTest``: that one is a system topic (1024 queues on every
#: broker) which no client may create or change, so ``--create-topic`` would be refused.
DEFAULT_TOPIC = BENCH_TOPIC


class _ConsoleSink:
    """Per-second lines to a stream; a progress bar on a terminal."""

    def __init__(self, label: str, *, to_stderr: bool, total: float, unit: str) -> None:
        stream = sys.stderr if to_stderr else sys.stdout
        self._console = Console(file=stream, highlight=False, soft_wrap=True)
        self._unit = unit
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self._console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:.0f}/{task.total:.0f} " + unit),
                TimeElapsedColumn(),
                console=self._console,
                auto_refresh=False,
                transient=True,
            )
            self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> _ConsoleSink:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def line(self, text: str) -> None:
        # No emoji codes either: their table is imported on the first use, ~0.3 s of CPU
        # inside the first measured second (5 us per message of an 8 s run).
        self._console.print(text, markup=False, highlight=False, emoji=False)
        self._console.file.flush()

    def progress(self, elapsed_s: float, done: int) -> None:
        if self._progress is None or self._task is None:
            return
        completed = done if self._unit == "msgs" else elapsed_s
        self._progress.update(self._task, completed=completed)
        self._progress.refresh()


def _bound(duration: float | None, count: int | None) -> tuple[float, str]:
    """What the progress bar counts towards: messages, else seconds."""
    if count is not None:
        return float(count), "msgs"
    return (duration if duration is not None else 10.0), "s"


def _run(fn: Callable[..., Awaitable[T]], config: Any, sink: _ConsoleSink) -> T:
    """``trio.run`` the benchmark; errors become one line, a second Ctrl-C exits 130."""
    try:
        with sink:
            return trio.run(lambda: fn(config, sink, handle_sigint=True))
    except RocketError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    except BaseExceptionGroup as group:
        rocket, rest = group.split(RocketError)
        if rocket is not None and rest is None:
            raise fail(str(_first_leaf(rocket))) from None
        if group.subgroup(KeyboardInterrupt) is not None:
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        raise


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _finish(
    summary: list[str], result: dict[str, Any], out: Path | None, as_json: bool, interrupted: bool
) -> None:
    stream = sys.stderr if as_json else sys.stdout
    if interrupted:
        print("Interrupted: figures so far.", file=stream)
    for line in summary:
        print(line, file=stream)
    text = json.dumps(result, indent=2)
    if out is not None:
        try:
            out.write_text(text + "\n")
        except OSError as exc:
            raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    if as_json:
        print(text)
    if interrupted:
        raise typer.Exit(code=EXIT_INTERRUPTED)


@bench_app.command("produce")
def produce(
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    topic: TopicOpt = DEFAULT_TOPIC,
    size: Annotated[int, typer.Option("--size", "-s", help="Message body bytes.")] = 1024,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-w", help="Send requests in flight.")
    ] = 64,
    batch: Annotated[
        int, typer.Option("--batch", help="Messages per request (send_batch); 1 = single sends.")
    ] = 1,
    keys: Annotated[bool, typer.Option("--keys", "-k", help="A unique key per message.")] = False,
    duration: DurationOpt = None,
    count: CountOpt = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="At most this many messages a second.")
    ] = None,
    create_topic: Annotated[
        int | None,
        typer.Option(
            "--create-topic", metavar="QUEUES", help="Create the topic with QUEUES queues first."
        ),
    ] = None,
    e2e: Annotated[
        bool,
        typer.Option("--e2e", help="Also consume in this process: consume rate, end-to-end RT."),
    ] = False,
    group: Annotated[str, typer.Option("-g", "--group", help="Producer group.")] = (
        "benchmark_producer"
    ),
    out: OutOpt = None,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
    broker_pid: BrokerPidOpt = None,
) -> None:
    """Send messages as fast as allowed; print Send TPS and RT every second."""
    try:
        config = ProduceConfig(
            namesrv=namesrv,
            topic=topic,
            size_bytes=size,
            concurrency=concurrency,
            batch=batch,
            keys=keys,
            duration_s=duration,
            count=count,
            rate_per_s=rate,
            create_topic_queues=create_topic,
            e2e=e2e,
            group=group,
            timeout_s=timeout,
            broker_pids=tuple(broker_pid or ()),
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    total, unit = _bound(duration, count)
    outcome = _run(
        run_produce, config, _ConsoleSink("produce", to_stderr=as_json, total=total, unit=unit)
    )
    result = produce_result(
        config,
        outcome.meter,
        partitions=outcome.partitions,
        consume=outcome.consume,
        interrupted=outcome.interrupted,
        cpu=outcome.cpu,
    )
    summary = produce_summary(outcome.meter)
    if outcome.consume is not None:
        summary += consume_summary(outcome.consume)
    summary.append(cpu_line(outcome.cpu, outcome.meter.msgs))
    _finish(summary, result, out, as_json, outcome.interrupted)


@bench_app.command("consume")
def consume(
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    topic: TopicOpt = DEFAULT_TOPIC,
    group: Annotated[
        str | None,
        typer.Option("-g", "--group", help="Consumer group (default: a new one per run)."),
    ] = None,
    duration: DurationOpt = None,
    count: CountOpt = None,
    start: Annotated[
        str,
        typer.Option("--from", metavar="first|last", help="Where a group without offsets starts."),
    ] = "first",
    idle_timeout: Annotated[
        float,
        typer.Option("--idle-timeout", help="With --count only: stop after this long idle."),
    ] = 30.0,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
    broker_pid: BrokerPidOpt = None,
) -> None:
    """Consume with a push consumer; print Consume TPS and B2C/S2C RT every second."""
    if start not in ("first", "last"):
        raise fail(f"--from takes first or last, not {start!r}")
    try:
        config = ConsumeConfig(
            namesrv=namesrv,
            topic=topic,
            group=group or f"benchmark_consumer_{secrets.token_hex(4)}",
            duration_s=duration,
            count=count,
            idle_timeout_s=idle_timeout,
            from_first=start == "first",
            timeout_s=timeout,
            broker_pids=tuple(broker_pid or ()),
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    total, unit = _bound(duration, count)
    outcome = _run(
        run_consume, config, _ConsoleSink("consume", to_stderr=as_json, total=total, unit=unit)
    )
    result = consume_result(
        config,
        outcome.meter,
        partitions=outcome.partitions,
        interrupted=outcome.interrupted,
        cpu=outcome.cpu,
    )
    summary = [*consume_summary(outcome.meter), cpu_line(outcome.cpu, outcome.meter.consumed)]
    _finish(summary, result, out, as_json, outcome.interrupted)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise fail(f"{option} takes numbers separated by commas, not {text!r}") from None


@bench_app.command("matrix")
def matrix(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for matrix.json and matrix.png.")
    ] = Path("bench-matrix"),
    duration: Annotated[
        float, typer.Option("--duration", help="Seconds each cell measures.")
    ] = 5.0,
    inflight: Annotated[
        str, typer.Option("--inflight", help="Produce cells: requests in flight, e.g. 1,64,256.")
    ] = "1,64,256",
    deployments: Annotated[
        str,
        typer.Option(
            "--deployments",
            help="Our deployments: single (rmq cluster up --mode single) and/or controller "
            "(the default cluster: 3 replicas, allAckInSyncStateSet).",
        ),
    ] = "single,controller",
    peer: Annotated[
        str,
        typer.Option(
            "--peer",
            metavar="auto|nats|none",
            help="NATS JetStream in the same run (auto: when nats-server and nats-py are "
            "installed, else its cells are skipped with the reason).",
        ),
    ] = "auto",
    peer_replicas: Annotated[
        str, typer.Option("--peer-replicas", help="JetStream deployments: R1 and/or R3.")
    ] = "1,3",
    size: Annotated[int, typer.Option("--size", "-s", help="Message body bytes.")] = 1024,
    consume: Annotated[
        bool, typer.Option("--consume/--no-consume", help="The push and pull drain cells.")
    ] = True,
) -> None:
    """Start each deployment (ours, then the peer's), measure every cell, stop it; write
    DIR/matrix.json and DIR/matrix.png and print the table."""
    try:
        config = MatrixConfig(
            duration_s=duration,
            inflights=_int_list(inflight, "--inflight"),
            deployments=tuple(d.strip() for d in deployments.split(",") if d.strip()),
            peer=peer,
            peer_replicas=_int_list(peer_replicas, "--peer-replicas"),
            size_bytes=size,
            consume=consume,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        doc = trio.run(run_matrix, config, out, say)
    except RocketError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        raise
    if doc["failedCells"]:
        raise typer.Exit(code=1)
