"""Replication end to end over loopback: byte-for-byte copies, restarts, truncation, epochs."""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import pytest
import trio

from tests.component.ha_fixtures import (
    HA_CFG,
    FakeSlave,
    Node,
    caught_up,
    cluster,
    nodes,
    until,
)


async def test_slaves_copy_the_log_byte_for_byte(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m", "s1", "s2") as (m, s1, s2):
        m.put(300)  # several 64 KiB segments before any slave exists
        async with cluster(m) as c:
            await c.add_slave(s1, 1)
            await c.add_slave(s2, 2)
            for k in range(10):  # and more while they stream
                c.append(20, start=300 + 20 * k)
                await trio.sleep(0.005)
            await until(lambda: caught_up(m, s1)() and caught_up(m, s2)())
            assert len(m.store._clog.segments) > 3
            for s in (s1, s2):
                assert s.log_bytes() == m.log_bytes()
                assert s.epochs.cache == m.epochs.cache
                assert s.store.max_offset("T", 0) == m.store.max_offset("T", 0) == 500
            await until(lambda: all(x.in_sync for x in c.master.status().slaves))
            status = c.master.status()
            assert status.sync_state_set == (0, 1, 2)
            assert status.confirm_offset == m.store.max_physical_offset
            assert [(x.broker_id, x.state, x.diff_bytes) for x in status.slaves] == [
                (1, "TRANSFER", 0),
                (2, "TRANSFER", 0),
            ]
            assert all(x.transfer_bytes_per_s > 0 for x in status.slaves)
            assert all(x.ack_offset == m.store.max_physical_offset for x in status.slaves)


async def test_a_restarted_slave_resumes_where_it_stopped(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m", "s") as (m, s):
        m.put(100)
        async with cluster(m) as c:
            await c.add_slave(s, 1)
            await until(caught_up(m, s))
            c.stop_slave("s")
            await until(lambda: not c.master.status().slaves)
            stopped_at = s.store.max_physical_offset
            c.append(100, start=100)
            await s.reopen()  # the slave process restarts from its files
            assert s.store.max_physical_offset == stopped_at
            assert s.epochs.cache.pairs() == [(1, 0)]
            slave = await c.add_slave(s, 1)
            await until(caught_up(m, s))
            # Only the missing part crossed the wire.
            assert slave.status().transferred_bytes == m.store.max_physical_offset - stopped_at
            assert s.log_bytes() == m.log_bytes()
            assert s.store.max_offset("T", 0) == 200


async def test_a_fresh_slave_starts_at_the_masters_oldest_segment(tmp_path: Path) -> None:
    async with nodes(tmp_path, "s") as (s,):
        m = Node.open(tmp_path / "m", "m", attrs.evolve(s.store.config, file_reserved_time_s=1.0))
        try:
            m.put(300)
            await m.store.flush()
            assert m.store.delete_expired(int(time.time() * 1000) + 10_000_000) > 0
            low = m.store.min_physical_offset
            assert low > 0
            async with cluster(m) as c:
                await c.add_slave(s, 1)
                await until(caught_up(m, s))
                assert s.store.min_physical_offset == low
                assert s.log_bytes() == m.log_bytes()
                assert s.epochs.cache.pairs() == m.epochs.cache.pairs() == [(1, low)]
        finally:
            await m.store.close()


@pytest.mark.parametrize("slave_epoch", [2, None], ids=["own-epoch", "same-epoch"])
async def test_a_divergent_tail_is_truncated_to_the_consistent_point(
    tmp_path: Path, slave_epoch: int | None
) -> None:
    """The slave wrote records the master never had — as a short-lived master at epoch 2,
    or (same-epoch) records of epoch 1 the master lost. Either way they are cut at the
    consistent point, then the master's records of epoch 3 stream in."""
    async with nodes(tmp_path, "m", "s") as (m, s):
        m.put(60)
        async with cluster(m) as c:
            await c.add_slave(s, 1)
            await until(caught_up(m, s))
            c.stop_slave("s")
            await until(lambda: not c.master.status().slaves)
            common = m.store.max_physical_offset
            if slave_epoch is not None:
                await s.epochs.append(slave_epoch, s.store.max_physical_offset)
            s.put(25, start=1000, size=900)
            assert s.store.max_offset("T", 0) == 85
            await c.master.new_epoch(3)
            c.append(40, start=2000)
            assert s.log_bytes(common) == m.log_bytes(common)
            assert s.log_bytes() != m.log_bytes()
            await c.add_slave(s, 1)
            await until(
                lambda: caught_up(m, s)() and s.epochs.cache.pairs() == [(1, 0), (3, common)]
            )
            assert s.log_bytes() == m.log_bytes()
            assert s.store.max_offset("T", 0) == m.store.max_offset("T", 0) == 100
            got = s.store.get_messages("g", "T", 0, 60, max_count=1, max_bytes=1 << 20)
            assert (
                got.records
                and got.records[0][-800:]
                == m.store.get_messages("g", "T", 0, 60, max_count=1, max_bytes=1 << 20).records[0][
                    -800:
                ]
            )
    # The cut is durable: reopening the slave finds the master's log and epochs.
    async with nodes(tmp_path, "s") as (s,):
        assert s.epochs.cache.pairs() == [(1, 0), (3, common)]
        assert s.store.max_offset("T", 0) == 100


async def test_batches_never_cross_an_epoch_boundary(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m", "s") as (m, s):
        big = attrs.evolve(HA_CFG, batch_bytes=1 << 20)
        async with cluster(m, big) as c:
            for epoch, count in ((2, 7), (3, 30), (5, 3), (6, 50)):
                c.append(count, start=epoch * 100)
                await c.master.new_epoch(epoch)
            c.append(10, start=1000)
            cache = m.epochs.cache
            assert [e for e, _ in cache.pairs()] == [1, 2, 3, 5, 6]
            async with FakeSlave.connect(c.port) as fake:
                greeting = await fake.handshake(9, ack=0)
                assert greeting.epochs == tuple(cache.pairs())
                assert greeting.last_epoch == 6
                transfers = await fake.transfers_until(m.store.max_physical_offset)
                for t in transfers:
                    entry = cache.entry_at(t.offset)
                    assert entry is not None
                    assert (t.epoch, t.epoch_start_offset) == (entry.epoch, entry.start_offset)
                    end = t.offset + len(t.data)
                    assert entry.end_offset is None or end <= entry.end_offset, (t.offset, end)
                assert {t.epoch for t in transfers} == {1, 2, 3, 5, 6}
                await fake.aclose()
                await c.add_slave(s, 1, big)
                await until(caught_up(m, s))
                assert s.epochs.cache == cache
                assert s.log_bytes() == m.log_bytes()


async def test_a_slave_without_a_common_epoch_keeps_its_log_and_retries(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m", "s") as (m, s):
        await s.epochs.append(7, 0)
        s.put(5)
        before = s.log_bytes()
        m.put(10)
        async with cluster(m) as c:
            slave = await c.add_slave(s, 1)
            await until(lambda: slave.status().connects >= 2)
            assert "no common epoch" in slave.status().last_error
            assert s.log_bytes() == before
            assert s.epochs.cache.pairs() == [(7, 0)]
            assert c.master.status().sync_state_set == (0,)


async def test_a_slave_does_not_follow_a_deposed_master(tmp_path: Path) -> None:
    """Told the master is at epoch 4, the slave refuses one still at epoch 1 (a deposed
    master must not feed it a tail, apache/rocketmq#7017) until that master reaches 4."""
    async with nodes(tmp_path, "m", "s") as (m, s):
        m.put(10)
        async with cluster(m) as c:
            slave = await c.add_slave(s, 1, master_epoch=4)
            await until(lambda: slave.status().connects >= 2)
            assert "deposed master" in slave.status().last_error
            assert s.store.max_physical_offset == 0
            assert not slave.set_master(c.address, 3)  # an older notice is ignored
            await c.master.new_epoch(4)
            start = m.store.max_physical_offset
            c.append(5, start=10)
            await until(caught_up(m, s))
            assert s.epochs.cache.pairs() == [(1, 0), (4, start)]
            assert s.log_bytes() == m.log_bytes()


async def test_a_restarted_master_fences_the_tail_it_lost(tmp_path: Path) -> None:
    """A static master that lost its unflushed tail in a crash starts a new epoch when it
    serves again, so a slave holding that tail cuts it instead of taking it for the
    master's data (without the epoch the slave's longer log would pass as a prefix)."""
    async with nodes(tmp_path, "m", "s") as (m, s):
        async with cluster(m) as c:
            slave = await c.add_slave(s, 1)
            ends = c.append(50)
            await until(caught_up(m, s))
            slave.set_master(None)
        await m.store.truncate_to(ends[39])  # the crash took the last 10 records
        async with cluster(m) as c:
            assert m.epochs.cache.pairs() == [(1, 0), (2, ends[39])]
            c.append(30, start=500, size=900)  # different records, past the slave's max
            assert m.store.max_physical_offset > s.store.max_physical_offset
            await c.add_slave(s, 1)
            await until(lambda: caught_up(m, s)() and len(s.epochs.cache.entries) == 2)
            assert s.log_bytes() == m.log_bytes()
            assert s.epochs.cache == m.epochs.cache
            assert s.store.max_offset("T", 0) == 70


async def test_a_fresh_replica_longer_than_the_master_is_left_alone(tmp_path: Path) -> None:
    """No epochs to compare with: a log longer than the master's cannot be reconciled, so
    nothing is cut and the slave says why."""
    async with nodes(tmp_path, "m", "s") as (m, s):
        s.put(20)
        before = s.log_bytes()
        m.put(5)
        async with cluster(m) as c:
            slave = await c.add_slave(s, 1)
            await until(lambda: slave.status().connects >= 2)
            assert "empty epoch file" in slave.status().last_error
            assert s.log_bytes() == before and s.epochs.cache.pairs() == []
