"""The pure protocol codec's CPU per operation, in one process: what a compiled build of it
(issue 14, item 6) could save, measured without a broker, sockets or scheduling.

    .venv/bin/python -m bench.micro.codec_bench [--count 20000] [--repeat 5]

Three loops, each the codec work of one message on the data path:
- ``request_decode``: 64 SEND_MESSAGE_V2 frames of one read cut by ``FrameDecoder.feed``
  and decoded to ``RemotingCommand`` (the broker's side of a single send);
- ``answer_encode``: the SEND_OK answer built from its typed header and encoded (the
  broker's answer; the client decodes the same bytes);
- ``pull_decode``: a FOUND body of 32 records decoded by the SDK's ``decode_pull_body``
  (the consumer's side), and ``record_decode``: the same body through
  ``protocol.message.iter_records`` (the broker's and tools' general decoder).
With ``--callgrind LOOP`` the named loop runs once more inside one ``functools.reduce``
call after its warm-up, for instruction counts that do not move with the machine's load:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        .venv/bin/python -m bench.micro.codec_bench --callgrind request_decode --count 2000

(instructions per message = collected / count). Otherwise figures are µs of this process's CPU (``time.process_time``) per message, best and median
of ``--repeat`` runs; the JSON line also names the file ``protocol.command`` was loaded
from (a ``.py``, or a ``.so`` of a compiled experiment), so runs of two trees (each on
``PYTHONPATH``; ``-m`` imports from the current directory first) can be told apart.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable

import attrs

import protocol.command as command_module
from bench.micro.common import store_records
from bench.wire import SendRequests
from client.consumer import decode_pull_body
from protocol.bodies import parse_subscription
from protocol.codes import ResponseCode
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder
from protocol.headers import SendMessageResponseHeader
from protocol.message import encode_record, iter_records
from protocol.route import MessageQueue

PER_READ = 64
PULL_BATCH = 32


def _best_median(loop: Callable[[], int], repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        messages = loop()
        runs.append((time.process_time() - start) / messages * 1e6)
    return round(min(runs), 3), round(statistics.median(runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--callgrind", metavar="LOOP", help="run LOOP once inside reduce")
    args = parser.parse_args()
    count: int = args.count
    reads = max(1, count // PER_READ)
    size: int = args.size
    requests = SendRequests("codec-bench", size, queues=4, batch=1)
    read = b"".join(requests.single().encode() for _ in range(PER_READ))

    def request_decode() -> int:
        from_frame = RemotingCommand.from_frame
        for _ in range(reads):
            for frame in FrameDecoder().feed(read):
                from_frame(frame)
        return reads * PER_READ

    request = RemotingCommand.from_frame(FrameDecoder().feed(read)[0])

    def answer_encode() -> int:
        for n in range(reads * PER_READ):
            header = SendMessageResponseHeader(
                msg_id="7F00000100002A9F0000000000000000", queue_id=n & 3, queue_offset=n
            )
            request.respond(ResponseCode.SUCCESS, ext_fields=header.to_ext_fields()).encode()
        return reads * PER_READ

    records = [
        attrs.evolve(record, queue_id=1, queue_offset=n, physical_offset=n * 2048)
        for n, record in enumerate(store_records(size, distinct=PULL_BATCH))
    ]
    body = b"".join(encode_record(r) for r in records)
    queue = MessageQueue(topic=records[0].topic, broker_name="broker-a", queue_id=1)
    everything = parse_subscription("*", topic=records[0].topic)
    pulls = max(1, count // PULL_BATCH)

    def pull_decode() -> int:
        for _ in range(pulls):
            got = decode_pull_body(
                body,
                queue,
                everything,
                requested=0,
                next_begin_offset=PULL_BATCH,
                max_nums=PULL_BATCH,
            )
        assert len(got.messages) == PULL_BATCH, got
        return pulls * PULL_BATCH

    def record_decode() -> int:
        for _ in range(pulls):
            for _record in iter_records(body):
                pass
        return pulls * PULL_BATCH

    figures: dict[str, object] = {"command_module": command_module.__file__}
    loops = [
        ("request_decode", request_decode),
        ("answer_encode", answer_encode),
        ("pull_decode", pull_decode),
        ("record_decode", record_decode),
    ]
    if args.callgrind is not None:
        loop = dict(loops)[args.callgrind]
        loop()  # warm-up, not counted: only what runs inside reduce is
        messages = functools.reduce(lambda _total, _item: loop(), [None], 0)
        print(json.dumps({**figures, "loop": args.callgrind, "messages": messages}))
        return
    for name, loop in loops:
        loop()  # warm caches (header classes' generated parsers, lru caches)
        best, median = _best_median(loop, args.repeat)
        figures[f"{name}_us_best"] = best
        figures[f"{name}_us_median"] = median
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
