"""``rmq cluster up|status|down``: a local cluster of real, detached processes under one directory.

Rules:
- The processes, their record ``D/cluster.json``, the directory lock, ready lines and
  stopping are ``launcher/``'s (its ``detached.py`` states how a node is started, found
  again and stopped); this module composes them into the commands.
- ``up`` starts the mode's table (``launcher/plans.py``) in order: controller mode's
  quorum first (``cli/controller_cmds.py`` writes its configs and waits for a leader;
  each node exports its metrics on a free port), then the NameServer, then the brokers,
  then ``rmq proxy`` (gRPC for RocketMQ 5 clients, a free port unless ``--proxy-port``;
  ``--no-proxy`` skips it, and so does a missing ``proxy`` extra, said in one line), then
  ``rmq dashboard`` (node ``dashboard``, in the root namespace; ``--no-dashboard``
  skips it), whose URL is the last line printed. On any failure it stops what it started.
- Every wait has a deadline: a ready line (30 s by default), a stop (10 s, then SIGKILL).
- ``up`` and ``down`` hold ``D/cluster.lock``, so two of them never race on one directory.
- Errors are one line (``error: ...``) with exit status 1, never a traceback; a node that
  fails to start adds the tail of its log after that line.
- A mode's layout changes only through ``LayoutOptions`` (``--broker-set``,
  ``--broker-controller-addrs``, ``--controller-base-port``, ``--netns``), checked before
  anything starts (broker settings by the broker's own config code); without them ``up``
  starts exactly the mode's table.
- ``--netns`` (root only; one ``error:`` line otherwise): every node on its own network
  host (``launcher/netns.py``: a namespace and an address on a bridge the root namespace
  shares), binding and advertising that address (brokerIP1), controllers peering by
  address on RocketMQ's fixed ports. The namespaces, links and bridge are recorded in
  ``D/netns.json`` before they are made and removed by a failed ``up`` and by ``down``.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any

import attrs
import trio
import typer
from rich.table import Table

from cli.controller_cmds import config_paths, start_controllers, write_quorum
from cli.output import err, out
from cli.records import StopTimeoutOpt, cluster_fail, down_recorded
from cli.security import ClusterSecurity
from client import admin
from controller.config import write_toml
from launcher import netns
from launcher.command import rmq_command
from launcher.detached import read_output, refuse_running, start_node, starting
from launcher.netns import NetPlan
from launcher.pids import is_alive
from launcher.plans import (
    BROKERS_BY_MODE,
    CONTROLLER_NODES,
    DASHBOARD_PORT,
    FLUSH_TYPES,
    LATER_MODES,
    broker_node,
    dashboard_node,
    namesrv_node,
    node_names,
    proxy_node,
    toml_value,
)
from launcher.ready import CONTROLLER, DASHBOARD, NAMESRV, PROXY, parse_metrics_address
from launcher.record import Cluster, ClusterError, Node, atomic_write, dir_lock, load_cluster
from protocol.errors import RocketError
from protocol.route import ClusterInfo
from protocol.rpc import open_client

cluster_app = typer.Typer(
    no_args_is_help=True, help="Start, inspect and stop a local cluster of real processes."
)

# Wide enough for the status table when piped.
_out = out

#: Broker settings ``up`` passes as flags itself: ``--broker-set`` may not change them.
_FLAG_KEYS = frozenset(
    {
        "brokerName", "broker_name", "brokerId", "broker_id", "brokerRole", "broker_role",
        "namesrvAddr", "namesrv_addrs", "listenPort", "listen_port", "storePathRootDir",
        "store_dir", "flushDiskType", "flush_disk_type", "controllerAddr", "controller_addrs",
        # --cluster-secret and --tls set these (cli/security.py)
        "clusterSecretFile", "cluster_secret_file", "tlsServerCertPath", "tls_cert_file",
        "tlsServerKeyPath", "tls_key_file", "tlsServerTrustCertPath", "tls_ca_file",
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
    netns: bool = False
    #: Also start ``rmq proxy`` (gRPC for RocketMQ 5 clients) on this port (0: a free one).
    proxy_port: int | None = None

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
        if self.proxy_port is not None and not 0 <= self.proxy_port <= 65535:
            raise ClusterError(f"--proxy-port {self.proxy_port} is not a port (0..65535)")
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


def write_broker_settings(path: Path, settings: tuple[tuple[str, Any], ...]) -> None:
    """Write ``settings`` as a ``[broker]`` TOML table (atomically)."""
    lines = ["[broker]", *(f"{key} = {toml_value(value)}" for key, value in settings)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, ("\n".join(lines) + "\n").encode())


# --- up ----------------------------------------------------------------------------------------


def _start_controllers(
    cluster: Cluster,
    timeout_s: float,
    base_port: int | None,
    hosts: NetPlan | None,
    security: ClusterSecurity,
) -> str:
    """Controller mode: write a fresh quorum's configs, start it, wait for a leader; the
    controllers' addresses as ``a;b;c`` (on ``base_port`` .. + 5 when given; each on its
    own host of ``hosts`` when given)."""
    root = cluster.root
    if config_paths(root):
        raise ClusterError(f"{root} already holds a controller quorum; use a fresh --dir")
    ids = [f"n{i}" for i in range(CONTROLLER_NODES)]
    configs = write_quorum(
        root,
        nodes=CONTROLLER_NODES,
        host="127.0.0.1",
        base_port=base_port,
        hosts=[hosts.host(i).address for i in ids] if hosts else (),
        extra=security.controller_fields(),
    )
    # Each node serves its metrics on a free port (its ready output names it): the
    # dashboard reads elections and failovers there.
    for i, (path, written) in enumerate(configs):
        config = attrs.evolve(written, metrics_exporter_type="PROM", metrics_prom_exporter_port=0)
        write_toml(path, config)
        configs[i] = (path, config)
    netns_of = {i: hosts.host(i).namespace for i in ids} if hosts else None
    start_controllers(cluster, configs, timeout_s, security.client_tls(), netns_of)
    return ";".join(config.remoting_address for _, config in configs)


def _metrics_addresses(nodes: list[Node]) -> list[str]:
    """The metrics address each node printed after its ready line (empty when one did not)."""
    found = []
    for node in nodes:
        address = parse_metrics_address(read_output(node.stdout_file, 0))
        if address is None:
            return []
        found.append(address)
    return found


def _start_dashboard(
    cluster: Cluster, port: int, namesrv: str, controller_addrs: str, timeout_s: float
) -> None:
    controllers = [n for n in cluster.nodes if n.kind == CONTROLLER]
    node = dashboard_node(
        cluster.root,
        port=port,
        namesrv_addr=namesrv,
        controllers=[a for a in controller_addrs.split(";") if a],
        controller_metrics=_metrics_addresses(controllers),
        rmq=rmq_command(),
    )
    try:
        start_node(cluster, node, timeout_s)
    except ClusterError as exc:
        raise ClusterError(
            "the dashboard did not start (--dashboard-port 0 picks a free port, "
            f"--no-dashboard starts none): {exc}",
            exc.detail,
        ) from None


def _on_host(node: Node, hosts: NetPlan | None) -> Node:
    if hosts is not None:
        node.netns = hosts.host(node.name).namespace
    return node


def cluster_up(
    root: Path,
    *,
    mode: str,
    namesrv_port: int,
    flush: str,
    timeout_s: float,
    stop_timeout_s: float,
    layout: LayoutOptions | None = None,
    dashboard_port: int | None = None,
    secret: bool = True,
    tls: bool = False,
) -> Cluster:
    """Start the cluster (and ``rmq dashboard`` on ``dashboard_port``, unless None); on any
    failure stop what was started and raise ``ClusterError``.

    ``secret``: a fresh cluster secret in ``D/cluster.secret`` that every node uses;
    ``tls``: a test CA and certificates in ``D/tls/``, every port TLS only (no dashboard:
    it would need the client certificate settings too)."""
    layout = layout or LayoutOptions()
    layout.check(mode)
    root.mkdir(parents=True, exist_ok=True)
    with dir_lock(root):
        refuse_running(root)
        if tls and layout.netns:
            raise ClusterError(
                "--tls with --netns is not supported yet (the test certificates name 127.0.0.1)"
            )
        now = datetime.datetime.now(datetime.UTC)
        security = ClusterSecurity.create(root, secret=secret, tls=tls, now=now)
        hosts = _make_hosts(root, mode) if layout.netns else None
        try:
            return _start_all(
                root, mode, namesrv_port, flush, timeout_s, stop_timeout_s, layout, hosts,
                security, dashboard_port=dashboard_port,
            )  # fmt: skip
        except BaseException:
            if hosts is not None:
                netns.teardown(root)
            raise


def _make_hosts(root: Path, mode: str) -> NetPlan:
    try:
        return netns.setup(root, node_names(mode))
    except netns.NetnsError as exc:
        raise ClusterError(f"--netns: {exc}") from None


def _start_all(
    root: Path,
    mode: str,
    namesrv_port: int,
    flush: str,
    timeout_s: float,
    stop_timeout_s: float,
    layout: LayoutOptions,
    hosts: NetPlan | None,
    security: ClusterSecurity,
    *,
    dashboard_port: int | None = None,
) -> Cluster:
    """``cluster_up``'s starts, under its lock (and on ``hosts`` when given)."""
    rmq = rmq_command()
    settings = layout.broker_settings + security.broker_settings()
    with starting(Cluster(mode=mode, root=root, flush=flush), stop_timeout_s) as cluster:
        controller_addrs = ""
        if mode == "controller":
            controller_addrs = _start_controllers(
                cluster, timeout_s, layout.controller_base_port, hosts, security
            )
        ip = hosts.host(NAMESRV).address if hosts else None
        namesrv = namesrv_node(root, namesrv_port, rmq=rmq, host=ip)
        namesrv.argv += security.namesrv_args()
        namesrv_ready = start_node(cluster, _on_host(namesrv, hosts), timeout_s)
        for plan in BROKERS_BY_MODE[mode]:
            config_file = None
            if settings:
                config_file = root / plan.name / BROKER_CONFIG_NAME
                write_broker_settings(config_file, settings)
            broker = broker_node(
                root,
                plan,
                namesrv_addr=namesrv_ready.address,
                flush=flush,
                controller_addrs=layout.controller_addrs_of(plan.name, controller_addrs),
                config_file=config_file,
                rmq=rmq,
                host=hosts.host(plan.name).address if hosts else None,
            )
            start_node(cluster, _on_host(broker, hosts), timeout_s)
        if layout.proxy_port is not None:
            proxy = proxy_node(root, layout.proxy_port, namesrv_addr=namesrv_ready.address, rmq=rmq)
            proxy.argv += security.proxy_args()
            start_node(cluster, proxy, timeout_s)
        if dashboard_port is not None:
            _start_dashboard(
                cluster, dashboard_port, namesrv_ready.address, controller_addrs, timeout_s
            )
    return cluster


# --- status ------------------------------------------------------------------------------------


def _ping_namesrv(
    address: str, timeout_s: float, tls: ssl.SSLContext | None = None
) -> ClusterInfo | None:
    """GET_BROKER_CLUSTER_INFO from the NameServer, or None when it does not answer in time."""

    async def ask() -> ClusterInfo | None:
        with trio.move_on_after(timeout_s):
            async with open_client(
                name="rmq-cluster", default_timeout_s=timeout_s, tls=tls or False
            ) as client:
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
    info = _ping_namesrv(namesrv.address, timeout_s, ClusterSecurity.of(cluster.root).client_tls())
    serving[namesrv.name] = info is not None
    if info is None:
        return serving
    for node in cluster.nodes:
        if node.kind not in (NAMESRV, DASHBOARD, PROXY):
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
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Make a test CA and certificates in D/tls/ and run every port TLS only "
            "(clients: RMQ_TLS=1 RMQ_TLS_CA_FILE=D/tls/ca.pem).",
        ),
    ] = False,
    cluster_secret: Annotated[
        bool,
        typer.Option(
            "--cluster-secret/--no-cluster-secret",
            help="Brokers authenticate to NameServers, controllers and each other with a "
            "fresh secret in D/cluster.secret (mode 0600).",
        ),
    ] = True,
    use_netns: Annotated[
        bool,
        typer.Option(
            "--netns",
            help="Root only: each node on its own network host (a network namespace with "
            "its own 10.213.N.x address on a bridge the root namespace shares); "
            "rmq cluster down removes them.",
        ),
    ] = False,
    dashboard_port: Annotated[
        int | None,
        typer.Option(
            "--dashboard-port",
            help=f"Port of the cluster's web dashboard (default {DASHBOARD_PORT}, or a free "
            "one with --namesrv-port 0; 0 picks a free one).",
        ),
    ] = None,
    no_dashboard: Annotated[
        bool, typer.Option("--no-dashboard", help="Start no dashboard.")
    ] = False,
    proxy_port: Annotated[
        int | None,
        typer.Option(
            "--proxy-port",
            help="Port of the cluster's rmq proxy (gRPC for RocketMQ 5 clients; 8081 by "
            "convention; default: a free one).",
        ),
    ] = None,
    no_proxy: Annotated[bool, typer.Option("--no-proxy", help="Start no gRPC proxy.")] = False,
) -> None:
    """Start a NameServer and the mode's brokers as detached processes; print their addresses."""
    if not no_proxy and not proxy_extra_installed():
        err.print(
            "proxy: not started: the 'proxy' extra is not installed "
            "(pip install 'trio-rocketmq[proxy]')",
            markup=False,
        )
        no_proxy = True
    try:
        layout = LayoutOptions(
            broker_settings=tuple(parse_setting(s) for s in broker_set or ()),
            broker_controller_addrs=tuple(
                _node_addrs(item) for item in broker_controller_addrs or ()
            ),
            controller_base_port=controller_base_port,
            netns=use_netns,
            proxy_port=None if no_proxy else (proxy_port if proxy_port is not None else 0),
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
        if dashboard_port is None:
            dashboard_port = 0 if namesrv_port == 0 else DASHBOARD_PORT
        if not 0 <= dashboard_port <= 65535:
            raise ClusterError(f"--dashboard-port {dashboard_port} is not a port (0..65535)")
        cluster = cluster_up(
            root.absolute(),
            mode=mode,
            namesrv_port=namesrv_port,
            flush=flush.upper(),
            timeout_s=timeout,
            stop_timeout_s=10.0,
            layout=layout,
            dashboard_port=None if no_dashboard or tls else dashboard_port,
            secret=cluster_secret,
            tls=tls,
        )
    except ClusterError as exc:
        raise cluster_fail(exc) from None
    except OSError as exc:
        raise cluster_fail(ClusterError(f"cannot start the cluster in {root}: {exc}")) from None
    for node in cluster.nodes:
        if node.kind == NAMESRV:
            print(f"{node.name} {node.address}")
        elif node.kind == DASHBOARD:
            print(f"{node.name} http://{node.address}/")
        else:
            print(f"{node.name} {node.role} {node.address}")
    err.print(
        f"cluster ({cluster.mode}) running in {cluster.root}; "
        f"stop it with: rmq cluster down --dir {cluster.root}",
        markup=False,
    )
    if tls:
        ca = cluster.root / "tls" / "ca.pem"
        err.print(f"every port is TLS only; clients: RMQ_TLS=1 RMQ_TLS_CA_FILE={ca}", markup=False)


def proxy_extra_installed() -> bool:
    """Whether ``rmq proxy`` can run here (grpcio and the official client's stubs)."""
    return all(importlib.util.find_spec(name) is not None for name in ("grpc", "rocketmq"))


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
        raise cluster_fail(exc) from None
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
def down(root: DirOpt = Path("rmq-cluster"), timeout: StopTimeoutOpt = 10.0) -> None:
    """Stop every node (brokers first, the NameServer last) and mark the cluster stopped."""
    root = root.absolute()
    try:
        _load_existing(root)  # "no cluster in D" before any lock file is created there
    except ClusterError as exc:
        raise cluster_fail(exc) from None
    # Loaded again under the lock: what an up that held it may have written.
    down_recorded(root, _load_existing, timeout, "cluster")
