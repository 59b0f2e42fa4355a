"""Remoting fairness: a burst on one connection never holds the server's loop for long
(other connections, timers, a broker's controller heartbeats run between its slices)."""

from __future__ import annotations

import trio

from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder
from protocol.rpc import Connection
from tests.component.test_rpc import FAST, WAIT_S, raw_connect, read_commands, serving


async def test_a_read_of_hundreds_of_requests_is_served_a_slice_per_step() -> None:
    """300 requests in one write (one read on the server): the reader serves at most 64 in
    a step, so the server's other tasks (a broker's controller heartbeats) run between
    slices; every request is still answered, in order."""
    served: list[int] = []
    seen: list[int] = []

    async def count(request: RemotingCommand, conn: Connection) -> RemotingCommand:
        served.append(int(request.body))
        return request.respond(body=request.body)

    async def ticker() -> None:
        while True:
            seen.append(len(served))
            await trio.lowlevel.checkpoint()

    total = 300
    async with serving({FAST: count}) as (_server, addr):
        stream = await raw_connect(addr)
        frames = b"".join(
            RemotingCommand.request(FAST, body=b"%d" % i).encode_as(opaque=i + 1, flag=0)
            for i in range(total)
        )
        assert len(frames) < 64 * 1024  # one read holds them all
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                await stream.send_all(frames)
                answers = await read_commands(stream, FrameDecoder(), total)
                nursery.cancel_scope.cancel()
        await stream.aclose()
    assert served == list(range(total))
    assert [int(a.body) for a in answers] == list(range(total))
    between = sorted({n for n in seen if 0 < n < total})
    # Trio runs each ready task once per scheduling batch, in a random order: between two
    # turns of the ticker the reader may have served two slices, never more.
    gaps = [b - a for a, b in zip([0, *between], [*between, total], strict=True)]
    assert between and max(gaps) <= 2 * 64, between
