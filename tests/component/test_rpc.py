"""Remoting transport over real loopback sockets: server, client, and hostile peers.

Real sockets and autojump_clock mix poorly, so these tests run on real time: every wait is
under ``trio.fail_after`` and the timeouts under test are short.
"""

from __future__ import annotations

import logging
import socket
import struct
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio
import trio.testing

from protocol.codes import FLAG_RESPONSE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    ConnectionLost,
    NetworkError,
    RemotingTimeout,
    RequestCodeNotSupported,
    ServerError,
    TopicNotExist,
)
from protocol.frame import FrameDecoder, encode_frame
from protocol.headers import GetRouteInfoRequestHeader
from protocol.rpc import (
    Connection,
    Handler,
    RemotingServer,
    TransportConfig,
    check_success,
    open_client,
)

#: Bound on every test's waits; generous so a loaded machine does not flake.
WAIT_S = 10.0
#: How long a server may take to notice something and act (close, fail calls).
PROMPT_S = 3.0

# Request codes private to these tests.
ECHO = 7001
SLOW = 7002
FAST = 7003
NOT_SERVED = 7999


async def echo(request: RemotingCommand, conn: Connection) -> RemotingCommand:
    return request.respond(body=request.body, ext_fields={"echo": request.ext_fields.get("x", "")})


def echo_request(body: bytes = b"ping", x: str = "1") -> RemotingCommand:
    return RemotingCommand.request(ECHO, {"x": x}, body)


async def assert_echo(client: Any, addr: str, body: bytes = b"ping") -> None:
    response = await client.call(addr, echo_request(body), timeout_s=PROMPT_S)
    assert (response.code, response.body, response.is_response) == (0, body, True)


@asynccontextmanager
async def serving(
    handlers: dict[int, Handler], **kwargs: Any
) -> AsyncIterator[tuple[RemotingServer, str]]:
    """A RemotingServer on 127.0.0.1, port 0 unless given; stopped on exit."""
    async with trio.open_nursery() as nursery:
        server = RemotingServer(handlers, name="test-server", **kwargs)
        port = await nursery.start(server.serve)
        assert port == server.port != 0
        yield server, f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_server(
    handler: Callable[[trio.SocketStream], Awaitable[None]], *, rcvbuf_bytes: int | None = None
) -> AsyncIterator[str]:
    """A bare TCP server running ``handler`` per connection; yields its address."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    if rcvbuf_bytes is not None:
        # Inherited by accepted sockets; a fixed size also turns receive autotuning off,
        # so a peer that does not read really blocks its writer.
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, [listener])
        yield f"127.0.0.1:{listener.socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def raw_connect(addr: str) -> trio.SocketStream:
    host, port = addr.rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def seconds_until_closed(stream: trio.SocketStream, limit_s: float) -> float | None:
    """Seconds until the peer closed ``stream`` (reading and dropping what it sent), None
    when it was still open after ``limit_s``."""
    start = trio.current_time()
    with trio.move_on_after(limit_s):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # reset
        return trio.current_time() - start
    return None


async def read_commands(
    stream: trio.SocketStream, decoder: FrameDecoder, count: int
) -> list[RemotingCommand]:
    commands: list[RemotingCommand] = []
    while len(commands) < count:
        data = await stream.receive_some(1 << 20)
        assert data, "peer closed the connection"
        commands += [RemotingCommand.from_frame(f) for f in decoder.feed(data)]
    return commands


async def assert_closed_by_peer(stream: trio.SocketStream) -> None:
    with trio.fail_after(PROMPT_S):
        data = await stream.receive_some(65536)
    assert data == b"", f"expected the server to close, got {data!r}"


class _LogWaiter(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@contextmanager
def rpc_log_event(needle: str) -> Iterator[trio.Event]:
    """An event set when protocol.rpc logs a message containing ``needle``."""
    logger = logging.getLogger("protocol.rpc")
    waiter = _LogWaiter(needle)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(waiter)
    try:
        yield waiter.seen
    finally:
        logger.removeHandler(waiter)
        logger.setLevel(old_level)


# --- the basics ----------------------------------------------------------------------------


async def test_round_trip() -> None:
    async with serving({ECHO: echo}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            response = await client.call(addr, echo_request(b"hello", x="42"))
            second = await client.call(addr, echo_request(b"again"))
    assert response.is_response and response.is_success
    assert response.body == b"hello"
    assert response.ext_fields == {"echo": "42"}
    assert second.body == b"again"
    assert second.opaque != response.opaque


async def test_binary_header_request_gets_a_json_answer() -> None:
    async with serving({ECHO: echo}) as (_, addr):
        with trio.fail_after(WAIT_S):
            async with await raw_connect(addr) as stream:
                request = RemotingCommand.request(ECHO, {"x": "b"}, b"bin", opaque=77)
                await stream.send_all(request.encode_binary())
                decoder = FrameDecoder()
                frames = []
                while not frames:
                    data = await stream.receive_some(65536)
                    assert data
                    frames = decoder.feed(data)
    (frame,) = frames
    assert frame.serialize_type == 0
    response = RemotingCommand.from_frame(frame)
    assert (response.opaque, response.is_response, response.body) == (77, True, b"bin")
    assert response.ext_fields == {"echo": "b"}


async def test_unknown_code_is_not_supported() -> None:
    async with serving({ECHO: echo}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            response = await client.call(addr, RemotingCommand.request(NOT_SERVED))
            known_but_not_served = await client.call(
                addr, RemotingCommand.request(RequestCode.PULL_MESSAGE)
            )
    assert response.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
    assert "7999" in (response.remark or "")
    assert "PULL_MESSAGE" in (known_but_not_served.remark or "")
    with pytest.raises(RequestCodeNotSupported):
        check_success(response)


async def test_many_concurrent_calls_on_one_connection() -> None:
    n_slow, n_fast = 20, 50
    release = trio.Event()
    all_slow_started = trio.Event()
    started: list[bytes] = []
    connection_ids: set[int] = set()

    async def slow(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        connection_ids.add(conn.id)
        started.append(request.body)
        if len(started) == n_slow:
            all_slow_started.set()
        await release.wait()
        return request.respond(body=b"slow:" + request.body)

    async def fast(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        connection_ids.add(conn.id)
        return request.respond(body=b"fast:" + request.body)

    slow_results: dict[int, bytes] = {}
    fast_results: dict[int, bytes] = {}

    async with serving({SLOW: slow, FAST: fast}) as (server, addr), open_client() as client:

        async def call(code: int, i: int, into: dict[int, bytes]) -> None:
            response = await client.call(addr, RemotingCommand.request(code, body=b"%d" % i))
            into[i] = response.body

        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                for i in range(n_slow):
                    nursery.start_soon(call, SLOW, i, slow_results)
                await all_slow_started.wait()
                (server_conn,) = server.connections.values()
                assert server_conn.requests_in_flight == n_slow
                async with trio.open_nursery() as fast_nursery:
                    for i in range(n_fast):
                        fast_nursery.start_soon(call, FAST, i, fast_results)
                # Every fast call is answered while every slow one is still held.
                assert fast_results == {i: b"fast:%d" % i for i in range(n_fast)}
                assert slow_results == {}
                release.set()
    assert slow_results == {i: b"slow:%d" % i for i in range(n_slow)}
    assert len(connection_ids) == 1


async def test_requests_in_flight_are_bounded_per_connection() -> None:
    gates = {b"%d" % i: trio.Event() for i in range(3)}
    started: list[bytes] = []
    two_started = trio.Event()
    third_started = trio.Event()

    async def slow(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        started.append(request.body)
        if len(started) == 2:
            two_started.set()
        if len(started) == 3:
            third_started.set()
        await gates[request.body].wait()
        return request.respond()

    config = TransportConfig(max_requests_in_flight=2)
    async with serving({SLOW: slow}, config=config) as (server, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                for body in gates:
                    nursery.start_soon(client.call, addr, RemotingCommand.request(SLOW, body=body))
                await two_started.wait()
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert len(started) == 2  # the third waits for a slot
                (server_conn,) = server.connections.values()
                assert server_conn.requests_in_flight == 2
                gates[started[0]].set()
                await third_started.wait()
                for gate in gates.values():
                    gate.set()


# --- oneway --------------------------------------------------------------------------------


async def test_oneway_runs_the_handler_and_gets_no_response() -> None:
    ran = trio.Event()
    seen: list[RemotingCommand] = []

    async def record(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        seen.append(request)
        ran.set()
        return request.respond(body=b"must not be sent")

    async def echo_after_the_rest(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        # Every other task (the oneway one included) has finished, or is blocked.
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        return await echo(request, conn)

    handlers: dict[int, Handler] = {
        RequestCode.UPDATE_CONSUMER_OFFSET: record,
        ECHO: echo_after_the_rest,
    }
    async with serving(handlers) as (_, addr):
        with trio.fail_after(WAIT_S):
            async with await raw_connect(addr) as stream:
                oneway = RemotingCommand.request(
                    RequestCode.UPDATE_CONSUMER_OFFSET, {"commitOffset": "5"}, oneway=True, opaque=1
                )
                await stream.send_all(oneway.encode())
                await ran.wait()
                await stream.send_all(RemotingCommand.request(ECHO, opaque=2).encode())
                (response,) = await read_commands(stream, FrameDecoder(), 1)
    assert response.opaque == 2  # the first thing the server sent answers the echo
    assert seen[0].is_oneway and seen[0].ext_fields == {"commitOffset": "5"}


async def test_client_oneway() -> None:
    ran = trio.Event()

    async def record(request: RemotingCommand, conn: Connection) -> None:
        assert request.is_oneway
        ran.set()

    handlers: dict[int, Handler] = {RequestCode.UPDATE_CONSUMER_OFFSET: record}
    async with serving(handlers) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            await client.oneway(addr, RemotingCommand.request(15, {"queueId": "1"}))
            await ran.wait()


# --- handler failures ----------------------------------------------------------------------


async def test_server_error_maps_to_its_code_and_remark() -> None:
    async def no_topic(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        raise TopicNotExist("no route info of topic T")

    async def flow_control(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        raise ServerError("slow down", code=ResponseCode.FLOW_CONTROL)

    handlers: dict[int, Handler] = {SLOW: no_topic, FAST: flow_control}
    async with serving(handlers) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            response = await client.call(addr, RemotingCommand.request(SLOW))
            custom = await client.call(addr, RemotingCommand.request(FAST))
    assert (response.code, response.remark) == (
        ResponseCode.TOPIC_NOT_EXIST,
        "no route info of topic T",
    )
    assert (custom.code, custom.remark) == (ResponseCode.FLOW_CONTROL, "slow down")
    with pytest.raises(TopicNotExist, match="topic T"):
        check_success(response)


async def test_plain_exception_is_system_error_and_server_keeps_serving() -> None:
    async def broken(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        raise KeyError("queueId")

    async with serving({SLOW: broken, ECHO: echo}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            response = await client.call(addr, RemotingCommand.request(SLOW))
            await assert_echo(client, addr)
            again = await client.call(addr, RemotingCommand.request(SLOW))
    assert response.code == ResponseCode.SYSTEM_ERROR
    assert "KeyError" in (response.remark or "")
    assert again.code == ResponseCode.SYSTEM_ERROR


async def test_missing_header_field_in_handler() -> None:
    async def route(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        header = GetRouteInfoRequestHeader.from_ext_fields(request.ext_fields)
        return request.respond(remark=header.topic)

    code = RequestCode.GET_ROUTEINFO_BY_TOPIC
    async with serving({code: route}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            bad = await client.call(addr, RemotingCommand.request(code, {"tpoic": "T"}))
            good = await client.call(addr, RemotingCommand.request(code, {"topic": "T"}))
    assert bad.code == ResponseCode.SYSTEM_ERROR
    assert "'topic'" in (bad.remark or "")
    assert (good.code, good.remark) == (0, "T")


async def test_unencodable_response_becomes_system_error() -> None:
    async def bad_ext(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(ext_fields={"offset": b"not a str"})  # type: ignore[dict-item]

    async with serving({SLOW: bad_ext, ECHO: echo}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            response = await client.call(addr, RemotingCommand.request(SLOW))
            await assert_echo(client, addr)
    assert response.code == ResponseCode.SYSTEM_ERROR
    assert "cannot be encoded" in (response.remark or "")


async def test_response_built_without_respond_still_is_a_response() -> None:
    async def bare(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return RemotingCommand(code=ResponseCode.SUCCESS, body=b"bare")

    async with serving({SLOW: bare}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            response = await client.call(addr, RemotingCommand.request(SLOW), timeout_s=PROMPT_S)
    assert response.is_response and response.body == b"bare"


# --- hostile peers -------------------------------------------------------------------------

CAP = 64 * 1024

BAD_INPUT = {
    "garbage": b"\xff" * 64,
    "http request": b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n",
    "length below four": struct.pack(">i", 2),
    "over the cap, length only": struct.pack(">i", CAP + 1),
    "header length beyond frame": struct.pack(">iI", 10, 9) + b"x" * 10,
    "header not json": encode_frame(b"this is not json", b"body"),
    "header json array": encode_frame(b"[1,2,3]"),
    "ext fields not an object": encode_frame(b'{"code":7001,"extFields":[1]}'),
    "deeply nested json": encode_frame(b'{"code":7001,"x":' + b"[" * 20_000 + b"}"),
    "integer over the digit limit": encode_frame(b'{"code":' + b"7" * 5000 + b"}"),
    "unknown serialize type": encode_frame(b"{}", serialize_type=9),
    "truncated binary header": encode_frame(b"\x1b\x59\x00", serialize_type=1),
}


@pytest.mark.parametrize("bad", BAD_INPUT.values(), ids=BAD_INPUT.keys())
async def test_bad_input_closes_only_that_connection(bad: bytes) -> None:
    config = TransportConfig(max_frame_bytes=CAP)
    async with serving({ECHO: echo}, config=config) as (server, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            await assert_echo(client, addr, b"before")
            async with await raw_connect(addr) as stream:
                await stream.send_all(bad)
                await assert_closed_by_peer(stream)
            await assert_echo(client, addr, b"after")
            # The good connection is the very one from before: nothing else was harmed.
            assert len(server.connections) == 1


async def test_frame_over_the_cap_is_refused_before_its_body() -> None:
    # The server closes on the 8-byte prefix alone; it never waits for 64 KiB to arrive.
    async with serving({ECHO: echo}, config=TransportConfig(max_frame_bytes=CAP)) as (_, addr):
        with trio.fail_after(WAIT_S):
            async with await raw_connect(addr) as stream:
                await stream.send_all(struct.pack(">iI", CAP + 1, 2))
                await assert_closed_by_peer(stream)


# --- timeouts and lost connections ---------------------------------------------------------


async def test_call_timeout_and_late_response_dropped() -> None:
    release = trio.Event()
    started = trio.Event()

    async def held(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        started.set()
        await release.wait()
        return request.respond(body=b"late")

    async with serving({SLOW: held, ECHO: echo}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S), rpc_log_event("unknown opaque") as late_dropped:
            conn = await client.connection(addr)
            t0 = trio.current_time()
            with pytest.raises(RemotingTimeout, match=r"code 7002 .* no answer"):
                await client.call(addr, RemotingCommand.request(SLOW), timeout_s=0.2)
            assert trio.current_time() - t0 < PROMPT_S
            assert started.is_set()
            release.set()
            await late_dropped.wait()
            response = await client.call(addr, echo_request(b"fresh"))
            assert response.body == b"fresh"
            assert await client.connection(addr) is conn


async def test_write_to_a_peer_that_does_not_read_times_out() -> None:
    stop = trio.Event()

    async def never_read(stream: trio.SocketStream) -> None:
        await stop.wait()

    config = TransportConfig(write_timeout_s=0.3)
    async with raw_server(never_read, rcvbuf_bytes=64 * 1024) as addr:
        async with open_client(config=config) as client:
            with trio.fail_after(WAIT_S):
                conn = await client.connection(addr)
                request = RemotingCommand.request(ECHO, body=bytes(16 << 20))
                with pytest.raises(ConnectionLost):
                    await client.call(addr, request, timeout_s=WAIT_S)
                assert conn.closed.is_set()
        stop.set()


async def test_calls_queued_behind_a_stuck_write_end_at_their_deadline() -> None:
    """A call whose frame waits in the outbox (the write before it cannot finish) ends
    with RemotingTimeout at its own deadline; the stuck write ends the connection at
    write_timeout_s, and every call still pending hears ConnectionLost."""
    stop = trio.Event()

    async def never_read(stream: trio.SocketStream) -> None:
        await stop.wait()

    config = TransportConfig(write_timeout_s=2.0)
    outcomes: list[str] = []
    async with raw_server(never_read, rcvbuf_bytes=64 * 1024) as addr:
        async with open_client(config=config) as client:
            with trio.fail_after(WAIT_S):
                conn = await client.connection(addr)

                async def call(body_bytes: int, timeout_s: float) -> None:
                    request = RemotingCommand.request(ECHO, body=bytes(body_bytes))
                    t0 = trio.current_time()
                    try:
                        await client.call(addr, request, timeout_s=timeout_s)
                    except RemotingTimeout:
                        outcomes.append(f"timeout after {trio.current_time() - t0:.1f} s")
                    except ConnectionLost:
                        outcomes.append("lost")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, 16 << 20, WAIT_S)  # writes, and blocks
                    await trio.testing.wait_all_tasks_blocked()
                    nursery.start_soon(call, 10, WAIT_S)  # opens the next round
                    await trio.testing.wait_all_tasks_blocked()
                    for _ in range(3):
                        nursery.start_soon(call, 10, 0.2)  # join that round
                assert conn.closed.is_set()
        stop.set()
    assert sorted(outcomes) == ["lost", "lost"] + ["timeout after 0.2 s"] * 3


async def test_deadline_never_cuts_a_frame_in_half() -> None:
    """A call whose deadline passes mid-write must not leave half a frame on the wire.

    The peer reads nothing until the first call has given up (or for 1 s at most: a
    transport that finishes its write first cannot give up sooner); then it decodes the
    stream and answers every request. If the first frame was cut, the second request is
    swallowed into the first's body and never answered.
    """
    gave_up = trio.Event()
    answered: list[bytes] = []

    async def read_late(stream: trio.SocketStream) -> None:
        with trio.move_on_after(1.0):
            await gave_up.wait()
        decoder = FrameDecoder(max_frame_bytes=64 << 20)
        while True:
            data = await stream.receive_some(1 << 20)
            if not data:
                return
            for frame in decoder.feed(data):
                request = RemotingCommand.from_frame(frame)
                answered.append(request.body[:8])
                await stream.send_all(request.respond(body=request.body[:8]).encode())

    async with raw_server(read_late, rcvbuf_bytes=64 * 1024) as addr, open_client() as client:
        with trio.fail_after(WAIT_S):
            big = RemotingCommand.request(ECHO, body=b"big-body" + bytes(16 << 20))
            try:
                # The write outlives the deadline; if the answer is in by then, it counts.
                first = await client.call(addr, big, timeout_s=0.2)
            except RemotingTimeout:
                pass
            else:
                assert first.body == b"big-body"
            gave_up.set()
            response = await client.call(addr, echo_request(b"small"), timeout_s=PROMPT_S)
    assert response.body == b"small"
    assert answered == [b"big-body", b"small"]


@pytest.mark.parametrize("how", ["server stopped", "server closed the connection"])
async def test_in_flight_calls_fail_promptly_when_the_connection_dies(how: str) -> None:
    n_calls = 5
    all_started = trio.Event()
    started: list[Connection] = []

    async def hang(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        started.append(conn)
        if len(started) == n_calls:
            all_started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    errors: list[ConnectionLost] = []
    server = RemotingServer({SLOW: hang}, name="test-server")
    server_scope = trio.CancelScope()

    async def run_server(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with server_scope:
            await server.serve(task_status=task_status)

    async with trio.open_nursery() as nursery, open_client() as client:
        port = await nursery.start(run_server)
        addr = f"127.0.0.1:{port}"

        async def call() -> None:
            with pytest.raises(ConnectionLost) as info:
                await client.call(addr, RemotingCommand.request(SLOW), timeout_s=WAIT_S)
            errors.append(info.value)

        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as calls:
                for _ in range(n_calls):
                    calls.start_soon(call)
                await all_started.wait()
                t0 = trio.current_time()
                if how == "server stopped":
                    server_scope.cancel()
                else:
                    await started[0].aclose()
            assert len(errors) == n_calls
            assert trio.current_time() - t0 < PROMPT_S
            if how == "server closed the connection":
                # The server lives on; the next call simply reconnects.
                assert not server_scope.cancel_called
                hang_free = await client.call(addr, RemotingCommand.request(NOT_SERVED))
                assert hang_free.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
        server_scope.cancel()


async def test_client_reconnects_after_server_restart_on_the_same_port() -> None:
    async with open_client() as client:
        with trio.fail_after(WAIT_S):
            async with serving({ECHO: echo}) as (server, addr):
                port = server.port
                await assert_echo(client, addr, b"first life")
                old = await client.connection(addr)
            await old.closed.wait()
            with pytest.raises(NetworkError):  # nobody listens: refused, not a hang
                await client.call(addr, echo_request(), timeout_s=PROMPT_S)
            async with serving({ECHO: echo}, port=port) as (_, addr_again):
                assert addr_again == addr
                await assert_echo(client, addr, b"second life")
                assert await client.connection(addr) is not old


async def test_client_reconnects_after_closing_its_connection() -> None:
    connected: list[Connection] = []
    disconnected = trio.Event()
    async with (
        serving(
            {ECHO: echo},
            on_connect=connected.append,
            on_disconnect=lambda conn: disconnected.set(),
        ) as (server, addr),
        open_client() as client,
    ):
        with trio.fail_after(WAIT_S):
            await assert_echo(client, addr)
            old = await client.connection(addr)
            client.close_connection(addr)
            await old.closed.wait()
            await disconnected.wait()
            await assert_echo(client, addr)
            assert await client.connection(addr) is not old
            assert len(connected) == 2
            assert list(server.connections) == [connected[1].id]


async def test_connect_hooks_fire() -> None:
    connected: list[Connection] = []
    disconnected: list[Connection] = []
    gone = trio.Event()

    def on_disconnect(conn: Connection) -> None:
        disconnected.append(conn)
        gone.set()

    hooks = {"on_connect": connected.append, "on_disconnect": on_disconnect}
    async with serving({ECHO: echo}, **hooks) as (server, addr):
        with trio.fail_after(WAIT_S):
            async with open_client() as client:
                await assert_echo(client, addr)
                (conn,) = connected
                assert server.connections == {conn.id: conn}
                assert disconnected == []
                client_conn = await client.connection(addr)
                assert conn.peer == client_conn.local
            await gone.wait()
    assert disconnected == [conn]
    assert conn.closed.is_set()
    assert server.connections == {}


async def test_server_initiated_request_to_a_client() -> None:
    notified = trio.Event()

    async def ids_changed(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        group = request.ext_fields["consumerGroup"]
        if request.is_oneway:
            notified.set()
        return request.respond(body=f"rebalanced {group}".encode())

    connected: list[Connection] = []
    code = RequestCode.NOTIFY_CONSUMER_IDS_CHANGED
    async with (
        serving({ECHO: echo}, on_connect=connected.append) as (_, addr),
        open_client(handlers={code: ids_changed}) as client,
    ):
        with trio.fail_after(WAIT_S):
            await assert_echo(client, addr)
            (server_conn,) = connected
            request = RemotingCommand.request(code, {"consumerGroup": "G"})
            response = await server_conn.call(request, timeout_s=PROMPT_S)
            assert response.is_response and response.body == b"rebalanced G"
            await server_conn.oneway(request)
            await notified.wait()
            # ... and the client's own calls still work alongside.
            await assert_echo(client, addr)


async def test_responses_are_matched_by_opaque_out_of_order() -> None:
    answered_order: list[bytes] = []
    done = trio.Event()

    async def answer_reversed(stream: trio.SocketStream) -> None:
        requests = await read_commands(stream, FrameDecoder(), 2)
        stray = RemotingCommand(code=0, opaque=999_999, flag=FLAG_RESPONSE, body=b"stray")
        replies = [r.respond(body=r.body) for r in reversed(requests)]
        answered_order.extend(r.body for r in replies)
        await stream.send_all(b"".join(c.encode() for c in [stray, *replies]))
        await done.wait()

    results: dict[bytes, bytes] = {}
    async with raw_server(answer_reversed) as addr, open_client() as client:

        async def call(body: bytes) -> None:
            response = await client.call(addr, RemotingCommand.request(ECHO, body=body))
            results[body] = response.body

        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, b"one")
                nursery.start_soon(call, b"two")
        done.set()
    assert results == {b"one": b"one", b"two": b"two"}
    assert len(answered_order) == 2


async def test_call_to_nobody_is_a_network_error() -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    async with open_client() as client:
        with trio.fail_after(WAIT_S), pytest.raises(NetworkError, match="cannot connect"):
            await client.call(f"127.0.0.1:{port}", echo_request())


async def test_a_round_creator_cancelled_while_waiting_for_the_lock_still_writes() -> None:
    """Found by the SDK failover tests: the task opening a write round was cancelled while
    another round held the send lock; the round was marked written with its frames still
    queued, and every later send on that connection returned without sending a byte."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            accepted: list[trio.SocketStream] = []

            async def accept() -> None:
                accepted.append(await listeners[0].accept())

            nursery.start_soon(accept)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await trio.testing.wait_all_tasks_blocked()
            conn = Connection(stream, name="t", handlers={}, config=TransportConfig())
            request = RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC)
            await conn._send_lock.acquire()  # another round is being written
            scope = trio.CancelScope()

            async def creator() -> None:
                with scope:
                    await conn.send(request)

            nursery.start_soon(creator)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # the next round's creator, cancelled while it waits for the lock
            await trio.testing.wait_all_tasks_blocked()
            conn._send_lock.release()
            await conn.send(request)  # a later sender
            frame = request.encode()
            received = b""
            while len(received) < 2 * len(frame):
                received += await accepted[0].receive_some(65536)
            assert received == 2 * frame
            for resource in (stream, accepted[0], listeners[0]):
                await resource.aclose()


# --- requests served in the reader until their handler waits --------------------------------


class _SpawnCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


async def test_requests_that_never_wait_cost_no_task_each() -> None:
    """100 requests in one write: served in the reader, answered in a few write rounds."""
    n = 100
    counter = _SpawnCounter()
    async with serving({ECHO: echo}) as (_, addr):
        with trio.fail_after(WAIT_S):
            async with await raw_connect(addr) as stream:
                wire = b"".join(
                    RemotingCommand.request(ECHO, {"x": str(i)}, opaque=i + 1).encode()
                    for i in range(n)
                )
                trio.lowlevel.add_instrument(counter)
                try:
                    await stream.send_all(wire)
                    answers = await read_commands(stream, FrameDecoder(), n)
                finally:
                    trio.lowlevel.remove_instrument(counter)
    assert sorted(a.opaque for a in answers) == list(range(1, n + 1))
    assert all(a.ext_fields == {"echo": str(a.opaque - 1)} for a in answers)
    # One task per write round the reader opens (a read brings many frames), not per request.
    assert counter.spawned <= 10, counter.spawned


async def test_a_handler_that_waits_goes_on_in_the_task_that_started_it() -> None:
    """Trio ties what a handler waits for to the task that ran it; the reader moves on."""
    release = trio.Event()
    tasks: list[tuple[trio.lowlevel.Task, trio.lowlevel.Task]] = []
    entered = trio.Event()

    async def wait_then_answer(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        before = trio.lowlevel.current_task()
        with trio.move_on_after(WAIT_S):  # a scope entered before the first wait
            entered.set()
            await release.wait()
        tasks.append((before, trio.lowlevel.current_task()))
        return request.respond(body=b"waited:" + request.body)

    async with (
        serving({SLOW: wait_then_answer, ECHO: echo}) as (_, addr),
        open_client() as client,
    ):
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:

                async def slow_call() -> None:
                    response = await client.call(addr, RemotingCommand.request(SLOW, body=b"1"))
                    assert response.body == b"waited:1"

                nursery.start_soon(slow_call)
                await entered.wait()
                # The connection is read and served while that request waits.
                await assert_echo(client, addr, b"meanwhile")
                release.set()
    ((before, after),) = tasks
    assert before is after


async def test_a_handler_failing_after_its_first_wait_gets_an_error_answer() -> None:
    async def fail_later(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        await trio.lowlevel.checkpoint()
        raise TopicNotExist("no such topic: T")

    async with serving({SLOW: fail_later}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            response = await client.call(addr, RemotingCommand.request(SLOW))
    assert (response.code, response.remark) == (ResponseCode.TOPIC_NOT_EXIST, "no such topic: T")


async def test_what_trio_throws_into_a_waiting_handler_reaches_it() -> None:
    """Trio answers a foreign yield by throwing TypeError into the task: it must arrive in
    the handler through the reader's frames (the throw path of _go_on_awaiting)."""

    @types.coroutine
    def foreign_yield() -> Generator[str, None, None]:
        yield "not a trio trap"

    async def confused(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        try:
            await foreign_yield()
        except TypeError as exc:
            return request.respond(body=str(exc).encode()[:40])
        raise AssertionError("unreachable")

    async with serving({SLOW: confused}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            response = await client.call(addr, RemotingCommand.request(SLOW))
    assert response.body.startswith(b"trio.run received unrecognized yield")


async def test_a_waiting_handler_is_cancelled_when_its_connection_ends() -> None:
    waiting = trio.Event()
    cleaned_up = trio.Event()

    async def hold(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        try:
            waiting.set()
            await trio.sleep_forever()
        finally:
            cleaned_up.set()
        raise AssertionError("unreachable")

    gone = trio.Event()
    async with serving({SLOW: hold}, on_disconnect=lambda _: gone.set()) as (server, addr):
        with trio.fail_after(WAIT_S):
            async with await raw_connect(addr) as stream:
                await stream.send_all(RemotingCommand.request(SLOW, opaque=1).encode())
                await waiting.wait()
            await cleaned_up.wait()  # the peer closed: reading ended, the request cancelled
            await gone.wait()
            assert server.buffered_bytes == 0
