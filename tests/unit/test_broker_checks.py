"""The broker's request limits as pure rules: queue ids, list sizes, batch counting, the hold
budget, and the config keys that set them (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.config import BrokerConfig, ConfigError, config_from_mapping, load_toml
from broker.longpoll import PullHoldService
from broker.processors.checks import check_count, check_queue_id
from broker.processors.send import batch_item_count
from protocol.batch_body import BatchItem, encode_batch_body
from protocol.errors import InvalidParameter
from protocol.route import TopicConfig


def topic(read: int, write: int) -> TopicConfig:
    return TopicConfig(topic_name="T", read_queue_nums=read, write_queue_nums=write, perm=6)


@pytest.mark.parametrize(
    ("config", "queue_id", "problem"),
    [
        (topic(4, 4), 0, None),
        (topic(4, 4), 3, None),
        (topic(2, 4), 3, None),  # a write-only queue still has offsets
        (topic(4, 4), 4, "topic:[T] has 4 queues"),
        (topic(1, 1), 10**20, "queueId[100000000000000000000] is illegal"),
        (topic(4, 4), -1, "queueId[-1] is illegal"),
        (None, 1023, None),  # unknown topic: read-only queries answer 0, as RocketMQ does
        (None, 1024, "at most 1024 queues (maxTopicQueueNums)"),
        (None, -5, "queueId[-5] is illegal"),
    ],
)
def test_check_queue_id(config: TopicConfig | None, queue_id: int, problem: str | None) -> None:
    if problem is None:
        check_queue_id("T", config, queue_id, max_queue_nums=1024)
        return
    with pytest.raises(InvalidParameter, match=re.escape(problem)):
        check_queue_id("T", config, queue_id, max_queue_nums=1024)


def test_check_count() -> None:
    check_count("message queues", 8192, 8192, "maxLockBatchQueues")
    with pytest.raises(
        InvalidParameter, match=r"8193 message queues .* 8192 \(maxLockBatchQueues\)"
    ):
        check_count("message queues", 8193, 8192, "maxLockBatchQueues")


def test_batch_item_count_stops_early_and_never_loops_on_garbage() -> None:
    body = encode_batch_body([BatchItem(body=b"")] * 1000)
    assert batch_item_count(body, stop_after=10**9) == 1000
    assert batch_item_count(body, stop_after=11) == 11
    assert batch_item_count(b"", stop_after=5) == 0
    # A zero or negative totalSize stops the count: the decoder names the damage.
    assert batch_item_count(b"\x00" * 64, stop_after=5) == 0
    assert batch_item_count(b"\xff" * 64, stop_after=5) == 0
    assert batch_item_count(body[:-3], stop_after=10**9) == 1000


def test_hold_budget_counts_pulls_and_bytes() -> None:
    holds = PullHoldService(max_held=2, max_held_bytes=100)
    assert holds.reserve(40) and holds.reserve(60)
    assert not holds.reserve(0)  # count
    holds.release(40)
    assert not holds.reserve(41)  # bytes: 60 + 41 > 100
    assert holds.reserve(40)
    assert (holds.reserved, holds.reserved_bytes, holds.refused) == (2, 100, 2)
    holds.release(60)
    holds.release(40)
    assert (holds.reserved, holds.reserved_bytes) == (0, 0)


def test_limit_keys_take_rocketmq_names(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text(
        "maxTopicQueueNums = 64\nmaxBatchMessageNums = 500\nmaxHeldPullNums = 7\n"
        "maxHeldPullBytes = 1048576\nmaxMsgsNumBatch = 16\nmaxLockBatchQueues = 128\n"
        "maxHeartbeatGroups = 8\nmaxHeartbeatSubscriptions = 32\nmaxSubscriptionLength = 99\n"
        "flushConsumerOffsetInterval = 2000\nflushMetadataInterval = 250\n"
        "registerMinInterval = 500\ndefaultTopicQueueNums = 4\n"
    )
    config = load_toml(path)
    assert (config.max_topic_queue_nums, config.max_batch_message_nums) == (64, 500)
    assert (config.max_held_pull_nums, config.max_held_pull_bytes) == (7, 1 << 20)
    assert (config.max_msgs_num_batch, config.max_lock_batch_queues) == (16, 128)
    assert (config.max_heartbeat_groups, config.max_heartbeat_subscriptions) == (8, 32)
    assert config.max_subscription_length == 99
    assert config.flush_consumer_offset_interval_s == 2.0
    assert config.flush_metadata_interval_s == 0.25
    assert config.register_min_interval_s == 0.5
    defaults = BrokerConfig()
    assert (defaults.max_topic_queue_nums, defaults.max_batch_message_nums) == (1024, 10_000)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"maxTopicQueueNums": 0}, "maxTopicQueueNums must be > 0"),
        ({"maxTopicQueueNums": 70_000}, "maxTopicQueueNums must be <= 65536"),
        ({"maxHeldPullBytes": -1}, "'maxHeldPullBytes' must not be negative"),
        ({"maxHeldPullBytes": 0}, "maxHeldPullBytes must be > 0"),
        # Numbers off UPDATE_BROKER_CONFIG or a TOML file (which has nan and inf too):
        # NaN passed every comparison and became a deadline; inf and 400 digits crashed.
        ({"syncFlushTimeout": float("nan")}, "'syncFlushTimeout' must be a finite number"),
        ({"request_timeout_s": float("inf")}, "'request_timeout_s' must be a finite number"),
        ({"maxMessageSize": float("nan")}, "'maxMessageSize' must be a finite number"),
        ({"listenPort": 10**400}, "'listenPort' is out of range: an integer of 1329 bits"),
        ({"slaveTimeout": -1500}, "'slaveTimeout' must not be negative"),
        ({"request_timeout_s": -1.0}, "'request_timeout_s' must not be negative"),
        ({"minInSyncReplicas": "2"}, "'minInSyncReplicas' must be a number"),
        ({"maxBatchMessageNums": 200_000}, "maxBatchMessageNums must be <= 100000"),
        ({"maxTopicQueueNums": 4, "defaultTopicQueueNums": 8}, "defaultTopicQueueNums must be in"),
        ({"flushMetadataInterval": 0}, "flushMetadataInterval must be > 0"),
    ],
)
def test_bad_limits_are_config_errors(values: dict[str, int], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        config_from_mapping(values)


def test_a_shrunk_topics_old_queue_is_legal_while_it_holds_messages() -> None:
    check_queue_id("T", topic(1, 1), 1, max_queue_nums=1024, retained=True)
    with pytest.raises(InvalidParameter):
        check_queue_id("T", topic(1, 1), 1, max_queue_nums=1024, retained=False)
    with pytest.raises(InvalidParameter):
        check_queue_id("T", topic(1, 1), 10**20, max_queue_nums=1024, retained=True)
