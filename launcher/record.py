"""The cluster record ``D/cluster.json``: one entry per process of a local cluster.

Rules:
- ``D/cluster.json`` is the one record of a cluster started under ``D``. It is replaced
  atomically (temp file, fsync, rename, fsync dir) after every change, so an interrupted
  ``rmq cluster up`` still leaves every process it started findable by ``down``.
- A record names each process by pid *and* by its start time (``start_ticks``) and argv,
  so a recycled pid is never taken for the node (``launcher/pids.py``).
- ``D/cluster.lock`` (``dir_lock``) keeps two commands from working on one directory at
  once; a second one fails at once instead of waiting.
- A record that cannot be read is refused with one ``ClusterError`` line, never guessed at.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

FORMAT_VERSION = 1
RECORD_NAME = "cluster.json"
LOCK_NAME = "cluster.lock"


class ClusterError(Exception):
    """What ``rmq cluster`` reports as one ``error:`` line; ``detail`` (a log tail, say)
    goes on the lines after it."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@attrs.define(kw_only=True)
class Node:
    """One process of the cluster, as recorded in ``cluster.json``."""

    name: str
    #: ``namesrv``, ``broker`` or ``controller`` (``launcher/ready.py``'s kinds).
    kind: str
    #: What ``status`` shows: ``namesrv``, ``master``, ``slave``, ``replica``, ``controller``.
    role: str
    argv: list[str]
    node_dir: Path
    stdout_file: Path
    log_file: Path
    store_dir: Path | None = None
    broker_role: str | None = None
    #: A broker's group (brokerName); the node name for records written before slaves.
    group: str | None = None
    pid: int = 0
    #: ``/proc/<pid>/stat`` start time (clock ticks since boot): tells a recycled pid apart.
    start_ticks: int = 0
    address: str | None = None
    #: ``starting``, ``running``, ``failed`` or ``stopped``.
    state: str = "starting"
    #: The network namespace it runs in (``launcher/netns.py``; None: the root one).
    netns: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "broker_role": self.broker_role,
            "group": self.group,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "address": self.address,
            "state": self.state,
            "netns": self.netns,
            "node_dir": str(self.node_dir),
            "log_file": str(self.log_file),
            "stdout_file": str(self.stdout_file),
            "store_dir": str(self.store_dir) if self.store_dir is not None else None,
            "argv": list(self.argv),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        store_dir = data.get("store_dir")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            role=str(data["role"]),
            broker_role=data.get("broker_role"),
            group=data.get("group"),
            pid=int(data["pid"]),
            start_ticks=int(data.get("start_ticks", 0)),
            address=data.get("address"),
            state=str(data["state"]),
            netns=data.get("netns"),
            node_dir=Path(data["node_dir"]),
            log_file=Path(data["log_file"]),
            stdout_file=Path(data["stdout_file"]),
            store_dir=Path(store_dir) if store_dir is not None else None,
            argv=[str(a) for a in data["argv"]],
        )


@attrs.define(kw_only=True)
class Cluster:
    """The whole ``cluster.json``."""

    mode: str
    root: Path
    state: str = "starting"
    flush: str = "ASYNC_FLUSH"
    nodes: list[Node] = attrs.field(factory=list)

    @property
    def path(self) -> Path:
        return self.root / RECORD_NAME

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "mode": self.mode,
            "dir": str(self.root),
            "state": self.state,
            "flush": self.flush,
            "nodes": [node.to_json() for node in self.nodes],
        }

    @classmethod
    def from_json(cls, root: Path, data: object) -> Cluster:
        """The record read from ``root``; raises ``TypeError``/``ValueError``/``KeyError``
        when ``data`` is not one."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
        return cls(
            mode=str(data["mode"]),
            root=root,
            state=str(data["state"]),
            flush=str(data.get("flush", "ASYNC_FLUSH")),
            nodes=[Node.from_json(n) for n in data["nodes"]],
        )

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.to_json(), indent=2).encode() + b"\n")


def load_cluster(root: Path) -> Cluster | None:
    """The cluster recorded in ``root`` (None when there is no ``cluster.json``)."""
    path = root / RECORD_NAME
    try:
        return Cluster.from_json(root, json.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClusterError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ClusterError(f"{path} is not a cluster record ({exc!r}); move it away") from None


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a crash leaves the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def dir_lock(root: Path) -> Iterator[None]:
    """Hold ``root/cluster.lock`` (one ``up``/``down`` per directory at a time)."""
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError(f"another rmq cluster command is working on {root}") from None
        yield
    finally:
        os.close(fd)
