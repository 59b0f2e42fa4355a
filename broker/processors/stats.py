"""Statistics and settings for rocketmq-exporter and mqadmin: runtime info, 315, 317, config.

Rules (AdminBrokerProcessor#prepareRuntimeInfo, #ViewBrokerStatsData,
#fetchAllConsumeStatsInBroker, #getBrokerConfig, #updateBrokerConfig; StoreStatsService):
- GET_BROKER_RUNTIME_INFO (28) answers RocketMQ 5's whole key set with its formats, which
  rocketmq-exporter parses (``putTps`` "10s 60s 600s", ``commitLogDirCapacity``
  "Total : 9.8 GiB, Free : 1.2 GiB.", ``remainHowManyDataToFlush`` "512 B",
  ``scheduleMessageOffset_N`` "offset,maxOffset", ...). What we do not measure is
  answered as RocketMQ answers an idle broker (thread pool queues 0, their capacities
  RocketMQ's defaults, ``putMessageDistributeTime`` "null", latencies "0.00"); README
  lists those keys. Our own keys (``brokerRole``, ``brokerId``, ``diskFull``,
  ``heldPulls``, ``controllerLeaseValid`` ...) come on top.
- Counting is ``broker/stats.py``'s: store-level puts are counted by the store (so
  ``putTps`` and ``msgPutTotal*`` follow every stored message); per-topic puts by
  ``Broker.store_put`` (sends, send-backs, delayed deliveries: every ``stats.on_put``)
  and per-group gets by the pull path (``stats.on_get`` for each pull that found messages).
- VIEW_BROKER_STATS_DATA (315): BrokerStatsData (``statsMinute`` / ``statsHour`` /
  ``statsDay``, each ``{"sum", "tps", "avgpt"}``) of one item; an unknown item is
  SYSTEM_ERROR "The stats <name> <key> not exist", as RocketMQ answers.
- GET_BROKER_CONSUME_STATS (317): ConsumeStatsList (``brokerAddr``, ``consumeStatsList``:
  one ``{group: [ConsumeStats...]}`` per subscription group, ``totalDiff``); ConsumeStats
  bodies use the same list-of-entries form as GET_CONSUME_STATS (README's deviation).
- GET_PRODUCER_CONNECTION_LIST (204): the group's producers; none online is SYSTEM_ERROR
  "the producer group[G] not exist", as RocketMQ.
- QUERY_TOPIC_CONSUME_BY_WHO (300): GroupList (``{"groupList": [...]}``) of the groups
  online with a subscription to the topic, and of those holding offsets of it.
- GET_BROKER_CONFIG (26) lists every setting as ``key=value`` lines (RocketMQ's keys);
  UPDATE_BROKER_CONFIG (25) takes such lines and applies those in ``RUNTIME_KEYS`` (the
  settings the broker reads at each use), validated by the config's own checks, without
  persisting them (a restart starts from the config file again). Any other key is refused
  with NO_PERMISSION naming it, and nothing is applied.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Protocol

from broker.agent import BrokerAgent
from broker.clients import ClientManager
from broker.clock import Clock
from broker.config import (
    BrokerConfig,
    ConfigError,
    config_from_mapping,
    config_properties,
    field_name,
)
from broker.groups import SubscriptionGroupManager
from broker.longpoll import PullHoldService
from broker.offsets import ConsumerOffsetManager
from broker.role import RoleState
from broker.schedule import ScheduleService
from broker.stats import (
    BROKER_GET_NUMS,
    DAY_S,
    GROUP_GET_NUMS,
    HOUR_S,
    MINUTE_S,
    STORE_PUT_NUMS,
    BrokerStats,
)
from broker.store.results import SCHEDULE_TOPIC
from broker.store.state import STORE_TS, STORE_TS_POS
from broker.store.store import MessageStore
from broker.timerstore import TimerService
from broker.topics import TopicConfigManager
from broker.transaction.service import TransactionService, transaction_stats
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.route import dumps_json
from protocol.rpc import Connection, Handler

_VERSION_DESC = "V5_3_3 (trio-rocketmq)"
#: MQVersion.CURRENT_VERSION of V5_3_3.
_VERSION = "479"
#: RocketMQ's BrokerConfig defaults for the thread pool queues we do not have.
_POOL_CAPACITIES = {
    "sendThreadPoolQueueCapacity": "10000",
    "pullThreadPoolQueueCapacity": "100000",
    "queryThreadPoolQueueCapacity": "20000",
    "EndTransactionThreadPoolQueueCapacity": "100000",
}
#: What we do not measure, answered as an idle RocketMQ broker answers it.
UNTRACKED_RUNTIME_KEYS = {
    "sendThreadPoolQueueSize": "0",
    "pullThreadPoolQueueSize": "0",
    "queryThreadPoolQueueSize": "0",
    "EndTransactionQueueSize": "0",
    "sendThreadPoolQueueHeadWaitTimeMills": "0",
    "pullThreadPoolQueueHeadWaitTimeMills": "0",
    "queryThreadPoolQueueHeadWaitTimeMills": "0",
    "pageCacheLockTimeMills": "0",
    "putMessageEntireTimeMax": "0",
    "getMessageEntireTimeMax": "0",
    "putMessageFailedTimes": "0",
    "putMessageDistributeTime": "null",
    "putLatency99": "0.00",
    "putLatency999": "0.00",
    "dispatchMaxBuffer": "0",
    "getMissTps": "0.0 0.0 0.0",
    "startAcceptSendRequestTimeStamp": "0",
    # TransientStorePool.availableBufferNums() when the pool is off: Integer.MAX_VALUE.
    "remainTransientStoreBufferNumbs": "2147483647",
}
#: Settings UPDATE_BROKER_CONFIG may change: the broker reads each one at every use.
RUNTIME_KEYS = frozenset(
    {
        "slave_timeout_s", "sync_flush_timeout_s", "min_in_sync_replicas",
        "auto_create_topic_enable", "auto_create_subscription_group", "slave_read_enable",
        "client_expiry_s", "request_timeout_s",
    }
)  # fmt: skip


class BrokerForStats(Protocol):
    """What ``StatsProcessor`` uses of its broker (``Broker`` satisfies it structurally)."""

    config: BrokerConfig

    @property
    def role(self) -> RoleState: ...
    @property
    def address(self) -> str: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def groups(self) -> SubscriptionGroupManager: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def clients(self) -> ClientManager: ...
    @property
    def pull_holds(self) -> PullHoldService: ...
    @property
    def schedule(self) -> ScheduleService: ...
    @property
    def transactions(self) -> TransactionService: ...
    @property
    def timers(self) -> TimerService: ...
    @property
    def store(self) -> MessageStore: ...
    @property
    def stats(self) -> BrokerStats: ...
    @property
    def agent(self) -> BrokerAgent | None: ...
    @property
    def accepts_writes(self) -> bool: ...


def human_bytes(n: int) -> str:
    """MixAll.humanReadableByteCount(n, false): ``512 B``, ``1.5 KiB``, ``9.8 GiB``."""
    if n < 1024:
        return f"{n} B"
    exp, value = 0, float(n)
    while value >= 1024 and exp < 6:
        value /= 1024
        exp += 1
    return f"{value:.1f} {'KMGTPE'[exp - 1]}iB"


def java_runtime(elapsed_ms: int) -> str:
    """StoreStatsService's ``runtime``: ``[ 0 days, 1 hours, 2 minutes, 3 seconds ]``."""
    s = max(0, elapsed_ms) // 1000
    return f"[ {s // 86400} days, {s % 86400 // 3600} hours, {s % 3600 // 60} minutes, {s % 60} seconds ]"


def _tps(value: float) -> str:
    return repr(float(value))


class BrokerForConsumeStats(Protocol):
    """What ``consume_stats_json`` reads (GET_CONSUME_STATS shares it)."""

    @property
    def config(self) -> BrokerConfig: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def store(self) -> MessageStore: ...


def consume_stats_json(
    broker: BrokerForConsumeStats, group: str, topic: str, *, consume_tps: float
) -> dict[str, Any] | None:
    """One ConsumeStats of ``group`` on ``topic`` (None when the topic is unknown)."""
    config = broker.topics.get(topic)
    if config is None:
        return None
    store, name = broker.store, broker.config.broker_name
    committed = broker.offsets.offsets(topic, group)
    entries = []
    for queue_id in range(config.read_queue_nums):
        consumer_offset = committed.get(queue_id, 0)
        last = (
            store.store_time_at(topic, queue_id, consumer_offset - 1) if consumer_offset else None
        )
        entries.append(
            {
                "messageQueue": {"brokerName": name, "queueId": queue_id, "topic": topic},
                "brokerOffset": store.max_offset(topic, queue_id),
                "consumerOffset": consumer_offset,
                "pullOffset": consumer_offset,
                "lastTimestamp": last or 0,
            }
        )
    return {"consumeTps": consume_tps, "offsetTable": entries}


class StatsProcessor:
    def __init__(self, broker: BrokerForStats, *, clock: Clock) -> None:
        self.broker = broker
        self._clock = clock
        self._started_ms = clock.wall_ms()

    def handlers(self) -> dict[int, Handler]:
        return {
            RequestCode.GET_BROKER_RUNTIME_INFO: self.runtime_info,
            RequestCode.VIEW_BROKER_STATS_DATA: self.view_stats,
            RequestCode.GET_BROKER_CONSUME_STATS: self.broker_consume_stats,
            RequestCode.GET_PRODUCER_CONNECTION_LIST: self.producer_connections,
            RequestCode.QUERY_TOPIC_CONSUME_BY_WHO: self.consumed_by,
            RequestCode.GET_BROKER_CONFIG: self.get_config,
            RequestCode.UPDATE_BROKER_CONFIG: self.update_config,
        }

    # --- runtime info ---------------------------------------------------------------------

    async def runtime_info(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(body=dumps_json({"table": self.runtime_table()}))

    def runtime_table(self) -> dict[str, str]:
        """The whole GET_BROKER_RUNTIME_INFO table."""
        broker, store = self.broker, self.broker.store
        st = store.statistics()
        stats, now_s = broker.stats, self._clock.now_s()
        put_yesterday, put_today = stats.morning_totals(STORE_PUT_NUMS)
        get_yesterday, get_today = stats.morning_totals(BROKER_GET_NUMS)
        gets = stats.totals()[BROKER_GET_NUMS, stats.cluster_name]

        def tps3(name: str) -> str:
            return " ".join(_tps(stats.tps(name, span, now_s)) for span in (10.0, 60.0, 600.0))

        get_tps = tps3(BROKER_GET_NUMS)
        table = {
            **UNTRACKED_RUNTIME_KEYS,
            **_POOL_CAPACITIES,
            "brokerVersionDesc": _VERSION_DESC,
            "brokerVersion": _VERSION,
            "bootTimestamp": str(self._started_ms),
            "runtime": java_runtime(self._clock.wall_ms() - self._started_ms),
            "putMessageTimesTotal": str(st.put_messages),
            "putMessageSizeTotal": str(st.put_bytes),
            "putMessageAverageSize": repr(st.put_bytes / max(1, st.put_messages)),
            "putTps": tps3(STORE_PUT_NUMS),
            "getFoundTps": get_tps,
            "getTotalTps": get_tps,
            "getTransferredTps": get_tps,
            "getTransferedTps": get_tps,  # RocketMQ 4's spelling, still read by some tools
            "msgPutTotalYesterdayMorning": str(put_yesterday),
            "msgPutTotalTodayMorning": str(put_today),
            "msgPutTotalTodayNow": str(st.put_messages),
            "msgGetTotalYesterdayMorning": str(get_yesterday),
            "msgGetTotalTodayMorning": str(get_today),
            "msgGetTotalTodayNow": str(gets[0]),
            "commitLogMinOffset": str(st.min_physical_offset),
            "commitLogMaxOffset": str(st.max_physical_offset),
            "dispatchBehindBytes": str(st.dispatch_lag_bytes),
            "remainHowManyDataToFlush": human_bytes(st.flush_lag_bytes),
            "earliestMessageTimeStamp": str(self._earliest_store_ms(st.min_physical_offset)),
            **self._disk(),
            **self._schedule_offsets(),
            # ours, beyond RocketMQ's table
            "brokerRole": broker.role.broker_role,
            "brokerActive": "true",
            "pid": str(os.getpid()),
            "flushedOffset": str(st.flushed_offset),
            "diskFull": "true" if st.disk_full else "false",
            "heldPulls": str(broker.pull_holds.held_pulls),
            "heldPullBytes": str(broker.pull_holds.reserved_bytes),
            "heldPullsRefused": str(broker.pull_holds.refused),
            "scheduleDelivered": str(broker.schedule.delivered),
            **transaction_stats(broker.transactions),
            **{key: str(value) for key, value in broker.timers.statistics().items()},
            "acceptsWrites": "true" if broker.accepts_writes else "false",
        }
        role = broker.role
        if role.controller_id is not None:
            table["brokerId"] = str(role.controller_id)
        if broker.agent is not None:
            table["controllerLeaseValid"] = "true" if broker.agent.lease_valid() else "false"
        return dict(sorted(table.items()))

    def _earliest_store_ms(self, min_offset: int) -> int:
        record = self.broker.store.read_record(min_offset)
        if record is None or len(record) < STORE_TS_POS + STORE_TS.size:
            return 0
        return int(STORE_TS.unpack_from(record, STORE_TS_POS)[0])

    def _disk(self) -> dict[str, str]:
        """commitLogDirCapacity and the disk ratios, from the store directory's filesystem."""
        try:
            fs = os.statvfs(Path(self.broker.config.store_dir))
        except OSError:
            return {"commitLogDiskRatio": "-1.0", "consumeQueueDiskRatio": "-1.0"}
        total, free = fs.f_blocks * fs.f_frsize, fs.f_bfree * fs.f_frsize
        ratio = repr((total - free) / total) if total else "-1.0"
        return {
            "commitLogDirCapacity": f"Total : {human_bytes(total)}, Free : {human_bytes(free)}.",
            "commitLogDiskRatio": ratio,
            "consumeQueueDiskRatio": ratio,  # one store directory holds both
        }

    def _schedule_offsets(self) -> dict[str, str]:
        store = self.broker.store
        return {
            f"scheduleMessageOffset_{level}": f"{offset},{store.max_offset(SCHEDULE_TOPIC, level - 1)}"
            for level, offset in sorted(self.broker.schedule.offsets.items())
        }

    # --- 315, 317 ----------------------------------------------------------------------------

    async def view_stats(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        name = request.ext_fields.get("statsName", "")
        key = request.ext_fields.get("statsKey", "")
        stats = self.broker.stats
        if not stats.exists(name, key):
            return request.respond(
                ResponseCode.SYSTEM_ERROR, f"The stats <{name}> <{key}> not exist"
            )
        now_s = self._clock.now_s()
        body = {
            field: stats.window(name, key, span, now_s).to_json()
            for field, span in (
                ("statsMinute", MINUTE_S),
                ("statsHour", HOUR_S),
                ("statsDay", DAY_S),
            )
        }
        return request.respond(body=dumps_json(body))

    async def broker_consume_stats(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        broker = self.broker
        only_order = request.ext_fields.get("isOrder", "false") == "true"
        now_s = self._clock.now_s()
        listing: list[dict[str, list[dict[str, Any]]]] = []
        total_diff = 0
        for group in broker.groups.groups():
            per_topic = []
            for topic in broker.offsets.topics_of_group(group):
                if only_order and not broker.topics.is_order_topic(topic):
                    continue
                tps = broker.stats.window(GROUP_GET_NUMS, f"{topic}@{group}", MINUTE_S, now_s).tps
                one = consume_stats_json(broker, group, topic, consume_tps=tps)
                if one is None:
                    continue
                total_diff += sum(
                    max(0, e["brokerOffset"] - e["consumerOffset"]) for e in one["offsetTable"]
                )
                per_topic.append(one)
            listing.append({group: per_topic})
        body = {"brokerAddr": broker.address, "consumeStatsList": listing, "totalDiff": total_diff}
        return request.respond(body=dumps_json(body))

    async def producer_connections(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        group = request.ext_fields.get("producerGroup", "")
        listing = self.broker.clients.producers.producer_connection(group)
        if listing is None:
            return request.respond(
                ResponseCode.SYSTEM_ERROR, f"the producer group[{group}] not exist"
            )
        return request.respond(body=listing.to_bytes())

    async def consumed_by(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        """The groups online with a subscription to the topic or holding offsets of it."""
        topic = request.ext_fields.get("topic", "")
        groups = set(self.broker.clients.consumers.groups_subscribing(topic))
        groups.update(self.broker.offsets.groups_of_topic(topic))
        return request.respond(body=dumps_json({"groupList": sorted(groups)}))

    # --- broker config --------------------------------------------------------------------------

    async def get_config(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        lines = "".join(f"{k}={v}\n" for k, v in config_properties(self.broker.config).items())
        version = {"counter": 0, "timestamp": self._started_ms}
        return request.respond(
            ext_fields={"version": dumps_json(version).decode()}, body=lines.encode()
        )

    async def update_config(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        values = parse_properties(request.body.decode("utf-8", "replace"))
        try:
            updated = config_from_mapping(values, self.broker.config)
        except ConfigError as exc:
            return request.respond(ResponseCode.SYSTEM_ERROR, str(exc))
        changed = sorted(key for key in values if field_name(key) not in RUNTIME_KEYS)
        if changed:
            return request.respond(
                ResponseCode.NO_PERMISSION,
                f"{', '.join(changed)} cannot change while the broker runs; "
                "set it in the broker's config file and restart",
            )
        self.broker.config = updated
        return request.respond()


def parse_properties(text: str) -> dict[str, Any]:
    """Java ``Properties`` lines (``key=value``, ``#`` comments) with typed values."""
    values: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = _typed(value.strip())
    return values


#: What Java's parseInt / parseLong take (ASCII digits here: Python's ``int`` also takes
#: "1_000", "²"-free Unicode digits and spaces), and a plain decimal for a double.
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,30}\.?[0-9]{0,30}|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?")


def _typed(text: str) -> Any:
    """A value as the config wants it: bool, int, float, else the text (which a numeric
    setting then refuses by name)."""
    if text in ("true", "false"):
        return text == "true"
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        return float(text)
    return text
