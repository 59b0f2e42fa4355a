"""Slow and hostile clients against the two HTTP ports: the metrics exporter
(cli/metrics_http.py) and the dashboard (dashboard/app.py on hypercorn, with the config
dashboard/server.py uses), real servers on 127.0.0.1, port 0, in this process.

A slowloris (connections that send part of a head and never finish it), a body announced
and never sent or trickled, and a huge head each cost a bounded time and bounded memory,
and a normal request is still answered at once.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.trio import serve as hypercorn_serve

from cli.metrics_http import MAX_CONNECTIONS, MAX_HEAD_BYTES, serve_metrics
from dashboard.app import MAX_BODY_BYTES, DashboardApp
from dashboard.model import Dashboard
from dashboard.server import hypercorn_config
from protocol.metrics import new_registry
from tests.component.test_rpc import raw_connect, seconds_until_closed
from tests.support.scrape import scrape_text

DEADLINE_S = 30.0
HOST = "127.0.0.1"
#: Connections of one slowloris: well past the exporter's cap.
SLOW_CONNECTIONS = 200
#: What a normal request may take while the slowloris holds its connections.
ANSWER_S = 2.0
HEAD_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 1.0


async def _partial_heads(address: str, count: int, path: str) -> list[trio.SocketStream]:
    """``count`` connections, each holding a head it never finishes."""
    streams = []
    for _ in range(count):
        stream = await raw_connect(address)
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
        streams.append(stream)
    return streams


async def _close_times(streams: list[trio.SocketStream], limit_s: float) -> list[float | None]:
    """Seconds from now until the server closed each stream (None: still open at
    ``limit_s``); then the streams are closed on our side too."""
    times: list[float | None] = [None] * len(streams)

    async def watch(i: int) -> None:
        times[i] = await seconds_until_closed(streams[i], limit_s)
        await streams[i].aclose()

    async with trio.open_nursery() as nursery:
        for i in range(len(streams)):
            nursery.start_soon(watch, i)
    return times


async def _exchange(
    address: str, request: bytes, limit_s: float, *, trickle_s: float | None = None
) -> bytes:
    """Send ``request`` (then, with ``trickle_s``, one more byte every ``trickle_s``) and
    read the answer until the server closes; b"" when it did not within ``limit_s``."""
    answer = b""
    stream = await raw_connect(address)
    async with stream, trio.open_nursery() as nursery:

        async def write() -> None:
            try:
                await stream.send_all(request)
                while trickle_s is not None:
                    await trio.sleep(trickle_s)
                    await stream.send_all(b" ")
            except trio.BrokenResourceError:
                pass  # the server answered and closed before reading it all

        nursery.start_soon(write)
        with trio.move_on_after(limit_s) as waited:
            try:
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            except trio.BrokenResourceError:
                pass
        nursery.cancel_scope.cancel()
    return b"" if waited.cancelled_caught else answer


@asynccontextmanager
async def _exporter() -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(
            serve_metrics, new_registry(), host=HOST, port=0, head_timeout_s=HEAD_TIMEOUT_S
        )
        port = await nursery.start(serve)
        yield f"{HOST}:{port}"
        nursery.cancel_scope.cancel()


async def test_metrics_slowloris_is_closed_and_a_scrape_is_answered_at_once() -> None:
    with trio.fail_after(DEADLINE_S):
        async with _exporter() as address:
            slow = await _partial_heads(address, SLOW_CONNECTIONS, "/metrics")
            with trio.fail_after(ANSWER_S):
                await scrape_text(address)  # asserts a 200
            closed = await _close_times(slow, HEAD_TIMEOUT_S + 2.0)
            # The oldest were closed when newer ones came (no descriptor held for them),
            # and none lived past its deadline.
            assert sum(t is not None and t < 1.0 for t in closed) >= len(slow) - MAX_CONNECTIONS
            assert None not in closed, closed


async def test_metrics_huge_head_is_answered_431() -> None:
    with trio.fail_after(DEADLINE_S):
        async with _exporter() as address:
            request = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
            answer = await _exchange(address, request, ANSWER_S)
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
            assert f"over {MAX_HEAD_BYTES} bytes".encode() in answer
            many = b"".join(b"X-%d: v\r\n" % i for i in range(5_000))
            answer = await _exchange(address, b"GET /metrics HTTP/1.1\r\n" + many, ANSWER_S)
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
            await scrape_text(address, timeout_s=ANSWER_S)


@asynccontextmanager
async def _dashboard(acted: list[dict[str, Any]]) -> AsyncIterator[str]:
    async def topic(args: dict[str, Any]) -> dict[str, Any]:
        acted.append(args)
        return {"created": args.get("topic")}

    app = DashboardApp(
        Dashboard(), admin_key="k", actions={"topic": topic}, body_timeout_s=BODY_TIMEOUT_S
    )
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(hypercorn_serve, app, hypercorn_config(HOST, 0))
        yield binds[0].removeprefix("http://")
        nursery.cancel_scope.cancel()


def _post(content_length: int, body: bytes) -> bytes:
    head = (
        f"POST /api/topic HTTP/1.1\r\nHost: x\r\nX-Admin-Key: k\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
    return head.encode() + body


async def test_dashboard_body_announced_but_not_sent_is_answered_408() -> None:
    acted: list[dict[str, Any]] = []
    with trio.fail_after(DEADLINE_S):
        async with _dashboard(acted) as address:
            limit_s = BODY_TIMEOUT_S + 2.0
            answer = await _exchange(address, _post(100, b'{"topic": '), limit_s)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b"body not received within 1 s" in answer

            trickled = await _exchange(address, _post(1_000, b"{"), limit_s, trickle_s=0.2)
            assert trickled.startswith(b"HTTP/1.1 408 "), trickled[:100]

            big = await _exchange(address, _post(MAX_BODY_BYTES + 1, b"{"), ANSWER_S)
            assert big.startswith(b"HTTP/1.1 413 "), big[:100]
            done = await _exchange(address, _post(17, b'{"topic": "T1"}  '), ANSWER_S)
            assert done.startswith(b"HTTP/1.1 200 "), done[:100]
            assert acted == [{"topic": "T1"}]


async def test_dashboard_slowloris_is_closed_and_state_is_answered_at_once() -> None:
    keep_alive_s = hypercorn_config(HOST, 0).keep_alive_timeout
    with trio.fail_after(DEADLINE_S):
        async with _dashboard([]) as address:
            slow = await _partial_heads(address, SLOW_CONNECTIONS, "/api/state")
            request = b"GET /api/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = await _exchange(address, request, ANSWER_S)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
            closed = await _close_times(slow, keep_alive_s + 2.0)
            assert None not in closed, closed
            huge = b"GET /api/state HTTP/1.1\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n"
            answer = await _exchange(address, huge, ANSWER_S)
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
