"""A controller node's Prometheus metrics: RocketMQ 5's controller series, plus the replicas.

Rules:
- RocketMQ 5's names (ControllerMetricsManager, with its ``rocketmq_`` prefix) and labels:
  ``rocketmq_controller_role{address, group, peer_id}`` (1 while this node is the leader
  serving requests, else 0), ``rocketmq_active_broker_num{cluster, broker_set}`` (brokers
  this node hears heartbeats from), ``rocketmq_request_total`` / ``rocketmq_request_latency``
  (``protocol/metrics.py``), ``rocketmq_election_total{election_result}`` with RocketMQ's
  results: ``new_master_elected``, ``keep_current_master``, ``no_master_elected``.
- Beyond RocketMQ, per broker set (``cluster``, ``broker_set``) from the replicated state:
  ``rocketmq_broker_set_master_id`` (-1: none), ``rocketmq_broker_set_master_epoch``,
  ``rocketmq_sync_state_set_size``, ``rocketmq_sync_state_set_epoch``,
  ``rocketmq_sync_state_set_member{broker_id}``; per broker from this node's liveness table:
  ``rocketmq_broker_alive{broker_id, address}`` (registered ids included, 0 when silent)
  and ``rocketmq_broker_max_offset{broker_id}`` (the CommitLog end its heartbeat reports);
  and ``rocketmq_failover_unavailable_seconds{cluster, broker_set}``, a histogram of the
  time from this node noticing a master's loss to it committing the next master.
- State and liveness series are computed on scrape (a collector) from immutable values
  (the applied ``ControllerState``, liveness entries), on the Trio thread that serves the
  scrape: nothing here runs in pysyncobj's thread.
- Elections are counted where they are decided: every node counts the elections it
  committed as leader (so the leader's counter moves; a new leader starts from 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from controller.liveness import BrokerLive
from controller.state import ControllerState
from protocol.metrics import RequestMetrics, new_registry

NEW_MASTER_ELECTED = "new_master_elected"
KEEP_CURRENT_MASTER = "keep_current_master"
NO_MASTER_ELECTED = "no_master_elected"
#: Failover windows: from 0.1 s to 2 min.
FAILOVER_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)

_SET = ["cluster", "broker_set"]


class _StateCollector(Collector):
    """Gauges read from the node's applied state and liveness table at scrape time."""

    def __init__(
        self,
        *,
        labels: Sequence[str],
        is_leader: Callable[[], bool],
        state: Callable[[], ControllerState],
        live: Callable[[], Iterable[BrokerLive]],
    ) -> None:
        self._labels = list(labels)
        self._is_leader = is_leader
        self._state = state
        self._live = live

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read only when scraped, never at registration

    def collect(self) -> Iterator[Metric]:
        role = GaugeMetricFamily(
            "rocketmq_controller_role",
            "1 while this node is the controller leader serving requests, else 0.",
            labels=["address", "group", "peer_id"],
        )
        role.add_metric(self._labels, 1.0 if self._is_leader() else 0.0)
        yield role
        yield from self._broker_sets(self._state(), list(self._live()))

    def _broker_sets(self, state: ControllerState, live: list[BrokerLive]) -> Iterator[Metric]:
        def family(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*_SET, *extra])

        active = family("rocketmq_active_broker_num", "Brokers this node hears heartbeats from.")
        master = family("rocketmq_broker_set_master_id", "The master's broker id (-1: none).")
        epoch = family("rocketmq_broker_set_master_epoch", "The broker set's master epoch.")
        size = family("rocketmq_sync_state_set_size", "Members of the SyncStateSet.")
        sss_epoch = family("rocketmq_sync_state_set_epoch", "The SyncStateSet's epoch.")
        member = family(
            "rocketmq_sync_state_set_member",
            "1 if the broker is in the SyncStateSet.",
            ["broker_id"],
        )
        alive = family(
            "rocketmq_broker_alive",
            "1 while this node hears the broker's heartbeats.",
            ["broker_id", "address"],
        )
        offset = family(
            "rocketmq_broker_max_offset",
            "The CommitLog end offset the broker's last heartbeat reported, in bytes.",
            ["broker_id"],
        )
        by_set: dict[tuple[str, str], dict[int, BrokerLive]] = {}
        for entry in live:
            key = (entry.key.cluster, entry.key.broker_name)
            by_set.setdefault(key, {})[entry.key.broker_id] = entry
        for name, group in sorted(state.groups.items()):
            labels = [group.cluster_name, name]
            heard = by_set.pop((group.cluster_name, name), {})
            master.add_metric(
                labels, float(-1 if group.master_broker_id is None else group.master_broker_id)
            )
            epoch.add_metric(labels, float(group.master_epoch))
            size.add_metric(labels, float(len(group.sync_state_set)))
            sss_epoch.add_metric(labels, float(group.sync_state_set_epoch))
            active.add_metric(labels, float(len(heard)))
            for broker_id, registered in sorted(group.brokers.items()):
                heard_from = heard.get(broker_id)
                address = heard_from.address if heard_from else registered.address
                member.add_metric(
                    [*labels, str(broker_id)], float(broker_id in group.sync_state_set)
                )
                alive.add_metric([*labels, str(broker_id), address], float(heard_from is not None))
                if heard_from is not None and heard_from.max_offset >= 0:
                    offset.add_metric([*labels, str(broker_id)], float(heard_from.max_offset))
        for (cluster, name), heard in sorted(by_set.items()):  # alive, not registered yet
            active.add_metric([cluster, name], float(len(heard)))
        yield from (active, master, epoch, size, sss_epoch, member, alive, offset)


class ControllerMetrics:
    """One controller node's registry and the counters its server moves."""

    def __init__(
        self, *, address: str, group: str, peer_id: str, now_s: Callable[[], float]
    ) -> None:
        self.registry: CollectorRegistry = new_registry()
        self._peer = [address, group, peer_id]
        self.requests = RequestMetrics(self.registry, now_s)
        self.elections = Counter(
            "rocketmq_election",
            "Elections this node committed as leader, by result.",
            ["election_result"],
            registry=self.registry,
        )
        self.failover = Histogram(
            "rocketmq_failover_unavailable_seconds",
            "From a master's loss noticed to the next master committed, as this node saw it.",
            _SET,
            buckets=FAILOVER_BUCKETS_S,
            registry=self.registry,
        )
        #: broker set → when this node first noticed its master gone (cleared on election).
        self._master_lost_s: dict[str, float] = {}

    def watch(
        self,
        *,
        is_leader: Callable[[], bool],
        state: Callable[[], ControllerState],
        live: Callable[[], Iterable[BrokerLive]],
    ) -> None:
        """Register the scrape-time gauges over the node's state and liveness."""
        self.registry.register(
            _StateCollector(labels=self._peer, is_leader=is_leader, state=state, live=live)
        )

    def master_lost(self, broker_set: str, now_s: float) -> None:
        """The master of ``broker_set`` is gone (the first notice starts the window)."""
        self._master_lost_s.setdefault(broker_set, now_s)

    def elected(self, cluster: str, broker_set: str, now_s: float) -> None:
        """A new master was committed: count it, and close the set's failover window."""
        self.elections.labels(NEW_MASTER_ELECTED).inc()
        lost_s = self._master_lost_s.pop(broker_set, None)
        if lost_s is not None:
            self.failover.labels(cluster, broker_set).observe(max(0.0, now_s - lost_s))

    def not_elected(self, result: str) -> None:
        """An election that kept the master or found nobody (``KEEP_CURRENT_MASTER``...)."""
        self.elections.labels(result).inc()
