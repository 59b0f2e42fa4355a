"""A NameServer's Prometheus metrics: its route table at scrape time, and its requests.

Rules:
- RocketMQ 5's NameServer exports no metrics of its own; these follow its naming
  (``rocketmq_`` prefix, ``cluster`` / ``broker_set`` labels) and the controller's request
  series (``rocketmq_request_total`` / ``rocketmq_request_latency``, ``protocol/metrics.py``):
  ``rocketmq_namesrv_topic_number`` (topics with a route), ``rocketmq_namesrv_broker_number
  {cluster, broker_set}`` (registered broker addresses) and
  ``rocketmq_namesrv_broker_set_master{cluster, broker_set}`` (1 while id 0 is registered).
- Route series are read from the registry when scraped (a collector on the Trio thread);
  nothing is counted on the request path but the request counter itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from namesrv.registry import RouteRegistry
from protocol.metrics import RequestMetrics, new_registry
from protocol.route import MASTER_ID


class _RouteCollector(Collector):
    def __init__(self, routes: RouteRegistry) -> None:
        self._routes = routes

    def describe(self) -> Iterator[Metric]:
        return iter(())  # read only when scraped, never at registration

    def collect(self) -> Iterator[Metric]:
        topics = GaugeMetricFamily(
            "rocketmq_namesrv_topic_number", "Topics with a route on this NameServer."
        )
        topics.add_metric([], float(len(self._routes.all_topics())))
        brokers = GaugeMetricFamily(
            "rocketmq_namesrv_broker_number",
            "Broker addresses registered, per broker set.",
            labels=["cluster", "broker_set"],
        )
        master = GaugeMetricFamily(
            "rocketmq_namesrv_broker_set_master",
            "1 while the broker set's master (id 0) is registered.",
            labels=["cluster", "broker_set"],
        )
        for name, group in self._routes.cluster_info().broker_addr_table.items():
            labels = [group.cluster, name]
            brokers.add_metric(labels, float(len(group.broker_addrs)))
            master.add_metric(labels, float(MASTER_ID in group.broker_addrs))
        yield from (topics, brokers, master)


class NameServerMetrics:
    """One NameServer's registry: its routes and its requests."""

    def __init__(self, routes: RouteRegistry, *, now_s: Callable[[], float]) -> None:
        self.registry: CollectorRegistry = new_registry()
        self.requests = RequestMetrics(self.registry, now_s)
        self.registry.register(_RouteCollector(routes))
