"""``rmq dashboard``: the web dashboard of a running cluster (``dashboard/``).

Prints one ready line, ``The dashboard boot success. url=http://HOST:PORT/`` (``--port 0``
picks a free port), and stops cleanly on SIGINT/SIGTERM. Read-only unless ``--admin-key``
is given (or RMQ_DASHBOARD_ADMIN_KEY is set): then the page can create a topic and ask
the controller for an election, each request carrying that key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import trio
import typer

from cli.output import fail


def _list(text: str | None) -> list[str]:
    return [a.strip() for a in (text or "").split(";") if a.strip()]


def dashboard_command(
    namesrv: Annotated[
        str, typer.Option("-n", "--namesrv", help="NameServer address(es) a:p;b:p.")
    ] = "127.0.0.1:9876",
    controllers: Annotated[
        str | None,
        typer.Option("--controllers", "-a", help="Controller addresses a:p;b:p;c:p."),
    ] = None,
    controller_metrics: Annotated[
        str | None,
        typer.Option(
            "--controller-metrics",
            help="The controllers' metrics endpoints host:port;... (same order as --controllers).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind; 0 picks a free one.")] = 8080,
    admin_key: Annotated[
        str | None,
        typer.Option(
            "--admin-key",
            envvar="RMQ_DASHBOARD_ADMIN_KEY",
            help="Enable the admin actions for requests carrying this key.",
        ),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between two reads.")] = 1.0,
    snapshot: Annotated[
        Path | None,
        typer.Option(
            "--snapshot",
            help="Also save the page to this HTML file (opens without a server) whenever "
            "the timeline grows and at exit.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "WARNING",
) -> None:
    """Serve the dashboard of a cluster: brokers, controllers, SyncStateSets, traffic."""
    from cli.serving import configure_logging, run_server
    from dashboard.server import READY, serve

    if interval <= 0:
        raise fail("--interval must be positive")
    if snapshot is not None:
        try:
            snapshot.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(
                f"--snapshot {snapshot}: cannot make its directory: {exc.strerror}"
            ) from None
        if snapshot.is_dir():
            raise fail(f"--snapshot {snapshot} is a directory; give a file name")
    configure_logging(node=f"dashboard {host}:{port}", log_file=None, level=log_level)

    async def run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve(
                    namesrv=_list(namesrv),
                    controllers=_list(controllers),
                    controller_metrics=_list(controller_metrics),
                    host=host,
                    port=port,
                    admin_key=admin_key,
                    interval_s=interval,
                    snapshot=snapshot,
                    task_status=task_status,
                )
            )
            task_status.started(READY.format(url=url))

    try:
        run_server(run)
    except OSError as exc:
        raise fail(f"cannot start the dashboard on {host}:{port}: {exc.strerror or exc}") from None
