"""Separate hosts on one machine (``rmq cluster up --netns``, ``Scenario.netns``): every
node in its own network namespace on a bridge, faults on the real links.

Root only: as another user each test is skipped with the reason ``launcher.netns`` gives
(CI runs as root here). Every test checks that the namespaces and links it made are gone
at its end: ``ip netns list`` and ``ip link`` are back to what they were.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from launcher import netns
from launcher.record import load_cluster
from scenarios import SCENARIOS
from scenarios.harness import RunOptions, run_scenario
from scenarios.history import FaultEvent, Phase, iter_history
from tests.integration.test_chaos_smoke import assert_nothing_left, leave_nothing
from tests.support.processes import rmq_argv, run_command

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        netns.netns_unavailable() is not None,
        reason=f"separate hosts unavailable: {netns.netns_unavailable()}",
    ),
]

RUN_DEADLINE_S = 240.0


def net_state() -> tuple[list[str], list[str]]:
    return sorted(netns.namespaces()), sorted(netns.links())


@pytest.fixture(autouse=True)
def leaves_the_network_as_it_was() -> Iterator[None]:
    before = net_state()
    yield
    assert net_state() == before, "namespaces or links were left behind"


async def test_cluster_up_netns_puts_each_node_on_its_own_host(tmp_path: Path) -> None:
    root = tmp_path / "c"
    up = await run_command(
        rmq_argv("cluster", "up", "--netns", "--dir", str(root), "--namesrv-port", "0"),
        timeout_s=120,
    )
    try:
        assert up.returncode == 0, up.describe()
        record = load_cluster(root)
        assert record is not None
        plan = netns.load_plan(root)
        assert plan is not None
        for node in record.nodes:
            # Observers: the dashboard and the gRPC proxy, in the root namespace, on loopback.
            if node.kind in ("dashboard", "proxy"):
                assert node.netns is None and node.address is not None
                assert node.address.startswith("127.0.0.1:")
                continue
            host = plan.host(node.name)
            assert node.netns == host.namespace
            assert node.address is not None and node.address.startswith(host.address + ":")
        # Controllers peer by address, each on RocketMQ's port of its own host.
        controllers = [n.address for n in record.nodes if n.kind == "controller"]
        assert {a.rpartition(":")[2] for a in controllers if a} == {"9878"}
        assert set(netns.namespaces()) >= {h.namespace for h in plan.hosts}
        # A client in the root namespace reaches them over the bridge.
        status = await run_command(rmq_argv("cluster", "status", "--dir", str(root)))
        assert status.returncode == 0, status.describe()
        assert re.search(
            r"broker-a-\d\s+replica\s+10\.213\.\d+\.\d+:\d+\s+\d+\s+yes\s+yes", status.stdout
        )
    finally:
        down = await run_command(rmq_argv("cluster", "down", "--dir", str(root)), timeout_s=60)
    assert down.returncode == 0, down.describe()
    assert "removed netns" in down.stdout
    assert not (root / "netns.json").exists()


async def test_a_failed_up_removes_the_hosts_it_made(tmp_path: Path) -> None:
    root = tmp_path / "c"
    up = await run_command(
        rmq_argv("cluster", "up", "--netns", "--dir", str(root), "--timeout", "0.01"),
        timeout_s=120,
    )
    assert up.returncode == 1 and "error:" in up.stderr, up.describe()
    assert not (root / "netns.json").exists()


async def test_master_netsplit_smoke_loses_no_send_ok(tmp_path: Path) -> None:
    """3 controllers, 3 replicas, each on its own host; the master's link cut for 4 s."""
    scenario = SCENARIOS["master_netsplit_no_loss"]
    options = RunOptions(duration_s=12.0, interval_s=4.0, seed=9, out_dir=tmp_path)
    async with leave_nothing(tmp_path / "cluster"):
        with trio.fail_after(RUN_DEADLINE_S):
            result = await run_scenario(scenario, options)
    assert result.ok, f"{result.report.failures}; replay: {result.replay}"
    assert result.faults_injected >= 1
    assert result.report.queue.lost == () and result.report.queue.acked > 100
    with result.history.open(encoding="utf-8") as f:
        faults = [e for e in iter_history(f) if isinstance(e, FaultEvent)]
    assert (faults[0].name, faults[0].phase) == ("netsplit-all", Phase.START)
    assert_nothing_left(tmp_path / "cluster")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "master_netsplit_no_loss",
        "master_cut_from_controllers",
        "master_cut_from_slaves",
        "master_one_way_silent",
        "master_link_loss",
        "master_link_delay",
    ],
)
async def test_partition_scenarios_lose_no_send_ok(name: str, tmp_path: Path) -> None:
    """Two minutes of link faults every 20 s on separate hosts."""
    options = RunOptions(duration_s=120, interval_s=20, seed=5, out_dir=tmp_path)
    async with leave_nothing(tmp_path / "cluster"):
        with trio.fail_after(600):
            result = await run_scenario(SCENARIOS[name], options)
    assert result.faults_injected >= 2
    assert result.ok, f"{result.report.failures}; replay: {result.replay}"
    assert_nothing_left(tmp_path / "cluster")
