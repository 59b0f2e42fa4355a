"""``rmq proxy``: the gRPC proxy for RocketMQ 5 clients (``proxy/``), cluster mode.

Prints one ready line, ``The proxy[HOST:PORT] boot success. mode=cluster namesrv=...``
(``--port 0`` picks a free port), and stops cleanly on SIGINT/SIGTERM. ``--tls-cert`` and
``--tls-key`` make the gRPC port TLS only; ``--tls-ca`` makes the proxy reach the cluster
over TLS (else ``$RMQ_TLS*``, as any SDK client). ``--acl-file`` turns ACL 1.0 on for
gRPC clients; ``--access-key`` (``$RMQ_ACCESS_KEY``, secret in ``$RMQ_SECRET_KEY``) is the
account the proxy signs its own requests to the cluster with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import trio
import typer

from cli.output import fail


def proxy_command(
    namesrv: Annotated[
        str, typer.Option("-n", "--namesrv", help="NameServer address(es) a:p;b:p.")
    ] = "127.0.0.1:9876",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="gRPC port; 0 picks a free one.")] = 8081,
    advertised_host: Annotated[
        str | None,
        typer.Option("--advertised-host", help="Host clients are told to use (default: --host)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each broker request may take.")] = 3.0,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            help="Client connections served at once; 0: half the descriptor limit, at most 10000.",
        ),
    ] = 0,
    max_streams: Annotated[
        int,
        typer.Option(
            "--max-streams",
            help="Calls one client connection may have open at once (more wait in the client).",
        ),
    ] = 1000,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="PEM certificate chain: the gRPC port is TLS only."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its PEM key.")] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca",
            help="Reach NameServers and brokers over TLS, trusting this CA (and showing "
            "--tls-cert/--tls-key to those that verify clients); default: $RMQ_TLS*.",
        ),
    ] = None,
    acl_file: Annotated[
        Path | None,
        typer.Option(
            "--acl-file",
            help="ACL accounts (RocketMQ's plain_acl.yml): clients must sign their calls.",
        ),
    ] = None,
    access_key: Annotated[
        str | None,
        typer.Option("--access-key", envvar="RMQ_ACCESS_KEY", help="The proxy's own ACL account."),
    ] = None,
    secret_key: Annotated[
        str | None,
        typer.Option(
            "--secret-key",
            envvar="RMQ_SECRET_KEY",
            help="Its secret (prefer the environment variable: argv is public).",
        ),
    ] = None,
) -> None:
    """Serve apache.rocketmq.v2.MessagingService (the official 5.x clients) over the cluster."""
    try:
        from proxy.core import MAX_STREAMS_PER_CONNECTION, ProxyConfig
        from proxy.server import ProxyServer
    except ImportError as exc:
        raise fail(
            f"rmq proxy needs the 'proxy' extra (pip install trio-rocketmq[proxy]): {exc}"
        ) from None
    from cli.serving import configure_logging, run_server, set_node_name
    from launcher.ready import proxy_ready_line
    from protocol.acl import AclConfigError
    from protocol.acl_sign import Credentials
    from protocol.tls import TlsError, client_context

    addrs = tuple(a.strip() for a in namesrv.replace(",", ";").split(";") if a.strip())
    if not addrs:
        raise fail("--namesrv names no NameServer")
    if timeout <= 0:
        raise fail("--timeout must be positive")
    if max_connections < 0:
        raise fail("--max-connections must be 0 (the default cap) or more")
    if not 1 <= max_streams <= MAX_STREAMS_PER_CONNECTION:
        raise fail(f"--max-streams must be in [1, {MAX_STREAMS_PER_CONNECTION}]")
    if bool(access_key) != bool(secret_key):
        raise fail("--access-key and --secret-key (or $RMQ_SECRET_KEY) go together")
    credentials = None
    if access_key and secret_key:
        credentials = Credentials(access_key=access_key, secret_key=secret_key)
    if (tls_cert is None) != (tls_key is None):
        raise fail("--tls-cert and --tls-key go together")
    configure_logging(node=f"proxy {host}:{port}", log_file=None, level=log_level)
    config = ProxyConfig(
        host=host,
        port=port,
        advertised_host=advertised_host or host,
        namesrv=addrs,
        timeout_s=timeout,
        tls_cert_file=str(tls_cert or ""),
        tls_key_file=str(tls_key or ""),
        acl_file=str(acl_file or ""),
        max_connections=max_connections or None,
        max_streams_per_connection=max_streams,
    )
    try:
        remoting_tls = None
        if tls_ca is not None:
            remoting_tls = client_context(
                ca_file=str(tls_ca), cert_file=str(tls_cert or ""), key_file=str(tls_key or "")
            )
        server = ProxyServer(config, remoting_tls=remoting_tls, credentials=credentials)
    except AclConfigError as exc:
        raise fail(f"rmq proxy: {exc}") from None
    except (TlsError, OSError, ValueError) as exc:
        raise fail(f"rmq proxy: TLS settings unusable: {exc}") from None

    async def run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve)
            set_node_name(f"proxy {host}:{bound}")
            line = proxy_ready_line(address=f"{config.advertised_host}:{bound}", namesrv=namesrv)
            task_status.started(line)

    try:
        run_server(run)
    except OSError as exc:
        raise fail(f"cannot start the proxy on {host}:{port}: {exc.strerror or exc}") from None
