"""``rmq controller`` and ``rmq quorum bootstrap|up|status|down``: the controller quorum.

Rules:
- ``rmq controller --config FILE`` runs one node of a quorum (``controller/config.py``
  TOML); without ``--config`` it runs a single-node quorum (dev only: no failover of the
  controller itself). It prints one ready line, RocketMQ-style, logs to
  ``<data_dir>/logs/controller.log`` and stops cleanly on SIGINT/SIGTERM.
- ``rmq quorum bootstrap --nodes N --dir D`` writes ``D/n<i>/controller.toml`` for every
  node with one freshly generated shared secret (mode 0600), starts the nodes as detached
  processes with ``launcher/`` (so ``D/cluster.json`` records them and ``rmq quorum
  down`` or ``rmq cluster down`` stops them), waits until they agree on a leader, and
  prints the nodes and the controller list brokers take. ``rmq cluster up --mode
  controller`` starts its quorum with the same functions (``write_quorum``,
  ``start_controllers``); this module imports nothing of ``cli/cluster.py``.
- Ports: Raft peers must know each other's ports before any of them starts, so without
  ``--base-port`` free ports are picked by binding port 0 on the host and releasing it.
  Another process can take such a port between the release and the node's own bind: that
  node then fails to start with "cannot bind", bootstrap stops the others and says so,
  and running it again (or with ``--base-port``) picks other ports.
- Every wait has a deadline; errors are one ``error:`` line (plus a log tail), exit 1.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import attrs
import trio
import typer
from rich.table import Table

from cli.output import err, fail, out
from cli.records import StopTimeoutOpt, cluster_fail, down_recorded
from client.admin import ControllerMetadata, get_controller_metadata
from controller.config import ConfigError, ControllerConfig, Peer, load_toml, write_toml
from launcher.command import rmq_command
from launcher.detached import refuse_running, start_node, starting
from launcher.pids import is_alive
from launcher.plans import controller_node, quorum_plan, quorum_ports
from launcher.ports import pick_free_ports
from launcher.ready import CONTROLLER, controller_ready_line
from launcher.record import Cluster, ClusterError, dir_lock, load_cluster
from protocol.errors import RocketError
from protocol.rpc import RemotingClient, open_client

if TYPE_CHECKING:
    from controller.server import ControllerServer

quorum_app = typer.Typer(
    no_args_is_help=True, help="Bootstrap, start, inspect and stop a controller quorum."
)

CONFIG_NAME = "controller.toml"
#: RocketMQ's default controller port.
DEFAULT_PORT = 9878
_LEADER_POLL_S = 0.1


def ready_line(config: ControllerConfig) -> str:
    peers = {p.node_id: p.remoting_address for p in config.peers.values()}
    return controller_ready_line(
        node_id=config.node_id,
        address=config.remoting_address,
        raft_address=config.raft_address,
        peers=peers,
    )


def quorum_configs(
    root: Path,
    *,
    nodes: int,
    host: str,
    base_port: int | None,
    hosts: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> list[ControllerConfig]:
    """One config per node (n0, n1, ...), sharing a fresh secret; data under ``root/n<i>``.
    ``hosts``: an address per node (each on its own host, all on ``base_port`` and the
    next, RocketMQ's 9878 by default: no port of another host can be probed from here)."""
    if hosts:  # each host has its own ports: all listen on the same two
        ports = [base_port or DEFAULT_PORT, (base_port or DEFAULT_PORT) + 1] * nodes
    elif base_port is not None:
        ports = quorum_ports(nodes, base_port)
    else:
        ports = pick_free_ports(2 * nodes, host)
    peers = {
        p.node_id: Peer(
            node_id=p.node_id, remoting_address=p.remoting_address, raft_address=p.raft_address
        )
        for p in quorum_plan(nodes=nodes, host=host, ports=ports, hosts=hosts)
    }
    password = secrets.token_urlsafe(32)
    return [
        ControllerConfig(
            node_id=node_id,
            peers=peers,
            password=password,
            data_dir=root / node_id / "data",
            **(extra or {}),  # cluster secret and TLS files (cli/security.py)
        )
        for node_id in peers
    ]


# --- rmq controller ------------------------------------------------------------------------------


def _single_node_config(
    data_dir: Path, host: str, port: int, raft_port: int | None
) -> ControllerConfig:
    if port == 0 or raft_port == 0 or raft_port is None:
        free = pick_free_ports(2, host)
        port = port or free[0]
        raft_port = raft_port or free[1]
    peer = Peer(node_id="n0", remoting_address=f"{host}:{port}", raft_address=f"{host}:{raft_port}")
    return ControllerConfig(
        node_id="n0",
        peers={"n0": peer},
        password=secrets.token_urlsafe(32),  # nobody else joins a single-node quorum
        data_dir=data_dir,
    )


def controller_command(
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Node config (TOML, as rmq quorum bootstrap writes)."),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option("--dir", help="Without --config: data directory.")
    ] = Path("controller-data"),
    host: Annotated[str, typer.Option(help="Without --config: address to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Without --config: remoting port; 0 picks a free one.")
    ] = DEFAULT_PORT,
    raft_port: Annotated[
        int | None,
        typer.Option("--raft-port", help="Without --config: Raft port (default: a free one)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus metrics on this port (0: a free one); overrides the "
            "config's metricsExporterType / metricsPromExporterPort.",
        ),
    ] = None,
    acl_file: Annotated[
        Path | None,
        typer.Option(
            "--acl-file", help="Turn ACL 1.0 on with these accounts (overrides aclFilePath)."
        ),
    ] = None,
) -> None:
    """Run a controller node (prints one ready line; stops cleanly on SIGINT/SIGTERM).

    Without --config: a single-node quorum, for development.
    """
    from cli.security import warn_if_others_read
    from cli.serving import configure_logging, run_server, set_node_name
    from controller.server import ControllerServer
    from protocol.acl import AclConfigError
    from protocol.tls import TlsError
    from protocol.trust import SecretError

    try:
        if config_file is not None:
            config = load_toml(config_file)
        else:
            config = _single_node_config(data_dir.absolute(), host, port, raft_port)
        if metrics_port is not None:
            config = attrs.evolve(
                config, metrics_exporter_type="PROM", metrics_prom_exporter_port=metrics_port
            )
        if acl_file is not None:
            config = attrs.evolve(config, acl_enable=True, acl_file_path=str(acl_file.absolute()))
    except ConfigError as exc:
        raise fail(str(exc)) from None
    node = f"controller {config.node_id} {config.remoting_address}"
    configure_logging(
        node=node, log_file=config.data_dir / "logs" / "controller.log", level=log_level
    )
    if config_file is not None:
        warn_if_others_read(config_file, "controller config (it holds the quorum's secret)")
    try:
        server = ControllerServer(config)
    except (SecretError, TlsError, AclConfigError) as exc:
        raise fail(str(exc)) from None

    async def serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            set_node_name(node)
            task_status.started(
                ready_line(config) + await start_controller_exporter(nursery, server)
            )

    try:
        run_server(serve)
    except OSError as exc:
        raise fail(f"cannot start controller {config.node_id}: {exc.strerror or exc}") from None


async def start_controller_exporter(nursery: trio.Nursery, server: ControllerServer) -> str:
    """Serve the node's metrics when its config says PROM: "\n" + the metrics line, else ""."""
    from cli.metrics_http import start_exporter

    config = server.config
    if config.metrics_exporter_type != "PROM":
        return ""
    host = config.remoting_address.rpartition(":")[0]
    port = config.metrics_prom_exporter_port
    return "\n" + await start_exporter(nursery, server.metrics.registry, host=host, port=port)


# --- quorum processes ------------------------------------------------------------------------------


def config_paths(root: Path) -> list[Path]:
    """The node configs of the quorum in ``root`` (n0, n1, ..., n10 in that order)."""
    return sorted(root.glob(f"n*/{CONFIG_NAME}"), key=lambda p: (len(p.parent.name), p.parent.name))


def write_quorum(
    root: Path,
    *,
    nodes: int,
    host: str,
    base_port: int | None,
    hosts: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> list[tuple[Path, ControllerConfig]]:
    """Write a new quorum's node configs under ``root``; each config with its path."""
    written = []
    configs = quorum_configs(
        root, nodes=nodes, host=host, base_port=base_port, hosts=hosts, extra=extra
    )
    for config in configs:
        path = root / config.node_id / CONFIG_NAME
        write_toml(path, config)
        written.append((path, config))
    return written


async def _metadata(
    addrs: list[str], timeout_s: float, tls: ssl.SSLContext | None = None
) -> list[ControllerMetadata | None]:
    """GetMetaData of every address (None for one that did not answer)."""
    found: list[ControllerMetadata | None] = [None] * len(addrs)

    async def one(i: int, client: RemotingClient) -> None:
        with contextlib.suppress(RocketError):  # no answer: None
            found[i] = await get_controller_metadata(client, addrs[i], timeout_s=timeout_s)

    async with (
        open_client(name="rmq-quorum", default_timeout_s=timeout_s, tls=tls) as client,
        trio.open_nursery() as nursery,
    ):
        for i, addr in enumerate(addrs):
            if addr:
                nursery.start_soon(one, i, client)
    return found


def wait_for_leader(
    addrs: list[str], timeout_s: float, tls: ssl.SSLContext | None = None
) -> ControllerMetadata:
    """The leader's GetMetaData once a node says it leads and a majority name it."""

    async def poll() -> ControllerMetadata:
        with trio.fail_after(timeout_s):
            while True:
                answers = [m for m in await _metadata(addrs, 1.0, tls) if m is not None]
                for meta in answers:
                    named = sum(1 for m in answers if m.leader_address == meta.address)
                    if meta.is_leader and named > len(addrs) // 2:
                        return meta
                await trio.sleep(_LEADER_POLL_S)

    try:
        return trio.run(poll)
    except trio.TooSlowError:
        raise ClusterError(
            f"the controllers at {';'.join(addrs)} agreed on no leader within {timeout_s:g} s"
        ) from None


def start_controllers(
    cluster: Cluster,
    configs: list[tuple[Path, ControllerConfig]],
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
    netns_of: Mapping[str, str] | None = None,
) -> ControllerMetadata:
    """Start a node per (config file, config) into ``cluster``'s record; wait for a leader.
    ``netns_of``: node id -> the network namespace it runs in."""
    rmq = rmq_command()
    for path, config in configs:
        node = controller_node(
            cluster.root, config.node_id, config_file=path, data_dir=config.data_dir, rmq=rmq
        )
        node.netns = (netns_of or {}).get(config.node_id)
        start_node(cluster, node, timeout_s)
    return wait_for_leader([c.remoting_address for _, c in configs], timeout_s, tls)


def start_quorum(
    root: Path, paths: list[Path], *, timeout_s: float, stop_timeout_s: float
) -> tuple[Cluster, list[ControllerConfig], ControllerMetadata]:
    """Start every node of ``paths`` and wait for a leader; on any failure stop what was
    started (the caller holds the directory lock)."""
    configs = []
    for path in paths:
        try:
            configs.append(load_toml(path))
        except ConfigError as exc:
            raise ClusterError(str(exc)) from None
    with starting(Cluster(mode="quorum", root=root), stop_timeout_s) as cluster:
        leader = start_controllers(cluster, list(zip(paths, configs, strict=True)), timeout_s)
    return cluster, configs, leader


def bootstrap_quorum(
    root: Path,
    *,
    nodes: int,
    host: str,
    base_port: int | None,
    timeout_s: float,
    stop_timeout_s: float = 10.0,
) -> tuple[Cluster, list[ControllerConfig], ControllerMetadata]:
    """Write the node configs of a new quorum under ``root`` and start it."""
    root.mkdir(parents=True, exist_ok=True)
    with dir_lock(root):
        refuse_running(root)
        if config_paths(root):
            raise ClusterError(
                f"{root} already holds a controller quorum; start it with: "
                f"rmq quorum up --dir {root} (or bootstrap into an empty directory)"
            )
        written = write_quorum(root, nodes=nodes, host=host, base_port=base_port)
        paths = [path for path, _ in written]
        return start_quorum(root, paths, timeout_s=timeout_s, stop_timeout_s=stop_timeout_s)


def _print_quorum(configs: list[ControllerConfig], leader: ControllerMetadata) -> None:
    for c in configs:
        role = "leader" if c.remoting_address == leader.address else "follower"
        print(f"{c.node_id} {role} {c.remoting_address} raft={c.raft_address}")
    print(f"controllers {configs[0].controller_addrs}")


# --- rmq quorum ... ------------------------------------------------------------------------------

DirOpt = Annotated[Path, typer.Option("--dir", help="The quorum's directory (configs, data).")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds for each node's ready line and the leader.")
]


@quorum_app.command("bootstrap")
def bootstrap(
    nodes: Annotated[int, typer.Option("--nodes", help="Number of controllers: 3 or 5.")] = 3,
    root: DirOpt = Path("rmq-quorum"),
    host: Annotated[str, typer.Option(help="Address every node binds.")] = "127.0.0.1",
    base_port: Annotated[
        int | None,
        typer.Option(
            "--base-port",
            help="Node i listens on BASE+2i (remoting) and BASE+2i+1 (Raft); default: free ports.",
        ),
    ] = None,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Write the configs (with a fresh shared secret) of an N-node quorum and start it."""
    try:
        if nodes < 1 or nodes % 2 == 0 or nodes > 9:
            raise ClusterError(f"--nodes must be odd, from 1 to 9 (3 or 5 usually), not {nodes}")
        if base_port is not None and not 0 < base_port <= 65535 - 2 * nodes:
            raise ClusterError(f"--base-port {base_port} leaves no room for {2 * nodes} ports")
        if timeout <= 0:
            raise ClusterError("--timeout must be positive")
        _, configs, leader = bootstrap_quorum(
            root.absolute(), nodes=nodes, host=host, base_port=base_port, timeout_s=timeout
        )
    except ClusterError as exc:
        raise cluster_fail(exc) from None
    except OSError as exc:
        raise cluster_fail(ClusterError(f"cannot bootstrap the quorum in {root}: {exc}")) from None
    _print_quorum(configs, leader)
    err.print(
        f"controller quorum ({nodes} nodes) running in {root.absolute()}; leader "
        f"{leader.leader_id}; stop it with: rmq quorum down --dir {root.absolute()}",
        markup=False,
    )


@quorum_app.command("up")
def up(root: DirOpt = Path("rmq-quorum"), timeout: TimeoutOpt = 30.0) -> None:
    """Start a bootstrapped quorum again (its configs and Raft data are kept)."""
    root = root.absolute()
    try:
        with dir_lock(root):
            refuse_running(root)
            paths = config_paths(root)
            if not paths:
                raise ClusterError(
                    f"no controller configs in {root}; create a quorum with: "
                    f"rmq quorum bootstrap --dir {root}"
                )
            _, configs, leader = start_quorum(root, paths, timeout_s=timeout, stop_timeout_s=10.0)
    except ClusterError as exc:
        raise cluster_fail(exc) from None
    except OSError as exc:
        raise cluster_fail(ClusterError(f"cannot start the quorum in {root}: {exc}")) from None
    _print_quorum(configs, leader)


def _load_quorum(root: Path) -> Cluster:
    cluster = load_cluster(root)
    if cluster is None or not any(n.kind == CONTROLLER for n in cluster.nodes):
        raise ClusterError(
            f"no controller quorum in {root}; create one with: rmq quorum bootstrap --dir {root}"
        )
    return cluster


@quorum_app.command("status")
def status(
    root: DirOpt = Path("rmq-quorum"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Deadline of each ask (s).")] = 3.0,
) -> None:
    """Show every node: address, pid, whether it runs, and who it says leads."""
    try:
        cluster = _load_quorum(root.absolute())
    except ClusterError as exc:
        raise cluster_fail(exc) from None
    nodes = [n for n in cluster.nodes if n.kind == CONTROLLER]
    addrs = [n.address or "" for n in nodes]
    answers = trio.run(_metadata, addrs, timeout)
    rows: list[dict[str, Any]] = [
        {
            "name": n.name,
            "address": n.address,
            "pid": n.pid,
            "alive": is_alive(n),
            "is_leader": meta.is_leader if meta else None,
            "leader": meta.leader_id if meta else None,
        }
        for n, meta in zip(nodes, answers, strict=True)
    ]
    if as_json:
        print(json.dumps({"dir": str(cluster.root), "nodes": rows}, indent=2))
        return
    table = Table("#Node", "#Address", "#PID", "#Alive", "#Role", "#Leader", box=None)
    for row in rows:
        role = "-" if row["is_leader"] is None else ("leader" if row["is_leader"] else "follower")
        table.add_row(
            row["name"],
            row["address"] or "-",
            str(row["pid"]),
            "yes" if row["alive"] else "no",
            role,
            row["leader"] or "-",
        )
    out.print(table)


@quorum_app.command("down")
def down(root: DirOpt = Path("rmq-quorum"), timeout: StopTimeoutOpt = 10.0) -> None:
    """Stop every node of the quorum (its configs and data stay for rmq quorum up)."""
    down_recorded(root.absolute(), _load_quorum, timeout, "quorum")
