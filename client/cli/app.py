"""``rmq``: run servers, operate a cluster, administer it (typer)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import trio
import typer
from rich.console import Console
from rich.table import Table

from client import admin
from client.cli.cluster import cluster_app
from protocol.errors import RocketError
from protocol.route import is_readable, is_writeable
from protocol.rpc import open_client

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
admin_app = typer.Typer(no_args_is_help=True, help="mqadmin-style administration commands.")
app.add_typer(admin_app, name="admin")
app.add_typer(cluster_app, name="cluster")

# Wide enough for mqadmin-style tables when piped; errors never wrap mid-line.
console = Console(width=max(shutil.get_terminal_size((160, 24)).columns, 160))
err_console = Console(stderr=True, soft_wrap=True)

NamesrvOpt = Annotated[
    str, typer.Option("-n", "--namesrv", help="NameServer address(es), host:port[;host:port...]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Per-request deadline in seconds.")]


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


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit to raise."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=1)


def run_admin(fn: Callable[[Any], Awaitable[T]], timeout_s: float) -> T:
    """Run one admin coroutine with a client under a deadline; errors become one line."""

    async def main() -> T:
        with trio.fail_after(timeout_s * 4):
            async with open_client(name="rmq-admin", default_timeout_s=timeout_s) as client:
                return await fn(client)

    try:
        return trio.run(main)
    except RocketError as exc:
        raise fail(str(exc)) from None
    except trio.TooSlowError:
        raise fail(f"no answer within {timeout_s * 4:.0f} s") from None
    except ValueError as exc:
        raise fail(str(exc)) from None


def _namesrv_list(text: str) -> list[str]:
    try:
        return admin.parse_namesrv_list(text)
    except ValueError as exc:
        raise fail(str(exc)) from None


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


# --- admin -------------------------------------------------------------------------------


@admin_app.command("clusterList")
def cluster_list(
    namesrv: NamesrvOpt = "127.0.0.1:9876", as_json: JsonOpt = False, timeout: TimeoutOpt = 3.0
) -> None:
    """List clusters and their broker groups (mqadmin clusterList)."""
    addrs = _namesrv_list(namesrv)
    info = run_admin(lambda c: admin.get_cluster_info(c, addrs), timeout)
    if as_json:
        print(json.dumps(info.to_json(), indent=2, sort_keys=True))
        return
    table = Table("#Cluster Name", "#Broker Name", "#BID", "#Addr", box=None)
    for cluster in sorted(info.cluster_addr_table):
        for name in sorted(info.cluster_addr_table[cluster]):
            data = info.broker_addr_table.get(name)
            if data is None:
                continue
            for bid in sorted(data.broker_addrs):
                table.add_row(cluster, name, str(bid), data.broker_addrs[bid])
    console.print(table)


@admin_app.command("topicRoute")
def topic_route(
    topic: Annotated[str, typer.Option("-t", "--topic", help="Topic name.")],
    namesrv: NamesrvOpt = "127.0.0.1:9876",
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show a topic's route (mqadmin topicRoute; --json for the raw TopicRouteData)."""
    addrs = _namesrv_list(namesrv)
    route = run_admin(lambda c: admin.get_topic_route(c, addrs, topic), timeout)
    if as_json:
        print(json.dumps(route.to_json(), indent=2, sort_keys=True))
        return
    clusters = {b.broker_name: b for b in route.broker_datas}
    table = Table(
        "#ClusterName",
        "#BrokerName",
        "#BrokerAddrs",
        "#ReadQueue",
        "#WriteQueue",
        "#Perm",
        box=None,
    )
    for qd in sorted(route.queue_datas, key=lambda q: q.broker_name):
        bd = clusters.get(qd.broker_name)
        addrs_text = (
            ", ".join(f"{i}={a}" for i, a in sorted(bd.broker_addrs.items())) if bd else "-"
        )
        perm = ("R" if is_readable(qd.perm) else "-") + ("W" if is_writeable(qd.perm) else "-")
        table.add_row(
            bd.cluster if bd else "-",
            qd.broker_name,
            addrs_text,
            str(qd.read_queue_nums),
            str(qd.write_queue_nums),
            f"{perm} ({qd.perm})",
        )
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
