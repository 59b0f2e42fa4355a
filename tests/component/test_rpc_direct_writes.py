"""The transport writes and reads plain sockets itself where it need not wait (issue 14,
fourth pass): a reader writes its read's answers, a call alone on its connection writes
its request, each straight to the socket; what the socket does not take goes on in a
writer, whole and in order. Real loopback sockets, every wait under ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from protocol.command import RemotingCommand
from protocol.errors import RemotingTimeout
from protocol.frame import FrameDecoder
from protocol.limits import TransportConfig
from protocol.rpc import Connection, RemotingServer, open_client
from tests.component.broker_fixtures import wait_until
from tests.component.test_rpc import read_commands

WAIT_S = 10.0
ECHO = 7101
BIG = 7102
BIG_BODY_BYTES = 8 << 20  # far more than a loopback socket buffer takes at once


async def echo(request: RemotingCommand, conn: Connection) -> RemotingCommand:
    return request.respond(body=request.body)


async def big(request: RemotingCommand, conn: Connection) -> RemotingCommand:
    return request.respond(body=request.body[:8] + bytes(BIG_BODY_BYTES))


class _Counter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


@asynccontextmanager
async def serving(server: RemotingServer) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        yield f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def read_answers(stream: trio.SocketStream, count: int) -> list[RemotingCommand]:
    return await read_commands(stream, FrameDecoder(max_frame_bytes=64 << 20), count)


async def test_a_reader_writes_its_answers_itself() -> None:
    """One request at a time: no task spawned per answer."""
    server = RemotingServer({ECHO: echo}, name="test-direct")
    counter = _Counter()
    async with serving(server) as addr:
        host, port = addr.rsplit(":", 1)
        with trio.fail_after(WAIT_S):
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                trio.lowlevel.add_instrument(counter)
                try:
                    for i in range(1, 21):
                        request = RemotingCommand.request(ECHO, body=b"%d" % i, opaque=i)
                        await stream.send_all(request.encode())
                        (answer,) = await read_answers(stream, 1)
                        assert (answer.opaque, answer.body) == (i, b"%d" % i)
                finally:
                    trio.lowlevel.remove_instrument(counter)
    assert counter.spawned == 0, counter.spawned


async def test_answers_larger_than_the_socket_takes_leave_whole_and_in_order() -> None:
    """The peer reads nothing for a while: the first big answer goes partly to the socket,
    the rest through a writer; later answers queue behind it; all arrive intact, in the
    order they were written, and the reader went on reading meanwhile."""
    server = RemotingServer({ECHO: echo, BIG: big}, name="test-direct")
    async with serving(server) as addr:
        host, port = addr.rsplit(":", 1)
        with trio.fail_after(WAIT_S):
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                requests = [
                    RemotingCommand.request(BIG, body=b"big-%04d" % 1, opaque=1),
                    RemotingCommand.request(ECHO, body=b"small-2", opaque=2),
                    RemotingCommand.request(BIG, body=b"big-%04d" % 3, opaque=3),
                    RemotingCommand.request(ECHO, body=b"small-4", opaque=4),
                ]
                for request in requests:  # one read each, most likely: four rounds
                    await stream.send_all(request.encode())
                    await trio.sleep(0.05)
                (conn,) = server.connections.values()
                assert conn.requests_in_flight == 0  # all served while the writes wait
                answers = await read_answers(stream, 4)
    assert [a.opaque for a in answers] == [1, 2, 3, 4]
    assert [a.body[:8] for a in answers] == [b"big-0001", b"small-2", b"big-0003", b"small-4"]
    assert [len(a.body) for a in answers] == [8 + BIG_BODY_BYTES, 7, 8 + BIG_BODY_BYTES, 7]


async def test_a_lone_call_and_concurrent_calls_all_get_their_answers() -> None:
    """A call alone on its connection writes at once; calls made together share rounds.
    Either way each gets its own answer, on one connection."""
    server = RemotingServer({ECHO: echo}, name="test-direct")
    async with serving(server) as addr, open_client(tls=False) as client:
        with trio.fail_after(WAIT_S):
            for i in range(20):
                answer = await client.call(addr, RemotingCommand.request(ECHO, body=b"%d" % i))
                assert answer.body == b"%d" % i
            results: dict[int, bytes] = {}

            async def call(i: int) -> None:
                answer = await client.call(addr, RemotingCommand.request(ECHO, body=b"%d" % i))
                results[i] = answer.body

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(call, i)
            assert len(server.connections) == 1
    assert results == {i: b"%d" % i for i in range(200)}


async def test_calls_after_the_first_end_at_their_own_deadlines_by_the_timer() -> None:
    """A connection's calls after its first are ended by one timer task, not a scope each:
    a long call, then shorter ones made later, each time out at its own deadline (the
    timer wakes earlier for them), an answered call in between is not disturbed, and the
    long one still ends at its own."""
    release = trio.Event()

    async def held(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        await release.wait()
        return request.respond()

    server = RemotingServer({ECHO: echo, BIG: held}, name="test-direct")
    ended: dict[str, float] = {}
    async with serving(server) as addr, open_client(tls=False) as client:
        with trio.fail_after(WAIT_S):
            await client.call(addr, RemotingCommand.request(ECHO))  # starts the timer
            t0 = trio.current_time()

            async def call(name: str, timeout_s: float) -> None:
                with pytest.raises(RemotingTimeout, match="no answer"):
                    await client.call(addr, RemotingCommand.request(BIG), timeout_s=timeout_s)
                ended[name] = trio.current_time() - t0

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "long", 1.5)
                await trio.sleep(0.05)
                nursery.start_soon(call, "short", 0.3)
                nursery.start_soon(call, "middle", 0.8)
                answer = await client.call(addr, RemotingCommand.request(ECHO, body=b"ok"))
                assert answer.body == b"ok"
            release.set()
    assert list(ended) == ["short", "middle", "long"]
    assert 0.3 <= ended["short"] < 0.3 + 0.05 + 0.5
    assert 0.8 <= ended["middle"] < 0.8 + 0.05 + 0.5
    assert 1.5 <= ended["long"] < 1.5 + 0.5


async def test_a_first_call_as_the_connection_winds_down_fails_cleanly() -> None:
    """A connection's tasks have all ended (its nursery takes no new task) and run() has
    not yet marked it closed: in that moment another task's first call starts no
    deadline timer (it would raise "Nursery is closed to new arrivals" into the caller,
    seen once in a producer's failover test); it keeps its own scope and times out."""
    with trio.fail_after(WAIT_S):
        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        async with (
            await trio.open_tcp_stream("127.0.0.1", port) as client_side,
            await listener.accept() as peer,
        ):
            await listener.aclose()
            conn = Connection(
                client_side, name="test-wind-down", handlers={}, config=TransportConfig()
            )
            async with trio.open_nursery() as ended:
                pass
            conn._nursery = ended  # as run()'s nursery is in that moment
            with pytest.raises(RemotingTimeout):
                await conn.call(RemotingCommand.request(ECHO), timeout_s=0.2)
            assert len(await peer.receive_some()) > 0  # the request itself went out


@pytest.mark.parametrize("first_bytes", [64, BIG_BODY_BYTES])
async def test_a_sender_waits_for_an_open_round_nobody_watched_yet(first_bytes: int) -> None:
    """The reader's answers open a round without a ``trio.Event`` (issue 14, sixth pass);
    a sender joining it makes one and is released once the round is written, straight to
    the socket or (more than the socket takes) by a writer task, its frame after the
    round's, whole."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        right = trio.socket.from_stdlib_socket(socket.create_connection(listener.getsockname()))
        left = trio.socket.from_stdlib_socket(listener.accept()[0])
    conn = Connection(trio.SocketStream(left), name="test", handlers={}, config=TransportConfig())
    first = RemotingCommand.request(ECHO, body=bytes(first_bytes), opaque=1).encode()
    second = RemotingCommand.request(ECHO, body=b"second", opaque=2).encode()
    sent = trio.Event()

    async def sender() -> None:
        await conn._send_bytes(second)
        sent.set()

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            conn._post(first)  # as the reader does with an answer
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()  # the round is open: it waits for its writer
            conn._flush_posted(nursery)
            decoder = FrameDecoder(max_frame_bytes=64 << 20)
            frames = []
            while len(frames) < 2:
                frames += decoder.feed(await right.recv(1 << 20))
            await sent.wait()
        assert [RemotingCommand.from_frame(f).opaque for f in frames] == [1, 2]
        assert len(frames[0].body) == first_bytes
        await conn.aclose()
    right.close()


async def test_before_write_runs_before_each_write_and_a_raise_drops_the_connection() -> None:
    """The server's ``before_write`` runs once before the answers of a read leave (the
    broker writes held CommitLog bytes there); when it raises, the connection ends with
    those answers unwritten, and every other connection holding unwritten frames can be
    dropped the same way (``drop_unwritten``)."""
    served: list[int] = []
    hooked: list[int] = []
    fail = False

    async def record(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        served.append(request.opaque)
        return request.respond(body=request.body)

    def before_write() -> None:
        hooked.append(len(served))
        if fail:
            raise RuntimeError("the CommitLog write failed")

    server = RemotingServer({ECHO: record}, name="test-direct")
    server.before_write = before_write
    async with serving(server) as addr:
        host, port = addr.rsplit(":", 1)
        with trio.fail_after(WAIT_S):
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                for i in range(1, 6):
                    request = RemotingCommand.request(ECHO, body=b"%d" % i, opaque=i)
                    await stream.send_all(request.encode())
                    (answer,) = await read_answers(stream, 1)
                    assert answer.opaque == i
                    assert hooked[-1] == i  # ran after the request, before its answer
                assert len(hooked) == 5
                fail = True
                burst = b"".join(
                    RemotingCommand.request(ECHO, body=b"x", opaque=10 + i).encode()
                    for i in range(8)
                )
                await stream.send_all(burst)
                received = b""
                with contextlib.suppress(trio.BrokenResourceError):  # a reset: closed
                    while chunk := await stream.receive_some(65536):
                        received += chunk
                assert received == b""  # the connection ended without an answer
            await wait_until(lambda: not server.connections, what="connections closed")
    assert served[-1] == 17


async def test_drop_unwritten_ends_only_connections_with_frames_not_yet_written() -> None:
    """A peer that does not read keeps the answers after a big one queued:
    ``drop_unwritten`` ends that connection (they never leave, nor the big one's rest) and
    leaves an idle one alone."""
    server = RemotingServer({ECHO: echo, BIG: big}, name="test-direct")
    async with serving(server) as addr:
        host, port = addr.rsplit(":", 1)
        with trio.fail_after(WAIT_S):
            async with (
                await trio.open_tcp_stream(host, int(port)) as stuck,
                await trio.open_tcp_stream(host, int(port)) as idle,
            ):
                stuck.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                await idle.send_all(RemotingCommand.request(ECHO, body=b"i", opaque=1).encode())
                (answer,) = await read_answers(idle, 1)
                await stuck.send_all(RemotingCommand.request(BIG, body=b"b", opaque=2).encode())
                # The big answer's write fills the socket and waits for a reader (the frames
                # it took are being written); an answer after it stays queued behind it.
                await stuck.send_all(RemotingCommand.request(ECHO, body=b"s", opaque=4).encode())
                await wait_until(
                    lambda: any(c.has_unwritten for c in server.connections.values()),
                    what="an answer queued behind a big one",
                )
                assert server.drop_unwritten("test") == 1
                received = 0
                with contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await stuck.receive_some(1 << 20):
                        received += len(chunk)
                assert received < BIG_BODY_BYTES  # cut short: the rest was never written
                await idle.send_all(RemotingCommand.request(ECHO, body=b"j", opaque=3).encode())
                (answer,) = await read_answers(idle, 1)
                assert answer.body == b"j"
            await wait_until(lambda: not server.connections, what="connections closed")
