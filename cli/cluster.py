"""``rmq cluster up|status|down``: a local cluster of real, detached processes under one directory.

Rules:
- Every node is a real ``rmq namesrv`` / ``rmq broker`` process in its own session
  (``start_new_session``), so it outlives ``rmq cluster up`` and a Ctrl-C in its terminal.
  Its stdout and stderr go to ``D/<node>/stdout.log`` and ``D/<node>/stderr.log`` (appended,
  each start marked with a header line); the ready line is read from ``stdout.log``.
- ``D/cluster.json`` is the one record of the cluster. It is replaced atomically (temp file,
  fsync, rename, fsync dir) after every change, so an interrupted ``up`` still leaves every
  process it started findable by ``down``.
- A recorded pid is acted on only while it is still that process: ``/proc/<pid>`` exists, is
  not a zombie, its start time equals the recorded one and its command line ends with the
  recorded argv (which runs ``rmq``). A recycled pid is never signalled.
- Every wait has a deadline: a ready line (30 s by default), a stop (10 s, then SIGKILL).
- ``up`` and ``down`` hold ``D/cluster.lock``, so two of them never race on one directory.
- Errors are one line (``error: ...``) with exit status 1, never a traceback; a node that
  fails to start adds the tail of its log after that line.
- A mode's layout changes only through ``LayoutOptions`` (``--broker-set``,
  ``--broker-controller-addrs``, ``--controller-base-port``), checked before anything
  starts; without them ``up`` starts exactly the mode's table.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import attrs
import trio
import typer
from rich.table import Table

from cli.output import err, fail, out
from client import admin
from protocol.errors import RocketError
from protocol.route import ClusterInfo
from protocol.rpc import open_client

cluster_app = typer.Typer(
    no_args_is_help=True, help="Start, inspect and stop a local cluster of real processes."
)

# Wide enough for the status table when piped.
_out = out

# The nodes are detached on purpose: their Popen objects are dropped while they run.
warnings.filterwarnings("ignore", r"subprocess \d+ is still running", ResourceWarning)

FORMAT_VERSION = 1


@attrs.frozen
class BrokerPlan:
    """One broker process of a mode: node name, broker group, broker id, brokerRole."""

    name: str
    group: str
    broker_id: int
    broker_role: str

    @property
    def role(self) -> str:
        """What ``up`` and ``status`` show."""
        if self.broker_role == CONTROLLER_ROLE:
            return "replica"
        return "slave" if self.broker_role == "SLAVE" else "master"


#: brokerRole of a controller-mode broker: the controller assigns the id and the role.
CONTROLLER_ROLE = "CONTROLLER"
#: Controller mode: nodes of the controller quorum.
CONTROLLER_NODES = 3


def _master_slave(group: str, master_role: str) -> tuple[BrokerPlan, BrokerPlan]:
    return (
        BrokerPlan(group, group, 0, master_role),
        BrokerPlan(f"{group}-s", group, 1, "SLAVE"),
    )


#: Modes ``up`` can start now, and the brokers each one runs, in start order (DESIGN.md §2).
BROKERS_BY_MODE: dict[str, tuple[BrokerPlan, ...]] = {
    "single": (BrokerPlan("broker-a", "broker-a", 0, "ASYNC_MASTER"),),
    "multi-master": (
        BrokerPlan("broker-a", "broker-a", 0, "ASYNC_MASTER"),
        BrokerPlan("broker-b", "broker-b", 0, "ASYNC_MASTER"),
    ),
    "async": (
        *_master_slave("broker-a", "ASYNC_MASTER"),
        *_master_slave("broker-b", "ASYNC_MASTER"),
    ),
    "sync": (*_master_slave("broker-a", "SYNC_MASTER"), *_master_slave("broker-b", "SYNC_MASTER")),
    # DESIGN.md §2 mode 2.5: a controller quorum, one group of three replicas.
    "controller": tuple(
        BrokerPlan(f"broker-a-{i}", "broker-a", -1, CONTROLLER_ROLE) for i in range(3)
    ),
}
#: Modes of DESIGN.md §2 that come later.
LATER_MODES: tuple[str, ...] = ()
FLUSH_TYPES = ("ASYNC_FLUSH", "SYNC_FLUSH")
NAMESRV = "namesrv"
_POLL_S = 0.05
_KILL_WAIT_S = 5.0
_TAIL_LINES = 20

#: Broker settings ``up`` passes as flags itself: ``--broker-set`` may not change them.
_FLAG_KEYS = frozenset(
    {
        "brokerName", "broker_name", "brokerId", "broker_id", "brokerRole", "broker_role",
        "namesrvAddr", "namesrv_addrs", "listenPort", "listen_port", "storePathRootDir",
        "store_dir", "flushDiskType", "flush_disk_type", "controllerAddr", "controller_addrs",
    }
)  # fmt: skip
BROKER_CONFIG_NAME = "broker.toml"


@attrs.frozen(kw_only=True)
class LayoutOptions:
    """What ``up`` may change about a mode's layout; the defaults change nothing.

    - ``broker_settings``: ``broker.conf`` keys and values for every broker, written to
      ``D/<node>/broker.toml`` and passed with ``--config`` (e.g. ``allAckInSyncStateSet``
      false for an async-replica controller group).
    - ``broker_controller_addrs``: per broker node, the controller addresses it is given
      instead of the quorum's own (fault proxies in front of the controllers).
    - ``controller_base_port``: controller mode's quorum on ports ``N .. N+5`` (remoting
      and Raft port of each node) instead of free ones, so proxies can be started first.
    """

    broker_settings: tuple[tuple[str, Any], ...] = ()
    broker_controller_addrs: tuple[tuple[str, str], ...] = ()
    controller_base_port: int | None = None

    def check(self, mode: str) -> None:
        """Raise ``ClusterError`` when these options do not fit ``mode``."""
        from broker.config import ConfigError, config_from_mapping

        settings = dict(self.broker_settings)
        clashing = sorted(k for k in settings if k in _FLAG_KEYS)
        if clashing:
            raise ClusterError(
                f"--broker-set cannot change {', '.join(clashing)}: rmq cluster up sets it"
            )
        try:
            config_from_mapping(settings)
        except ConfigError as exc:
            raise ClusterError(f"--broker-set: {exc}") from None
        controller = mode == "controller"
        if (self.broker_controller_addrs or self.controller_base_port is not None) and (
            not controller
        ):
            raise ClusterError(
                "--broker-controller-addrs and --controller-base-port need --mode controller"
            )
        names = {plan.name for plan in BROKERS_BY_MODE.get(mode, ())}
        unknown = sorted(n for n, _ in self.broker_controller_addrs if n not in names)
        if unknown:
            raise ClusterError(
                f"--broker-controller-addrs names no broker of mode {mode}: "
                f"{', '.join(unknown)} (it has {', '.join(sorted(names))})"
            )
        base = self.controller_base_port
        if base is not None and not 0 < base <= 65535 - 2 * CONTROLLER_NODES:
            raise ClusterError(f"--controller-base-port {base} leaves no room for 6 ports")

    def controller_addrs_of(self, node: str, default: str) -> str:
        return dict(self.broker_controller_addrs).get(node, default)


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value); the value as TOML reads it (true, 1, 2.5), else text."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ClusterError(f"{text!r} is not KEY=VALUE")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def write_broker_settings(path: Path, settings: tuple[tuple[str, Any], ...]) -> None:
    """Write ``settings`` as a ``[broker]`` TOML table (atomically)."""
    lines = ["[broker]", *(f"{key} = {toml_value(value)}" for key, value in settings)]
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, ("\n".join(lines) + "\n").encode())


NAMESRV_READY = re.compile(
    r"The Name Server boot success\. address=(?P<host>[0-9.]+):(?P<port>[0-9]+)"
)
BROKER_READY = re.compile(
    r"The broker\[(?P<name>[^,\]]+), (?P<host>[0-9.]+):(?P<port>[0-9]+)\] boot success\. "
    r"role=(?P<role>\S+)"
)


class ClusterError(Exception):
    """Something ``rmq cluster`` reports as one ``error:`` line (and maybe a log tail)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


# --- the record ----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class Node:
    """One process of the cluster, as recorded in ``cluster.json``."""

    name: str
    #: ``namesrv`` or ``broker``.
    kind: str
    #: What ``status`` shows: ``namesrv``, ``master`` or ``slave``.
    role: str
    argv: list[str]
    node_dir: Path
    stdout_file: Path
    log_file: Path
    store_dir: Path | None = None
    broker_role: str | None = None
    #: A broker's group (brokerName); the node name for records written before slaves.
    group: str | None = None
    pid: int = 0
    #: ``/proc/<pid>/stat`` start time (clock ticks since boot): tells a recycled pid apart.
    start_ticks: int = 0
    address: str | None = None
    #: ``starting``, ``running``, ``failed`` or ``stopped``.
    state: str = "starting"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "broker_role": self.broker_role,
            "group": self.group,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "address": self.address,
            "state": self.state,
            "node_dir": str(self.node_dir),
            "log_file": str(self.log_file),
            "stdout_file": str(self.stdout_file),
            "store_dir": str(self.store_dir) if self.store_dir is not None else None,
            "argv": list(self.argv),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        store_dir = data.get("store_dir")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            role=str(data["role"]),
            broker_role=data.get("broker_role"),
            group=data.get("group"),
            pid=int(data["pid"]),
            start_ticks=int(data.get("start_ticks", 0)),
            address=data.get("address"),
            state=str(data["state"]),
            node_dir=Path(data["node_dir"]),
            log_file=Path(data["log_file"]),
            stdout_file=Path(data["stdout_file"]),
            store_dir=Path(store_dir) if store_dir is not None else None,
            argv=[str(a) for a in data["argv"]],
        )


@attrs.define(kw_only=True)
class Cluster:
    """The whole ``cluster.json``."""

    mode: str
    root: Path
    state: str = "starting"
    flush: str = "ASYNC_FLUSH"
    nodes: list[Node] = attrs.field(factory=list)

    @property
    def path(self) -> Path:
        return self.root / "cluster.json"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "mode": self.mode,
            "dir": str(self.root),
            "state": self.state,
            "flush": self.flush,
            "nodes": [node.to_json() for node in self.nodes],
        }

    def save(self) -> None:
        _atomic_write(self.path, json.dumps(self.to_json(), indent=2).encode() + b"\n")


def load_cluster(root: Path) -> Cluster | None:
    """The cluster recorded in ``root`` (None when there is no ``cluster.json``)."""
    path = root / "cluster.json"
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
        return Cluster(
            mode=str(data["mode"]),
            root=root,
            state=str(data["state"]),
            flush=str(data.get("flush", "ASYNC_FLUSH")),
            nodes=[Node.from_json(n) for n in data["nodes"]],
        )
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClusterError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ClusterError(f"{path} is not a cluster record ({exc!r}); move it away") from None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _dir_lock(root: Path) -> Iterator[None]:
    """Hold ``root/cluster.lock`` (one ``up``/``down`` per directory at a time)."""
    fd = os.open(root / "cluster.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError(f"another rmq cluster command is working on {root}") from None
        yield
    finally:
        os.close(fd)


# --- processes -------------------------------------------------------------------------------


def _proc_start_ticks(pid: int) -> int | None:
    """The start time of a live (non-zombie) ``pid``, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold anything.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited; its parent has not reaped it yet
        return None
    return int(fields[19])


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def is_alive(node: Node) -> bool:
    """Whether the process recorded for ``node`` is still running (and still that process)."""
    if node.pid <= 0:
        return False
    ticks = _proc_start_ticks(node.pid)
    if ticks is None or (node.start_ticks and ticks != node.start_ticks):
        return False
    cmdline = _proc_cmdline(node.pid)
    # ``rmq`` is a script: the kernel runs it as ``python .../rmq ARGS``.
    return cmdline[-len(node.argv) :] == node.argv and any("rmq" in p for p in cmdline)


def rmq_command() -> list[str]:
    """How to run ``rmq``: the console script beside this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("rmq")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cli.app"]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("FORCE_COLOR", "CLICOLOR_FORCE", "PY_COLORS"):
        env.pop(name, None)
    env.update({"NO_COLOR": "1", "PYTHONUNBUFFERED": "1"})
    return env


def _spawn(node: Node) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``node`` detached; return the process and where its new stdout output begins."""
    node.node_dir.mkdir(parents=True, exist_ok=True)
    header = f"--- rmq cluster up at {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(node.argv)}\n"
    with node.stdout_file.open("ab") as out, node.log_file.open("ab") as err:
        err.write(header.encode())
        err.flush()
        offset = out.tell()
        proc = subprocess.Popen(
            node.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=node.node_dir,
            env=_child_env(),
            start_new_session=True,
        )
    node.pid = proc.pid
    node.start_ticks = _proc_start_ticks(proc.pid) or 0
    return proc, offset


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(1024 * 1024).decode(errors="replace")


def _wait_ready(
    node: Node,
    proc: subprocess.Popen[bytes],
    offset: int,
    pattern: re.Pattern[str],
    timeout_s: float,
) -> re.Match[str]:
    """The node's ready line, read from its stdout file, within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        exited = proc.poll()
        match = pattern.search(_read_from(node.stdout_file, offset))
        if match is not None:
            return match
        if exited is not None:
            raise ClusterError(
                f"{node.name} exited with status {exited} before it was ready; "
                f"last lines of {node.log_file}:",
                _tail(node.log_file),
            )
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"{node.name} printed no ready line within {timeout_s:g} s; "
                f"last lines of {node.log_file}:",
                _tail(node.log_file),
            )
        time.sleep(_POLL_S)


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_bytes()[-64 * 1024 :].decode(errors="replace")
    except OSError as exc:
        return f"  (cannot read {path}: {exc.strerror})"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])


def _wait_gone(nodes: list[Node], timeout_s: float) -> list[Node]:
    """Wait up to ``timeout_s`` for ``nodes`` to exit; the ones still running."""
    deadline = time.monotonic() + timeout_s
    left = [n for n in nodes if is_alive(n)]
    while left and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        left = [n for n in left if is_alive(n)]
    return left


def _signal(node: Node, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.pid, signum)


def stop_nodes(nodes: list[Node], timeout_s: float) -> dict[str, str]:
    """SIGTERM every live node, wait up to ``timeout_s``, SIGKILL the rest; outcome per name."""
    outcome = {n.name: "was not running" for n in nodes}
    live = [n for n in nodes if is_alive(n)]
    for node in live:
        _signal(node, signal.SIGTERM)
    left = _wait_gone(live, timeout_s)
    for node in live:
        outcome[node.name] = "stopped"
    for node in left:
        _signal(node, signal.SIGKILL)
        outcome[node.name] = f"killed (no exit within {timeout_s:g} s of SIGTERM)"
    for node in _wait_gone(left, _KILL_WAIT_S):
        outcome[node.name] = "STILL RUNNING after SIGKILL"
    return outcome


def stop_cluster(cluster: Cluster, timeout_s: float) -> dict[str, str]:
    """Brokers first (they unregister from a NameServer that is still there), NameServer last."""
    brokers = [n for n in cluster.nodes if n.kind != NAMESRV]
    outcome = stop_nodes(brokers, timeout_s)
    outcome.update(stop_nodes([n for n in cluster.nodes if n.kind == NAMESRV], timeout_s))
    for node in cluster.nodes:
        if node.state != "failed" and outcome[node.name] != "STILL RUNNING after SIGKILL":
            node.state = "stopped"
    return outcome


# --- up ----------------------------------------------------------------------------------------


def _plan_namesrv(root: Path, port: int) -> Node:
    node_dir = root / NAMESRV
    return Node(
        name=NAMESRV,
        kind=NAMESRV,
        role=NAMESRV,
        argv=[*rmq_command(), "namesrv", "--port", str(port), "--log-dir", str(node_dir)],
        node_dir=node_dir,
        stdout_file=node_dir / "stdout.log",
        log_file=node_dir / "stderr.log",
    )


def _plan_broker(
    root: Path,
    plan: BrokerPlan,
    namesrv_addr: str,
    flush: str,
    controller_addrs: str = "",
    *,
    config_file: Path | None = None,
) -> Node:
    node_dir = root / plan.name
    store_dir = node_dir / "store"
    # Flags win over the file's keys; LayoutOptions.check refuses keys set by flag.
    config = ["--config", str(config_file)] if config_file is not None else []
    # --port 0: the client port and (on a master) the HA port are picked free; a slave
    # learns its master's HA address from the NameServer (the controller, in controller mode).
    if plan.broker_role == CONTROLLER_ROLE:
        identity = ["--controller-addrs", controller_addrs]
    else:
        identity = ["--broker-id", str(plan.broker_id), "--role", plan.broker_role]
    argv = [
        *rmq_command(),
        "broker",
        "--name",
        plan.group,
        *identity,
        "--port",
        "0",
        "-n",
        namesrv_addr,
        "--dir",
        str(store_dir),
        "--flush",
        flush,
        *config,
    ]
    return Node(
        name=plan.name,
        kind="broker",
        role=plan.role,
        broker_role=plan.broker_role,
        group=plan.group,
        argv=argv,
        node_dir=node_dir,
        stdout_file=node_dir / "stdout.log",
        log_file=node_dir / "stderr.log",
        store_dir=store_dir,
    )


def _start(cluster: Cluster, node: Node, pattern: re.Pattern[str], timeout_s: float) -> None:
    """Start ``node``, record it at once (so ``down`` finds it), wait for its ready line."""
    cluster.nodes.append(node)
    proc, offset = _spawn(node)
    cluster.save()
    try:
        match = _wait_ready(node, proc, offset, pattern, timeout_s)
    except ClusterError:
        node.state = "failed"
        raise
    node.address = f"{match.group('host')}:{match.group('port')}"
    node.state = "running"
    cluster.save()


def _refuse_running(root: Path) -> None:
    existing = load_cluster(root)
    if existing is None:
        return
    running = [n for n in existing.nodes if is_alive(n)]
    if running:
        pids = ", ".join(f"{n.name} pid {n.pid}" for n in running)
        raise ClusterError(
            f"{root} already holds a running cluster ({pids}); "
            f"stop it first with: rmq cluster down --dir {root}"
        )


def _start_controllers(cluster: Cluster, timeout_s: float, base_port: int | None = None) -> str:
    """Controller mode: write a fresh quorum's configs, start it, wait for a leader; the
    controllers' addresses as ``a;b;c`` (on ``base_port`` .. + 5 when given)."""
    # Imported here: controller_cmds builds on this module.
    from cli import controller_cmds as cc
    from controller.config import write_toml

    root = cluster.root
    if sorted(root.glob(f"n*/{cc.CONFIG_NAME}")):
        raise ClusterError(f"{root} already holds a controller quorum; use a fresh --dir")
    configs = cc.quorum_configs(root, nodes=CONTROLLER_NODES, host="127.0.0.1", base_port=base_port)
    for config in configs:
        path = root / config.node_id / cc.CONFIG_NAME
        write_toml(path, config)
        _start(cluster, cc._plan_controller(root, path, config), cc.CONTROLLER_READY, timeout_s)
    addrs = [c.remoting_address for c in configs]
    cc.wait_for_leader(addrs, timeout_s)
    return ";".join(addrs)


def cluster_up(
    root: Path,
    *,
    mode: str,
    namesrv_port: int,
    flush: str,
    timeout_s: float,
    stop_timeout_s: float,
    layout: LayoutOptions | None = None,
) -> Cluster:
    """Start the cluster; on any failure stop what was started and raise ``ClusterError``."""
    layout = layout or LayoutOptions()
    layout.check(mode)
    root.mkdir(parents=True, exist_ok=True)
    with _dir_lock(root):
        _refuse_running(root)
        cluster = Cluster(mode=mode, root=root, flush=flush)
        try:
            controller_addrs = ""
            if mode == "controller":
                controller_addrs = _start_controllers(
                    cluster, timeout_s, layout.controller_base_port
                )
            namesrv = _plan_namesrv(root, namesrv_port)
            _start(cluster, namesrv, NAMESRV_READY, timeout_s)
            assert namesrv.address is not None
            for plan in BROKERS_BY_MODE[mode]:
                config_file = None
                if layout.broker_settings:
                    config_file = root / plan.name / BROKER_CONFIG_NAME
                    write_broker_settings(config_file, layout.broker_settings)
                addrs = layout.controller_addrs_of(plan.name, controller_addrs)
                broker = _plan_broker(
                    root, plan, namesrv.address, flush, addrs, config_file=config_file
                )
                _start(cluster, broker, BROKER_READY, timeout_s)
        except BaseException:  # ClusterError, Ctrl-C, anything: leave nothing running
            stop_cluster(cluster, stop_timeout_s)
            cluster.state = "failed"
            cluster.save()
            raise
        cluster.state = "running"
        cluster.save()
        return cluster


# --- status ------------------------------------------------------------------------------------


def _ping_namesrv(address: str, timeout_s: float) -> ClusterInfo | None:
    """GET_BROKER_CLUSTER_INFO from the NameServer, or None when it does not answer in time."""

    async def ask() -> ClusterInfo | None:
        with trio.move_on_after(timeout_s):
            async with open_client(name="rmq-cluster", default_timeout_s=timeout_s) as client:
                return await admin.get_cluster_info(client, [address])
        return None

    try:
        return trio.run(ask)
    except RocketError:
        return None


def _serving(cluster: Cluster, alive: dict[str, bool], timeout_s: float) -> dict[str, bool | None]:
    """Per node: answers on the wire (NameServer) / registered there (broker); None: unknown."""
    serving: dict[str, bool | None] = {n.name: None for n in cluster.nodes}
    namesrv = next((n for n in cluster.nodes if n.kind == NAMESRV), None)
    if namesrv is None or namesrv.address is None or not alive[namesrv.name]:
        return serving
    info = _ping_namesrv(namesrv.address, timeout_s)
    serving[namesrv.name] = info is not None
    if info is None:
        return serving
    for node in cluster.nodes:
        if node.kind != NAMESRV:
            data = info.broker_addr_table.get(node.group or node.name)
            serving[node.name] = bool(data and node.address in data.broker_addrs.values())
    return serving


def node_status(cluster: Cluster, *, ping: bool, timeout_s: float) -> list[dict[str, Any]]:
    """One row per node, as ``status --json`` prints it."""
    alive = {n.name: is_alive(n) for n in cluster.nodes}
    serving = _serving(cluster, alive, timeout_s) if ping else dict.fromkeys(alive)
    return [
        {
            "name": n.name,
            "role": n.role,
            "address": n.address,
            "pid": n.pid,
            "alive": alive[n.name],
            "serving": serving[n.name],
            "state": n.state,
            "log_file": str(n.log_file),
            "store_dir": str(n.store_dir) if n.store_dir else None,
        }
        for n in cluster.nodes
    ]


# --- commands ----------------------------------------------------------------------------------

DirOpt = Annotated[
    Path, typer.Option("--dir", help="The cluster's directory (data, logs, cluster.json).")
]


def _fail(exc: ClusterError) -> typer.Exit:
    return fail(str(exc), exc.detail)


def _load_existing(root: Path) -> Cluster:
    cluster = load_cluster(root)
    if cluster is None:
        raise ClusterError(
            f"no cluster in {root} (no cluster.json); start one with: rmq cluster up --dir {root}"
        )
    return cluster


@cluster_app.command("up")
def up(
    mode: Annotated[
        str,
        typer.Option(
            help="single, multi-master, async, sync (async/sync: groups broker-a and "
            "broker-b, each a master and a slave) or controller (3 controllers, one group "
            "broker-a of 3 replicas whose roles the controller assigns; the default)."
        ),
    ] = "controller",
    root: DirOpt = Path("rmq-cluster"),
    namesrv_port: Annotated[
        int, typer.Option("--namesrv-port", help="NameServer port; 0 picks a free one.")
    ] = 9876,
    flush: Annotated[str, typer.Option(help="ASYNC_FLUSH or SYNC_FLUSH (every broker).")] = (
        "ASYNC_FLUSH"
    ),
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds each node has to print its ready line.")
    ] = 30.0,
    broker_set: Annotated[
        list[str] | None,
        typer.Option(
            "--broker-set",
            metavar="KEY=VALUE",
            help="A broker.conf setting for every broker (repeatable), e.g. "
            "allAckInSyncStateSet=false; written to D/<node>/broker.toml.",
        ),
    ] = None,
    broker_controller_addrs: Annotated[
        list[str] | None,
        typer.Option(
            "--broker-controller-addrs",
            metavar="NODE=ADDRS",
            help="Controller mode: the controller addresses (a:p;b:p;c:p) one broker node is "
            "given instead of the quorum's, e.g. fault proxies (repeatable).",
        ),
    ] = None,
    controller_base_port: Annotated[
        int | None,
        typer.Option(
            "--controller-base-port",
            help="Controller mode: the quorum listens on this port and the next 5 "
            "(default: free ones).",
        ),
    ] = None,
) -> None:
    """Start a NameServer and the mode's brokers as detached processes; print their addresses."""
    try:
        layout = LayoutOptions(
            broker_settings=tuple(parse_setting(s) for s in broker_set or ()),
            broker_controller_addrs=tuple(
                _node_addrs(item) for item in broker_controller_addrs or ()
            ),
            controller_base_port=controller_base_port,
        )
        if mode not in BROKERS_BY_MODE:
            known = "mode {!r} is not available yet" if mode in LATER_MODES else "unknown mode {!r}"
            raise ClusterError(
                f"{known.format(mode)}; available modes: {', '.join(BROKERS_BY_MODE)}"
            )
        if flush.upper() not in FLUSH_TYPES:
            raise ClusterError(f"--flush must be one of {', '.join(FLUSH_TYPES)}, not {flush!r}")
        if not 0 <= namesrv_port <= 65535:
            raise ClusterError(f"--namesrv-port {namesrv_port} is not a port (0..65535)")
        if timeout <= 0:
            raise ClusterError("--timeout must be positive")
        cluster = cluster_up(
            root.absolute(),
            mode=mode,
            namesrv_port=namesrv_port,
            flush=flush.upper(),
            timeout_s=timeout,
            stop_timeout_s=10.0,
            layout=layout,
        )
    except ClusterError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(ClusterError(f"cannot start the cluster in {root}: {exc}")) from None
    for node in cluster.nodes:
        if node.kind == NAMESRV:
            print(f"{node.name} {node.address}")
        else:
            print(f"{node.name} {node.role} {node.address}")
    err.print(
        f"cluster ({cluster.mode}) running in {cluster.root}; "
        f"stop it with: rmq cluster down --dir {cluster.root}",
        markup=False,
    )


def _node_addrs(text: str) -> tuple[str, str]:
    node, sep, addrs = text.partition("=")
    if not sep or not node.strip() or not addrs.strip():
        raise ClusterError(f"--broker-controller-addrs {text!r} is not NODE=a:p;b:p;c:p")
    return node.strip(), addrs.strip()


@cluster_app.command("status")
def status(
    root: DirOpt = Path("rmq-cluster"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
    ping: Annotated[
        bool, typer.Option("--ping/--no-ping", help="Ask the NameServer who is registered.")
    ] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Deadline of the ping (s).")] = 3.0,
) -> None:
    """Show every node: role, address, pid, whether it runs and (by default) serves."""
    try:
        cluster = _load_existing(root.absolute())
    except ClusterError as exc:
        raise _fail(exc) from None
    rows = node_status(cluster, ping=ping, timeout_s=timeout)
    if as_json:
        doc = {"dir": str(cluster.root), "mode": cluster.mode, "state": cluster.state}
        print(json.dumps({**doc, "nodes": rows}, indent=2))
        return

    def yes_no(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "no")

    table = Table("#Name", "#Role", "#Address", "#PID", "#Alive", "#Serving", box=None)
    for row in rows:
        table.add_row(
            row["name"],
            row["role"],
            row["address"] or "-",
            str(row["pid"]),
            yes_no(row["alive"]),
            yes_no(row["serving"]),
        )
    _out.print(f"cluster ({cluster.mode}) in {cluster.root}: {cluster.state}", markup=False)
    _out.print(table)


@cluster_app.command("down")
def down(
    root: DirOpt = Path("rmq-cluster"),
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = 10.0,
) -> None:
    """Stop every node (brokers first, the NameServer last) and mark the cluster stopped."""
    root = root.absolute()
    try:
        cluster = _load_existing(root)
        with _dir_lock(root):
            cluster = _load_existing(root)  # what an up that held the lock may have written
            outcome = stop_cluster(cluster, timeout)
            stuck = [name for name, what in outcome.items() if what.startswith("STILL")]
            cluster.state = "running" if stuck else "stopped"
            cluster.save()
    except ClusterError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        raise _fail(ClusterError(f"cannot stop the cluster in {root}: {exc}")) from None
    for node in cluster.nodes:
        pid = f" (pid {node.pid})" if node.pid else ""
        print(f"{node.name}{pid}: {outcome[node.name]}")
    if stuck:
        raise _fail(ClusterError(f"{', '.join(stuck)} survived SIGKILL"))


# --- shared with ``rmq quorum`` (cli/controller_cmds.py) ------------------------------

start_node = _start
dir_lock = _dir_lock
refuse_running = _refuse_running

# --- shared with ``rmq chaos`` (scenarios/harness.py restarts single nodes) -----------------

spawn_node = _spawn
read_output = _read_from
log_tail = _tail
