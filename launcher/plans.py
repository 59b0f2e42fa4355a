"""Node plans: which processes a deployment mode runs, and each one's command line.

Rules:
- Modes are data (DESIGN.md §2): ``BROKERS_BY_MODE`` lists each mode's brokers in start
  order; ``rmq cluster up`` accepts exactly its keys. A controller-mode cluster also runs a
  quorum of ``CONTROLLER_NODES`` controllers (``quorum_plan``), started first.
- A node's directory is ``D/<node>``; its stdout goes to ``stdout.log`` (where the ready
  line is read), its stderr to ``stderr.log``, a broker's store to ``store/``.
- Every server binds ``--port 0`` unless told a port, so nothing here picks ports;
  a restarted node is pinned to the ports it had (``restart_argv``).
- Pure: paths and argvs are computed, never touched; how to run ``rmq`` comes in as
  ``rmq`` (``launcher.command.rmq_command()``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import attrs

from launcher.ready import BROKER, CONTROLLER, DASHBOARD, NAMESRV
from launcher.record import Node

#: brokerRole of a controller-mode broker: the controller assigns the id and the role.
CONTROLLER_ROLE = "CONTROLLER"
#: Controller mode: nodes of the controller quorum.
CONTROLLER_NODES = 3
FLUSH_TYPES = ("ASYNC_FLUSH", "SYNC_FLUSH")
STDOUT_NAME = "stdout.log"
STDERR_NAME = "stderr.log"
#: ``rmq cluster up``'s dashboard: its port by default (``rmq dashboard``'s), and the page
#: it saves as ``D/dashboard/dashboard.html`` for reports to link after the run.
DASHBOARD_PORT = 8080
DASHBOARD_SNAPSHOT = "dashboard.html"


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


# --- the controller quorum -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ControllerPlan:
    """One node of a controller quorum: its id and the two addresses it listens on."""

    node_id: str
    remoting_address: str
    raft_address: str


def quorum_ports(nodes: int, base_port: int) -> list[int]:
    """The ports of a quorum laid out from ``base_port`` (two per node)."""
    return list(range(base_port, base_port + 2 * nodes))


def quorum_plan(
    *, nodes: int, host: str, ports: Sequence[int], hosts: Sequence[str] = ()
) -> tuple[ControllerPlan, ...]:
    """Node ``n<i>`` listens on ``ports[2i]`` (remoting) and ``ports[2i+1]`` (Raft), on
    ``hosts[i]`` when given (a host per node: network namespaces), else on ``host``."""
    assert len(ports) == 2 * nodes, (nodes, ports)
    assert not hosts or len(hosts) == nodes, (nodes, hosts)
    return tuple(
        ControllerPlan(
            node_id=f"n{i}",
            remoting_address=f"{hosts[i] if hosts else host}:{ports[2 * i]}",
            raft_address=f"{hosts[i] if hosts else host}:{ports[2 * i + 1]}",
        )
        for i in range(nodes)
    )


def node_names(mode: str) -> list[str]:
    """Every node of ``mode`` in start order: the controllers, the NameServer, the brokers."""
    controllers = [f"n{i}" for i in range(CONTROLLER_NODES)] if mode == CONTROLLER else []
    return [*controllers, NAMESRV, *(plan.name for plan in BROKERS_BY_MODE[mode])]


# --- nodes ---------------------------------------------------------------------------------


def _node(
    root: Path,
    name: str,
    *,
    kind: str,
    role: str,
    argv: list[str],
    store_dir: Path | None = None,
    broker_role: str | None = None,
    group: str | None = None,
) -> Node:
    node_dir = root / name
    return Node(
        name=name,
        kind=kind,
        role=role,
        argv=argv,
        node_dir=node_dir,
        stdout_file=node_dir / STDOUT_NAME,
        log_file=node_dir / STDERR_NAME,
        store_dir=store_dir,
        broker_role=broker_role,
        group=group,
    )


def namesrv_node(root: Path, port: int, *, rmq: Sequence[str], host: str | None = None) -> Node:
    """The NameServer; ``host``: the address it binds (its own host's), else loopback."""
    bind = ["--host", host] if host is not None else []
    argv = [*rmq, "namesrv", "--port", str(port), *bind, "--log-dir", str(root / NAMESRV)]
    return _node(root, NAMESRV, kind=NAMESRV, role=NAMESRV, argv=argv)


def broker_node(
    root: Path,
    plan: BrokerPlan,
    *,
    namesrv_addr: str,
    flush: str,
    controller_addrs: str = "",
    config_file: Path | None = None,
    rmq: Sequence[str],
    host: str | None = None,
) -> Node:
    """``plan``'s broker; ``config_file`` (broker.conf keys) is passed with ``--config``;
    ``host``: the address it binds and advertises (brokerIP1; its own host's), else
    loopback."""
    store_dir = root / plan.name / "store"
    # Flags win over the file's keys; the caller refuses file keys that a flag sets.
    config = ["--config", str(config_file)] if config_file is not None else []
    # --port 0: the client port and (on a master) the HA port are picked free; a slave
    # learns its master's HA address from the NameServer (the controller, in controller mode).
    if plan.broker_role == CONTROLLER_ROLE:
        identity = ["--controller-addrs", controller_addrs]
    else:
        identity = ["--broker-id", str(plan.broker_id), "--role", plan.broker_role]
    bind = ["--host", host, "--ip", host] if host is not None else []
    argv = [
        *rmq, "broker", "--name", plan.group, *identity, "--port", "0", *bind,
        "-n", namesrv_addr, "--dir", str(store_dir), "--flush", flush, *config,
    ]  # fmt: skip
    return _node(
        root,
        plan.name,
        kind=BROKER,
        role=plan.role,
        broker_role=plan.broker_role,
        group=plan.group,
        argv=argv,
        store_dir=store_dir,
    )


def controller_node(
    root: Path, node_id: str, *, config_file: Path, data_dir: Path, rmq: Sequence[str]
) -> Node:
    """Controller ``node_id`` of a quorum, run from its ``config_file`` (TOML)."""
    argv = [*rmq, "controller", "--config", str(config_file)]
    return _node(root, node_id, kind=CONTROLLER, role=CONTROLLER, argv=argv, store_dir=data_dir)


def dashboard_node(
    root: Path,
    *,
    port: int,
    namesrv_addr: str,
    controllers: Sequence[str] = (),
    controller_metrics: Sequence[str] = (),
    rmq: Sequence[str],
) -> Node:
    """``rmq dashboard`` of the cluster; it saves its page to ``D/dashboard/dashboard.html``."""
    argv = [
        *rmq, "dashboard", "-n", namesrv_addr, "--port", str(port),
        "--snapshot", str(root / DASHBOARD / DASHBOARD_SNAPSHOT),
    ]  # fmt: skip
    if controllers:
        argv += ["--controllers", ";".join(controllers)]
    if controller_metrics and len(controller_metrics) == len(controllers):
        argv += ["--controller-metrics", ";".join(controller_metrics)]
    return _node(root, DASHBOARD, kind=DASHBOARD, role=DASHBOARD, argv=argv)


# --- restarts and settings -----------------------------------------------------------------


def pin_flag(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag VALUE`` set (replaced when present, appended when not)."""
    out = list(argv)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def restart_argv(node: Node, ha_address: str | None) -> list[str]:
    """``node``'s argv pinned to the ports it had, as a restarted server in production
    keeps them: ``--port`` from its address, a broker's ``--ha-port`` from ``ha_address``
    (the last HA address its ready lines named)."""
    argv = list(node.argv)
    if node.address is not None and "--port" in argv:
        argv = pin_flag(argv, "--port", node.address.rpartition(":")[2])
    if ha_address is not None and node.kind != NAMESRV:
        argv = pin_flag(argv, "--ha-port", ha_address.rpartition(":")[2])
    return argv


def toml_value(value: object) -> str:
    """``value`` as TOML (and ``rmq cluster up --broker-set KEY=VALUE``) reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string
