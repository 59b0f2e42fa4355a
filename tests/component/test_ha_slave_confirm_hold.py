"""The slave gives the master's confirm offset to its store (which dispatches up to it)
in bulk: held while data keeps coming, given with the first transfer ``CONFIRM_HOLD_S``
or more after the hold began, at once on a read without data, once
``CONFIRM_HOLD_BYTES`` of log wait, at the periodic ack's turn, and when the connection
ends; never past our log."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from broker.ha import slave as slave_module
from broker.ha.slave import HASlave
from broker.ha.wire import (
    Ack,
    MasterHandshake,
    MasterSideDecoder,
    SlaveHandshake,
    Transfer,
)
from tests.component.ha_fixtures import HA_CFG, STORE_CFG, WAIT_S, Node, until
from tests.component.test_ha_hostile_master import records

#: Periodic acks and the silence limit far away: they end no hold during a test.
SLOW_CFG = attrs.evolve(HA_CFG, ack_interval_s=30.0, housekeeping_timeout_s=60.0)


@contextlib.asynccontextmanager
async def controller_node(tmp_path: Path) -> AsyncIterator[Node]:
    """A store that dispatches confirmed data only, as in controller mode."""
    node = Node.open(tmp_path / "s", "s", attrs.evolve(STORE_CFG, dispatch_confirmed_only=True))
    try:
        yield node
    finally:
        with trio.CancelScope(shield=True):
            await node.store.close()


async def _driven_slave(node: Node) -> HASlave:
    """A slave of ``node`` in epoch 1 from offset 0, driven by calling ``_take_now``
    (``_last_read_s``, its clock, set as the read loop sets it per read)."""
    await node.epochs.append(1, 0)
    slave = HASlave(node.store, node.epochs, HA_CFG, broker_id=1, node_name=node.name)
    slave._last_read_s = trio.current_time()
    return slave


def _two_records() -> tuple[bytes, bytes, int]:
    """Two records of two queues, laid out from 0, and where the second ends."""
    first = records(0, [("T", 0)])
    second = records(len(first), [("T", 1)])
    return first, second, len(first) + len(second)


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    ours, theirs = trio.socket.socketpair()
    return trio.SocketStream(ours), trio.SocketStream(theirs)


def _transfer(data: bytes, offset: int, confirm: int) -> Transfer:
    return Transfer(offset=offset, epoch=1, epoch_start_offset=0, confirm_offset=confirm, data=data)


async def test_a_confirm_with_data_is_held_and_a_read_without_data_gives_it(
    tmp_path: Path,
) -> None:
    first, second, end = _two_records()
    stream, peer = _pair()
    async with controller_node(tmp_path) as s, stream, peer:
        slave = await _driven_slave(s)
        assert slave._take_now(stream, [_transfer(first, 0, 0)], "test") == []
        assert slave._take_now(stream, [_transfer(second, len(first), len(first))], "test") == []
        assert slave.status().acked_offset == end  # acked at once
        assert s.store.confirm_offset == 0  # held: nothing dispatched yet
        assert s.store.max_offset("T", 0) == 0
        heartbeat = Transfer(offset=end, epoch=1, epoch_start_offset=0, confirm_offset=end + 999)
        assert slave._take_now(stream, [heartbeat], "test") == []
        assert s.store.confirm_offset == end  # never past our log
        assert slave.status().confirm_offset == end
        assert (s.store.max_offset("T", 0), s.store.max_offset("T", 1)) == (1, 1)


async def test_data_and_a_heartbeat_in_one_read_give_the_confirm_at_once(
    tmp_path: Path,
) -> None:
    """A slave behind the others gets its last data and the heartbeat carrying the
    confirm that follows it in one read: nothing more comes, so nothing is held."""
    data = records(0, [("T", 0), ("T", 1)])
    heartbeat = Transfer(offset=len(data), epoch=1, epoch_start_offset=0, confirm_offset=len(data))
    stream, peer = _pair()
    async with controller_node(tmp_path) as s, stream, peer:
        slave = await _driven_slave(s)
        pending = [_transfer(data, 0, 0), heartbeat]
        assert slave._take_now(stream, pending, "test") == []
        assert s.store.confirm_offset == len(data)
        assert (s.store.max_offset("T", 0), s.store.max_offset("T", 1)) == (1, 1)
        heartbeat_first = [heartbeat, _transfer(records(len(data), [("T", 2)]), len(data), 0)]
        assert slave._take_now(stream, heartbeat_first, "test") == []
        assert slave._held_since is None  # the confirm did not move: nothing to hold


async def test_a_confirm_that_covers_our_whole_log_is_given_at_once(tmp_path: Path) -> None:
    """A slave behind the others: the confirm came (as far as our log went) before the
    data it covers, and the master sends it again only when it moves."""
    first, second, end = _two_records()
    stream, peer = _pair()
    async with controller_node(tmp_path) as s, stream, peer:
        slave = await _driven_slave(s)
        assert slave._take_now(stream, [_transfer(first, 0, end)], "test") == []
        assert s.store.confirm_offset == len(first)  # as far as our log goes
        assert slave._take_now(stream, [_transfer(second, len(first), end)], "test") == []
        assert s.store.confirm_offset == end
        assert slave._held_since is None


async def test_a_hold_as_old_as_confirm_hold_s_is_given_with_the_next_transfer(
    tmp_path: Path,
) -> None:
    data = [records(0, [("T", 0)])]
    for queue_id in (1, 2, 3):  # one record a queue: ``records`` starts each queue at 0
        data.append(records(sum(map(len, data)), [("T", queue_id)]))
    ends = list(itertools.accumulate(map(len, data)))
    stream, peer = _pair()
    async with controller_node(tmp_path) as s, stream, peer:
        slave = await _driven_slave(s)
        began = slave._last_read_s
        assert began is not None
        assert slave._take_now(stream, [_transfer(data[0], 0, 0)], "test") == []
        assert slave._take_now(stream, [_transfer(data[1], ends[0], ends[0])], "test") == []
        slave._last_read_s = began + slave_module.CONFIRM_HOLD_S / 2
        assert slave._take_now(stream, [_transfer(data[2], ends[1], ends[1])], "test") == []
        assert s.store.confirm_offset == 0  # held since ``began``
        slave._last_read_s = began + slave_module.CONFIRM_HOLD_S
        assert slave._take_now(stream, [_transfer(data[3], ends[2], ends[2])], "test") == []
        assert s.store.confirm_offset == ends[2]  # every confirm so far, in one dispatch
        assert slave._held_since is None


async def test_a_confirm_over_the_hold_bytes_is_given_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = records(0, [("T", 0), ("T", 0), ("T", 0)])
    monkeypatch.setattr(slave_module, "CONFIRM_HOLD_BYTES", len(data) - 1)
    stream, peer = _pair()
    async with controller_node(tmp_path) as s, stream, peer:
        slave = await _driven_slave(s)
        assert slave._take_now(stream, [_transfer(data, 0, 1)], "test") == []
        assert s.store.confirm_offset == 0  # a confirm inside the first record: nothing to do
        assert slave._take_now(stream, [], "test") == []
        more = records(len(data), [("T", 1)])
        assert slave._take_now(stream, [_transfer(more, len(data), len(data))], "test") == []
        assert s.store.confirm_offset == len(data)  # the hold's byte limit reached
        assert slave._held_since is None


async def _serve(stream: trio.SocketStream, data: bytes, acked: trio.Event, close: bool) -> None:
    """A scripted master: handshake, one transfer, a second one carrying the first's
    confirm, then silence (or the connection closed) once that is acked."""
    decoder = MasterSideDecoder()
    events: list[SlaveHandshake | Ack] = []
    while not events:
        events += decoder.feed(await stream.receive_some(4096))
    half = len(records(0, [("T", 0)]))
    greeting = MasterHandshake(max_offset=len(data), last_epoch=1, epochs=((1, 0),))
    await stream.send_all(greeting.encode())
    await stream.send_all(_transfer(data[:half], 0, 0).encode())
    await stream.send_all(_transfer(data[half:], half, half).encode())
    while not acked.is_set():
        for ack in decoder.feed(await stream.receive_some(4096)):
            assert isinstance(ack, Ack)
            if ack.max_offset == len(data):
                acked.set()
    if not close:
        await trio.sleep_forever()


@pytest.mark.parametrize("close", [False, True], ids=["silence", "connection-closed"])
async def test_a_held_confirm_is_given_without_more_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, close: bool
) -> None:
    """No heartbeat, no transfer: the periodic ack's turn (every 0.2 s) gives the
    confirm; with periodic acks 30 s apart and the hold longer than the test, the end of
    the connection gives it."""
    if close:
        monkeypatch.setattr(slave_module, "CONFIRM_HOLD_S", 3600.0)
    data = records(0, [("T", 0), ("T", 0)])
    half = len(records(0, [("T", 0)]))
    acked = trio.Event()
    async with controller_node(tmp_path) as s, trio.open_nursery() as nursery:
        listeners = await nursery.start(
            trio.serve_tcp, lambda stream: _serve(stream, data, acked, close), 0
        )
        port = listeners[0].socket.getsockname()[1]
        slave = HASlave(
            s.store,
            s.epochs,
            SLOW_CFG if close else HA_CFG,
            broker_id=1,
            node_name="s",
            master_address=f"127.0.0.1:{port}",
        )
        await nursery.start(slave.run)
        with trio.fail_after(WAIT_S):
            await acked.wait()
        await until(lambda: s.store.confirm_offset == half, timeout_s=5.0)
        assert s.store.max_offset("T", 0) == 1  # dispatched up to the confirm, no further
        nursery.cancel_scope.cancel()
