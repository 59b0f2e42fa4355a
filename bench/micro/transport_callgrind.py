"""The remoting transport's server-side instructions per request, for callgrind.

    valgrind --tool=callgrind --callgrind-out-file=F .venv/bin/python \\
        -m bench.micro.transport_callgrind --requests 2000 [--per-write 16] [--size 1024]

A ``RemotingServer`` with one handler that answers at once (``bench.micro.transport_bench``'s
server, without its process) and a raw client in the same Trio run, over loopback: the
client writes ``--per-write`` request frames at a time (encoded before the measured part),
then reads until every answer of that write has come (``FrameDecoder``: one compiled cut
a read). Everything the process runs is counted (``--collect-atstart``, the default), so
run it twice with different ``--requests`` and take the difference: instructions per
request = (I(b) - I(a)) / (b - a), start-up and shutdown cancelled out. Unlike CPU time
that figure does not move with the machine's load, so two trees compare in any hour
(run each with its own tree as the current directory).
"""

from __future__ import annotations

import argparse

import trio

from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder
from protocol.rpc import Connection, RemotingServer

CODE = RequestCode.SEND_MESSAGE_V2


async def _answer(request: RemotingCommand, conn: Connection) -> RemotingCommand:
    return request.respond()


async def _run(requests: int, per_write: int, size: int) -> None:
    server = RemotingServer({CODE: _answer}, name="transport-callgrind", host="127.0.0.1", port=0)
    # One frame sent again and again (the server answers each; opaques may repeat): no
    # encoding in the count, which is the server's work and a raw client's reads.
    frame = RemotingCommand.request(CODE, opaque=1, body=b"x" * size).encode()
    writes = [frame * min(per_write, requests - n) for n in range(0, requests, per_write)]
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            decoder = FrameDecoder()
            answered = 0
            for n, data in zip(range(0, requests, per_write), writes, strict=True):
                await stream.send_all(data)
                want = min(n + per_write, requests)
                while answered < want:
                    answered += len(decoder.feed(await stream.receive_some(1 << 20)))
            await stream.aclose()
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--per-write", type=int, default=16, help="request frames per write")
    parser.add_argument("--size", type=int, default=1024, help="request body bytes")
    args = parser.parse_args()
    if args.requests < 1 or args.per_write < 1 or args.size < 0:
        parser.error("--requests and --per-write must be at least 1, --size at least 0")
    trio.run(_run, args.requests, args.per_write, args.size)


if __name__ == "__main__":
    main()
