"""A controller with a cluster secret: the broker codes need its signature, reads do not."""

from __future__ import annotations

from pathlib import Path

import trio

from protocol import trust
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import CleanControllerBrokerDataRequestHeader
from tests.component.controller_fixtures import controller_quorum, fake_brokers

TEST_DEADLINE_S = 30.0


async def test_unsigned_broker_codes_are_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "cluster.secret"
    trust.write_secret(secret_file, "s" * 32)
    secret = trust.load_secret(secret_file)
    with trio.fail_after(TEST_DEADLINE_S):
        async with (
            controller_quorum(tmp_path, nodes=1, cluster_secret_file=str(secret_file)) as quorum,
            fake_brokers(quorum, 1, register=False) as (broker,),
        ):
            ext = {"clusterName": "DefaultCluster", "brokerName": "broker-a"}
            refused = await broker.call(RequestCode.CONTROLLER_GET_NEXT_BROKER_ID, ext)
            assert refused.code == ResponseCode.NO_PERMISSION, refused.remark
            assert "CONTROLLER_GET_NEXT_BROKER_ID refused" in (refused.remark or "")
            header = CleanControllerBrokerDataRequestHeader(
                cluster_name="DefaultCluster",
                broker_name="broker-a",
                broker_controller_ids_to_clean=None,
                is_clean_living_broker=True,
            )
            unsigned = RemotingCommand.request(
                RequestCode.CLEAN_BROKER_DATA, header.to_ext_fields()
            )
            leader = await broker.leader()
            response = await broker.client.call(leader, unsigned)
            assert response.code == ResponseCode.NO_PERMISSION
            signed = trust.sign(unsigned, secret, now_ms=trust.wall_ms())
            response = await broker.client.call(leader, signed)
            assert response.code != ResponseCode.NO_PERMISSION, response.remark
            stale = trust.sign(unsigned, secret, now_ms=trust.wall_ms() - 10 * trust.MAX_SKEW_MS)
            response = await broker.client.call(leader, stale)
            assert response.code == ResponseCode.NO_PERMISSION
            # Reads stay open: GetMetaData found the leader above, unsigned.
