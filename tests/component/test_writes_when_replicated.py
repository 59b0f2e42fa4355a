"""BrokerWrites.answers_later / when_replicated over a real HAMaster, store and fake slave:
the code a send's LaterAnswer gets, and the deposed-master / lost-lease rule applied when
the outcome arrives (as the awaiting ``_wait_replicated`` applies it after its wait).

The broker around them is a small stand-in (a controller-mode Broker needs a controller
quorum to exist); what it holds is the real thing: config, role, stats, store, HA master.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import trio

from broker.agent import BrokerAgent
from broker.config import BrokerConfig
from broker.ha import HAMaster
from broker.role import RoleState
from broker.stats import BrokerStats
from broker.store.results import AppendResult
from broker.store.store import MessageStore
from broker.writes import BrokerWrites
from protocol.codes import ResponseCode
from tests.component.ha_fixtures import Cluster, FakeSlave, cluster, msg, nodes, until


@attrs.define
class _Broker:
    """What BrokerWrites reads of a broker, with the lease a test can take away."""

    config: BrokerConfig
    ha_master: HAMaster | None
    store: MessageStore
    agent: BrokerAgent | None = None
    name: str = "m"
    role: RoleState = attrs.field(factory=lambda: RoleState(broker_role="SYNC_MASTER", broker_id=0))
    stats: BrokerStats = attrs.field(factory=lambda: BrokerStats("c"))
    accepts_writes: bool = True


def _writes(c: Cluster, tmp_path: Path, **config: Any) -> tuple[BrokerWrites, _Broker]:
    broker_config = BrokerConfig(
        namesrv_addrs=(), store_dir=tmp_path / "unused", slave_timeout_s=5.0, **config
    )
    broker = _Broker(broker_config, c.master, c.master_node.store)
    return BrokerWrites(broker), broker


def _put(writes: BrokerWrites, i: int) -> AppendResult:
    result = writes.store_put([msg(i)])
    assert result.ok
    return result


async def test_a_send_answers_later_only_where_replication_is_its_one_wait(
    tmp_path: Path,
) -> None:
    async with nodes(tmp_path, "m") as (m,), cluster(m) as c:
        writes, broker = _writes(c, tmp_path)
        assert writes.answers_later(wait_store=True)
        assert not writes.answers_later(wait_store=False)
        broker.config = attrs.evolve(broker.config, flush_disk_type="SYNC_FLUSH")
        assert not writes.answers_later(wait_store=True)  # two waits: the awaiting path
        broker.config = attrs.evolve(broker.config, flush_disk_type="ASYNC_FLUSH")
        broker.role = RoleState(broker_role="ASYNC_MASTER", broker_id=0)
        assert not writes.answers_later(wait_store=True)


async def test_the_code_comes_from_the_ack_and_a_lost_lease_turns_it_into_a_timeout(
    tmp_path: Path,
) -> None:
    async with nodes(tmp_path, "m") as (m,), cluster(m) as c, FakeSlave.connect(c.port) as fake:
        writes, broker = _writes(c, tmp_path)
        broker.agent = object()  # type: ignore[assignment]  # controller mode: only "is there one"
        codes: list[int] = []
        first = _put(writes, 0)
        assert writes.when_replicated(first, codes.append) == ResponseCode.SLAVE_NOT_AVAILABLE
        await fake.handshake(1, ack=first.end_offset)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        ok = _put(writes, 1)
        assert writes.when_replicated(ok, codes.append) is None
        lost = _put(writes, 2)
        assert writes.when_replicated(lost, codes.append) is None
        await fake.transfers_until(lost.end_offset)
        await fake.ack(ok.end_offset)
        await until(lambda: codes == [ResponseCode.SUCCESS])
        broker.accepts_writes = False  # past its lease while the second waits (#7017)
        await fake.ack(lost.end_offset)
        await until(lambda: len(codes) == 2)
        assert codes[1] == ResponseCode.FLUSH_SLAVE_TIMEOUT
        await fake.aclose()


async def test_a_deposed_master_answers_flush_slave_timeout(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m") as (m,), cluster(m) as c, FakeSlave.connect(c.port) as fake:
        writes, broker = _writes(c, tmp_path)
        broker.agent = object()  # type: ignore[assignment]
        await fake.handshake(1, ack=0)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        codes: list[int] = []
        result = _put(writes, 0)
        assert writes.when_replicated(result, codes.append) is None
        broker.ha_master = None  # deposed while it waits: a slave now
        await fake.transfers_until(result.end_offset)
        await fake.ack(result.end_offset)
        await until(lambda: bool(codes))
        assert codes == [ResponseCode.FLUSH_SLAVE_TIMEOUT]
        await fake.aclose()


async def test_a_write_never_acked_times_out_after_slave_timeout(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m") as (m,), cluster(m) as c, FakeSlave.connect(c.port) as fake:
        writes, broker = _writes(c, tmp_path)
        broker.config = attrs.evolve(broker.config, slave_timeout_s=0.3)
        await fake.handshake(1, ack=0)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        codes: list[int] = []
        start = trio.current_time()
        assert writes.when_replicated(_put(writes, 0), codes.append) is None
        await until(lambda: bool(codes), 3.0)
        assert codes == [ResponseCode.FLUSH_SLAVE_TIMEOUT]
        assert trio.current_time() - start >= 0.3
        await fake.aclose()
