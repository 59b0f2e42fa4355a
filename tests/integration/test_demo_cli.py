"""``rmq demo`` as a new user runs it: a real controller-mode cluster, SIGKILL of the
master under load, the checker's verdict as the last line, everything stopped after."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.processes import rmq_argv, run_command

pytestmark = pytest.mark.integration

SUMMARY = re.compile(r"^(\d+) sent, (\d+) acked, (\d+) consumed, (\d+) lost$")


async def test_demo_kills_the_master_and_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    try:
        done = await run_command(
            rmq_argv("demo", "--dir", str(root), "--seconds", "10", "--rate", "100", "--seed", "7"),
            timeout_s=180,
        )
    finally:
        if (root / "cluster" / "cluster.json").exists():  # the demo did not stop it itself
            await run_command(rmq_argv("cluster", "down", "--dir", str(root / "cluster")))
    assert done.returncode == 0, done.describe()
    lines = done.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1])
    assert match, done.describe()
    sent, acked, consumed, lost = map(int, match.groups())
    assert lost == 0 and acked > 200 and consumed >= acked and sent >= acked, lines[-1]
    text = done.stdout
    assert "SIGKILL broker-a-" in text and "controller elected a new master" in text, text
    assert "rejoins as a slave" in text, text
    report = json.loads((root / "report.json").read_text())
    assert report["verdict"] == "PASS"
    # The cluster's dashboard: its URL at the start, its saved page with the failover's
    # timeline linked from the report, kept after the cluster's data is removed.
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ ", text), text
    # And the gRPC proxy's endpoint, for the official RocketMQ 5 clients.
    assert re.search(r"RocketMQ 5 clients \(gRPC proxy\): 127\.0\.0\.1:\d+\n", text), text
    page = root / "dashboard.html"
    assert report["dashboard"] == f"{page.as_uri()}#timeline"
    assert f"the dashboard's timeline of the failover: {page.as_uri()}#timeline" in text
    assert "became master of broker-a" in page.read_text()
    # Every process is gone and the data removed (no --keep-data).
    assert not (root / "cluster").exists()


FIRST_ON_NEW_MASTER = re.compile(r"first SEND_OK stored by the new master came (\d+) ms after")


@pytest.mark.slow  # ~40-90 s, and its 2 s bound is a timing claim: run it on a quiet machine
async def test_demo_silent_master_is_replaced_in_under_two_seconds(tmp_path: Path) -> None:
    """``--silent``: SIGSTOP, no connection closes; the new master acks within 2 s."""
    root = tmp_path / "demo"
    argv = ["demo", "--silent", "--dir", str(root), "--seconds", "10", "--rate", "100"]
    try:
        done = await run_command(rmq_argv(*argv, "--seed", "8"), timeout_s=180)
    finally:
        if (root / "cluster" / "cluster.json").exists():
            await run_command(rmq_argv("cluster", "down", "--dir", str(root / "cluster")))
    assert done.returncode == 0, done.describe()
    text = done.stdout
    assert "SIGSTOP broker-a-" in text and "SIGCONT broker-a-" in text, text
    match = FIRST_ON_NEW_MASTER.search(text)
    assert match, text
    assert int(match.group(1)) < 2000, text
    last = SUMMARY.match(text.strip().splitlines()[-1])
    assert last and last.group(4) == "0", text


async def test_demo_refuses_a_directory_of_an_earlier_demo(tmp_path: Path) -> None:
    (tmp_path / "history.log").write_text("")
    done = await run_command(rmq_argv("demo", "--dir", str(tmp_path)), timeout_s=60)
    assert done.returncode == 1
    assert "holds an earlier demo" in done.stderr and "Traceback" not in done.stderr


def test_readme_first_command_installs_and_runs_the_demo() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0].strip()
    assert first_block.endswith("rmq demo") and "pip install -e ." in first_block
