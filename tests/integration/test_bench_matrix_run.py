"""``rmq bench matrix`` end to end, small: a single-master cluster (1 s cells, 1 and 8 in
flight, push and pull) and NATS JetStream R1 when nats-server and nats-py are installed
(else its cells must say why they were skipped). The JSON, the PNG and the table are
written, every cell has numbers, and nothing the run started is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.nats_peer import peer_problem
from launcher.pids import proc_cmdline
from tests.support.processes import rmq_argv, run_command

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 300.0
OURS = {("single", "produce", 1), ("single", "produce", 8), ("single", "push", None)}
OURS |= {("single", "pull", None)}
PEER = {("nats-r1", "produce", 1), ("nats-r1", "produce", 8), ("nats-r1", "pull", None)}
NUMBERS = ("msgsPerSecond", "latency50Ms", "latency99Ms", "clientCpuUsPerMsg")


def _processes_under(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and any(str(path) in arg for arg in proc_cmdline(int(proc.name))):
            found.append(int(proc.name))
    return found


async def test_the_matrix_measures_every_cell_and_writes_json_png_and_table(
    tmp_path: Path,
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir()
    argv = rmq_argv(
        "bench", "matrix", "--out", str(out), "--duration", "1", "--inflight", "1,8",
        "--deployments", "single", "--peer-replicas", "1",
    )  # fmt: skip
    # TMPDIR: the run's data directory lands where this test can check it was removed.
    done = await run_command(argv, timeout_s=RUN_TIMEOUT_S, env={"TMPDIR": str(work)})
    assert done.returncode == 0, done.describe()

    doc = json.loads((out / "matrix.json").read_text())
    assert doc["complete"] and doc["failedCells"] == 0, doc
    assert doc["host"]["cpus"] and len(doc["host"]["loadavgBefore"]) == 3
    cells = {(c["deployment"], c["kind"], c["inflight"]): c for c in doc["cells"]}
    assert set(cells) == OURS | PEER
    problem = peer_problem()
    measured = OURS | (PEER if problem is None else set())
    for key in measured:
        cell = cells[key]
        assert cell["missing"] is None and not cell["failed"], cell
        assert cell["msgs"] > 0 and all(cell[k] > 0 for k in NUMBERS), cell
        assert cell["latency99Ms"] >= cell["latency50Ms"], cell
        # CPU is read in clock ticks: a short drain may spend less than one on a side.
        assert cell["serverCpuUsPerMsg"] is not None and cell["serverCpuUsPerMsg"] >= 0, cell
        assert len(cell["serverPids"]) == 1, cell  # one broker; one nats-server
    for key in PEER - measured:
        assert cells[key]["missing"] == f"skipped: {problem}", cells[key]

    assert (out / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| single master | produce x1 | " in done.stdout, done.describe()
    assert "| NATS JetStream R1 | pull | " in done.stdout, done.describe()
    assert not list(work.iterdir()), list(work.iterdir())
    assert not _processes_under(work), done.describe()
