"""The benchmark matrix's pure parts (``bench/matrix_cells.py``, the NATS server config of
``bench/nats_peer.py``) and its chart: which cells a run holds, how each client's JSON
becomes figures, the matrix JSON and the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.matrix_cells import (
    DEPLOYMENTS,
    LATENCY,
    NATS,
    PRODUCE,
    PULL,
    PUSH,
    RMQ,
    Cell,
    CellResult,
    Figures,
    MatrixConfig,
    cells_of,
    from_consume,
    from_produce,
    matrix_doc,
    measured,
    planned_deployments,
    skipped,
    table_lines,
    with_end_to_end,
)
from bench.matrix_chart import write_chart
from bench.measure import CpuTimes, CpuUse, Meter
from bench.nats_peer import server_conf


def figures(rate: float = 1000.0, **changes: Any) -> Figures:
    values: dict[str, Any] = {
        "msgs": 5000,
        "failed": 0,
        "duration_s": 5.0,
        "msgs_per_s": rate,
        "p50_ms": 1.5,
        "p99_ms": 9.25,
        "client_cpu_us": 100.0,
        "server_cpu_us": 120.5,
        "server_pids": (11, 12, 13),
    }
    return Figures(**(values | changes))


# --- the plan ----------------------------------------------------------------------------------


def test_the_default_matrix_is_ours_then_the_peer_each_with_its_cells() -> None:
    config = MatrixConfig()
    keys = [d.key for d in planned_deployments(config)]
    assert keys == ["single", "controller", "nats-r1", "nats-r3"]
    assert [c.name for c in cells_of(DEPLOYMENTS["controller"], config)] == [
        "produce x1",
        "produce x64",
        "produce x256",
        "push",
        "pull",
    ]
    # The peer has no push consumer cell: its consume cell is the pull consumer.
    assert [c.name for c in cells_of(DEPLOYMENTS["nats-r3"], config)] == [
        "produce x1",
        "produce x64",
        "produce x256",
        "pull",
    ]
    assert (
        DEPLOYMENTS["controller"].mode == "controller" and DEPLOYMENTS["controller"].replicas == 3
    )
    assert DEPLOYMENTS["nats-r3"].replicas == 3 and DEPLOYMENTS["nats-r1"].replicas == 1


def test_a_smaller_matrix_keeps_the_run_order() -> None:
    config = MatrixConfig(
        deployments=("single",), peer_replicas=(3, 1), inflights=(1, 8), consume=False
    )
    assert [d.key for d in planned_deployments(config)] == ["single", "nats-r1", "nats-r3"]
    assert cells_of(DEPLOYMENTS["single"], config) == [
        Cell("single", PRODUCE, 1),
        Cell("single", PRODUCE, 8),
    ]
    no_peer = MatrixConfig(peer="none")
    assert [d.key for d in planned_deployments(no_peer)] == ["single", "controller"]
    only_peer = MatrixConfig(deployments=(), peer_replicas=(1,))
    assert [d.key for d in planned_deployments(only_peer)] == ["nats-r1"]


@pytest.mark.parametrize(
    "changes",
    [
        {"duration_s": 0},
        {"inflights": ()},
        {"inflights": (1, 0)},
        {"inflights": (64, 64)},
        {"deployments": ("sync",)},
        {"deployments": ("single", "single")},
        {"peer": "kafka"},
        {"peer_replicas": (2,)},
        {"size_bytes": -1},
        {"deployments": (), "peer": "none"},
    ],
)
def test_a_config_that_cannot_run_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MatrixConfig(**changes)


def test_every_cell_kind_of_every_system_says_what_its_latency_times() -> None:
    config = MatrixConfig()
    for deployment in planned_deployments(config):
        for cell in cells_of(deployment, config):
            assert LATENCY[(deployment.system, cell.kind)]
    assert (NATS, PUSH) not in LATENCY


# --- figures from each client ------------------------------------------------------------------


def test_produce_figures_come_from_rmq_bench_produce_json() -> None:
    doc = {
        "sent": 5200,
        "failed": 3,
        "durationSeconds": 5.0,
        "sendTps": 1023.456,
        "aggregatedPublishLatency50pct": 1.2,
        "aggregatedPublishLatency99pct": 8.5,
        "clientCpuUsPerMsg": 101.5,
        "brokerCpuUsPerMsg": 140.25,
        "brokerPids": [7, 8, 9],
    }
    assert from_produce(doc) == Figures(
        msgs=5200,
        failed=3,
        duration_s=5.0,
        msgs_per_s=1023.5,
        p50_ms=1.2,
        p99_ms=8.5,
        client_cpu_us=101.5,
        server_cpu_us=140.25,
        server_pids=(7, 8, 9),
    )
    # Nothing acknowledged: the latency keys read 0 but nothing was timed.
    empty = from_produce(doc | {"sent": 0, "sendTps": 0.0, "brokerCpuUsPerMsg": None})
    assert empty.p50_ms is None and empty.p99_ms is None and empty.server_cpu_us is None
    assert not empty.complete


def test_a_push_cell_is_the_drain_with_the_end_to_end_run_latency() -> None:
    drain_doc = {
        "consumed": 20000,
        "durationSeconds": 1.6,
        "aggregatedEndToEndLatency50pct": 900.0,  # a backlog's age, not a latency
        "aggregatedEndToEndLatency99pct": 1500.0,
        "clientCpuUsPerMsg": 36.0,
        "brokerCpuUsPerMsg": 9.5,
        "brokerPids": [5],
    }
    drain = from_consume(drain_doc)
    assert drain.msgs_per_s == 12500.0 and drain.client_cpu_us == 36.0
    e2e_doc = {
        "consumed": 2135,
        "aggregatedEndToEndLatency50pct": 2.123,
        "aggregatedEndToEndLatency99pct": 7.511,
    }
    push = with_end_to_end(drain, e2e_doc)
    assert (push.p50_ms, push.p99_ms) == (2.123, 7.511)
    assert push.msgs == 20000 and push.server_cpu_us == 9.5 and push.server_pids == (5,)
    assert push.complete
    nothing = with_end_to_end(drain, e2e_doc | {"consumed": 0})
    assert nothing.p50_ms is None and not nothing.complete


def test_measured_figures_of_a_meter_and_its_cpu() -> None:
    meter = Meter.starting(10.0, latency_per_message=False)
    meter.record_ok(10.5, 0.001, 32)  # exact: below 1024 us
    meter.record_ok(11.5, 0.004, 32)
    meter.record_failed(11.6, 1, response=False)
    meter.finish(12.0)
    use = CpuUse(
        wall_s=2.0,
        own=CpuTimes(0.0032, 0.0),
        others=CpuTimes(0.0048, 0.0016),
        machine_busy_s=1.0,
    )
    got = measured(meter, use, [4, 5])
    assert got == Figures(
        msgs=64,
        failed=1,
        duration_s=2.0,
        msgs_per_s=32.0,
        p50_ms=1.0,
        p99_ms=4.0,  # the maximum: its bucket's ceiling is capped there
        client_cpu_us=50.0,
        server_cpu_us=100.0,
        server_pids=(4, 5),
    )
    unread = measured(meter, CpuUse(wall_s=2.0, own=use.own, others=None, machine_busy_s=0), [4])
    assert unread.server_cpu_us is None and not unread.complete


def test_figures_survive_their_json() -> None:
    original = figures(p99_ms=None, server_cpu_us=None)
    doc = json.loads(json.dumps(original.to_json()))
    assert Figures.from_json(doc) == original
    assert set(doc) == {
        "msgs",
        "failed",
        "durationSeconds",
        "msgsPerSecond",
        "latency50Ms",
        "latency99Ms",
        "clientCpuUsPerMsg",
        "serverCpuUsPerMsg",
        "serverPids",
    }


# --- the JSON and the table ----------------------------------------------------------------------


def results() -> list[CellResult]:
    return [
        CellResult(cell=Cell("single", PRODUCE, 1), figures=figures(583.4), loadavg_1m=0.5),
        CellResult(cell=Cell("single", PRODUCE, 64), figures=figures(3840.0)),
        CellResult(
            cell=Cell("single", PUSH), figures=figures(22168.0), notes=("drained 5,000 of 5,000",)
        ),
        CellResult(cell=Cell("single", PULL), missing="failed: bench.pull exit 1", failed=True),
        *skipped(
            [Cell("nats-r1", PRODUCE, 1), Cell("nats-r1", PULL)],
            "skipped: nats-server is not installed",
        ),
    ]


def test_the_matrix_json_holds_the_run_facts_and_every_cell() -> None:
    doc = matrix_doc(
        config=MatrixConfig(inflights=(1, 64), deployments=("single",), peer_replicas=(1,)),
        results=results(),
        host={"cpus": 2, "loadavgBefore": [1.0, 2.0, 3.0]},
        complete=True,
    )
    assert json.loads(json.dumps(doc)) == doc
    assert doc["version"] == 1 and doc["complete"] and doc["failedCells"] == 1
    assert doc["host"] == {"cpus": 2, "loadavgBefore": [1.0, 2.0, 3.0]}
    assert doc["config"]["inflights"] == [1, 64] and doc["config"]["messageSize"] == 1024
    assert [d["key"] for d in doc["deployments"]] == ["single", "nats-r1"]
    assert doc["deployments"][0]["servers"] == "the broker process"
    first, pull, nats_cell = doc["cells"][0], doc["cells"][3], doc["cells"][4]
    assert first == {
        "deployment": "single",
        "system": RMQ,
        "kind": PRODUCE,
        "inflight": 1,
        "latency": LATENCY[(RMQ, PRODUCE)],
        "serverCpu": "the broker process",
        "loadavg1m": 0.5,
        **figures(583.4).to_json(),
        "missing": None,
        "failed": False,
        "notes": [],
    }
    assert pull["failed"] and pull["missing"] == "failed: bench.pull exit 1"
    assert "msgsPerSecond" not in pull
    assert nats_cell["system"] == NATS and not nats_cell["failed"]
    assert nats_cell["missing"] == "skipped: nats-server is not installed"


def test_the_table_has_a_row_per_cell_and_says_what_columns_mean() -> None:
    lines = table_lines(results())
    assert lines[0] == (
        "| deployment | cell | msg/s | p50 ms | p99 ms | client µs/msg | server µs/msg |"
    )
    assert lines[2] == "| single master | produce x1 | 583 | 1.50 | 9.25 | 100.0 | 120.5 |"
    assert lines[4] == "| single master | push | 22,168 | 1.50 | 9.25 | 100.0 | 120.5 |"
    assert lines[5] == "| single master | pull | failed: bench.pull exit 1 | | | | |"
    assert lines[6] == (
        "| NATS JetStream R1 | produce x1 | skipped: nats-server is not installed | | | | |"
    )
    rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(results())
    legend = "\n".join(lines[lines.index("") + 1 :])
    assert "server µs/msg, single master: the broker process" in legend
    assert "server µs/msg, NATS JetStream R1: the nats-server process" in legend
    assert f"latency, {RMQ} push: {LATENCY[(RMQ, PUSH)]}" in legend
    assert "note, single master push: drained 5,000 of 5,000" in legend


def test_a_missing_figure_is_a_dash() -> None:
    row = table_lines([CellResult(cell=Cell("single", PRODUCE, 1), figures=figures(p99_ms=None))])
    assert row[2] == "| single master | produce x1 | 1,000 | 1.50 | - | 100.0 | 120.5 |"


def test_a_cell_result_has_figures_or_says_why_not() -> None:
    with pytest.raises(AssertionError):
        CellResult(cell=Cell("single", PULL))


def test_the_chart_is_a_png_also_with_cells_missing(tmp_path: Path) -> None:
    path = tmp_path / "matrix.png"
    more = [
        CellResult(cell=Cell("nats-r3", PRODUCE, 1), figures=figures(2600.0, p50_ms=0.33)),
        CellResult(cell=Cell("nats-r3", PRODUCE, 64), figures=figures(14000.0, p99_ms=None)),
    ]
    write_chart(path, [*results(), *more], title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_chart(tmp_path / "empty.png", skipped([Cell("nats-r1", PULL)], "skipped"), title="t")
    assert (tmp_path / "empty.png").stat().st_size > 0


# --- the peer's server config -------------------------------------------------------------------


def test_a_single_nats_server_listens_on_loopback_with_jetstream(tmp_path: Path) -> None:
    assert server_conf("n1", tmp_path / "n1") == (
        f'server_name: n1\nlisten: 127.0.0.1:-1\njetstream {{ store_dir: "{tmp_path}/n1" }}\n'
    )


def test_a_cluster_member_routes_to_the_others(tmp_path: Path) -> None:
    conf = server_conf("n2", tmp_path / "n2", cluster_port=6002, routes=[6001, 6003])
    assert conf.endswith(
        "cluster {\n  name: bench\n  listen: 127.0.0.1:6002\n"
        "  routes: [nats://127.0.0.1:6001, nats://127.0.0.1:6003]\n}\n"
    )
    assert "listen: 127.0.0.1:-1" in conf and "server_name: n2" in conf


# --- the command's options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--inflight", "1,x"], "--inflight takes numbers"),
        (["--inflight", "64,64"], "inflights must be positive (and distinct)"),
        (["--deployments", "sync"], "deployments"),
        (["--peer", "kafka"], "peer"),
        (["--peer-replicas", "5"], "peer_replicas"),
        (["--deployments", "", "--peer", "none"], "nothing to run"),
    ],
)
def test_the_matrix_command_refuses_bad_options_before_starting_anything(
    tmp_path: Path, args: list[str], says: str
) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    result = CliRunner().invoke(app, ["bench", "matrix", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 1, result.output
    assert "error: " in result.output and says in result.output, result.output
    assert not (tmp_path / "o").exists()
