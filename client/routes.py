"""Topic routes as a client sees them, and latency-based broker avoidance.

Rules (reference/rocketmq-wire.md §4.2–§4.4):
- A route is fetched from the first NameServer that answers and cached; every cached route
  is refreshed every ``refresh_interval_s`` (30 s) and at once after any failure that may
  mean it changed (``invalidate``), so a failover is seen in one round trip, not 30 s.
- Publish queues: writable QueueData whose group has a master; subscribe queues: readable.
- Listeners (``add_listener``) hear of every successful refresh with the route it
  replaces, so a consumer can rebalance as soon as a topic's queues or brokers change
  instead of on its next timer.
- ``FaultStrategy`` is RocketMQ's MQFaultStrategy table: a broker whose last send took
  long, or failed, is avoided for a while. Pure: time comes in as ``now_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import attrs
import trio

from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import NetworkError, RemotingTimeout, RocketError, TopicNotExist
from protocol.headers import GetRouteInfoRequestHeader
from protocol.route import (
    MessageQueue,
    TopicRouteData,
    master_address,
    publish_queues,
    subscribe_queues,
)
from protocol.rpc import RemotingClient, check_success
from protocol.tasks import OneLoadPerKey

log = logging.getLogger(__name__)

#: (latency threshold ms, isolation s): MQFaultStrategy's latencyMax / notAvailableDuration.
LATENCY_TABLE: tuple[tuple[float, float], ...] = (
    (50, 0),
    (100, 0),
    (550, 2),
    (1800, 5),
    (3000, 6),
    (5000, 10),
    (15000, 30),
)
#: A failed send isolates its broker this long.
FAILURE_ISOLATION_S = 30.0
#: Sends faster than this isolate nobody (the table's first threshold with an isolation).
_ISOLATING_MS = min(threshold for threshold, isolate_s in LATENCY_TABLE if isolate_s > 0)


@attrs.define
class FaultStrategy:
    """Which brokers to avoid, from the latency and outcome of recent sends."""

    _available_at_s: dict[str, float] = attrs.field(factory=dict)

    def record(self, broker_name: str, latency_ms: float, *, failed: bool, now_s: float) -> None:
        if not failed and latency_ms < _ISOLATING_MS:  # every send that went well, at once
            if self._available_at_s:
                self._available_at_s.pop(broker_name, None)
            return
        if failed:
            isolation = FAILURE_ISOLATION_S
        else:
            isolation = 0.0
            for threshold_ms, isolate_s in reversed(LATENCY_TABLE):
                if latency_ms >= threshold_ms:
                    isolation = isolate_s
                    break
        if isolation > 0:
            self._available_at_s[broker_name] = now_s + isolation
        else:
            self._available_at_s.pop(broker_name, None)

    def is_available(self, broker_name: str, now_s: float) -> bool:
        return self._available_at_s.get(broker_name, 0.0) <= now_s


@attrs.frozen(kw_only=True)
class TopicInfo:
    """A route plus the queue lists derived from it."""

    topic: str
    route: TopicRouteData
    publish: tuple[MessageQueue, ...]
    subscribe: tuple[MessageQueue, ...]

    def master_of(self, broker_name: str) -> str | None:
        for data in self.route.broker_datas:
            if data.broker_name == broker_name:
                return master_address(data)
        return None

    def addresses_of(self, broker_name: str) -> dict[int, str]:
        for data in self.route.broker_datas:
            if data.broker_name == broker_name:
                return dict(data.broker_addrs)
        return {}

    def all_addresses(self) -> list[str]:
        return sorted({a for d in self.route.broker_datas for a in d.broker_addrs.values()})

    def replicas_of(self, broker_name: str) -> list[tuple[int, str]]:
        """The group's (broker id, address) pairs, master (id 0) first, then slaves by id."""
        return sorted(self.addresses_of(broker_name).items())

    def layout(self) -> tuple[frozenset[MessageQueue], frozenset[MessageQueue], frozenset[object]]:
        """What a client acts on: subscribe and publish queues, and who serves each group.

        Two routes with equal layouts differ at most in ordering or fields clients ignore.
        """
        brokers = frozenset(
            (d.broker_name, frozenset(d.broker_addrs.items())) for d in self.route.broker_datas
        )
        return frozenset(self.subscribe), frozenset(self.publish), brokers


#: Called after each successful refresh with the route it replaces (None: first fetch).
RouteListener = Callable[[TopicInfo | None, TopicInfo], None]


class RouteCache:
    """Routes fetched from NameServers, shared by a client's producers and consumers."""

    def __init__(
        self,
        client: RemotingClient,
        namesrv: Sequence[str],
        *,
        request_timeout_s: float = 3.0,
        refresh_interval_s: float = 30.0,
    ) -> None:
        if not namesrv:
            raise ValueError("at least one NameServer address is needed")
        self._client = client
        self._namesrv = list(namesrv)
        self._timeout_s = request_timeout_s
        self.refresh_interval_s = refresh_interval_s
        self._topics: dict[str, TopicInfo] = {}
        #: The last route fetched per topic, kept through ``invalidate`` (listeners compare).
        self._last: dict[str, TopicInfo] = {}
        self._fetching: OneLoadPerKey[str] = OneLoadPerKey()
        self._listeners: list[RouteListener] = []

    def add_listener(self, listener: RouteListener) -> None:
        """Call ``listener(previous, info)`` after every successful refresh.

        ``previous`` is the route fetched before (None the first time), even when it was
        invalidated since. Listeners run inside ``refresh``: they must not block or raise.
        """
        self._listeners.append(listener)

    async def get(self, topic: str) -> TopicInfo:
        """The cached route, fetched if unknown; raises TopicNotExist / NetworkError."""
        info = self._topics.get(topic)
        if info is not None:
            return info
        return await self.refresh(topic)

    def cached(self, topic: str) -> TopicInfo | None:
        return self._topics.get(topic)

    def invalidate(self, topic: str) -> None:
        """Forget the route so the next ``get`` asks a NameServer again."""
        self._topics.pop(topic, None)

    async def refresh(self, topic: str) -> TopicInfo:
        """Ask the NameServers now (one fetch per topic at a time; others wait for it and
        take its route, or fetch in turn when it failed or was invalidated meanwhile)."""
        return await self._fetching.load(
            topic, lambda: self._topics.get(topic), lambda: self._fetch_and_keep(topic)
        )

    async def _fetch_and_keep(self, topic: str) -> TopicInfo:
        route = await self._fetch(topic)
        info = TopicInfo(
            topic=topic,
            route=route,
            publish=tuple(publish_queues(topic, route)),
            subscribe=tuple(subscribe_queues(topic, route)),
        )
        self._topics[topic] = info
        previous = self._last.get(topic)
        self._last[topic] = info
        for listener in list(self._listeners):
            listener(previous, info)
        return info

    async def _fetch(self, topic: str) -> TopicRouteData:
        header = GetRouteInfoRequestHeader(topic=topic, accept_standard_json_only=True)
        request = RemotingCommand.request(
            RequestCode.GET_ROUTEINFO_BY_TOPIC, header.to_ext_fields()
        )
        last: RocketError | None = None
        for addr in self._namesrv:
            try:
                response = await self._client.call(addr, request, timeout_s=self._timeout_s)
                return TopicRouteData.from_bytes(check_success(response).body)
            except TopicNotExist:
                raise
            except (NetworkError, RemotingTimeout) as exc:
                last = exc
                log.debug("route of %s from %s failed: %s", topic, addr, exc)
        assert last is not None
        raise last

    async def run_refresh_loop(self) -> None:
        """Refresh every cached route every ``refresh_interval_s``; errors keep the old one."""
        while True:
            await trio.sleep(self.refresh_interval_s)
            for topic in list(self._topics):
                try:
                    await self.refresh(topic)
                except TopicNotExist:
                    self._topics.pop(topic, None)
                except RocketError as exc:
                    log.debug("route refresh of %s failed: %s", topic, exc)

    def broker_addresses(self) -> list[str]:
        """Every broker address of every cached route (heartbeat targets)."""
        return sorted({a for info in self._topics.values() for a in info.all_addresses()})
