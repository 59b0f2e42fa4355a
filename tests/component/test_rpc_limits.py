"""Transport limits against hostile peers, over real loopback sockets (issue 13 rows 3, 9).

A flood of idle connections, half-sent 16 MiB frames, a peer over its byte budget, and a
process out of file descriptors: each is refused or closed with a logged reason, memory
stays within the configured budget, and a normal client keeps its normal latency. Real
sockets and real time (see test_rpc.py); every wait is under ``trio.fail_after``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from protocol.command import RemotingCommand
from protocol.frame import DEFAULT_MAX_FRAME_BYTES
from protocol.limits import (
    SMALL_READ_BYTES,
    BufferBudget,
    LogThrottle,
    TransportConfig,
    default_max_connections,
)
from protocol.rpc import Connection, RemotingServer, open_client
from tests.component.broker_fixtures import wait_until
from tests.component.test_rpc import ECHO, WAIT_S, echo, echo_request, raw_connect, serving

MiB = 1024 * 1024
#: A normal client's request must be answered this fast while the server is under attack
#: (a loopback echo takes ~1 ms; this allows a loaded CI machine).
NORMAL_LATENCY_S = 0.5


async def timed_echo(client: object, addr: str) -> float:
    """One echo call's latency in seconds (asserting its answer)."""
    start = trio.current_time()
    response = await client.call(addr, echo_request(b"normal"), timeout_s=5.0)  # type: ignore[attr-defined]
    assert response.body == b"normal"
    return trio.current_time() - start


def rss_bytes() -> int:
    """This process's resident set size, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@asynccontextmanager
async def captured_warnings(logger_name: str = "protocol.rpc") -> AsyncIterator[list[str]]:
    """The messages ``logger_name`` logs at WARNING or above inside the block."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# --- pure pieces --------------------------------------------------------------------------


def test_default_connection_cap_leaves_half_the_descriptors() -> None:
    assert default_max_connections(1024) == 512
    assert default_max_connections(20_000) == 10_000
    assert default_max_connections(1_048_576) == 10_000
    assert default_max_connections(-1) == 10_000  # RLIM_INFINITY
    assert default_max_connections(1) == 1
    assert TransportConfig(max_connections=7).connection_cap(1024) == 7


def test_config_refuses_budgets_below_one_frame() -> None:
    with pytest.raises(ValueError, match="max_connection_buffered_bytes"):
        TransportConfig(max_frame_bytes=2 * MiB, max_connection_buffered_bytes=MiB)
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        TransportConfig(max_connection_buffered_bytes=64 * MiB, max_buffered_bytes=32 * MiB)
    with pytest.raises(ValueError, match="frame_timeout_s"):
        TransportConfig(frame_timeout_s=0)


def test_budget_grants_within_both_limits_and_a_small_read_to_an_empty_connection() -> None:
    budget = BufferBudget(limit_bytes=100_000, connection_limit_bytes=60_000)
    assert budget.grant(0, 256 * 1024) == 60_000
    budget.settle(60_000, 50_000)  # read 50,000 bytes, all kept
    assert budget.grant(50_000, 256 * 1024) == 10_000
    budget.settle(10_000, 10_000)
    assert budget.held_bytes == 60_000
    assert budget.grant(60_000, 4096) == 0  # this connection is full
    assert budget.grant(0, 256 * 1024) == 40_000  # another one gets what is left
    assert budget.held_bytes == 100_000
    assert budget.grant(10, 4096) == 0  # server full, connection holds something
    assert budget.grant(0, 256 * 1024) == SMALL_READ_BYTES  # holds nothing: a small read
    budget.settle(SMALL_READ_BYTES, 0)  # the peer had sent nothing after all
    budget.settle(40_000, -20_000)  # read 40,000 bytes that completed 60,000 held ones...
    budget.release(40_000)  # ... which were responses, handed to their callers
    assert budget.held_bytes == 0


def test_log_throttle_counts_what_it_leaves_out() -> None:
    throttle = LogThrottle(10.0)
    assert throttle.admit(100.0) == 0
    assert [throttle.admit(100.0 + i) for i in range(1, 6)] == [None] * 5
    assert throttle.admit(110.0) == 5
    assert throttle.admit(115.0) is None
    assert throttle.admit(120.5) == 1


# --- connection caps ------------------------------------------------------------------------


async def test_idle_connections_past_the_cap_are_refused_and_a_client_is_served() -> None:
    """Row 3: a flood of idle connections; the excess is closed at once, logged in a line."""
    cap, flood = 40, 400
    config = TransportConfig(max_connections=cap, max_connections_per_peer=10_000)
    async with (
        captured_warnings() as warnings,
        serving({ECHO: echo}, config=config) as (server, addr),
        open_client() as client,
    ):
        with trio.fail_after(WAIT_S * 3):
            await timed_echo(client, addr)  # the normal client holds one of the slots
            streams = [await raw_connect(addr) for _ in range(flood)]
            refused = 0
            latencies = []
            for stream in streams:
                with trio.move_on_after(0.05):
                    if await stream.receive_some(1) == b"":
                        refused += 1
                if len(latencies) < 20:
                    latencies.append(await timed_echo(client, addr))
            assert refused == flood - (cap - 1)
            assert server.refused_connections == refused
            assert len(server.connections) == cap
            assert max(latencies) < NORMAL_LATENCY_S, latencies
            for stream in streams:
                await stream.aclose()
            # Slots come back: a new client connects once the flood is gone.
            await wait_until(lambda: len(server.connections) == 1, what="flood gone")
            async with open_client() as second:
                await timed_echo(second, addr)
    refusals = [m for m in warnings if "refused a connection" in m]
    assert 1 <= len(refusals) <= 2, refusals  # one line per 10 s, with the count
    assert "max_connections=40" in refusals[0]


def _connect_from(source_ip: str, addr: str) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    sock = socket.socket()
    sock.bind((source_ip, 0))
    sock.connect((host, int(port)))
    return sock


async def test_one_address_cannot_take_every_slot() -> None:
    """Per-peer cap: 127.0.0.2 is refused past its share, 127.0.0.1 still connects."""
    config = TransportConfig(max_connections=100, max_connections_per_peer=5)
    async with (
        captured_warnings() as warnings,
        serving({ECHO: echo}, config=config) as (server, addr),
    ):
        with trio.fail_after(WAIT_S):
            socks = [_connect_from("127.0.0.2", addr) for _ in range(12)]
            try:
                await wait_until(lambda: server.refused_connections == 7, what="7 refused")
                async with open_client() as client:
                    assert await timed_echo(client, addr) < NORMAL_LATENCY_S
                    assert len(server.connections) == 6
            finally:
                for sock in socks:
                    sock.close()
    assert any("max_connections_per_peer=5" in m and "127.0.0.2" in m for m in warnings)


# --- frame deadline and byte budgets --------------------------------------------------------


#: Attackers in their own process: their 160 MiB of sends would otherwise share the event
#: loop with the server and the normal client, and the latency measured would be the test's.
#: Each thread sends a frame prefix and half of a 16 MiB frame, then reads until closed,
#: and prints the seconds from its first byte sent to the close.
_HALF_FRAME_ATTACKERS = textwrap.dedent(
    """
    import json, socket, struct, sys, threading, time

    host, port, peers, frame_bytes, give_up_s = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6])
    prefix = struct.pack(">iI", int(frame_bytes) - 4, 2) + b"{}"
    half = b"\\0" * (int(frame_bytes) // 2)
    closed_after = []

    def attack():
        sock = socket.create_connection((host, port), timeout=give_up_s)
        start = time.monotonic()
        try:
            sock.sendall(prefix)
            sock.sendall(half)  # blocks once the server stops reading (budget): the point
        except (socket.timeout, OSError):
            pass
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass  # reset: the server closed with our bytes unread
        closed_after.append(time.monotonic() - start)
        sock.close()

    threads = [threading.Thread(target=attack) for _ in range(int(peers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(closed_after), flush=True)
    """
)


async def test_half_sent_16_mib_frames_are_closed_after_the_deadline(tmp_path: Path) -> None:
    """Row 9: 20 peers announce 16 MiB frames and send half. Each is closed after the
    frame deadline with a logged reason; the bytes held never pass the server budget; a
    normal client is served throughout; the server lives on."""
    peers, budget_bytes = 20, 32 * MiB
    config = TransportConfig(
        frame_timeout_s=1.5,
        max_buffered_bytes=budget_bytes,
        max_connection_buffered_bytes=budget_bytes,
    )
    script = tmp_path / "attackers.py"
    script.write_text(_HALF_FRAME_ATTACKERS)
    rss_before = rss_bytes()
    peak_held = peak_rss = 0
    async with (
        captured_warnings() as warnings,
        serving({ECHO: echo}, config=config) as (server, addr),
        open_client() as client,
    ):
        host, port = addr.rsplit(":", 1)
        argv = [sys.executable, str(script), host, port, str(peers)]
        argv += [str(DEFAULT_MAX_FRAME_BYTES), str(config.frame_timeout_s * 3)]
        proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
        try:
            with trio.fail_after(WAIT_S * 3):
                latencies: list[float] = []
                while proc.poll() is None:
                    peak_held = max(peak_held, server.buffered_bytes)
                    peak_rss = max(peak_rss, rss_bytes())
                    latencies.append(await timed_echo(client, addr))
                    await trio.sleep(0.05)
                assert proc.returncode == 0
                assert proc.stdout is not None
                output = b""
                while chunk := await proc.stdout.receive_some():
                    output += chunk
                closed_after: list[float] = json.loads(output)
                await wait_until(lambda: server.buffered_bytes == 0, what="budget released")
                assert len(server.connections) == 1  # the normal client's
                await timed_echo(client, addr)
        finally:
            proc.kill()
            await proc.wait()
    assert len(closed_after) == peers
    assert peak_held <= budget_bytes + peers * SMALL_READ_BYTES, peak_held
    # Unbounded, the server would hold 20 x 8 MiB = 160 MiB here; the slack covers the
    # allocator's share of this one process's RSS on a busy machine.
    assert peak_rss - rss_before < budget_bytes + 64 * MiB, (peak_rss - rss_before) / MiB
    assert min(closed_after) >= config.frame_timeout_s * 0.9
    assert max(latencies) < NORMAL_LATENCY_S, max(latencies)
    reasons = [m for m in warnings if "was not completed within 1.5 s" in m]
    assert reasons and "a frame of 16777216 bytes" in reasons[0], warnings


async def test_a_connection_over_its_budget_is_not_read_until_its_handlers_finish() -> None:
    """Back-pressure, not buffering: requests past the per-connection budget wait in TCP;
    the frame clock stands still meanwhile (our own slowness, not the peer's)."""
    frame_bytes = MiB
    config = TransportConfig(
        max_frame_bytes=2 * MiB,
        max_connection_buffered_bytes=3 * MiB,
        frame_timeout_s=0.3,
    )
    release = trio.Event()
    started = 0

    async def hold(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        nonlocal started
        started += 1
        await release.wait()
        return request.respond(body=b"done")

    async with (
        serving({ECHO: echo, 7100: hold}, config=config) as (server, addr),
        open_client() as client,
    ):
        with trio.fail_after(WAIT_S):
            answers: list[bytes] = []

            async def call() -> None:
                request = RemotingCommand.request(7100, body=b"x" * frame_bytes)
                response = await client.call(addr, request, timeout_s=WAIT_S)
                answers.append(response.body)

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(call)
                await trio.sleep(1.0)  # > frame_timeout_s: nobody is closed for it
                (conn,) = server.connections.values()
                assert started <= 3
                assert conn.buffered_bytes <= config.max_connection_buffered_bytes
                assert server.buffered_bytes <= config.max_connection_buffered_bytes
                release.set()
            assert answers == [b"done"] * 6
            assert server.buffered_bytes == 0


async def test_slow_peer_dribbling_a_frame_is_closed() -> None:
    """One byte now and then never completes a frame: the deadline counts from its first."""
    config = TransportConfig(frame_timeout_s=0.5)
    async with (
        captured_warnings() as warnings,
        serving({ECHO: echo}, config=config) as (server, addr),
    ):
        with trio.fail_after(WAIT_S):
            frame = echo_request().encode()
            async with await raw_connect(addr) as stream:
                start = trio.current_time()
                try:
                    for byte in frame:
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.1)
                except trio.BrokenResourceError:
                    pass
                assert await stream.receive_some(100) == b""
                assert 0.45 <= trio.current_time() - start < 2.0
            assert server.buffered_bytes == 0
    assert any("was not completed within 0.5 s" in m for m in warnings)


# --- out of descriptors ---------------------------------------------------------------------

_EMFILE_SERVER = textwrap.dedent(
    """
    import logging, resource, sys
    import trio
    from protocol.limits import TransportConfig
    from protocol.rpc import RemotingServer

    async def echo(request, conn):
        return request.respond(body=request.body)

    async def main():
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        # A descriptor limit far below the connection cap: accept() meets EMFILE.
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        config = TransportConfig(max_connections=1000, max_connections_per_peer=1000)
        server = RemotingServer({7001: echo}, name="emfile", config=config)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            print(port, flush=True)
            await trio.sleep(60)

    trio.run(main)
    """
)


async def test_running_out_of_descriptors_at_accept_is_not_fatal(tmp_path: Path) -> None:
    """Row 3: accept() fails with EMFILE; the server backs off, logs it once per
    interval, and serves again once descriptors are free."""
    script = tmp_path / "server.py"
    script.write_text(_EMFILE_SERVER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(WAIT_S):
            port = int(await trio.to_thread.run_sync(proc.stdout.readline))
            addr = f"127.0.0.1:{port}"
            # Far more connections than the server has descriptors for.
            streams = [await raw_connect(addr) for _ in range(80)]
            await trio.sleep(0.5)
            assert proc.poll() is None, "the server died"
            for stream in streams:
                await stream.aclose()
            async with open_client() as client:
                response = await client.call(addr, echo_request(b"alive"), timeout_s=WAIT_S)
            assert response.body == b"alive"
            assert proc.poll() is None
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=WAIT_S)
    lines = [line for line in stderr.splitlines() if "accept failed: EMFILE" in line]
    assert 1 <= len(lines) <= 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]


async def test_server_config_caps_are_visible() -> None:
    server = RemotingServer({}, name="caps", config=TransportConfig(max_connections=3))
    assert server.max_connections == 3
    assert RemotingServer({}, name="default").max_connections >= 1
