"""``rmq admin``: mqadmin's commands, with its names, flags and columns, on ``client.admin``.

Rules:
- Each command is one ``Admin`` call under one overall deadline (``--timeout`` per request,
  ten times that for the whole command).
- Tables are borderless rich tables (columns two or more spaces apart, headers as mqadmin
  prints them); ``--json`` prints the same data as JSON for scripts. Data cells are plain
  text, never rich markup: a message body may well contain ``[red]``.
- ``-n/--namesrv`` defaults to ``$NAMESRV_ADDR``, then 127.0.0.1:9876, as mqadmin does.
- A failure is one line on stderr (``error: ...``, saying what to do) and exit status 1,
  never a traceback.
- One module per mqadmin section (``cluster``, ``broker``, ``topics``, ``groups``,
  ``connection``, ``messages``, ``stats``, ``controller``), each with its own typer app; they are merged here in mqadmin's order,
  which is the order ``rmq admin --help`` lists them in.
"""

from __future__ import annotations

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

admin_app = typer.Typer(no_args_is_help=True, help="mqadmin-style administration commands.")
for _section in (cluster, broker, topics, groups, connection, messages, stats, controller):
    admin_app.add_typer(_section.app)
admin_app.add_typer(transactions.app)

__all__ = ["admin_app"]
