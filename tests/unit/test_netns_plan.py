"""Separate hosts on one machine, the pure parts (launcher/netns.py, scenarios/faults.py):
address plans, subnet choice, the commands that make them, link-fault rules and the BPF
program behind packet loss (run here by a small interpreter of the instructions it uses)."""

from __future__ import annotations

import ipaddress
import os
import random
import struct
from pathlib import Path

import pytest

from launcher.netns import (
    IN,
    OUT,
    PRIVATE_RANGE,
    Drop,
    NetPlan,
    Wire,
    clear_command,
    free_index,
    loss_bytecode,
    netns_unavailable,
    shaping_commands,
)
from launcher.plans import node_names, quorum_plan
from launcher.record import ClusterError
from scenarios.faults import LinkCut, link_drops
from scenarios.netdelay import due_s

NODES = ["n0", "n1", "n2", "namesrv", "broker-a-0", "broker-a-1", "broker-a-2"]


def test_a_plan_gives_each_node_its_own_host_in_the_private_range() -> None:
    plan = NetPlan.make(7, NODES)
    assert plan.bridge == "rmq7-br" and plan.gateway == "10.213.7.1"
    assert [h.address for h in plan.hosts] == [f"10.213.7.{10 + i}" for i in range(7)]
    assert plan.host("broker-a-1").namespace == "rmq7-broker-a-1"
    assert plan.host("broker-a-1").root_if == "rmq7-v5"
    assert {h.node_if for h in plan.hosts} == {"eth0"}
    assert all(ipaddress.ip_address(h.address) in PRIVATE_RANGE for h in plan.hosts)
    assert ipaddress.ip_address(plan.gateway) in plan.subnet
    assert plan.by_address("10.213.7.13:9876") == plan.host("namesrv")
    assert plan.by_address("127.0.0.1:9876") is None
    assert NetPlan.from_json(plan.to_json()) == plan
    names = [plan.bridge, *(h.root_if for h in NetPlan.make(254, NODES).hosts)]
    assert max(len(n) for n in names) <= 15  # IFNAMSIZ - 1


def test_plans_refuse_what_they_cannot_lay_out() -> None:
    with pytest.raises(ValueError, match=r"1\.\.254"):
        NetPlan.make(0, NODES)
    with pytest.raises(ValueError, match="distinct"):
        NetPlan.make(1, ["a", "a"])


def test_setup_commands_make_the_bridge_then_each_host() -> None:
    plan = NetPlan.make(3, ["n0", "namesrv"])
    cmds = plan.setup_commands()
    assert cmds[0] == ["ip", "link", "add", "rmq3-br", "type", "bridge"]
    assert ["ip", "addr", "add", "10.213.3.1/24", "dev", "rmq3-br"] in cmds
    assert ["ip", "netns", "add", "rmq3-namesrv"] in cmds
    veth = ["ip", "link", "add", "rmq3-v1", "type", "veth", "peer", "name", "eth0", "netns",
            "rmq3-namesrv"]  # fmt: skip
    assert veth in cmds and cmds.index(veth) > cmds.index(["ip", "netns", "add", "rmq3-namesrv"])
    assert ["ip", "-n", "rmq3-namesrv", "addr", "add", "10.213.3.11/24", "dev", "eth0"] in cmds
    assert ["ip", "-n", "rmq3-n0", "link", "set", "lo", "up"] in cmds


@pytest.mark.parametrize(
    ("addresses", "links", "expected"),
    [
        ([], [], 1),
        (["127.0.0.1/8", "10.213.1.1/24", "10.213.2.1/24"], [], 3),
        (["192.168.1.1/24"], ["rmq1-br", "rmq2-v0", "eth0"], 3),
        (["10.214.1.1/24"], [], 1),  # outside 10.213/16: not ours to avoid
    ],
)
def test_free_index_skips_subnets_and_links_in_use(
    addresses: list[str], links: list[str], expected: int
) -> None:
    assert free_index(addresses, links) == expected


def test_node_names_and_a_quorum_of_separate_hosts() -> None:
    assert node_names("controller") == NODES
    assert node_names("single") == ["namesrv", "broker-a"]
    plan = quorum_plan(nodes=3, host="127.0.0.1", ports=[9878, 9879] * 3,
                       hosts=["10.0.0.1", "10.0.0.2", "10.0.0.3"])  # fmt: skip
    assert [p.remoting_address for p in plan] == ["10.0.0.1:9878", "10.0.0.2:9878", "10.0.0.3:9878"]
    assert plan[2].raft_address == "10.0.0.3:9879"


# --- link faults --------------------------------------------------------------------------------


def test_a_partition_drops_on_the_end_each_direction_leaves_by() -> None:
    plan = NetPlan.make(5, ["a", "b"])
    drops = [Drop(node="a", direction=OUT, peer="10.213.5.11"), Drop(node="a", direction=IN)]
    by_end = shaping_commands(plan, drops)
    out_end = ("tc", "-n", "rmq5-a", "eth0")
    in_end = ("tc", "rmq5-v0")
    assert set(by_end) == {out_end, in_end}
    assert by_end[out_end][0][:6] == ["tc", "-n", "rmq5-a", "qdisc", "add", "dev"]
    assert ["tc", "-n", "rmq5-a", "qdisc", "add", "dev", "eth0", "parent", "1:2", "handle",
            "2:", "blackhole"] in by_end[out_end]  # fmt: skip
    out_filter = by_end[out_end][-1]
    assert out_filter[-7:] == ["u32", "match", "ip", "dst", "10.213.5.11/32", "flowid", "1:2"]
    in_filter = by_end[in_end][-1]
    assert in_filter[-7:] == ["u32", "match", "u32", "0", "0", "flowid", "1:2"]
    assert clear_command(in_end) == ["tc", "qdisc", "del", "dev", "rmq5-v0", "root"]


def test_drops_are_checked() -> None:
    with pytest.raises(ValueError, match="direction"):
        Drop(node="a", direction="sideways")
    with pytest.raises(ValueError, match="probability"):
        Drop(node="a", direction=OUT, probability=0.0)


def test_link_cut_names_and_drops() -> None:
    assert LinkCut().name == "netsplit-all"
    assert LinkCut(peers="controllers", direction="out").name == "netsplit-controllers-out"
    assert LinkCut(peers="node:n1").name == "netsplit-node-n1"
    assert LinkCut(probability=0.2).name == "netloss20-all"
    assert link_drops("m", "both", None, 1.0) == [
        Drop(node="m", direction=OUT),
        Drop(node="m", direction=IN),
    ]
    assert link_drops("m", IN, ["1.1.1.1", "2.2.2.2"], 0.5) == [
        Drop(node="m", direction=IN, peer="1.1.1.1", probability=0.5),
        Drop(node="m", direction=IN, peer="2.2.2.2", probability=0.5),
    ]
    with pytest.raises(ValueError, match="direction"):
        link_drops("m", "up", None, 1.0)


# --- the loss program -------------------------------------------------------------------------------

_RANDOM_LOAD = (1 << 32) - 0x1000 + 56


def run_bpf(bytecode: str, frame: bytes, rng: random.Random) -> int:
    """Run tc's classic-BPF text on ``frame``: the subset loss_bytecode emits."""
    count, *rest = bytecode.split(",")
    program = [tuple(int(x) for x in ins.split()) for ins in rest]
    assert len(program) == int(count)
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x28:  # ldh [k]
            acc = struct.unpack_from(">H", frame, k)[0]
        elif code == 0x20:  # ld [k] / ld rand
            acc = (
                rng.getrandbits(32) if k == _RANDOM_LOAD else struct.unpack_from(">I", frame, k)[0]
            )
        elif code in (0x15, 0x35):  # jeq / jge #k
            taken = acc == k if code == 0x15 else acc >= k
            pc += jt if taken else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


def frame(src: str, dst: str, ethertype: int = 0x0800) -> bytes:
    ip = bytes(12) + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    return bytes(12) + struct.pack(">H", ethertype) + ip


@pytest.mark.parametrize("probability", [0.1, 0.5, 0.9])
def test_the_loss_program_matches_about_its_probability_of_the_named_peer(
    probability: float,
) -> None:
    rng = random.Random(1)
    code = loss_bytecode(probability, match_at=30, address="10.213.1.12")
    hits = sum(run_bpf(code, frame("10.213.1.11", "10.213.1.12"), rng) != 0 for _ in range(20_000))
    assert abs(hits / 20_000 - probability) < 0.02
    assert run_bpf(code, frame("10.213.1.11", "10.213.1.99"), rng) == 0  # another peer
    assert run_bpf(code, frame("10.213.1.11", "10.213.1.12", 0x0806), rng) == 0  # ARP passes


def test_the_loss_program_of_every_peer_needs_only_ipv4() -> None:
    rng = random.Random(2)
    code = loss_bytecode(1.0, match_at=None, address=None)
    assert run_bpf(code, frame("1.2.3.4", "5.6.7.8"), rng) == (1 << 32) - 1
    assert run_bpf(code, frame("1.2.3.4", "5.6.7.8", 0x86DD), rng) == 0


def test_without_root_there_are_no_separate_hosts_and_up_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cli.cluster import LayoutOptions, cluster_up

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    netns_unavailable.cache_clear()
    try:
        reason = netns_unavailable()
        assert reason is not None and "need root" in reason and "uid 1000" in reason
        with pytest.raises(ClusterError, match=r"^--netns: network namespaces need root"):
            cluster_up(
                tmp_path,
                mode="controller",
                namesrv_port=0,
                flush="ASYNC_FLUSH",
                timeout_s=1.0,
                stop_timeout_s=1.0,
                layout=LayoutOptions(netns=True),
            )
        assert not (tmp_path / "cluster.json").exists() and not (tmp_path / "netns.json").exists()
    finally:
        netns_unavailable.cache_clear()


def test_a_delay_wire_moves_the_node_end_off_the_bridge_and_back() -> None:
    plan = NetPlan.make(4, ["a", "b"])
    wire = Wire.of(plan, "b")
    assert (wire.node_side, wire.bridge_side, wire.port) == ("rmq4-v1", "rmq4-w1", "rmq4-d1")
    assert wire.prepare_commands()[0] == [
        "ip", "link", "add", "rmq4-d1", "type", "veth", "peer", "name", "rmq4-w1",
    ]  # fmt: skip
    assert ["ip", "link", "set", "rmq4-v1", "nomaster", "promisc", "on"] in wire.switch_commands()
    assert wire.restore_commands()[-1][-2:] == ["master", "rmq4-br"]
    assert wire.cleanup_commands() == [["ip", "link", "del", "rmq4-d1"]]
    assert all(len(n) <= 15 for n in (wire.port, wire.bridge_side))


def test_netdelay_holds_each_frame_for_latency_plus_jitter() -> None:
    rng = random.Random(3)
    dues = [due_s(10.0, 0.2, 0.05, rng) for _ in range(1000)]
    assert all(10.2 <= d <= 10.25 for d in dues)
    assert due_s(10.0, 0.2, 0.0, rng) == pytest.approx(10.2)
