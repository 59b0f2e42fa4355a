"""Terminal output shared by every ``rmq`` command: the consoles and the one-line error."""

from __future__ import annotations

import shutil

import typer
from rich.console import Console
from rich.text import Text

#: Wide enough for mqadmin-style tables when piped; cells are plain text, never markup.
out = Console(width=max(shutil.get_terminal_size((160, 24)).columns, 160), highlight=False)
#: Errors never wrap mid-line.
err = Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str, detail: str | None = None) -> typer.Exit:
    """Print ``error: <message>`` (and an optional detail block); return the exit to raise."""
    err.print(Text.assemble(("error:", "red"), " ", message))
    if detail:
        err.print(Text(detail))
    return typer.Exit(code=1)
