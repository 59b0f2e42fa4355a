"""``rmq bench produce`` and ``rmq bench consume`` against a real ``rmq namesrv`` and
``rmq broker``: per-second lines as RocketMQ's benchmarks word them, the OMB-keyed JSON,
every message sent is consumed, and failures are one line."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from launcher.ready import BROKER_READY
from tests.support.processes import (
    START_TIMEOUT_S,
    managed_process,
    namesrv_process,
    rmq_argv,
    run_command,
)

pytestmark = pytest.mark.integration

TIME = r"Current Time: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
SEND_LINE = re.compile(
    rf"^{TIME} \| Send TPS: \d+ \| Max RT\(ms\): \d+ \| Average RT\(ms\): +\d+\.\d{{3}} "
    r"\| Send Failed: 0 \| Response Failed: 0$"
)
CONSUME_LINE = re.compile(
    rf"^{TIME} \| Consume TPS: \d+ \| AVG\(B2C\) RT\(ms\): +\d+\.\d{{3}} \| "
    r"AVG\(S2C\) RT\(ms\): +\d+\.\d{3} \| MAX\(B2C\) RT\(ms\): \d+ \| MAX\(S2C\) RT\(ms\): \d+ "
    r"\| Consume Fail: 0$"
)
OMB_PUBLISH_KEYS = {
    "publishRate",
    "consumeRate",
    "backlog",
    *(f"publishLatency{s}" for s in ("Avg", "50pct", "75pct", "95pct", "99pct", "999pct")),
    *(f"aggregatedPublishLatency{s}" for s in ("Avg", "50pct", "99pct", "9999pct", "Max")),
    "aggregatedPublishLatencyQuantiles",
    "messageSize",
    "concurrency",
    "batch",
    "sent",
    "failed",
    "durationSeconds",
    "sendStatusCounts",
}
OMB_CONSUME_KEYS = {
    "consumeRate",
    *(f"endToEndLatency{s}" for s in ("Avg", "50pct", "99pct", "999pct", "Max")),
    *(f"aggregatedEndToEndLatency{s}" for s in ("Avg", "50pct", "99pct", "999pct", "Max")),
}
CPU_LINE = r"CPU\(us/msg\): client \d+\.\d\d \| broker \d+\.\d\d \(pid (?P<pid>\d+)\)"
COUNT = 2000
#: Slow enough that the producer runs ~4 s, so both commands print per-second lines.
RATE = 500
RUN_TIMEOUT_S = 60.0


@attrs.frozen
class Local:
    namesrv: str
    broker_pid: int


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    """A NameServer and one ASYNC_FLUSH broker on free ports."""
    with trio.fail_after(2 * START_TIMEOUT_S + 10):
        async with namesrv_process() as ns:
            argv = rmq_argv(
                "broker", "-n", ns.address, "--port", "0", "--cluster", "BenchCluster",
                "--dir", str(tmp_path / "broker-a"), "--flush", "ASYNC_FLUSH",
            )  # fmt: skip
            async with managed_process(argv, name="broker", ready=BROKER_READY) as broker:
                yield Local(namesrv=ns.address, broker_pid=broker.pid)


@pytest.fixture
def namesrv(local: Local) -> str:
    """The NameServer's address."""
    return local.namesrv


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


async def test_everything_produced_is_consumed_and_reported(local: Local, tmp_path: Path) -> None:
    def bench(*args: str) -> list[str]:
        return rmq_argv("bench", *args, "-n", local.namesrv, "-t", "BenchT")

    with trio.fail_after(RUN_TIMEOUT_S * 2):
        # Create the topic (one message), then consume from its end while COUNT are sent:
        # a consumer started only after the sends would print no per-second line.
        done = await run_command(bench("produce", "--create-topic", "4", "--count", "1"))
        assert done.returncode == 0 and "Send Total: 1 |" in done.stdout, done.describe()
        consume_argv = bench(
            "consume", "-g", "bench_it", "--from", "last", "--count", str(COUNT),
            "--out", str(tmp_path / "c.json"),
        )  # fmt: skip
        async with managed_process(consume_argv, name="consume") as consumer:
            await consumer.wait_for_line(CONSUME_LINE, stream="stdout")
            produce_argv = bench(
                "produce", "--count", str(COUNT), "--rate", str(RATE),
                "--out", str(tmp_path / "p.json"),
            )  # fmt: skip
            async with managed_process(produce_argv, name="produce") as producer:
                assert await producer.wait() == 0, producer.describe("produce failed")
            assert await consumer.wait() == 0, consumer.describe("consume failed")

    for proc, pattern in ((producer, SEND_LINE), (consumer, CONSUME_LINE)):
        out = proc.stdout.text
        per_second = [line for line in out.splitlines() if line.startswith("Current Time:")]
        assert per_second, proc.describe("no per-second line")
        assert all(pattern.match(line) for line in per_second), proc.describe("bad lines")
        assert "[Complete]" in out and not proc.stderr.text, proc.describe("no summary")
        # The broker listens on 127.0.0.1: found through /proc, its CPU read from there.
        cpu = re.search(rf"^{CPU_LINE}$", out, re.MULTILINE)
        assert cpu and int(cpu["pid"]) == local.broker_pid, proc.describe("no CPU line")

    produced = load(tmp_path / "p.json")
    assert produced.keys() >= OMB_PUBLISH_KEYS
    assert produced["sent"] == COUNT and produced["failed"] == 0
    assert produced["sendStatusCounts"] == {"SEND_OK": COUNT}
    assert produced["partitions"] == 4
    assert max(produced["publishRate"]) <= RATE * 1.1, produced["publishRate"]
    consumed = load(tmp_path / "c.json")
    assert consumed.keys() >= OMB_CONSUME_KEYS
    assert consumed["consumed"] == COUNT
    for result in (produced, consumed):
        assert result["brokerPids"] == [local.broker_pid]
        assert result["clientCpuUsPerMsg"] > 0 and result["brokerCpuUsPerMsg"] > 0
        assert result["brokerCpuSeconds"] > 0 and result["clientCpuSeconds"] > 0


async def test_a_given_broker_pid_is_read_instead_of_the_one_found(local: Local) -> None:
    # Any readable process will do: this one (pytest) is not the broker the route names.
    argv = rmq_argv(
        "bench", "produce", "-n", local.namesrv, "-t", "PidT", "--create-topic", "2",
        "--count", "50", "--broker-pid", str(os.getpid()), "--json",
    )  # fmt: skip
    done = await run_command(argv, timeout_s=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.describe()
    result = json.loads(done.stdout)
    assert result["sent"] == 50 and result["brokerPids"] == [os.getpid()]
    assert result["brokerCpuUsPerMsg"] is not None
    cpu = re.search(rf"^{CPU_LINE}$", done.stderr, re.MULTILINE)
    assert cpu and int(cpu["pid"]) == os.getpid(), done.describe()


async def test_unreachable_namesrv_is_one_error_line() -> None:
    for command in ("produce", "consume"):
        done = await run_command(
            rmq_argv("bench", command, "-n", "127.0.0.1:1", "--count", "10"),
            timeout_s=RUN_TIMEOUT_S,
        )
        assert done.returncode == 1, done.describe()
        assert done.stderr.count("\n") == 1, done.describe()
        assert done.stderr.startswith("error: ") and "127.0.0.1:1" in done.stderr
        assert "Current Time" not in done.stdout


async def test_missing_topic_says_how_to_create_it(namesrv: str) -> None:
    done = await run_command(
        rmq_argv("bench", "produce", "-n", namesrv, "-t", "NoSuchTopic", "--count", "1"),
        timeout_s=RUN_TIMEOUT_S,
    )
    assert done.returncode == 1, done.describe()
    assert done.stderr.count("\n") == 1, done.describe()
    assert "rmq admin updateTopic" in done.stderr and "--create-topic" in done.stderr


async def test_the_default_topic_can_be_created_and_consumed(namesrv: str) -> None:
    # No -t: the default topic is not a system topic, so --create-topic works, and
    # `rmq bench consume` reads the same default topic.
    with trio.fail_after(RUN_TIMEOUT_S * 2):
        produced = await run_command(
            rmq_argv("bench", "produce", "-n", namesrv, "--create-topic", "2", "--count", "20")
        )
        assert produced.returncode == 0, produced.describe()
        assert "Send Total: 20 |" in produced.stdout, produced.describe()
        consumed = await run_command(
            rmq_argv("bench", "consume", "-n", namesrv, "--count", "20", "--json")
        )
    assert consumed.returncode == 0, consumed.describe()
    assert json.loads(consumed.stdout)["consumed"] == 20


async def test_a_system_topic_cannot_be_created_and_the_error_says_so(namesrv: str) -> None:
    # RocketMQ's benchmark topic: on every broker already, refused by updateTopic.
    argv = rmq_argv(
        "bench", "produce", "-n", namesrv, "-t", "BenchmarkTest", "--create-topic", "2",
        "--count", "1",
    )  # fmt: skip
    done = await run_command(argv, timeout_s=RUN_TIMEOUT_S)
    assert done.returncode == 1, done.describe()
    assert done.stderr.count("\n") == 1, done.describe()
    assert "conflict with system topic" in done.stderr and "-t" in done.stderr, done.describe()
