"""The benchmark matrix, pure half: what a run holds, what each cell measured, the JSON and
the table.

Rules:
- A deployment is one system laid out one way: ``single`` (``rmq cluster up --mode
  single``), ``controller`` (the default ``rmq cluster up``: 3 controllers, a NameServer,
  group broker-a of 3 replicas with allAckInSyncStateSet), and the peer, NATS JetStream
  with ``nats-r1`` (one server) and ``nats-r3`` (three, stream replicas 3).
- A cell is (deployment, kind, in flight): ``produce`` at each in-flight level, then
  ``push`` (an SDK push consumer; ours only) and ``pull`` (raw PULL_MESSAGE; a JetStream
  pull consumer) once per deployment, draining what the produce cells stored.
- Every cell reports the same ``Figures``: messages per second of the measured window,
  latency p50/p99 (``bench.measure``'s nearest rank; what it times is the cell's
  ``latency``), the client's and the servers' CPU microseconds per message (user + system;
  the servers' summed over every server process of the deployment: a group's 3 brokers, the
  3 nats-servers; controllers and NameServers are not on the data path and not counted).
- A cell without figures says why (``missing``): its deployment was skipped (the peer is
  not installed), or its run failed (``failed``; the run's exit status is then 1).
- Pure: no clock, no processes; the shell (``bench/matrix.py``) brings the figures in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from bench.measure import CpuUse, Meter, us_per_msg

FORMAT_VERSION = 1
RMQ = "trio-rocketmq"
NATS = "nats"
PRODUCE, PUSH, PULL = "produce", "push", "pull"
#: Deployments of each system, in run order.
RMQ_DEPLOYMENTS = ("single", "controller")
NATS_DEPLOYMENTS = ("nats-r1", "nats-r3")
PEER_CHOICES = ("auto", "nats", "none")


@attrs.frozen(kw_only=True)
class Deployment:
    key: str
    system: str
    label: str
    #: ``rmq cluster up --mode`` (ours) or JetStream's stream replicas (the peer).
    mode: str = ""
    replicas: int = 1
    #: What the server CPU column sums.
    servers: str


DEPLOYMENTS: Mapping[str, Deployment] = {
    "single": Deployment(
        key="single",
        system=RMQ,
        label="single master",
        mode="single",
        servers="the broker process",
    ),
    "controller": Deployment(
        key="controller",
        system=RMQ,
        label="3 replicas (controller mode)",
        mode="controller",
        replicas=3,
        servers="sum of the group's 3 broker processes (controllers, NameServer not counted)",
    ),
    "nats-r1": Deployment(
        key="nats-r1", system=NATS, label="NATS JetStream R1", servers="the nats-server process"
    ),
    "nats-r3": Deployment(
        key="nats-r3",
        system=NATS,
        label="NATS JetStream R3",
        replicas=3,
        servers="sum of the 3 nats-server processes",
    ),
}

#: What each cell's p50/p99 time, by (system, kind).
LATENCY: Mapping[tuple[str, str], str] = {
    (RMQ, PRODUCE): "send -> SEND_OK, per message",
    (RMQ, PUSH): "born -> consumed, 1 message in flight (a second run: rmq bench produce "
    "--e2e -w 1); msg/s and CPU are the backlog drain's",
    (RMQ, PULL): "one PULL_MESSAGE of up to 32, per request (one in flight per queue)",
    (NATS, PRODUCE): "publish -> PubAck, per message",
    (NATS, PULL): "one fetch of up to 256 (AckAll on the last), per request",
}


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if not values or not all(v > 0 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{attribute.name} must be positive (and distinct), not {value!r}")


def _subset(allowed: Iterable[Any]) -> Any:
    allowed = tuple(allowed)

    def check(_inst: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        unknown = [v for v in value if v not in allowed]
        if unknown or len(set(value)) != len(value):
            choices = ", ".join(str(a) for a in allowed)
            raise ValueError(f"{attribute.name}: {value!r} is not a list of {choices}")

    return check


@attrs.frozen(kw_only=True)
class MatrixConfig:
    """What ``rmq bench matrix`` runs."""

    #: Seconds each cell measures (a drain ends earlier when the backlog is empty).
    duration_s: float = attrs.field(default=5.0, validator=_positive)
    inflights: tuple[int, ...] = attrs.field(default=(1, 64, 256), validator=_positive)
    deployments: tuple[str, ...] = attrs.field(
        default=RMQ_DEPLOYMENTS, validator=_subset(RMQ_DEPLOYMENTS)
    )
    #: ``auto``: the NATS cells when nats-server and nats-py are installed, else skipped
    #: with the reason; ``nats``: required; ``none``: left out.
    peer: str = attrs.field(default="auto", validator=attrs.validators.in_(PEER_CHOICES))
    peer_replicas: tuple[int, ...] = attrs.field(default=(1, 3), validator=_subset((1, 3)))
    size_bytes: int = attrs.field(default=1024, validator=_positive)
    #: Queues of our topic.
    queues: int = attrs.field(default=8, validator=_positive)
    consume: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.deployments and self.peer == "none":
            raise ValueError("nothing to run: no deployment of ours and --peer none")

    def to_json(self) -> dict[str, Any]:
        return {
            "durationSeconds": self.duration_s,
            "inflights": list(self.inflights),
            "deployments": list(self.deployments),
            "peer": self.peer,
            "peerReplicas": list(self.peer_replicas),
            "messageSize": self.size_bytes,
            "queues": self.queues,
            "consume": self.consume,
        }


def planned_deployments(config: MatrixConfig) -> list[Deployment]:
    """The deployments ``config`` names, in run order (ours, then the peer's)."""
    keys = [k for k in RMQ_DEPLOYMENTS if k in config.deployments]
    if config.peer != "none":
        keys += [f"nats-r{r}" for r in sorted(config.peer_replicas)]
    return [DEPLOYMENTS[k] for k in keys]


@attrs.frozen
class Cell:
    deployment: str
    kind: str
    inflight: int | None = None

    @property
    def name(self) -> str:
        """``produce x64``, ``push``, ``pull``."""
        return f"{self.kind} x{self.inflight}" if self.inflight is not None else self.kind


def cells_of(deployment: Deployment, config: MatrixConfig) -> list[Cell]:
    """A deployment's cells, in run order."""
    cells = [Cell(deployment.key, PRODUCE, n) for n in config.inflights]
    if config.consume:
        if deployment.system == RMQ:
            cells.append(Cell(deployment.key, PUSH))
        cells.append(Cell(deployment.key, PULL))
    return cells


# --- figures ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Figures:
    """What one cell measured."""

    msgs: int
    failed: int
    duration_s: float
    msgs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    client_cpu_us: float | None
    server_cpu_us: float | None
    server_pids: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "msgs": self.msgs,
            "failed": self.failed,
            "durationSeconds": self.duration_s,
            "msgsPerSecond": self.msgs_per_s,
            "latency50Ms": self.p50_ms,
            "latency99Ms": self.p99_ms,
            "clientCpuUsPerMsg": self.client_cpu_us,
            "serverCpuUsPerMsg": self.server_cpu_us,
            "serverPids": list(self.server_pids),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Figures:
        return cls(
            msgs=int(doc["msgs"]),
            failed=int(doc["failed"]),
            duration_s=float(doc["durationSeconds"]),
            msgs_per_s=float(doc["msgsPerSecond"]),
            p50_ms=_float_or_none(doc["latency50Ms"]),
            p99_ms=_float_or_none(doc["latency99Ms"]),
            client_cpu_us=_float_or_none(doc["clientCpuUsPerMsg"]),
            server_cpu_us=_float_or_none(doc["serverCpuUsPerMsg"]),
            server_pids=tuple(int(p) for p in doc.get("serverPids", ())),
        )

    @property
    def complete(self) -> bool:
        """Every column has a number (and something was measured)."""
        values = (self.p50_ms, self.p99_ms, self.client_cpu_us, self.server_cpu_us)
        return self.msgs > 0 and self.msgs_per_s > 0 and all(v is not None for v in values)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def measured(meter: Meter, use: CpuUse, server_pids: Sequence[int]) -> Figures:
    """A finished meter and the CPU used over it (this process, the servers together)."""
    rt = meter.latency()
    servers = use.others
    return Figures(
        msgs=meter.msgs,
        failed=meter.failed,
        duration_s=round(meter.elapsed_s(), 3),
        msgs_per_s=round(meter.rate_per_s(), 1),
        p50_ms=rt.ms_at(50),
        p99_ms=rt.ms_at(99),
        client_cpu_us=us_per_msg(use.own.total_s, meter.msgs),
        server_cpu_us=us_per_msg(servers.total_s, meter.msgs) if servers is not None else None,
        server_pids=tuple(server_pids),
    )


def from_produce(doc: Mapping[str, Any]) -> Figures:
    """``rmq bench produce --json``'s result as figures."""
    return Figures(
        msgs=int(doc["sent"]),
        failed=int(doc["failed"]),
        duration_s=float(doc["durationSeconds"]),
        msgs_per_s=round(float(doc["sendTps"]), 1),
        p50_ms=_latency(doc, "aggregatedPublishLatency50pct", int(doc["sent"])),
        p99_ms=_latency(doc, "aggregatedPublishLatency99pct", int(doc["sent"])),
        client_cpu_us=_float_or_none(doc.get("clientCpuUsPerMsg")),
        server_cpu_us=_float_or_none(doc.get("brokerCpuUsPerMsg")),
        server_pids=tuple(int(p) for p in doc.get("brokerPids", ())),
    )


def from_consume(doc: Mapping[str, Any]) -> Figures:
    """``rmq bench consume --json``'s result as figures (latency: born -> consumed)."""
    consumed = int(doc["consumed"])
    duration_s = float(doc["durationSeconds"])
    return Figures(
        msgs=consumed,
        failed=0,
        duration_s=duration_s,
        msgs_per_s=round(consumed / duration_s, 1) if duration_s > 0 else 0.0,
        p50_ms=_latency(doc, "aggregatedEndToEndLatency50pct", consumed),
        p99_ms=_latency(doc, "aggregatedEndToEndLatency99pct", consumed),
        client_cpu_us=_float_or_none(doc.get("clientCpuUsPerMsg")),
        server_cpu_us=_float_or_none(doc.get("brokerCpuUsPerMsg")),
        server_pids=tuple(int(p) for p in doc.get("brokerPids", ())),
    )


def with_end_to_end(drain: Figures, e2e_doc: Mapping[str, Any]) -> Figures:
    """The drain's figures with the born -> consumed percentiles of an ``--e2e`` run."""
    consumed = int(e2e_doc.get("consumed", 0))
    return attrs.evolve(
        drain,
        p50_ms=_latency(e2e_doc, "aggregatedEndToEndLatency50pct", consumed),
        p99_ms=_latency(e2e_doc, "aggregatedEndToEndLatency99pct", consumed),
    )


def _latency(doc: Mapping[str, Any], key: str, count: int) -> float | None:
    """A latency key of an OMB result; None when nothing was timed (the key reads 0)."""
    value = doc.get(key)
    return float(value) if value is not None and count > 0 else None


# --- results, the JSON and the table ------------------------------------------------------


@attrs.frozen(kw_only=True)
class CellResult:
    cell: Cell
    figures: Figures | None = None
    #: Why there are no figures (None when there are).
    missing: str | None = None
    #: The run failed (rather than being skipped on purpose).
    failed: bool = False
    #: The 1-minute load average when the cell started.
    loadavg_1m: float | None = None
    notes: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        assert self.figures is not None or self.missing is not None, self

    def to_json(self) -> dict[str, Any]:
        deployment = DEPLOYMENTS[self.cell.deployment]
        out: dict[str, Any] = {
            "deployment": self.cell.deployment,
            "system": deployment.system,
            "kind": self.cell.kind,
            "inflight": self.cell.inflight,
            "latency": LATENCY[(deployment.system, self.cell.kind)],
            "serverCpu": deployment.servers,
            "loadavg1m": self.loadavg_1m,
        }
        out |= self.figures.to_json() if self.figures is not None else {}
        out |= {"missing": self.missing, "failed": self.failed, "notes": list(self.notes)}
        return out


def skipped(cells: Iterable[Cell], reason: str) -> list[CellResult]:
    return [CellResult(cell=c, missing=reason) for c in cells]


def matrix_doc(
    *,
    config: MatrixConfig,
    results: Sequence[CellResult],
    host: Mapping[str, Any],
    complete: bool,
) -> dict[str, Any]:
    """``matrix.json``: the run's facts, its deployments and every cell."""
    used = list(dict.fromkeys(r.cell.deployment for r in results))
    return {
        "version": FORMAT_VERSION,
        "host": dict(host),
        "config": config.to_json(),
        "deployments": [
            {"key": k, **attrs.asdict(DEPLOYMENTS[k], filter=lambda a, _: a.name != "key")}
            for k in used
        ],
        "cells": [r.to_json() for r in results],
        # False when the run stopped early (Ctrl-C, an error): "cells" holds what was done.
        "complete": complete,
        "failedCells": sum(1 for r in results if r.failed),
    }


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table_lines(results: Sequence[CellResult]) -> list[str]:
    """The matrix as a Markdown table, then what its columns mean."""
    lines = [
        "| deployment | cell | msg/s | p50 ms | p99 ms | client µs/msg | server µs/msg |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        label = DEPLOYMENTS[r.cell.deployment].label
        f = r.figures
        if f is None:
            lines.append(f"| {label} | {r.cell.name} | {r.missing} | | | | |")
            continue
        lines.append(
            f"| {label} | {r.cell.name} | {_num(f.msgs_per_s, 0)} | {_num(f.p50_ms, 2)} "
            f"| {_num(f.p99_ms, 2)} | {_num(f.client_cpu_us, 1)} | {_num(f.server_cpu_us, 1)} |"
        )
    lines += ["", *legend_lines(results)]
    return lines


def legend_lines(results: Sequence[CellResult]) -> list[str]:
    """What the server CPU and the latency of each row mean."""
    deployments = [DEPLOYMENTS[k] for k in dict.fromkeys(r.cell.deployment for r in results)]
    lines = [f"- server µs/msg, {d.label}: {d.servers}" for d in deployments]
    kinds = dict.fromkeys((DEPLOYMENTS[r.cell.deployment].system, r.cell.kind) for r in results)
    for system, kind in kinds:
        lines.append(f"- latency, {system} {kind}: {LATENCY[(system, kind)]}")
    notes = [
        f"{DEPLOYMENTS[r.cell.deployment].label} {r.cell.name}: {n}"
        for r in results
        for n in r.notes
    ]
    return lines + [f"- note, {n}" for n in notes]
