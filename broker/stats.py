"""Broker statistics: per-topic put and per-group get counters, read as RocketMQ's stats.

Rules (RocketMQ's BrokerStatsManager, StatsItem, StoreStatsService, BrokerStats):
- Counting is cheap: ``on_put`` / ``on_get`` do one dict look-up and three int adds (a put
  also one bisect over the six message-size bounds), on the Trio thread; everything else
  is computed when read. Nothing else mutates counters.
- Items have BrokerStatsManager's names and keys: ``TOPIC_PUT_NUMS`` / ``TOPIC_PUT_SIZE``
  keyed by topic, ``GROUP_GET_NUMS`` / ``GROUP_GET_SIZE`` keyed by ``topic@group``,
  ``BROKER_PUT_NUMS`` / ``BROKER_GET_NUMS`` keyed by the cluster name (sums over topics /
  groups, computed on read). Each item holds a value (messages or bytes) and times (calls).
- ``sample(now_s, wall_ms)`` snapshots every total, as StatsItem does: every 10 s kept for
  a minute, every 10 minutes kept for an hour, every hour kept for a day; the broker-wide
  totals also every 10 s for 10 minutes (the 10 / 60 / 600 s TPS of the runtime info). A
  window's ``sum`` is the growth since the newest sample at least that old (or since the
  oldest sample, while the broker is younger than the window), ``tps`` is that growth per
  second of the time it covers, ``avgpt`` the value per call.
- Day boundaries (local midnight, BrokerStats' morning totals): the broker-wide totals at
  the last two midnights give ``msg*TotalTodayMorning`` / ``msg*TotalYesterdayMorning``.
- Pure: time comes in as arguments; ``run`` is the one Trio loop (it samples every 10 s).
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Mapping

import attrs
import trio

TOPIC_PUT_NUMS = "TOPIC_PUT_NUMS"
TOPIC_PUT_SIZE = "TOPIC_PUT_SIZE"
GROUP_GET_NUMS = "GROUP_GET_NUMS"
GROUP_GET_SIZE = "GROUP_GET_SIZE"
BROKER_PUT_NUMS = "BROKER_PUT_NUMS"
BROKER_GET_NUMS = "BROKER_GET_NUMS"
#: Store-level puts (StoreStatsService: every stored message, send-backs and delays too).
STORE_PUT_NUMS = "STORE_PUT_NUMS"
STATS_NAMES = (
    TOPIC_PUT_NUMS, TOPIC_PUT_SIZE, GROUP_GET_NUMS, GROUP_GET_SIZE, BROKER_PUT_NUMS,
    BROKER_GET_NUMS, STORE_PUT_NUMS,
)  # fmt: skip
SAMPLE_INTERVAL_S = 10.0
#: rocketmq_message_size's buckets (BrokerMetricsManager: 1 KiB .. 4 MiB).
MESSAGE_SIZE_BUCKETS_BYTES = (1024, 4096, 512 * 1024, 1024 * 1024, 2048 * 1024, 4096 * 1024)
MINUTE_S, HOUR_S, DAY_S = 60.0, 3600.0, 86400.0

#: (stats name, stats key)
ItemKey = tuple[str, str]
#: (value, times) of every item at one moment.
Totals = Mapping[ItemKey, tuple[int, int]]


@attrs.frozen
class Snapshot:
    """StatsSnapshot: one window of one item."""

    sum: int
    tps: float
    avgpt: float

    def to_json(self) -> dict[str, float | int]:
        return {"sum": self.sum, "tps": self.tps, "avgpt": self.avgpt}


@attrs.define
class _Ring:
    """Samples of the totals every ``interval_s``, the newest ``keep`` of them."""

    interval_s: float
    keep: int
    broker_only: bool = False
    samples: deque[tuple[float, Totals]] = attrs.field(factory=deque)

    def offer(self, now_s: float, totals: Totals) -> None:
        if self.samples and now_s - self.samples[-1][0] < self.interval_s * 0.99:
            return
        if self.broker_only:
            totals = {k: v for k, v in totals.items() if k[0] in _BROKER_WIDE}
        self.samples.append((now_s, totals))
        while len(self.samples) > self.keep:
            self.samples.popleft()

    def base(self, now_s: float, span_s: float) -> tuple[float, Totals] | None:
        """The newest sample at least ``span_s`` old, else the oldest one."""
        chosen = None
        for sample in self.samples:
            if now_s - sample[0] >= span_s * 0.99:
                chosen = sample
            else:
                break
        return chosen or (self.samples[0] if self.samples else None)


_BROKER_WIDE = frozenset({BROKER_PUT_NUMS, BROKER_GET_NUMS, STORE_PUT_NUMS})
#: Where a ``BrokerStats._puts`` row's size buckets start.
_PUT_BUCKETS_AT = 4
_bisect_left = bisect.bisect_left


class BrokerStats:
    """The counters of one broker and the windows read from them."""

    def __init__(self, cluster_name: str, *, store_puts: Callable[[], int] = lambda: 0) -> None:
        self.cluster_name = cluster_name
        self._store_puts = store_puts
        #: topic → [messages, bytes, calls, the sum of the observed message sizes, then
        #: puts per message-size bucket, then one past every bound]: one row per topic,
        #: one lookup per put
        self._puts: dict[str, list[int]] = {}
        #: "topic@group" → [messages, bytes, calls]
        self._gets: dict[str, list[int]] = {}
        #: "topic@group" → queue id → the next offset of the group's last pull
        self._pulled: dict[str, dict[int, int]] = {}
        self._rings = {
            MINUTE_S: _Ring(SAMPLE_INTERVAL_S, 7),
            HOUR_S: _Ring(600.0, 7),
            DAY_S: _Ring(3600.0, 25),
        }
        #: Broker-wide totals every 10 s for 10 minutes (putTps / getTransferredTps).
        self._tps_ring = _Ring(SAMPLE_INTERVAL_S, 61, broker_only=True)
        self._day: int | None = None
        self._morning: dict[str, int] = {}
        self._yesterday_morning: dict[str, int] = {}

    # --- counting (the send and pull paths) ---------------------------------------------

    def on_put(self, topic: str, messages: int, size_bytes: int) -> None:
        """Messages of ``topic`` stored by one send (RocketMQ's incTopicPutNums/Size)."""
        item = self._puts.get(topic)
        if item is None:
            item = self._puts[topic] = [0] * (_PUT_BUCKETS_AT + len(MESSAGE_SIZE_BUCKETS_BYTES) + 1)
        item[0] += messages
        item[1] += size_bytes
        item[2] += 1
        # One observation per put of its average message size, as RocketMQ records it.
        average = size_bytes // messages if messages > 0 else 0
        item[3] += average
        item[_PUT_BUCKETS_AT + _bisect_left(MESSAGE_SIZE_BUCKETS_BYTES, average)] += 1

    def on_get(
        self,
        group: str,
        topic: str,
        messages: int,
        size_bytes: int,
        *,
        queue_id: int | None = None,
        next_offset: int | None = None,
    ) -> None:
        """Messages of ``topic`` handed to ``group`` by one pull (incGroupGetNums/Size);
        with ``queue_id`` and ``next_offset``, where the group's pulls of that queue have
        got to (ConsumerOffsetManager's pull offset: in flight = pulled - committed)."""
        key = f"{topic}@{group}"
        item = self._gets.get(key)
        if item is None:
            item = self._gets[key] = [0, 0, 0]
            self._pulled[key] = {}
        item[0] += messages
        item[1] += size_bytes
        item[2] += 1
        if queue_id is not None and next_offset is not None:
            self._pulled[key][queue_id] = next_offset

    # --- reading ------------------------------------------------------------------------

    def topic_puts(self) -> dict[str, tuple[int, int]]:
        """topic → (messages, bytes) stored since boot."""
        return {t: (v[0], v[1]) for t, v in self._puts.items()}

    def message_sizes(self) -> dict[str, tuple[tuple[int, ...], int]]:
        """topic → (puts per ``MESSAGE_SIZE_BUCKETS_BYTES`` bucket, not cumulative, then the
        puts past every bound; the sum of the observed sizes)."""
        return {t: (tuple(v[_PUT_BUCKETS_AT:]), v[3]) for t, v in self._puts.items()}

    def pull_offsets(self, topic: str, group: str) -> dict[int, int]:
        """queue id → the next offset of ``group``'s last pull of it that found messages."""
        return dict(self._pulled.get(f"{topic}@{group}", {}))

    def group_gets(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(topic, group) → (messages, bytes) handed out since boot."""
        out = {}
        for key, v in self._gets.items():
            topic, _, group = key.rpartition("@")
            out[topic, group] = (v[0], v[1])
        return out

    def totals(self) -> dict[ItemKey, tuple[int, int]]:
        """Every item's (value, times) now."""
        out: dict[ItemKey, tuple[int, int]] = {}
        put_msgs = put_calls = get_msgs = get_calls = 0
        for topic, (msgs, size, calls, *_) in self._puts.items():
            out[TOPIC_PUT_NUMS, topic] = (msgs, calls)
            out[TOPIC_PUT_SIZE, topic] = (size, calls)
            put_msgs, put_calls = put_msgs + msgs, put_calls + calls
        for key, (msgs, size, calls) in self._gets.items():
            out[GROUP_GET_NUMS, key] = (msgs, calls)
            out[GROUP_GET_SIZE, key] = (size, calls)
            get_msgs, get_calls = get_msgs + msgs, get_calls + calls
        out[BROKER_PUT_NUMS, self.cluster_name] = (put_msgs, put_calls)
        out[BROKER_GET_NUMS, self.cluster_name] = (get_msgs, get_calls)
        store = self._store_puts()
        out[STORE_PUT_NUMS, ""] = (store, store)
        return out

    def exists(self, name: str, key: str) -> bool:
        """Whether ``name``/``key`` is an item (VIEW_BROKER_STATS_DATA refuses others)."""
        if name in (BROKER_PUT_NUMS, BROKER_GET_NUMS):
            return key == self.cluster_name
        return (name, key) in self.totals()

    def window(self, name: str, key: str, span_s: float, now_s: float) -> Snapshot:
        """The item's growth over the last ``span_s`` (60, 3600 or 86400 s)."""
        ring = self._rings[span_s]
        return _snapshot(self.totals(), ring.base(now_s, span_s), (name, key), now_s)

    def tps(self, name: str, span_s: float, now_s: float) -> float:
        """A broker-wide item's rate over the last ``span_s`` (10, 60 or 600 s)."""
        key = (name, "" if name == STORE_PUT_NUMS else self.cluster_name)
        base = self._tps_ring.base(now_s, span_s)
        return _snapshot(self.totals(), base, key, now_s).tps

    def morning_totals(self, name: str) -> tuple[int, int]:
        """(yesterday morning, today morning) totals of a broker-wide item."""
        return self._yesterday_morning.get(name, 0), self._morning.get(name, 0)

    # --- sampling ------------------------------------------------------------------------

    def sample(self, now_s: float, wall_ms: int) -> None:
        """Snapshot the totals into every ring; roll the morning totals at midnight."""
        totals = self.totals()
        for ring in (*self._rings.values(), self._tps_ring):
            ring.offer(now_s, totals)
        day = time.localtime(wall_ms / 1000).tm_yday
        if self._day is None:
            self._day = day
        elif day != self._day:
            self._day = day
            self._yesterday_morning = self._morning
            self._morning = {
                name: v for (name, _), (v, _) in totals.items() if name in _BROKER_WIDE
            }

    async def run(self, now_s: Callable[[], float], wall_ms: Callable[[], int]) -> None:
        """Sample every 10 s until cancelled."""
        while True:
            self.sample(now_s(), wall_ms())
            await trio.sleep(SAMPLE_INTERVAL_S)


def _snapshot(
    totals: Totals, base: tuple[float, Totals] | None, key: ItemKey, now_s: float
) -> Snapshot:
    value, times = totals.get(key, (0, 0))
    if base is None:
        return Snapshot(sum=0, tps=0.0, avgpt=0.0)
    then_s, then = base
    old_value, old_times = then.get(key, (0, 0))
    grown, calls = value - old_value, times - old_times
    elapsed_s = now_s - then_s
    return Snapshot(
        sum=grown,
        tps=grown / elapsed_s if elapsed_s > 0 else 0.0,
        avgpt=grown / calls if calls > 0 else 0.0,
    )


# --- rocketmq_rpc_latency ----------------------------------------------------------------

#: rocketmq_rpc_latency's buckets in milliseconds (RocketMQ's RemotingMetricsManager).
RPC_LATENCY_BUCKETS_MS = (1.0, 3.0, 5.0, 7.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0)


class RpcLatency:
    """How long the broker took to answer each request, per request and response code.

    Counted with plain ints on the Trio thread (one bisect and two adds per request) and
    exported when scraped (``broker/metrics.py``). The transport times each answer
    (``RemotingServer.on_answered``, given ``on_answered``); a held pull counts its hold
    time, as the client waits it.
    """

    def __init__(self) -> None:
        #: request code → response code → counts per bucket, past every bound, sum of ms
        self._table: dict[int, dict[int, list[float]]] = {}

    def on_answered(self, request_code: int, response_code: int, elapsed_s: float) -> None:
        """One answer: ``RemotingServer.on_answered`` (request codes with a handler only,
        so the table stays as small as the handler table)."""
        rows = self._table.get(request_code)
        row = rows.get(response_code) if rows is not None else None
        if row is None:
            row = self._table.setdefault(request_code, {})[response_code] = [0.0] * (
                len(RPC_LATENCY_BUCKETS_MS) + 2
            )
        elapsed_ms = elapsed_s * 1000.0
        row[_bisect_left(RPC_LATENCY_BUCKETS_MS, elapsed_ms)] += 1
        row[-1] += elapsed_ms

    def table(self) -> dict[tuple[int, int], tuple[tuple[int, ...], float]]:
        """(request code, response code) → (counts per bucket, not cumulative, then past
        every bound; the sum of the latencies in ms)."""
        return {
            (request, response): (tuple(int(c) for c in row[:-1]), row[-1])
            for request, rows in self._table.items()
            for response, row in list(rows.items())
        }
