"""``bench.measure``'s /proc readers on this machine: a listening socket leads to its
process, and a process's CPU grows as it works."""

from __future__ import annotations

import os

import trio

from bench.measure import listening_pids, own_cpu, process_cpu, sample_cpu


async def test_a_loopback_listener_is_found_by_its_address() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        sock = listeners[0].socket
        port = sock.getsockname()[1]
        assert listening_pids(f"127.0.0.1:{port}") == [os.getpid()]
        assert listening_pids(f"127.0.0.2:{port}") == []  # bound to 127.0.0.1 only
        assert listening_pids(f"10.1.2.3:{port}") == []  # not this machine's loopback
    finally:
        for listener in listeners:
            await listener.aclose()
    assert listening_pids(f"127.0.0.1:{port}") == []


def test_this_process_cpu_from_proc_agrees_with_os_times() -> None:
    before = sample_cpu([os.getpid()])
    deadline = own_cpu().total_s + 0.05
    while own_cpu().total_s < deadline:  # burn 50 ms of CPU
        pass
    after = process_cpu(os.getpid())
    assert after is not None and before.others[0][1] is not None
    spent = (after - before.others[0][1]).total_s
    assert 0.03 <= spent <= 1.0  # clock ticks are 10 ms
    assert process_cpu(2**22 + 1) is None  # no such pid: above the kernel's PID_MAX_LIMIT
