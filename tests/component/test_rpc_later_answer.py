"""A handler's LaterAnswer over real loopback sockets: given later from another task, it
reaches the client; until then the request holds its slot and bytes; a connection that
ends first drops it (real time, every wait under ``trio.fail_after``)."""

from __future__ import annotations

import select
from pathlib import Path

import trio
import trio.testing

from launcher.certs import CA_CERT
from protocol.command import RemotingCommand
from protocol.errors import ConnectionLost
from protocol.frame import FrameDecoder
from protocol.rpc import (
    Connection,
    LaterAnswer,
    TransportConfig,
    answers_together,
    open_client,
)
from protocol.tls import client_context, server_context
from tests.component.test_rpc import WAIT_S, raw_connect, read_commands, serving
from tests.component.test_rpc_tls import pki_dir as tls_pki_dir
from tests.component.test_rpc_tls import server_files

#: The TLS tests' certificates (a module-scoped fixture), under the name used here.
pki = tls_pki_dir
LATER = 7101
AT_ONCE = 7102
GIVES = 7103
WAITS = 7104


class _Deferred:
    """A handler that answers nothing now: each request's LaterAnswer is kept for the test."""

    def __init__(self) -> None:
        self.kept: list[tuple[RemotingCommand, LaterAnswer]] = []
        self.changed = trio.Event()

    async def handle(self, request: RemotingCommand, conn: Connection) -> LaterAnswer:
        later = LaterAnswer()
        self.kept.append((request, later))
        self.changed.set()
        self.changed = trio.Event()
        return later

    async def until(self, count: int) -> None:
        while len(self.kept) < count:
            await self.changed.wait()

    def give(self, index: int, body: bytes) -> None:
        request, later = self.kept[index]
        later.give(request.respond(body=body))


async def test_an_answer_given_later_reaches_the_client_and_frees_its_request() -> None:
    deferred = _Deferred()
    async with serving({LATER: deferred.handle}) as (server, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            answers: list[bytes] = []

            async def call(body: bytes) -> None:
                request = RemotingCommand.request(LATER, body=body)
                answers.append((await client.call(addr, request, timeout_s=WAIT_S)).body)

            async with trio.open_nursery() as nursery:
                for body in (b"a", b"b", b"c"):
                    nursery.start_soon(call, body)
                await deferred.until(3)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                (conn,) = server.connections.values()
                assert conn.requests_in_flight == 3  # no task holds them: the answers do
                assert server.buffered_bytes > 0
                deferred.give(1, b"second")  # out of order: matched by opaque
                deferred.give(0, b"first")
                deferred.give(0, b"again")  # a second give is dropped
                deferred.give(2, b"third")
            assert sorted(answers) == [b"first", b"second", b"third"]
            assert conn.requests_in_flight == 0
            assert server.buffered_bytes == 0


async def test_max_requests_in_flight_holds_while_answers_are_pending() -> None:
    deferred = _Deferred()
    config = TransportConfig(max_requests_in_flight=2)
    async with (
        serving({LATER: deferred.handle}, config=config) as (server, addr),
        open_client() as client,
    ):
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                for body in (b"a", b"b", b"c"):
                    request = RemotingCommand.request(LATER, body=body)
                    nursery.start_soon(client.call, addr, request)
                await deferred.until(2)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                assert len(deferred.kept) == 2  # the third waits for a slot
                (conn,) = server.connections.values()
                assert conn.requests_in_flight == 2
                deferred.give(0, b"done")  # frees a slot: the reader goes on
                await deferred.until(3)
                deferred.give(1, b"done")
                deferred.give(2, b"done")
            assert conn.requests_in_flight == 0


async def test_a_closed_connection_drops_its_pending_answers() -> None:
    deferred = _Deferred()

    async def at_once(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(body=b"alive")

    handlers = {LATER: deferred.handle, AT_ONCE: at_once}
    async with serving(handlers) as (server, addr):
        with trio.fail_after(WAIT_S):
            stream = await raw_connect(addr)
            requests = [RemotingCommand.request(LATER, opaque=i, body=b"x" * 100) for i in (1, 2)]
            await stream.send_all(b"".join(r.encode() for r in requests))
            await deferred.until(2)
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert server.buffered_bytes > 0
            await stream.aclose()
            while server.connections:  # noqa: ASYNC110 - the server notices the close
                await trio.sleep(0.01)
            assert server.buffered_bytes == 0  # released when the connection ended
            deferred.give(0, b"too late")  # nobody to write to: nothing happens
            deferred.give(1, b"too late")
            assert server.buffered_bytes == 0
            # The server serves on: a new connection is answered.
            async with await raw_connect(addr) as again:
                await again.send_all(RemotingCommand.request(AT_ONCE, opaque=3).encode())
                (answer,) = await read_commands(again, FrameDecoder(), 1)
                assert (answer.opaque, answer.body) == (3, b"alive")


async def test_an_answer_given_before_the_handler_returns_is_a_plain_answer() -> None:
    async def given_at_once(request: RemotingCommand, conn: Connection) -> LaterAnswer:
        later = LaterAnswer()
        later.give(request.respond(body=b"now"))
        return later

    async with serving({LATER: given_at_once}) as (server, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            request = RemotingCommand.request(LATER)
            assert (await client.call(addr, request, timeout_s=WAIT_S)).body == b"now"
            (conn,) = server.connections.values()
            assert conn.requests_in_flight == 0


async def test_a_watcher_sees_the_answer_when_it_is_given() -> None:
    deferred = _Deferred()
    seen: list[bytes] = []
    async with serving({LATER: deferred.handle}) as (_, addr), open_client() as client:
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call, addr, RemotingCommand.request(LATER))
                await deferred.until(1)
                deferred.kept[0][1].watch(lambda answer: seen.append(answer.body))
                assert seen == []
                deferred.give(0, b"seen")
            assert seen == [b"seen"]


async def test_a_server_stopped_with_an_answer_pending_fails_the_call() -> None:
    """The server ends with the answer pending: the client's call ends with
    ConnectionLost (not at its deadline), and the late give does nothing."""
    deferred = _Deferred()
    failed: list[ConnectionLost] = []
    async with open_client() as client:
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                async with serving({LATER: deferred.handle}) as (_, addr):

                    async def call() -> None:
                        try:
                            request = RemotingCommand.request(LATER)
                            await client.call(addr, request, timeout_s=WAIT_S)
                        except ConnectionLost as exc:
                            failed.append(exc)

                    nursery.start_soon(call)
                    await deferred.until(1)
                deferred.give(0, b"too late")
            assert len(failed) == 1


async def test_answers_given_together_leave_in_one_write_at_the_block_end() -> None:
    deferred = _Deferred()
    async with serving({LATER: deferred.handle}) as (_, addr):
        with trio.fail_after(WAIT_S):
            async with await raw_connect(addr) as stream:
                requests = [RemotingCommand.request(LATER, opaque=i) for i in (1, 2, 3)]
                await stream.send_all(b"".join(r.encode() for r in requests))
                await deferred.until(3)
                with answers_together():
                    for index in (2, 0, 1):
                        deferred.give(index, b"%d" % index)
                    with answers_together():  # nested: only the outermost block writes
                        pass
                    readable, _, _ = select.select([stream.socket.fileno()], [], [], 0.05)
                    assert not readable, "an answer left before the block ended"
                answers = await read_commands(stream, FrameDecoder(), 3)
                assert [(a.opaque, a.body) for a in answers] == [(3, b"2"), (1, b"0"), (2, b"1")]


async def test_answers_given_later_over_tls(pki: Path) -> None:
    """A TLS stream cannot be written from where ``give`` runs: its answers go through
    the connection's writer task, in order, alone or together."""
    deferred = _Deferred()
    tls = server_context(server_files(pki))
    async with (
        serving({LATER: deferred.handle}, tls=tls) as (server, addr),
        open_client(tls=client_context(ca_file=str(pki / CA_CERT))) as client,
    ):
        with trio.fail_after(WAIT_S):
            answers: dict[bytes, bytes] = {}

            async def call(body: bytes) -> None:
                request = RemotingCommand.request(LATER, body=body)
                answers[body] = (await client.call(addr, request, timeout_s=WAIT_S)).body

            async with trio.open_nursery() as nursery:
                for body in (b"a", b"b", b"c"):
                    nursery.start_soon(call, body)
                await deferred.until(3)
                deferred.give(0, deferred.kept[0][0].body * 2)
                with answers_together():
                    for index in (1, 2):
                        deferred.give(index, deferred.kept[index][0].body * 2)
            assert answers == {b"a": b"aa", b"b": b"bb", b"c": b"cc"}
            (conn,) = server.connections.values()
            assert conn.requests_in_flight == 0


async def test_a_reads_served_requests_release_their_bytes_before_one_waits() -> None:
    """One read: requests answered at once, one whose handler gives an earlier request's
    LaterAnswer, then one that waits. While it waits, only its own bytes are held: the
    reader released the rest (with the read's, not one by one) before waiting; once it
    answers, nothing is held."""
    deferred = _Deferred()
    go_on = trio.Event()

    async def at_once(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(body=b"now")

    async def gives(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        deferred.give(0, b"given")  # the LATER request of this same read
        return request.respond(body=b"gave")

    async def waits(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        await go_on.wait()
        return request.respond(body=b"waited")

    handlers = {LATER: deferred.handle, AT_ONCE: at_once, GIVES: gives, WAITS: waits}
    async with serving(handlers) as (server, addr):
        with trio.fail_after(WAIT_S):
            stream = await raw_connect(addr)
            codes = [AT_ONCE, LATER, AT_ONCE, GIVES, AT_ONCE, WAITS]
            frames = [
                RemotingCommand.request(code, opaque=i, body=b"x" * 100).encode()
                for i, code in enumerate(codes, 1)
            ]
            await stream.send_all(b"".join(frames))  # one read (or more: the same holds)
            decoder = FrameDecoder()
            answers = await read_commands(stream, decoder, 5)
            assert sorted(a.opaque for a in answers) == [1, 2, 3, 4, 5]
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert server.buffered_bytes == len(frames[-1])  # the waiting request's only
            go_on.set()
            (last,) = await read_commands(stream, decoder, 1)
            assert (last.opaque, last.body) == (6, b"waited")
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert server.buffered_bytes == 0
            await stream.aclose()
