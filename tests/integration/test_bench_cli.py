"""``rmq bench produce`` and ``rmq bench consume`` against a real ``rmq namesrv`` and
``rmq broker``: per-second lines as RocketMQ's benchmarks word them, the OMB-keyed JSON,
every message sent is consumed, and failures are one line."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.processes import (
    START_TIMEOUT_S,
    managed_process,
    namesrv_process,
    rmq_argv,
    run_command,
)

pytestmark = pytest.mark.integration

BROKER_READY = re.compile(
    r"The broker\[(?P<name>[^,\]]+), (?P<host>[0-9.]+):(?P<port>[0-9]+)\] boot success\."
)
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
COUNT = 2000
#: Slow enough that the producer runs ~4 s, so both commands print per-second lines.
RATE = 500
RUN_TIMEOUT_S = 60.0


@pytest.fixture
async def namesrv(tmp_path: Path) -> AsyncIterator[str]:
    """A NameServer and one ASYNC_FLUSH broker on free ports; the NameServer's address."""
    with trio.fail_after(2 * START_TIMEOUT_S + 10):
        async with namesrv_process() as ns:
            argv = rmq_argv(
                "broker", "-n", ns.address, "--port", "0", "--cluster", "BenchCluster",
                "--dir", str(tmp_path / "broker-a"), "--flush", "ASYNC_FLUSH",
            )  # fmt: skip
            async with managed_process(argv, name="broker", ready=BROKER_READY):
                yield ns.address


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


async def test_everything_produced_is_consumed_and_reported(namesrv: str, tmp_path: Path) -> None:
    def bench(*args: str) -> list[str]:
        return rmq_argv("bench", *args, "-n", namesrv, "-t", "BenchT")

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

    produced = load(tmp_path / "p.json")
    assert produced.keys() >= OMB_PUBLISH_KEYS
    assert produced["sent"] == COUNT and produced["failed"] == 0
    assert produced["sendStatusCounts"] == {"SEND_OK": COUNT}
    assert produced["partitions"] == 4
    assert max(produced["publishRate"]) <= RATE * 1.1, produced["publishRate"]
    consumed = load(tmp_path / "c.json")
    assert consumed.keys() >= OMB_CONSUME_KEYS
    assert consumed["consumed"] == COUNT


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
