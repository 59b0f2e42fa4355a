"""A real broker process runs out of file descriptors and lives (issue 13 row 3).

20,000 idle TCP connections once ended a broker: a background task (the checkpoint write)
got EMFILE and the process exited "Too many open files". Here the broker runs with a
small descriptor limit and the test holds more idle connections than it has left.

By default the broker's connection cap (half its descriptor limit) refuses the excess
before it runs out. Set above the limit (``serverMaxConnections``), the descriptors do run
out: its background tasks fail and start again (logged), sends on an open connection still
work, and once the connections go, everything does again: nothing lost, clean stop.
"""

from __future__ import annotations

import signal
import socket
import sys
from contextlib import AbstractAsyncContextManager, ExitStack
from pathlib import Path

import pytest
import trio

from launcher.child import ManagedProcess
from launcher.ready import BROKER_READY
from protocol.codes import ResponseCode
from protocol.rpc import open_client, split_address
from tests.integration.broker_wire import broker_argv, create_topic, pull_all, send_message
from tests.support.processes import managed_process, namesrv_process

pytestmark = pytest.mark.integration

#: Descriptors the broker may have: enough to start, far fewer than the idle connections.
FD_LIMIT = 128
IDLE_CONNECTIONS = 300
TEST_TIMEOUT_S = 120.0

_WITH_FD_LIMIT = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[1]))); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def idle_connections(stack: ExitStack, addr: str, count: int) -> None:
    """Open ``count`` TCP connections that never send a byte (closed with ``stack``)."""
    host, port = split_address(addr)
    for _ in range(count):
        sock = stack.enter_context(socket.socket())
        sock.setblocking(False)
        sock.connect_ex((host, port))


def limited_broker(
    namesrv: str, store: Path, *extra: str
) -> AbstractAsyncContextManager[ManagedProcess]:
    """``rmq broker`` on ``store`` with at most ``FD_LIMIT`` descriptors."""
    argv = [
        sys.executable,
        "-c",
        _WITH_FD_LIMIT,
        str(FD_LIMIT),
        *broker_argv(namesrv, store, *extra),
    ]
    return managed_process(argv, name="broker", ready=BROKER_READY)


async def test_broker_survives_running_out_of_descriptors(tmp_path: Path) -> None:
    store = tmp_path / "store"
    conf = tmp_path / "broker.toml"
    conf.write_text(f"serverMaxConnections = {10 * FD_LIMIT}\n")
    with trio.fail_after(TEST_TIMEOUT_S):
        async with namesrv_process() as namesrv:
            async with (
                limited_broker(namesrv.address, store, "-c", str(conf)) as broker,
                open_client(name="fd-test", default_timeout_s=10.0) as client,
            ):
                addr = broker.address
                await create_topic(client, addr, "T", 1)
                sent = await send_message(client, addr, "T", 0, "before", b"before")
                assert sent.code == ResponseCode.SUCCESS, sent.remark
                with ExitStack() as stack:
                    idle_connections(stack, addr, IDLE_CONNECTIONS)
                    await broker.wait_for_line("ran out of file descriptors", timeout_s=30.0)
                    # Out of descriptors: a send on a connection already open still works.
                    during = await send_message(client, addr, "T", 0, "during", b"during")
                    assert during.code == ResponseCode.SUCCESS, during.remark
                    await trio.sleep(3.0)  # several restarts of the failing tasks
                    assert broker.returncode is None, broker.describe("the broker exited")
                # The idle connections are gone: everything works again.
                after = await send_message(client, addr, "T", 0, "after", b"after")
                assert after.code == ResponseCode.SUCCESS, after.remark
                bodies = [r.body for r in (await pull_all(client, addr, "T", 1))[0]]
                assert bodies == [b"before", b"during", b"after"]
                broker.send_signal(signal.SIGTERM)
                assert await broker.wait() == 0, broker.describe("unclean stop")
            # Durable: a broker started again on the store (no limit) has every message.
            async with (
                managed_process(
                    broker_argv(namesrv.address, store), name="broker", ready=BROKER_READY
                ) as again,
                open_client(name="fd-test-2", default_timeout_s=10.0) as client,
            ):
                records = (await pull_all(client, again.address, "T", 1))[0]
                assert [r.body for r in records] == [b"before", b"during", b"after"]


async def test_broker_connection_cap_refuses_before_descriptors_run_out(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with (
            namesrv_process() as namesrv,
            limited_broker(namesrv.address, tmp_path / "store") as broker,
            open_client(name="fd-cap-test", default_timeout_s=10.0) as client,
        ):
            addr = broker.address
            await create_topic(client, addr, "T", 1)
            with ExitStack() as stack:
                idle_connections(stack, addr, IDLE_CONNECTIONS)
                await broker.wait_for_line("refused a connection", timeout_s=30.0)
                sent = await send_message(client, addr, "T", 0, "m", b"m")
                assert sent.code == ResponseCode.SUCCESS, sent.remark
                assert "ran out of file descriptors" not in broker.stderr.text
            broker.send_signal(signal.SIGTERM)
            assert await broker.wait() == 0, broker.describe("unclean stop")
