"""A slave's own work per transfer inside one ``functools.reduce`` call, for callgrind.

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        .venv/bin/python -m bench.micro.slave_callgrind [--count 2000] [--hold 14]

What ``bench.micro.slave_bench`` measures at one record per transfer, without the waits:
a real ``HASlave`` on a real store (dispatch of confirmed data only) takes each transfer
as its read loop does after a wake-up (``SlaveSideDecoder.feed``, then ``_take_now``:
checks, ``append_raw``, the ack written to a real socket, the confirm the transfer
carries, which covers the record before it), driven synchronously. Every ``--hold``
transfers the held confirm is given to the store (``_release_confirm``), as the read
loop's hold timer does (``CONFIRM_HOLD_S`` holds ~14 records at the ~1,400 msg/s of
``rmq bench produce -w 1``); a tree whose slave dispatches at each confirm has no such
call. The Trio wait and its wake-up are not counted (the same per transfer in every tree;
a hold adds one wake-up per ``--hold`` transfers). After ``--count`` warm-up transfers,
``--count`` more run inside one ``functools.reduce``, so callgrind counts only them
(instructions per transfer = collected / count, repeatable whatever the machine's load).
Compare two trees by running this with each on ``PYTHONPATH`` (from outside both).
"""

from __future__ import annotations

import argparse
import functools
import socket
import tempfile
from pathlib import Path

import trio

from bench.micro.common import store_records
from bench.micro.slave_bench import confirmed_only_store
from broker.ha import EpochFile, HAConfig, HASlave
from broker.ha.wire import MasterHandshake, SlaveSideDecoder, Transfer


def _transfers(path: Path, count: int, size: int, transfer_bytes: int) -> tuple[int, list[bytes]]:
    """A master's log of ``count`` transfers of at most ``transfer_bytes`` (at least one
    record each); return its start and the encoded transfers, each carrying the confirm
    offset of the records before it."""
    master = confirmed_only_store(path)
    msgs = store_records(size)
    per_transfer = max(1, transfer_bytes // master.put_message(msgs[0]).wrote_bytes)
    for i in range(count * per_transfer - 1):
        master.put_message(msgs[i % len(msgs)])
        if i % 256 == 0:  # its queues exist once dispatched: no name check per put
            master.set_confirm_offset(master.max_physical_offset)
    start = pos = master.min_physical_offset
    out = []
    while pos < master.max_physical_offset:
        data = master.read_raw(pos, transfer_bytes)
        transfer = Transfer(
            offset=pos, epoch=1, epoch_start_offset=start, confirm_offset=pos, data=data
        )
        out.append(transfer.encode())
        pos += len(data)
    return start, out


async def _run(count: int, size: int, hold: int, transfer_bytes: int, directory: Path) -> None:
    start, wire = _transfers(directory / "master", 2 * count, size, transfer_bytes)
    store = confirmed_only_store(directory / "slave")
    epochs = EpochFile.load(store.store_dir)
    await epochs.append(1, start)
    slave = HASlave(store, epochs, HAConfig(), broker_id=1, node_name="slave")
    slave._last_read_s = trio.current_time()
    release = getattr(slave, "_release_confirm", None)
    decoder = SlaveSideDecoder()
    greeting = MasterHandshake(max_offset=0, last_epoch=1, epochs=((1, start),))
    assert decoder.feed(greeting.encode())
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))

    def step(n: int, data: bytes) -> int:
        pending = slave._take_now(stream, decoder.feed(data), "bench")
        if pending or slave._owed_ack is not None:
            raise SystemExit("the slave needed a wait: not a path this driver can count")
        if release is not None and n % hold == hold - 1:
            release()
        if n % 64 == 63:
            theirs.recv(1 << 16)  # the acks: 12 bytes each
        return n + 1

    try:
        n = 0
        for data in wire[:count]:  # warm-up: not inside reduce, so not counted
            n = step(n, data)
        functools.reduce(step, wire[count:], n)
        if release is not None:
            release()
        assert store.confirm_offset > start, "nothing was dispatched"
    finally:
        ours.close()
        theirs.close()
        await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--hold", type=int, default=14, help="transfers per confirm release")
    parser.add_argument(
        "--transfer-bytes", type=int, default=1, help="1: one record per transfer (x1)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slave-callgrind-") as tmp:
        trio.run(_run, args.count, args.size, args.hold, args.transfer_bytes, Path(tmp))


if __name__ == "__main__":
    main()
