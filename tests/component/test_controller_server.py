"""A 3-node controller quorum in one process, driven over the wire by fake brokers.

Registration (next id → apply → register), first election, heartbeats, AlterSyncStateSet
fencing, followers' CONTROLLER_NOT_LEADER, GetMetaData, GetSyncStateData,
CleanBrokerData and bad input (reference/rocketmq-controller.md §2.3, §5).
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import (
    BrokerReplicasInfo,
    ElectMasterResponseBody,
    SyncStateSet,
    broker_names_body,
)
from protocol.headers import (
    CleanControllerBrokerDataRequestHeader,
    ControllerExtFields,
    GetMetaDataResponseHeader,
    GetReplicaInfoRequestHeader,
)
from protocol.rpc import RemotingClient, open_client
from tests.component.controller_fixtures import (
    CALL_TIMEOUT_S,
    FakeBroker,
    controller_quorum,
    fake_brokers,
    wait_until,
)

TEST_DEADLINE_S = 60.0


async def elected_group(brokers: list[FakeBroker]) -> None:
    """Broker 1 wins the first election, then the SyncStateSet grows to every broker."""
    first = await brokers[0].elect()
    assert first.code == ResponseCode.SUCCESS, first
    members = {b.broker_id for b in brokers if b.broker_id is not None}
    if len(members) > 1:
        grown = await brokers[0].alter_sync_state_set(members, master_epoch=1, sss_epoch=1)
        assert grown.code == ResponseCode.SUCCESS, grown


async def test_registration_flow_and_first_election(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with (
            controller_quorum(tmp_path) as quorum,
            fake_brokers(quorum, 2, register=False) as (b1, b2),
        ):
            # RegisterBroker before an id was applied: the broker must apply first.
            b1.broker_id = 1
            early = await b1.register_again()
            assert early.code == ResponseCode.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED
            b1.broker_id = None

            registered = await b1.register()
            assert registered.code == ResponseCode.SUCCESS, registered
            assert b1.broker_id == 1
            assert "masterBrokerId" not in registered.ext_fields  # no master yet
            assert SyncStateSet.from_bytes(registered.body) == SyncStateSet(
                sync_state_set=frozenset(), sync_state_set_epoch=0
            )
            await b1.heartbeat(epoch=0, max_offset=0)

            first = await b1.elect()
            assert first.code == ResponseCode.SUCCESS, first
            assert first.ext_fields["masterBrokerId"] == "1"
            assert first.ext_fields["masterAddress"] == b1.address
            assert first.ext_fields["masterEpoch"] == "1"
            assert first.ext_fields["syncStateSetEpoch"] == "1"
            body = ElectMasterResponseBody.from_bytes(first.body)
            assert body.sync_state_set == {1}
            assert body.broker_member_group is not None
            assert dict(body.broker_member_group.broker_addrs) == {1: b1.address}
            # The new master hears of it through its heartbeat connection too.
            await wait_until(lambda: bool(b1.notices), what="role change pushed to broker 1")
            assert b1.notices[-1].master_broker_id == 1
            assert b1.notices[-1].master_ha_address == b1.ha_address

            # The second broker gets id 2 and learns the live master (and its HA address).
            second = await b2.register()
            assert second.code == ResponseCode.SUCCESS, second
            assert b2.broker_id == 2
            assert second.ext_fields["masterBrokerId"] == "1"
            assert second.ext_fields["masterAddress"] == b1.address
            assert second.ext_fields["masterEpoch"] == "1"
            assert second.ext_fields[ControllerExtFields.MASTER_HA_ADDRESS] == b1.ha_address
            await b2.heartbeat()

            # Its own election is answered with the master that still exists.
            still = await b2.elect()
            assert still.code == ResponseCode.CONTROLLER_MASTER_STILL_EXIST, still
            assert still.ext_fields["masterBrokerId"] == "1"
            assert ElectMasterResponseBody.from_bytes(still.body).sync_state_set == {1}

            info = await b2.replica_info()
            assert info.code == ResponseCode.SUCCESS
            assert info.ext_fields["masterBrokerId"] == "1"
            assert info.ext_fields[ControllerExtFields.MASTER_HA_ADDRESS] == b1.ha_address

            # A re-applied id with the same check code is idempotent (crash after apply).
            again = await b1.call(
                RequestCode.CONTROLLER_GET_NEXT_BROKER_ID,
                {"clusterName": b1.cluster, "brokerName": b1.name},
            )
            assert again.ext_fields["nextBrokerId"] == "3"


async def test_alter_sync_state_set_fencing(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum, fake_brokers(quorum, 3) as brokers:
            b1, b2, b3 = brokers
            assert (await b1.elect()).code == ResponseCode.SUCCESS

            async def alter(members: set[int], **kwargs: int) -> int:
                args = {"master_epoch": 1, "sss_epoch": 1, **kwargs}
                return (await b1.alter_sync_state_set(members, **args)).code

            grown = await b1.alter_sync_state_set({1, 2}, master_epoch=1, sss_epoch=1)
            assert grown.code == ResponseCode.SUCCESS, grown
            assert grown.ext_fields["newSyncStateSetEpoch"] == "2"
            assert SyncStateSet.from_bytes(grown.body) == SyncStateSet(
                sync_state_set=frozenset({1, 2}), sync_state_set_epoch=2
            )
            assert await alter({1, 2, 3}) == ResponseCode.CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH
            assert await alter({1, 2, 3}, master_epoch=0, sss_epoch=2) == (
                ResponseCode.CONTROLLER_FENCED_MASTER_EPOCH
            )
            assert await alter({1, 2, 3}, sss_epoch=2, master_id=2) == (
                ResponseCode.CONTROLLER_INVALID_MASTER
            )
            assert await alter({1, 2, 9}, sss_epoch=2) == ResponseCode.CONTROLLER_INVALID_REPLICAS
            assert await alter({1, 2}, sss_epoch=2) == (
                ResponseCode.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED  # no change
            )
            assert await alter({2, 3}, sss_epoch=2) == (
                ResponseCode.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED  # without the master
            )
            # Broker 3 stops being alive (its connections close): it cannot join.
            b3.disconnect()
            await wait_until(
                lambda: all(3 not in s.liveness.alive_ids("broker-a") for s in quorum.running),
                what="broker 3 inactive on every controller",
            )
            assert await alter({1, 2, 3}, sss_epoch=2) == ResponseCode.CONTROLLER_BROKER_NOT_ALIVE
            info = await b2.replica_info()
            assert SyncStateSet.from_bytes(info.body) == SyncStateSet(
                sync_state_set=frozenset({1, 2}), sync_state_set_epoch=2
            )


async def test_followers_answer_not_leader_with_the_leaders_remoting_address(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum, open_client() as client:
            leader = await quorum.leader()
            ask = RemotingCommand.request(
                RequestCode.CONTROLLER_GET_REPLICA_INFO,
                GetReplicaInfoRequestHeader(broker_name="broker-a").to_ext_fields(),
            )
            for follower in quorum.followers(leader):
                addr = follower.config.remoting_address
                # A follower learns the leader from the leader's first append: poll for it.
                await wait_until(
                    lambda a=addr: _knows_leader(_metadata(client, a)),
                    what=f"{follower.config.node_id} knows the leader",
                )
                for code in (
                    RequestCode.CONTROLLER_GET_REPLICA_INFO,
                    RequestCode.CONTROLLER_GET_NEXT_BROKER_ID,
                    RequestCode.CONTROLLER_ELECT_MASTER,
                    RequestCode.CONTROLLER_REGISTER_BROKER,
                    RequestCode.CONTROLLER_APPLY_BROKER_ID,
                    RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET,
                    RequestCode.CONTROLLER_GET_SYNC_STATE_DATA,
                    RequestCode.CLEAN_BROKER_DATA,
                ):
                    request = RemotingCommand.request(
                        code,
                        {
                            "clusterName": "c",
                            "brokerName": "broker-a",
                            "brokerId": "1",
                            "brokerAddress": "127.0.0.1:1",
                            "appliedBrokerId": "1",
                            "registerCheckCode": "127.0.0.1:1;1",
                            "masterBrokerId": "1",
                            "masterEpoch": "1",
                        },
                        body=b'{"syncStateSet":[1],"syncStateSetEpoch":1}'
                        if code == RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET
                        else broker_names_body(["broker-a"]),
                    )
                    response = await client.call(addr, request, timeout_s=CALL_TIMEOUT_S)
                    assert response.code == ResponseCode.CONTROLLER_NOT_LEADER, (code, response)
                    assert response.remark == leader.config.remoting_address
            # The leader itself serves (an unknown group is CONTROLLER_BROKER_METADATA_NOT_EXIST).
            response = await client.call(leader.config.remoting_address, ask)
            assert response.code == ResponseCode.CONTROLLER_BROKER_METADATA_NOT_EXIST


async def test_get_metadata_from_every_node(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum, open_client() as client:
            leader = await quorum.leader()
            peers = "".join(f"{c.node_id}:{c.remoting_address};" for c in quorum.configs)
            for server in quorum.running:
                # A follower learns the leader from the leader's first append: poll for it.
                await wait_until(
                    lambda s=server: _knows_leader(_metadata(client, s.config.remoting_address)),
                    what=f"{server.config.node_id} knows the leader",
                )
                meta = await _metadata(client, server.config.remoting_address)
                assert meta == GetMetaDataResponseHeader(
                    group="trio-rocketmq-controller",
                    controller_leader_id=leader.config.node_id,
                    controller_leader_address=leader.config.remoting_address,
                    is_leader=server is leader,
                    peers=peers,
                )


async def _metadata(client: RemotingClient, address: str) -> GetMetaDataResponseHeader:
    response = await client.call(
        address, RemotingCommand.request(RequestCode.CONTROLLER_GET_METADATA_INFO)
    )
    assert response.code == ResponseCode.SUCCESS
    return GetMetaDataResponseHeader.from_ext_fields(response.ext_fields)


async def _knows_leader(meta: Awaitable[GetMetaDataResponseHeader]) -> bool:
    return bool((await meta).controller_leader_address)


async def test_get_sync_state_data(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum, fake_brokers(quorum, 3) as brokers:
            b1, b2, b3 = brokers
            assert (await b1.elect()).code == ResponseCode.SUCCESS
            grown = await b1.alter_sync_state_set({1, 2}, master_epoch=1, sss_epoch=1)
            assert grown.code == ResponseCode.SUCCESS
            b3.disconnect()
            await wait_until(
                lambda: all(3 not in s.liveness.alive_ids("broker-a") for s in quorum.running)
            )
            response = await b1.call(
                RequestCode.CONTROLLER_GET_SYNC_STATE_DATA,
                {},
                broker_names_body(["broker-a", "no-such-group"]),
            )
            assert response.code == ResponseCode.SUCCESS, response
            info = BrokerReplicasInfo.from_bytes(response.body)
            assert set(info.replicas_info_table) == {"broker-a"}  # unknown names are skipped
            a = info.replicas_info_table["broker-a"]
            assert (a.master_broker_id, a.master_address) == (1, b1.address)
            assert (a.master_epoch, a.sync_state_set_epoch) == (1, 2)
            assert [(r.broker_id, r.broker_address, r.alive) for r in a.in_sync_replicas] == [
                (1, b1.address, True),
                (2, b2.address, True),
            ]
            assert [(r.broker_id, r.alive) for r in a.not_in_sync_replicas] == [(3, False)]


async def test_clean_broker_data(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum, fake_brokers(quorum, 3) as brokers:
            b1, _, b3 = brokers
            assert (await b1.elect()).code == ResponseCode.SUCCESS

            async def clean(ids: str | None, living: bool = False, name: str = "broker-a") -> int:
                header = CleanControllerBrokerDataRequestHeader(
                    cluster_name="DefaultCluster",
                    broker_name=name,
                    broker_controller_ids_to_clean=ids,
                    is_clean_living_broker=living,
                )
                response = await b1.call(RequestCode.CLEAN_BROKER_DATA, header.to_ext_fields())
                return response.code

            invalid = ResponseCode.CONTROLLER_INVALID_CLEAN_BROKER_METADATA
            assert await clean("3") == invalid  # alive
            assert await clean(None) == invalid  # the group still has a master
            assert await clean("x;y") == invalid  # not ids
            assert await clean(None, name="no-such-group") == invalid
            b3.disconnect()
            await wait_until(lambda: 3 not in quorum.running[0].liveness.alive_ids("broker-a"))
            await wait_until(
                lambda: all(3 not in s.liveness.alive_ids("broker-a") for s in quorum.running)
            )
            assert await clean("3") == ResponseCode.SUCCESS
            leader = await quorum.leader()
            assert set(leader.raft.state.groups["broker-a"].brokers) == {1, 2}
            assert await clean(None, living=True) == ResponseCode.SUCCESS
            assert "broker-a" not in leader.raft.state.groups
            # Every replica applied the same commands.
            await wait_until(lambda: all(s.raft.state == leader.raft.state for s in quorum.running))


async def test_bad_input_gets_clear_errors(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum, open_client() as client:
            leader = (await quorum.leader()).config.remoting_address

            async def call(code: int, ext: dict[str, str], body: bytes = b"") -> RemotingCommand:
                request = RemotingCommand.request(code, ext, body)
                return await client.call(leader, request, timeout_s=CALL_TIMEOUT_S)

            missing = await call(RequestCode.CONTROLLER_GET_REPLICA_INFO, {})
            assert missing.code == ResponseCode.CONTROLLER_INVALID_REQUEST
            assert "'brokerName' is missing" in (missing.remark or "")
            bad_int = await call(
                RequestCode.CONTROLLER_REGISTER_BROKER,
                {"clusterName": "c", "brokerName": "b", "brokerId": "one", "brokerAddress": "a"},
            )
            assert bad_int.code == ResponseCode.CONTROLLER_INVALID_REQUEST
            assert "'brokerId' must be an integer" in (bad_int.remark or "")
            no_id = await call(
                RequestCode.BROKER_HEARTBEAT,
                {"clusterName": "c", "brokerName": "b", "brokerAddr": "127.0.0.1:1"},
            )
            assert no_id.code == ResponseCode.CONTROLLER_INVALID_REQUEST
            assert "brokerId" in (no_id.remark or "")
            unknown = await call(RequestCode.CONTROLLER_GET_REPLICA_INFO, {"brokerName": "nope"})
            assert unknown.code == ResponseCode.CONTROLLER_BROKER_METADATA_NOT_EXIST
            # A poll's brokerId of 4,301 digits answered "internal error": Python's int()
            # refuses that many (found by a live fuzz). Now it is no broker's poll.
            for polled_by in ("9" * 4301, "-1", "1_0", "\u0661", "9223372036854775808"):
                poll = await call(
                    RequestCode.CONTROLLER_GET_REPLICA_INFO,
                    {"brokerName": "nope", "brokerId": polled_by},
                )
                assert poll.code == ResponseCode.CONTROLLER_BROKER_METADATA_NOT_EXIST, poll.remark
            elect = await call(
                RequestCode.CONTROLLER_ELECT_MASTER, {"clusterName": "c", "brokerName": "nope"}
            )
            assert elect.code == ResponseCode.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED
            first_id = await call(
                RequestCode.CONTROLLER_APPLY_BROKER_ID,
                {
                    "clusterName": "c",
                    "brokerName": "new",
                    "appliedBrokerId": "2",
                    "registerCheckCode": "127.0.0.1:1;0",
                },
            )
            assert first_id.code == ResponseCode.CONTROLLER_BROKER_ID_INVALID
            body = await call(
                RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET,
                {"brokerName": "b", "masterBrokerId": "1", "masterEpoch": "1"},
                b"not json",
            )
            assert body.code == ResponseCode.CONTROLLER_INVALID_REQUEST
            names = await call(RequestCode.CONTROLLER_GET_SYNC_STATE_DATA, {}, b'{"a": 1}')
            assert names.code == ResponseCode.CONTROLLER_INVALID_REQUEST
            # A lone surrogate (a JSON "\\ud800" escape) cannot go into a log entry: it
            # answered "internal error" (found by a live fuzz).
            for code, ext in (
                (RequestCode.CONTROLLER_GET_REPLICA_INFO, {"brokerName": "\ud800"}),
                (
                    RequestCode.CONTROLLER_APPLY_BROKER_ID,
                    {
                        "clusterName": "c",
                        "brokerName": "b",
                        "appliedBrokerId": "1",
                        "registerCheckCode": "\ud800",
                    },
                ),
            ):
                surrogate = await call(code, ext)
                assert surrogate.code == ResponseCode.CONTROLLER_INVALID_REQUEST
                assert "not valid UTF-8" in (surrogate.remark or "")
            # Nothing of that reached the replicated state, and the node still serves.
            assert (await quorum.leader()).raft.state.groups == {}
            ok = await call(RequestCode.CONTROLLER_GET_METADATA_INFO, {})
            assert ok.code == ResponseCode.SUCCESS


async def test_role_change_is_not_sent_to_dead_brokers_and_heartbeats_track_channels(
    tmp_path: Path,
) -> None:
    """A heartbeat registers the broker on the connection it came on; closing it makes the
    broker inactive on every controller at once."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum, fake_brokers(quorum, 2) as (b1, b2):
            await wait_until(
                lambda: all(s.liveness.alive_ids("broker-a") == {1, 2} for s in quorum.running),
                what="both brokers alive on every node",
            )
            b2.disconnect()
            await wait_until(
                lambda: all(s.liveness.alive_ids("broker-a") == {1} for s in quorum.running),
                what="broker 2 inactive everywhere",
            )
            assert (await b1.elect()).code == ResponseCode.SUCCESS
            await wait_until(lambda: bool(b1.notices))
            await trio.sleep(0.2)
            assert b2.notices == []
