"""The NameServer route table: step the machine, assert the whole state after each event."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from namesrv.registry import RegisterResult, RouteRegistry
from protocol.route import DataVersion, TopicConfig

A0 = "10.0.0.1:10911"
S1 = "10.0.0.2:10911"
B0 = "10.0.0.3:10911"
X = "10.0.0.9:10911"
T0 = 1_000_000
TIMEOUT = 120_000


def ha(addr: str) -> str:
    return addr.replace(":10911", ":10912")


def topics(*specs: tuple[str, int, int]) -> dict[str, TopicConfig]:
    """Topic configs from (name, queue count, perm)."""
    return {
        name: TopicConfig(topic_name=name, read_queue_nums=n, write_queue_nums=n, perm=perm)
        for name, n, perm in specs
    }


def register(
    addr: str,
    *,
    now: int,
    name: str = "broker-a",
    cluster: str = "c1",
    broker_id: int = 0,
    epoch: int = 0,
    counter: int = 1,
    configs: Mapping[str, TopicConfig] | None = None,
    channel: object | None = None,
    **extra: Any,
) -> Callable[[RouteRegistry], RegisterResult]:
    def event(r: RouteRegistry) -> RegisterResult:
        return r.register_broker(
            cluster=cluster,
            broker_name=name,
            broker_addr=addr,
            broker_id=broker_id,
            ha_server_addr=ha(addr),
            data_version=DataVersion(counter=counter, state_version=epoch, timestamp_ms=counter),
            topic_configs=configs,
            channel_id=f"ch-{addr}" if channel is None else channel,
            now_ms=now,
            **extra,
        )

    return event


def state(r: RouteRegistry) -> dict[str, Any]:
    """Everything a client or the server can observe, plus liveness."""
    r.check_invariants()
    info = r.cluster_info()
    routes = {t: r.topic_route(t) for t in r.all_topics()}
    return {
        "clusters": info.cluster_addr_table,
        "groups": {name: bd.broker_addrs for name, bd in info.broker_addr_table.items()},
        "topics": {
            t: {q.broker_name: (q.write_queue_nums, q.perm) for q in route.queue_datas}
            for t, route in routes.items()
            if route is not None
        },
        "live": {b.broker_addr: (b.broker_id, b.last_update_ms) for b in r.live_brokers()},
    }


REJECTED = object()
SAME = object()


@attrs.frozen
class Step:
    label: str
    event: Callable[[RouteRegistry], Any]
    result: Any
    state: Any = SAME


def run(steps: list[Step]) -> None:
    r = RouteRegistry()
    before = state(r)
    for step in steps:
        got = step.event(r)
        if step.result is REJECTED:
            assert isinstance(got, RegisterResult), step.label
            assert not got.accepted and got.rejected_reason, step.label
        else:
            assert got == step.result, step.label
        after = state(r)
        assert after == (before if step.state is SAME else step.state), step.label
        before = after


def empty() -> dict[str, Any]:
    return {"clusters": {}, "groups": {}, "topics": {}, "live": {}}


MASTER_SLAVE_LIFECYCLE = [
    Step(
        "master registers with two topics",
        register(A0, now=T0, epoch=1, configs=topics(("TopicA", 4, 6), ("TopicB", 8, 6))),
        RegisterResult(),
        {
            "clusters": {"c1": ["broker-a"]},
            "groups": {"broker-a": {0: A0}},
            "topics": {"TopicA": {"broker-a": (4, 6)}, "TopicB": {"broker-a": (8, 6)}},
            "live": {A0: (0, T0)},
        },
    ),
    Step(
        "slave registers: gets master + HA address, its topic configs are ignored",
        register(S1, now=T0 + 10, broker_id=1, epoch=1, configs=topics(("TopicA", 16, 6))),
        RegisterResult(master_addr=A0, ha_server_addr=ha(A0)),
        {
            "clusters": {"c1": ["broker-a"]},
            "groups": {"broker-a": {0: A0, 1: S1}},
            "topics": {"TopicA": {"broker-a": (4, 6)}, "TopicB": {"broker-a": (8, 6)}},
            "live": {A0: (0, T0), S1: (1, T0 + 10)},
        },
    ),
    Step(
        "second group joins the cluster and TopicA",
        register(B0, now=T0 + 20, name="broker-b", configs=topics(("TopicA", 2, 6))),
        RegisterResult(),
        {
            "clusters": {"c1": ["broker-a", "broker-b"]},
            "groups": {"broker-a": {0: A0, 1: S1}, "broker-b": {0: B0}},
            "topics": {
                "TopicA": {"broker-a": (4, 6), "broker-b": (2, 6)},
                "TopicB": {"broker-a": (8, 6)},
            },
            "live": {A0: (0, T0), S1: (1, T0 + 10), B0: (0, T0 + 20)},
        },
    ),
    Step("nothing expires at exactly 120 s", lambda r: r.scan_expired(T0 + TIMEOUT), []),
    Step(
        "slave keep-alive",
        lambda r: r.touch(S1, T0 + 60_000),
        True,
        {
            "clusters": {"c1": ["broker-a", "broker-b"]},
            "groups": {"broker-a": {0: A0, 1: S1}, "broker-b": {0: B0}},
            "topics": {
                "TopicA": {"broker-a": (4, 6), "broker-b": (2, 6)},
                "TopicB": {"broker-a": (8, 6)},
            },
            "live": {A0: (0, T0), S1: (1, T0 + 60_000), B0: (0, T0 + 20)},
        },
    ),
    Step(
        "master expires 1 ms past 120 s; its group lives on through the slave",
        lambda r: r.scan_expired(T0 + TIMEOUT + 1),
        [("broker-a", A0)],
        {
            "clusters": {"c1": ["broker-a", "broker-b"]},
            "groups": {"broker-a": {1: S1}, "broker-b": {0: B0}},
            "topics": {
                "TopicA": {"broker-a": (4, 6), "broker-b": (2, 6)},
                "TopicB": {"broker-a": (8, 6)},
            },
            "live": {S1: (1, T0 + 60_000), B0: (0, T0 + 20)},
        },
    ),
    Step("keep-alive of an unknown broker", lambda r: r.touch(A0, T0 + TIMEOUT + 2), False),
    Step(
        "slave re-registers and learns there is no master",
        register(S1, now=T0 + TIMEOUT + 2, broker_id=1, epoch=1),
        RegisterResult(),
        {
            "clusters": {"c1": ["broker-a", "broker-b"]},
            "groups": {"broker-a": {1: S1}, "broker-b": {0: B0}},
            "topics": {
                "TopicA": {"broker-a": (4, 6), "broker-b": (2, 6)},
                "TopicB": {"broker-a": (8, 6)},
            },
            "live": {S1: (1, T0 + TIMEOUT + 2), B0: (0, T0 + 20)},
        },
    ),
    Step(
        "slave's channel closes: group gone, TopicB gone, broker-a leaves the cluster",
        lambda r: r.channel_closed(f"ch-{S1}"),
        [("broker-a", S1)],
        {
            "clusters": {"c1": ["broker-b"]},
            "groups": {"broker-b": {0: B0}},
            "topics": {"TopicA": {"broker-b": (2, 6)}},
            "live": {B0: (0, T0 + 20)},
        },
    ),
    Step(
        "unregister naming the wrong id changes nothing",
        lambda r: r.unregister_broker(
            cluster="c1", broker_name="broker-b", broker_addr=B0, broker_id=1
        ),
        False,
    ),
    Step(
        "unregister naming the wrong group changes nothing",
        lambda r: r.unregister_broker(
            cluster="c1", broker_name="broker-a", broker_addr=B0, broker_id=0
        ),
        False,
    ),
    Step(
        "unregister of the last broker empties the table",
        lambda r: r.unregister_broker(
            cluster="c1", broker_name="broker-b", broker_addr=B0, broker_id=0
        ),
        True,
        empty(),
    ),
    Step("routes are gone", lambda r: r.topic_route("TopicA"), None),
]


def _conflict_state(holder: str, slave: str | None, queues: int, live: dict[str, Any]) -> Any:
    groups = {0: holder} if slave is None else {0: holder, 1: slave}
    return {
        "clusters": {"c1": ["broker-a"]},
        "groups": {"broker-a": groups},
        "topics": {"TopicA": {"broker-a": (queues, 6)}},
        "live": live,
    }


ID0_CONFLICTS = [
    Step(
        "master at epoch 5",
        register(A0, now=T0, epoch=5, configs=topics(("TopicA", 4, 6))),
        RegisterResult(),
        _conflict_state(A0, None, 4, {A0: (0, T0)}),
    ),
    Step(
        "slave at epoch 5",
        register(S1, now=T0 + 1, broker_id=1, epoch=5),
        RegisterResult(master_addr=A0, ha_server_addr=ha(A0)),
        _conflict_state(A0, S1, 4, {A0: (0, T0), S1: (1, T0 + 1)}),
    ),
    Step(
        "another address claims id 0 at a lower epoch: rejected",
        register(X, now=T0 + 2, epoch=4, configs=topics(("TopicA", 8, 6))),
        REJECTED,
    ),
    Step(
        "another address claims id 0 at the same epoch: rejected",
        register(X, now=T0 + 3, epoch=5, configs=topics(("TopicA", 8, 6))),
        REJECTED,
    ),
    Step(
        "the slave claims id 0 at a lower epoch: rejected, stays a slave",
        register(S1, now=T0 + 3, epoch=4, configs=topics(("TopicA", 8, 6))),
        REJECTED,
    ),
    Step(
        "the slave is promoted in place at epoch 6: its id 1 goes, the old master goes",
        register(S1, now=T0 + 4, epoch=6, counter=2, configs=topics(("TopicA", 8, 6))),
        RegisterResult(displaced_addr=A0),
        _conflict_state(S1, None, 8, {S1: (0, T0 + 4)}),
    ),
    Step(
        "the deposed master still claims id 0 at epoch 5: rejected",
        register(A0, now=T0 + 5, epoch=5, configs=topics(("TopicA", 4, 6))),
        REJECTED,
    ),
    Step(
        "the deposed master comes back as a slave",
        register(A0, now=T0 + 6, broker_id=1, epoch=6),
        RegisterResult(master_addr=S1, ha_server_addr=ha(S1)),
        _conflict_state(S1, A0, 8, {S1: (0, T0 + 4), A0: (1, T0 + 6)}),
    ),
    Step(
        "same epoch while the holder is alive (exactly 120 s): rejected",
        register(X, now=T0 + 4 + TIMEOUT, epoch=6, configs=topics(("TopicA", 2, 6))),
        REJECTED,
    ),
    Step(
        "once the holder is past its timeout any claim wins, even a lower epoch",
        register(X, now=T0 + 5 + TIMEOUT, epoch=3, configs=topics(("TopicA", 2, 6))),
        RegisterResult(displaced_addr=S1),
        _conflict_state(X, A0, 2, {X: (0, T0 + 5 + TIMEOUT), A0: (1, T0 + 6)}),
    ),
]

PERM_A = topics(("TopicA", 4, 6), ("TBW102", 8, 7), ("TopicR", 1, 4))


def _perm_state(a: int, tbw: int, r: int) -> Any:
    return {
        "clusters": {"c1": ["broker-a", "broker-b"]},
        "groups": {"broker-a": {0: A0}, "broker-b": {0: B0}},
        "topics": {
            "TBW102": {"broker-a": (8, tbw)},
            "TopicA": {"broker-a": (4, a), "broker-b": (2, 6)},
            "TopicR": {"broker-a": (1, r)},
        },
        "live": {A0: (0, T0), B0: (0, T0)},
    }


WRITE_PERM = [
    Step(
        "master a",
        register(A0, now=T0, configs=PERM_A),
        RegisterResult(),
        {
            "clusters": {"c1": ["broker-a"]},
            "groups": {"broker-a": {0: A0}},
            "topics": {
                "TBW102": {"broker-a": (8, 7)},
                "TopicA": {"broker-a": (4, 6)},
                "TopicR": {"broker-a": (1, 4)},
            },
            "live": {A0: (0, T0)},
        },
    ),
    Step(
        "master b",
        register(B0, now=T0, name="broker-b", configs=topics(("TopicA", 2, 6))),
        RegisterResult(),
        _perm_state(6, 7, 4),
    ),
    Step("wipe a", lambda r: r.wipe_write_perm("broker-a"), 3, _perm_state(4, 5, 4)),
    Step(
        "re-registration with the same data version keeps the wiped perm",
        register(A0, now=T0, configs=PERM_A),
        RegisterResult(),
    ),
    Step("add a", lambda r: r.add_write_perm("broker-a"), 3, _perm_state(6, 7, 6)),
    Step("wipe a again", lambda r: r.wipe_write_perm("broker-a"), 3, _perm_state(4, 5, 4)),
    Step(
        "a new data version re-applies the broker's configs",
        register(A0, now=T0, counter=2, configs=PERM_A),
        RegisterResult(),
        _perm_state(6, 7, 4),
    ),
    Step("wipe of an unknown group", lambda r: r.wipe_write_perm("broker-z"), 0),
    Step("add on an unknown group", lambda r: r.add_write_perm("broker-z"), 0),
]


def _delete_state(topic_map: dict[str, Any]) -> Any:
    return {
        "clusters": {"c1": ["broker-a"], "c2": ["broker-b"]},
        "groups": {"broker-a": {0: A0}, "broker-b": {0: B0}},
        "topics": topic_map,
        "live": {A0: (0, T0), B0: (0, T0)},
    }


DELETE_A = topics(("TopicA", 4, 6), ("TopicB", 1, 6))
DELETE_TOPIC = [
    Step(
        "a in c1",
        register(A0, now=T0, configs=DELETE_A),
        RegisterResult(),
        {
            "clusters": {"c1": ["broker-a"]},
            "groups": {"broker-a": {0: A0}},
            "topics": {"TopicA": {"broker-a": (4, 6)}, "TopicB": {"broker-a": (1, 6)}},
            "live": {A0: (0, T0)},
        },
    ),
    Step(
        "b in c2",
        register(B0, now=T0, name="broker-b", cluster="c2", configs=topics(("TopicA", 2, 6))),
        RegisterResult(),
        _delete_state(
            {"TopicA": {"broker-a": (4, 6), "broker-b": (2, 6)}, "TopicB": {"broker-a": (1, 6)}}
        ),
    ),
    Step("topics of c1", lambda r: r.topics_by_cluster("c1"), ["TopicA", "TopicB"]),
    Step("topics of c2", lambda r: r.topics_by_cluster("c2"), ["TopicA"]),
    Step("topics of an unknown cluster", lambda r: r.topics_by_cluster("c9"), []),
    Step(
        "delete TopicA in c2 only",
        lambda r: r.delete_topic("TopicA", "c2"),
        True,
        _delete_state({"TopicA": {"broker-a": (4, 6)}, "TopicB": {"broker-a": (1, 6)}}),
    ),
    Step("again: nothing left to delete in c2", lambda r: r.delete_topic("TopicA", "c2"), False),
    Step(
        "deleting a topic's last queues drops the topic",
        lambda r: r.delete_topic("TopicB", "c1"),
        True,
        _delete_state({"TopicA": {"broker-a": (4, 6)}}),
    ),
    Step("delete everywhere", lambda r: r.delete_topic("TopicA"), True, _delete_state({})),
    Step("delete an unknown topic", lambda r: r.delete_topic("TopicA"), False),
    Step(
        "the broker still has the topics: its next registration brings them back (Java too)",
        register(A0, now=T0, configs=DELETE_A),
        RegisterResult(),
        _delete_state({"TopicA": {"broker-a": (4, 6)}, "TopicB": {"broker-a": (1, 6)}}),
    ),
]

ADDRESSES_AND_CHANNELS = [
    Step(
        "an address registers as slave of broker-a",
        register(X, now=T0, broker_id=1, channel="ch-1"),
        RegisterResult(),
        {
            "clusters": {"c1": ["broker-a"]},
            "groups": {"broker-a": {1: X}},
            "topics": {},
            "live": {X: (1, T0)},
        },
    ),
    Step(
        "the same address registers as master of broker-b: it leaves broker-a",
        register(X, now=T0 + 1, name="broker-b", channel="ch-1", configs=topics(("T", 1, 6))),
        RegisterResult(),
        {
            "clusters": {"c1": ["broker-b"]},
            "groups": {"broker-b": {0: X}},
            "topics": {"T": {"broker-b": (1, 6)}},
            "live": {X: (0, T0 + 1)},
        },
    ),
    Step(
        "it reconnects and registers over a new channel, in another cluster",
        register(X, now=T0 + 2, name="broker-b", cluster="c2", channel="ch-2"),
        RegisterResult(),
        {
            "clusters": {"c2": ["broker-b"]},
            "groups": {"broker-b": {0: X}},
            "topics": {"T": {"broker-b": (1, 6)}},
            "live": {X: (0, T0 + 2)},
        },
    ),
    Step("the old channel closing removes nothing", lambda r: r.channel_closed("ch-1"), []),
    Step("negative broker id", register(A0, now=T0, broker_id=-1), REJECTED),
    Step("empty cluster", register(A0, now=T0, cluster=""), REJECTED),
    Step("empty broker name", register(A0, now=T0, name=""), REJECTED),
    Step("empty address", register("", now=T0), REJECTED),
    Step("zero heartbeat timeout", register(A0, now=T0, heartbeat_timeout_ms=0), REJECTED),
    Step("negative epoch", register(A0, now=T0, epoch=-1), REJECTED),
    Step(
        "a broker with a 10 s heartbeat timeout",
        register(A0, now=T0, name="broker-c", heartbeat_timeout_ms=10_000, channel=None),
        RegisterResult(),
        {
            "clusters": {"c1": ["broker-c"], "c2": ["broker-b"]},
            "groups": {"broker-b": {0: X}, "broker-c": {0: A0}},
            "topics": {"T": {"broker-b": (1, 6)}},
            "live": {A0: (0, T0), X: (0, T0 + 2)},
        },
    ),
    Step("alive at exactly 10 s", lambda r: r.scan_expired(T0 + 10_000), []),
    Step(
        "gone 1 ms later",
        lambda r: r.scan_expired(T0 + 10_001),
        [("broker-c", A0)],
        {
            "clusters": {"c2": ["broker-b"]},
            "groups": {"broker-b": {0: X}},
            "topics": {"T": {"broker-b": (1, 6)}},
            "live": {X: (0, T0 + 2)},
        },
    ),
    Step(
        "the new channel closing removes the broker and its topic",
        lambda r: r.channel_closed("ch-2"),
        [("broker-b", X)],
        empty(),
    ),
]


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(MASTER_SLAVE_LIFECYCLE, id="master-slave-lifecycle"),
        pytest.param(ID0_CONFLICTS, id="id0-conflicts"),
        pytest.param(WRITE_PERM, id="write-perm"),
        pytest.param(DELETE_TOPIC, id="delete-topic"),
        pytest.param(ADDRESSES_AND_CHANNELS, id="addresses-and-channels"),
    ],
)
def test_scenario(steps: list[Step]) -> None:
    run(steps)


def test_channel_close_removes_every_broker_on_that_channel() -> None:
    r = RouteRegistry()
    register(A0, now=T0, channel="shared")(r)
    register(S1, now=T0, broker_id=1, channel="shared")(r)
    register(B0, now=T0, name="broker-b", channel="other")(r)
    assert r.channel_closed("shared") == [("broker-a", A0), ("broker-a", S1)]
    assert state(r)["groups"] == {"broker-b": {0: B0}}


def test_route_and_cluster_info_content() -> None:
    r = RouteRegistry()
    register(A0, now=T0, configs=topics(("TopicA", 4, 6)), zone_name="z1")(r)
    register(S1, now=T0, broker_id=1)(r)
    register(B0, now=T0, name="broker-b", configs=topics(("TopicA", 2, 6)))(r)
    route = r.topic_route("TopicA")
    assert route is not None
    assert json.loads(route.to_bytes()) == {
        "brokerDatas": [
            {
                "brokerAddrs": {"0": A0, "1": S1},
                "brokerName": "broker-a",
                "cluster": "c1",
                "enableActingMaster": False,
            },
            {
                "brokerAddrs": {"0": B0},
                "brokerName": "broker-b",
                "cluster": "c1",
                "enableActingMaster": False,
            },
        ],
        "filterServerTable": {},
        "queueDatas": [
            {
                "brokerName": "broker-a",
                "perm": 6,
                "readQueueNums": 4,
                "topicSysFlag": 0,
                "writeQueueNums": 4,
            },
            {
                "brokerName": "broker-b",
                "perm": 6,
                "readQueueNums": 2,
                "topicSysFlag": 0,
                "writeQueueNums": 2,
            },
        ],
    }
    # zone name and acting-master flag follow the group's latest registration (the slave's).
    assert r.topic_route("Unknown") is None
    info = json.loads(r.cluster_info().to_bytes())
    assert info["clusterAddrTable"] == {"c1": ["broker-a", "broker-b"]}
    assert info["brokerAddrTable"]["broker-a"]["brokerAddrs"] == {"0": A0, "1": S1}
    assert r.all_topics() == ["TopicA"]
    broker_a = r.broker_data("broker-a")
    assert broker_a is not None and broker_a.zone_name is None


def test_registration_records_liveness_fields() -> None:
    r = RouteRegistry()
    register(A0, now=T0, epoch=3, counter=9, heartbeat_timeout_ms=30_000, zone_name="z")(r)
    (live,) = r.live_brokers()
    assert attrs.asdict(live, recurse=False) == {
        "cluster": "c1",
        "broker_name": "broker-a",
        "broker_id": 0,
        "broker_addr": A0,
        "ha_server_addr": ha(A0),
        "data_version": DataVersion(counter=9, state_version=3, timestamp_ms=9),
        "channel_id": f"ch-{A0}",
        "last_update_ms": T0,
        "heartbeat_timeout_ms": 30_000,
        "registration": 0,
        "applied_version": None,  # no topic configs came with it
    }
    broker_a = r.broker_data("broker-a")
    assert broker_a is not None and broker_a.zone_name == "z"


# --- stateful model: invariants hold and rejections change nothing ---------------------------

ADDRS = [A0, S1, B0, X]
GROUPS = ["broker-a", "broker-b"]
TOPIC_SETS = [None, {}, topics(("T1", 2, 6)), topics(("T1", 4, 7), ("T2", 1, 6))]


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = RouteRegistry()
        self.now = T0

    @rule(
        addr=st.sampled_from(ADDRS),
        name=st.sampled_from(GROUPS),
        cluster=st.sampled_from(["c1", "c2"]),
        broker_id=st.integers(0, 2),
        epoch=st.integers(0, 3),
        counter=st.integers(0, 2),
        configs=st.sampled_from(TOPIC_SETS),
        channel=st.sampled_from(["ch-1", "ch-2", None]),
    )
    def register(self, **kw: Any) -> None:
        before = state(self.registry)
        result = register(kw.pop("addr"), now=self.now, **kw)(self.registry)
        if not result.accepted:
            assert state(self.registry) == before

    @rule(addr=st.sampled_from(ADDRS), name=st.sampled_from(GROUPS), broker_id=st.integers(0, 2))
    def unregister(self, addr: str, name: str, broker_id: int) -> None:
        before = state(self.registry)
        expected = any(
            (b.broker_addr, b.broker_name, b.broker_id) == (addr, name, broker_id)
            for b in self.registry.live_brokers()
        )
        removed = self.registry.unregister_broker(
            cluster="c1", broker_name=name, broker_addr=addr, broker_id=broker_id
        )
        assert removed == expected
        if not removed:
            assert state(self.registry) == before

    @rule(channel=st.sampled_from(["ch-1", "ch-2"]))
    def close(self, channel: str) -> None:
        self.registry.channel_closed(channel)

    @rule(ms=st.integers(0, 130_000))
    def advance_and_scan(self, ms: int) -> None:
        self.now += ms
        self.registry.scan_expired(self.now)
        assert all(not b.expired(self.now) for b in self.registry.live_brokers())

    @rule(addr=st.sampled_from(ADDRS))
    def touch(self, addr: str) -> None:
        self.registry.touch(addr, self.now)

    @rule(name=st.sampled_from(GROUPS), add=st.booleans())
    def perm(self, name: str, add: bool) -> None:
        if add:
            self.registry.add_write_perm(name)
        else:
            self.registry.wipe_write_perm(name)

    @precondition(lambda self: bool(self.registry.all_topics()))
    @rule(data=st.data(), cluster=st.sampled_from([None, "c1", "c2"]))
    def delete(self, data: st.DataObject, cluster: str | None) -> None:
        topic = data.draw(st.sampled_from(self.registry.all_topics()))
        self.registry.delete_topic(topic, cluster)

    @invariant()
    def consistent(self) -> None:
        state(self.registry)
        for topic in self.registry.all_topics():
            assert self.registry.topic_route(topic) is not None


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
