"""A controller-mode HA slave's own cost per message: a real ``HASlave`` on a real store,
fed over loopback by a scripted master in a child process.

    .venv/bin/python -m bench.micro.slave_bench [--count N] [--size BYTES] \
        [--transfer-bytes B] [--window W] [--repeat R]

The child (it writes the log, then serves it over plain blocking sockets: it costs this
process nothing) serves a log of ``--count`` records (the micro-benchmarks' records: a tag, a key, a UNIQ_KEY) as a
master would: transfers of at most ``--transfer-bytes`` (1: one record each, the x1
path; 32768: the master's batches under load), at most ``--window`` unacked, each
carrying the confirm offset of what the slave acked so far, and a last empty transfer
with the final confirm. This process runs the slave (dispatch of confirmed data only, as
in controller mode) and reports, per record and per transfer, its CPU
(``time.process_time`` from the first byte of data to the dispatch of the last record,
so it holds the receive, validation, write, ack and the dispatch the confirm releases)
and its Trio batches (run-loop passes, each an ``epoll_wait``). Best of ``--repeat``
fresh slave stores. The figures do not depend on the master's code: compare trees with
the same command (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from bench.micro.common import store_records
from broker.ha import EpochFile, HAConfig, HASlave
from broker.ha import slave as slave_module
from broker.ha.wire import MasterHandshake, Transfer
from broker.store.config import FlushMode, StoreConfig
from broker.store.store import MessageStore

_ACK = struct.Struct(">iq")


def confirmed_only_store(path: Path) -> MessageStore:
    """A store as a controller-mode replica opens it (ASYNC_FLUSH, confirmed data only)."""
    config = StoreConfig(
        flush_mode=FlushMode.ASYNC_FLUSH,
        min_free_disk_bytes=64 * 1024 * 1024,
        node_name=path.name,
        dispatch_confirmed_only=True,
    )
    return MessageStore.open(path, config)


async def _write_log(
    path: Path, count: int, size: int, transfer_bytes: int
) -> list[tuple[int, bytes]]:
    """Fill a master store with ``count`` records; return its transfers."""
    master = confirmed_only_store(path)
    try:
        msgs = store_records(size)
        for i in range(count):
            master.put_message(msgs[i % len(msgs)])
        batches = []
        pos = master.min_physical_offset
        while pos < master.max_physical_offset:
            data = master.read_raw(pos, transfer_bytes)
            batches.append((pos, data))
            pos += len(data)
    finally:
        await master.close()
    return batches


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the slave closed the connection")
        out += chunk
    return bytes(out)


def _serve(args: argparse.Namespace) -> None:
    """The scripted master (child process): write the log, print the port, then serve
    ``--repeat`` slaves one after the other."""
    parent = Path(tempfile.mkdtemp(prefix="slave-bench-master-", dir=args.dir))
    try:
        batches = trio.run(
            _write_log, parent / "master", args.count, args.size, args.transfer_bytes
        )
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], len(batches), flush=True)
    for _ in range(args.repeat):
        conn, _ = server.accept()
        with conn:
            _serve_one(conn, batches, args.window)


def _serve_one(conn: socket.socket, batches: list[tuple[int, bytes]], window: int) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start, end = batches[0][0], batches[-1][0] + len(batches[-1][1])
    _recv_exactly(conn, 16)  # the slave's handshake
    greeting = MasterHandshake(max_offset=end, last_epoch=1, epochs=((1, start),))
    conn.sendall(greeting.encode())
    _, confirm = _ACK.unpack(_recv_exactly(conn, _ACK.size))
    sent = acked = 0
    while acked < len(batches):
        while sent < len(batches) and sent - acked < window:
            offset, data = batches[sent]
            transfer = Transfer(
                offset=offset, epoch=1, epoch_start_offset=start, confirm_offset=confirm, data=data
            )
            conn.sendall(transfer.encode())
            sent += 1
        _, confirm = _ACK.unpack(_recv_exactly(conn, _ACK.size))  # one slave: all acked
        while acked < len(batches) and batches[acked][0] + len(batches[acked][1]) <= confirm:
            acked += 1
    last = Transfer(offset=end, epoch=1, epoch_start_offset=start, confirm_offset=end)
    conn.sendall(last.encode())
    while conn.recv(4096):  # until the slave goes
        pass


class _Batches(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


async def _one_run(path: Path, port: int) -> tuple[float, int, float]:
    """CPU seconds, Trio batches and wall seconds of one slave replicating the log."""
    store = confirmed_only_store(path)
    batches = _Batches()
    try:
        slave = HASlave(
            store,
            EpochFile.load(store.store_dir),
            HAConfig(),
            broker_id=1,
            node_name="slave",
            master_address=f"127.0.0.1:{port}",
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await nursery.start(slave.run)
            with trio.fail_after(600):
                while store.max_physical_offset == 0:  # noqa: ASYNC110 - the first data
                    await trio.sleep(0.001)
                trio.lowlevel.add_instrument(batches)
                began, cpu = time.perf_counter(), time.process_time()
                end = slave.status().master_max_offset  # from the handshake
                while store.confirm_offset < end:  # noqa: ASYNC110 - until all is dispatched
                    await trio.sleep(0.02)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - began
                trio.lowlevel.remove_instrument(batches)
            nursery.cancel_scope.cancel()
    finally:
        await store.close()
    return cpu, batches.count, wall


async def _runs(args: argparse.Namespace, port: int, transfers: int) -> dict[str, Any]:
    parent = Path(tempfile.mkdtemp(prefix="slave-bench-", dir=args.dir))
    try:
        runs = [await _one_run(parent / f"slave{r}", port) for r in range(args.repeat)]
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    cpu, passes, wall = min(runs)
    row = {
        "transfers": transfers,
        "cpu_us_per_msg": cpu / args.count * 1e6,
        "cpu_us_per_transfer": cpu / transfers * 1e6,
        "batches_per_transfer": passes / transfers,
        "msg_per_s": args.count / wall,
    }
    print(
        f" slave: {args.count} msgs x {args.size} B in {transfers} transfers, window "
        f"{args.window}: CPU {row['cpu_us_per_msg']:.1f} us/msg, "
        f"{row['cpu_us_per_transfer']:.1f} us/transfer, {row['batches_per_transfer']:.2f} "
        f"Trio batches/transfer, {row['msg_per_s']:,.0f} msg/s (best of {args.repeat})"
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--transfer-bytes", type=int, default=1)
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the store dirs")
    parser.add_argument(
        "--confirm-hold-s",
        type=float,
        default=None,
        help="the slave's CONFIRM_HOLD_S (under valgrind: the default times its slowdown, "
        "so as many messages share a hold as at full speed)",
    )
    parser.add_argument("--serve", action="store_true", help="be the master (internal)")
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args)
        return
    if args.confirm_hold_s is not None:
        slave_module.CONFIRM_HOLD_S = args.confirm_hold_s
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.micro.slave_bench", "--serve", *(argv or sys.argv[1:])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port, transfers = map(int, child.stdout.readline().split())
        row = trio.run(_runs, args, port, transfers)
    finally:
        child.terminate()
        child.wait(timeout=10)
    config = {"count": args.count, "size": args.size}
    print(json.dumps(config | {"transfer_bytes": args.transfer_bytes, "window": args.window} | row))


if __name__ == "__main__":
    main()
