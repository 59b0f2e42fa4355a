"""A broker and its NameServer: registration at start, on topic changes, topic deletion."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from broker.registration import register_body_bytes
from namesrv.server import NameServer, NameServerConfig
from protocol.codes import RequestCode, ResponseCode
from protocol.headers import (
    DeleteTopicFromNamesrvRequestHeader,
    DeleteTopicRequestHeader,
    GetRouteInfoRequestHeader,
)
from protocol.route import RegisterBrokerBody, TopicConfig
from tests.component.broker_fixtures import (
    TEST_DEADLINE_S,
    BrokerEnv,
    broker_env,
    expect,
    wait_until,
)


async def _topic_table(env: BrokerEnv) -> dict[str, object]:
    response = expect(await env.call(RequestCode.GET_ALL_TOPIC_CONFIG), ResponseCode.SUCCESS)
    table: dict[str, object] = json.loads(response.body)["topicConfigTable"]
    return table


async def test_broker_registers_at_start_with_its_address_and_template_topic(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            # serve() reports started only after the first registration round.
            route = await env.route("TBW102")
            assert route is not None
            assert route["brokerDatas"] == [
                {
                    "cluster": "DefaultCluster",
                    "brokerName": "broker-a",
                    "brokerAddrs": {"0": env.addr},
                    "enableActingMaster": False,
                }
            ]
            (queue_data,) = route["queueDatas"]
            assert queue_data["brokerName"] == "broker-a"
            assert queue_data["perm"] == 7  # TBW102 carries PERM_INHERIT for auto-creation
            assert await env.route("NoSuchTopic") is None


async def test_created_topic_is_announced_at_once_not_at_the_30s_round(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, register_interval_s=30.0) as env:
            assert await env.route("Orders") is None
            with trio.fail_after(3.0):  # far below register_interval_s
                await env.create_topic("Orders", queues=3)
            # Answered once announced, as RocketMQ's admin call registers before it returns.
            route = await env.route("Orders")
            assert route is not None
            assert route["queueDatas"] == [
                {
                    "brokerName": "broker-a",
                    "readQueueNums": 3,
                    "writeQueueNums": 3,
                    "perm": 6,
                    "topicSysFlag": 0,
                }
            ]
            # An update (more queues) is announced the same way.
            with trio.fail_after(3.0):
                await env.create_topic("Orders", queues=5)
            route = await env.route("Orders")
            assert route is not None and route["queueDatas"][0]["writeQueueNums"] == 5


async def test_topic_survives_a_restart_and_is_registered_again(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("Kept", queues=2)
            await env.restart()
            # The old connection closed, so the NameServer dropped the old address; the new
            # broker's first registration brings the persisted topic back.
            route = await env.wait_route("Kept", queues=2)
            assert route["brokerDatas"][0]["brokerAddrs"] == {"0": env.addr}
            assert "Kept" in await _topic_table(env)


async def test_delete_topic_in_broker_removes_it_and_its_offsets(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, auto_create_topic_enable=False) as env:
            await env.create_topic("Doomed", queues=2)
            await env.wait_route("Doomed")
            await env.send_ok("Doomed")
            await env.heartbeat("c1", group="G", topics={"Doomed": "*"})
            expect(
                await env.call(
                    RequestCode.UPDATE_CONSUMER_OFFSET,
                    {"consumerGroup": "G", "topic": "Doomed", "queueId": "0", "commitOffset": "1"},
                ),
                ResponseCode.SUCCESS,
            )
            version_before = json.loads((await env.call(RequestCode.GET_ALL_TOPIC_CONFIG)).body)[
                "dataVersion"
            ]["counter"]

            response = await env.call(
                RequestCode.DELETE_TOPIC_IN_BROKER, DeleteTopicRequestHeader(topic="Doomed")
            )
            expect(response, ResponseCode.SUCCESS)

            table = await _topic_table(env)
            assert "Doomed" not in table
            # As with RocketMQ's default (deleteTopicWithBrokerRegistration=false), the
            # NameServer keeps routing it until DELETE_TOPIC_IN_NAMESRV (mqadmin does both).
            assert await env.route("Doomed") is not None
            expect(
                await env.call(
                    RequestCode.DELETE_TOPIC_IN_NAMESRV,
                    DeleteTopicFromNamesrvRequestHeader(topic="Doomed"),
                    addr=env.namesrv_addr,
                ),
                ResponseCode.SUCCESS,
            )
            assert await env.route("Doomed") is None
            after = json.loads((await env.call(RequestCode.GET_ALL_TOPIC_CONFIG)).body)
            assert after["dataVersion"]["counter"] > version_before
            send = await env.send("Doomed")
            expect(send, ResponseCode.TOPIC_NOT_EXIST)
            assert send.remark and "Doomed" in send.remark
            pull = await env.pull("Doomed", group="G")
            expect(pull.response, ResponseCode.TOPIC_NOT_EXIST)
            # Its offsets went with it (a re-created topic starts clean).
            await env.create_topic("Doomed", queues=2)
            query = await env.call(
                RequestCode.QUERY_CONSUMER_OFFSET,
                {
                    "consumerGroup": "G",
                    "topic": "Doomed",
                    "queueId": "0",
                    "setZeroIfNotFound": "false",
                },
            )
            expect(query, ResponseCode.QUERY_NOT_FOUND)


async def test_system_topics_cannot_be_deleted_or_overwritten(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            for topic in ("TBW102", "SCHEDULE_TOPIC_XXXX"):
                response = await env.call(
                    RequestCode.DELETE_TOPIC_IN_BROKER, DeleteTopicRequestHeader(topic=topic)
                )
                assert response.code != ResponseCode.SUCCESS, topic
                assert response.remark and "system topic" in response.remark
                assert topic in await _topic_table(env)


async def test_broker_connection_loss_removes_it_from_the_namesrv(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("Gone")
            await env.stop()

            async def unrouted() -> bool:
                return await env.route("Gone") is None

            await wait_until(unrouted, what="route removed after the broker stopped")
            await env.start()
            await env.wait_route("Gone")


async def test_broker_registers_with_every_namesrv_and_again_after_one_restarts(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with trio.open_nursery() as nursery:
            # A second NameServer with a cancel scope of its own, so it can "crash".
            second = NameServer(NameServerConfig(port=0))
            scope = trio.CancelScope()
            port = await nursery.start(_serve_in, second, scope)
            addr = f"127.0.0.1:{port}"

            async with broker_env(tmp_path, register_interval_s=0.3) as env:
                env_addrs = (env.namesrv_addr, addr)
                await env.restart(namesrv_addrs=env_addrs)
                await env.create_topic("Both")
                await env.wait_route("Both")
                await _wait_route_at(env, addr, "Both")

                scope.cancel()  # the second NameServer dies and forgets everything
                # The broker keeps serving, registered with the first one.
                await env.send_ok("Both")
                await env.create_topic("Later")
                await env.wait_route("Later")

                # Same port, empty table: the periodic registration fills it again.
                third = NameServer(NameServerConfig(port=port))
                scope3 = trio.CancelScope()
                await nursery.start(_serve_in, third, scope3)
                await _wait_route_at(env, addr, "Later")
                await _wait_route_at(env, addr, "Both")
                scope3.cancel()


async def _serve_in(
    server: NameServer,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await server.serve(task_status=task_status)


async def _wait_route_at(env: BrokerEnv, namesrv: str, topic: str) -> None:
    async def routed() -> bool:
        response = await env.call(
            RequestCode.GET_ROUTEINFO_BY_TOPIC, GetRouteInfoRequestHeader(topic=topic), addr=namesrv
        )
        return response.code == ResponseCode.SUCCESS

    await wait_until(routed, what=f"route of {topic} at {namesrv}")


async def test_a_new_groups_retry_topic_is_routed_once_its_heartbeat_is_answered(
    tmp_path: Path,
) -> None:
    """Clients look ``%RETRY%<group>`` up right after their heartbeat: the heartbeat that
    created it is answered once the NameServer has it, even right after another change
    (whose registration round makes the next one wait ``register_min_interval_s``)."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, register_interval_s=30.0) as env:
            await env.create_topic("T", queues=1)
            await env.heartbeat("c@1", group="G", topics={"T": "*"})
            route = await env.route("%RETRY%G")
            assert route is not None and route["queueDatas"][0]["brokerName"] == "broker-a"


async def test_a_broker_with_more_topics_than_a_json_body_holds_registers_compressed(
    tmp_path: Path,
) -> None:
    """30,000 topics make a JSON body past the NameServer's 4 MiB cap; the broker sends
    RocketMQ's compressed form instead and every topic is routed."""
    topics = [f"many-topics-with-a-long-common-prefix-{i:06d}" for i in range(30_000)]
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            for name in topics:
                env.b.topics.create_or_update(TopicConfig(topic_name=name), now_ms=0)
            table = RegisterBrokerBody(
                topic_config_table=env.b.topics.configs(), data_version=env.b.topics.data_version
            )
            assert len(table.encode(compressed=False)) > env.namesrv.config.max_register_json_bytes
            compressed, _body = register_body_bytes(table, always_compress=False)
            assert compressed
            await env.b.registrar.register_all()
            for name in (topics[0], topics[-1]):
                route = await env.route(name)
                assert route is not None, name
                assert route["queueDatas"][0]["brokerName"] == "broker-a"
