"""The local cluster the chaos harness injects faults into: real processes under one directory.

Rules:
- The cluster is started by ``rmq cluster up --mode MODE`` (a real CLI run) and found
  again through its ``cluster.json``.
- One process-management code: ``launcher/`` (the record, pid checks, spawn, ready
  lines; ``rmq cluster down`` stops). ``LocalCluster`` adds only what ``rmq cluster`` has
  no command for: killing, pausing and restarting one node. A restarted node keeps its
  ports (``launcher.plans.restart_argv``), as a restarted server in production does.
- Everything started is stopped: the cluster by ``rmq cluster down`` (then SIGKILL for any
  recorded pid still alive), proxies and clients with the Trio nursery, children reaped.
- Layouts are options of ``rmq cluster up`` too: broker settings (``--broker-set``, e.g.
  an async-replica controller group) and, for faults on the broker -> controller links,
  a fault proxy per broker and controller started *before* the cluster (on controller
  ports picked first, ``--controller-base-port``), each broker given its proxies'
  addresses (``--broker-controller-addrs``).
- In controller mode a watcher polls the controller for each group's master every
  ``WATCH_S`` and writes every change into the history (``master`` lines), so checkers can
  tell an ack of a deposed master; probes (straight writes to a resumed old master, the
  metadata of a new master) are history lines too: the verdict judges everything.
- Fault targets (``master:GROUP``, ``controller-leader``, ...) are resolved here, from
  what the NameServer routes and the controller says now.
- Separate hosts (``netns=True``): ``rmq cluster up --netns`` puts every node in its own
  network namespace on a bridge this process (the clients) shares; when namespaces cannot
  be made here (not root) the cluster runs on loopback and ``fallback`` says why. Link
  faults (``drop_packets``) are tc rules on the nodes' links (``launcher.netns.Shaper``),
  named by fault and node so each heal lifts exactly its own; all are lifted by ``down``,
  and ``rmq cluster down`` (then ``launcher.netns.teardown`` once more) removes the hosts.
- Power loss (``power_store=True``): each broker's store directory is a powerfs mount
  (``scenarios/powerfs.py``: a FUSE passthrough that sees every fsync) made before the
  cluster starts; ``power_off`` tells it to lose every write no fsync covered (the broker
  already SIGKILLed), ``power_on`` mounts what survived again. Mounts are removed by
  ``down`` whatever happened.
- Every wait has a deadline; network traffic stays on this machine (loopback, or the
  private bridge of ``launcher/netns.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from client import admin as admin_api
from launcher.command import child_env, rmq_argv
from launcher.detached import read_output, spawn_recorded, wait_ready
from launcher.netns import (
    Drop,
    NetnsError,
    NetPlan,
    Shaper,
    Wire,
    load_plan,
    netns_unavailable,
    offloads_off,
)
from launcher.netns import run as run_net
from launcher.netns import teardown as netns_teardown
from launcher.pids import is_alive
from launcher.plans import (
    BROKERS_BY_MODE,
    CONTROLLER_NODES,
    pin_flag,
    quorum_plan,
    quorum_ports,
    restart_argv,
    toml_value,
)
from launcher.ports import free_port_range
from launcher.ready import BROKER, CONTROLLER, NAMESRV, Ready, parse_all_ready
from launcher.record import Cluster, ClusterError, Node, load_cluster
from protocol.bodies import TopicConfigSerializeWrapper
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import ReplicasInfo
from protocol.errors import RocketError, error_for_response
from protocol.rpc import RemotingClient, open_client
from scenarios.faults import BrokerMetadata, FaultProxy, ProxyGroup, metadata_kept
from scenarios.history import HARNESS_CLIENT, MASTER, PROBE, STEP, Outcome, Response, make_extra
from scenarios.workload import (
    CONSUMER_GROUP,
    Recorder,
    Workload,
    WorkloadConfig,
    now_ms,
    poll_until,
)

log = logging.getLogger(__name__)

UP_TIMEOUT_S = 120.0
DOWN_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0
KILL_WAIT_S = 5.0
ROUTE_TIMEOUT_S = 20.0
#: How often the watcher asks the controller who each group's master is.
WATCH_S = 0.5
#: How long a probe waits for a group's new master after its old one was killed.
NEW_MASTER_TIMEOUT_S = 30.0


class HarnessError(Exception):
    """The harness could not do what the scenario needs (start, restart, find a node)."""


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def _gone(node: Node) -> bool:
    return not is_alive(node)


class LocalCluster:
    """A cluster of real processes under ``root`` that faults can be injected into."""

    def __init__(
        self,
        root: Path,
        mode: str,
        flush: str,
        rng: random.Random,
        *,
        recorder: Recorder | None = None,
        broker_settings: tuple[tuple[str, object], ...] = (),
        tls: bool = False,
        netns: bool = False,
        power_store: bool = False,
        grpc_proxy: bool = False,
    ) -> None:
        self.root = root
        #: Start the cluster's gRPC proxy too (``rmq demo`` shows it; no scenario drives it,
        #: so scenarios run without: one process less under load).
        self.grpc_proxy = grpc_proxy
        self.power_store = power_store
        #: Broker node -> its powerfs process (power_store only).
        self._power: dict[str, trio.Process] = {}
        self.mode = mode
        self.flush = flush
        self.recorder = recorder
        self.broker_settings = broker_settings
        #: ``rmq cluster up --tls``: every port TLS only (clients: ``$RMQ_TLS*``).
        self.tls = tls
        #: Why separate hosts were asked for but not made (None: made, or not asked for).
        self.fallback: str | None = netns_unavailable() if netns else None
        self.netns = netns and self.fallback is None
        #: The nodes' hosts and the drops on their links, once up on separate hosts.
        self.hosts: NetPlan | None = None
        self._shaper: Shaper | None = None
        self._link_faults: dict[tuple[str, str], int] = {}
        #: Delayed links: (fault, node) -> the wire and its forwarder.
        self._wires: dict[tuple[str, str], tuple[Wire, trio.Process]] = {}
        #: The run's workload, once it runs (probe writes go through it).
        self.workload: Workload | None = None
        self._rng = rng
        self._record: Cluster | None = None
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._proxies: dict[str, list[FaultProxy]] = {}
        self._paused: set[str] = set()
        #: ``rmq cluster up`` options that put proxies in front of the controllers.
        self._layout_args: list[str] = []

    @property
    def rng(self) -> random.Random:
        return self._rng

    @property
    def record(self) -> Cluster:
        assert self._record is not None, "the cluster is not up"
        return self._record

    @property
    def namesrv(self) -> str:
        address = self.node(NAMESRV).address
        assert address is not None
        return address

    def node(self, name: str) -> Node:
        for node in self.record.nodes:
            if node.name == name:
                return node
        raise HarnessError(f"no node {name!r} in {self.root} (has {self.node_names()})")

    def node_names(self) -> list[str]:
        return [n.name for n in self.record.nodes]

    def brokers(self) -> list[Node]:
        return [n for n in self.record.nodes if n.kind == BROKER]

    def controllers(self) -> list[Node]:
        return [n for n in self.record.nodes if n.kind == CONTROLLER]

    def _by_address(self, address: str) -> str:
        for node in self.record.nodes:
            if node.address == address:
                return node.name
        raise HarnessError(f"no node of {self.root} serves {address}")

    async def group_members(self) -> dict[str, dict[int, str]]:
        """Broker group -> {broker id: node name}, as the NameServer routes them now
        (id 0 is the master; in controller mode the controller decides who that is)."""
        async with open_client(name="chaos-harness", default_timeout_s=3.0) as client:
            with trio.fail_after(ROUTE_TIMEOUT_S):
                info = await admin_api.get_cluster_info(client, [self.namesrv])
        return {
            group: {bid: self._by_address(addr) for bid, addr in data.broker_addrs.items()}
            for group, data in info.broker_addr_table.items()
        }

    async def controller_leader(self) -> str:
        addrs = [c.address for c in self.controllers() if c.address]
        if not addrs:
            raise HarnessError(f"mode {self.mode} runs no controllers")
        async with open_client(name="chaos-harness", default_timeout_s=3.0) as client:
            with trio.fail_after(ROUTE_TIMEOUT_S):
                return self._by_address(await admin_api.find_controller_leader(client, addrs))

    # --- up and down -----------------------------------------------------------------

    async def up(self) -> None:
        if self.power_store:
            for plan in BROKERS_BY_MODE[self.mode]:
                await self.power_on(plan.name)
        argv = rmq_argv(
            "cluster", "up", "--mode", self.mode, "--dir", str(self.root),
            "--namesrv-port", "0", "--flush", self.flush,
        )  # fmt: skip
        argv += [] if self.grpc_proxy else ["--no-proxy"]
        for key, value in self.broker_settings:
            argv += ["--broker-set", f"{key}={toml_value(value)}"]
        argv += self._layout_args
        argv += ["--tls"] if self.tls else []
        if self.netns:
            argv.append("--netns")
        with trio.fail_after(UP_TIMEOUT_S):
            done = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
        self._record = load_cluster(self.root)
        if done.returncode != 0:
            raise HarnessError(
                f"`{shlex.join(argv)}` failed (exit {done.returncode}):\n"
                + done.stderr.decode(errors="replace")
            )
        if self.netns:
            self.hosts = load_plan(self.root)
            assert self.hosts is not None, "rmq cluster up --netns recorded no hosts"
            self._shaper = Shaper(self.hosts)
        log.info("cluster (%s) up in %s: %s", self.mode, self.root, self.node_names())

    async def down(self) -> None:
        """Stop everything: ``rmq cluster down``, then SIGKILL what survived; reap children."""
        for name in list(self._paused):
            self.resume(name)
        for key, name in list(self._wires):
            with contextlib.suppress(NetnsError):
                await self.heal_delay(key, name)
        if self._shaper is not None:
            with contextlib.suppress(NetnsError):
                self._shaper.clear()
            self._link_faults.clear()
        if (self.root / "cluster.json").exists():
            argv = rmq_argv("cluster", "down", "--dir", str(self.root), "--timeout", "5")
            with trio.move_on_after(DOWN_TIMEOUT_S):
                await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
            with contextlib.suppress(ClusterError):
                self._record = load_cluster(self.root) or self._record
        if self._record is not None:
            for node in self._record.nodes:
                if is_alive(node):
                    log.warning(
                        "%s (pid %d) survived rmq cluster down; SIGKILL", node.name, node.pid
                    )
                    os.kill(node.pid, signal.SIGKILL)
        for proc in self._children.values():
            await poll_until(functools.partial(_exited, proc), KILL_WAIT_S)
        if self.netns:  # what rmq cluster down left (a node that survived it, say)
            await trio.to_thread.run_sync(netns_teardown, self.root)
        for name in list(self._power):
            await self._stop_power(name, signal.SIGTERM)

    # --- process faults (faults.NodeControl) --------------------------------------------

    def _signal(self, name: str, signum: int) -> None:
        node = self.node(name)
        if not is_alive(node):
            raise HarnessError(f"{name} (pid {node.pid}) is not running; cannot send {signum}")
        os.kill(node.pid, signum)

    async def kill(self, node: str) -> None:
        self._signal(node, signal.SIGKILL)
        self._paused.discard(node)
        record = self.node(node)
        await poll_until(functools.partial(_gone, record), KILL_WAIT_S)
        child = self._children.get(node)
        if child is not None:
            await poll_until(functools.partial(_exited, child), KILL_WAIT_S)
        if is_alive(record):
            raise HarnessError(f"{node} (pid {record.pid}) survived SIGKILL")
        record.state = "stopped"
        self.record.save()
        log.info("%s killed", node)

    def pause(self, node: str) -> None:
        self._signal(node, signal.SIGSTOP)
        self._paused.add(node)

    def resume(self, node: str) -> None:
        self._signal(node, signal.SIGCONT)
        self._paused.discard(node)

    def store_dir(self, node: str) -> Path:
        store = self.node(node).store_dir
        if store is None:
            raise HarnessError(f"{node} has no store")
        if is_alive(self.node(node)):
            raise HarnessError(f"{node} is running; its store is touched only while it is down")
        return store

    def proxy(self, node: str) -> ProxyGroup:
        proxies = self._proxies.get(node)
        if not proxies:
            raise HarnessError(
                f"{node} has no fault proxy (the scenario must set proxy_namesrv_links "
                "or proxy_controller_links)"
            )
        return ProxyGroup(proxies)

    async def restart(self, node: str) -> None:
        """Start a stopped node again with its old ports; wait for its ready line."""
        record = self.node(node)
        if is_alive(record):
            raise HarnessError(f"{node} (pid {record.pid}) is still running")
        original = list(record.argv)
        pinned = self._pinned_argv(record)
        try:
            await self._start(record, pinned)
        except HarnessError as exc:
            if pinned == original:
                raise
            log.warning("%s did not start on its old ports (%s); trying free ones", node, exc)
            await self._start(record, original)

    def _pinned_argv(self, node: Node) -> list[str]:
        readies: list[Ready] = []
        if node.kind == BROKER:
            with contextlib.suppress(OSError):
                # Every start's ready line is in stdout.log; a master's names its HA port.
                readies = parse_all_ready(BROKER, read_output(node.stdout_file, 0))
        ha = next((r.ha_address for r in reversed(readies) if r.ha_address), None)
        return restart_argv(node, ha)

    async def _start(self, node: Node, argv: list[str]) -> None:
        node.argv = argv
        spawned = spawn_recorded(self.record, node)
        self._children[node.name] = spawned.proc
        try:
            await wait_ready(spawned, READY_TIMEOUT_S)
        except ClusterError as exc:
            spawned.proc.kill()  # nothing when it already exited
            raise HarnessError(f"{exc}\n{exc.detail}") from None
        log.info("%s started at %s (pid %d)", node.name, node.address, node.pid)

    # --- power (faults.NodeControl) ----------------------------------------------------------

    def group_nodes(self, group: str) -> list[str]:
        nodes = [b.name for b in self.brokers() if b.group == group]
        if not nodes:
            raise HarnessError(f"no broker of group {group!r}")
        return nodes

    def _store_paths(self, node: str) -> tuple[Path, Path]:
        """(the disk behind a broker's store, the store mount) of ``node``."""
        store = self.root / node / "store"
        return store.with_name("store.disk"), store

    async def power_on(self, node: str) -> None:
        """Mount ``node``'s store (a powerfs over what its disk holds now)."""
        if node in self._power:
            return
        disk, store = self._store_paths(node)
        store.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "scenarios.powerfs", str(disk), str(store)]
        proc = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env()
        )
        self._power[node] = proc
        assert proc.stdout is not None
        with trio.move_on_after(READY_TIMEOUT_S):
            if b"powerfs ready" in await proc.stdout.receive_some(4096):
                return
        await self._stop_power(node, signal.SIGKILL)
        raise HarnessError(f"powerfs for {node} did not mount {store}")

    async def power_off(self, node: str) -> dict[str, object]:
        """``node`` (already killed) loses what was not fsynced; what it lost."""
        if is_alive(self.node(node)):
            raise HarnessError(f"{node} still runs: kill it before its power goes")
        await self._stop_power(node, signal.SIGUSR1)
        disk, _ = self._store_paths(node)
        report = disk.with_name(f"powerfs-{disk.name}.json")
        try:
            lost: dict[str, object] = json.loads(report.read_text())
        except (OSError, ValueError):
            return {"bytes": None}
        report.unlink()
        return lost

    async def _stop_power(self, node: str, signum: int) -> None:
        proc = self._power.pop(node, None)
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signum)
        with trio.move_on_after(KILL_WAIT_S):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(OSError):
            if proc.stdout is not None:
                await proc.stdout.aclose()
        _, store = self._store_paths(node)
        if os.path.ismount(store):  # a daemon that died before its own unmount
            subprocess.run(["umount", "-l", str(store)], check=False, capture_output=True)

    # --- link faults (faults.NodeControl) ---------------------------------------------------

    def peer_addresses(self, node: str, peers: str) -> list[str] | None:
        """The addresses ``peers`` means for ``node`` (None: every peer): ``controllers``,
        ``group`` (the other members of its broker group), ``clients`` (this process's
        host), ``node:NAME``, ``all``."""
        if peers == "all":
            return None
        hosts = self._hosts()
        if peers == "controllers":
            names = [c.name for c in self.controllers()]
        elif peers == "group":
            group = self.node(node).group
            names = [b.name for b in self.brokers() if b.group == group and b.name != node]
        elif peers == "clients":
            return [hosts.gateway]
        elif peers.startswith("node:"):
            names = [self.node(peers.partition(":")[2]).name]
        else:
            raise HarnessError(
                f"unknown peers {peers!r} (all, controllers, group, clients, node:X)"
            )
        return [hosts.host(name).address for name in names]

    def drop_packets(self, key: str, node: str, drops: list[Drop]) -> None:
        """Start dropping ``drops`` on ``node``'s link, as fault ``key``."""
        shaper = self._shaper
        if shaper is None:
            raise HarnessError("link faults need separate hosts (the scenario's netns)")
        self.heal_packets(key, node)
        self._link_faults[(key, node)] = shaper.add(drops)
        log.info("%s: %s on %s", key, ", ".join(map(str, drops)), node)

    def heal_packets(self, key: str, node: str) -> None:
        token = self._link_faults.pop((key, node), None)
        if token is not None and self._shaper is not None:
            self._shaper.remove(token)

    async def delay_link(self, key: str, node: str, latency_s: float, jitter_s: float) -> None:
        """Put a delaying wire (``scenarios/netdelay.py``) on ``node``'s link, as fault
        ``key``: every frame to and from it waits ``latency_s`` + up to ``jitter_s``."""
        hosts = self._hosts()
        wire = Wire.of(hosts, node)
        await self.heal_delay(key, node)
        if not self._wires:
            await trio.to_thread.run_sync(offloads_off, hosts)
        for argv in wire.prepare_commands():
            run_net(argv)
        argv = [
            sys.executable, "-m", "scenarios.netdelay", wire.node_side, wire.bridge_side,
            "--latency-ms", f"{latency_s * 1000:g}", "--jitter-ms", f"{jitter_s * 1000:g}",
            "--seed", str(self._rng.randrange(1 << 30)),
        ]  # fmt: skip
        proc = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env()
        )
        self._wires[(key, node)] = (wire, proc)
        assert proc.stdout is not None
        with trio.move_on_after(READY_TIMEOUT_S):
            if b"netdelay ready" in await proc.stdout.receive_some(4096):
                for argv in wire.switch_commands():
                    run_net(argv)
                log.info("%s: %s ms (+%s) on %s", key, latency_s * 1000, jitter_s * 1000, node)
                return
        await self.heal_delay(key, node)
        raise HarnessError(f"netdelay on {node}'s link did not start")

    async def heal_delay(self, key: str, node: str) -> None:
        entry = self._wires.pop((key, node), None)
        if entry is None:
            return
        wire, proc = entry
        for argv in wire.restore_commands():
            run_net(argv, check=False)
        proc.terminate()
        with trio.move_on_after(KILL_WAIT_S):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
        for argv in wire.cleanup_commands():
            run_net(argv, check=False)

    def _hosts(self) -> NetPlan:
        if self.hosts is None:
            raise HarnessError("link faults need separate hosts (the scenario's netns)")
        return self.hosts

    # --- proxies -----------------------------------------------------------------------

    async def proxy_namesrv_links(self, nursery: trio.Nursery) -> None:
        """Give each broker its own fault proxy to the NameServer (restarting it once)."""
        for broker in self.brokers():
            proxy = FaultProxy(
                f"{broker.name}->namesrv", self.namesrv, random.Random(self._rng.random())
            )
            await nursery.start(proxy.serve)
            self._proxies.setdefault(broker.name, []).append(proxy)
            self._signal(broker.name, signal.SIGTERM)
            if not await poll_until(functools.partial(_gone, broker), READY_TIMEOUT_S):
                raise HarnessError(f"{broker.name} did not stop on SIGTERM")
            await self._start(broker, pin_flag(self._pinned_argv(broker), "-n", proxy.address))

    async def proxy_controller_links(self, nursery: trio.Nursery) -> None:
        """Before ``up``: pick the controllers' ports, start a fault proxy per broker and
        controller in front of them, and have ``up`` give each broker its proxies."""
        if self._record is not None:
            raise HarnessError("controller links are proxied before the cluster is up")
        if self.netns:
            raise HarnessError("separate hosts cut links with LinkCut, not with proxies")
        if self.mode != CONTROLLER:
            raise HarnessError(f"mode {self.mode} runs no controllers to proxy")
        base = free_port_range(2 * CONTROLLER_NODES)
        quorum = quorum_plan(
            nodes=CONTROLLER_NODES, host="127.0.0.1", ports=quorum_ports(CONTROLLER_NODES, base)
        )
        args = ["--controller-base-port", str(base)]
        for plan in BROKERS_BY_MODE[self.mode]:
            proxies = []
            for controller in quorum:
                proxy = FaultProxy(
                    f"{plan.name}->{controller.node_id}",
                    controller.remoting_address,
                    random.Random(self._rng.random()),
                )
                await nursery.start(proxy.serve)
                proxies.append(proxy)
            self._proxies.setdefault(plan.name, []).extend(proxies)
            addrs = ";".join(p.address for p in proxies)
            args += ["--broker-controller-addrs", f"{plan.name}={addrs}"]
        self._layout_args = args

    # --- what sequences and probes need (faults.NodeControl) ----------------------------

    def note(self, step: str, **extra: object) -> None:
        log.info("step: %s %s", step, extra)
        if self.recorder is not None:
            self.recorder.record(harness_line(STEP, step, make_extra(**extra)))

    async def in_sync_nodes(self, group: str) -> tuple[str, list[str]] | None:
        info = await self.replicas(group)
        if info is None or info.master_address is None:
            return None
        try:
            master = self._by_address(info.master_address)
            slaves = [
                self._by_address(r.broker_address)
                for r in info.in_sync_replicas
                if r.alive and r.broker_address != info.master_address
            ]
        except HarnessError:
            return None
        return master, slaves

    async def replicas(
        self, group: str, admin: admin_api.Admin | None = None
    ) -> ReplicasInfo | None:
        """The controller's view of ``group`` now (None: no controller answered)."""
        if admin is None:
            async with admin_api.open_admin(self.namesrv, timeout_s=2.0) as own:
                return await self.replicas(group, own)
        addrs = [c.address for c in self.controllers() if c.address]
        with trio.move_on_after(ROUTE_TIMEOUT_S):
            try:
                table = await admin.sync_state_set(addrs, broker_name=group)
                return table.replicas_info_table.get(group)
            except (RocketError, ValueError) as exc:
                log.info("no SyncStateSet of %s: %s", group, exc)
        return None

    def log_size(self, node: str) -> int:
        try:
            return self.node(node).log_file.stat().st_size
        except OSError:
            return 0

    async def wait_for_log(self, node: str, pattern: str, since: int, timeout_s: float) -> bool:
        """Whether ``node``'s log says ``pattern`` (a regex) after byte ``since`` in time."""
        regex = re.compile(pattern)
        path = self.node(node).log_file
        with trio.move_on_after(timeout_s):
            while True:
                with contextlib.suppress(OSError):
                    if regex.search(read_output(path, since)):
                        return True
                await trio.sleep(0.01)
        return False

    async def heal_all(self) -> None:
        for name in sorted(self._paused):
            self.resume(name)
        for node in self.record.nodes:
            if node.state == "stopped" and not is_alive(node):
                await self.restart(node.name)

    async def probe_writes(self, node: str, count: int) -> None:
        """Send ``count`` messages straight to ``node``; what it answered goes into the
        history (the checkers judge it) and into a ``step`` line."""
        record = self.node(node)
        if self.workload is None or record.address is None or record.group is None:
            raise HarnessError(f"cannot probe {node}: no workload or no address")
        statuses = await self.workload.probe_writes(record.address, record.group, count=count)
        self.note("probe writes", node=node, answers="/".join(sorted(set(statuses))))

    async def metadata_of(self, node: str) -> BrokerMetadata | None:
        """The workload's topic and group as ``node`` holds them (None: it did not answer)."""
        record = self.node(node)
        if self.workload is None or record.address is None:
            return None
        try:
            return await read_broker_metadata(
                record.address, self.workload.config.topic, CONSUMER_GROUP
            )
        except (RocketError, ValueError, trio.TooSlowError) as exc:
            log.info("no metadata from %s: %s", node, exc)
            return None

    async def probe_new_master(self, old_master: str, before: BrokerMetadata | None) -> None:
        """Wait for the group of ``old_master`` to have another master; check that it has
        the topic and the offsets ``old_master`` had (a ``probe`` line either way)."""
        group = self.node(old_master).group or old_master
        new = None
        with trio.move_on_after(NEW_MASTER_TIMEOUT_S):
            while new is None:
                with contextlib.suppress(RocketError, HarnessError, trio.TooSlowError):
                    ids = (await self.group_members()).get(group, {})
                    if ids.get(0) not in (None, old_master):
                        new = ids[0]
                        break
                await trio.sleep(0.2)
        ok, detail = False, f"no new master of {group} within {NEW_MASTER_TIMEOUT_S:g} s"
        if new is not None:
            after = await self.metadata_of(new)
            if after is None:
                detail = f"new master {new} did not answer"
            else:
                assert self.workload is not None
                queues = self.workload.config.queues_per_broker
                ok, detail = metadata_kept(before, after, write_queues=queues)
        if self.recorder is not None:
            outcome = Outcome.SUCCESS if ok else Outcome.FAILURE
            extra = make_extra(old=old_master, new=new, detail=detail)
            self.recorder.record(harness_line(PROBE, "new-master-metadata", extra, outcome))
        log.info("probe of the new master %s: %s %s", new, "ok" if ok else "FAILED", detail)

    async def watch_masters(self) -> None:
        """Forever: record every change of each group's master as the controller names it."""
        assert self.recorder is not None
        groups = sorted({b.group for b in self.brokers() if b.group})
        last: dict[str, tuple[str | None, int]] = {}
        async with admin_api.open_admin(self.namesrv, timeout_s=2.0) as admin:
            while True:
                for group in groups:
                    await self._watch_one(admin, group, last)
                await trio.sleep(WATCH_S)

    async def _watch_one(
        self, admin: admin_api.Admin, group: str, last: dict[str, tuple[str | None, int]]
    ) -> None:
        assert self.recorder is not None
        info = await self.replicas(group, admin)
        if info is None:
            return
        now = (info.master_address, info.master_epoch)
        if last.get(group) == now:
            return
        last[group] = now
        node = None
        with contextlib.suppress(HarnessError):
            node = self._by_address(info.master_address) if info.master_address else None
        extra = make_extra(
            group=group, broker=info.master_address or "none", node=node,
            sss_epoch=info.sync_state_set_epoch,
        )  # fmt: skip
        self.recorder.record(harness_line(MASTER, str(info.master_epoch), extra))

    # --- targets -------------------------------------------------------------------------

    async def resolve_all(self, target: str) -> list[str]:
        """Every node (or group, for ``group:``) a target spec means now."""
        kind, _, arg = target.partition(":")
        if kind == "group":
            return [arg]
        if kind == "controller-majority":
            names = sorted(c.name for c in self.controllers())
            if not names:
                raise HarnessError(f"mode {self.mode} runs no controllers")
            return sorted(self._rng.sample(names, len(names) // 2 + 1))
        return [await self.resolve(target)]

    async def resolve(self, target: str) -> str:
        """The node a target spec means now (see ``FaultPlan.target``).

        Masters and slaves are whom the NameServer routes as such now, so a spec follows
        the controller's elections.
        """
        kind, _, arg = target.partition(":")
        if kind == "node":
            return self.node(arg).name
        if kind == "namesrv":
            return NAMESRV
        if kind == "controller-leader":
            return await self.controller_leader()
        if kind == "any-broker":
            return self._rng.choice([b.name for b in self.brokers()])
        members = await self.group_members()
        if kind in ("master", "slave"):
            ids = members.get(arg, {})
            found = [n for bid, n in sorted(ids.items()) if (bid == 0) == (kind == "master")]
            if not found:
                raise HarnessError(f"group {arg!r} has no {kind} now (routed: {ids})")
            return self._rng.choice(found)
        if kind == "any-master":
            masters = [ids[0] for _, ids in sorted(members.items()) if 0 in ids]
            if not masters:
                raise HarnessError("no group has a master now")
            return self._rng.choice(masters)
        raise HarnessError(f"fault target {target!r} is not known to the harness yet")


async def _broker_body(client: RemotingClient, address: str, code: int) -> bytes:
    response = await client.call(address, RemotingCommand.request(code))
    if response.code != ResponseCode.SUCCESS:
        raise error_for_response(response.code, response.remark)
    return response.body


async def read_broker_metadata(
    address: str, topic: str, group: str, *, timeout_s: float = 3.0
) -> BrokerMetadata:
    """``topic``'s config and ``group``'s offsets of it, as the broker at ``address`` holds
    them (GET_ALL_TOPIC_CONFIG, GET_ALL_CONSUMER_OFFSET: what a slave copies)."""
    async with open_client(name="chaos-probe", default_timeout_s=timeout_s) as client:
        topics = await _broker_body(client, address, RequestCode.GET_ALL_TOPIC_CONFIG)
        offsets = await _broker_body(client, address, RequestCode.GET_ALL_CONSUMER_OFFSET)
    config = TopicConfigSerializeWrapper.from_bytes(topics).topic_config_table.get(topic)
    table = json.loads(offsets).get("offsetTable") or {}
    raw = table.get(f"{topic}@{group}") or {}
    return BrokerMetadata(
        address=address,
        write_queues=config.write_queue_nums if config is not None else None,
        offsets={int(q): int(o) for q, o in raw.items()},
    )


def harness_line(
    op: str, value: str, extra: str | None, outcome: Outcome = Outcome.SUCCESS
) -> Response:
    """A history line of the harness itself (``master``, ``step``, ``probe``)."""
    return Response(
        client_id=HARNESS_CLIENT,
        op=op,
        outcome=outcome,
        value=value,
        timestamp_ms=now_ms(),
        extra=extra,
    )


@asynccontextmanager
async def local_cluster(
    root: Path,
    mode: str,
    flush: str,
    rng: random.Random,
    *,
    recorder: Recorder | None = None,
    broker_settings: tuple[tuple[str, object], ...] = (),
    controller_proxies: trio.Nursery | None = None,
    tls: bool = False,
    netns: bool = False,
    power_store: bool = False,
    grpc_proxy: bool = False,
) -> AsyncIterator[LocalCluster]:
    """A running cluster for the block; every process it started is stopped after it.

    With ``controller_proxies`` (a nursery that outlives the block) the brokers reach the
    controllers through fault proxies served there.
    """
    cluster = LocalCluster(
        root,
        mode,
        flush,
        rng,
        recorder=recorder,
        broker_settings=broker_settings,
        tls=tls,
        netns=netns,
        power_store=power_store,
        grpc_proxy=grpc_proxy,
    )
    try:
        if controller_proxies is not None:
            await cluster.proxy_controller_links(controller_proxies)
        await cluster.up()
        yield cluster
    finally:
        with trio.CancelScope(shield=True):
            await cluster.down()


async def create_topic(
    cluster: LocalCluster, config: WorkloadConfig, groups: tuple[str, ...]
) -> None:
    """Create the topic on the masters of ``groups`` (all when empty); wait for its route."""
    members = await cluster.group_members()
    masters = {g: cluster.node(ids[0]).address for g, ids in members.items() if 0 in ids}
    wanted = groups or tuple(sorted(members))
    async with admin_api.open_admin(cluster.namesrv) as admin:
        for group in wanted:
            address = masters.get(group)
            if address is None:
                raise HarnessError(f"no master of group {group!r} to host {config.topic}")
            await admin.create_topic(
                config.topic,
                broker_addr=address,
                read_queue_nums=config.queues_per_broker,
                write_queue_nums=config.queues_per_broker,
            )
        with trio.fail_after(ROUTE_TIMEOUT_S):
            while True:
                with contextlib.suppress(RocketError):
                    route = await admin.topic_route(config.topic)
                    if {q.broker_name for q in route.queue_datas} >= set(wanted):
                        return
                await trio.sleep(0.2)
