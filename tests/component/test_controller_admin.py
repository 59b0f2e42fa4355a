"""The admin SDK's controller commands beyond the quorum: getBrokerEpoch (the client side of
GET_BROKER_EPOCH_CACHE, 1007) against brokers found through a NameServer, one serving the
request and one that does not yet; and cleanBrokerMetadata's argument checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from client.admin import AdminError, open_admin
from namesrv.server import NameServer, NameServerConfig
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import EpochEntry, EpochEntryCache
from protocol.errors import ServerError
from protocol.headers import RegisterBrokerRequestHeader
from protocol.route import RegisterBrokerBody
from protocol.rpc import Connection, Handler, RemotingServer, open_client
from tests.component.controller_fixtures import controller_quorum, fake_brokers

DEADLINE_S = 30.0
CACHE = EpochEntryCache(
    cluster_name="DefaultCluster",
    broker_name="broker-a",
    broker_id=1,
    epoch_list=(
        EpochEntry(epoch=1, start_offset=0, end_offset=100),
        EpochEntry(epoch=2, start_offset=100),
    ),
    max_offset=250,
)


async def _epoch_cache(request: RemotingCommand, _: Connection) -> RemotingCommand:
    return request.respond(body=CACHE.to_bytes())


@asynccontextmanager
async def namesrv_with_two_brokers() -> AsyncIterator[tuple[str, str, str]]:
    """A NameServer; broker-a id 0 serves GET_BROKER_EPOCH_CACHE, id 1 does not."""
    async with trio.open_nursery() as nursery:
        namesrv = NameServer(NameServerConfig(port=0))
        ns_port = await nursery.start(namesrv.serve)
        addrs = []
        tables: list[dict[int, Handler]] = [
            {RequestCode.GET_BROKER_EPOCH_CACHE: _epoch_cache},
            {},
        ]
        for handlers in tables:
            server = RemotingServer(handlers, name="fake broker")
            addrs.append(f"127.0.0.1:{await nursery.start(server.serve)}")
        # The registrations' connection stays open: a NameServer drops a broker whose closes.
        async with open_client() as client:
            for broker_id, addr in enumerate(addrs):
                header = RegisterBrokerRequestHeader(
                    broker_name="broker-a",
                    broker_addr=addr,
                    cluster_name="DefaultCluster",
                    ha_server_addr=addr,
                    broker_id=broker_id,
                )
                request = RemotingCommand.request(
                    RequestCode.REGISTER_BROKER,
                    header.to_ext_fields(),
                    RegisterBrokerBody().encode(compressed=False),
                )
                response = await client.call(f"127.0.0.1:{ns_port}", request)
                assert response.code == ResponseCode.SUCCESS, response
            yield f"127.0.0.1:{ns_port}", addrs[0], addrs[1]
        nursery.cancel_scope.cancel()


async def test_broker_epochs_skips_brokers_that_do_not_serve_it() -> None:
    with trio.fail_after(DEADLINE_S):
        async with namesrv_with_two_brokers() as (namesrv, serving, silent):  # noqa: SIM117
            async with open_admin(namesrv) as admin:
                for kwargs in ({"broker_name": "broker-a"}, {"cluster": "DefaultCluster"}):
                    results = {r.address: r for r in await admin.broker_epochs(**kwargs)}
                    assert set(results) == {serving, silent}
                    assert results[serving].cache == CACHE
                    assert results[serving].error is None
                    assert results[silent].cache is None
                    assert "does not serve GET_BROKER_EPOCH_CACHE" in (results[silent].error or "")
                with pytest.raises(AdminError, match="name a broker group"):
                    await admin.broker_epochs()
                with pytest.raises(AdminError, match="knows no broker"):
                    await admin.broker_epochs(broker_name="broker-z")


async def test_clean_broker_metadata_through_the_sdk(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with controller_quorum(tmp_path) as quorum, fake_brokers(quorum, 2) as (b1, _):
            assert (await b1.elect()).code == ResponseCode.SUCCESS
            controllers = quorum.addrs
            async with open_admin("127.0.0.1:1") as admin:
                with pytest.raises(AdminError, match="name the cluster"):
                    await admin.clean_broker_metadata(controllers, broker_name="broker-a")
                with pytest.raises(ServerError) as refused:
                    await admin.clean_broker_metadata(
                        controllers,
                        broker_name="broker-a",
                        cluster="DefaultCluster",
                        broker_ids=[2],
                    )
                assert refused.value.code == ResponseCode.CONTROLLER_INVALID_CLEAN_BROKER_METADATA
                await admin.clean_broker_metadata(
                    controllers, broker_name="broker-a", broker_ids=[2], clean_living=True
                )
                info = await admin.sync_state_set(controllers, broker_name="broker-a")
                replicas = info.replicas_info_table["broker-a"]
                assert [r.broker_id for r in replicas.in_sync_replicas] == [1]
                assert replicas.not_in_sync_replicas == ()
                with pytest.raises(AdminError, match="controller address"):
                    await admin.controller_metadata("not-an-address")
