"""``rmq`` as its users run it: real processes, real output, one-line errors."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from functools import partial
from importlib.metadata import version

import pytest
import trio

from protocol.rpc import open_client
from tests.support import FakeBroker, topic_config
from tests.support.processes import (
    START_TIMEOUT_S,
    Completed,
    namesrv_process,
    rmq_argv,
    run_command,
    run_command_sync,
)

pytestmark = pytest.mark.integration

#: One CLI run: interpreter start-up plus one request, on a slow machine.
CLI_TIMEOUT_S = 60.0

MASTER_A = FakeBroker(
    name="broker-a",
    addr="127.0.0.1:10911",
    topics=(topic_config("CliTopic", 4), topic_config("Shared", 2)),
)
SLAVE_A = FakeBroker(name="broker-a", broker_id=1, addr="127.0.0.1:20911", topics=MASTER_A.topics)
MASTER_B = FakeBroker(
    cluster="OtherCluster",
    name="broker-b",
    addr="127.0.0.1:30911",
    topics=(topic_config("Shared", 8, perm=4),),
)


@pytest.fixture
async def namesrv() -> AsyncIterator[str]:
    """A live ``rmq namesrv`` with three brokers registered (connections held open)."""
    with trio.fail_after(START_TIMEOUT_S + 10):
        async with namesrv_process() as proc, open_client(default_timeout_s=10.0) as client:
            for broker in (MASTER_A, SLAVE_A, MASTER_B):
                await broker.register(client, proc.address)
            yield proc.address


async def rmq(*args: str) -> Completed:
    return await run_command(rmq_argv(*args), timeout_s=CLI_TIMEOUT_S)


def assert_ok(done: Completed) -> str:
    assert done.returncode == 0, done.describe()
    assert "Traceback" not in done.stderr, done.describe()
    return done.stdout


def assert_one_line_error(done: Completed, *needles: str) -> None:
    """Exit status 1, nothing on stdout, one ``error: ...`` line on stderr with ``needles``."""
    assert done.returncode == 1, done.describe()
    assert done.stdout == "", done.describe()
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.describe()
    for needle in needles:
        assert needle in lines[0], done.describe()


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of a padded table (columns at least two spaces apart), header first."""
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines() if line.strip()]


# --- happy paths ---------------------------------------------------------------------------


def test_version() -> None:
    done = run_command_sync(rmq_argv("--version"), timeout_s=CLI_TIMEOUT_S)
    assert assert_ok(done) == f"rmq (trio-rocketmq) {version('trio-rocketmq')}\n"


async def test_cluster_list(namesrv: str) -> None:
    # The fake brokers only registered: their runtime columns are unknown, the list still
    # comes out (runtime info itself is covered by test_admin_cli.py with a real broker).
    rows = table_rows(assert_ok(await rmq("admin", "clusterList", "-n", namesrv)))
    assert rows[0][:4] == ["#Cluster Name", "#Broker Name", "#BID", "#Addr"]
    assert [row[:4] for row in rows[1:]] == [
        ["DefaultCluster", "broker-a", "0", MASTER_A.addr],
        ["DefaultCluster", "broker-a", "1", SLAVE_A.addr],
        ["OtherCluster", "broker-b", "0", MASTER_B.addr],
    ]

    brokers = json.loads(assert_ok(await rmq("admin", "clusterList", "-n", namesrv, "--json")))
    assert [(b["cluster"], b["brokerName"], b["brokerId"], b["addr"]) for b in brokers] == [
        ("DefaultCluster", "broker-a", 0, MASTER_A.addr),
        ("DefaultCluster", "broker-a", 1, SLAVE_A.addr),
        ("OtherCluster", "broker-b", 0, MASTER_B.addr),
    ]


async def test_topic_route(namesrv: str) -> None:
    # A NameServer list whose first entry is dead: the next one answers.
    dead = await closed_port_address()
    rows = table_rows(
        assert_ok(await rmq("admin", "topicRoute", "-n", f"{dead};{namesrv}", "-t", "Shared"))
    )
    assert rows == [
        ["#ClusterName", "#BrokerName", "#BrokerAddrs", "#ReadQueue", "#WriteQueue", "#Perm"],
        ["DefaultCluster", "broker-a", f"0={MASTER_A.addr}, 1={SLAVE_A.addr}", "2", "2", "RW (6)"],
        ["OtherCluster", "broker-b", f"0={MASTER_B.addr}", "8", "8", "R- (4)"],
    ]

    done = await rmq("admin", "topicRoute", "-n", namesrv, "-t", "CliTopic", "--json")
    assert json.loads(assert_ok(done)) == MASTER_A.route_json("CliTopic", SLAVE_A)


# --- one-line errors -----------------------------------------------------------------------


async def test_unknown_topic_is_one_line(namesrv: str) -> None:
    done = await rmq("admin", "topicRoute", "-n", namesrv, "-t", "NoSuchTopic")
    assert_one_line_error(done, "TOPIC_NOT_EXIST", "NoSuchTopic")


async def test_unreachable_namesrv_is_one_line() -> None:
    dead = await closed_port_address()
    done = await rmq("admin", "clusterList", "-n", dead)
    assert_one_line_error(done, "cannot connect", dead)


async def test_silent_namesrv_is_one_line_after_the_timeout() -> None:
    """A peer that accepts and never answers: the CLI gives up at its deadline."""

    async def hold(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        done = await rmq(
            "admin", "topicRoute", "-n", f"127.0.0.1:{port}", "-t", "T", "--timeout", "0.5"
        )
        nursery.cancel_scope.cancel()
    assert_one_line_error(done, "GET_ROUTEINFO_BY_TOPIC", "got no answer in 0.5 s")


@pytest.mark.parametrize("namesrv_arg", ["", " ; ", "no-port"], ids=["empty", "blank", "no-port"])
async def test_bad_namesrv_option_is_one_line(namesrv_arg: str) -> None:
    done = await rmq("admin", "clusterList", "-n", namesrv_arg)
    assert_one_line_error(done)


async def test_namesrv_on_a_busy_port_is_one_line() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        done = await rmq("namesrv", "--port", str(port))
    assert_one_line_error(done, f"cannot start the NameServer on 127.0.0.1:{port}", "in use")


async def closed_port_address() -> str:
    """A loopback address nobody listens on (bound once, then released)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return f"127.0.0.1:{port}"
