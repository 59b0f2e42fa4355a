"""launcher/'s pure part: node plans per mode, the cluster record, the ready lines."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from launcher.pids import is_alive, proc_start_ticks
from launcher.plans import (
    BROKERS_BY_MODE,
    CONTROLLER_NODES,
    CONTROLLER_ROLE,
    BrokerPlan,
    broker_node,
    controller_node,
    namesrv_node,
    pin_flag,
    quorum_plan,
    quorum_ports,
    restart_argv,
    toml_value,
)
from launcher.ready import (
    BROKER,
    CONTROLLER,
    NAMESRV,
    READY_BY_KIND,
    Ready,
    broker_ready_line,
    controller_ready_line,
    namesrv_ready_line,
    parse_all_ready,
    parse_ready,
)
from launcher.record import (
    FORMAT_VERSION,
    Cluster,
    ClusterError,
    atomic_write,
    dir_lock,
    load_cluster,
)

RMQ = ["/venv/bin/rmq"]
NAMESRV_ADDR = "127.0.0.1:9876"

# --- plans ---------------------------------------------------------------------------------


def test_every_mode_plans_its_brokers_in_start_order() -> None:
    table = {mode: [(p.name, p.group, p.broker_id, p.role) for p in plans]
             for mode, plans in BROKERS_BY_MODE.items()}  # fmt: skip
    assert table == {
        "single": [("broker-a", "broker-a", 0, "master")],
        "multi-master": [("broker-a", "broker-a", 0, "master"), ("broker-b", "broker-b", 0, "master")],
        "async": [
            ("broker-a", "broker-a", 0, "master"), ("broker-a-s", "broker-a", 1, "slave"),
            ("broker-b", "broker-b", 0, "master"), ("broker-b-s", "broker-b", 1, "slave"),
        ],
        "sync": [
            ("broker-a", "broker-a", 0, "master"), ("broker-a-s", "broker-a", 1, "slave"),
            ("broker-b", "broker-b", 0, "master"), ("broker-b-s", "broker-b", 1, "slave"),
        ],
        "controller": [(f"broker-a-{i}", "broker-a", -1, "replica") for i in range(3)],
    }  # fmt: skip
    assert {p.broker_role for p in BROKERS_BY_MODE["sync"]} == {"SYNC_MASTER", "SLAVE"}
    assert {p.broker_role for p in BROKERS_BY_MODE["async"]} == {"ASYNC_MASTER", "SLAVE"}


def test_a_namesrv_node_binds_its_port_and_logs_in_its_directory(tmp_path: Path) -> None:
    node = namesrv_node(tmp_path, 0, rmq=RMQ)
    assert (node.name, node.kind, node.role) == (NAMESRV, NAMESRV, NAMESRV)
    assert node.argv == [*RMQ, "namesrv", "--port", "0", "--log-dir", str(tmp_path / NAMESRV)]
    assert node.stdout_file == tmp_path / NAMESRV / "stdout.log"
    assert node.log_file == tmp_path / NAMESRV / "stderr.log"
    assert node.store_dir is None and node.state == "starting" and node.pid == 0


def test_a_slave_gets_its_id_and_role_and_a_free_port(tmp_path: Path) -> None:
    plan = BrokerPlan("broker-a-s", "broker-a", 1, "SLAVE")
    node = broker_node(tmp_path, plan, namesrv_addr=NAMESRV_ADDR, flush="SYNC_FLUSH", rmq=RMQ)
    store = tmp_path / "broker-a-s" / "store"
    assert node.argv == [
        *RMQ, "broker", "--name", "broker-a", "--broker-id", "1", "--role", "SLAVE",
        "--port", "0", "-n", NAMESRV_ADDR, "--dir", str(store), "--flush", "SYNC_FLUSH",
    ]  # fmt: skip
    assert (node.kind, node.role, node.group, node.broker_role) == (
        BROKER, "slave", "broker-a", "SLAVE",
    )  # fmt: skip
    assert node.store_dir == store and node.node_dir == tmp_path / "broker-a-s"


def test_a_broker_gets_its_config_file_and_its_own_controller_addresses(tmp_path: Path) -> None:
    plans = BROKERS_BY_MODE["controller"]
    quorum = "127.0.0.1:1;127.0.0.1:2;127.0.0.1:3"
    own = {"broker-a-1": "127.0.0.1:7001"}
    nodes = [
        broker_node(
            tmp_path,
            plan,
            namesrv_addr=NAMESRV_ADDR,
            flush="SYNC_FLUSH",
            controller_addrs=own.get(plan.name, quorum),
            config_file=tmp_path / plan.name / "broker.toml",
            rmq=RMQ,
        )
        for plan in plans
    ]
    addrs = [n.argv[n.argv.index("--controller-addrs") + 1] for n in nodes]
    assert addrs == [quorum, "127.0.0.1:7001", quorum]
    assert all(n.broker_role == CONTROLLER_ROLE and "--role" not in n.argv for n in nodes)
    for node, plan in zip(nodes, plans, strict=True):
        assert node.argv[-2:] == ["--config", str(tmp_path / plan.name / "broker.toml")]
    # Without a config file the argv is what it always was.
    plain = broker_node(
        tmp_path, plans[0], namesrv_addr=NAMESRV_ADDR, flush="SYNC_FLUSH",
        controller_addrs=quorum, rmq=RMQ,
    )  # fmt: skip
    assert "--config" not in plain.argv and plain.argv[-2:] == ["--flush", "SYNC_FLUSH"]


def test_a_quorum_lays_two_ports_per_node_from_its_base() -> None:
    ports = quorum_ports(CONTROLLER_NODES, 20000)
    assert ports == [20000, 20001, 20002, 20003, 20004, 20005]
    plan = quorum_plan(nodes=CONTROLLER_NODES, host="127.0.0.1", ports=ports)
    assert [(p.node_id, p.remoting_address, p.raft_address) for p in plan] == [
        ("n0", "127.0.0.1:20000", "127.0.0.1:20001"),
        ("n1", "127.0.0.1:20002", "127.0.0.1:20003"),
        ("n2", "127.0.0.1:20004", "127.0.0.1:20005"),
    ]
    with pytest.raises(AssertionError):
        quorum_plan(nodes=3, host="127.0.0.1", ports=ports[:5])


def test_a_controller_node_runs_from_its_config(tmp_path: Path) -> None:
    config = tmp_path / "n1" / "controller.toml"
    node = controller_node(tmp_path, "n1", config_file=config, data_dir=tmp_path / "d", rmq=RMQ)
    assert node.argv == [*RMQ, "controller", "--config", str(config)]
    assert (node.name, node.kind, node.role, node.store_dir) == (
        "n1", CONTROLLER, CONTROLLER, tmp_path / "d",
    )  # fmt: skip


def test_a_restart_keeps_the_ports_the_node_had(tmp_path: Path) -> None:
    plan = BROKERS_BY_MODE["single"][0]
    node = broker_node(tmp_path, plan, namesrv_addr=NAMESRV_ADDR, flush="ASYNC_FLUSH", rmq=RMQ)
    assert restart_argv(node, None) == node.argv  # never ready: nothing to pin
    node.address = "127.0.0.1:40001"
    pinned = restart_argv(node, "127.0.0.1:40002")
    assert pinned[pinned.index("--port") + 1] == "40001"
    assert pinned[-2:] == ["--ha-port", "40002"]
    assert restart_argv(node, None) == pin_flag(node.argv, "--port", "40001")
    namesrv = namesrv_node(tmp_path, 0, rmq=RMQ)
    namesrv.address = "127.0.0.1:40003"
    assert restart_argv(namesrv, "127.0.0.1:1") == pin_flag(namesrv.argv, "--port", "40003")


def test_pin_flag_replaces_or_appends() -> None:
    assert pin_flag(["a", "-n", "x"], "-n", "y") == ["a", "-n", "y"]
    assert pin_flag(["a"], "-n", "y") == ["a", "-n", "y"]


@pytest.mark.parametrize("value", [True, False, 0, 12, 2.5, "plain", 'with "quotes"', "a\\b"])
def test_a_toml_value_reads_back_as_itself(value: object) -> None:
    assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value


# --- the record ----------------------------------------------------------------------------


def recorded(root: Path) -> Cluster:
    broker = broker_node(
        root, BROKERS_BY_MODE["single"][0], namesrv_addr=NAMESRV_ADDR, flush="SYNC_FLUSH", rmq=RMQ
    )
    broker.pid, broker.start_ticks, broker.address = 4242, 99, "127.0.0.1:10911"
    broker.state = "running"
    return Cluster(
        mode="single", root=root, flush="SYNC_FLUSH", nodes=[namesrv_node(root, 0, rmq=RMQ), broker]
    )


def test_a_record_round_trips_through_cluster_json(tmp_path: Path) -> None:
    cluster = recorded(tmp_path)
    cluster.save()
    assert load_cluster(tmp_path) == cluster
    doc = json.loads((tmp_path / "cluster.json").read_text())
    assert doc["version"] == FORMAT_VERSION and doc["dir"] == str(tmp_path)
    assert [n["name"] for n in doc["nodes"]] == ["namesrv", "broker-a"]
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.json"]  # no temp file left


def test_no_record_is_none_and_a_bad_record_is_refused(tmp_path: Path) -> None:
    assert load_cluster(tmp_path) is None
    for text in ("[]", '{"version": 99}', '{"version": 1}', "not json"):
        (tmp_path / "cluster.json").write_text(text)
        with pytest.raises(ClusterError, match="is not a cluster record"):
            load_cluster(tmp_path)


def test_a_record_without_start_ticks_or_flush_still_loads(tmp_path: Path) -> None:
    doc = recorded(tmp_path).to_json()
    del doc["flush"]
    del doc["nodes"][1]["start_ticks"]
    atomic_write(tmp_path / "cluster.json", json.dumps(doc).encode())
    cluster = load_cluster(tmp_path)
    assert cluster is not None and cluster.flush == "ASYNC_FLUSH"
    assert cluster.nodes[1].start_ticks == 0 and cluster.nodes[1].pid == 4242


def test_a_second_holder_of_the_directory_lock_is_refused(tmp_path: Path) -> None:
    with (
        dir_lock(tmp_path),
        pytest.raises(ClusterError, match="another rmq cluster command"),
        dir_lock(tmp_path),
    ):
        pass
    with dir_lock(tmp_path):  # free again
        pass


def test_only_a_live_rmq_process_with_the_recorded_argv_is_alive(tmp_path: Path) -> None:
    node = namesrv_node(tmp_path, 0, rmq=RMQ)
    assert not is_alive(node)  # never started
    node.pid = os.getpid()  # alive, but not an rmq process with this argv
    assert proc_start_ticks(node.pid) is not None
    assert not is_alive(node)


# --- ready lines ---------------------------------------------------------------------------


def test_the_ready_lines_are_rocketmqs_wording() -> None:
    assert namesrv_ready_line("127.0.0.1:9876") == (
        "The Name Server boot success. address=127.0.0.1:9876"
    )
    assert broker_ready_line(
        broker_name="broker-a", address="127.0.0.1:10911", role="SYNC_MASTER",
        ha_address="127.0.0.1:10912", store_dir=Path("/d/store"),
    ) == (
        "The broker[broker-a, 127.0.0.1:10911] boot success. role=SYNC_MASTER "
        "ha=127.0.0.1:10912 store=/d/store"
    )  # fmt: skip
    assert controller_ready_line(
        node_id="n0", address="127.0.0.1:9878", raft_address="127.0.0.1:9879",
        peers={"n0": "127.0.0.1:9878", "n1": "127.0.0.1:9880"},
    ) == (
        "The controller[n0, 127.0.0.1:9878] boot success. raft=127.0.0.1:9879 "
        "peers=n0:127.0.0.1:9878;n1:127.0.0.1:9880"
    )  # fmt: skip


def test_each_ready_line_parses_back() -> None:
    assert parse_ready(NAMESRV, "noise\n" + namesrv_ready_line("127.0.0.1:9876") + "\n") == Ready(
        kind=NAMESRV, host="127.0.0.1", port=9876
    )
    broker = broker_ready_line(
        broker_name="broker-a", address="127.0.0.1:10911", role="controller-assigned",
        ha_address="127.0.0.1:10912", store_dir="/s",
    )  # fmt: skip
    assert parse_ready(BROKER, broker) == Ready(
        kind=BROKER, host="127.0.0.1", port=10911, name="broker-a",
        role="controller-assigned", ha_address="127.0.0.1:10912",
    )  # fmt: skip
    slave = broker_ready_line(
        broker_name="broker-a", address="127.0.0.1:10913", role="SLAVE", ha_address="",
        store_dir="/s",
    )  # fmt: skip
    parsed = parse_ready(BROKER, slave)
    assert parsed is not None and parsed.ha_address is None and parsed.role == "SLAVE"
    controller = controller_ready_line(
        node_id="n2", address="127.0.0.1:9878", raft_address="127.0.0.1:9879", peers={}
    )
    ready = parse_ready(CONTROLLER, controller)
    assert ready is not None and ready.address == "127.0.0.1:9878"
    assert (ready.name, ready.raft_address) == ("n2", "127.0.0.1:9879")


def test_a_line_not_printed_yet_or_of_another_kind_is_none() -> None:
    line = namesrv_ready_line("127.0.0.1:9876")
    assert parse_ready(NAMESRV, line.partition(":9876")[0]) is None  # the port not yet written
    assert parse_ready(NAMESRV, "") is None
    assert parse_ready(BROKER, line) is None
    assert parse_ready(CONTROLLER, line) is None


def test_every_start_leaves_a_ready_line_and_all_are_found() -> None:
    lines = [
        broker_ready_line(
            broker_name="broker-a", address=f"127.0.0.1:{port}", role="ASYNC_MASTER",
            ha_address=f"127.0.0.1:{port + 1}", store_dir="/s",
        )
        for port in (10911, 20911)
    ]  # fmt: skip
    found = parse_all_ready(BROKER, "\n".join(lines))
    assert [r.ha_address for r in found] == ["127.0.0.1:10912", "127.0.0.1:20912"]


def test_every_pattern_has_host_and_port() -> None:
    for pattern in READY_BY_KIND.values():
        assert {"host", "port"} <= set(pattern.groupindex)
