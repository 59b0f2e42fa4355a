"""The chaos fault proxy over loopback: pass, black hole, refuse, latency, loss; and tail
damage on a CommitLog segment written by the real store code's record layout."""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from protocol.message import MAGIC_V1, MIN_RECORD_BYTES
from scenarios.faults import Cut, FaultProxy, Toxics, tear_commitlog_tail


async def _echo(stream: trio.SocketStream) -> None:
    try:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


@asynccontextmanager
async def proxied_echo() -> AsyncIterator[FaultProxy]:
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, _echo, listeners)
        proxy = FaultProxy("test", f"127.0.0.1:{port}", random.Random(1))
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()


async def _round_trip(proxy: FaultProxy, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    async with stream:
        await stream.send_all(payload)
        got = b""
        while len(got) < len(payload):
            got += await stream.receive_some(65536)
        return got


async def test_passes_bytes_both_ways() -> None:
    async with proxied_echo() as proxy:
        with trio.fail_after(5):
            assert await _round_trip(proxy, b"hello" * 1000) == b"hello" * 1000
        assert proxy.stats.connections == 1
        assert proxy.stats.bytes_up == proxy.stats.bytes_down == 5000


async def test_black_hole_holds_bytes_and_releases_them_in_order_when_healed() -> None:
    async with proxied_echo() as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(b"a")
            assert await stream.receive_some(10) == b"a"
            proxy.set(Toxics(cut=Cut.DROP))
            await stream.send_all(b"bc")
            with trio.move_on_after(0.5) as silent:
                await stream.receive_some(10)
            assert silent.cancelled_caught, "a black hole let bytes through"
            proxy.clear()
            got = b""
            with trio.fail_after(5):
                while len(got) < 2:
                    got += await stream.receive_some(10)
            assert got == b"bc"  # held, not lost: the stream keeps its framing
        assert proxy.stats.held_chunks >= 1


async def test_refuse_resets_open_and_new_connections() -> None:
    async with proxied_echo() as proxy:
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(b"x")
        assert await stream.receive_some(10) == b"x"
        proxy.set(Toxics(cut=Cut.REFUSE))
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            while await stream.receive_some(10):
                pass
            raise trio.BrokenResourceError("closed")  # EOF is a close too
        await stream.aclose()
        with trio.fail_after(5):
            fresh = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with fresh:
                with pytest.raises(trio.BrokenResourceError):
                    await fresh.send_all(b"y")
                    if not await fresh.receive_some(10):
                        raise trio.BrokenResourceError("closed at once")
        assert proxy.stats.refused >= 1
        proxy.clear()
        with trio.fail_after(5):
            assert await _round_trip(proxy, b"back") == b"back"


async def test_latency_delays_each_direction() -> None:
    async with proxied_echo() as proxy:
        proxy.set(Toxics(latency_s=0.2))
        start = trio.current_time()
        with trio.fail_after(5):
            assert await _round_trip(proxy, b"slow") == b"slow"
        assert trio.current_time() - start >= 0.4  # up and down


def test_loss_is_retransmission_delay_never_missing_bytes() -> None:
    rng = random.Random(3)
    none = Toxics()
    assert none.delay_s(rng) == 0.0
    lossy = Toxics(loss=0.5)
    delays = [lossy.delay_s(rng) for _ in range(2000)]
    assert 0.35 < sum(d > 0 for d in delays) / len(delays) < 0.65
    # TCP-like backoff: 0.2, 0.6, 1.4, ... seconds; never more than a handful of tries.
    assert {round(d, 1) for d in delays} <= {0.0, 0.2, 0.6, 1.4, 3.0, 6.2}
    with pytest.raises(ValueError):
        Toxics(loss=1.5)


def test_proxy_fronts_loopback_only() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        FaultProxy("x", "10.0.0.1:9876", random.Random())


# --- CommitLog tail damage ------------------------------------------------------------


def _segment(tmp_path: Path, records: list[int]) -> Path:
    """A sparse 64 KiB segment holding records of the given sizes (valid headers)."""
    directory = tmp_path / "store" / "commitlog"
    directory.mkdir(parents=True)
    path = directory / f"{0:020d}"
    data = b"".join(struct.pack(">ii", n, MAGIC_V1) + b"\x01" * (n - 8) for n in records)
    path.write_bytes(data)
    with path.open("r+b") as f:
        f.truncate(64 * 1024)
    return path


def test_torn_tail_goes_right_after_the_last_whole_record(tmp_path: Path) -> None:
    path = _segment(tmp_path, [MIN_RECORD_BYTES + 10, MIN_RECORD_BYTES + 20])
    end = 2 * MIN_RECORD_BYTES + 30
    damage = tear_commitlog_tail(tmp_path / "store", random.Random(5))
    assert (damage.data_end, damage.offset, damage.how) == (end, end, "torn")
    raw = path.read_bytes()
    size, magic = struct.unpack(">ii", raw[end : end + 8])
    assert magic == MAGIC_V1 and size > damage.length  # a record cut short
    assert raw[:end] == _segment_bytes([MIN_RECORD_BYTES + 10, MIN_RECORD_BYTES + 20])
    assert raw[end + damage.length :].strip(b"\0") == b""


def _segment_bytes(records: list[int]) -> bytes:
    return b"".join(struct.pack(">ii", n, MAGIC_V1) + b"\x01" * (n - 8) for n in records)


def test_corrupt_flips_one_bit_inside_the_last_record(tmp_path: Path) -> None:
    sizes = [MIN_RECORD_BYTES + 10, MIN_RECORD_BYTES + 20]
    path = _segment(tmp_path, sizes)
    before = path.read_bytes()
    damage = tear_commitlog_tail(tmp_path / "store", random.Random(6), how="corrupt")
    after = path.read_bytes()
    diff = [i for i in range(len(before)) if before[i] != after[i]]
    assert diff == [damage.offset]
    assert sizes[0] + 8 <= damage.offset < sum(sizes)
    assert bin(before[damage.offset] ^ after[damage.offset]).count("1") == 1
