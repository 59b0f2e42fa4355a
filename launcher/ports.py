"""Free ports, for layouts whose processes must know each other's ports before any binds.

Rules:
- Servers bind ``--port 0`` wherever they can; these helpers exist only for the cases that
  cannot (Raft peers list each other's ports in their configs; fault proxies must listen
  before the brokers that dial them start).
- A port found free may be taken by another process before its owner binds it: the
  owner then fails to start with "cannot bind" and the caller says so (never retried here
  silently).
"""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def pick_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free on ``host`` a moment ago (the kernel's pick)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port_range(count: int, *, attempts: int = 50) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 a moment ago, below the
    kernel's ephemeral range (so a port-0 bind elsewhere does not take one meanwhile)."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    picker = random.Random()  # not a run's seeded rng: ports do not change a replay
    for _ in range(attempts):
        base = picker.randrange(10_000, max(10_001, low - count))
        try:
            for port in range(base, base + count):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise OSError(errno.EADDRINUSE, f"no {count} consecutive free ports found below {low}")
