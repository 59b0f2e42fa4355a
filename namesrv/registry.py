"""The NameServer's route table: a pure state machine (RouteInfoManager semantics).

Rules:
- Pure: no I/O, no clock. Time arrives as ``now_ms``; a channel is any opaque ``channel_id``
  the server compares with ``==``. The server logs and answers; this module only decides.
- Tables: topic -> broker name -> QueueData; broker name -> BrokerData (ids -> addresses);
  broker address -> LiveBroker. Invariant (``check_invariants``): every address in a
  BrokerData has exactly one LiveBroker naming that group and id, and vice versa; every
  QueueData's group exists; no topic, group or cluster is left empty.
- A group's cluster is the one named by its latest accepted registration, and the cluster
  table is derived from the groups, so the two can never disagree.
- Topic queue data come from the master (id 0) only: its TopicConfigs define the group's
  QueueDatas. Slaves only add their address. As in Java, a master's configs are applied
  when its registration is new (new address, group or id) or its DataVersion changed, or
  when a topic lacks this group's QueueData; an unchanged re-registration therefore keeps a
  perm changed by ``wipe_write_perm``. Topics a master stops listing are kept (Java's
  ``deleteTopicWithBrokerRegistration`` defaults to off). No acting-master rewriting.
- One address holds one broker id: registering an address under a new id or group first
  removes it from its old slot (a slave promoted in place moves from id 1 to id 0).
- Two addresses claiming one id of one group: the claim with the higher
  ``data_version.state_version`` (the master epoch) wins and the old holder is dropped.
  A lower or equal claim is rejected, state unchanged, while the holder is alive; Java lets
  an equal claim replace the holder, we keep the holder so two brokers of one epoch cannot
  take turns. A holder past its heartbeat timeout no longer counts, whatever its epoch:
  ``scan_expired`` would remove it anyway, and the answer must not depend on when the scan
  last ran.
- A broker expires when ``last_update_ms + heartbeat_timeout_ms < now_ms`` (strictly, as
  Java's scanNotActiveBroker): still alive at exactly 120 s, gone one millisecond later.
- Removing a broker removes its address from its BrokerData; a group left without addresses
  disappears from the cluster table and from every topic, and topics left without queue
  data disappear.
- Every mutating call either applies fully or, when it rejects, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs

from protocol.codes import PERM_WRITE
from protocol.route import (
    MASTER_ID,
    BrokerData,
    ClusterInfo,
    DataVersion,
    QueueData,
    TopicConfig,
    TopicRouteData,
)

#: Java's DEFAULT_BROKER_CHANNEL_EXPIRED_TIME.
DEFAULT_HEARTBEAT_TIMEOUT_MS = 120_000


@attrs.frozen(kw_only=True)
class LiveBroker:
    """What the table knows about one registered broker address (BrokerLiveInfo)."""

    cluster: str
    broker_name: str
    broker_id: int
    broker_addr: str
    ha_server_addr: str
    data_version: DataVersion
    channel_id: object | None
    last_update_ms: int
    heartbeat_timeout_ms: int

    def expired(self, now_ms: int) -> bool:
        """True once the broker has been silent for longer than its heartbeat timeout."""
        return self.last_update_ms + self.heartbeat_timeout_ms < now_ms


@attrs.frozen(kw_only=True)
class RegisterResult:
    """Outcome of ``register_broker``.

    For an accepted slave, ``master_addr`` / ``ha_server_addr`` name the group's registered
    master (None when there is none). ``displaced_addr`` is the address this registration
    replaced at its broker id. ``rejected_reason`` is set when nothing was changed.
    """

    master_addr: str | None = None
    ha_server_addr: str | None = None
    displaced_addr: str | None = None
    rejected_reason: str | None = None

    @property
    def accepted(self) -> bool:
        """True when the registration was applied."""
        return self.rejected_reason is None


@attrs.define
class RouteRegistry:
    """The route table of one NameServer."""

    _topics: dict[str, dict[str, QueueData]] = attrs.field(factory=dict, init=False)
    _groups: dict[str, BrokerData] = attrs.field(factory=dict, init=False)
    _live: dict[str, LiveBroker] = attrs.field(factory=dict, init=False)

    # --- broker membership --------------------------------------------------------------

    def register_broker(
        self,
        *,
        cluster: str,
        broker_name: str,
        broker_addr: str,
        broker_id: int,
        ha_server_addr: str,
        data_version: DataVersion,
        topic_configs: Mapping[str, TopicConfig] | None,
        channel_id: object | None,
        heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
        zone_name: str | None = None,
        enable_acting_master: bool = False,
        now_ms: int,
    ) -> RegisterResult:
        """Apply a REGISTER_BROKER (wire.md §2.16), or reject it and change nothing."""
        reason = self._refusal(
            cluster=cluster,
            broker_name=broker_name,
            broker_addr=broker_addr,
            broker_id=broker_id,
            data_version=data_version,
            heartbeat_timeout_ms=heartbeat_timeout_ms,
        ) or self._id_conflict(broker_name, broker_addr, broker_id, data_version, now_ms)
        if reason is not None:
            return RegisterResult(rejected_reason=reason)

        previous = self._live.get(broker_addr)
        if previous is not None and previous.broker_name != broker_name:
            self._remove(broker_addr)  # the address moved to another group
            previous = None
        group = self._groups.get(broker_name)
        addrs = {} if group is None else dict(group.broker_addrs)
        displaced = addrs.get(broker_id)
        if displaced == broker_addr:
            displaced = None
        if displaced is not None:
            del self._live[displaced]
        # One address, one id: a slave promoted in place leaves its old id.
        addrs = {i: a for i, a in addrs.items() if a != broker_addr}
        addrs[broker_id] = broker_addr
        self._groups[broker_name] = BrokerData(
            cluster=cluster,
            broker_name=broker_name,
            broker_addrs=dict(sorted(addrs.items())),
            enable_acting_master=enable_acting_master,
            zone_name=zone_name,
        )
        if broker_id == MASTER_ID and topic_configs is not None:
            fresh = (
                previous is None
                or previous.broker_id != broker_id
                or previous.data_version != data_version
            )
            self._apply_topic_configs(broker_name, topic_configs.values(), fresh=fresh)
        self._live[broker_addr] = LiveBroker(
            cluster=cluster,
            broker_name=broker_name,
            broker_id=broker_id,
            broker_addr=broker_addr,
            ha_server_addr=ha_server_addr,
            data_version=data_version,
            channel_id=channel_id,
            last_update_ms=now_ms,
            heartbeat_timeout_ms=heartbeat_timeout_ms,
        )
        master_addr = ha_addr = None
        if broker_id != MASTER_ID:
            master = self._live.get(addrs.get(MASTER_ID, ""))
            if master is not None:
                master_addr, ha_addr = master.broker_addr, master.ha_server_addr
        return RegisterResult(
            master_addr=master_addr, ha_server_addr=ha_addr, displaced_addr=displaced
        )

    @staticmethod
    def _refusal(
        *,
        cluster: str,
        broker_name: str,
        broker_addr: str,
        broker_id: int,
        data_version: DataVersion,
        heartbeat_timeout_ms: int,
    ) -> str | None:
        if not cluster or not broker_name or not broker_addr:
            return "cluster, broker name and broker address must be non-empty"
        if broker_id < 0:
            return f"broker id must be >= 0, got {broker_id}"
        if heartbeat_timeout_ms <= 0:
            return f"heartbeat timeout must be > 0 ms, got {heartbeat_timeout_ms}"
        if data_version.state_version < 0:
            return f"stateVersion must be >= 0, got {data_version.state_version}"
        return None

    def _id_conflict(
        self,
        broker_name: str,
        broker_addr: str,
        broker_id: int,
        data_version: DataVersion,
        now_ms: int,
    ) -> str | None:
        group = self._groups.get(broker_name)
        holder_addr = None if group is None else group.broker_addrs.get(broker_id)
        if holder_addr is None or holder_addr == broker_addr:
            return None
        holder = self._live[holder_addr]
        if holder.expired(now_ms):
            return None
        if data_version.state_version > holder.data_version.state_version:
            return None
        return (
            f"{broker_name} id {broker_id} is held by {holder_addr} at stateVersion "
            f"{holder.data_version.state_version}; {broker_addr} claims "
            f"stateVersion {data_version.state_version}"
        )

    def _apply_topic_configs(
        self, broker_name: str, configs: Iterable[TopicConfig], *, fresh: bool
    ) -> None:
        for config in configs:
            by_broker = self._topics.setdefault(config.topic_name, {})
            if fresh or broker_name not in by_broker:
                by_broker[broker_name] = QueueData.from_topic_config(broker_name, config)

    def unregister_broker(
        self, *, cluster: str, broker_name: str, broker_addr: str, broker_id: int
    ) -> bool:
        """Apply an UNREGISTER_BROKER; True when that broker was registered and is now gone.

        The address must be registered under ``broker_name`` and ``broker_id``: a stale
        request naming a slot the address no longer holds changes nothing. ``cluster`` is
        accepted for the wire's sake; a group's cluster is known already.
        """
        del cluster
        live = self._live.get(broker_addr)
        if live is None or live.broker_name != broker_name or live.broker_id != broker_id:
            return False
        self._remove(broker_addr)
        return True

    def channel_closed(self, channel_id: object) -> list[tuple[str, str]]:
        """Remove every broker whose latest registration came over ``channel_id``.

        Returns the removed brokers as ``(broker_name, broker_addr)``, sorted.
        """
        gone = sorted(
            (live.broker_name, addr)
            for addr, live in self._live.items()
            if live.channel_id is not None and live.channel_id == channel_id
        )
        for _, addr in gone:
            self._remove(addr)
        return gone

    def scan_expired(self, now_ms: int) -> list[tuple[str, str]]:
        """Remove brokers silent past their heartbeat timeout; return ``(name, addr)``, sorted."""
        gone = sorted(
            (live.broker_name, addr) for addr, live in self._live.items() if live.expired(now_ms)
        )
        for _, addr in gone:
            self._remove(addr)
        return gone

    def touch(self, broker_addr: str, now_ms: int) -> bool:
        """Record a keep-alive (BROKER_HEARTBEAT); False when the address is not registered."""
        live = self._live.get(broker_addr)
        if live is None:
            return False
        self._live[broker_addr] = attrs.evolve(
            live, last_update_ms=max(now_ms, live.last_update_ms)
        )
        return True

    def _remove(self, broker_addr: str) -> None:
        live = self._live.pop(broker_addr)
        group = self._groups[live.broker_name]
        addrs = {i: a for i, a in group.broker_addrs.items() if a != broker_addr}
        if addrs:
            self._groups[live.broker_name] = attrs.evolve(group, broker_addrs=addrs)
            return
        del self._groups[live.broker_name]
        for topic in list(self._topics):
            self._drop_queue_data(topic, live.broker_name)

    def _drop_queue_data(self, topic: str, broker_name: str) -> bool:
        by_broker = self._topics[topic]
        if by_broker.pop(broker_name, None) is None:
            return False
        if not by_broker:
            del self._topics[topic]
        return True

    # --- topics -----------------------------------------------------------------------------

    def delete_topic(self, topic: str, cluster: str | None = None) -> bool:
        """Forget ``topic`` (DELETE_TOPIC_IN_NAMESRV), or only its queues in ``cluster``.

        Returns True when anything was removed.
        """
        if topic not in self._topics:
            return False
        if cluster is None:
            del self._topics[topic]
            return True
        removed = False
        for name in self._cluster_members(cluster):
            if topic in self._topics:
                removed = self._drop_queue_data(topic, name) or removed
        return removed

    def wipe_write_perm(self, broker_name: str) -> int:
        """Clear PERM_WRITE on the group's queue data of every topic; return topics touched."""
        return self._update_perm(broker_name, lambda perm: perm & ~PERM_WRITE)

    def add_write_perm(self, broker_name: str) -> int:
        """Set PERM_WRITE on the group's queue data of every topic; return topics touched.

        Java resets perm to READ|WRITE here; we only add the bit so that a wipe followed by
        an add restores exactly what was there (PRIORITY and INHERIT bits survive).
        """
        return self._update_perm(broker_name, lambda perm: perm | PERM_WRITE)

    def _update_perm(self, broker_name: str, change: Callable[[int], int]) -> int:
        count = 0
        for by_broker in self._topics.values():
            qd = by_broker.get(broker_name)
            if qd is not None:
                by_broker[broker_name] = attrs.evolve(qd, perm=change(qd.perm))
                count += 1
        return count

    # --- queries ----------------------------------------------------------------------------

    def topic_route(self, topic: str) -> TopicRouteData | None:
        """The route of ``topic``, or None when the topic or all its groups are unknown."""
        by_broker = self._topics.get(topic)
        if not by_broker:
            return None
        names = sorted(by_broker)
        brokers = [self._groups[name] for name in names if name in self._groups]
        if not brokers:
            return None
        return TopicRouteData(
            queue_datas=[by_broker[name] for name in names],
            broker_datas=brokers,
        )

    def cluster_info(self) -> ClusterInfo:
        """Every group by name and every cluster's group names (GET_BROKER_CLUSTER_INFO)."""
        clusters: dict[str, list[str]] = {}
        for name in sorted(self._groups):
            clusters.setdefault(self._groups[name].cluster, []).append(name)
        return ClusterInfo(
            broker_addr_table=dict(sorted(self._groups.items())),
            cluster_addr_table=dict(sorted(clusters.items())),
        )

    def all_topics(self) -> list[str]:
        """Every topic with queue data, sorted."""
        return sorted(self._topics)

    def topics_by_cluster(self, cluster: str) -> list[str]:
        """Topics with queue data on any group of ``cluster``, sorted."""
        members = set(self._cluster_members(cluster))
        return sorted(t for t, by_broker in self._topics.items() if members & by_broker.keys())

    def broker_data(self, broker_name: str) -> BrokerData | None:
        """The group ``broker_name``, or None."""
        return self._groups.get(broker_name)

    def live_brokers(self) -> list[LiveBroker]:
        """Every registered broker address, sorted by address."""
        return [self._live[addr] for addr in sorted(self._live)]

    def _cluster_members(self, cluster: str) -> list[str]:
        return sorted(name for name, group in self._groups.items() if group.cluster == cluster)

    def check_invariants(self) -> None:
        """Assert the table's invariants (see the module docstring); for tests."""
        held: dict[str, tuple[str, int]] = {}
        for name, group in self._groups.items():
            assert group.broker_name == name and group.broker_addrs, name
            for broker_id, addr in group.broker_addrs.items():
                assert addr not in held, f"{addr} holds two slots"
                held[addr] = (name, broker_id)
        assert held.keys() == self._live.keys(), (sorted(held), sorted(self._live))
        for addr, live in self._live.items():
            assert held[addr] == (live.broker_name, live.broker_id), addr
        for topic, by_broker in self._topics.items():
            assert by_broker, topic
            for name, qd in by_broker.items():
                assert qd.broker_name == name and name in self._groups, (topic, name)
