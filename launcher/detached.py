"""Recorded nodes: start one detached and wait for its ready line; stop a whole cluster.

Rules:
- Every node is a real ``rmq namesrv|broker|controller`` process in its own session
  (``start_new_session``), so it outlives the command that started it and a Ctrl-C in its
  terminal; a node with a ``netns`` starts inside that namespace (``ip netns exec``, which
  execs in place: the recorded pid and argv are the node's own). Its stdout and stderr go to ``D/<node>/stdout.log`` and ``stderr.log``
  (appended, each start marked with a header line in ``stderr.log``); the ready line is
  read from ``stdout.log`` past what an earlier start wrote.
- A node is in ``cluster.json`` (with its pid and start time) before anything waits for
  it, so whatever happens next, ``rmq cluster down`` finds it.
- One step (``Spawned.check``: ready, still starting, or exited) serves two thin loops:
  a blocking one for the CLI (``start_node``) and a Trio one for the chaos harness
  (``wait_ready``).
- Every wait has a deadline: a ready line (the caller's), a stop (SIGTERM, the caller's
  deadline, SIGKILL, ``KILL_WAIT_S``). Only processes that ``is_alive`` says are still
  the recorded ones are signalled.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import attrs
import trio

from launcher.command import child_env
from launcher.netns import exec_prefix
from launcher.pids import is_alive, proc_start_ticks, signal_node
from launcher.ready import NAMESRV, Ready, parse_ready
from launcher.record import Cluster, ClusterError, Node, load_cluster

# The nodes are detached on purpose: their Popen objects are dropped while they run.
warnings.filterwarnings("ignore", r"subprocess \d+ is still running", ResourceWarning)

POLL_S = 0.05
KILL_WAIT_S = 5.0
TAIL_LINES = 20
#: What a ready-line check reads of a node's new stdout at most.
_READ_BYTES = 1024 * 1024
STILL_RUNNING = "STILL RUNNING after SIGKILL"


def read_output(path: Path, offset: int) -> str:
    """Up to 1 MiB of ``path`` from byte ``offset``, as text."""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(_READ_BYTES).decode(errors="replace")


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` of ``path``, indented (or why it cannot be read)."""
    try:
        text = path.read_bytes()[-64 * 1024 :].decode(errors="replace")
    except OSError as exc:
        return f"  (cannot read {path}: {exc.strerror})"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])


# --- start ---------------------------------------------------------------------------------


@attrs.define
class Spawned:
    """A recorded node just started: its process and where its new stdout begins."""

    cluster: Cluster
    node: Node
    proc: subprocess.Popen[bytes]
    offset: int

    def check(self) -> Ready | None:
        """The node's ready line once printed; None while it starts; ``ClusterError``
        (the node marked failed) when it exited first."""
        exited = self.proc.poll()
        ready = parse_ready(self.node.kind, read_output(self.node.stdout_file, self.offset))
        if ready is not None:
            return ready
        if exited is not None:
            raise self._failed(f"exited with status {exited} before it was ready")
        return None

    def timed_out(self, timeout_s: float) -> ClusterError:
        return self._failed(f"printed no ready line within {timeout_s:g} s")

    def _failed(self, what: str) -> ClusterError:
        self.node.state = "failed"
        node = self.node
        return ClusterError(
            f"{node.name} {what}; last lines of {node.log_file}:", log_tail(node.log_file)
        )

    def mark_ready(self, ready: Ready) -> None:
        self.node.address = ready.address
        self.node.state = "running"
        self.cluster.save()


def spawn_recorded(cluster: Cluster, node: Node) -> Spawned:
    """Start ``node`` (added to ``cluster`` when new) detached with its argv, and record
    its pid at once."""
    if node not in cluster.nodes:
        cluster.nodes.append(node)
    node.node_dir.mkdir(parents=True, exist_ok=True)
    header = f"--- rmq cluster up at {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(node.argv)}\n"
    with node.stdout_file.open("ab") as out, node.log_file.open("ab") as err:
        err.write(header.encode())
        err.flush()
        offset = out.tell()
        prefix = exec_prefix(node.netns) if node.netns else []
        proc = subprocess.Popen(
            [*prefix, *node.argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=node.node_dir,
            env=child_env(),
            start_new_session=True,
        )
    node.pid = proc.pid
    node.start_ticks = proc_start_ticks(proc.pid) or 0
    node.state = "starting"
    cluster.save()
    return Spawned(cluster, node, proc, offset)


def start_node(cluster: Cluster, node: Node, timeout_s: float) -> Ready:
    """Start ``node``, record it, and block until its ready line (``ClusterError`` when it
    exits first or prints none within ``timeout_s``)."""
    spawned = spawn_recorded(cluster, node)
    deadline = time.monotonic() + timeout_s
    while (ready := spawned.check()) is None:
        if time.monotonic() >= deadline:
            raise spawned.timed_out(timeout_s)
        time.sleep(POLL_S)
    spawned.mark_ready(ready)
    return ready


async def wait_ready(spawned: Spawned, timeout_s: float) -> Ready:
    """``start_node``'s wait, for a Trio caller."""
    with trio.move_on_after(timeout_s):
        while True:
            # Another process writes the file: nothing to wait on but the clock.
            if (ready := spawned.check()) is not None:
                spawned.mark_ready(ready)
                return ready
            await trio.sleep(POLL_S)
    raise spawned.timed_out(timeout_s)


@contextlib.contextmanager
def starting(cluster: Cluster, stop_timeout_s: float) -> Iterator[Cluster]:
    """Start ``cluster``'s nodes in the block: after it the cluster is ``running``; on any
    failure (an error, Ctrl-C, anything) every node is stopped and it is ``failed``."""
    try:
        yield cluster
    except BaseException:  # leave nothing running
        stop_cluster(cluster, stop_timeout_s)
        cluster.state = "failed"
        cluster.save()
        raise
    cluster.state = "running"
    cluster.save()


def refuse_running(root: Path) -> None:
    """``ClusterError`` when ``root``'s record names a node that still runs."""
    existing = load_cluster(root)
    if existing is None:
        return
    running = [n for n in existing.nodes if is_alive(n)]
    if running:
        pids = ", ".join(f"{n.name} pid {n.pid}" for n in running)
        raise ClusterError(
            f"{root} already holds a running cluster ({pids}); "
            f"stop it first with: rmq cluster down --dir {root}"
        )


# --- stop ----------------------------------------------------------------------------------


def _wait_gone(nodes: list[Node], timeout_s: float) -> list[Node]:
    """Wait up to ``timeout_s`` for ``nodes`` to exit; the ones still running."""
    deadline = time.monotonic() + timeout_s
    left = [n for n in nodes if is_alive(n)]
    while left and time.monotonic() < deadline:
        time.sleep(POLL_S)
        left = [n for n in left if is_alive(n)]
    return left


def stop_nodes(nodes: list[Node], timeout_s: float) -> dict[str, str]:
    """SIGTERM every live node, wait up to ``timeout_s``, SIGKILL the rest; outcome per name."""
    outcome = {n.name: "was not running" for n in nodes}
    live = [n for n in nodes if is_alive(n)]
    for node in live:
        signal_node(node, signal.SIGTERM)
    left = _wait_gone(live, timeout_s)
    for node in live:
        outcome[node.name] = "stopped"
    for node in left:
        signal_node(node, signal.SIGKILL)
        outcome[node.name] = f"killed (no exit within {timeout_s:g} s of SIGTERM)"
    for node in _wait_gone(left, KILL_WAIT_S):
        outcome[node.name] = STILL_RUNNING
    return outcome


def stop_cluster(cluster: Cluster, timeout_s: float) -> dict[str, str]:
    """Brokers (and controllers) first: they unregister from a NameServer that is still
    there; the NameServer last. Outcome per node name."""
    outcome = stop_nodes([n for n in cluster.nodes if n.kind != NAMESRV], timeout_s)
    outcome.update(stop_nodes([n for n in cluster.nodes if n.kind == NAMESRV], timeout_s))
    for node in cluster.nodes:
        if node.state != "failed" and outcome[node.name] != STILL_RUNNING:
            node.state = "stopped"
    return outcome


@attrs.frozen(kw_only=True)
class Stopped:
    """What stopping a recorded cluster did."""

    #: One line per node, in record order: ``NAME (pid N): OUTCOME``.
    lines: tuple[str, ...]
    #: Nodes that survived SIGKILL.
    stuck: tuple[str, ...]


def stop_and_record(cluster: Cluster, timeout_s: float) -> Stopped:
    """``stop_cluster``, then record the cluster ``stopped`` (``running`` while a node
    survived SIGKILL)."""
    outcome = stop_cluster(cluster, timeout_s)
    stuck = tuple(name for name, what in outcome.items() if what == STILL_RUNNING)
    cluster.state = "running" if stuck else "stopped"
    cluster.save()
    lines = tuple(
        f"{n.name}{f' (pid {n.pid})' if n.pid else ''}: {outcome[n.name]}" for n in cluster.nodes
    )
    return Stopped(lines=lines, stuck=stuck)
