"""``rmq cluster up|status|down``: real detached processes, found again through cluster.json.

Every test runs its cluster in a ``tmp_path`` directory with ``--namesrv-port 0`` and stops
it on the way out, failed or not: ``rmq cluster down`` first, then SIGKILL for any pid in
cluster.json that is still one of this test's ``rmq`` processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from client import admin
from protocol.rpc import open_client
from tests.support.processes import (
    Completed,
    kill_leftovers,
    recorded_pids,
    rmq_argv,
    rmq_running,
    run_command,
)
from tests.support.scrape import scrape_text

pytestmark = pytest.mark.integration

#: One CLI run: ``up`` waits for up to three ready lines on a slow machine.
CLI_TIMEOUT_S = 120.0
NAMESRV_LINE = re.compile(r"^namesrv (127\.0\.0\.1:\d+)$")


def broker_line(name: str) -> re.Pattern[str]:
    return re.compile(rf"^{name} master (127\.0\.0\.1:\d+)$")


async def rmq(*args: str) -> Completed:
    return await run_command(rmq_argv(*args), timeout_s=CLI_TIMEOUT_S)


def assert_ok(done: Completed) -> str:
    assert done.returncode == 0, done.describe()
    assert "Traceback" not in done.stderr, done.describe()
    return done.stdout


def assert_one_line_error(done: Completed, *needles: str) -> str:
    assert done.returncode == 1, done.describe()
    assert done.stdout == "", done.describe()
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.describe()
    for needle in needles:
        assert needle in lines[0], done.describe()
    return lines[0]


def read_record(root: Path) -> dict[str, Any]:
    data = json.loads((root / "cluster.json").read_text())
    assert isinstance(data, dict)
    return data


@asynccontextmanager
async def cluster_dir(root: Path) -> AsyncIterator[Path]:
    """``root`` for a cluster; whatever it started is stopped when the block ends."""
    try:
        yield root
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLI_TIMEOUT_S):
            if (root / "cluster.json").exists():
                await rmq("cluster", "down", "--dir", str(root), "--timeout", "5")
        kill_leftovers(root)


async def up(root: Path, mode: str) -> tuple[str, dict[str, str]]:
    """``rmq cluster up`` (no dashboard and no proxy: test_controller_is_the_default_mode
    has both); the NameServer's address and each broker's."""
    done = await rmq(
        "cluster", "up", "--mode", mode, "--dir", str(root), "--namesrv-port", "0",
        "--no-dashboard", "--no-proxy",
    )  # fmt: skip
    lines = assert_ok(done).splitlines()
    match = NAMESRV_LINE.match(lines[0])
    assert match, done.describe()
    names = ["broker-a"] if mode == "single" else ["broker-a", "broker-b"]
    assert len(lines) == 1 + len(names), done.describe()
    brokers = {}
    for name, line in zip(names, lines[1:], strict=True):
        broker = broker_line(name).match(line)
        assert broker, done.describe()
        brokers[name] = broker.group(1)
    return match.group(1), brokers


async def test_single_up_status_route_down(tmp_path: Path) -> None:
    async with cluster_dir(tmp_path / "c") as root:
        namesrv, brokers = await up(root, "single")

        record = read_record(root)
        assert record["mode"] == "single" and record["state"] == "running"
        nodes = {n["name"]: n for n in record["nodes"]}
        assert list(nodes) == ["namesrv", "broker-a"]
        assert nodes["namesrv"]["address"] == namesrv
        assert nodes["broker-a"]["address"] == brokers["broker-a"]
        assert Path(nodes["broker-a"]["store_dir"]).parent == root / "broker-a"
        for node in nodes.values():
            assert rmq_running(node["pid"], root), node
            assert Path(node["log_file"]).is_file()

        status = assert_ok(await rmq("cluster", "status", "--dir", str(root)))
        rows = [line.split() for line in status.splitlines()[2:]]
        assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
            ("namesrv", "namesrv", namesrv, "yes", "yes"),
            ("broker-a", "master", brokers["broker-a"], "yes", "yes"),
        ], status
        doc = json.loads(assert_ok(await rmq("cluster", "status", "--dir", str(root), "--json")))
        assert [(n["name"], n["alive"], n["serving"]) for n in doc["nodes"]] == [
            ("namesrv", True, True),
            ("broker-a", True, True),
        ]

        # The NameServer named in cluster.json serves the broker's default topic route.
        with trio.fail_after(30):
            async with open_client(default_timeout_s=10.0) as client:
                route = await admin.get_topic_route(client, [nodes["namesrv"]["address"]], "TBW102")
        assert [(b.broker_name, b.broker_addrs) for b in route.broker_datas] == [
            ("broker-a", {0: brokers["broker-a"]})
        ]
        assert [q.broker_name for q in route.queue_datas] == ["broker-a"]

        stopped = assert_ok(await rmq("cluster", "down", "--dir", str(root)))
        for name, node in nodes.items():
            assert f"{name} (pid {node['pid']}): stopped" in stopped, stopped
            assert not rmq_running(node["pid"], root)
        assert read_record(root)["state"] == "stopped"
        # The brokers were stopped by SIGTERM, cleanly: their stores closed.
        assert "stopped" in (root / "broker-a" / "stderr.log").read_text()
        assert not (Path(nodes["broker-a"]["store_dir"]) / "abort").exists()

        doc = json.loads(assert_ok(await rmq("cluster", "status", "--dir", str(root), "--json")))
        assert [n["alive"] for n in doc["nodes"]] == [False, False]


async def test_multi_master_cluster_list_refused_double_up_and_down_twice(
    tmp_path: Path,
) -> None:
    async with cluster_dir(tmp_path / "c") as root:
        namesrv, brokers = await up(root, "multi-master")
        pids = list(recorded_pids(root).values())
        assert len(pids) == 3

        listing = assert_ok(await rmq("admin", "clusterList", "-n", namesrv))
        # The identity columns; runtime columns (#Version, #Role, ...) follow them.
        rows = {tuple(line.split()[:4]) for line in listing.splitlines()[1:]}
        assert rows == {
            ("DefaultCluster", "broker-a", "0", brokers["broker-a"]),
            ("DefaultCluster", "broker-b", "0", brokers["broker-b"]),
        }, listing

        # Separate stores.
        stores = {n["name"]: n["store_dir"] for n in read_record(root)["nodes"][1:]}
        assert len(set(stores.values())) == 2
        assert all((Path(s) / "commitlog").is_dir() for s in stores.values())

        again = await rmq("cluster", "up", "--dir", str(root), "--namesrv-port", "0")
        assert_one_line_error(again, "already holds a running cluster", "rmq cluster down")
        assert list(recorded_pids(root).values()) == pids
        assert all(rmq_running(pid, root) for pid in pids)

        first = assert_ok(await rmq("cluster", "down", "--dir", str(root)))
        assert first.count(": stopped") == 3, first
        assert not any(rmq_running(pid, root) for pid in pids)
        second = assert_ok(await rmq("cluster", "down", "--dir", str(root)))
        assert second.count(": was not running") == 3, second


async def test_controller_is_the_default_mode(tmp_path: Path) -> None:
    async with cluster_dir(tmp_path / "c") as root:
        done = await rmq("cluster", "up", "--dir", str(root), "--namesrv-port", "0")
        lines = assert_ok(done).splitlines()
        assert [line.split()[1] for line in lines[:-1]] == [
            *["controller"] * 3,
            "127.0.0.1:" + lines[3].split(":")[-1],
            *["replica"] * 3,
            "proxy",  # gRPC for RocketMQ 5 clients, on a free port
        ], done.describe()
        assert read_record(root)["mode"] == "controller"
        # The last line is the dashboard's URL (a free port, as the NameServer's), and it
        # serves the cluster's state, controllers and broker set included.
        url = re.fullmatch(r"dashboard (http://127\.0\.0\.1:\d+/)", lines[-1])
        assert url, done.describe()
        address = url.group(1).removeprefix("http://").rstrip("/")
        with trio.fail_after(30):
            while True:
                state = json.loads(await scrape_text(address, "/api/state"))
                if state["groups"] and state["leader"]:
                    break
                await trio.sleep(0.2)
        assert [g["brokerName"] for g in state["groups"]] == ["broker-a"]
        assert len(state["controllers"]) == 3
        # Each controller's metrics are read too (they export on free ports).
        assert all(c["metricsAddress"] and c["error"] is None for c in state["controllers"])


async def test_failed_start_stops_what_was_started(tmp_path: Path) -> None:
    """broker-a cannot open its store (another process holds it): up fails, with the
    broker's log tail, and the NameServer it had started is stopped again."""
    async with cluster_dir(tmp_path / "c") as root:
        store = root / "broker-a" / "store"
        store.mkdir(parents=True)
        fd = os.open(store / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            done = await rmq(
                "cluster", "up", "--mode", "single", "--dir", str(root), "--namesrv-port", "0"
            )
        finally:
            os.close(fd)
        assert done.returncode == 1, done.describe()
        assert done.stdout == "", done.describe()
        first, *tail = done.stderr.splitlines()
        assert first.startswith("error: broker-a exited with status 1 before it was ready")
        assert any("in use by another process" in line for line in tail), done.describe()
        record = read_record(root)
        assert record["state"] == "failed"
        assert [n["state"] for n in record["nodes"]] == ["stopped", "failed"]
        assert not any(rmq_running(pid, root) for pid in list(recorded_pids(root).values()))

        # The directory is free again: a new up starts.
        await up(root, "single")


async def test_namesrv_port_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        async with cluster_dir(tmp_path / "c") as root:
            done = await rmq(
                "cluster", "up", "--mode", "single", "--dir", str(root), "--namesrv-port", port
            )
            assert done.returncode == 1, done.describe()
            assert done.stderr.startswith("error: namesrv exited with status 1"), done.describe()
            assert "Address already in use" in done.stderr, done.describe()
            assert not any(rmq_running(pid, root) for pid in list(recorded_pids(root).values()))


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("up", "--mode", "bogus"), ("unknown mode 'bogus'", "single, multi-master", "controller")),
        (("up", "--flush", "SOMETIMES"), ("--flush must be one of ASYNC_FLUSH, SYNC_FLUSH",)),
        (("status",), ("no cluster in",)),
        (("down",), ("no cluster in",)),
    ],
)
async def test_one_line_errors(
    tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    root = tmp_path / "c"
    done = await rmq("cluster", *args, "--dir", str(root))
    assert_one_line_error(done, *needles)
    assert not (root / "cluster.json").exists()
