"""Running a server process from the CLI: logging, the ready line, clean stop on signals."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

#: ``serve`` coroutine factory: called with a task_status, reports the ready line to print.
Serve = Callable[..., Awaitable[None]]


class _NodeName(logging.Filter):
    """Stamps every record with the process's node name (known fully only once bound)."""

    node = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


_node_filter = _NodeName()


def set_node_name(node: str) -> None:
    """Name the node in every later log line (e.g. once the bound port is known)."""
    _node_filter.node = node


def configure_logging(*, node: str, log_file: Path | None, level: str = "INFO") -> None:
    """Log to stderr and, when given, to ``log_file``; every line carries the node name."""
    set_node_name(node)
    fmt = "%(asctime)s %(levelname)s [%(node)s] %(name)s: %(message)s"
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.addFilter(_node_filter)
    logging.basicConfig(level=level.upper(), format=fmt, handlers=handlers, force=True)


def run_server(serve: Serve) -> None:
    """Run ``serve`` until SIGINT/SIGTERM; print its ready line (a str it reports) once."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                ready_line = await nursery.start(serve)
                print(ready_line, flush=True)
                async for signum in signals:
                    logging.getLogger(__name__).info(
                        "received %s, stopping", signal.Signals(signum).name
                    )
                    break
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        raise single_error(group) from None


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one leaf exception of ``group`` (nested nurseries), or the group itself."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group
