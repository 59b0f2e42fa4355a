"""``rmq``: run servers, operate a cluster, administer it (typer)."""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import trio
import typer

from client.cli.admin_cmds import admin_app
from client.cli.bench_cmds import bench_app
from client.cli.cluster import cluster_app
from client.cli.output import fail

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(admin_app, name="admin")
app.add_typer(cluster_app, name="cluster")
app.add_typer(bench_app, name="bench")


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
    log_dir: Annotated[
        Path | None, typer.Option("--log-dir", help="Also log to LOG_DIR/namesrv.log.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a NameServer (prints one ready line with its address; stops on SIGINT/SIGTERM)."""
    from client.cli.serving import configure_logging, run_server, set_node_name
    from namesrv.server import NameServer, NameServerConfig

    configure_logging(
        node=f"namesrv {host}:{port}",
        log_file=log_dir / "namesrv.log" if log_dir else None,
        level=log_level,
    )
    server = NameServer(NameServerConfig(host=host, port=port))

    async def serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve)
            set_node_name(f"namesrv {host}:{bound}")
            task_status.started(f"The Name Server boot success. address={host}:{bound}")

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
    broker_id: Annotated[int | None, typer.Option("--broker-id", help="0 = master.")] = None,
    role: Annotated[str | None, typer.Option(help="ASYNC_MASTER, SYNC_MASTER or SLAVE.")] = None,
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
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Run a broker (prints one ready line; stops cleanly on SIGINT/SIGTERM)."""
    from broker.config import BrokerConfig, ConfigError, config_from_mapping, load_toml
    from broker.server import Broker
    from client.cli.serving import configure_logging, run_server, set_node_name
    from protocol.errors import StorageError

    flags = {
        "namesrv_addrs": namesrv,
        "cluster_name": cluster,
        "broker_name": name,
        "broker_id": broker_id,
        "broker_role": role,
        "host": host,
        "advertised_ip": ip,
        "listen_port": port,
        "store_dir": str(store_dir) if store_dir is not None else None,
        "flush_disk_type": flush,
        "commitlog_segment_bytes": segment_bytes,
        "auto_create_topic_enable": auto_create_topic,
    }
    try:
        base = load_toml(config) if config is not None else BrokerConfig()
        cfg = config_from_mapping({k: v for k, v in flags.items() if v is not None}, base)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    node = f"{cfg.broker_name}-{cfg.broker_id}"
    configure_logging(node=node, log_file=cfg.store_dir / "logs" / "broker.log", level=log_level)
    server = Broker(cfg)

    async def serve(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            set_node_name(f"{node} {server.address}")
            task_status.started(
                f"The broker[{cfg.broker_name}, {server.address}] boot success. "
                f"role={cfg.broker_role} store={cfg.store_dir}"
            )

    try:
        run_server(serve)
    except StorageError as exc:
        raise fail(f"the store in {cfg.store_dir} cannot be opened: {exc}") from None
    except OSError as exc:
        raise fail(f"cannot start the broker: {exc.strerror or exc}") from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
