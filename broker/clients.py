"""Who is connected: consumer groups and producer groups (ConsumerManager / ProducerManager).

Rules:
- Pure machines. A connection is an opaque ``channel_id`` (int) chosen by the I/O shell; time
  comes in as ``now_ms``. Results are values: ``Notify`` tells the shell which channels must
  get NOTIFY_CONSUMER_IDS_CHANGED (oneway, header ``consumerGroup``) for which group.
- Members are keyed by client id (``ip@instance``): a client that reconnects and heartbeats
  on a new channel keeps its place (its channel id is updated) and nobody is notified, since
  the consumer id list did not change. When a channel carries a new client id for a group,
  the old client id on that channel is replaced, as Java's channel-keyed table does.
- Consumer groups (ConsumerGroupInfo.java): a heartbeat updates the group's consume type,
  message model and consume-from-where, refreshes the member, and replaces the group's
  subscriptions. As in ``updateSubscription``, a *subscription change* is a topic added or
  removed; a newer ``subVersion`` for a known topic replaces the entry silently.
- A member joining or leaving, or a subscription change, notifies every remaining member's
  channel, unless the group is BROADCASTING or its ``notifyConsumerIdsChangedEnable`` (the
  flag the last heartbeat registered with) is off. Java sends nothing when a member merely
  expires (it closes the channel and relies on the close event, which then finds nothing);
  we notify on expiry as on any other departure, so survivors rebalance at once.
- A group with no member left is dropped, subscriptions included.
- Expiry: a member whose last heartbeat is more than ``timeout_ms`` old (default 120 s,
  channelExpiredTimeout) is removed by ``scan_expired``. Closing idle sockets is the
  transport's job (120 s idle timeout), not this module's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from protocol.bodies import (
    BROADCASTING,
    CLUSTERING,
    CONSUME_FROM_LAST_OFFSET,
    CONSUME_PASSIVELY,
    Connection,
    ConsumerConnection,
    ConsumerData,
    HeartbeatData,
    ProducerConnection,
    SubscriptionData,
)

#: ClientHousekeepingService / channelExpiredTimeout.
CHANNEL_EXPIRED_TIMEOUT_MS = 120_000


@attrs.frozen(kw_only=True)
class ClientConnection:
    """The sender of a request: its client id, connection and what its header announced."""

    client_id: str
    channel_id: int
    address: str
    language: str = "JAVA"
    version: int = 0


@attrs.frozen(kw_only=True)
class ClientChannel:
    """One registered client of a group (ClientChannelInfo.java)."""

    client_id: str
    channel_id: int
    address: str
    language: str = "JAVA"
    version: int = 0
    last_update_ms: int

    @classmethod
    def of(cls, conn: ClientConnection, now_ms: int) -> ClientChannel:
        """The member record for ``conn`` as of ``now_ms``."""
        return cls(
            client_id=conn.client_id,
            channel_id=conn.channel_id,
            address=conn.address,
            language=conn.language,
            version=conn.version,
            last_update_ms=now_ms,
        )

    def connection(self) -> Connection:
        """The admin listing entry."""
        return Connection(
            client_id=self.client_id,
            client_addr=self.address,
            language=self.language,
            version=self.version,
        )


@attrs.frozen(kw_only=True)
class Notify:
    """Send NOTIFY_CONSUMER_IDS_CHANGED for ``group`` to each of ``channel_ids``."""

    group: str
    channel_ids: tuple[int, ...]


@attrs.frozen(kw_only=True)
class ConsumerRegistered:
    """What one ConsumerData of a heartbeat changed."""

    notifies: tuple[Notify, ...] = ()
    #: The client id was not a member of the group before (or replaced another on its channel).
    membership_changed: bool = False
    #: A subscribed topic was added or removed.
    subscription_changed: bool = False
    #: Heartbeat V2: the group's fingerprint differs from the one last seen (IS_SUB_CHANGE).
    fingerprint_changed: bool = False

    @property
    def changed(self) -> bool:
        """Java's ``registerConsumer`` result: membership or subscriptions changed."""
        return self.membership_changed or self.subscription_changed


@attrs.frozen(kw_only=True)
class ConsumerGroupInfo:
    """A snapshot of one consumer group."""

    group_name: str
    consume_type: str
    message_model: str
    consume_from_where: str
    notify_enabled: bool
    members: dict[str, ClientChannel]
    subscriptions: dict[str, SubscriptionData]
    last_update_ms: int


@attrs.define
class _ConsumerGroup:
    name: str
    consume_type: str = CONSUME_PASSIVELY
    message_model: str = CLUSTERING
    consume_from_where: str = CONSUME_FROM_LAST_OFFSET
    notify_enabled: bool = True
    last_update_ms: int = 0
    members: dict[str, ClientChannel] = attrs.field(factory=dict)
    subscriptions: dict[str, SubscriptionData] = attrs.field(factory=dict)

    def notify(self) -> tuple[Notify, ...]:
        if not self.notify_enabled or self.message_model == BROADCASTING or not self.members:
            return ()
        channels = sorted({m.channel_id for m in self.members.values()})
        return (Notify(group=self.name, channel_ids=tuple(channels)),)

    def update_member(self, conn: ClientConnection, now_ms: int) -> bool:
        """Refresh or add ``conn``; True when the client id list changed."""
        displaced = [
            cid
            for cid, m in self.members.items()
            if m.channel_id == conn.channel_id and cid != conn.client_id
        ]
        for cid in displaced:
            del self.members[cid]
        is_new = conn.client_id not in self.members
        self.members[conn.client_id] = ClientChannel.of(conn, now_ms)
        self.last_update_ms = now_ms
        return is_new or bool(displaced)

    def update_subscriptions(self, subs: Iterable[SubscriptionData], now_ms: int) -> bool:
        """Replace the subscription table; True when a topic was added or removed."""
        changed = False
        topics: set[str] = set()
        for sub in subs:
            topics.add(sub.topic)
            old = self.subscriptions.get(sub.topic)
            if old is None:
                self.subscriptions[sub.topic] = sub
                changed = True
            elif sub.sub_version > old.sub_version:
                self.subscriptions[sub.topic] = sub
        for topic in [t for t in self.subscriptions if t not in topics]:
            del self.subscriptions[topic]
            changed = True
        self.last_update_ms = now_ms
        return changed

    def info(self) -> ConsumerGroupInfo:
        return ConsumerGroupInfo(
            group_name=self.name,
            consume_type=self.consume_type,
            message_model=self.message_model,
            consume_from_where=self.consume_from_where,
            notify_enabled=self.notify_enabled,
            members=dict(self.members),
            subscriptions=dict(self.subscriptions),
            last_update_ms=self.last_update_ms,
        )


@attrs.define
class ConsumerManager:
    """Consumer group → members and subscriptions."""

    _groups: dict[str, _ConsumerGroup] = attrs.field(init=False, factory=dict)
    #: Last heartbeat fingerprint per group (consumerGroupHeartbeatTable).
    _fingerprints: dict[str, int] = attrs.field(init=False, factory=dict)

    # --- queries ------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Groups with at least one member, sorted."""
        return sorted(self._groups)

    def group_info(self, group: str) -> ConsumerGroupInfo | None:
        """A snapshot of ``group``, or ``None`` when nobody is registered in it."""
        g = self._groups.get(group)
        return None if g is None else g.info()

    def consumer_ids(self, group: str) -> list[str]:
        """Client ids of the group's members, sorted (GET_CONSUMER_LIST_BY_GROUP)."""
        g = self._groups.get(group)
        return [] if g is None else sorted(g.members)

    def find_channel(self, group: str, client_id: str) -> ClientChannel | None:
        """The member record of ``client_id`` in ``group``."""
        g = self._groups.get(group)
        return None if g is None else g.members.get(client_id)

    def subscription(self, group: str, topic: str) -> SubscriptionData | None:
        """The group's subscription to ``topic`` (findSubscriptionData)."""
        g = self._groups.get(group)
        return None if g is None else g.subscriptions.get(topic)

    def groups_subscribing(self, topic: str) -> list[str]:
        """Groups whose subscriptions include ``topic``, sorted (queryTopicConsumeByWho)."""
        return sorted(name for name, g in self._groups.items() if topic in g.subscriptions)

    def heartbeat_fingerprint(self, group: str) -> int | None:
        """The fingerprint of the group's last heartbeat, if any."""
        return self._fingerprints.get(group)

    def consumer_connection(self, group: str) -> ConsumerConnection | None:
        """The GET_CONSUMER_CONNECTION_LIST body, or ``None`` (CONSUMER_NOT_ONLINE)."""
        g = self._groups.get(group)
        if g is None:
            return None
        return ConsumerConnection(
            connection_set=tuple(g.members[c].connection() for c in sorted(g.members)),
            subscription_table=dict(g.subscriptions),
            consume_type=g.consume_type,
            message_model=g.message_model,
            consume_from_where=g.consume_from_where,
        )

    # --- changes ------------------------------------------------------------------------

    def register_consumer(
        self,
        data: ConsumerData,
        conn: ClientConnection,
        *,
        now_ms: int,
        notify_enabled: bool = True,
        without_sub: bool = False,
        fingerprint: int = 0,
    ) -> ConsumerRegistered:
        """Register one ConsumerData of a heartbeat from ``conn``.

        ``notify_enabled`` is the group config's notifyConsumerIdsChangedEnable;
        ``without_sub`` (heartbeat V2) keeps the stored subscriptions; ``fingerprint`` is the
        heartbeat's fingerprint (0 for classic heartbeats).
        """
        group = self._groups.get(data.group_name)
        if group is None:
            group = self._groups[data.group_name] = _ConsumerGroup(name=data.group_name)
        group.consume_type = data.consume_type
        group.message_model = data.message_model
        group.consume_from_where = data.consume_from_where
        group.notify_enabled = notify_enabled
        member_changed = group.update_member(conn, now_ms)
        sub_changed = False
        if not without_sub:
            sub_changed = group.update_subscriptions(data.subscription_data_set, now_ms)
        previous = self._fingerprints.get(data.group_name)
        self._fingerprints[data.group_name] = fingerprint
        return ConsumerRegistered(
            notifies=group.notify() if member_changed or sub_changed else (),
            membership_changed=member_changed,
            subscription_changed=sub_changed,
            fingerprint_changed=previous is not None and previous != fingerprint,
        )

    def unregister(self, group: str, client_id: str) -> list[Notify]:
        """UNREGISTER_CLIENT with a consumer group: remove ``client_id`` from ``group``."""
        g = self._groups.get(group)
        if g is None or g.members.pop(client_id, None) is None:
            return []
        return list(self._after_removal(g))

    def channel_closed(self, channel_id: int) -> list[Notify]:
        """The connection ``channel_id`` closed: remove every member it carried."""
        notifies: list[Notify] = []
        for name in sorted(self._groups):
            g = self._groups[name]
            gone = [cid for cid, m in g.members.items() if m.channel_id == channel_id]
            for cid in gone:
                del g.members[cid]
            if gone:
                notifies.extend(self._after_removal(g))
        return notifies

    def scan_expired(
        self, now_ms: int, timeout_ms: int = CHANNEL_EXPIRED_TIMEOUT_MS
    ) -> list[Notify]:
        """Remove members not heard from for more than ``timeout_ms``."""
        notifies: list[Notify] = []
        for name in sorted(self._groups):
            g = self._groups[name]
            gone = [cid for cid, m in g.members.items() if now_ms - m.last_update_ms > timeout_ms]
            for cid in gone:
                del g.members[cid]
            if gone:
                notifies.extend(self._after_removal(g))
        return notifies

    def _after_removal(self, g: _ConsumerGroup) -> tuple[Notify, ...]:
        if not g.members:
            del self._groups[g.name]
            self._fingerprints.pop(g.name, None)
            return ()
        return g.notify()


@attrs.define
class ProducerManager:
    """Producer group → client id → channel (ProducerManager.java)."""

    _groups: dict[str, dict[str, ClientChannel]] = attrs.field(init=False, factory=dict)

    # --- queries ------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Producer groups with at least one member, sorted."""
        return sorted(self._groups)

    def group_online(self, group: str) -> bool:
        """True when some producer of ``group`` is registered."""
        return bool(self._groups.get(group))

    def producers(self, group: str) -> list[ClientChannel]:
        """The group's producers, by client id."""
        members = self._groups.get(group, {})
        return [members[c] for c in sorted(members)]

    def find_channel(self, client_id: str) -> int | None:
        """The channel a client last heartbeat on, in any group (clientChannelTable)."""
        best: ClientChannel | None = None
        for members in self._groups.values():
            m = members.get(client_id)
            if m is not None and (best is None or m.last_update_ms > best.last_update_ms):
                best = m
        return None if best is None else best.channel_id

    def available_channel(self, group: str) -> int | None:
        """A channel of ``group`` to send CHECK_TRANSACTION_STATE to: the freshest one."""
        members = self._groups.get(group)
        if not members:
            return None
        return max(members.values(), key=lambda m: (m.last_update_ms, m.client_id)).channel_id

    def producer_connection(self, group: str) -> ProducerConnection | None:
        """The GET_PRODUCER_CONNECTION_LIST body, or ``None`` when the group is offline."""
        if not self._groups.get(group):
            return None
        return ProducerConnection(
            connection_set=tuple(m.connection() for m in self.producers(group))
        )

    # --- changes ------------------------------------------------------------------------

    def register_producer(self, group: str, conn: ClientConnection, *, now_ms: int) -> bool:
        """Register or refresh ``conn`` in ``group``; True when it was not a member."""
        members = self._groups.setdefault(group, {})
        for cid in [c for c, m in members.items() if m.channel_id == conn.channel_id]:
            if cid != conn.client_id:
                del members[cid]
        is_new = conn.client_id not in members
        members[conn.client_id] = ClientChannel.of(conn, now_ms)
        return is_new

    def unregister(self, group: str, client_id: str) -> bool:
        """UNREGISTER_CLIENT with a producer group; False when it was not registered."""
        members = self._groups.get(group)
        if members is None or members.pop(client_id, None) is None:
            return False
        if not members:
            del self._groups[group]
        return True

    def channel_closed(self, channel_id: int) -> list[tuple[str, str]]:
        """Remove every producer on ``channel_id``; returns (group, client id) removed."""
        return self._remove(lambda m: m.channel_id == channel_id)

    def scan_expired(
        self, now_ms: int, timeout_ms: int = CHANNEL_EXPIRED_TIMEOUT_MS
    ) -> list[tuple[str, str]]:
        """Remove producers not heard from for more than ``timeout_ms``."""
        return self._remove(lambda m: now_ms - m.last_update_ms > timeout_ms)

    def _remove(self, doomed: Callable[[ClientChannel], bool]) -> list[tuple[str, str]]:
        removed: list[tuple[str, str]] = []
        for group in sorted(self._groups):
            members = self._groups[group]
            for cid in sorted(c for c, m in members.items() if doomed(m)):
                del members[cid]
                removed.append((group, cid))
            if not members:
                del self._groups[group]
        return removed


@attrs.define
class ClientManager:
    """Both managers, for the requests and events that concern both."""

    consumers: ConsumerManager = attrs.field(factory=ConsumerManager)
    producers: ProducerManager = attrs.field(factory=ProducerManager)

    def register_producers(
        self, heartbeat: HeartbeatData, conn: ClientConnection, *, now_ms: int
    ) -> list[str]:
        """Register every producer group of ``heartbeat``; returns the groups joined anew."""
        return [
            p.group_name
            for p in heartbeat.producer_data_set
            if self.producers.register_producer(p.group_name, conn, now_ms=now_ms)
        ]

    def unregister(
        self, client_id: str, producer_group: str | None, consumer_group: str | None
    ) -> list[Notify]:
        """UNREGISTER_CLIENT (wire.md §2.9)."""
        if producer_group is not None:
            self.producers.unregister(producer_group, client_id)
        if consumer_group is None:
            return []
        return self.consumers.unregister(consumer_group, client_id)

    def channel_closed(self, channel_id: int) -> list[Notify]:
        """The connection closed: drop its producers and consumers."""
        self.producers.channel_closed(channel_id)
        return self.consumers.channel_closed(channel_id)

    def scan_expired(
        self, now_ms: int, timeout_ms: int = CHANNEL_EXPIRED_TIMEOUT_MS
    ) -> list[Notify]:
        """The periodic scan: drop producers and consumers silent for over ``timeout_ms``."""
        self.producers.scan_expired(now_ms, timeout_ms)
        return self.consumers.scan_expired(now_ms, timeout_ms)
