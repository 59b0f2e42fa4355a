"""Issue 13 row 3 (the HA half): idle or unknown sockets on the HA port cannot lock real
slaves out. Real loopback sockets against a real ``HAMaster``."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
import trio

from broker.config import BrokerConfig, ConfigError, config_from_mapping
from broker.ha.wire import SlaveHandshake
from tests.component.ha_fixtures import (
    HA_CFG,
    FakeSlave,
    caught_up,
    cluster,
    nodes,
    until,
)

CFG = attrs.evolve(HA_CFG, handshake_timeout_s=0.5, max_pending_connections=4, max_connections=2)
SLOW_HOUSEKEEPING = attrs.evolve(CFG, housekeeping_timeout_s=5.0)


async def hold_idle(port: int, count: int, opened: list[int]) -> None:
    """Keep ``count`` connections open that never handshake, reopening each one closed."""

    async def one() -> None:
        while True:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            opened.append(1)
            async with stream:
                try:
                    while await stream.receive_some(1024):
                        pass
                except trio.BrokenResourceError:
                    pass

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)


async def test_idle_sockets_do_not_lock_a_slave_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    opened: list[int] = []
    with caplog.at_level(logging.WARNING):
        async with nodes(tmp_path, "m", "s") as (m, s), cluster(m, SLOW_HOUSEKEEPING) as c:
            c.append(20)
            c.nursery.start_soon(hold_idle, c.port, 16, opened)
            await until(lambda: len(opened) >= 16)
            await c.add_slave(s, 1, SLOW_HOUSEKEEPING)
            # Far sooner than the 5 s housekeeping timeout that used to free a slot (for
            # a moment: the idle sockets took it back first).
            await until(caught_up(m, s), 3.0)
            await until(lambda: len(opened) >= 40)  # the idle ones keep being closed
            status = c.master.status()
            assert [x.broker_id for x in status.slaves] == [1]
            assert status.pending_connections <= CFG.max_pending_connections
            assert status.refused_connections >= 20
            c.append(5, start=20)
            await until(caught_up(m, s))
    reasons = " ".join(r.getMessage() for r in caplog.records)
    assert "newer connections are waiting for their handshake" in reasons


async def test_a_connection_without_a_handshake_is_closed_in_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with (
            nodes(tmp_path, "m") as (m,),
            cluster(m, CFG) as c,
            FakeSlave.connect(c.port) as idle,
        ):
            began = trio.current_time()
            assert await idle.closed_by_peer(3.0)
            assert 0.4 <= trio.current_time() - began < 2.0
            assert c.master.status().refused_connections == 1
    assert any(
        "closed before serving it: no handshake within 0.5 s" in r.getMessage()
        for r in caplog.records
    )


async def test_a_known_slave_takes_the_slot_of_an_unknown_one(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m", "s") as (m, s), cluster(m, CFG) as c:
        c.append(10)
        await c.add_slave(s, 1, CFG)
        await until(caught_up(m, s))
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        c.stop_slave("s")
        await until(lambda: not c.master.status().slaves)
        async with (
            FakeSlave.connect(c.port) as seven,
            FakeSlave.connect(c.port) as eight,
            trio.open_nursery() as acking,
        ):
            # Connected but never in sync: they keep acking their start, 0.
            for fake, broker_id in ((seven, 7), (eight, 8)):
                await fake.handshake(broker_id, ack=0)
                acking.start_soon(keep_acking, fake, 0)
            await until(lambda: len(c.master.status().slaves) == 2)
            async with FakeSlave.connect(c.port) as nine:
                await nine.send(SlaveHandshake(slave_broker_id=9).encode())
                assert await nine.closed_by_peer(2.0), "an unknown id past the cap got in"
            await c.add_slave(s, 1, CFG)
            await until(lambda: 1 in [x.broker_id for x in c.master.status().slaves])
            ids = sorted(x.broker_id for x in c.master.status().slaves)
            assert ids in ([1, 7], [1, 8]), ids
            assert c.master.status().refused_connections >= 1
            acking.cancel_scope.cancel()
        c.append(3, start=10)
        await until(caught_up(m, s))


async def keep_acking(fake: FakeSlave, offset: int) -> None:
    """Ack ``offset`` after every transfer (heartbeats included) until closed."""
    try:
        while True:
            await fake.next()
            await fake.ack(offset)
    except (AssertionError, trio.BrokenResourceError, trio.ClosedResourceError):
        return


def test_the_limits_take_rocketmq_style_names_and_units() -> None:
    config = config_from_mapping(
        {
            "haHandshakeTimeout": 1500,
            "haMaxConnections": 3,
            "haMaxPendingConnections": 2,
            "haMaxTruncateBytes": 4096,
        }
    ).ha_config()
    assert (config.handshake_timeout_s, config.max_connections) == (1.5, 3)
    assert (config.max_pending_connections, config.max_truncate_bytes) == (2, 4096)
    defaults = BrokerConfig().ha_config()
    assert (defaults.handshake_timeout_s, defaults.max_truncate_bytes) == (5.0, 1 << 30)
    for key, value in (("haMaxConnections", 0), ("haMaxTruncateBytes", -1)):
        with pytest.raises(ConfigError):
            config_from_mapping({key: value})
