"""``RemotingServer.on_answered`` over real loopback sockets: the transport reports each
answer to a request with a handler (its request code, response code and time), whatever
the handler did: answered, raised a ``ServerError`` or anything else, raised before its
coroutine existed, or gave a ``LaterAnswer`` afterwards; codes with no handler are
answered and not reported (the broker's latency table stays as small as its handlers)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import trio

from protocol.codes import ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import ServerError
from protocol.rpc import Connection, LaterAnswer, open_client
from tests.component.test_rpc import WAIT_S, serving

OK, REFUSED, CRASHED, RAISED_AT_CALL, LATER, UNKNOWN = 7201, 7202, 7203, 7204, 7205, 7299
LATER_AFTER_S = 0.05


async def test_each_answer_is_reported_with_its_codes_and_time() -> None:
    reported: list[tuple[int, int, float]] = []

    async def ok(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(body=b"ok")

    async def refused(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        raise ServerError("not you", code=ResponseCode.NO_PERMISSION)

    async def crashed(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        raise RuntimeError("a bug")

    def raised_at_call(
        request: RemotingCommand, conn: Connection
    ) -> Coroutine[Any, Any, RemotingCommand]:
        # As the broker's send handlers: a plain function handing back a coroutine,
        # whose header check raises before there is one.
        raise ServerError("bad header", code=ResponseCode.MESSAGE_ILLEGAL)

    async with trio.open_nursery() as givers:

        async def later(request: RemotingCommand, conn: Connection) -> LaterAnswer:
            answer = LaterAnswer()

            async def give() -> None:
                await trio.sleep(LATER_AFTER_S)
                answer.give(request.respond(ResponseCode.FLUSH_SLAVE_TIMEOUT))

            givers.start_soon(give)
            return answer

        handlers = {OK: ok, REFUSED: refused, CRASHED: crashed, LATER: later}
        handlers[RAISED_AT_CALL] = raised_at_call  # type: ignore[assignment]
        async with serving(handlers) as (server, addr), open_client() as client:
            server.on_answered = lambda *answered: reported.append(answered)
            with trio.fail_after(WAIT_S):
                answers = {}
                for code in (OK, REFUSED, CRASHED, RAISED_AT_CALL, LATER, UNKNOWN):
                    request = RemotingCommand.request(code)
                    answers[code] = await client.call(addr, request, timeout_s=WAIT_S)
    assert {code: answer.code for code, answer in answers.items()} == {
        OK: ResponseCode.SUCCESS,
        REFUSED: ResponseCode.NO_PERMISSION,
        CRASHED: ResponseCode.SYSTEM_ERROR,
        RAISED_AT_CALL: ResponseCode.MESSAGE_ILLEGAL,
        LATER: ResponseCode.FLUSH_SLAVE_TIMEOUT,
        UNKNOWN: ResponseCode.REQUEST_CODE_NOT_SUPPORTED,
    }
    assert answers[RAISED_AT_CALL].remark == "bad header"
    assert [(request, response) for request, response, _ in reported] == [
        (OK, ResponseCode.SUCCESS),
        (REFUSED, ResponseCode.NO_PERMISSION),
        (CRASHED, ResponseCode.SYSTEM_ERROR),
        (RAISED_AT_CALL, ResponseCode.MESSAGE_ILLEGAL),
        (LATER, ResponseCode.FLUSH_SLAVE_TIMEOUT),
    ]
    times_s = {request: elapsed_s for request, _, elapsed_s in reported}
    assert all(0 <= elapsed_s < WAIT_S for elapsed_s in times_s.values())
    assert times_s[LATER] >= LATER_AFTER_S  # timed when given, not when handed back
    assert times_s[OK] < LATER_AFTER_S
