"""Bytecodes and Python calls per single send, by function, for finding where a send goes.

    .venv/bin/python -m bench.micro.send_bytecodes [--count 1000] [--top 40]

``bench.micro.send_bench``'s in-process sends (a Broker in this process, SEND_MESSAGE_V2
frames as a Java producer builds them) with a trace function that counts every bytecode
(``f_trace_opcodes``) and every Python call of ``--count`` sends, after as many warm-up
sends, then prints the totals per send and the ``--top`` functions by bytecodes. Like
instruction counts (``bench.micro.send_callgrind``) these do not move with the machine's
load; unlike them they name Python functions. C functions count as the bytecode that
calls them, so a compiled step shows as bytecodes and calls removed.
"""

from __future__ import annotations

import argparse
import collections
import sys
import types
from pathlib import Path
from typing import Any

from bench.micro import send_bench
from protocol.command import RemotingCommand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    root = f"{Path(__file__).resolve().parents[2]}/"  # names relative to the checkout
    bytecodes: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def trace(frame: types.FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        name = f"{code.co_filename.removeprefix(root)}:{code.co_qualname}"
        calls[name] += 1

        def each(frame: types.FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                bytecodes[name] += 1
            return each

        return each

    # Count between the warm-up's end and ``--count`` sends later: the decode of each
    # request marks where a send begins (the bench decodes right before the handler).
    decode = RemotingCommand.from_frame
    seen = 0

    def counted_decode(frame: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == args.count + 1:
            sys.settrace(trace)
        elif seen == 2 * args.count + 1:
            sys.settrace(None)
        return decode(frame)

    RemotingCommand.from_frame = staticmethod(counted_decode)  # type: ignore[method-assign]
    sys.argv = [sys.argv[0], "--count", str(3 * args.count), "--repeat", "1", "--per-read", "16"]
    send_bench.main()
    own = f"{Path(__file__).resolve().relative_to(root)}:main.<locals>.counted_decode"
    bytecodes.pop(own, None)
    calls.pop(own, None)
    print(
        f"per send: {sum(bytecodes.values()) / args.count:.1f} bytecodes, "
        f"{sum(calls.values()) / args.count:.1f} Python calls"
    )
    for name, n in bytecodes.most_common(args.top):
        print(f"{n / args.count:8.1f} {calls[name] / args.count:6.2f}  {name}")


if __name__ == "__main__":
    main()
