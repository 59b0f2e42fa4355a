"""Separate network hosts on one machine: a network namespace per node on a bridge.

Rules:
- Root only (network namespaces, veth pairs and bridges need CAP_NET_ADMIN):
  ``netns_unavailable()`` says why they cannot be made here (None when they can), and
  callers refuse (``rmq cluster up --netns``) or fall back to loopback (the chaos harness)
  with that reason.
- The plan is pure (``NetPlan.make``): one subnet ``10.213.N.0/24`` per cluster, on a
  bridge ``rmqN-br`` whose own address ``10.213.N.1`` puts the root namespace (the
  clients: the harness, the CLI, a user's producer) on the same link; node ``i`` lives
  in namespace ``rmqN-<node>`` with ``eth0`` = ``10.213.N.(10+i)``, its veth peer
  ``rmqN-v<i>`` a port of the bridge. Every address stays inside ``10.213.0.0/16``;
  ``N`` is one no address or link of this machine uses yet.
- What is made is recorded in ``D/netns.json`` *before* it is made (atomic write), so a
  teardown after a crash, a Ctrl-C or a failed ``up`` finds it: ``teardown`` deletes the
  namespaces (which takes their veth ends, and so the pairs), leftover root veths and the
  bridge, each only if it still exists, then the record. It is idempotent.
- Commands run with a deadline (``ip`` and ``tc``, never a shell); a failure is a
  ``NetnsError`` with the command and what it printed.
- A node runs inside its namespace as ``ip netns exec NS ARGV``: ``ip`` execs the
  command in place (same pid), so the recorded argv and pid checks stay as they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import attrs

from launcher.record import atomic_write

RECORD_NAME = "netns.json"
#: Every subnet a plan uses lies in here.
PRIVATE_RANGE = ipaddress.ip_network("10.213.0.0/16")
#: The node interface inside each namespace.
NODE_IF = "eth0"
#: Host part of the first node's address (.1 is the bridge, the root namespace's).
FIRST_HOST = 10
COMMAND_TIMEOUT_S = 10.0
_MAX_IFNAME = 15


class NetnsError(Exception):
    """A namespace, link or bridge could not be made or removed; the message says which."""


# --- the plan (pure) ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class HostPlan:
    """One node's host: its namespace, address and the bridge port of its link."""

    node: str
    namespace: str
    address: str
    #: The root-namespace end of the veth pair (a bridge port).
    root_if: str
    #: The namespace end.
    node_if: str = NODE_IF


@attrs.frozen(kw_only=True)
class NetPlan:
    """The hosts of one cluster on one bridge."""

    index: int
    bridge: str
    #: The bridge's own address: the root namespace's (clients') address on this link.
    gateway: str
    prefix_len: int
    hosts: tuple[HostPlan, ...]

    @classmethod
    def make(cls, index: int, nodes: Sequence[str]) -> NetPlan:
        """The plan of subnet ``10.213.<index>.0/24`` for ``nodes``, in order."""
        if not 1 <= index <= 254:
            raise ValueError(f"subnet index {index} is not in 1..254")
        if len(set(nodes)) != len(nodes) or len(nodes) > 254 - FIRST_HOST:
            raise ValueError(f"nodes must be distinct and at most {254 - FIRST_HOST}: {nodes}")
        prefix = f"rmq{index}"
        hosts = tuple(
            HostPlan(
                node=node,
                namespace=f"{prefix}-{_safe(node)}",
                address=f"10.213.{index}.{FIRST_HOST + i}",
                root_if=f"{prefix}-v{i}",
            )
            for i, node in enumerate(nodes)
        )
        plan = cls(
            index=index,
            bridge=f"{prefix}-br",
            gateway=f"10.213.{index}.1",
            prefix_len=24,
            hosts=hosts,
        )
        for name in (plan.bridge, *(h.root_if for h in hosts)):
            assert len(name) <= _MAX_IFNAME, name
        return plan

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.gateway}/{self.prefix_len}", strict=False)

    def host(self, node: str) -> HostPlan:
        for host in self.hosts:
            if host.node == node:
                return host
        raise KeyError(f"no host for node {node!r} (has {[h.node for h in self.hosts]})")

    def by_address(self, address: str) -> HostPlan | None:
        ip = address.rpartition(":")[0] or address
        return next((h for h in self.hosts if h.address == ip), None)

    def setup_commands(self) -> list[list[str]]:
        """Every command that makes the plan, in order (``ip`` argv lists)."""
        cidr = f"/{self.prefix_len}"
        cmds = [
            ["ip", "link", "add", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", self.gateway + cidr, "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ]
        for h in self.hosts:
            cmds += [
                ["ip", "netns", "add", h.namespace],
                ["ip", "link", "add", h.root_if, "type", "veth", "peer", "name", h.node_if,
                 "netns", h.namespace],
                ["ip", "link", "set", h.root_if, "master", self.bridge, "up"],
                ["ip", "-n", h.namespace, "addr", "add", h.address + cidr, "dev", h.node_if],
                ["ip", "-n", h.namespace, "link", "set", h.node_if, "up"],
                ["ip", "-n", h.namespace, "link", "set", "lo", "up"],
            ]  # fmt: skip
        return cmds

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "nodes": [h.node for h in self.hosts]}

    @classmethod
    def from_json(cls, data: object) -> NetPlan:
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            raise ValueError(f"not a network plan: {data!r}")
        return cls.make(int(data["index"]), [str(n) for n in data["nodes"]])


def _safe(node: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", node)


def free_index(used_addresses: Sequence[str], used_links: Sequence[str]) -> int:
    """The first subnet index whose ``10.213.N.0/24`` and ``rmqN-`` names are unused."""
    taken = set()
    for text in used_addresses:
        ip = ipaddress.ip_interface(text).ip
        if ip in PRIVATE_RANGE:
            taken.add(int(str(ip).split(".")[2]))
    for name in used_links:
        if match := re.match(r"rmq(\d+)-", name):
            taken.add(int(match.group(1)))
    for index in range(1, 255):
        if index not in taken:
            return index
    raise NetnsError(f"every subnet of {PRIVATE_RANGE} is in use")


def exec_prefix(namespace: str) -> list[str]:
    """What runs a command inside ``namespace`` (``ip`` execs it: same pid)."""
    return ["ip", "netns", "exec", namespace]


# --- running commands ------------------------------------------------------------------------


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (``ip``/``tc``) with a deadline; ``NetnsError`` when it fails and
    ``check``."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"`{' '.join(argv)}` could not run: {exc}") from None
    if check and done.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}")
    return done


@functools.cache
def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here (None: they can); asked once a process."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN); running as uid " + str(os.geteuid())
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    probe = f"rmq-probe-{os.getpid()}"
    made = run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    run(["ip", "netns", "del", probe], check=False)
    return None


def namespaces() -> list[str]:
    """The network namespaces of this machine (``ip netns list``)."""
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def links() -> list[str]:
    """Link names of the root namespace."""
    out = run(["ip", "-o", "link", "show"]).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def addresses() -> list[str]:
    """IPv4 addresses (``a.b.c.d/len``) of the root namespace."""
    out = run(["ip", "-o", "-4", "addr", "show"]).stdout
    return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]


# --- setup and teardown ---------------------------------------------------------------------------


def record_path(root: Path) -> Path:
    return root / RECORD_NAME


def load_plan(root: Path) -> NetPlan | None:
    """The plan recorded under ``root`` (None: none)."""
    try:
        return NetPlan.from_json(json.loads(record_path(root).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NetnsError(f"{record_path(root)} is not a network plan: {exc}") from None


def setup(root: Path, nodes: Sequence[str]) -> NetPlan:
    """Make the hosts of ``nodes`` (recorded first); on any failure remove what was made."""
    reason = netns_unavailable()
    if reason is not None:
        raise NetnsError(reason)
    if load_plan(root) is not None:
        raise NetnsError(f"{record_path(root)} exists: run `rmq cluster down --dir {root}` first")
    plan = NetPlan.make(free_index(addresses(), links()), nodes)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(record_path(root), json.dumps(plan.to_json()).encode() + b"\n")
    try:
        for argv in plan.setup_commands():
            run(argv)
    except BaseException:
        teardown(root)
        raise
    return plan


def teardown(root: Path) -> list[str]:
    """Remove what ``root``'s record names (what exists of it); what was removed."""
    plan = load_plan(root)
    if plan is None:
        return []
    removed = []
    present = set(namespaces())
    for host in plan.hosts:
        if host.namespace in present:
            run(["ip", "netns", "del", host.namespace])
            removed.append(f"netns {host.namespace}")
    ours = [n for n in links() if n.startswith(f"rmq{plan.index}-") and n != plan.bridge]
    for name in [*ours, plan.bridge]:  # root ends, delay wires, then the bridge
        # A deleted namespace takes its veth pairs with it, but asynchronously: a root end
        # listed a moment ago may be gone by now.
        if name in links():
            done = run(["ip", "link", "del", name], check=False)
            if done.returncode != 0 and name in links():
                raise NetnsError(f"`ip link del {name}` failed: {done.stderr.strip()}")
            removed.append(f"link {name}")
    record_path(root).unlink(missing_ok=True)
    return removed


# --- link faults: drops on the hosts' links (tc) --------------------------------------------
#
# What the kernel here allows (checked): no netem, no tc actions (gact, police), but htb,
# the blackhole qdisc and the u32 and bpf (classic BPF, with its random ancillary load)
# classifiers. So a link fault is an htb qdisc on the egress of one end of a node's veth
# pair: class 1:1 passes (the default), class 1:2 ends in a blackhole qdisc, and filters
# send the packets a rule names to 1:2 (u32 for a whole partition, a BPF program that
# draws a random number for loss). Packets a node sends leave through its namespace end;
# packets it receives leave the bridge through its root end: each direction is one end.

#: Classic BPF: opcodes and the ancillary load of a random u32 (SKF_AD_OFF + SKF_AD_RANDOM).
_LDH_ABS, _LD_ABS, _JEQ_K, _JGE_K, _RET_K = 0x28, 0x20, 0x15, 0x35, 0x06
_SKF_AD_RANDOM = (1 << 32) - 0x1000 + 56
_ETH_P_IP = 0x0800
#: Offsets in an Ethernet frame (classifiers on a device's egress see it from its start).
_ETHERTYPE_AT, _IP_SRC_AT, _IP_DST_AT = 12, 26, 30
OUT, IN = "out", "in"


@attrs.frozen(kw_only=True)
class Drop:
    """Drop packets on ``node``'s link: those it sends (``out``) or receives (``in``),
    to or from ``peer`` (an address; None: every peer), each with ``probability``."""

    node: str
    direction: str = attrs.field(validator=attrs.validators.in_((OUT, IN)))
    peer: str | None = None
    probability: float = 1.0

    def __attrs_post_init__(self) -> None:
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"drop probability must be in (0, 1], not {self.probability}")


def loss_bytecode(probability: float, *, match_at: int | None, address: str | None) -> str:
    """A classic BPF program (tc's ``bytecode`` text) that matches IPv4 packets (from or to
    ``address`` at frame offset ``match_at``, when given) with ``probability``."""
    miss = -1  # a failed test jumps to the last instruction: "ret 0", no match, it passes
    program = [(_LDH_ABS, 0, 0, _ETHERTYPE_AT), (_JEQ_K, 0, miss, _ETH_P_IP)]
    if address is not None and match_at is not None:
        value = int(ipaddress.IPv4Address(address))
        program += [(_LD_ABS, 0, 0, match_at), (_JEQ_K, 0, miss, value)]
    threshold = min((1 << 32) - 1, round(probability * (1 << 32)))
    program += [
        (_LD_ABS, 0, 0, _SKF_AD_RANDOM),
        (_JGE_K, 1, 0, threshold),  # random >= threshold: skip the match, pass
        (_RET_K, 0, 0, (1 << 32) - 1),  # match: the filter's class (the blackhole)
        (_RET_K, 0, 0, 0),
    ]
    last = len(program) - 1
    resolved = [
        (code, jt, last - i - 1 if jf == miss else jf, k)
        for i, (code, jt, jf, k) in enumerate(program)
    ]
    return ",".join([str(len(resolved))] + [" ".join(map(str, ins)) for ins in resolved])


def _interface_of(plan: NetPlan, drop: Drop) -> tuple[list[str], str]:
    """(the ``tc`` command prefix, the device) of the end a drop acts on."""
    host = plan.host(drop.node)
    if drop.direction == OUT:
        return ["tc", "-n", host.namespace], host.node_if
    return ["tc"], host.root_if


def shaping_commands(
    plan: NetPlan, drops: Sequence[Drop]
) -> dict[tuple[str, ...], list[list[str]]]:
    """Per link end (``tc`` prefix + device): the commands that make it drop what
    ``drops`` name there (an end no drop names gets nothing: the caller clears it)."""
    by_end: dict[tuple[str, ...], list[Drop]] = {}
    for drop in drops:
        prefix, dev = _interface_of(plan, drop)
        by_end.setdefault((*prefix, dev), []).append(drop)
    out: dict[tuple[str, ...], list[list[str]]] = {}
    for end, rules in by_end.items():
        *tc, dev = end
        cmds = [
            [*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1"],
            [*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb",
             "rate", "10gbit", "quantum", "60000"],
            [*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:2", "htb",
             "rate", "10gbit", "quantum", "60000"],
            [*tc, "qdisc", "add", "dev", dev, "parent", "1:2", "handle", "2:", "blackhole"],
        ]  # fmt: skip
        for prio, rule in enumerate(rules, start=1):
            at = _IP_DST_AT if rule.direction == OUT else _IP_SRC_AT
            head = [*tc, "filter", "add", "dev", dev, "parent", "1:", "prio", str(prio)]
            if rule.probability >= 1.0:
                side = "dst" if rule.direction == OUT else "src"
                match = ["match", "ip", side, f"{rule.peer}/32"] if rule.peer else [
                    "match", "u32", "0", "0"]  # fmt: skip
                cmds.append([*head, "protocol", "ip", "u32", *match, "flowid", "1:2"])
            else:
                code = loss_bytecode(rule.probability, match_at=at, address=rule.peer)
                cmds.append([*head, "protocol", "all", "bpf", "bytecode", code, "flowid", "1:2"])
        out[end] = cmds
    return out


def clear_command(end: tuple[str, ...]) -> list[str]:
    *tc, dev = end
    return [*tc, "qdisc", "del", "dev", dev, "root"]


class Shaper:
    """The drops in force on a plan's links, by fault: ``add`` returns a token that
    ``remove`` takes back; every change rewrites only the link ends whose rules changed."""

    def __init__(self, plan: NetPlan) -> None:
        self.plan = plan
        self._faults: dict[int, tuple[Drop, ...]] = {}
        self._next = 0
        self._ends: dict[tuple[str, ...], list[list[str]]] = {}

    def add(self, drops: Sequence[Drop]) -> int:
        self._next += 1
        self._faults[self._next] = tuple(drops)
        self._apply()
        return self._next

    def remove(self, token: int) -> None:
        if self._faults.pop(token, None) is not None:
            self._apply()

    def clear(self) -> None:
        self._faults.clear()
        self._apply()

    def drops(self) -> list[Drop]:
        return [d for drops in self._faults.values() for d in drops]

    def _apply(self) -> None:
        wanted = shaping_commands(self.plan, self.drops())
        for end in set(self._ends) - set(wanted):
            run(clear_command(end), check=False)
        for end, cmds in wanted.items():
            if self._ends.get(end) != cmds:
                run(clear_command(end), check=False)  # a fresh qdisc, not an edited one
                for argv in cmds:
                    run(argv)
        self._ends = wanted


# --- delayed links: a userspace wire between a node and the bridge --------------------------


@attrs.frozen(kw_only=True)
class Wire:
    """The re-plumbing that puts a delaying forwarder on ``node``'s link: its root end
    leaves the bridge, a new veth pair joins it, the forwarder copies frames between the
    root end (``node_side``) and the new pair's free end (``bridge_side``)."""

    node: str
    node_side: str
    bridge_side: str
    #: The new pair's end that is a bridge port.
    port: str
    bridge: str

    @classmethod
    def of(cls, plan: NetPlan, node: str) -> Wire:
        host = plan.host(node)
        i = host.root_if.rpartition("-v")[2]
        return cls(
            node=node,
            node_side=host.root_if,
            bridge_side=f"rmq{plan.index}-w{i}",
            port=f"rmq{plan.index}-d{i}",
            bridge=plan.bridge,
        )

    def prepare_commands(self) -> list[list[str]]:
        """Before the forwarder starts: the new pair, not yet a bridge port."""
        return [
            ["ip", "link", "add", self.port, "type", "veth", "peer", "name", self.bridge_side],
            ["ip", "link", "set", self.bridge_side, "promisc", "on", "up"],
        ]

    def switch_commands(self) -> list[list[str]]:
        """Once the forwarder runs: the node's end off the bridge, the new port on it (the
        link is cut only for as long as these three commands take)."""
        return [
            ["ip", "link", "set", self.node_side, "nomaster", "promisc", "on"],
            ["ip", "link", "set", self.port, "master", self.bridge, "up"],
        ]

    def restore_commands(self) -> list[list[str]]:
        """Before the forwarder stops: the node's end back on the bridge, the port off."""
        return [
            ["ip", "link", "set", self.port, "nomaster"],
            ["ip", "link", "set", self.node_side, "promisc", "off", "master", self.bridge],
        ]

    def cleanup_commands(self) -> list[list[str]]:
        return [["ip", "link", "del", self.port]]


# --- offloads ----------------------------------------------------------------------------------
#
# A veth hands frames on with their TCP/UDP checksum left to "the hardware" (checksum
# offload) and as 64 KiB segments (TSO/GSO): fine inside one kernel, but a userspace wire
# that copies frames with raw sockets would pass on bad checksums and oversized frames.
# So before a wire is put on a link, every interface of the plan stops offloading (the
# ethtool ioctls; no ethtool binary here). The kernel then computes checksums in software.

_SIOCETHTOOL = 0x8946
#: ETHTOOL_STXCSUM, ETHTOOL_SSG, ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO.
_OFFLOAD_SETTERS = (0x17, 0x19, 0x1F, 0x24, 0x2C)
_CLONE_NEWNET = 0x40000000


def _offloads_off_here(interfaces: Sequence[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in interfaces:
            for cmd in _OFFLOAD_SETTERS:
                value = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
                ifreq = struct.pack("16sP", name.encode(), ctypes.addressof(value))
                with contextlib.suppress(OSError):  # not every device has every offload
                    fcntl.ioctl(sock, _SIOCETHTOOL, ifreq)


def _in_namespace(namespace: str, interfaces: Sequence[str]) -> None:
    """``_offloads_off_here`` in ``namespace``, on a thread of its own (setns(2) moves only
    the calling thread, which then ends with it)."""
    failure: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {namespace}")
            finally:
                os.close(fd)
            _offloads_off_here(interfaces)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"offloads {namespace}")
    thread.start()
    thread.join(COMMAND_TIMEOUT_S)
    if failure:
        raise NetnsError(f"offloads in {namespace}: {failure[0]}")


def offloads_off(plan: NetPlan) -> None:
    """Every interface of ``plan`` checksums and segments in software (a wire's need)."""
    _offloads_off_here([plan.bridge, *(h.root_if for h in plan.hosts)])
    for host in plan.hosts:
        _in_namespace(host.namespace, [host.node_if])
