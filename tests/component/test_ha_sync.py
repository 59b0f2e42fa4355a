"""Synchronous double write: pipelined waiters, timeouts, no slave, SyncStateSet changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from broker.ha.config import HAConfig
from broker.ha.master import HAMaster, ReplicaOutcome
from broker.ha.syncstate import SyncStateSetProposed
from broker.ha.wire import Transfer
from broker.store.config import FlushMode
from tests.component.ha_fixtures import (
    HA_CFG,
    STORE_CFG,
    Cluster,
    FakeSlave,
    Node,
    caught_up,
    cluster,
    nodes,
    until,
)

OK, TIMEOUT, NO_SLAVE = ReplicaOutcome.OK, ReplicaOutcome.TIMEOUT, ReplicaOutcome.NO_SLAVE


async def test_a_thousand_waiters_complete_in_offset_order(tmp_path: Path) -> None:
    """1000 sync writes wait at once; each ack releases exactly the prefix it covers (the
    order tasks then wake in is Trio's business; what is released is always a prefix)."""
    async with nodes(tmp_path, "m") as (m,), cluster(m) as c, FakeSlave.connect(c.port) as fake:
        await fake.handshake(1, ack=0)
        await until(lambda: bool(c.master.status().slaves))
        ends = c.append(1000, size=200)
        done: dict[int, ReplicaOutcome] = {}

        async def wait(end: int) -> None:
            done[end] = await c.master.wait_replicated(end, 10.0)

        async with trio.open_nursery() as nursery:
            for end in ends:
                nursery.start_soon(wait, end)
            await until(lambda: c.master.status().waiters == 1000)
            # Receive everything first: an ack past what was sent drops the connection.
            await fake.transfers_until(ends[-1])
            for step in (1, 250, 251, 600, 999, 1000):
                await fake.ack(ends[step - 1])
                await until(lambda step=step: len(done) == step)
                assert set(done) == set(ends[:step])
        assert set(done.values()) == {OK}
        assert c.master.status().waiters == 0
        await fake.aclose()


async def test_sync_writes_through_a_real_slave(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m", "s") as (m, s), cluster(m) as c:
        await c.add_slave(s, 1)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        results: list[ReplicaOutcome] = []

        async def send(i: int) -> None:
            (end,) = c.append(1, start=i, size=300)
            results.append(await c.master.wait_replicated(end, 5.0))

        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(send, i)
        assert results == [OK] * 1000
        assert s.log_bytes() == m.log_bytes()


async def test_no_slave_when_none_ever_connected(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m") as (m,), cluster(m) as c:
        (end,) = c.append(1)
        with trio.fail_after(0.5):  # at once, not after the timeout
            assert await c.master.wait_replicated(end, 5.0) is NO_SLAVE
        assert c.master.check_writable(1)
        assert not c.master.check_writable(2)


async def test_timeout_when_the_slave_stops_acking_and_shrink_when_it_leaves(
    tmp_path: Path,
) -> None:
    # max_time_slave_not_catchup_s is 30 s here
    async with (
        nodes(tmp_path, "m") as (m,),
        cluster(m) as c,
        FakeSlave.connect(c.port) as fake,
    ):
        await fake.handshake(1, ack=0)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        assert c.master.check_writable(2)
        (end,) = c.append(1)
        with trio.fail_after(2.0):
            assert await c.master.wait_replicated(end, 0.3) is TIMEOUT
        assert c.master.status().waiters == 0
        pending: list[ReplicaOutcome] = []

        async def wait() -> None:
            pending.append(await c.master.wait_replicated(end, 0.5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await until(lambda: c.master.status().waiters == 1)
            await fake.aclose()  # the slave goes away mid-wait
            # Out of the set at once (long before the 30 s lag limit).
            await until(lambda: c.master.status().sync_state_set == (0,), 2.0)
        assert pending == [TIMEOUT]  # a static master still needs a slave
        assert not c.master.check_writable(2)
        assert await c.master.wait_replicated(end, 5.0) is NO_SLAVE


async def test_a_stopped_real_slave_leaves_the_set_at_once(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m", "s") as (m, s), cluster(m) as c:
        await c.add_slave(s, 1)
        c.append(10)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        epoch = c.master.sync_state_set[1]
        c.stop_slave("s")
        with trio.fail_after(2.0):
            await until(lambda: c.master.sync_state_set == (frozenset({0}), epoch + 1))
        (end,) = c.append(1)
        assert await c.master.wait_replicated(end, 5.0) is NO_SLAVE


async def test_in_sync_only_after_catching_up(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m") as (m,):
        ends = m.put(200)
        async with cluster(m) as c, FakeSlave.connect(c.port) as fake:
            await fake.handshake(1, ack=0)
            await fake.transfers_until(ends[-1])
            await until(lambda: c.master.status().slaves[0].state == "TRANSFER")
            for partial in (ends[10], ends[150], ends[198]):
                await fake.ack(partial)
                await until(lambda p=partial: c.master.status().slaves[0].ack_offset == p)
                status = c.master.status()
                assert not status.slaves[0].in_sync
                assert status.slaves[0].diff_bytes == ends[-1] - partial
                assert status.sync_state_set == (0,)
                assert not c.master.check_writable(2)
            await fake.ack(ends[-1])
            await until(lambda: c.master.status().sync_state_set == (0, 1))
            assert c.master.status().slaves[0].in_sync
            assert c.master.check_writable(2)
            await fake.aclose()


async def test_a_lagging_member_is_dropped_at_the_periodic_check(tmp_path: Path) -> None:
    cfg = attrs.evolve(HA_CFG, max_time_slave_not_catchup_s=0.4)
    async with (
        nodes(tmp_path, "m") as (m,),
        cluster(m, cfg) as c,
        FakeSlave.connect(c.port) as fake,
    ):
        await fake.handshake(1, ack=0)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        lagging_from = trio.current_time()
        (end,) = c.append(1)
        # It keeps acking (so the connection lives) but never catches up.
        with trio.fail_after(5.0):
            while c.master.status().sync_state_set != (0,):
                await fake.ack(0)
                await trio.sleep(0.05)
        assert trio.current_time() - lagging_from >= 0.4
        assert c.master.status().slaves[0].state == "TRANSFER"  # still connected
        await fake.ack(end)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        await fake.aclose()


async def test_controller_mode_proposes_and_applies_only_what_is_confirmed(
    tmp_path: Path,
) -> None:
    cfg = attrs.evolve(HA_CFG, controller_mode=True)
    proposals: list[SyncStateSetProposed] = []
    m = Node.open(tmp_path / "m", "m", attrs.evolve(STORE_CFG, dispatch_confirmed_only=True))
    try:
        async with cluster(
            m, cfg, epoch=1, on_proposal=proposals.append, sync_state_set_epoch=3
        ) as c:
            (first,) = c.append(1)
            # Master alone, confirmed by the controller: no slave needed, data visible.
            assert await c.master.wait_replicated(first, 1.0) is OK
            assert m.store.max_offset("T", 0) == 1
            async with FakeSlave.connect(c.port) as fake:
                await fake.handshake(1, ack=first)
                await until(lambda: bool(proposals))
                assert set(proposals) == {SyncStateSetProposed(members=frozenset({0, 1}), epoch=3)}
                assert c.master.sync_state_set == (frozenset({0}), 3)  # not applied yet
                # While the proposal is in flight the new member's ack is needed (#5663).
                (second,) = c.append(1, start=1)
                assert await c.master.wait_replicated(second, 0.2) is TIMEOUT
                assert m.store.max_offset("T", 0) == 1  # not confirmed: not dispatched
                await fake.ack(second)
                await until(lambda: m.store.max_offset("T", 0) == 2)
                assert await c.master.wait_replicated(second, 1.0) is OK
                c.master.apply_confirmed({0, 1}, 4)
                assert c.master.sync_state_set == (frozenset({0, 1}), 4)
                assert c.master.status().proposal is None
                await fake.aclose()
                shrink = SyncStateSetProposed(members=frozenset({0}), epoch=4)
                await until(lambda: proposals[-1] == shrink)
                # Pending proposals are re-sent at every check until answered.
                await until(lambda: proposals[-3:] == [shrink] * 3)
                assert c.master.sync_state_set == (frozenset({0, 1}), 4)
    finally:
        await m.store.close()


async def test_the_slave_learns_the_confirm_offset(tmp_path: Path) -> None:
    cfg = attrs.evolve(STORE_CFG, dispatch_confirmed_only=True)
    m = Node.open(tmp_path / "m", "m", cfg)
    s = Node.open(tmp_path / "s", "s", cfg)
    try:
        async with cluster(m) as c:
            await c.add_slave(s, 1)
            c.append(30)
            await until(caught_up(m, s))
            # Confirmed once the slave acked; the slave hears it (with a heartbeat if idle).
            await until(lambda: s.store.confirm_offset == m.store.max_physical_offset)
            assert m.store.confirm_offset == m.store.max_physical_offset
            assert s.store.max_offset("T", 0) == m.store.max_offset("T", 0) == 30
    finally:
        await m.store.close()
        await s.store.close()


async def test_controller_mode_serves_only_an_epoch_it_was_given(tmp_path: Path) -> None:
    cfg = attrs.evolve(HA_CFG, controller_mode=True)
    async with nodes(tmp_path, "m") as (m,):
        master = HAMaster(m.store, m.epochs, cfg, node_name="m")
        with pytest.raises(ValueError, match="new_epoch"):
            await master.serve()
        assert m.epochs.cache.pairs() == []  # no epoch invented
        await master.new_epoch(7)
        with pytest.raises(ValueError, match="below"):
            await master.new_epoch(6)
        assert m.epochs.cache.pairs() == [(7, 0)]


@pytest.mark.parametrize("flush_mode", ["SYNC_FLUSH", "ASYNC_FLUSH"])
async def test_a_sync_flush_slave_acks_only_what_it_fsynced(
    tmp_path: Path, flush_mode: str
) -> None:
    """Issue 19 finding 2: under SYNC_FLUSH a write the master counts as replicated is on
    the slave's disk, not only in its page cache (one fsync per ack, not per message).
    Nobody else fsyncs here (no flush loop runs): under ASYNC_FLUSH the acks run ahead."""
    config = attrs.evolve(STORE_CFG, flush_mode=FlushMode(flush_mode), flush_interval_s=60.0)
    m = Node.open(tmp_path / "m", "m", config)
    s = Node.open(tmp_path / "s", "s", config)
    try:
        async with cluster(m) as c:
            await c.add_slave(s, 1)
            await until(lambda: c.master.status().sync_state_set == (0, 1))
            flushed_at_ack: list[tuple[int, int]] = []

            async def send(i: int) -> None:
                (end,) = c.append(1, start=i, size=300)
                assert await c.master.wait_replicated(end, 5.0) is OK
                flushed_at_ack.append((end, s.store.statistics().flushed_offset))

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(send, i)
            assert len(flushed_at_ack) == 200
            behind = [end for end, flushed in flushed_at_ack if flushed < end]
            fsyncs = s.store.statistics().flush_rounds
            if flush_mode == "SYNC_FLUSH":
                assert behind == []
                assert fsyncs < 200  # grouped: one per ack, not one per message
            else:
                assert len(behind) == 200
    finally:
        with trio.CancelScope(shield=True):
            await m.store.close()
            await s.store.close()


@asynccontextmanager
async def _master_and_fake_slave(
    tmp_path: Path, *, confirm_linger_s: float
) -> AsyncIterator[tuple[Cluster, FakeSlave, HAConfig]]:
    """A master that dispatches confirmed data only, its periodic heartbeat far off, and a
    fake slave handshaken at offset 0 and registered (the confirm-linger tests)."""
    ha = attrs.evolve(
        HA_CFG,
        confirm_linger_s=confirm_linger_s,
        heartbeat_interval_s=5.0,
        housekeeping_timeout_s=10.0,
    )
    m = Node.open(tmp_path / "m", "m", attrs.evolve(STORE_CFG, dispatch_confirmed_only=True))
    try:
        async with cluster(m, ha) as c, FakeSlave.connect(c.port) as fake:
            await fake.handshake(1, ack=0)
            await until(lambda: bool(c.master.status().slaves))
            yield c, fake, ha
            await fake.aclose()
    finally:
        await m.store.close()


async def test_a_moved_confirm_offset_rides_the_next_batch(tmp_path: Path) -> None:
    """Under steady writes no empty transfer goes out per confirm change: the next batch's
    header carries it. With nothing to send, an empty transfer carries it after
    ``confirm_linger_s``, long before the periodic heartbeat."""
    async with _master_and_fake_slave(tmp_path, confirm_linger_s=0.3) as (c, fake, ha):
        c.append(1)
        (end1,) = c.append(1, start=1)  # puts close together: the linger applies
        await fake.transfers_until(end1)
        await fake.ack(end1)
        await until(lambda: c.master.confirm_offset == end1)
        # Caught up, the slave joins the SyncStateSet; until then the master confirms
        # alone, so a put would be confirmed before any ack (seen on a loaded machine).
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        (end2,) = c.append(1, start=2)
        second = await fake.next()  # no empty transfer before it
        assert isinstance(second, Transfer)
        assert (second.offset, len(second.data)) == (end1, end2 - end1)
        assert second.confirm_offset == end1
        await fake.ack(end2)
        await until(lambda: c.master.confirm_offset == end2)
        start = trio.current_time()
        beat = await fake.next()
        assert isinstance(beat, Transfer)
        assert (beat.data, beat.confirm_offset) == (b"", end2)
        assert trio.current_time() - start < ha.heartbeat_interval_s / 2


async def test_the_last_of_many_carried_confirm_moves_goes_out_after_its_linger(
    tmp_path: Path,
) -> None:
    """Confirm moves that each rode the next batch leave nothing to send (no empty
    transfer among the batches); the last one, with no batch after it, goes out as an
    empty transfer once its own linger ended (the one timer re-arms for it), long before
    the periodic heartbeat."""
    async with _master_and_fake_slave(tmp_path, confirm_linger_s=1.5) as (c, fake, ha):
        (end,) = c.append(1)
        await fake.transfers_until(end)
        await fake.ack(end)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        for i in range(1, 6):
            (new_end,) = c.append(1, start=i)
            batch = await fake.next()  # the move before rides it: no empty transfer first
            assert isinstance(batch, Transfer)
            assert (batch.offset, batch.confirm_offset) == (end, end)
            end = new_end
            await fake.ack(end)
            await until(lambda: c.master.confirm_offset == end)  # noqa: B023
            moved = trio.current_time()
        beat = await fake.next()
        waited = trio.current_time() - moved
        assert isinstance(beat, Transfer)
        assert (beat.data, beat.confirm_offset) == (b"", end)
        assert ha.confirm_linger_s / 2 < waited < ha.heartbeat_interval_s - 1


async def test_no_linger_tells_an_idle_slave_the_confirm_offset_at_once(tmp_path: Path) -> None:
    async with _master_and_fake_slave(tmp_path, confirm_linger_s=0.0) as (c, fake, _ha):
        (end1,) = c.append(1)
        await fake.transfers_until(end1)
        await fake.ack(end1)
        beat = await fake.next()
        assert isinstance(beat, Transfer)
        assert (beat.data, beat.confirm_offset) == (b"", end1)


async def test_sparse_puts_tell_the_confirm_offset_at_once(tmp_path: Path) -> None:
    """Puts further apart than ``confirm_linger_s``: no batch would come in time to carry
    the confirm, so the empty transfer goes out at once rather than after the linger."""
    async with _master_and_fake_slave(tmp_path, confirm_linger_s=2.0) as (c, fake, ha):
        (end1,) = c.append(1)
        await fake.transfers_until(end1)
        await fake.ack(end1)
        await trio.sleep(ha.confirm_linger_s + 0.1)  # the next put comes later than that
        (end2,) = c.append(1, start=1)
        await fake.transfers_until(end2)
        await fake.ack(end2)
        start = trio.current_time()
        while True:
            beat = await fake.next()
            assert isinstance(beat, Transfer) and not beat.data
            if beat.confirm_offset == end2:
                break
        assert trio.current_time() - start < ha.confirm_linger_s
