"""Consumer and producer registries: step them, assert the whole state after each event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from broker.clients import (
    ClientChannel,
    ClientConnection,
    ClientManager,
    ConsumerRegistered,
    Notify,
)
from protocol.bodies import (
    BROADCASTING,
    CLUSTERING,
    CONSUME_ACTIVELY,
    CONSUME_FROM_FIRST_OFFSET,
    CONSUME_FROM_LAST_OFFSET,
    CONSUME_PASSIVELY,
    Connection,
    ConsumerData,
    HeartbeatData,
    ProducerData,
    SubscriptionData,
    parse_subscription,
)

T0 = 1_700_000_000_000
TIMEOUT = 120_000


def conn(n: int, channel: int | None = None) -> ClientConnection:
    return ClientConnection(
        client_id=f"10.0.0.{n}@{n}",
        channel_id=n if channel is None else channel,
        address=f"10.0.0.{n}:5000{n}",
        language="JAVA",
        version=121,
    )


C1, C2, C3, C4 = conn(1), conn(2), conn(3), conn(4)
C1_AGAIN = conn(1, channel=11)  # C1 reconnected


def sub(topic: str, expr: str = "*", version: int = 1) -> SubscriptionData:
    return parse_subscription(expr, topic=topic, sub_version=version)


G1_SUBS = (sub("T"), sub("%RETRY%g1"))


def consumer(
    c: ClientConnection,
    now: int,
    group: str = "g1",
    subs: tuple[SubscriptionData, ...] = G1_SUBS,
    *,
    model: str = CLUSTERING,
    notify: bool = True,
    without_sub: bool = False,
    fingerprint: int = 0,
) -> Callable[[ClientManager], ConsumerRegistered]:
    data = ConsumerData(
        group_name=group,
        consume_type=CONSUME_PASSIVELY,
        message_model=model,
        consume_from_where=CONSUME_FROM_LAST_OFFSET,
        subscription_data_set=subs,
    )
    return lambda m: m.consumers.register_consumer(
        data, c, now_ms=now, notify_enabled=notify, without_sub=without_sub, fingerprint=fingerprint
    )


def state(m: ClientManager) -> dict[str, Any]:
    """Every group: its settings, members (channel, last heartbeat), subscriptions."""
    consumers = {}
    for name in m.consumers.groups():
        info = m.consumers.group_info(name)
        assert info is not None and info.members, name
        assert m.consumers.consumer_ids(name) == sorted(info.members)
        consumers[name] = (
            info.message_model,
            info.notify_enabled,
            {cid: (c.channel_id, c.last_update_ms) for cid, c in info.members.items()},
            {t: (s.sub_string, s.sub_version) for t, s in info.subscriptions.items()},
            m.consumers.heartbeat_fingerprint(name),
        )
    producers = {
        g: {p.client_id: (p.channel_id, p.last_update_ms) for p in m.producers.producers(g)}
        for g in m.producers.groups()
    }
    return {"consumers": consumers, "producers": producers}


SAME = object()


@attrs.frozen
class Step:
    label: str
    event: Callable[[ClientManager], Any]
    result: Any
    state: Any = SAME


def run(steps: list[Step]) -> None:
    m = ClientManager()
    before = state(m)
    assert before == {"consumers": {}, "producers": {}}
    for step in steps:
        assert step.event(m) == step.result, step.label
        after = state(m)
        assert after == (before if step.state is SAME else step.state), step.label
        before = after


def registered(
    *notifies: Notify, member: bool = False, subs: bool = False, fp: bool = False
) -> ConsumerRegistered:
    return ConsumerRegistered(
        notifies=notifies,
        membership_changed=member,
        subscription_changed=subs,
        fingerprint_changed=fp,
    )


def notify(group: str, *channels: int) -> Notify:
    return Notify(group=group, channel_ids=channels)


G1_TOPICS = {"T": ("*", 1), "%RETRY%g1": ("*", 1)}

CLUSTER_LIFECYCLE = [
    Step(
        "C1 joins g1: notified (it is the only member)",
        consumer(C1, T0),
        registered(notify("g1", 1), member=True, subs=True),
        {
            "consumers": {"g1": (CLUSTERING, True, {C1.client_id: (1, T0)}, G1_TOPICS, 0)},
            "producers": {},
        },
    ),
    Step(
        "C1 heartbeat 30 s later: refreshed, nobody notified",
        consumer(C1, T0 + 30_000),
        registered(),
        {
            "consumers": {"g1": (CLUSTERING, True, {C1.client_id: (1, T0 + 30_000)}, G1_TOPICS, 0)},
            "producers": {},
        },
    ),
    Step(
        "C2 joins: both notified",
        consumer(C2, T0 + 31_000),
        registered(notify("g1", 1, 2), member=True),
        {
            "consumers": {
                "g1": (
                    CLUSTERING,
                    True,
                    {C1.client_id: (1, T0 + 30_000), C2.client_id: (2, T0 + 31_000)},
                    G1_TOPICS,
                    0,
                )
            },
            "producers": {},
        },
    ),
    Step(
        "C2 adds topic U: a subscription change notifies both",
        consumer(C2, T0 + 32_000, subs=(*G1_SUBS, sub("U"))),
        registered(notify("g1", 1, 2), subs=True),
        {
            "consumers": {
                "g1": (
                    CLUSTERING,
                    True,
                    {C1.client_id: (1, T0 + 30_000), C2.client_id: (2, T0 + 32_000)},
                    {**G1_TOPICS, "U": ("*", 1)},
                    0,
                )
            },
            "producers": {},
        },
    ),
    Step(
        "C1 (without U) heartbeats: the group table follows it, U removed (Java flip-flop)",
        consumer(C1, T0 + 33_000),
        registered(notify("g1", 1, 2), subs=True),
        {
            "consumers": {
                "g1": (
                    CLUSTERING,
                    True,
                    {C1.client_id: (1, T0 + 33_000), C2.client_id: (2, T0 + 32_000)},
                    G1_TOPICS,
                    0,
                )
            },
            "producers": {},
        },
    ),
    Step(
        "newer subVersion with another expression replaces it silently",
        consumer(C1, T0 + 34_000, subs=(sub("T", "TagA", version=2), sub("%RETRY%g1"))),
        registered(),
        {
            "consumers": {
                "g1": (
                    CLUSTERING,
                    True,
                    {C1.client_id: (1, T0 + 34_000), C2.client_id: (2, T0 + 32_000)},
                    {"T": ("TagA", 2), "%RETRY%g1": ("*", 1)},
                    0,
                )
            },
            "producers": {},
        },
    ),
    Step(
        "an older subVersion does not roll it back",
        consumer(C2, T0 + 35_000),
        registered(),
        {
            "consumers": {
                "g1": (
                    CLUSTERING,
                    True,
                    {C1.client_id: (1, T0 + 34_000), C2.client_id: (2, T0 + 35_000)},
                    {"T": ("TagA", 2), "%RETRY%g1": ("*", 1)},
                    0,
                )
            },
            "producers": {},
        },
    ),
    Step(
        "C1 reconnects on channel 11: same member, no notification",
        consumer(C1_AGAIN, T0 + 36_000),
        registered(),
        {
            "consumers": {
                "g1": (
                    CLUSTERING,
                    True,
                    {C1.client_id: (11, T0 + 36_000), C2.client_id: (2, T0 + 35_000)},
                    {"T": ("TagA", 2), "%RETRY%g1": ("*", 1)},
                    0,
                )
            },
            "producers": {},
        },
    ),
    Step(
        "C1's old channel closes: nothing registered on it any more",
        lambda m: m.channel_closed(1),
        [],
    ),
    Step(
        "C2 unregisters: C1 (channel 11) notified",
        lambda m: m.unregister(C2.client_id, None, "g1"),
        [notify("g1", 11)],
        {
            "consumers": {
                "g1": (
                    CLUSTERING,
                    True,
                    {C1.client_id: (11, T0 + 36_000)},
                    {"T": ("TagA", 2), "%RETRY%g1": ("*", 1)},
                    0,
                )
            },
            "producers": {},
        },
    ),
    Step("C2 unregisters again", lambda m: m.unregister(C2.client_id, None, "g1"), []),
    Step("unknown group", lambda m: m.unregister(C1.client_id, "PID_x", "nope"), []),
    Step("no group given", lambda m: m.unregister(C1.client_id, None, None), []),
    Step(
        "C1's channel closes: group gone, nobody left to notify",
        lambda m: m.channel_closed(11),
        [],
        {"consumers": {}, "producers": {}},
    ),
]


def test_cluster_lifecycle() -> None:
    run(CLUSTER_LIFECYCLE)


def g(
    model: str,
    notify_on: bool,
    members: dict[str, tuple[int, int]],
    topics: dict[str, Any],
    fp: int = 0,
) -> tuple[Any, ...]:
    return (model, notify_on, members, topics, fp)


BCAST = {"B": ("*", 1)}
B_SUBS = (sub("B"),)

NO_NOTIFY_AND_EXPIRY = [
    Step(
        "broadcast group: membership changes but nobody is notified",
        consumer(C3, T0, "gb", B_SUBS, model=BROADCASTING),
        registered(member=True, subs=True),
        {
            "consumers": {"gb": g(BROADCASTING, True, {C3.client_id: (3, T0)}, BCAST)},
            "producers": {},
        },
    ),
    Step(
        "group with notifyConsumerIdsChangedEnable off",
        consumer(C4, T0 + 1, "gq", B_SUBS, notify=False),
        registered(member=True, subs=True),
        {
            "consumers": {
                "gb": g(BROADCASTING, True, {C3.client_id: (3, T0)}, BCAST),
                "gq": g(CLUSTERING, False, {C4.client_id: (4, T0 + 1)}, BCAST),
            },
            "producers": {},
        },
    ),
    Step(
        "C1 joins gq (flag still off): nobody notified",
        consumer(C1, T0 + 2, "gq", B_SUBS, notify=False),
        registered(member=True),
        {
            "consumers": {
                "gb": g(BROADCASTING, True, {C3.client_id: (3, T0)}, BCAST),
                "gq": g(
                    CLUSTERING, False, {C4.client_id: (4, T0 + 1), C1.client_id: (1, T0 + 2)}, BCAST
                ),
            },
            "producers": {},
        },
    ),
    Step(
        "a new client id on C3's channel replaces the old one (Java's channel-keyed table)",
        consumer(conn(5, channel=3), T0 + 3, "gb", B_SUBS, model=BROADCASTING),
        registered(member=True),
        {
            "consumers": {
                "gb": g(BROADCASTING, True, {"10.0.0.5@5": (3, T0 + 3)}, BCAST),
                "gq": g(
                    CLUSTERING, False, {C4.client_id: (4, T0 + 1), C1.client_id: (1, T0 + 2)}, BCAST
                ),
            },
            "producers": {},
        },
    ),
    Step(
        "gq turns notification on (C4 heartbeat with the new flag): nothing changed yet",
        consumer(C4, T0 + 60_000, "gq", B_SUBS),
        registered(),
        {
            "consumers": {
                "gb": g(BROADCASTING, True, {"10.0.0.5@5": (3, T0 + 3)}, BCAST),
                "gq": g(
                    CLUSTERING,
                    True,
                    {C4.client_id: (4, T0 + 60_000), C1.client_id: (1, T0 + 2)},
                    BCAST,
                ),
            },
            "producers": {},
        },
    ),
    Step("nothing expires at exactly 120 s", lambda m: m.scan_expired(T0 + 2 + TIMEOUT), []),
    Step(
        "1 ms later C1 expires; C4 is notified",
        lambda m: m.scan_expired(T0 + 3 + TIMEOUT),
        [notify("gq", 4)],
        {
            "consumers": {
                "gb": g(BROADCASTING, True, {"10.0.0.5@5": (3, T0 + 3)}, BCAST),
                "gq": g(CLUSTERING, True, {C4.client_id: (4, T0 + 60_000)}, BCAST),
            },
            "producers": {},
        },
    ),
    Step(
        "then the broadcast member expires: its group goes, nobody notified",
        lambda m: m.scan_expired(T0 + 4 + TIMEOUT),
        [],
        {
            "consumers": {"gq": g(CLUSTERING, True, {C4.client_id: (4, T0 + 60_000)}, BCAST)},
            "producers": {},
        },
    ),
    Step(
        "custom timeout",
        lambda m: m.scan_expired(T0 + 70_001, timeout_ms=10_000),
        [],
        {"consumers": {}, "producers": {}},
    ),
]


def test_no_notify_and_expiry() -> None:
    run(NO_NOTIFY_AND_EXPIRY)


def test_heartbeat_v2_fingerprint_and_without_sub() -> None:
    m = ClientManager()
    first = consumer(C1, T0, fingerprint=77)(m)
    assert first == registered(notify("g1", 1), member=True, subs=True)
    # V2 heartbeat without subscriptions: the stored ones stay, same fingerprint.
    assert consumer(C1, T0 + 1, subs=(), without_sub=True, fingerprint=77)(m) == registered()
    assert state(m)["consumers"]["g1"] == g(
        CLUSTERING, True, {C1.client_id: (1, T0 + 1)}, G1_TOPICS, 77
    )
    # Another fingerprint: IS_SUB_CHANGE; the full set it sends replaces the table.
    got = consumer(C1, T0 + 2, subs=(sub("T"),), fingerprint=78)(m)
    assert got == registered(notify("g1", 1), subs=True, fp=True)
    assert state(m)["consumers"]["g1"] == g(
        CLUSTERING, True, {C1.client_id: (1, T0 + 2)}, {"T": ("*", 1)}, 78
    )
    # A classic heartbeat with an empty subscription set empties the table (Java does too).
    assert consumer(C1, T0 + 3, subs=())(m) == registered(notify("g1", 1), subs=True, fp=True)
    assert state(m)["consumers"]["g1"][3] == {}


def test_queries() -> None:
    m = ClientManager()
    consumer(C2, T0, subs=(sub("T", "TagA"),))(m)
    consumer(C1, T0 + 1, subs=(sub("T", "TagA"),))(m)
    consumer(C3, T0 + 2, "g2", (sub("T"), sub("V")))(m)
    assert m.consumers.consumer_ids("g1") == [C1.client_id, C2.client_id]
    assert m.consumers.consumer_ids("nope") == []
    assert m.consumers.subscription("g1", "T") == sub("T", "TagA")
    assert m.consumers.subscription("g1", "V") is None
    assert m.consumers.subscription("nope", "T") is None
    assert m.consumers.groups_subscribing("T") == ["g1", "g2"]
    assert m.consumers.groups_subscribing("V") == ["g2"]
    assert m.consumers.find_channel("g1", C1.client_id) == ClientChannel(
        client_id=C1.client_id,
        channel_id=1,
        address=C1.address,
        language="JAVA",
        version=121,
        last_update_ms=T0 + 1,
    )
    assert m.consumers.find_channel("g1", C3.client_id) is None
    assert m.consumers.group_info("nope") is None
    listing = m.consumers.consumer_connection("g1")
    assert listing is not None
    assert listing.connection_set == (
        Connection(client_id=C1.client_id, client_addr=C1.address, language="JAVA", version=121),
        Connection(client_id=C2.client_id, client_addr=C2.address, language="JAVA", version=121),
    )
    assert listing.subscription_table == {"T": sub("T", "TagA")}
    assert (listing.consume_type, listing.message_model, listing.consume_from_where) == (
        CONSUME_PASSIVELY,
        CLUSTERING,
        CONSUME_FROM_LAST_OFFSET,
    )
    assert m.consumers.consumer_connection("nope") is None
    # The last heartbeat sets the group's consume type / model / where.
    data = ConsumerData(
        group_name="g1",
        consume_type=CONSUME_ACTIVELY,
        consume_from_where=CONSUME_FROM_FIRST_OFFSET,
        subscription_data_set=(sub("T", "TagA"),),
    )
    m.consumers.register_consumer(data, C1, now_ms=T0 + 5)
    info = m.consumers.group_info("g1")
    assert info is not None
    assert (info.consume_type, info.consume_from_where, info.last_update_ms) == (
        CONSUME_ACTIVELY,
        CONSUME_FROM_FIRST_OFFSET,
        T0 + 5,
    )


# --- producers ------------------------------------------------------------------------------


def heartbeat(c: ClientConnection, *groups: str) -> HeartbeatData:
    return HeartbeatData(
        client_id=c.client_id, producer_data_set=tuple(ProducerData(group_name=g) for g in groups)
    )


PRODUCERS = [
    Step(
        "C1 registers two producer groups",
        lambda m: m.register_producers(
            heartbeat(C1, "CLIENT_INNER_PRODUCER", "PID_a"), C1, now_ms=T0
        ),
        ["CLIENT_INNER_PRODUCER", "PID_a"],
        {
            "consumers": {},
            "producers": {
                "CLIENT_INNER_PRODUCER": {C1.client_id: (1, T0)},
                "PID_a": {C1.client_id: (1, T0)},
            },
        },
    ),
    Step(
        "C2 joins PID_a; C1 refreshes",
        lambda m: (
            m.register_producers(heartbeat(C2, "PID_a"), C2, now_ms=T0 + 10),
            m.register_producers(
                heartbeat(C1, "CLIENT_INNER_PRODUCER", "PID_a"), C1, now_ms=T0 + 20
            ),
        ),
        (["PID_a"], []),
        {
            "consumers": {},
            "producers": {
                "CLIENT_INNER_PRODUCER": {C1.client_id: (1, T0 + 20)},
                "PID_a": {C1.client_id: (1, T0 + 20), C2.client_id: (2, T0 + 10)},
            },
        },
    ),
    Step("find C2's channel", lambda m: m.producers.find_channel(C2.client_id), 2),
    Step("unknown client", lambda m: m.producers.find_channel("x@1"), None),
    Step("freshest channel of PID_a", lambda m: m.producers.available_channel("PID_a"), 1),
    Step("offline group", lambda m: m.producers.available_channel("PID_z"), None),
    Step("PID_a online", lambda m: m.producers.group_online("PID_a"), True),
    Step(
        "C1 unregisters PID_a",
        lambda m: m.unregister(C1.client_id, "PID_a", None),
        [],
        {
            "consumers": {},
            "producers": {
                "CLIENT_INNER_PRODUCER": {C1.client_id: (1, T0 + 20)},
                "PID_a": {C2.client_id: (2, T0 + 10)},
            },
        },
    ),
    Step("again: nothing", lambda m: m.producers.unregister("PID_a", C1.client_id), False),
    Step(
        "C1's channel closes",
        lambda m: m.producers.channel_closed(1),
        [("CLIENT_INNER_PRODUCER", C1.client_id)],
        {"consumers": {}, "producers": {"PID_a": {C2.client_id: (2, T0 + 10)}}},
    ),
    Step("at exactly 120 s C2 stays", lambda m: m.producers.scan_expired(T0 + 10 + TIMEOUT), []),
    Step(
        "1 ms later it expires and the group goes",
        lambda m: m.producers.scan_expired(T0 + 11 + TIMEOUT),
        [("PID_a", C2.client_id)],
        {"consumers": {}, "producers": {}},
    ),
    Step("offline group", lambda m: m.producers.group_online("PID_a"), False),
]


def test_producers() -> None:
    run(PRODUCERS)


def test_producer_connection_and_channel_reuse() -> None:
    m = ClientManager()
    m.producers.register_producer("PID_a", C2, now_ms=T0)
    m.producers.register_producer("PID_a", C1, now_ms=T0)
    listing = m.producers.producer_connection("PID_a")
    assert listing is not None
    assert [c.client_id for c in listing.connection_set] == [C1.client_id, C2.client_id]
    assert m.producers.producer_connection("nope") is None
    # A different client id on C1's channel replaces the old one.
    assert m.producers.register_producer("PID_a", conn(7, channel=1), now_ms=T0 + 1) is True
    assert [p.client_id for p in m.producers.producers("PID_a")] == [C2.client_id, "10.0.0.7@7"]


def test_client_manager_combines_both() -> None:
    m = ClientManager()
    consumer(C1, T0)(m)
    consumer(C2, T0)(m)
    m.register_producers(heartbeat(C1, "PID_a"), C1, now_ms=T0)
    assert m.unregister(C1.client_id, "PID_a", "g1") == [notify("g1", 2)]
    assert state(m) == {
        "consumers": {"g1": g(CLUSTERING, True, {C2.client_id: (2, T0)}, G1_TOPICS)},
        "producers": {},
    }
    m.register_producers(heartbeat(C2, "PID_a"), C2, now_ms=T0 + 5)
    assert m.channel_closed(2) == []
    assert state(m) == {"consumers": {}, "producers": {}}
    consumer(C1, T0)(m)
    m.register_producers(heartbeat(C3, "PID_b"), C3, now_ms=T0)
    assert m.scan_expired(T0 + TIMEOUT + 1) == []
    assert state(m) == {"consumers": {}, "producers": {}}
