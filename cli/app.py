"""``rmq``: run servers, operate a cluster, administer it (typer)."""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import trio
import typer

from cli.admin import admin_app
from cli.bench_cmds import bench_app
from cli.chaos_cmds import chaos_app
from cli.cluster import cluster_app
from cli.controller_cmds import controller_command, quorum_app
from cli.dashboard_cmd import dashboard_command
from cli.demo_cmd import demo_command
from cli.output import fail
from cli.proxy_cmd import proxy_command

MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="Serve Prometheus metrics on this port (RocketMQ's metricsPromExporterPort, "
        "5557 by convention; 0 picks a free one). Off by default, as in RocketMQ.",
    ),
]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(admin_app, name="admin")
app.add_typer(cluster_app, name="cluster")
app.add_typer(bench_app, name="bench")
app.add_typer(quorum_app, name="quorum")
app.add_typer(chaos_app, name="chaos")
app.command("controller")(controller_command)
app.command("demo")(demo_command)
app.command("dashboard")(dashboard_command)
app.command("proxy")(proxy_command)


def _version_callback(value: bool) -> None:
    if value:
        print(f"rmq (trio-rocketmq) {package_version('trio-rocketmq')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """trio-rocketmq: a lightweight RocketMQ-compatible messaging system."""


# --- servers -----------------------------------------------------------------------------


@app.command()
def namesrv(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind; 0 picks a free one.")] = 9876,
    acl_enable: Annotated[
        bool,
        typer.Option("--acl-enable", help="ACL 1.0: refuse requests not signed by an account."),
    ] = False,
    acl_file: Annotated[
        Path | None,
        typer.Option("--acl-file", help="ACL accounts (RocketMQ's plain_acl.yml); turns ACL on."),
    ] = None,
    log_dir: Annotated[
        Path | None, typer.Option("--log-dir", help="Also log to LOG_DIR/namesrv.log.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
    enable_controller: Annotated[
        bool,
        typer.Option("--enable-controller", help="Also run a controller node in this process."),
    ] = False,
    controller_config: Annotated[
        Path | None,
        typer.Option("--controller-config", help="The embedded controller's config (TOML)."),
    ] = None,
    metrics_port: MetricsPortOpt = None,
    cluster_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--cluster-secret-file",
            help="Brokers must sign REGISTER_BROKER/UNREGISTER_BROKER with this secret.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="TLS only: certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="TLS: private key (PEM).")
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="TLS: CA (PEM) client certificates chain to.")
    ] = None,
    tls_verify_client: Annotated[
        bool, typer.Option("--tls-verify-client", help="TLS: refuse clients without a cert.")
    ] = False,
) -> None:
    """Run a NameServer (prints one ready line with its address; stops on SIGINT/SIGTERM).

    With --enable-controller it also runs a controller node (its own ports, from
    --controller-config) and prints the controller's ready line too.
    """
    from cli.controller_cmds import ready_line, start_controller_exporter
    from cli.metrics_http import start_exporter
    from cli.security import namesrv_security, warn_if_others_read
    from cli.serving import configure_logging, run_server, set_node_name
    from controller.config import ConfigError, load_toml
    from controller.server import ControllerServer
    from launcher.ready import namesrv_ready_line
    from namesrv.server import NameServer, NameServerConfig
    from protocol.acl import AclConfigError
    from protocol.tls import TlsError
    from protocol.trust import SecretError

    controller = None
    if enable_controller or controller_config is not None:
        if controller_config is None:
            raise fail("--enable-controller needs --controller-config FILE")
        try:
            controller = ControllerServer(load_toml(controller_config))
        except (ConfigError, AclConfigError, SecretError, TlsError) as exc:
            raise fail(str(exc)) from None
    if log_dir is None and controller is not None:
        log_dir = controller.config.data_dir / "logs"
    configure_logging(
        node=f"namesrv {host}:{port}",
        log_file=log_dir / "namesrv.log" if log_dir else None,
        level=log_level,
    )
    if controller_config is not None:
        warn_if_others_read(controller_config, "controller config (it holds the quorum's secret)")
    security = namesrv_security(cluster_secret_file, tls_cert, tls_key, tls_ca, tls_verify_client)
    try:
        acl_path = str(acl_file) if acl_file else None
        config = NameServerConfig(
            host=host,
            port=port,
            acl_enable=acl_enable or bool(acl_path),
            acl_file=acl_path,
            **security,
        )
        server = NameServer(config)
    except AclConfigError as exc:
        raise fail(str(exc)) from None

    async def serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve)
            set_node_name(f"namesrv {host}:{bound}")
            line = namesrv_ready_line(f"{host}:{bound}")
            if metrics_port is not None:
                registry = server.metrics.registry
                line += "\n" + await start_exporter(nursery, registry, host=host, port=metrics_port)
            if controller is not None:
                await nursery.start(controller.serve)
                set_node_name(f"namesrv {host}:{bound} + controller {controller.config.node_id}")
                line += "\n" + ready_line(controller.config)
                line += await start_controller_exporter(nursery, controller)
            task_status.started(line)

    try:
        run_server(serve)
    except OSError as exc:
        raise fail(f"cannot start the NameServer on {host}:{port}: {exc.strerror}") from None


@app.command()
def broker(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML file (broker.conf key names).")
    ] = None,
    namesrv: Annotated[
        str | None, typer.Option("-n", "--namesrv", help="NameServer address(es) a:p;b:p.")
    ] = None,
    cluster: Annotated[str | None, typer.Option(help="Cluster name.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Broker (group) name.")] = None,
    broker_id: Annotated[
        int | None, typer.Option("--broker-id", help="0 = master; a SLAVE has an id > 0.")
    ] = None,
    role: Annotated[str | None, typer.Option(help="ASYNC_MASTER, SYNC_MASTER or SLAVE.")] = None,
    ha_port: Annotated[
        int | None,
        typer.Option(
            "--ha-port", help="A master's replication port (default: port + 1; 0 picks one)."
        ),
    ] = None,
    master_ha: Annotated[
        str | None,
        typer.Option(
            "--master-ha",
            help="A slave's master HA address host:port, until a NameServer names one.",
        ),
    ] = None,
    controller_addrs: Annotated[
        str | None,
        typer.Option(
            "--controller-addrs",
            help="Controller mode: controller addresses a:p;b:p;c:p (id and role from them).",
        ),
    ] = None,
    lease_s: Annotated[
        float | None,
        typer.Option("--lease-s", help="Controller mode: a master's lease without the leader."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    ip: Annotated[str | None, typer.Option(help="IPv4 address advertised to clients.")] = None,
    port: Annotated[int | None, typer.Option(help="Client port; 0 picks a free one.")] = None,
    store_dir: Annotated[Path | None, typer.Option("--dir", help="Store directory.")] = None,
    flush: Annotated[str | None, typer.Option(help="ASYNC_FLUSH or SYNC_FLUSH.")] = None,
    segment_bytes: Annotated[
        int | None, typer.Option(help="CommitLog segment size in bytes.")
    ] = None,
    auto_create_topic: Annotated[
        bool | None, typer.Option("--auto-create-topic/--no-auto-create-topic")
    ] = None,
    skip_damaged_segments: Annotated[
        bool | None,
        typer.Option(
            "--skip-damaged-segments",
            help="Start even when CommitLog files hold damaged bytes: skip them (logged), "
            "never serve them.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Run a broker (prints one ready line; stops cleanly on SIGINT/SIGTERM)."""
    from broker.agent import IdentityError
    from broker.config import BrokerConfig, ConfigError, config_from_mapping, load_toml
    from broker.metrics import broker_registry
    from broker.security import SecurityError
    from broker.server import Broker
    from broker.store.files import UnreadableFile
    from cli.metrics_http import start_exporter
    from cli.security import warn_if_others_read
    from cli.serving import configure_logging, run_server, set_node_name
    from launcher.ready import broker_ready_line
    from protocol.acl import AclConfigError
    from protocol.errors import StorageError

    flags = {
        "namesrv_addrs": namesrv,
        "cluster_name": cluster,
        "broker_name": name,
        "broker_id": broker_id,
        "broker_role": role.upper() if role is not None else None,
        "ha_port": ha_port,
        "master_ha_addr": master_ha,
        "controller_addrs": controller_addrs,
        "lease_s": lease_s,
        "host": host,
        "advertised_ip": ip,
        "listen_port": port,
        "store_dir": str(store_dir) if store_dir is not None else None,
        "flush_disk_type": flush,
        "commitlog_segment_bytes": segment_bytes,
        "auto_create_topic_enable": auto_create_topic,
        "metrics_exporter_type": "PROM" if metrics_port is not None else None,
        "metrics_prom_exporter_port": metrics_port,
        "skip_damaged_segments": skip_damaged_segments,
    }
    try:
        base = load_toml(config) if config is not None else BrokerConfig()
        cfg = config_from_mapping({k: v for k, v in flags.items() if v is not None}, base)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    node = f"{cfg.broker_name}-{'?' if cfg.controller_mode else cfg.broker_id}"
    configure_logging(node=node, log_file=cfg.store_dir / "logs" / "broker.log", level=log_level)
    if config is not None and cfg.secret_key:
        warn_if_others_read(config, f"{node}: broker config")
    try:
        server = Broker(cfg)
    except (SecurityError, AclConfigError) as exc:
        raise fail(str(exc)) from None

    async def serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            set_node_name(f"{server.name} {server.address}")
            role = "controller-assigned" if cfg.controller_mode else cfg.broker_role
            line = broker_ready_line(
                broker_name=cfg.broker_name,
                address=server.address,
                role=role,
                ha_address=server.ha_address,
                store_dir=cfg.store_dir,
            )
            if cfg.metrics_exporter_type == "PROM":
                host = cfg.metrics_prom_exporter_host or cfg.host
                registry = broker_registry(server)
                port = cfg.metrics_prom_exporter_port
                line += "\n" + await start_exporter(nursery, registry, host=host, port=port)
            task_status.started(line)

    try:
        run_server(serve)
    except (IdentityError, UnreadableFile) as exc:
        raise fail(str(exc)) from None  # "<file>: <what is wrong>"
    except StorageError as exc:
        raise fail(f"the store in {cfg.store_dir} cannot be opened: {exc}") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"cannot start the broker: {where}{exc.strerror or exc}") from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
