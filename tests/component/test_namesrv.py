"""The NameServer in one Trio process, spoken to over real loopback sockets (port 0).

Every request goes through the remoting transport as a broker or client would send it;
answers are checked on the wire (codes, remarks, response ext fields, JSON bodies). The
server's pure route table is only consulted for its invariant check.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from namesrv.server import NameServer, NameServerConfig
from protocol.codes import PERM_READ, RequestCode, ResponseCode, SerializeType
from protocol.command import RemotingCommand
from protocol.frame import DEFAULT_MAX_FRAME_BYTES, Frame, FrameDecoder, encode_frame
from protocol.headers import (
    AddWritePermOfBrokerRequestHeader,
    BrokerHeartbeatRequestHeader,
    DeleteTopicFromNamesrvRequestHeader,
    GetRouteInfoRequestHeader,
    WipeWritePermOfBrokerRequestHeader,
)
from protocol.route import ClusterInfo, TopicRouteData
from protocol.rpc import RemotingClient, open_client, split_address
from tests.support import PERM_RW, FakeBroker, java_crc32, topic_config

#: Per-test deadline: everything here takes milliseconds; this only bounds a hang.
DEADLINE_S = 20.0

MASTER_A = FakeBroker(
    name="broker-a",
    addr="127.0.0.1:10911",
    ha_addr="127.0.0.1:10912",
    topics=(topic_config("TopicA", 4), topic_config("Shared", 8)),
)
SLAVE_A = FakeBroker(
    name="broker-a",
    broker_id=1,
    addr="127.0.0.1:20911",
    ha_addr="127.0.0.1:20912",
    topics=MASTER_A.topics,
)
MASTER_B = FakeBroker(
    cluster="OtherCluster",
    name="broker-b",
    addr="127.0.0.1:30911",
    ha_addr="127.0.0.1:30912",
    topics=(topic_config("Shared", 2), topic_config("TopicB", 1, perm=PERM_READ)),
)


# --- fixtures and small helpers ------------------------------------------------------------


async def start_namesrv(nursery: trio.Nursery, **config: Any) -> tuple[NameServer, str]:
    server = NameServer(NameServerConfig(port=0, **config))
    port = await nursery.start(server.serve)
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def namesrv(nursery: trio.Nursery) -> AsyncIterator[str]:
    server, addr = await start_namesrv(nursery)
    yield addr
    server.registry.check_invariants()


@pytest.fixture
async def client() -> AsyncIterator[RemotingClient]:
    async with open_client(name="test-client", default_timeout_s=5.0) as c:
        yield c


def route_request(topic: str) -> RemotingCommand:
    header = GetRouteInfoRequestHeader(topic=topic)
    return RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, header.to_ext_fields())


async def get_route(client: RemotingClient, addr: str, topic: str) -> dict[str, Any] | None:
    """The route JSON of ``topic``, or None on TOPIC_NOT_EXIST (any other code fails)."""
    response = await client.call(addr, route_request(topic))
    if response.code == ResponseCode.TOPIC_NOT_EXIST:
        return None
    assert response.code == ResponseCode.SUCCESS, (response.code, response.remark)
    route: dict[str, Any] = json.loads(response.body)
    TopicRouteData.from_bytes(response.body)  # and our own SDK parses it
    return route


async def call(client: RemotingClient, addr: str, code: int, header: Any = None) -> RemotingCommand:
    ext = {} if header is None else header.to_ext_fields()
    return await client.call(addr, RemotingCommand.request(code, ext))


async def cluster_info(client: RemotingClient, addr: str) -> dict[str, Any]:
    response = await call(client, addr, RequestCode.GET_BROKER_CLUSTER_INFO)
    assert response.code == ResponseCode.SUCCESS, response.remark
    info: dict[str, Any] = json.loads(response.body)
    ClusterInfo.from_bytes(response.body)
    return info


async def wait_until_route_gone(client: RemotingClient, addr: str, topic: str) -> float:
    """Poll until ``topic`` has no route; returns when (trio time). Callers hold a deadline."""
    while await get_route(client, addr, topic) is not None:  # noqa: ASYNC110 - seen only on the wire
        await trio.sleep(0.01)
    return trio.current_time()


# --- registration and routes ---------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["json-body", "compressed-body"])
async def test_registered_route_is_served_as_registered(
    namesrv: str, client: RemotingClient, compressed: bool
) -> None:
    with trio.fail_after(DEADLINE_S):
        response = await MASTER_A.register(client, namesrv, compressed=compressed)
        # A master gets no master/HA address back.
        assert "masterAddr" not in response.ext_fields
        assert "haServerAddr" not in response.ext_fields

        assert await get_route(client, namesrv, "TopicA") == MASTER_A.route_json("TopicA")
        assert await get_route(client, namesrv, "Shared") == MASTER_A.route_json("Shared")


async def test_register_without_crc_is_accepted(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(DEADLINE_S):
        response = await client.call(namesrv, MASTER_A.register_request(crc=False))
        assert response.code == ResponseCode.SUCCESS, response.remark
        assert await get_route(client, namesrv, "TopicA") == MASTER_A.route_json("TopicA")


@pytest.mark.parametrize("compressed", [False, True], ids=["json-body", "compressed-body"])
async def test_register_with_wrong_crc_is_refused_and_changes_nothing(
    namesrv: str, client: RemotingClient, compressed: bool
) -> None:
    with trio.fail_after(DEADLINE_S):
        good = MASTER_A.register_request(compressed=compressed)
        crc = int(good.ext_fields["bodyCrc32"])
        assert crc == java_crc32(good.body) and crc != 0
        bad = RemotingCommand.request(
            RequestCode.REGISTER_BROKER,
            {**good.ext_fields, "bodyCrc32": str(crc ^ 1)},
            good.body,
        )
        response = await client.call(namesrv, bad)
        assert response.code == ResponseCode.SYSTEM_ERROR
        assert "CRC32" in (response.remark or "")
        assert await get_route(client, namesrv, "TopicA") is None
        assert (await cluster_info(client, namesrv))["brokerAddrTable"] == {}


async def test_unknown_topic_is_topic_not_exist_naming_the_topic(
    namesrv: str, client: RemotingClient
) -> None:
    with trio.fail_after(DEADLINE_S):
        await MASTER_A.register(client, namesrv)
        response = await client.call(namesrv, route_request("NoSuchTopic"))
        assert response.code == ResponseCode.TOPIC_NOT_EXIST
        assert response.body == b""
        assert "NoSuchTopic" in (response.remark or "")


async def test_two_groups_share_a_topic(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(DEADLINE_S):
        await MASTER_A.register(client, namesrv)
        await MASTER_B.register(client, namesrv, compressed=True)
        assert await get_route(client, namesrv, "Shared") == {
            "queueDatas": [MASTER_A.queue_data_json("Shared"), MASTER_B.queue_data_json("Shared")],
            "brokerDatas": [MASTER_A.broker_data_json(), MASTER_B.broker_data_json()],
            "filterServerTable": {},
        }
        assert await get_route(client, namesrv, "TopicB") == MASTER_B.route_json("TopicB")


async def test_cluster_info_lists_every_group_by_cluster(
    namesrv: str, client: RemotingClient
) -> None:
    with trio.fail_after(DEADLINE_S):
        assert await cluster_info(client, namesrv) == {
            "brokerAddrTable": {},
            "clusterAddrTable": {},
        }
        for broker in (MASTER_A, SLAVE_A, MASTER_B):
            await broker.register(client, namesrv)
        assert await cluster_info(client, namesrv) == {
            "brokerAddrTable": {
                "broker-a": MASTER_A.broker_data_json(SLAVE_A),
                "broker-b": MASTER_B.broker_data_json(),
            },
            "clusterAddrTable": {"DefaultCluster": ["broker-a"], "OtherCluster": ["broker-b"]},
        }


async def test_all_topic_list(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(DEADLINE_S):
        response = await call(client, namesrv, RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        assert response.code == ResponseCode.SUCCESS
        assert json.loads(response.body)["topicList"] == []
        await MASTER_A.register(client, namesrv)
        await MASTER_B.register(client, namesrv)
        response = await call(client, namesrv, RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        assert json.loads(response.body)["topicList"] == ["Shared", "TopicA", "TopicB"]


async def test_delete_topic(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(DEADLINE_S):
        await MASTER_A.register(client, namesrv)
        await MASTER_B.register(client, namesrv)

        # Only the queues of one cluster.
        header = DeleteTopicFromNamesrvRequestHeader(topic="Shared", cluster_name="OtherCluster")
        response = await call(client, namesrv, RequestCode.DELETE_TOPIC_IN_NAMESRV, header)
        assert response.code == ResponseCode.SUCCESS
        assert await get_route(client, namesrv, "Shared") == MASTER_A.route_json("Shared")

        # Everywhere.
        header = DeleteTopicFromNamesrvRequestHeader(topic="Shared")
        response = await call(client, namesrv, RequestCode.DELETE_TOPIC_IN_NAMESRV, header)
        assert response.code == ResponseCode.SUCCESS
        assert await get_route(client, namesrv, "Shared") is None
        topics = await call(client, namesrv, RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        assert json.loads(topics.body)["topicList"] == ["TopicA", "TopicB"]
        # Other topics and the brokers themselves are untouched.
        assert await get_route(client, namesrv, "TopicA") == MASTER_A.route_json("TopicA")
        assert set((await cluster_info(client, namesrv))["brokerAddrTable"]) == {
            "broker-a",
            "broker-b",
        }


async def test_wipe_and_add_write_perm(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(DEADLINE_S):
        await MASTER_A.register(client, namesrv)
        await MASTER_B.register(client, namesrv)

        wipe = WipeWritePermOfBrokerRequestHeader(broker_name="broker-a")
        response = await call(client, namesrv, RequestCode.WIPE_WRITE_PERM_OF_BROKER, wipe)
        assert response.code == ResponseCode.SUCCESS
        assert response.ext_fields == {"wipeTopicCount": "2"}
        route = await get_route(client, namesrv, "Shared")
        assert route is not None
        assert [(q["brokerName"], q["perm"]) for q in route["queueDatas"]] == [
            ("broker-a", PERM_READ),
            ("broker-b", PERM_RW),
        ]
        # An unchanged re-registration keeps the wiped perm (RouteInfoManager semantics).
        await MASTER_A.register(client, namesrv)
        route = await get_route(client, namesrv, "TopicA")
        assert route is not None and route["queueDatas"][0]["perm"] == PERM_READ

        add = AddWritePermOfBrokerRequestHeader(broker_name="broker-a")
        response = await call(client, namesrv, RequestCode.ADD_WRITE_PERM_OF_BROKER, add)
        assert response.code == ResponseCode.SUCCESS
        assert response.ext_fields == {"addTopicCount": "2"}
        assert await get_route(client, namesrv, "TopicA") == MASTER_A.route_json("TopicA")

        unknown = WipeWritePermOfBrokerRequestHeader(broker_name="no-such-broker")
        response = await call(client, namesrv, RequestCode.WIPE_WRITE_PERM_OF_BROKER, unknown)
        assert response.ext_fields == {"wipeTopicCount": "0"}


async def test_unregister_broker(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(DEADLINE_S):
        await MASTER_A.register(client, namesrv)
        await SLAVE_A.register(client, namesrv)
        assert await get_route(client, namesrv, "TopicA") == MASTER_A.route_json("TopicA", SLAVE_A)

        response = await client.call(namesrv, SLAVE_A.unregister_request())
        assert response.code == ResponseCode.SUCCESS
        assert await get_route(client, namesrv, "TopicA") == MASTER_A.route_json("TopicA")

        response = await client.call(namesrv, MASTER_A.unregister_request())
        assert response.code == ResponseCode.SUCCESS
        assert await get_route(client, namesrv, "TopicA") is None
        assert await cluster_info(client, namesrv) == {
            "brokerAddrTable": {},
            "clusterAddrTable": {},
        }


async def test_slave_learns_master_and_ha_address(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(DEADLINE_S):
        # A slave alone: no master to name, and slaves publish no queues.
        response = await SLAVE_A.register(client, namesrv)
        assert "masterAddr" not in response.ext_fields
        assert await get_route(client, namesrv, "TopicA") is None

        await MASTER_A.register(client, namesrv)
        response = await SLAVE_A.register(client, namesrv)
        assert response.ext_fields == {
            "masterAddr": MASTER_A.addr,
            "haServerAddr": MASTER_A.ha_addr,
        }
        route = await get_route(client, namesrv, "TopicA")
        assert route is not None
        assert route["brokerDatas"][0]["brokerAddrs"] == {"0": MASTER_A.addr, "1": SLAVE_A.addr}


# --- liveness ------------------------------------------------------------------------------


async def test_closed_broker_connection_removes_it_at_once(
    namesrv: str, client: RemotingClient
) -> None:
    witness = FakeBroker(name="broker-w", addr="127.0.0.1:50911", topics=(topic_config("W"),))
    with trio.fail_after(DEADLINE_S):
        async with open_client(name="broker-a") as broker_conn:
            await MASTER_A.register(broker_conn, namesrv)
            # Registered over one connection, re-registered over another: only the
            # connection of a broker's latest registration decides its fate.
            async with open_client(name="broker-b") as other:
                await witness.register(other, namesrv)
                await MASTER_B.register(other, namesrv)
                await MASTER_B.register(client, namesrv)
            # The witness going proves the server has handled the close of "other".
            await wait_until_route_gone(client, namesrv, "W")
            assert await get_route(client, namesrv, "TopicB") == MASTER_B.route_json("TopicB")
            assert await get_route(client, namesrv, "TopicA") == MASTER_A.route_json("TopicA")
        # The heartbeat timeout is the default 120 s; this deadline is far shorter.
        with trio.fail_after(5):
            await wait_until_route_gone(client, namesrv, "TopicA")
        info = await cluster_info(client, namesrv)
        assert info["clusterAddrTable"] == {"OtherCluster": ["broker-b"]}


async def test_silent_broker_expires_after_its_heartbeat_timeout(
    nursery: trio.Nursery, client: RemotingClient
) -> None:
    timeout_ms = 1000
    server, addr = await start_namesrv(nursery, scan_interval_s=0.05)
    broker = FakeBroker(
        name="broker-a", topics=(topic_config("TopicA"),), heartbeat_timeout_ms=timeout_ms
    )
    heartbeat = BrokerHeartbeatRequestHeader(
        cluster_name=broker.cluster, broker_addr=broker.addr, broker_name=broker.name
    )
    with trio.fail_after(DEADLINE_S):
        await broker.register(client, addr)
        # Kept alive by BROKER_HEARTBEAT past its timeout (pacing, as a broker does).
        alive_until = trio.current_time() + 1.5 * timeout_ms / 1000
        while trio.current_time() < alive_until:
            sent = trio.current_time()
            response = await call(client, addr, RequestCode.BROKER_HEARTBEAT, heartbeat)
            assert response.code == ResponseCode.SUCCESS
            assert await get_route(client, addr, "TopicA") is not None
            await trio.sleep(0.1)
        # Silent from now on; its connection stays open, so only expiry can remove it.
        gone_at = await wait_until_route_gone(client, addr, "TopicA")
        assert gone_at - sent >= timeout_ms / 1000
        assert (await cluster_info(client, addr))["brokerAddrTable"] == {}
    server.registry.check_invariants()


async def test_id0_conflict_higher_state_version_wins(namesrv: str, client: RemotingClient) -> None:
    old = FakeBroker(addr="127.0.0.1:10911", topics=(topic_config("TopicA"),), state_version=1)
    new_same_epoch = FakeBroker(
        addr="127.0.0.1:40911", topics=(topic_config("TopicA"),), state_version=1
    )
    new = FakeBroker(addr="127.0.0.1:40911", topics=(topic_config("TopicA"),), state_version=2)
    with trio.fail_after(DEADLINE_S):
        async with open_client(name="old") as old_conn, open_client(name="new") as new_conn:
            await old.register(old_conn, namesrv)

            response = await new_conn.call(namesrv, new_same_epoch.register_request())
            assert response.code == ResponseCode.SYSTEM_ERROR
            assert old.addr in (response.remark or "")
            assert await get_route(client, namesrv, "TopicA") == old.route_json("TopicA")

            await new.register(new_conn, namesrv)
            assert await get_route(client, namesrv, "TopicA") == new.route_json("TopicA")

            # The deposed master cannot take the id back with its old epoch.
            response = await old_conn.call(namesrv, old.register_request())
            assert response.code == ResponseCode.SYSTEM_ERROR
            assert await get_route(client, namesrv, "TopicA") == new.route_json("TopicA")
        # Both connections closed: the winner's closing removed it, the loser's nothing else.
        with trio.fail_after(5):
            await wait_until_route_gone(client, namesrv, "TopicA")


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "ext", "field"),
    [
        (RequestCode.GET_ROUTEINFO_BY_TOPIC, {}, "topic"),
        (
            RequestCode.REGISTER_BROKER,
            {k: v for k, v in MASTER_A.register_request().ext_fields.items() if k != "brokerName"},
            "brokerName",
        ),
        (
            RequestCode.REGISTER_BROKER,
            {**MASTER_A.register_request().ext_fields, "brokerId": "zero"},
            "brokerId",
        ),
        (RequestCode.UNREGISTER_BROKER, {"brokerName": "broker-a"}, "brokerAddr"),
        (RequestCode.WIPE_WRITE_PERM_OF_BROKER, {}, "brokerName"),
        (RequestCode.DELETE_TOPIC_IN_NAMESRV, {}, "topic"),
    ],
    ids=["route-topic", "register-brokerName", "register-bad-int", "unregister", "wipe", "delete"],
)
async def test_missing_or_bad_header_field_is_system_error_naming_it(
    namesrv: str, client: RemotingClient, code: int, ext: dict[str, str], field: str
) -> None:
    with trio.fail_after(DEADLINE_S):
        conn = await client.connection(namesrv)
        response = await client.call(namesrv, RemotingCommand.request(code, ext))
        assert response.code == ResponseCode.SYSTEM_ERROR
        assert repr(field) in (response.remark or ""), response.remark
        # Only the request failed: the same connection goes on serving.
        await MASTER_A.register(client, namesrv)
        assert await client.connection(namesrv) is conn


@pytest.mark.parametrize(
    ("compressed", "body"),
    [
        (False, b"\xff\xfe not json"),
        (False, b'{"topicConfigSerializeWrapper": []}'),
        (False, b'{"topicConfigSerializeWrapper": {"topicConfigTable": {"T": {"perm": "x"}}}}'),
        (True, b"not a zlib stream"),
        (True, b"x\x9c\x03\x00\x00\x00\x00\x01"),  # zlib of nothing: truncated content
    ],
    ids=["not-utf8", "wrapper-not-object", "perm-not-int", "not-zlib", "empty-zlib"],
)
async def test_garbage_register_body_is_system_error(
    namesrv: str, client: RemotingClient, compressed: bool, body: bytes
) -> None:
    with trio.fail_after(DEADLINE_S):
        conn = await client.connection(namesrv)
        request = MASTER_A.register_request(compressed=compressed, body=body)
        response = await client.call(namesrv, request)
        assert response.code == ResponseCode.SYSTEM_ERROR
        assert "register body" in (response.remark or ""), response.remark
        assert await get_route(client, namesrv, "TopicA") is None
        assert await client.connection(namesrv) is conn


async def test_unknown_request_code_is_not_supported(namesrv: str, client: RemotingClient) -> None:
    with trio.fail_after(DEADLINE_S):
        response = await client.call(namesrv, RemotingCommand.request(99_999))
        assert response.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
        assert "99999" in (response.remark or "")


async def test_binary_header_request_gets_a_json_answer(namesrv: str) -> None:
    """Java clients may send the ROCKETMQ header; the answer must still be JSON (wire §1)."""
    host, port = split_address(namesrv)
    request = RemotingCommand.request(
        RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "NoSuchTopic"}, opaque=77
    )
    with trio.fail_after(DEADLINE_S):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(request.encode_binary())
            decoder = FrameDecoder()
            frames: list[Frame] = []
            while not frames:
                data = await stream.receive_some(65536)
                assert data, "connection closed without an answer"
                frames = decoder.feed(data)
    assert frames[0].serialize_type == SerializeType.JSON
    response = RemotingCommand.from_frame(frames[0])
    assert response.is_response and response.opaque == 77
    assert response.code == ResponseCode.TOPIC_NOT_EXIST


_HUGE = struct.pack(">iI", DEFAULT_MAX_FRAME_BYTES + 1, 10)
BAD_STREAMS = {
    "http-request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "length-below-4": struct.pack(">i", 3) + b"abc",
    "negative-length": struct.pack(">i", -1) + b"\x00" * 8,
    "oversize-frame": _HUGE,
    "header-longer-than-frame": struct.pack(">iI", 10, 100) + b"\x00" * 6,
    "non-json-header": encode_frame(b"{not json at all"),
    "json-array-header": encode_frame(b"[1, 2, 3]"),
    "code-not-int": encode_frame(b'{"code": "x", "flag": 0, "opaque": 1}'),
    "bad-utf8-header": encode_frame(b'{"code": 105, "remark": "\xff"}'),
    "unknown-serialize-type": encode_frame(b"{}", serialize_type=7),
    "truncated-binary-header": encode_frame(b"\x00\x69", serialize_type=1),
}


@pytest.mark.parametrize("data", BAD_STREAMS.values(), ids=BAD_STREAMS.keys())
async def test_bad_bytes_close_only_that_connection(
    namesrv: str, client: RemotingClient, data: bytes
) -> None:
    host, port = split_address(namesrv)
    with trio.fail_after(DEADLINE_S):
        await MASTER_A.register(client, namesrv)
        conn = await client.connection(namesrv)

        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(data)
            received = b""
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass  # closed with our bytes unread: a reset instead of a FIN
            assert received == b"", "the server answered garbage instead of closing"

        # The well-behaved client keeps its connection, its registration and its answers.
        assert await get_route(client, namesrv, "TopicA") == MASTER_A.route_json("TopicA")
        assert await client.connection(namesrv) is conn
        assert not conn.closed.is_set()
