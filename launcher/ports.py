"""Free ports, for layouts whose processes must know each other's ports before any binds.

Rules:
- Servers bind ``--port 0`` wherever they can; these helpers exist only for the cases that
  cannot (Raft peers list each other's ports in their configs; fault proxies must listen
  before the brokers that dial them start).
- Picks lie below the kernel's ephemeral range, where no port-0 bind or outgoing
  connection lands; a port found free may still be taken by another process picking
  ports by hand: its owner then fails to start with "cannot bind" and the caller says so
  (never retried here silently).
"""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Picks stay above the ports services commonly own.
_LOWEST_PICKED = 10_000
#: Below this many ports under the ephemeral range, the kernel picks instead.
_NARROWEST_RANGE = 1_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (where ``bind(0)`` and outgoing
    connections take ports)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_picks(count: int, host: str) -> list[int]:
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


def pick_free_ports(count: int, host: str = "127.0.0.1", *, attempts: int = 200) -> list[int]:
    """``count`` distinct ports that were free on ``host`` a moment ago, below the kernel's
    ephemeral range: a server binding port 0 or a client connecting meanwhile (another
    test, another node of the same layout) never takes one before its owner binds it."""
    high = _ephemeral_low()
    if high - _LOWEST_PICKED < _NARROWEST_RANGE:  # an unusual ip_local_port_range
        return _kernel_picks(count, host)
    picker = random.Random()  # not a run's seeded rng: ports do not change a replay
    found: list[int] = []
    for _ in range(attempts):
        port = picker.randrange(_LOWEST_PICKED, high)
        if port not in found and _bindable(port, host):
            found.append(port)
            if len(found) == count:
                return found
    raise OSError(errno.EADDRINUSE, f"no {count} free ports found on {host} below {high}")


def free_port_range(count: int, *, attempts: int = 50) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 a moment ago, below the
    kernel's ephemeral range (so a port-0 bind elsewhere does not take one meanwhile)."""
    low = _ephemeral_low()
    picker = random.Random()  # not a run's seeded rng: ports do not change a replay
    for _ in range(attempts):
        base = picker.randrange(_LOWEST_PICKED, max(_LOWEST_PICKED + 1, low - count))
        if all(_bindable(port, "127.0.0.1") for port in range(base, base + count)):
            return base
    raise OSError(errno.EADDRINUSE, f"no {count} consecutive free ports found below {low}")
