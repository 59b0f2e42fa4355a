"""The NameServer's route table: a pure state machine (RouteInfoManager semantics).

Rules:
- Pure: no I/O, no clock. Time arrives as ``now_ms``; a channel is any opaque ``channel_id``
  the server compares with ``==``. The server logs and answers; this module only decides.
- Tables: topic -> broker name -> queues; broker name -> BrokerData (ids -> addresses);
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
- Every mutating call either applies fully or, when it rejects, changes nothing. The
  one exception is by design: ``register_steps`` applies a master's topic configs in
  slices of ``STEP_ITEMS`` (protocol/steps.py) so a registration of 100,000 topics never
  stalls route lookups. Between slices the table is consistent (the group exists before
  its first QueueData; each topic's route is complete) and shows part of the new configs.
  A newer registration of the same address, or the broker's removal, stops the older one
  at its next slice; a master's configs count as applied (``applied_version``) only once
  every slice ran, so an interrupted registration is re-applied in full by the next.
- Limits (``RegistryLimits``) bound memory and the work of one registration: brokers per
  cluster and in all, topics per broker group, (topic, group) entries in all, queues per
  topic and topic name length. A registration over a limit is rejected with a reason
  naming it, before anything changes; room for its new entries is reserved while it is
  applied, so registrations in flight together cannot overshoot.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from protocol.codes import PERM_WRITE
from protocol.register_body import TopicQueues, topic_queues
from protocol.route import (
    MASTER_ID,
    MAX_QUEUE_NUMS,
    BrokerData,
    ClusterInfo,
    DataVersion,
    QueueData,
    TopicConfig,
    TopicRouteData,
)
from protocol.steps import STEP_ITEMS, Steps, finish

#: Java's DEFAULT_BROKER_CHANNEL_EXPIRED_TIME.
DEFAULT_HEARTBEAT_TIMEOUT_MS = 120_000


@attrs.frozen(kw_only=True)
class RegistryLimits:
    """What one NameServer holds at most. Defaults are generous for real clusters; each
    bound is what keeps a hostile or broken broker from exhausting the NameServer."""

    #: Topics one broker group may publish (RocketMQ has no cap; large real brokers hold
    #: tens of thousands). A lookup costs the same whatever the count: a dict access.
    max_topics_per_broker: int = 100_000
    #: Broker addresses (masters and slaves) registered under one cluster name.
    max_brokers_per_cluster: int = 1_024
    #: Broker addresses registered in all clusters together.
    max_brokers: int = 4_096
    #: (topic, broker group) pairs in all: about 250 bytes of memory each.
    max_queue_datas: int = 1_000_000
    #: Read or write queues per topic and group (protocol.route.MAX_QUEUE_NUMS).
    max_queue_nums: int = MAX_QUEUE_NUMS
    #: Longest topic name (TopicValidator: 127, and 255 for %RETRY%/%DLQ% topics).
    max_topic_name_chars: int = 255


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
    #: Which registration wrote this entry; a newer one stops the older's topic slices.
    registration: int = 0
    #: The data version whose topic configs were applied in full (a master's).
    applied_version: DataVersion | None = None

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


#: (read queue nums, write queue nums, perm, topic sys flag) of one group for one topic.
_Queues = tuple[int, int, int, int]


def _queue_data(broker_name: str, queues: _Queues) -> QueueData:
    read, write, perm, sys_flag = queues
    return QueueData(
        broker_name=broker_name,
        read_queue_nums=read,
        write_queue_nums=write,
        perm=perm,
        topic_sys_flag=sys_flag,
    )


@attrs.define
class RouteRegistry:
    """The route table of one NameServer."""

    limits: RegistryLimits = attrs.field(factory=RegistryLimits)
    #: topic -> broker name -> its QueueData's numbers. Plain tuples of ints, shared
    #: between topics: neither they nor the per-topic dicts holding only them are tracked
    #: by Python's cyclic GC, so a table of a million routes adds nothing to its pauses.
    _topics: dict[str, dict[str, _Queues]] = attrs.field(factory=dict, init=False)
    _groups: dict[str, BrokerData] = attrs.field(factory=dict, init=False)
    _live: dict[str, LiveBroker] = attrs.field(factory=dict, init=False)
    #: Broker group -> the topics holding its QueueData (so removals and perm changes
    #: touch only that group's topics, and its topic count is known).
    _group_topics: dict[str, set[str]] = attrs.field(factory=dict, init=False)
    _queue_data_count: int = attrs.field(default=0, init=False)
    #: Entries promised to registrations still being applied.
    _reserved: int = attrs.field(default=0, init=False)
    _registrations: itertools.count[int] = attrs.field(factory=itertools.count, init=False)

    # --- broker membership --------------------------------------------------------------

    def register_broker(
        self, *, topic_configs: Mapping[str, TopicConfig] | None, **registration: Any
    ) -> RegisterResult:
        """Apply a REGISTER_BROKER (wire.md §2.16) at once, or reject it and change nothing.

        ``registration`` holds ``register_steps``'s other keyword arguments.
        """
        queues = None
        if topic_configs is not None:
            queues = {name: topic_queues(config) for name, config in topic_configs.items()}
        return finish(self.register_steps(topic_queues=queues, **registration))

    def register_steps(
        self,
        *,
        cluster: str,
        broker_name: str,
        broker_addr: str,
        broker_id: int,
        ha_server_addr: str,
        data_version: DataVersion,
        topic_queues: Mapping[str, TopicQueues] | None,
        channel_id: object | None,
        heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
        zone_name: str | None = None,
        enable_acting_master: bool = False,
        now_ms: int,
    ) -> Steps[RegisterResult]:
        """``register_broker`` in slices: checks (nothing changes), then the membership
        (one step), then the topics ``STEP_ITEMS`` at a time. Topics come as
        ``TopicQueues`` tuples (protocol/register_body.py), which the GC does not track."""
        configs = list(topic_queues.values()) if broker_id == MASTER_ID and topic_queues else []
        topic_reason, new_entries = yield from self._check_topics(broker_name, configs)
        reason = (
            self._refusal(
                cluster=cluster,
                broker_name=broker_name,
                broker_addr=broker_addr,
                broker_id=broker_id,
                data_version=data_version,
                heartbeat_timeout_ms=heartbeat_timeout_ms,
            )
            or self._id_conflict(broker_name, broker_addr, broker_id, data_version, now_ms)
            or self._capacity(cluster, broker_addr)
            or topic_reason
            or self._entries_room(new_entries)
        )
        if reason is not None:
            return RegisterResult(rejected_reason=reason)
        previous, result = self._join(
            cluster=cluster,
            broker_name=broker_name,
            broker_addr=broker_addr,
            broker_id=broker_id,
            zone_name=zone_name,
            enable_acting_master=enable_acting_master,
        )
        live = LiveBroker(
            cluster=cluster,
            broker_name=broker_name,
            broker_id=broker_id,
            broker_addr=broker_addr,
            ha_server_addr=ha_server_addr,
            data_version=data_version,
            channel_id=channel_id,
            last_update_ms=now_ms,
            heartbeat_timeout_ms=heartbeat_timeout_ms,
            registration=next(self._registrations),
            applied_version=None if previous is None else previous.applied_version,
        )
        self._live[broker_addr] = live
        if broker_id == MASTER_ID and topic_queues is not None:
            fresh = (
                previous is None
                or previous.broker_id != broker_id
                or previous.applied_version != data_version
            )
            yield from self._apply_steps(live, configs, new_entries, fresh=fresh)
        return result

    def _check_topics(
        self, broker_name: str, configs: Sequence[TopicQueues]
    ) -> Steps[tuple[str | None, int]]:
        """(refusal or None, entries new to the table), checked in slices."""
        limits = self.limits
        known = self._group_topics.get(broker_name, set())
        new_entries = 0
        for start in range(0, len(configs), STEP_ITEMS):
            if start:
                yield
            for name, read, write, _, _ in configs[start : start + STEP_ITEMS]:
                if not name or len(name) > limits.max_topic_name_chars:
                    return (
                        f"topic name of {len(name)} characters (1 to {limits.max_topic_name_chars} allowed)",
                        0,
                    )
                if not (0 <= read <= limits.max_queue_nums and 0 <= write <= limits.max_queue_nums):
                    return (
                        f"topic {name}: {read} read / "
                        f"{write} write queues (0 to {limits.max_queue_nums} "
                        "allowed)"
                    ), 0
                new_entries += name not in known
        if len(known) + new_entries > limits.max_topics_per_broker:
            return (
                f"{broker_name} would publish {len(known) + new_entries} topics, over the "
                f"limit of {limits.max_topics_per_broker} (max_topics_per_broker)"
            ), 0
        return None, new_entries

    def _capacity(self, cluster: str, broker_addr: str) -> str | None:
        if broker_addr in self._live:
            return None  # re-registration, or a move: no new address
        if len(self._live) >= self.limits.max_brokers:
            return f"{len(self._live)} brokers registered, the limit (max_brokers)"
        in_cluster = sum(1 for live in self._live.values() if live.cluster == cluster)
        if in_cluster >= self.limits.max_brokers_per_cluster:
            return (
                f"cluster {cluster} has {in_cluster} brokers, the limit "
                f"(max_brokers_per_cluster={self.limits.max_brokers_per_cluster})"
            )
        return None

    def _entries_room(self, new_entries: int) -> str | None:
        total = self._queue_data_count + self._reserved + new_entries
        if total > self.limits.max_queue_datas:
            return (
                f"{total} topic routes would be held, over the limit of "
                f"{self.limits.max_queue_datas} (max_queue_datas)"
            )
        return None

    def _join(
        self,
        *,
        cluster: str,
        broker_name: str,
        broker_addr: str,
        broker_id: int,
        zone_name: str | None,
        enable_acting_master: bool,
    ) -> tuple[LiveBroker | None, RegisterResult]:
        """Put the address into its group's slot; the caller records the LiveBroker."""
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
        master_addr = ha_addr = None
        if broker_id != MASTER_ID:
            master = self._live.get(addrs.get(MASTER_ID, ""))
            if master is not None:
                master_addr, ha_addr = master.broker_addr, master.ha_server_addr
        result = RegisterResult(
            master_addr=master_addr, ha_server_addr=ha_addr, displaced_addr=displaced
        )
        return previous, result

    def _apply_steps(
        self, live: LiveBroker, configs: Sequence[TopicQueues], reserved: int, *, fresh: bool
    ) -> Steps[None]:
        """Apply a master's configs in slices while its registration is the current one."""
        self._reserved += reserved
        try:
            for start in range(0, len(configs), STEP_ITEMS):
                if start:
                    yield
                if self._live.get(live.broker_addr) is not live:
                    return  # superseded or removed: the newer registration applies its own
                added = self._apply_topic_configs(
                    live.broker_name, configs[start : start + STEP_ITEMS], fresh=fresh
                )
                taken = min(added, reserved)
                self._reserved -= taken
                reserved -= taken
            if self._live.get(live.broker_addr) is live:
                self._live[live.broker_addr] = attrs.evolve(live, applied_version=live.data_version)
        finally:
            self._reserved -= reserved

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
        self, broker_name: str, configs: Iterable[TopicQueues], *, fresh: bool
    ) -> int:
        """Set the group's queues of each topic; return how many entries are new.

        Equal tuples are shared (most topics of a broker look alike), so 100,000 topics
        cost 100,000 dict slots, not 100,000 objects.
        """
        shared: dict[_Queues, _Queues] = {}
        known = self._group_topics.setdefault(broker_name, set())
        added = 0
        for topic, *numbers in configs:
            by_broker = self._topics.setdefault(topic, {})
            if fresh or broker_name not in by_broker:
                read, write, perm, sys_flag = numbers
                queues = (read, write, perm, sys_flag)
                queues = shared.setdefault(queues, queues)
                if broker_name not in by_broker:
                    added += 1
                    known.add(topic)
                by_broker[broker_name] = queues
        self._queue_data_count += added
        return added

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
        for topic in list(self._group_topics.get(live.broker_name, ())):
            self._drop_queue_data(topic, live.broker_name)

    def _drop_queue_data(self, topic: str, broker_name: str) -> bool:
        by_broker = self._topics[topic]
        if by_broker.pop(broker_name, None) is None:
            return False
        self._queue_data_count -= 1
        known = self._group_topics[broker_name]
        known.discard(topic)
        if not known:
            del self._group_topics[broker_name]
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
            for name in list(self._topics[topic]):
                self._drop_queue_data(topic, name)
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
        changed: dict[_Queues, _Queues] = {}  # keeps equal tuples shared
        topics = self._group_topics.get(broker_name, ())
        for topic in topics:
            by_broker = self._topics[topic]
            queues = by_broker[broker_name]
            new = changed.get(queues)
            if new is None:
                read, write, perm, sys_flag = queues
                new = changed[queues] = (read, write, change(perm), sys_flag)
            by_broker[broker_name] = new
        return len(topics)

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
            queue_datas=[_queue_data(name, by_broker[name]) for name in names],
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
        found: set[str] = set()
        for name in self._cluster_members(cluster):
            found.update(self._group_topics.get(name, ()))
        return sorted(found)

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
        index: dict[str, set[str]] = {}
        for topic, by_broker in self._topics.items():
            assert by_broker, topic
            for name in by_broker:
                assert name in self._groups, (topic, name)
                index.setdefault(name, set()).add(topic)
        assert index == self._group_topics, "group topic index out of date"
        assert self._queue_data_count == sum(len(t) for t in index.values())
        assert self._reserved >= 0, self._reserved
