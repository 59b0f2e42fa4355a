"""A broker's Prometheus metrics, computed on scrape from its state (no hot-path code).

Rules:
- One collector reads the broker when scraped, on the Trio thread that serves the scrape
  (``cli/metrics_http.py``): the send and pull paths change nothing for metrics beyond the
  counters of ``broker/stats.py`` (``on_put`` / ``on_get``, ``RpcLatency.record``).
- RocketMQ 5's names (BrokerMetricsConstant, ``rocketmq_`` prefix) and labels ``cluster``,
  ``node_type`` (``broker``), ``node_id`` (the broker name, as RocketMQ sets it), plus
  ``topic`` / ``consumer_group``: ``rocketmq_messages_in_total``,
  ``rocketmq_throughput_in_total`` (bytes), ``rocketmq_messages_out_total``,
  ``rocketmq_throughput_out_total``, ``rocketmq_topic_number``,
  ``rocketmq_consumer_group_number``, ``rocketmq_storage_size`` (CommitLog bytes kept),
  ``rocketmq_consumer_lag_messages`` (committed offsets behind the queues' ends),
  ``rocketmq_rpc_latency`` (histogram in ms, labels ``protocol_type`` ``remoting``,
  ``request_code``, ``response_code``; counted by ``broker/stats.py``'s ``RpcLatency``
  around every handler),
  ``rocketmq_consumer_lag_latency`` (ms since the oldest unconsumed message was stored),
  ``rocketmq_consumer_inflight_messages`` (pulled past the committed offsets: the pull
  path records each found pull's next offset),
  ``rocketmq_message_size`` (histogram of each put's average message size, RocketMQ's
  buckets 1 KiB .. 4 MiB).
- Beyond RocketMQ (labels ``cluster``, ``node_type``, ``node_id``, ``broker_id``):
  ``rocketmq_broker_role`` (1 master, 0 slave or fenced), ``rocketmq_broker_accepts_writes``,
  ``rocketmq_broker_lease_valid`` (controller mode only), ``rocketmq_broker_master_epoch``,
  and on a master, from its HA status: ``rocketmq_sync_state_set_size``,
  ``rocketmq_confirm_offset``, and per replica ``rocketmq_replica_lag_bytes{replica_id}``
  (master max offset minus the replica's ack) and ``rocketmq_replica_in_sync{replica_id}``.
- Only what exists is exported: a broker without a controller has no lease series, a
  slave no replica series; nothing is invented as 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from broker.agent import BrokerAgent
from broker.clock import Clock
from broker.config import BrokerConfig
from broker.groups import SubscriptionGroupManager
from broker.ha import HAMaster, HASlave
from broker.offsets import ConsumerOffsetManager
from broker.role import RoleState
from broker.stats import (
    MESSAGE_SIZE_BUCKETS_BYTES,
    RPC_LATENCY_BUCKETS_MS,
    BrokerStats,
    RpcLatency,
)
from broker.store.store import MessageStore
from broker.topics import TopicConfigManager
from protocol.metrics import new_registry

NODE_TYPE = "broker"


class BrokerForMetrics(Protocol):
    """What the collector reads of its broker (``Broker`` satisfies it structurally)."""

    @property
    def config(self) -> BrokerConfig: ...
    @property
    def role(self) -> RoleState: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def groups(self) -> SubscriptionGroupManager: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def stats(self) -> BrokerStats: ...
    @property
    def store(self) -> MessageStore: ...
    @property
    def agent(self) -> BrokerAgent | None: ...
    @property
    def ha_master(self) -> HAMaster | None: ...
    @property
    def ha_slave(self) -> HASlave | None: ...
    @property
    def accepts_writes(self) -> bool: ...
    @property
    def serving(self) -> bool: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def rpc_latency(self) -> RpcLatency: ...


class _BrokerCollector(Collector):
    def __init__(self, broker: BrokerForMetrics) -> None:
        self._broker = broker

    def _node(self) -> list[str]:
        config = self._broker.config
        return [config.cluster_name, NODE_TYPE, config.broker_name]

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read only when scraped, never at registration

    def collect(self) -> Iterator[Metric]:
        if not self._broker.serving:
            return  # the store is not open yet (or any more): nothing to read
        yield from self._traffic()
        yield self._rpc_latency()
        yield from self._metadata()
        yield from self._role()
        yield from self._replicas()

    def _traffic(self) -> Iterator[Metric]:
        node, labels = self._node(), ["cluster", "node_type", "node_id", "topic"]
        stats = self._broker.stats
        msgs_in = CounterMetricFamily(
            "rocketmq_messages_in", "Messages stored by sends, per topic.", labels=labels
        )
        bytes_in = CounterMetricFamily(
            "rocketmq_throughput_in", "Bytes stored by sends, per topic.", labels=labels
        )
        sizes = HistogramMetricFamily(
            "rocketmq_message_size",
            "Average message size of each put, in bytes.",
            labels=labels,
        )
        by_size = stats.message_sizes()
        for topic, (messages, size) in sorted(stats.topic_puts().items()):
            msgs_in.add_metric([*node, topic], float(messages))
            bytes_in.add_metric([*node, topic], float(size))
            if topic in by_size:
                counts, observed = by_size[topic]
                bounds = [*map(str, map(float, MESSAGE_SIZE_BUCKETS_BYTES)), "+Inf"]
                cumulative = map(float, itertools.accumulate(counts))
                sizes.add_metric(
                    [*node, topic],
                    buckets=list(zip(bounds, cumulative, strict=True)),
                    sum_value=float(observed),
                )
        out_labels = [*labels, "consumer_group"]
        msgs_out = CounterMetricFamily(
            "rocketmq_messages_out", "Messages handed to consumers.", labels=out_labels
        )
        bytes_out = CounterMetricFamily(
            "rocketmq_throughput_out", "Bytes handed to consumers.", labels=out_labels
        )
        for (topic, group), (messages, size) in sorted(stats.group_gets().items()):
            msgs_out.add_metric([*node, topic, group], float(messages))
            bytes_out.add_metric([*node, topic, group], float(size))
        yield from (msgs_in, bytes_in, sizes, msgs_out, bytes_out)

    def _rpc_latency(self) -> Metric:
        labels = ["cluster", "node_type", "node_id", "protocol_type", "request_code"]
        family = HistogramMetricFamily(
            "rocketmq_rpc_latency",
            "Time to answer a request, in milliseconds.",
            labels=[*labels, "response_code"],
        )
        bounds = [*map(str, RPC_LATENCY_BUCKETS_MS), "+Inf"]
        for (request, response), (counts, total_ms) in sorted(
            self._broker.rpc_latency.table().items()
        ):
            cumulative = map(float, itertools.accumulate(counts))
            family.add_metric(
                [*self._node(), "remoting", str(request), str(response)],
                buckets=list(zip(bounds, cumulative, strict=True)),
                sum_value=total_ms,
            )
        return family

    def _metadata(self) -> Iterator[Metric]:
        broker, node = self._broker, self._node()
        labels = ["cluster", "node_type", "node_id"]
        topics = GaugeMetricFamily("rocketmq_topic_number", "Topics.", labels=labels)
        topics.add_metric(node, float(len(broker.topics.topics())))
        groups = GaugeMetricFamily(
            "rocketmq_consumer_group_number", "Subscription groups.", labels=labels
        )
        groups.add_metric(node, float(len(broker.groups.groups())))
        store_stats = broker.store.statistics()
        storage = GaugeMetricFamily(
            "rocketmq_storage_size", "CommitLog bytes kept on disk.", labels=labels
        )
        storage.add_metric(
            node, float(store_stats.max_physical_offset - store_stats.min_physical_offset)
        )
        yield from (topics, groups, storage)
        yield from self._consumers()

    def _consumers(self) -> Iterator[Metric]:
        """Lag, lag latency and in-flight messages of each group on each topic."""
        broker = self._broker
        node, labels = self._node(), ["cluster", "node_type", "node_id"]
        lag = GaugeMetricFamily(
            "rocketmq_consumer_lag_messages",
            "Messages past the group's committed offsets.",
            labels=[*labels, "topic", "consumer_group"],
        )
        latency = GaugeMetricFamily(
            "rocketmq_consumer_lag_latency",
            "Milliseconds since the oldest message past the group's committed offsets was "
            "stored (0 when caught up).",
            labels=[*labels, "topic", "consumer_group"],
        )
        inflight = GaugeMetricFamily(
            "rocketmq_consumer_inflight_messages",
            "Messages pulled by the group past its committed offsets.",
            labels=[*labels, "topic", "consumer_group"],
        )
        store, stats, now_ms = broker.store, broker.stats, broker.clock.wall_ms()
        for topic, by_group in sorted(_offsets_by_topic(broker.offsets).items()):
            for group, committed in sorted(by_group.items()):
                behind = sum(
                    max(0, store.max_offset(topic, queue_id) - offset)
                    for queue_id, offset in committed.items()
                )
                lag.add_metric([*node, topic, group], float(behind))
                pulled = stats.pull_offsets(topic, group)
                inflight.add_metric(
                    [*node, topic, group],
                    float(sum(max(0, pulled.get(q, o) - o) for q, o in committed.items())),
                )
                oldest = self._oldest_unconsumed_ms(topic, committed)
                latency.add_metric(
                    [*node, topic, group],
                    float(max(0, now_ms - oldest)) if oldest is not None else 0.0,
                )
        yield from (lag, latency, inflight)

    def _oldest_unconsumed_ms(self, topic: str, committed: dict[int, int]) -> int | None:
        """Store time of the oldest message past the group's committed offsets (None: the
        group is caught up, or those messages are gone)."""
        store, oldest = self._broker.store, None
        for queue_id, offset in committed.items():
            if offset < store.max_offset(topic, queue_id):
                at = store.store_time_at(topic, queue_id, offset)
                if at is not None and (oldest is None or at < oldest):
                    oldest = at
        return oldest

    def _role(self) -> Iterator[Metric]:
        broker = self._broker
        role = broker.role
        labels = ["cluster", "node_type", "node_id", "broker_id"]
        node = [*self._node(), str(_broker_id(role))]
        master = GaugeMetricFamily(
            "rocketmq_broker_role", "1 while this broker is the master, else 0.", labels=labels
        )
        master.add_metric(node, float(role.is_master and not role.fenced))
        writes = GaugeMetricFamily(
            "rocketmq_broker_accepts_writes", "1 while sends are acknowledged.", labels=labels
        )
        writes.add_metric(node, float(broker.accepts_writes))
        yield from (master, writes)
        agent = broker.agent
        if agent is not None:
            lease = GaugeMetricFamily(
                "rocketmq_broker_lease_valid",
                "Controller mode: 1 while the controller leader confirmed this broker recently.",
                labels=labels,
            )
            lease.add_metric(node, float(agent.lease_valid()))
            yield lease
        epoch = _epoch(broker)
        if epoch is not None:
            family = GaugeMetricFamily(
                "rocketmq_broker_master_epoch",
                "The master epoch this broker follows.",
                labels=labels,
            )
            family.add_metric(node, float(epoch))
            yield family

    def _replicas(self) -> Iterator[Metric]:
        master = self._broker.ha_master
        if master is None:
            return
        status = master.status()
        labels = ["cluster", "node_type", "node_id", "broker_id"]
        node = [*self._node(), str(_broker_id(self._broker.role))]
        size = GaugeMetricFamily(
            "rocketmq_sync_state_set_size", "Members of this master's SyncStateSet.", labels=labels
        )
        size.add_metric(node, float(len(status.sync_state_set)))
        confirm = GaugeMetricFamily(
            "rocketmq_confirm_offset", "The SyncStateSet's confirm offset.", labels=labels
        )
        confirm.add_metric(node, float(status.confirm_offset))
        lag = GaugeMetricFamily(
            "rocketmq_replica_lag_bytes",
            "CommitLog bytes a replica has not acknowledged yet.",
            labels=[*labels, "replica_id"],
        )
        in_sync = GaugeMetricFamily(
            "rocketmq_replica_in_sync",
            "1 while the replica is in the SyncStateSet.",
            labels=[*labels, "replica_id"],
        )
        for slave in status.slaves:
            lag.add_metric([*node, str(slave.broker_id)], float(slave.diff_bytes))
            in_sync.add_metric([*node, str(slave.broker_id)], float(slave.in_sync))
        yield from (size, confirm, lag, in_sync)


def _broker_id(role: RoleState) -> int:
    return role.controller_id if role.controller_id is not None else role.broker_id


def _epoch(broker: BrokerForMetrics) -> int | None:
    if broker.ha_master is not None:
        return broker.ha_master.status().epoch
    if broker.ha_slave is not None:
        return broker.ha_slave.status().last_epoch
    return None


def _offsets_by_topic(offsets: ConsumerOffsetManager) -> dict[str, dict[str, dict[int, int]]]:
    """topic → group → queue id → committed offset."""
    out: dict[str, dict[str, dict[int, int]]] = {}
    for key, committed in offsets.offset_table().items():
        topic, _, group = key.partition("@")
        out.setdefault(topic, {})[group] = committed
    return out


def broker_registry(broker: BrokerForMetrics) -> CollectorRegistry:
    """A registry whose one collector reads ``broker`` when scraped."""
    registry = new_registry()
    registry.register(_BrokerCollector(broker))
    return registry
