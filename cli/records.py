"""What ``rmq cluster`` and ``rmq quorum`` share about a recorded local cluster: the
one-line error of a ``ClusterError``, the stop deadline option and the ``down`` command.

Rules:
- A ``ClusterError`` is one ``error:`` line (its detail, a log tail, on the lines after),
  exit status 1, never a traceback.
- ``down`` holds the directory lock while it stops and records, prints one line per
  node, then removes the network hosts ``rmq cluster up --netns`` recorded (unless a node
  survived SIGKILL: then it exits 1 and keeps them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cli.output import fail
from launcher import netns
from launcher.detached import stop_and_record
from launcher.record import Cluster, ClusterError, dir_lock

StopTimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait after SIGTERM before SIGKILL.")
]


def cluster_fail(exc: ClusterError) -> typer.Exit:
    """Print ``exc`` as one error line (and its detail); the exit to raise."""
    return fail(str(exc), exc.detail)


def down_recorded(root: Path, load: Callable[[Path], Cluster], timeout_s: float, what: str) -> None:
    """Stop the ``what`` (cluster, quorum) that ``load`` finds in ``root``, under its lock."""
    removed: list[str] = []
    try:
        with dir_lock(root):
            stopped = stop_and_record(load(root), timeout_s)
            if not stopped.stuck:
                removed = netns.teardown(root)
    except netns.NetnsError as exc:
        raise cluster_fail(ClusterError(f"cannot remove the network hosts: {exc}")) from None
    except ClusterError as exc:
        raise cluster_fail(exc) from None
    except OSError as exc:
        raise cluster_fail(ClusterError(f"cannot stop the {what} in {root}: {exc}")) from None
    for line in stopped.lines:
        print(line)
    if removed:
        print(f"removed {', '.join(removed)}")
    if stopped.stuck:
        raise cluster_fail(ClusterError(f"{', '.join(stopped.stuck)} survived SIGKILL"))
