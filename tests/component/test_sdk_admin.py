"""``client.admin.Admin`` against a NameServer and two brokers in this Trio process.

Two broker groups (broker-a, broker-b) of DefaultCluster serve on port 0 with stores under
tmp_path, so every fan-out (create on a cluster, merge queries, progress across brokers)
really crosses brokers. The admin is checked through what it returns and through what the
NameServer and brokers then answer other clients; broker internals are never touched.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import pytest
import trio

from broker.config import BrokerConfig
from broker.server import Broker
from client.admin import (
    Admin,
    AdminError,
    MessageNotFound,
    allocate_averagely,
    open_admin,
    read_address,
)
from namesrv.server import NameServer, NameServerConfig
from protocol.bodies import (
    CLUSTERING,
    ConsumerData,
    HeartbeatData,
    TopicConfigSerializeWrapper,
    parse_subscription,
)
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import NetworkError, SubscriptionGroupNotExist, TopicNotExist
from protocol.headers import QueryConsumerOffsetRequestHeader, UpdateConsumerOffsetRequestHeader
from protocol.route import BrokerData, MessageQueue
from protocol.rpc import RemotingClient, open_client
from tests.support import FakeBroker

#: Per-test deadline: everything is local; this only bounds a hang.
DEADLINE_S = 30.0
REQUEST_TIMEOUT_S = 5.0
CLUSTER = "DefaultCluster"
GROUPS = ("broker-a", "broker-b")


@attrs.frozen(kw_only=True)
class Env:
    admin: Admin
    namesrv: str
    #: broker name → address.
    brokers: dict[str, str]


@pytest.fixture
async def env(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Env]:
    namesrv = NameServer(NameServerConfig(port=0))
    ns_addr = f"127.0.0.1:{await nursery.start(namesrv.serve)}"
    brokers: dict[str, str] = {}
    for name in GROUPS:
        broker = Broker(
            BrokerConfig(
                namesrv_addrs=(ns_addr,),
                broker_name=name,
                listen_port=0,
                store_dir=tmp_path / name,
                commitlog_segment_bytes=4 * 1024 * 1024,
            )
        )
        await nursery.start(broker.serve)
        brokers[name] = broker.address
    async with open_admin(ns_addr, timeout_s=REQUEST_TIMEOUT_S) as admin:
        yield Env(admin=admin, namesrv=ns_addr, brokers=brokers)
    namesrv.registry.check_invariants()


@pytest.fixture
async def dead_addr() -> str:
    """A loopback address nobody listens on (bound once, then released)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return f"127.0.0.1:{port}"


@pytest.fixture
async def client() -> AsyncIterator[RemotingClient]:
    async with open_client(name="test-client", default_timeout_s=REQUEST_TIMEOUT_S) as c:
        yield c


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds (brokers announce topic changes asynchronously)."""
    try:
        with trio.fail_after(5.0):
            while True:
                if await check():
                    return
                await trio.sleep(0.02)  # the state lives in another server: poll it
    except trio.TooSlowError:
        raise AssertionError(f"{what} did not happen within 5 s") from None


async def routed_to(admin: Admin, topic: str, names: set[str]) -> None:
    async def check() -> bool:
        try:
            route = await admin.topic_route(topic)
        except TopicNotExist:
            return False
        return {q.broker_name for q in route.queue_datas} == names

    await eventually(check, f"route of {topic} to {sorted(names)}")


async def new_topic(env: Env, topic: str, queues: int = 2) -> None:
    await env.admin.create_topic(
        topic, cluster=CLUSTER, read_queue_nums=queues, write_queue_nums=queues
    )
    await routed_to(env.admin, topic, set(GROUPS))


async def send_to(env: Env, topic: str, broker: str, queue_id: int, body: bytes, **kw: str) -> str:
    result = await env.admin.send(
        topic,
        body,
        keys=kw.get("keys", "").split(),
        tags=kw.get("tags"),
        broker_name=broker,
        queue_id=queue_id,
    )
    assert (result.queue.broker_name, result.queue.queue_id) == (broker, queue_id)
    return result.msg_id


async def heartbeat(
    client: RemotingClient, addr: str, client_id: str, group: str, topics: list[str]
) -> None:
    subs = tuple(parse_subscription("*", topic=t) for t in topics)
    body = HeartbeatData(
        client_id=client_id,
        consumer_data_set=(
            ConsumerData(group_name=group, message_model=CLUSTERING, subscription_data_set=subs),
        ),
    ).to_bytes()
    response = await client.call(addr, RemotingCommand.request(RequestCode.HEART_BEAT, body=body))
    assert response.code == ResponseCode.SUCCESS, response.remark


async def commit(
    client: RemotingClient, addr: str, group: str, mq: MessageQueue, offset: int
) -> None:
    header = UpdateConsumerOffsetRequestHeader(
        consumer_group=group, topic=mq.topic, queue_id=mq.queue_id, commit_offset=offset
    )
    request = RemotingCommand.request(RequestCode.UPDATE_CONSUMER_OFFSET, header.to_ext_fields())
    response = await client.call(addr, request)
    assert response.code == ResponseCode.SUCCESS, response.remark


async def committed(client: RemotingClient, addr: str, group: str, mq: MessageQueue) -> int | None:
    header = QueryConsumerOffsetRequestHeader(
        consumer_group=group, topic=mq.topic, queue_id=mq.queue_id, set_zero_if_not_found=False
    )
    request = RemotingCommand.request(RequestCode.QUERY_CONSUMER_OFFSET, header.to_ext_fields())
    response = await client.call(addr, request)
    if response.code == ResponseCode.QUERY_NOT_FOUND:
        return None
    assert response.code == ResponseCode.SUCCESS, response.remark
    return int(response.ext_fields["offset"])


async def broker_topics(client: RemotingClient, addr: str) -> set[str]:
    response = await client.call(addr, RemotingCommand.request(RequestCode.GET_ALL_TOPIC_CONFIG))
    assert response.code == ResponseCode.SUCCESS, response.remark
    return set(TopicConfigSerializeWrapper.from_bytes(response.body).topic_config_table)


def mq(topic: str, broker: str, queue_id: int) -> MessageQueue:
    return MessageQueue(topic=topic, broker_name=broker, queue_id=queue_id)


# --- pure helpers ----------------------------------------------------------------------------


def test_allocate_averagely_matches_rocketmqs_strategy() -> None:
    queues = [mq("T", b, i) for b in ("a", "b") for i in range(3)]  # 6 queues
    owners = allocate_averagely(list(reversed(queues)), ["c2", "c1", "c3", "c4"])
    # 6 % 4 = 2: c1 and c2 take two queues, c3 and c4 one; blocks follow sorted order.
    assert [owners[q] for q in queues] == ["c1", "c1", "c2", "c2", "c3", "c4"]
    assert allocate_averagely(queues[:2], ["c1", "c2", "c3"]) == {
        queues[0]: "c1",
        queues[1]: "c2",
    }
    assert allocate_averagely(queues, []) == {}
    assert allocate_averagely([], ["c1"]) == {}


def test_read_address_prefers_the_master() -> None:
    data = BrokerData(cluster="C", broker_name="a", broker_addrs={2: "s2", 0: "m", 1: "s1"})
    assert read_address(data) == "m"
    assert read_address(attrs.evolve(data, broker_addrs={2: "s2", 1: "s1"})) == "s1"
    assert read_address(attrs.evolve(data, broker_addrs={})) is None


# --- NameServer views and brokers ----------------------------------------------------------


async def test_cluster_list_shows_every_broker_with_its_runtime_info(
    env: Env, client: RemotingClient, dead_addr: str
) -> None:
    with trio.fail_after(DEADLINE_S):
        # A registered broker nobody can reach (its registration connection stays open).
        ghost = FakeBroker(cluster="Ghosts", name="broker-z", addr=dead_addr)
        await ghost.register(client, env.namesrv)
        brokers = await env.admin.cluster_list()
        assert [(b.cluster, b.broker_name, b.broker_id, b.addr) for b in brokers] == [
            (CLUSTER, "broker-a", 0, env.brokers["broker-a"]),
            (CLUSTER, "broker-b", 0, env.brokers["broker-b"]),
            ("Ghosts", "broker-z", 0, ghost.addr),
        ]
        for live in brokers[:2]:
            assert live.error is None and live.table is not None
            assert live.role == "ASYNC_MASTER" and live.active
            assert live.version is not None and "trio-rocketmq" in live.version
            assert live.in_total_today == 0
        dead = brokers[2]
        assert dead.table is None and not dead.active and dead.version is None
        assert dead.error is not None and "cannot connect" in dead.error

        assert [b.broker_name for b in await env.admin.cluster_list(CLUSTER)] == list(GROUPS)
        with pytest.raises(AdminError, match=r"cluster 'Nope' is not known .*Ghosts"):
            await env.admin.cluster_list("Nope")


async def test_broker_status_is_the_runtime_table(env: Env, dead_addr: str) -> None:
    with trio.fail_after(DEADLINE_S):
        addr = env.brokers["broker-a"]
        await new_topic(env, "Counted")
        await send_to(env, "Counted", "broker-a", 0, b"x")
        table = await env.admin.broker_status(addr)
        assert table["brokerRole"] == "ASYNC_MASTER"
        assert table["msgPutTotalTodayNow"] == "1"
        with pytest.raises(NetworkError, match="is it running"):
            await env.admin.broker_status(dead_addr)
        with pytest.raises(AdminError, match="not host:port"):
            await env.admin.broker_status("broker-a")


async def test_unreachable_or_malformed_namesrv_says_what_to_do(dead_addr: str) -> None:
    with trio.fail_after(DEADLINE_S):
        async with open_admin(dead_addr, timeout_s=REQUEST_TIMEOUT_S) as admin:
            with pytest.raises(NetworkError, match=f"cannot connect to {dead_addr}.*check -n"):
                await admin.cluster_info()
        for bad in ("", " ; ", "no-port"):
            with pytest.raises(AdminError, match="host:port"):
                async with open_admin(bad):
                    pass


async def test_topic_route_of_an_unknown_topic_hints_at_update_topic(env: Env) -> None:
    with trio.fail_after(DEADLINE_S):
        with pytest.raises(TopicNotExist, match="rmq admin updateTopic -t NoSuch -c CLUSTER"):
            await env.admin.topic_route("NoSuch")


# --- topics ----------------------------------------------------------------------------------


async def test_create_topic_on_a_cluster_or_one_broker(env: Env) -> None:
    with trio.fail_after(DEADLINE_S):
        admin = env.admin
        addrs = await admin.create_topic("OnCluster", cluster=CLUSTER)
        assert sorted(addrs) == sorted(env.brokers.values())
        await routed_to(admin, "OnCluster", set(GROUPS))
        route = await admin.topic_route("OnCluster")
        assert {(q.read_queue_nums, q.write_queue_nums, q.perm) for q in route.queue_datas} == {
            (8, 8, 6)  # mqadmin's defaults
        }

        addr_b = env.brokers["broker-b"]
        assert await admin.create_topic(
            "OnB", broker_addr=addr_b, read_queue_nums=2, write_queue_nums=3, perm=4
        ) == [addr_b]
        await routed_to(admin, "OnB", {"broker-b"})
        (qd,) = (await admin.topic_route("OnB")).queue_datas
        assert (qd.read_queue_nums, qd.write_queue_nums, qd.perm) == (2, 3, 4)

        # Update in place: more queues on broker-b only.
        await admin.create_topic("OnCluster", broker_addr=addr_b, read_queue_nums=16)

        async def updated() -> bool:
            route = await admin.topic_route("OnCluster")
            return {q.broker_name: q.read_queue_nums for q in route.queue_datas} == {
                "broker-a": 8,
                "broker-b": 16,
            }

        await eventually(updated, "queue update on broker-b")
        assert {"OnB", "OnCluster"} <= set(await admin.topic_list())
        assert {"OnB", "OnCluster"} <= set(await admin.topics_of_cluster(CLUSTER))


async def test_a_partial_change_names_where_it_happened(
    env: Env, client: RemotingClient, dead_addr: str
) -> None:
    with trio.fail_after(DEADLINE_S):
        # A master of the cluster that registered and then stopped answering.
        ghost = FakeBroker(cluster=CLUSTER, name="broker-z", addr=dead_addr)
        await ghost.register(client, env.namesrv)
        with pytest.raises(NetworkError) as caught:
            await env.admin.create_topic("Partly", cluster=CLUSTER)
        done = ", ".join(env.brokers[name] for name in GROUPS)  # in broker-name order
        assert f"cannot connect to {dead_addr}" in str(caught.value)
        assert f"topic Partly created on {done} only; run again once {dead_addr} is back" in str(
            caught.value
        )
        await routed_to(env.admin, "Partly", set(GROUPS))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topic": "T"}, r"name a cluster \(-c CLUSTER\) or a broker address"),
        ({"topic": "T", "cluster": CLUSTER, "broker_addr": "127.0.0.1:1"}, "not both"),
        ({"topic": "T", "cluster": "Nope"}, "cluster 'Nope' is not known"),
        ({"topic": "bad name", "cluster": CLUSTER}, "topic name 'bad name' is not valid"),
        ({"topic": "T", "cluster": CLUSTER, "perm": 8}, "perm 8 is not valid"),
        ({"topic": "T", "cluster": CLUSTER, "read_queue_nums": 0}, "at least 1"),
        ({"topic": "T", "broker_addr": "nowhere"}, "not host:port"),
    ],
)
async def test_create_topic_refuses_bad_requests(
    env: Env, kwargs: dict[str, object], message: str
) -> None:
    with trio.fail_after(DEADLINE_S):
        with pytest.raises(AdminError, match=message):
            await env.admin.create_topic(**kwargs)  # type: ignore[arg-type]
        assert "T" not in await env.admin.topic_list()


async def test_delete_topic_removes_it_from_brokers_and_namesrv(
    env: Env, client: RemotingClient
) -> None:
    with trio.fail_after(DEADLINE_S):
        admin = env.admin
        await new_topic(env, "Doomed")
        await send_to(env, "Doomed", "broker-a", 0, b"x")
        deleted = await admin.delete_topic("Doomed")
        assert sorted(deleted.brokers) == sorted(env.brokers.values())
        assert deleted.namesrvs == (env.namesrv,)
        with pytest.raises(TopicNotExist):
            await admin.topic_route("Doomed")
        assert "Doomed" not in await admin.topic_list()
        # The brokers forgot it too, so their next registration cannot bring it back.
        for addr in env.brokers.values():
            assert "Doomed" not in await broker_topics(client, addr)
        with pytest.raises(TopicNotExist, match="updateTopic"):
            await admin.delete_topic("Doomed")

        await new_topic(env, "DoomedToo")
        deleted = await admin.delete_topic("DoomedToo", cluster=CLUSTER)
        assert sorted(deleted.brokers) == sorted(env.brokers.values())
        for addr in env.brokers.values():
            assert "DoomedToo" not in await broker_topics(client, addr)
        with pytest.raises(TopicNotExist):
            await admin.topic_route("DoomedToo")


async def test_topic_status_lists_every_queue_of_every_broker(env: Env) -> None:
    with trio.fail_after(DEADLINE_S):
        await new_topic(env, "Stats", queues=2)
        before_ms = int(time.time() * 1000)
        for _ in range(3):
            await send_to(env, "Stats", "broker-b", 1, b"x")
        offsets = await env.admin.topic_status("Stats")
        assert [(o.queue.broker_name, o.queue.queue_id) for o in offsets] == [
            ("broker-a", 0),
            ("broker-a", 1),
            ("broker-b", 0),
            ("broker-b", 1),
        ]
        assert [(o.min_offset, o.max_offset) for o in offsets] == [(0, 0), (0, 0), (0, 0), (0, 3)]
        assert [o.last_update_ms for o in offsets[:3]] == [0, 0, 0]
        assert before_ms - 1000 <= offsets[3].last_update_ms <= int(time.time() * 1000) + 1000


# --- subscription groups -----------------------------------------------------------------------


async def test_subscription_group_update_keeps_unset_settings_and_delete(env: Env) -> None:
    with trio.fail_after(DEADLINE_S):
        admin = env.admin
        configs = await admin.update_subscription_group(
            "G1", cluster=CLUSTER, retry_max_times=3, retry_queue_nums=2
        )
        assert sorted(configs) == sorted(env.brokers.values())
        for config in configs.values():
            assert (config.retry_max_times, config.retry_queue_nums) == (3, 2)
            assert config.consume_enable
        addr_a = env.brokers["broker-a"]
        (config,) = (
            await admin.update_subscription_group(
                "G1", broker_addr=addr_a, consume_enable=False, consume_message_orderly=True
            )
        ).values()
        assert (config.retry_max_times, config.consume_enable, config.consume_message_orderly) == (
            3,
            False,
            True,
        )
        stored = (await admin.subscription_groups(addr_a))["G1"]
        assert stored == config
        assert (await admin.subscription_groups(env.brokers["broker-b"]))["G1"].consume_enable

        assert sorted(await admin.delete_subscription_group("G1", cluster=CLUSTER)) == sorted(
            env.brokers.values()
        )
        for addr in env.brokers.values():
            assert "G1" not in await admin.subscription_groups(addr)
        with pytest.raises(AdminError, match="at least 1"):
            await admin.update_subscription_group("G2", cluster=CLUSTER, retry_queue_nums=0)


# --- consumers ---------------------------------------------------------------------------------


async def test_consumer_progress_shows_lag_and_the_owning_client(
    env: Env, client: RemotingClient
) -> None:
    with trio.fail_after(DEADLINE_S):
        admin = env.admin
        await new_topic(env, "Work", queues=2)
        await admin.update_subscription_group("CG", cluster=CLUSTER)
        for broker, queue_id, count in (("broker-a", 0, 3), ("broker-a", 1, 1), ("broker-b", 1, 2)):
            for _ in range(count):
                await send_to(env, "Work", broker, queue_id, b"job")
        await commit(client, env.brokers["broker-a"], "CG", mq("Work", "broker-a", 0), 2)
        await commit(client, env.brokers["broker-b"], "CG", mq("Work", "broker-b", 1), 2)

        progress = await admin.consumer_progress("CG", "Work")
        rows = [
            (q.queue.broker_name, q.queue.queue_id, q.broker_offset, q.consumer_offset, q.diff)
            for q in progress.queues
        ]
        assert rows == [
            ("broker-a", 0, 3, 2, 1),
            ("broker-a", 1, 1, 0, 1),
            ("broker-b", 0, 0, 0, 0),
            ("broker-b", 1, 2, 2, 0),
        ]
        assert progress.diff_total == 2
        assert all(q.client_id is None for q in progress.queues)  # nobody online
        assert progress.queues[0].last_timestamp_ms > 0  # store time of offset 1
        assert progress.queues[1].last_timestamp_ms == 0

        # Two live consumers, one connection each (kept open): average allocation over the
        # four sorted queues gives c1 broker-a's and c2 broker-b's.
        async with (
            open_client(name="c1", default_timeout_s=REQUEST_TIMEOUT_S) as c1,
            open_client(name="c2", default_timeout_s=REQUEST_TIMEOUT_S) as c2,
        ):
            for addr in env.brokers.values():
                for consumer, client_id in ((c2, "c2"), (c1, "c1")):
                    await heartbeat(consumer, addr, client_id, "CG", ["Work", "%RETRY%CG"])
            progress = await admin.consumer_progress("CG", "Work")
            assert [q.client_id for q in progress.queues] == ["c1", "c1", "c2", "c2"]
            listing = await admin.consumer_connection("CG")
            assert listing is not None
            assert [c.client_id for c in listing.connection_set] == ["c1", "c2"]

        # Without a topic: every topic the group has offsets for.
        everything = await admin.consumer_progress("CG")
        assert {q.queue.topic for q in everything.queues} == {"Work"}
        assert everything.diff_total == 2
        with pytest.raises(AdminError, match="no consume offsets"):
            await admin.consumer_progress("NobodyHere")


async def test_reset_offset_by_time_moves_every_queue_to_that_time(
    env: Env, client: RemotingClient
) -> None:
    with trio.fail_after(DEADLINE_S):
        admin = env.admin
        await new_topic(env, "Replay", queues=1)
        await admin.update_subscription_group("RG", cluster=CLUSTER)
        for i in range(2):
            await send_to(env, "Replay", "broker-a", 0, b"old %d" % i)
        await trio.sleep(0.05)  # store timestamps are milliseconds
        middle_ms = int(time.time() * 1000)
        await trio.sleep(0.05)
        await send_to(env, "Replay", "broker-a", 0, b"new")
        await send_to(env, "Replay", "broker-b", 0, b"new")
        queue_a, queue_b = mq("Replay", "broker-a", 0), mq("Replay", "broker-b", 0)
        await commit(client, env.brokers["broker-a"], "RG", queue_a, 3)

        resets = await admin.reset_offset_by_time("RG", "Replay", middle_ms)
        assert [(r.queue, r.old_offset, r.new_offset) for r in resets] == [
            (queue_a, 3, 2),
            (queue_b, None, 0),
        ]
        assert await committed(client, env.brokers["broker-a"], "RG", queue_a) == 2
        assert await committed(client, env.brokers["broker-b"], "RG", queue_b) == 0

        resets = await admin.reset_offset_by_time("RG", "Replay", int(time.time() * 1000) + 60_000)
        assert [r.new_offset for r in resets] == [3, 1]  # the ends: skip everything

        # A live consumer would write its own offsets back: refused unless forced.
        await heartbeat(client, env.brokers["broker-a"], "live-1", "RG", ["Replay"])
        with pytest.raises(AdminError, match=r"live consumers \(live-1\).*stop them"):
            await admin.reset_offset_by_time("RG", "Replay", 0)
        assert await committed(client, env.brokers["broker-a"], "RG", queue_a) == 3
        resets = await admin.reset_offset_by_time("RG", "Replay", 0, force=True)
        assert [r.new_offset for r in resets] == [0, 0]
        # Offsets of a group no broker knows cannot be stored: the error says how to fix it.
        with pytest.raises(SubscriptionGroupNotExist, match="updateSubGroup -g NoGroup"):
            await admin.reset_offset_by_time("NoGroup", "Replay", 0)


# --- messages ----------------------------------------------------------------------------------


async def test_query_by_key_merges_every_broker_and_rechecks_the_key(env: Env) -> None:
    with trio.fail_after(DEADLINE_S):
        await new_topic(env, "Orders", queues=2)
        ids = [
            await send_to(env, "Orders", "broker-a", 1, b"1", keys="order-7 customer-1"),
            await send_to(env, "Orders", "broker-b", 0, b"2", keys="order-7"),
            await send_to(env, "Orders", "broker-b", 1, b"3", keys="order-8"),
            await send_to(env, "Orders", "broker-a", 0, b"4", keys="order-7"),
        ]
        found = await env.admin.query_by_key("Orders", "order-7")
        assert [m.msg_id for m in found] == [ids[0], ids[1], ids[3]]  # oldest first
        assert [(m.queue.broker_name, m.queue.queue_id, m.queue_offset) for m in found] == [
            ("broker-a", 1, 0),
            ("broker-b", 0, 0),
            ("broker-a", 0, 0),
        ]
        assert [m.body for m in await env.admin.query_by_key("Orders", "customer-1")] == [b"1"]
        assert len(await env.admin.query_by_key("Orders", "order-7", max_num=2)) == 2
        assert await env.admin.query_by_key("Orders", "order-9") == []
        assert await env.admin.query_by_key("Orders", "order-7", end_ms=1) == []
        with pytest.raises(TopicNotExist):
            await env.admin.query_by_key("NoSuch", "order-7")


async def test_query_by_id_takes_client_ids_and_offset_ids(env: Env) -> None:
    with trio.fail_after(DEADLINE_S):
        await new_topic(env, "Ids", queues=1)
        result = await env.admin.send("Ids", b"payload", keys=["k"], tags="TagA")
        (by_client_id,) = await env.admin.query_by_id("Ids", result.msg_id)
        (by_offset_id,) = await env.admin.query_by_id("Ids", result.offset_msg_id)
        for message in (by_client_id, by_offset_id):
            assert message.msg_id == result.msg_id
            assert message.offset_msg_id == result.offset_msg_id
            assert (message.body, message.tags, message.keys) == (b"payload", "TagA", ("k",))
            assert message.queue == result.queue
        unknown_client_id = result.msg_id[:-4] + "FFFF"
        with pytest.raises(MessageNotFound, match=f"no message with id {unknown_client_id}"):
            await env.admin.query_by_id("Ids", unknown_client_id)
        with pytest.raises(MessageNotFound, match="no message with id nonsense"):
            await env.admin.query_by_id("Ids", "nonsense")
        bad_offset_id = result.offset_msg_id[:-8] + "7FFFFFF0"
        with pytest.raises(MessageNotFound, match="no message at CommitLog offset"):
            await env.admin.query_by_id("Ids", bad_offset_id)


async def test_query_by_offset_reads_one_queue_position(env: Env) -> None:
    with trio.fail_after(DEADLINE_S):
        await new_topic(env, "Positions", queues=2)
        ids = [await send_to(env, "Positions", "broker-b", 1, b"m%d" % i) for i in range(3)]
        message = await env.admin.query_by_offset("Positions", "broker-b", 1, 1)
        assert (message.msg_id, message.body, message.queue_offset) == (ids[1], b"m1", 1)
        with pytest.raises(MessageNotFound, match="holds offsets 0 to 2"):
            await env.admin.query_by_offset("Positions", "broker-b", 1, 3)
        with pytest.raises(AdminError, match="no live broker group named 'broker-x'"):
            await env.admin.query_by_offset("Positions", "broker-x", 0, 0)


async def test_consume_reads_queues_in_order_without_committing(
    env: Env, client: RemotingClient
) -> None:
    with trio.fail_after(DEADLINE_S):
        admin = env.admin
        await new_topic(env, "Feed", queues=2)
        sent = [
            await send_to(
                env, "Feed", broker, queue_id, b"%s-%d-%d" % (broker.encode(), queue_id, n)
            )
            for broker, queue_id, n in (
                ("broker-a", 0, 0),
                ("broker-a", 0, 1),
                ("broker-b", 1, 0),
                ("broker-b", 1, 1),
                ("broker-b", 1, 2),
            )
        ]
        everything = await admin.consume("Feed")
        assert [m.msg_id for m in everything] == sent  # queue after queue, offset order
        assert [m.msg_id for m in await admin.consume("Feed", count=3)] == sent[:3]
        one_queue = await admin.consume("Feed", broker_name="broker-b", queue_id=1, offset=1)
        assert [m.queue_offset for m in one_queue] == [1, 2]
        assert await admin.consume("Feed", broker_name="broker-b", queue_id=1, offset=9) == []
        with pytest.raises(AdminError, match="no readable queue"):
            await admin.consume("Feed", broker_name="broker-c")
        with pytest.raises(AdminError, match="at least 1"):
            await admin.consume("Feed", count=0)
        # Pulls commit nothing for the tools group.
        queue = mq("Feed", "broker-b", 1)
        assert await committed(client, env.brokers["broker-b"], "TOOLS_CONSUMER", queue) is None


async def test_send_to_a_named_queue_or_refuse(env: Env) -> None:
    with trio.fail_after(DEADLINE_S):
        await new_topic(env, "Targets", queues=2)
        result = await env.admin.send(
            "Targets", b"x", broker_name="broker-b", queue_id=1, keys=["a", "b"]
        )
        assert (result.queue.broker_name, result.queue.queue_id, result.queue_offset) == (
            "broker-b",
            1,
            0,
        )
        with pytest.raises(AdminError, match="no writable queue 5 on broker broker-b"):
            await env.admin.send("Targets", b"x", broker_name="broker-b", queue_id=5)
        with pytest.raises(TopicNotExist, match="create it first: rmq admin updateTopic -t Nope"):
            await env.admin.send("Nope", b"x")
