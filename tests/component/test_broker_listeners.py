"""Listening sockets are bound once: the HA port outlives masterships, the client port is
bound before the store opens and served as bound."""

from __future__ import annotations

import functools
from pathlib import Path

import attrs
import trio

from broker.ha.master import HAMaster
from broker.listeners import HAListener
from tests.component.broker_fixtures import broker_env
from tests.component.ha_fixtures import HA_CFG, WAIT_S, FakeSlave, Node

CONTROLLER_HA_CFG = attrs.evolve(HA_CFG, controller_mode=True)


async def turned_away(port: int) -> bool:
    """Connect to ``port``; True when the listener closes the connection at once."""
    with trio.fail_after(WAIT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            return await stream.receive_some(16) == b""


async def test_ha_listener_hands_connections_to_the_attached_master_only() -> None:
    taken: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:
        listener = await HAListener.open("127.0.0.1", 0, node_name="t")
        port = listener.port
        await nursery.start(listener.serve)
        assert await turned_away(port)
        listener.attach(taken.append)
        with trio.fail_after(WAIT_S):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            while not taken:  # noqa: ASYNC110 - the accept loop runs in another task
                await trio.sleep(0.01)
        async with client, taken[0]:
            await taken[0].send_all(b"hi")
            assert await client.receive_some(16) == b"hi"
        listener.detach(print)  # not the attached taker: no effect
        assert listener.turned_away == 1
        listener.detach(taken.append)
        assert await turned_away(port)
        assert (listener.port, listener.turned_away, len(taken)) == (port, 2, 1)
        nursery.cancel_scope.cancel()
    # Serving ended: the port is released.
    for released in await trio.open_tcp_listeners(port, host="127.0.0.1"):
        await released.aclose()


async def test_successive_masterships_serve_one_bound_ha_port(tmp_path: Path) -> None:
    node = Node.open(tmp_path / "m", "m")
    node.put(3)
    async with trio.open_nursery() as nursery:
        listener = await HAListener.open("127.0.0.1", 0, node_name="m")
        await nursery.start(listener.serve)
        for epoch in (1, 2):
            master = HAMaster(node.store, node.epochs, CONTROLLER_HA_CFG, node_name="m")
            await master.new_epoch(epoch)
            async with trio.open_nursery() as mastership:
                serve = functools.partial(master.serve, listener=listener)
                assert await mastership.start(serve) == listener.port
                async with FakeSlave.connect(listener.port) as slave:
                    greeting = await slave.handshake(1)
                    assert greeting.last_epoch == epoch
                mastership.cancel_scope.cancel()
            # Between masterships the port stays bound and turns slaves away.
            assert await turned_away(listener.port)
        nursery.cancel_scope.cancel()
    await node.store.close()


async def test_the_client_port_the_store_stamps_is_the_port_served(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            sent = await env.send_ok("T", b"where")
            (record,) = await env.pull_all("T", 0)
            assert record.store_host == ("127.0.0.1", env.b.listen_port)
            assert env.addr == f"127.0.0.1:{env.b.listen_port}"
            assert record.msg_id == sent.msg_id
