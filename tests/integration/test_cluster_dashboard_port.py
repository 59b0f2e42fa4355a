"""``rmq cluster up`` whose dashboard cannot bind its port: one error line saying what to
do, and every node it had started is stopped again."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.test_cluster_cli import cluster_dir, read_record, rmq
from tests.support.processes import recorded_pids, rmq_running

pytestmark = pytest.mark.integration


async def test_dashboard_port_taken_fails_up_and_stops_the_rest(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        async with cluster_dir(tmp_path / "c") as root:
            done = await rmq(
                "cluster", "up", "--mode", "single", "--dir", str(root),
                "--namesrv-port", "0", "--dashboard-port", port,
            )  # fmt: skip
            assert done.returncode == 1 and done.stdout == "", done.describe()
            first = done.stderr.splitlines()[0]
            assert first.startswith("error: the dashboard did not start"), done.describe()
            assert "--dashboard-port 0" in first and "--no-dashboard" in first
            assert "Address already in use" in done.stderr, done.describe()
            assert read_record(root)["state"] == "failed"
            assert not any(rmq_running(pid, root) for pid in recorded_pids(root).values())
