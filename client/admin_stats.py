"""Admin calls for broker statistics and settings (mqadmin statsAll, brokerConsumeStats,
producerConnection, getBrokerConfig, updateBrokerConfig, queryTopicConsumeByWho).

Rules:
- Codes and bodies as RocketMQ's: VIEW_BROKER_STATS_DATA (315) answers BrokerStatsData,
  GET_BROKER_CONSUME_STATS (317) ConsumeStatsList, GET_PRODUCER_CONNECTION_LIST (204)
  ProducerConnection, GET_BROKER_CONFIG (26) ``key=value`` lines; UPDATE_BROKER_CONFIG (25)
  takes such lines; QUERY_TOPIC_CONSUME_BY_WHO (300) answers GroupList. ConsumeStats
  entries come in our list form (README's deviation).
- Values are frozen; a malformed body is ``MalformedBody``, an error answer the
  ``ServerError`` its code maps to (``AdminSession._broker_call``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from client.admin_session import AdminSession, read_address
from client.admin_values import _int_of, _json_body
from protocol.bodies import ProducerConnection
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import MalformedBody, RocketError
from protocol.route import BrokerData

#: BrokerStatsManager's item names (statsAll reads the first and the third).
TOPIC_PUT_NUMS = "TOPIC_PUT_NUMS"
TOPIC_PUT_SIZE = "TOPIC_PUT_SIZE"
GROUP_GET_NUMS = "GROUP_GET_NUMS"
GROUP_GET_SIZE = "GROUP_GET_SIZE"
BROKER_PUT_NUMS = "BROKER_PUT_NUMS"
BROKER_GET_NUMS = "BROKER_GET_NUMS"


@attrs.frozen(kw_only=True)
class StatsWindow:
    """BrokerStatsItem: growth over one window, per second, and per call."""

    sum: int
    tps: float
    avgpt: float


@attrs.frozen(kw_only=True)
class BrokerStatsData:
    minute: StatsWindow
    hour: StatsWindow
    day: StatsWindow

    @property
    def sum_24h(self) -> int:
        """mqadmin statsAll's compute24HourSum: the day's sum, else the hour's, else the
        minute's (a young broker's longer windows are still empty)."""
        for window in (self.day, self.hour, self.minute):
            if window.sum:
                return window.sum
        return 0


@attrs.frozen(kw_only=True)
class QueueConsume:
    """One queue of a ConsumeStats (OffsetWrapper): where the broker and the group are."""

    topic: str
    broker_name: str
    queue_id: int
    broker_offset: int
    consumer_offset: int
    last_timestamp_ms: int

    @property
    def diff(self) -> int:
        return self.broker_offset - self.consumer_offset


@attrs.frozen(kw_only=True)
class TopicConsumeStats:
    """One ConsumeStats of a group on a topic of one broker."""

    topic: str
    consume_tps: float
    diff: int
    queues: tuple[QueueConsume, ...] = ()


@attrs.frozen(kw_only=True)
class BrokerConsumeStats:
    """GET_BROKER_CONSUME_STATS of one broker: every group's ConsumeStats."""

    broker_addr: str
    total_diff: int
    groups: Mapping[str, tuple[TopicConsumeStats, ...]]


def _window(obj: object, what: str) -> StatsWindow:
    if not isinstance(obj, dict):
        raise MalformedBody(f"{what}: expected an object")
    tps, avgpt = obj.get("tps", 0.0), obj.get("avgpt", 0.0)
    if not isinstance(tps, int | float) or not isinstance(avgpt, int | float):
        raise MalformedBody(f"{what}: tps and avgpt must be numbers")
    return StatsWindow(sum=_int_of(obj, "sum", what), tps=float(tps), avgpt=float(avgpt))


def _consume_stats(obj: object, what: str) -> TopicConsumeStats:
    if not isinstance(obj, dict) or not isinstance(obj.get("offsetTable") or [], list):
        raise MalformedBody(f"{what}: ConsumeStats must be an object with an offsetTable list")
    queues = []
    for entry in obj.get("offsetTable") or []:
        mq = entry.get("messageQueue") if isinstance(entry, dict) else None
        if not isinstance(mq, dict):
            raise MalformedBody(f"{what}: offsetTable entries need a messageQueue")
        queues.append(
            QueueConsume(
                topic=str(mq.get("topic")),
                broker_name=str(mq.get("brokerName", "")),
                queue_id=_int_of(mq, "queueId", what),
                broker_offset=_int_of(entry, "brokerOffset", what),
                consumer_offset=_int_of(entry, "consumerOffset", what),
                last_timestamp_ms=_int_of(entry, "lastTimestamp", what),
            )
        )
    tps = obj.get("consumeTps") or 0.0
    if not isinstance(tps, int | float):
        raise MalformedBody(f"{what}: consumeTps must be a number")
    return TopicConsumeStats(
        topic=",".join(sorted({q.topic for q in queues})),
        consume_tps=float(tps),
        diff=sum(q.diff for q in queues),
        queues=tuple(sorted(queues, key=lambda q: (q.topic, q.queue_id))),
    )


class StatsAdmin(AdminSession):
    """The statistics and settings commands of ``Admin`` (which inherits them)."""

    async def view_broker_stats(self, addr: str, name: str, key: str) -> BrokerStatsData:
        """VIEW_BROKER_STATS_DATA: one stats item's minute, hour and day windows."""
        request = RemotingCommand.request(
            RequestCode.VIEW_BROKER_STATS_DATA, {"statsName": name, "statsKey": key}
        )
        body = _json_body((await self._broker_call(addr, request)).body, "broker stats")
        return BrokerStatsData(
            minute=_window(body.get("statsMinute"), "statsMinute"),
            hour=_window(body.get("statsHour"), "statsHour"),
            day=_window(body.get("statsDay"), "statsDay"),
        )

    async def broker_consume_stats(
        self, addr: str, *, is_order: bool = False
    ) -> BrokerConsumeStats:
        """GET_BROKER_CONSUME_STATS: every subscription group's progress on one broker."""
        request = RemotingCommand.request(
            RequestCode.GET_BROKER_CONSUME_STATS, {"isOrder": "true" if is_order else "false"}
        )
        body = _json_body((await self._broker_call(addr, request)).body, "broker consume stats")
        listing = body.get("consumeStatsList") or []
        if not isinstance(listing, list):
            raise MalformedBody("broker consume stats: consumeStatsList must be a list")
        groups: dict[str, tuple[TopicConsumeStats, ...]] = {}
        for entry in listing:
            if not isinstance(entry, dict):
                raise MalformedBody("broker consume stats: entries must be objects")
            for group, stats in entry.items():
                if not isinstance(stats, list):
                    raise MalformedBody(f"broker consume stats: {group} must map to a list")
                groups[str(group)] = tuple(
                    _consume_stats(s, f"consume stats of {group}") for s in stats
                )
        return BrokerConsumeStats(
            broker_addr=str(body.get("brokerAddr") or addr),
            total_diff=_int_of(body, "totalDiff", "broker consume stats"),
            groups=groups,
        )

    async def cluster_groups(self, cluster: str | None = None) -> list[BrokerData]:
        """The broker groups of ``cluster`` (None: of every cluster), by name."""
        return await self._cluster_groups(cluster)

    async def consumed_by(self, addr: str, topic: str) -> list[str]:
        """QUERY_TOPIC_CONSUME_BY_WHO: the groups one broker knows to consume ``topic``."""
        request = RemotingCommand.request(RequestCode.QUERY_TOPIC_CONSUME_BY_WHO, {"topic": topic})
        body = _json_body((await self._broker_call(addr, request)).body, "GroupList")
        groups = body.get("groupList") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise MalformedBody("GroupList: groupList must be a list of names")
        return sorted(groups)

    async def masters_of(self, cluster: str) -> list[str]:
        """Every master address of ``cluster`` (``AdminError`` when it has none)."""
        return await self._masters(cluster)

    async def producer_connection(self, group: str) -> ProducerConnection | None:
        """The group's live producers as every reachable master knows them (merged); None
        when no broker has one online."""
        addrs = [a for a in map(read_address, await self._cluster_groups(None)) if a]
        request = RemotingCommand.request(
            RequestCode.GET_PRODUCER_CONNECTION_LIST, {"producerGroup": group}
        )
        ok = (ResponseCode.SUCCESS, ResponseCode.SYSTEM_ERROR)
        results = await self._gather(addrs, lambda a: self._broker_call(a, request, ok=ok))
        found = {
            c.client_id: c
            for r in results
            if not isinstance(r, RocketError) and r.code == ResponseCode.SUCCESS
            for c in ProducerConnection.from_bytes(r.body).connection_set
        }
        if not found:
            return None
        return ProducerConnection(connection_set=tuple(found[c] for c in sorted(found)))

    async def broker_config(self, addr: str) -> dict[str, str]:
        """GET_BROKER_CONFIG: every setting of one broker, as ``key → value``."""
        body = (
            await self._broker_call(addr, RemotingCommand.request(RequestCode.GET_BROKER_CONFIG))
        ).body
        out = {}
        for line in body.decode("utf-8", "replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                out[key.strip()] = value.strip()
        return out

    async def update_broker_config(self, addr: str, values: Mapping[str, str]) -> None:
        """UPDATE_BROKER_CONFIG: change settings of one running broker."""
        body = "".join(f"{k}={v}\n" for k, v in values.items()).encode()
        request = RemotingCommand.request(RequestCode.UPDATE_BROKER_CONFIG, body=body)
        await self._broker_call(addr, request)
