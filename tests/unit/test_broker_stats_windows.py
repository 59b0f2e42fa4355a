"""broker/stats.py: counters, the minute / hour / day windows, the TPS and morning totals."""

from __future__ import annotations

import time

from broker.stats import (
    BROKER_GET_NUMS,
    BROKER_PUT_NUMS,
    DAY_S,
    GROUP_GET_NUMS,
    MINUTE_S,
    STORE_PUT_NUMS,
    TOPIC_PUT_NUMS,
    TOPIC_PUT_SIZE,
    BrokerStats,
    Snapshot,
)

NOON_MS = int(time.mktime((2024, 5, 1, 12, 0, 0, 0, 0, -1)) * 1000)


def test_counters_and_totals() -> None:
    stats = BrokerStats("C", store_puts=lambda: 7)
    stats.on_put("T", 3, 300)
    stats.on_put("T", 1, 100)
    stats.on_get("G", "T", 2, 200)
    totals = stats.totals()
    assert totals[TOPIC_PUT_NUMS, "T"] == (4, 2)
    assert totals[TOPIC_PUT_SIZE, "T"] == (400, 2)
    assert totals[GROUP_GET_NUMS, "T@G"] == (2, 1)
    assert totals[BROKER_PUT_NUMS, "C"] == (4, 2)
    assert totals[BROKER_GET_NUMS, "C"] == (2, 1)
    assert totals[STORE_PUT_NUMS, ""] == (7, 7)
    assert stats.topic_puts() == {"T": (4, 400)}
    assert stats.group_gets() == {("T", "G"): (2, 200)}
    assert stats.exists(TOPIC_PUT_NUMS, "T") and stats.exists(BROKER_PUT_NUMS, "C")
    assert not stats.exists(TOPIC_PUT_NUMS, "nope") and not stats.exists(BROKER_PUT_NUMS, "X")


def test_minute_window_is_the_growth_since_the_sample_a_minute_old() -> None:
    stats = BrokerStats("C")
    for step in range(13):  # a sample every 10 s for two minutes, 10 messages each time
        stats.sample(step * 10.0, NOON_MS + step * 10_000)
        stats.on_put("T", 10, 1000)
    # now = 120 s; the sample taken at 60 s held 60 messages, 130 now.
    assert stats.window(TOPIC_PUT_NUMS, "T", MINUTE_S, 120.0) == Snapshot(
        sum=70, tps=70 / 60, avgpt=10.0
    )
    # The day window has only its first sample (at 0 s): everything since then.
    assert stats.window(TOPIC_PUT_NUMS, "T", DAY_S, 120.0).sum == 130
    assert stats.tps(BROKER_PUT_NUMS, 60.0, 120.0) == 70 / 60


def test_young_broker_windows_cover_what_was_sampled() -> None:
    stats = BrokerStats("C")
    assert stats.window(TOPIC_PUT_NUMS, "T", MINUTE_S, 5.0) == Snapshot(sum=0, tps=0.0, avgpt=0.0)
    stats.sample(0.0, NOON_MS)
    stats.on_put("T", 5, 50)
    assert stats.window(TOPIC_PUT_NUMS, "T", MINUTE_S, 5.0) == Snapshot(sum=5, tps=1.0, avgpt=5.0)


def test_morning_totals_roll_at_local_midnight() -> None:
    puts = [0]
    stats = BrokerStats("C", store_puts=lambda: puts[0])
    day_ms = 86_400_000
    stats.sample(0.0, NOON_MS)
    puts[0] = 10
    stats.sample(10.0, NOON_MS + day_ms)  # the next day
    assert stats.morning_totals(STORE_PUT_NUMS) == (0, 10)
    puts[0] = 25
    stats.sample(20.0, NOON_MS + 2 * day_ms)
    assert stats.morning_totals(STORE_PUT_NUMS) == (10, 25)


def test_message_sizes_fall_in_rocketmq_buckets_by_each_puts_average() -> None:
    from broker.stats import MESSAGE_SIZE_BUCKETS_BYTES

    stats = BrokerStats("C")
    stats.on_put("T", 1, 1024)  # on the first bound: in it (le="1024")
    stats.on_put("T", 1, 1025)
    stats.on_put("T", 4, 4 * 4096)  # a batch of four: one observation of its average
    stats.on_put("T", 1, 5 * 1024 * 1024)  # past every bound
    counts, observed = stats.message_sizes()["T"]
    assert len(counts) == len(MESSAGE_SIZE_BUCKETS_BYTES) + 1
    assert counts == (1, 2, 0, 0, 0, 0, 1)
    assert observed == 1024 + 1025 + 4096 + 5 * 1024 * 1024
    assert stats.topic_puts()["T"] == (7, 1024 + 1025 + 4 * 4096 + 5 * 1024 * 1024)


def test_rpc_latency_counts_each_answer_by_request_and_response_code() -> None:
    from broker.stats import RPC_LATENCY_BUCKETS_MS, RpcLatency
    from protocol.codes import ResponseCode

    timing = RpcLatency()
    timing.on_answered(1, ResponseCode.SUCCESS, 0.002)
    timing.on_answered(1, ResponseCode.SUCCESS, 0.5)
    timing.on_answered(2, ResponseCode.NO_PERMISSION, 0.0)
    table = timing.table()
    counts, total_ms = table[1, ResponseCode.SUCCESS]
    assert len(counts) == len(RPC_LATENCY_BUCKETS_MS) + 1
    assert counts == (0, 1, 0, 0, 0, 0, 1, 0, 0, 0)  # 2 ms in "3", 500 ms in "1000"
    assert abs(total_ms - 502.0) < 1e-6
    assert table[2, ResponseCode.NO_PERMISSION][0][0] == 1
    assert set(table) == {(1, ResponseCode.SUCCESS), (2, ResponseCode.NO_PERMISSION)}
