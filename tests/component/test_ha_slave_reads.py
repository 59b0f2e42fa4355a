"""The slave's read loop: periodic acks while only heartbeats come (its read scope is
entered again only when its deadline passes), transfers applied and acked without a wait,
and an ack the socket takes only in part finished before anything else is sent."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import trio

from broker.ha.slave import HASlave
from broker.ha.stream import write_now
from broker.ha.wire import (
    Ack,
    MasterHandshake,
    MasterSideDecoder,
    SlaveHandshake,
    Transfer,
)
from tests.component.ha_fixtures import HA_CFG, WAIT_S, follow_scripted_master, nodes, until
from tests.component.test_ha_hostile_master import records


async def test_acks_keep_coming_while_only_heartbeats_arrive(tmp_path: Path) -> None:
    """Data, then heartbeats every 50 ms that grow nothing: the slave still acks every
    ``ack_interval_s`` (0.2 s), and the data's confirm offset is taken."""
    data = records(0, [("T", 0), ("T", 1)])
    acks: list[tuple[float, int]] = []

    async def master(stream: trio.SocketStream) -> None:
        decoder = MasterSideDecoder()
        events: list[SlaveHandshake | Ack] = []
        while not events:
            events += decoder.feed(await stream.receive_some(4096))
        greeting = MasterHandshake(max_offset=len(data), last_epoch=1, epochs=((1, 0),))
        await stream.send_all(greeting.encode())
        first = Transfer(offset=0, epoch=1, epoch_start_offset=0, confirm_offset=0, data=data)
        await stream.send_all(first.encode())
        heartbeat = Transfer(
            offset=len(data), epoch=1, epoch_start_offset=0, confirm_offset=len(data)
        ).encode()

        async def heartbeats() -> None:
            while True:
                await trio.sleep(0.05)
                await stream.send_all(heartbeat)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeats)
            while got := await stream.receive_some(4096):
                for ack in decoder.feed(got):
                    assert isinstance(ack, Ack)
                    acks.append((trio.current_time(), ack.max_offset))

    async with nodes(tmp_path, "s") as (s,), trio.open_nursery() as nursery:
        slave = await follow_scripted_master(nursery, s, master)
        await until(lambda: any(offset == len(data) for _, offset in acks))
        began = trio.current_time()
        await until(lambda: acks[-1][0] - began >= 1.0, WAIT_S)
        late = [t for t, offset in acks if t >= began and offset == len(data)]
        gaps = [b - a for a, b in itertools.pairwise(late)]
        assert len(late) >= 4, acks
        assert max(gaps) < HA_CFG.ack_interval_s * 3, gaps  # the heartbeats do not hold it
        assert s.store.confirm_offset == len(data)
        assert slave.status().connects == 1 and slave.status().last_error == ""
        nursery.cancel_scope.cancel()


async def test_an_ack_the_socket_takes_in_part_is_finished_first(tmp_path: Path) -> None:
    """A transfer applied without a wait whose ack the full socket does not take: it is
    owed, the read loop stops, and the general path sends the rest of it (then takes the
    confirm) before anything else."""
    data = records(0, [("T", 0)])
    ours, theirs = trio.socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream, peer = trio.SocketStream(ours), trio.SocketStream(theirs)
    filler = 0
    while sent := write_now(stream, b"\0" * 512, what="filler"):
        filler += sent
    async with nodes(tmp_path, "s") as (s,), stream, peer:
        await s.epochs.append(1, 0)
        slave = HASlave(s.store, s.epochs, HA_CFG, broker_id=1, node_name="s")
        slave._last_read_s = trio.current_time()
        batch = Transfer(
            offset=0, epoch=1, epoch_start_offset=0, confirm_offset=len(data), data=data
        )
        assert slave._take_now(stream, [batch], "test") == []
        assert s.store.max_physical_offset == len(data)  # applied
        assert slave._owed_ack is not None and slave._owed_ack[1] == len(data)
        assert slave.status().confirm_offset == 0  # not before the ack is out
        received = bytearray()

        async def drain() -> None:
            while len(received) < filler + len(Ack(max_offset=0).encode()):
                received.extend(await peer.receive_some(65536))

        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                await slave._take(stream, [], "test")
        assert slave._owed_ack is None
        assert bytes(received[filler:]) == Ack(max_offset=len(data)).encode()
        assert slave.status().acked_offset == len(data)
        assert slave.status().confirm_offset == len(data)  # it covers our whole log
