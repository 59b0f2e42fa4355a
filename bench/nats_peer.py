"""The peer's servers: NATS JetStream, one server or a cluster of three on loopback.

Rules:
- ``nats-server`` is looked up on PATH, then where packages put it (Debian's is
  ``/usr/sbin/nats-server``, outside a user's PATH). ``peer_problem`` says why the peer
  cannot run here (no nats-server, no nats-py), or None.
- Each server runs from a config file written here (``server_conf``, pure): server name,
  JetStream with file storage under the run's directory, listening on 127.0.0.1 only.
  The client port is the kernel's pick (``-1``), read back from the server's log line; a
  cluster's route ports must be known to every node before any starts, so they are
  picked free first (``launcher/ports.py``).
- Every server is a ``launcher/child.py`` managed process: ready when its log says so
  (within ``START_TIMEOUT_S``), SIGTERM then SIGKILL when the block ends, whatever ends it.
- Only servers here: the client (nats-py, asyncio) is ``bench/nats_client.py``'s process.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs

from launcher.child import managed_process
from launcher.ports import pick_free_ports

#: Where packages install nats-server when it is not on PATH.
NATS_SERVER_PATHS = ("/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CLUSTER_NAME = "bench"
LISTENING = re.compile(r"Listening for client connections on (?P<host>[0-9.]+):(?P<port>\d+)")
SERVER_READY = "Server is ready"


def find_nats_server() -> str | None:
    found = shutil.which("nats-server")
    if found is not None:
        return found
    return next((p for p in NATS_SERVER_PATHS if os.access(p, os.X_OK)), None)


def peer_problem() -> str | None:
    """Why the NATS cells cannot run on this machine; None when they can."""
    if find_nats_server() is None:
        return "nats-server is not installed (apt-get install nats-server)"
    if importlib.util.find_spec("nats") is None:
        return "nats-py is not installed (pip install -e '.[bench]', or pip install nats-py)"
    return None


def nats_server_version(binary: str) -> str | None:
    """``v2.9.10``, from ``nats-server --version``; None when it does not say."""
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"v\d+\.\d+\.\d+\S*", done.stdout + done.stderr)
    return match.group(0) if match else None


def server_conf(
    name: str, store_dir: Path, *, cluster_port: int | None = None, routes: Sequence[int] = ()
) -> str:
    """A nats-server config: JetStream (file store in ``store_dir``) on 127.0.0.1, client
    port picked by the kernel; with ``cluster_port``, a cluster member routed to the
    ``routes`` ports of the others."""
    lines = [
        f"server_name: {name}",
        "listen: 127.0.0.1:-1",
        f'jetstream {{ store_dir: "{store_dir}" }}',
    ]
    if cluster_port is not None:
        urls = ", ".join(f"nats://127.0.0.1:{port}" for port in routes)
        lines += [
            "cluster {",
            f"  name: {CLUSTER_NAME}",
            f"  listen: 127.0.0.1:{cluster_port}",
            f"  routes: [{urls}]",
            "}",
        ]
    return "\n".join(lines) + "\n"


@attrs.frozen(kw_only=True)
class NatsServers:
    """Running servers: their client URLs and pids (in node order)."""

    urls: tuple[str, ...]
    pids: tuple[int, ...]


@asynccontextmanager
async def nats_servers(root: Path, nodes: int, binary: str) -> AsyncIterator[NatsServers]:
    """``nodes`` nats-servers (a cluster when more than one) with data under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    cluster_ports = pick_free_ports(nodes) if nodes > 1 else []
    async with AsyncExitStack() as stack:
        urls, pids = [], []
        for i in range(nodes):
            name = f"n{i + 1}"
            conf = root / f"{name}.conf"
            conf.write_text(
                server_conf(
                    name,
                    root / name,
                    cluster_port=cluster_ports[i] if cluster_ports else None,
                    routes=[p for j, p in enumerate(cluster_ports) if j != i],
                )
            )
            proc = await stack.enter_async_context(
                managed_process(
                    [binary, "-c", str(conf)],
                    name=f"nats-server {name}",
                    ready=LISTENING,
                    ready_stream="stderr",
                    start_timeout_s=START_TIMEOUT_S,
                    stop_timeout_s=STOP_TIMEOUT_S,
                    cwd=root,
                )
            )
            await proc.wait_for_line(SERVER_READY, timeout_s=START_TIMEOUT_S)
            urls.append(f"nats://{proc.address}")
            pids.append(proc.pid)
        yield NatsServers(urls=tuple(urls), pids=tuple(pids))
