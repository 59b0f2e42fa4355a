"""launcher/ports.py: ports picked for layouts whose nodes must know each other's ports."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

import pytest

from launcher import ports
from launcher.ports import free_port_range, pick_free_ports


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def _bind_all(picked: list[int]) -> None:
    with contextlib.ExitStack() as stack:
        for port in picked:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_ports() -> None:
    # Below the range where bind(0) and outgoing connections take ports, so another
    # process's port-0 server cannot take a controller's Raft port before it binds.
    picked = pick_free_ports(6)
    assert len(set(picked)) == 6
    assert all(10_000 <= port < _ephemeral_low() for port in picked)
    _bind_all(picked)


def test_a_port_in_use_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        offered = iter([taken, taken, free])
        monkeypatch.setattr(random.Random, "randrange", lambda self, a, b: next(offered))
        monkeypatch.setattr(ports, "_ephemeral_low", lambda: 65536)
        assert pick_free_ports(1) == [free]


def test_a_narrow_range_below_the_ephemeral_ports_leaves_the_pick_to_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: 10_500)
    picked = pick_free_ports(3)
    assert len(set(picked)) == 3
    _bind_all(picked)


def test_a_free_port_range_is_consecutive_bindable_and_below_the_ephemeral_ports() -> None:
    base = free_port_range(6)
    assert base >= 10_000 and base + 6 <= _ephemeral_low()
    _bind_all(list(range(base, base + 6)))
