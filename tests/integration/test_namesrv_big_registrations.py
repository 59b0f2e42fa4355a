"""A NameServer process under oversized registrations (issue 13 row 10), over real sockets.

REGISTER_BROKER with 150,000 topics, sent three times at once: route lookups of another
client keep their normal latency (they waited 1.1-1.6 s per registration before), the
process stays alive and its memory bounded. With the default limit (100,000 topics per
broker) the registrations are refused after reading their topic count; with a higher limit
they are decoded and applied in slices.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import GetRouteInfoRequestHeader
from protocol.rpc import RemotingClient, open_client
from tests.support import FakeBroker, topic_config
from tests.support.processes import NAMESRV_READY, ManagedProcess, managed_process

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("namesrv_big_registrations_child.py")
DEADLINE_S = 120.0
TOPICS = 150_000
#: Route lookups while the registrations are processed: nearly all within 100 ms (~1 ms
#: when idle), none near the 1.1-1.6 s each registration used to stall them. The maximum
#: (under half that stall) leaves room for the OS scheduler of a loaded 2-core machine,
#: which is not ours to fix: CI's three test workers once put one lookup at 268 ms.
LOOKUP_P95_S = 0.1
LOOKUP_MAX_S = 0.5

SMALL = FakeBroker(name="broker-small", addr="127.0.0.1:10911", topics=(topic_config("Small", 4),))


@functools.cache
def big_register_request() -> RemotingCommand:
    """REGISTER_BROKER of a broker with 150,000 topics, compressed as a Java broker does.

    Only the request is kept: 150,000 TopicConfig objects alive in this process would
    make its own GC pauses part of the latencies measured.
    """
    big = FakeBroker(
        name="broker-big",
        addr="127.0.0.1:20911",
        topics=tuple(topic_config(f"topic-{i:06d}", 8) for i in range(TOPICS)),
    )
    return big.register_request(compressed=True)


def route_request(topic: str) -> RemotingCommand:
    header = GetRouteInfoRequestHeader(topic=topic)
    return RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, header.to_ext_fields())


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@attrs.frozen(kw_only=True)
class Run:
    proc: ManagedProcess
    client: RemotingClient
    answers: list[RemotingCommand]
    rss_growth: int


def child(limits: dict[str, int]) -> AbstractAsyncContextManager[ManagedProcess]:
    return managed_process(
        [sys.executable, str(CHILD), json.dumps(limits)],
        name="namesrv",
        ready=NAMESRV_READY,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


async def register_three_times_while_looking_up(
    proc: ManagedProcess, broker: RemotingClient, client: RemotingClient
) -> tuple[list[RemotingCommand], list[float], int]:
    """The three registrations' answers, every lookup latency meanwhile, peak RSS.

    The broker's connection stays open afterwards: its closing would unregister it.
    """
    request = big_register_request()
    gc.collect()
    answers: list[RemotingCommand] = []
    latencies: list[float] = []
    peak_rss = 0

    async def register() -> None:
        answers.append(await broker.call(proc.address, request, timeout_s=60.0))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(register)
        while len(answers) < 3:
            start = trio.current_time()
            response = await client.call(proc.address, route_request("Small"))
            latencies.append(trio.current_time() - start)
            assert response.code == ResponseCode.SUCCESS, response.remark
            peak_rss = max(peak_rss, rss_bytes(proc.pid))
            await trio.sleep(0.01)
    return answers, latencies, peak_rss


def assert_lookups_kept_their_latency(latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95)]
    assert p95 < LOOKUP_P95_S and ordered[-1] < LOOKUP_MAX_S, (len(ordered), p95, ordered[-5:])


@asynccontextmanager
async def three_big_registrations(limits: dict[str, int]) -> AsyncIterator[Run]:
    """A NameServer process with ``limits``: one small broker registered, then the big
    one three times at once while another client looks routes up."""
    async with (
        child(limits) as proc,
        open_client(default_timeout_s=10.0) as client,
        open_client(default_timeout_s=60.0) as broker,
    ):
        await SMALL.register(client, proc.address)
        rss_before = rss_bytes(proc.pid)
        answers, latencies, peak_rss = await register_three_times_while_looking_up(
            proc, broker, client
        )
        assert_lookups_kept_their_latency(latencies)
        yield Run(proc=proc, client=client, answers=answers, rss_growth=peak_rss - rss_before)
        assert proc.returncode is None


async def test_oversized_registrations_are_refused_without_stalling_lookups() -> None:
    with trio.fail_after(DEADLINE_S):
        async with three_big_registrations({}) as run:
            for answer in run.answers:
                assert answer.code == ResponseCode.SYSTEM_ERROR
                assert "150000 topics exceed the limit of 100000" in (answer.remark or "")
            assert run.rss_growth < 64 * 1024 * 1024, run.rss_growth >> 20
            routes = await run.client.call(run.proc.address, route_request("topic-000001"))
            assert routes.code == ResponseCode.TOPIC_NOT_EXIST
    assert "rejected registration of broker-big" in run.proc.stderr.text


async def test_large_registrations_are_applied_in_slices() -> None:
    with trio.fail_after(DEADLINE_S):
        async with three_big_registrations({"max_topics_per_broker": 200_000}) as run:
            assert [a.code for a in run.answers] == [ResponseCode.SUCCESS] * 3
            # 150,000 routes, and decodes in flight: well under 200 MB.
            assert run.rss_growth < 200 * 1024 * 1024, run.rss_growth >> 20
            last = route_request(f"topic-{TOPICS - 1:06d}")
            route = await run.client.call(run.proc.address, last)
            assert route.code == ResponseCode.SUCCESS
            assert json.loads(route.body)["queueDatas"][0]["writeQueueNums"] == 8
