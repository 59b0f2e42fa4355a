"""``rmq admin``: mqadmin's commands, with its names, flags and columns, on ``client.admin``.

Rules:
- Each command is one ``Admin`` call under one overall deadline (``--timeout`` per request,
  ten times that for the whole command).
- Tables are borderless rich tables (columns two or more spaces apart, headers as mqadmin
  prints them); ``--json`` prints the same data as JSON for scripts. Data cells are plain
  text, never rich markup: a message body may well contain ``[red]``.
- ``-n/--namesrv`` defaults to ``$NAMESRV_ADDR``, then 127.0.0.1:9876, as mqadmin does.
- ``--tls`` / ``--tls-ca`` / ``--tls-cert`` / ``--tls-key`` (before the command; or
  ``$RMQ_TLS*``) connect with TLS; ``--cluster-secret-file`` (``$RMQ_CLUSTER_SECRET_FILE``)
  signs the controller commands a cluster secret guards (README "TLS and cluster secrets").
- ``--access-key`` / ``--secret-key`` (before the command; or ``$RMQ_ACCESS_KEY`` /
  ``$RMQ_SECRET_KEY``, which keep the secret out of the process list) sign every request
  with an ACL 1.0 account. The secret is never printed.
- A failure is one line on stderr (``error: ...``, saying what to do) and exit status 1,
  never a traceback.
- One module per mqadmin section (``cluster``, ``broker``, ``topics``, ``groups``,
  ``connection``, ``messages``, ``stats``, ``controller``), each with its own typer app;
  they are merged here in mqadmin's order, which is the order ``rmq admin --help`` lists
  them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.admin import (
    broker,
    cluster,
    connection,
    controller,
    groups,
    messages,
    stats,
    topics,
    transactions,
)
from cli.admin.common import set_credentials, set_transport
from client.controller_admin import ENV_CLUSTER_SECRET_FILE
from protocol.acl_sign import ENV_ACCESS_KEY, ENV_SECRET_KEY

admin_app = typer.Typer(no_args_is_help=True, help="mqadmin-style administration commands.")


@admin_app.callback()
def _options(
    tls: Annotated[bool, typer.Option("--tls", help="Connect with TLS ($RMQ_TLS=1).")] = False,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="CA (PEM) to verify servers with.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Client certificate (PEM), if asked for.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its key (PEM).")] = None,
    cluster_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--cluster-secret-file",
            envvar=ENV_CLUSTER_SECRET_FILE,
            help="Sign electMaster/cleanBrokerMetadata with this cluster secret.",
        ),
    ] = None,
    access_key: Annotated[
        str | None,
        typer.Option(
            "--access-key", envvar=ENV_ACCESS_KEY, help="ACL account: sign every request."
        ),
    ] = None,
    secret_key: Annotated[
        str | None,
        typer.Option(
            "--secret-key",
            envvar=ENV_SECRET_KEY,
            help="The account's secret (prefer the environment variable: argv is public).",
        ),
    ] = None,
) -> None:
    """mqadmin-style administration commands (options here go before the command)."""
    set_transport(
        tls=tls, ca=tls_ca, cert=tls_cert, key=tls_key, cluster_secret_file=cluster_secret_file
    )
    set_credentials(access_key, secret_key)


for _section in (cluster, broker, topics, groups, connection, messages, stats, controller):
    admin_app.add_typer(_section.app)
admin_app.add_typer(transactions.app)

__all__ = ["admin_app"]
