"""HA connection lifecycle: epoch changes, heartbeats, silence, switching masters, bad peers."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import attrs
import trio

from broker.ha.wire import MasterHandshake, MasterSideDecoder, SlaveHandshake, Transfer
from tests.component.ha_fixtures import (
    HA_CFG,
    STORE_CFG,
    WAIT_S,
    FakeSlave,
    Node,
    caught_up,
    cluster,
    follow_scripted_master,
    nodes,
    until,
)


async def test_an_epoch_change_drops_and_rehandshakes_every_connection(tmp_path: Path) -> None:
    """apache/rocketmq#9689: after a new epoch no connection keeps streaming under the old
    one; each slave handshakes again and records the new epoch with its first byte."""
    async with nodes(tmp_path, "m", "s") as (m, s), cluster(m) as c:
        slave = await c.add_slave(s, 1)
        c.append(10)
        await until(caught_up(m, s))
        assert slave.status().connects == 1
        async with FakeSlave.connect(c.port) as fake:
            await fake.handshake(2, ack=m.store.max_physical_offset)
            await until(lambda: len(c.master.status().slaves) == 2)
            start = m.store.max_physical_offset
            await c.master.new_epoch(2)
            assert await fake.closed_by_peer(2.0)
        await until(lambda: slave.status().connects == 2 and slave.status().state == "TRANSFER")
        assert [x.broker_id for x in c.master.status().slaves] == [1]
        c.append(5, start=10)
        await until(caught_up(m, s))
        assert s.epochs.cache.pairs() == [(1, 0), (2, start)]
        assert s.log_bytes() == m.log_bytes()
        await c.master.new_epoch(2)  # the same epoch again: nothing happens
        assert slave.status().connects == 2


async def test_heartbeats_keep_an_idle_connection(tmp_path: Path) -> None:
    # housekeeping 1 s, heartbeat 0.1 s, slave ack 0.2 s: idle for 2.5 s.
    async with nodes(tmp_path, "m", "s") as (m, s), cluster(m) as c:
        slave = await c.add_slave(s, 1)
        c.append(3)
        await until(caught_up(m, s))
        async with FakeSlave.connect(c.port) as fake:
            await fake.handshake(2, ack=m.store.max_physical_offset)
            heartbeats = 0
            with trio.move_on_after(2.5):
                while True:
                    t = await fake.next()
                    assert isinstance(t, Transfer) and t.is_heartbeat
                    heartbeats += 1
                    await fake.ack(m.store.max_physical_offset)
            assert heartbeats >= 10  # one per 0.1 s of idleness, roughly
        assert slave.status().connects == 1
        assert slave.status().state == "TRANSFER"
        await until(lambda: [x.broker_id for x in c.master.status().slaves] == [1])
        assert c.master.status().sync_state_set == (0, 1)


async def test_a_silent_slave_is_dropped(tmp_path: Path) -> None:
    async with (
        nodes(tmp_path, "m") as (m,),
        cluster(m) as c,
        FakeSlave.connect(c.port) as fake,
    ):
        c.append(3)
        await fake.handshake(1, ack=m.store.max_physical_offset)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        began = trio.current_time()
        assert await fake.closed_by_peer(3.0)  # heartbeats arrive, but we never ack again
        assert trio.current_time() - began >= HA_CFG.housekeeping_timeout_s * 0.9
        await until(lambda: not c.master.status().slaves)
        assert c.master.status().sync_state_set == (0,)


async def test_acks_keep_a_slave_past_many_silence_periods_then_silence_drops_it(
    tmp_path: Path,
) -> None:
    """The silence clock runs from the last read: a slave acking every 0.3 s stays for
    three housekeeping periods (1 s), and is dropped a full period after its last ack."""
    async with (
        nodes(tmp_path, "m") as (m,),
        cluster(m) as c,
        FakeSlave.connect(c.port) as fake,
    ):
        c.append(3)
        at = m.store.max_physical_offset
        await fake.handshake(1, ack=at)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        for _ in range(10):
            await trio.sleep(0.3)
            await fake.ack(at)
        last_ack = trio.current_time()
        assert c.master.status().slaves  # still served after 3 s of periods
        assert await fake.closed_by_peer(3.0)
        assert trio.current_time() - last_ack >= HA_CFG.housekeeping_timeout_s * 0.9


async def test_a_slave_leaves_a_silent_master_and_reconnects(tmp_path: Path) -> None:
    greeted: list[float] = []

    async def silent_master(stream: trio.SocketStream) -> None:
        decoder = MasterSideDecoder()
        while not decoder.feed(await stream.receive_some(1 << 16)):
            pass
        greeting = MasterHandshake(max_offset=0, last_epoch=1, epochs=((1, 0),))
        await stream.send_all(greeting.encode())
        greeted.append(trio.current_time())
        while await stream.receive_some(1 << 16):  # acks, never answered
            pass

    async with nodes(tmp_path, "s") as (s,), trio.open_nursery() as nursery:
        slave = await follow_scripted_master(nursery, s, silent_master)
        await until(lambda: len(greeted) >= 2, WAIT_S)
        assert greeted[1] - greeted[0] >= HA_CFG.housekeeping_timeout_s * 0.9
        assert "silent" in slave.status().last_error
        nursery.cancel_scope.cancel()


async def test_switching_masters_truncates_what_the_old_master_alone_had(
    tmp_path: Path,
) -> None:
    """A failover in miniature: m2 (a slave of m1) becomes master at epoch 2; s switches to
    it at runtime, drops the tail only the old master had, and follows m2."""
    async with nodes(tmp_path, "m1", "m2", "s") as (m1, m2, s), cluster(m1) as c1:
        await c1.add_slave(m2, 1)
        slave = await c1.add_slave(s, 2)
        c1.append(50)
        await until(lambda: caught_up(m1, m2)() and caught_up(m1, s)())
        c1.stop_slave("m2")  # m2 is cut off; m1 keeps writing, s gets it
        c1.append(10, start=50)
        await until(caught_up(m1, s))
        fork = m2.store.max_physical_offset
        async with cluster(m2) as c2:
            await c2.master.new_epoch(2)
            c2.append(20, start=100)
            assert slave.set_master(c2.address, 2)
            await until(caught_up(m2, s))
            assert s.log_bytes() == m2.log_bytes()
            assert s.epochs.cache.pairs() == [(1, 0), (2, fork)]
            assert s.store.max_offset("T", 0) == 70
            assert [x.broker_id for x in c2.master.status().slaves] == [2]
            await until(lambda: not c1.master.status().slaves)
            assert slave.status().master_address == c2.address
            c2.append(5, start=200)
            await until(caught_up(m2, s))
            assert s.log_bytes() == m2.log_bytes()


async def test_a_second_connection_from_the_same_slave_replaces_the_first(
    tmp_path: Path,
) -> None:
    async with (
        nodes(tmp_path, "m") as (m,),
        cluster(m) as c,
        FakeSlave.connect(c.port) as first,
    ):
        await first.handshake(5, ack=0)
        await until(lambda: [x.broker_id for x in c.master.status().slaves] == [5])
        async with FakeSlave.connect(c.port) as second:
            await second.handshake(5, ack=0)
            assert await first.closed_by_peer(2.0)
            await until(lambda: len(c.master.status().slaves) == 1)
            (only,) = c.master.status().slaves
            assert only.broker_id == 5
            assert only.address.endswith(f":{second.stream.socket.getsockname()[1]}")


async def test_bad_peers_are_dropped_and_others_keep_streaming(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m", "s") as (m, s), cluster(m) as c:
        await c.add_slave(s, 1)
        c.append(5)
        await until(caught_up(m, s))
        async with FakeSlave.connect(c.port) as garbage:  # a handshake with state 7
            await garbage.send(struct.pack(">ihhq", 7, 0, 0, 3))
            assert await garbage.closed_by_peer(2.0)
        async with FakeSlave.connect(c.port) as liar:  # acks data it was never sent (#3015)
            await liar.handshake(4, ack=0)
            await liar.ack(m.store.max_physical_offset + 1000)
            assert await liar.closed_by_peer(2.0)
        async with FakeSlave.connect(c.port) as impostor:  # the master's own id
            await impostor.send(SlaveHandshake(slave_broker_id=0).encode())
            assert await impostor.closed_by_peer(2.0)
        async with FakeSlave.connect(c.port) as ahead:  # asks for offsets we do not have
            await ahead.handshake(6, ack=m.store.max_physical_offset + 1)
            assert await ahead.closed_by_peer(2.0)
        await until(lambda: [x.broker_id for x in c.master.status().slaves] == [1])
        assert c.master.status().sync_state_set == (0, 1)
        c.append(5, start=5)
        await until(caught_up(m, s))
        assert s.log_bytes() == m.log_bytes()


async def test_a_put_path_send_the_socket_takes_in_part_is_finished_by_the_streamer(
    tmp_path: Path,
) -> None:
    """A put sends to an idle slave (its streamer parked, all it was sent acked) from the
    put path itself. A transfer larger than the socket takes at once is finished by the
    streamer before anything else: the slave reads the master's log, whole and in order."""
    # Segments of 4 MiB: one record of 1 MB, one transfer far beyond what small socket
    # buffers take in one write.
    m = Node.open(tmp_path / "m", "m", attrs.evolve(STORE_CFG, segment_bytes=4 << 20))
    try:
        await _part_is_finished_by_the_streamer(m)
    finally:
        await m.store.close()


async def _part_is_finished_by_the_streamer(m: Node) -> None:
    # No heartbeat due while the test looks at the parked streamer.
    config = attrs.evolve(HA_CFG, heartbeat_interval_s=30.0, housekeeping_timeout_s=60.0)
    async with cluster(m, config) as c, FakeSlave.connect(c.port) as fake:
        fake.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        await fake.handshake(2, ack=m.store.max_physical_offset)
        start = m.store.max_physical_offset
        conns = c.master._conns
        await until(lambda: 2 in conns and conns[2].state.name == "TRANSFER")
        conn = conns[2]
        assert conn.direct is not None  # a plain TCP socket: the put path may write to it
        conn.direct.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        c.append(1, size=200)
        await until(lambda: conn.park_scope is not None)  # parked, the transfer not acked
        (first,) = await fake.transfers_until(m.store.max_physical_offset)
        await fake.ack(first.offset + len(first.data))
        await until(  # parked with nothing due: the confirm told, everything acked
            lambda: (
                conn.park_scope is not None
                and conn.sent_confirm == c.master.confirm_offset
                and c.master.status().slaves[0].ack_offset == conn.position
            )
        )
        c.append(1, start=1, size=1_000_000)  # one record: one transfer
        assert conn.unsent  # the socket took part of it; the streamer has the rest
        end = m.store.max_physical_offset
        transfers = [first]
        while transfers[-1].offset + len(transfers[-1].data) < end:
            t = await fake.next()
            assert isinstance(t, Transfer)
            if t.data:
                assert t.offset == transfers[-1].offset + len(transfers[-1].data)
                transfers.append(t)
        data = b"".join(t.data for t in transfers)
        assert data == m.log_bytes()[start - m.store.min_physical_offset :]
