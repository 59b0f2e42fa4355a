"""``rmq namesrv`` as a real process: ready line, served over the wire, clean stop on signals."""

from __future__ import annotations

import json
import re
import signal

import pytest
import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import GetRouteInfoRequestHeader
from protocol.rpc import open_client
from tests.support import FakeBroker, topic_config
from tests.support.processes import START_TIMEOUT_S, ManagedProcess, namesrv_process

pytestmark = pytest.mark.integration

#: Bounds everything a test does once the process is up.
DEADLINE_S = 30.0
#: A clean stop must not need SIGKILL; this is how long it may take.
STOP_WITHIN_S = 10.0

BROKER = FakeBroker(name="broker-a", addr="127.0.0.1:10911", topics=(topic_config("ProcTopic", 4),))


def route_request(topic: str) -> RemotingCommand:
    header = GetRouteInfoRequestHeader(topic=topic)
    return RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, header.to_ext_fields())


async def test_ready_line_then_routes_over_the_wire() -> None:
    with trio.fail_after(START_TIMEOUT_S + DEADLINE_S):
        async with namesrv_process() as proc, open_client(default_timeout_s=10.0) as client:
            assert proc.host == "127.0.0.1" and proc.port > 0
            assert proc.stdout.lines == [
                f"The Name Server boot success. address=127.0.0.1:{proc.port}"
            ]

            response = await client.call(proc.address, route_request("ProcTopic"))
            assert response.code == ResponseCode.TOPIC_NOT_EXIST
            assert "ProcTopic" in (response.remark or "")

            await BROKER.register(client, proc.address, compressed=True)
            response = await client.call(proc.address, route_request("ProcTopic"))
            assert response.code == ResponseCode.SUCCESS, response.remark
            assert json.loads(response.body) == BROKER.route_json("ProcTopic")
            await proc.wait_for_line(f"serving on 127.0.0.1:{proc.port}", timeout_s=DEADLINE_S)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_cleanly(signum: signal.Signals) -> None:
    with trio.fail_after(START_TIMEOUT_S + DEADLINE_S):
        async with namesrv_process() as proc:
            # A registered broker with an open connection must not hold the stop up.
            async with open_client(default_timeout_s=10.0) as client:
                await BROKER.register(client, proc.address)
                returncode = await proc.stop(signum, timeout_s=STOP_WITHIN_S)
                assert_clean_exit(proc, returncode, signum)
            await assert_port_closed(proc.port)


def assert_clean_exit(proc: ManagedProcess, returncode: int, signum: signal.Signals) -> None:
    assert not proc.killed, proc.describe(f"{signum.name} did not stop it in {STOP_WITHIN_S} s")
    assert returncode == 0, proc.describe(f"exit status {returncode} after {signum.name}")
    # Logged with the node's name and bound port (STYLE.md: every line carries the node).
    stop_line = rf"\[namesrv 127\.0\.0\.1:{proc.port}\] .*received {signum.name}, stopping"
    assert re.search(stop_line, proc.stderr.text), proc.describe("no stop log line")
    assert "Traceback" not in proc.stderr.text, proc.describe("traceback on stop")


async def assert_port_closed(port: int) -> None:
    with pytest.raises(OSError):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()
