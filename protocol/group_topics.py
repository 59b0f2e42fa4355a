"""The topics a consumer group owns: ``%RETRY%<group>`` and ``%DLQ%<group>``.

Rules:
- Pure: names only, no I/O. The one definition of these names, shared by the broker (which
  creates the topics on heartbeat and send-back) and the SDK (which subscribes to the retry
  topic and refuses group names and subscriptions that would collide with them).
- Names and prefixes are RocketMQ's (MixAll.getRetryTopic / getDLQTopic,
  ``RETRY_GROUP_TOPIC_PREFIX`` / ``DLQ_GROUP_TOPIC_PREFIX``), so unmodified clients agree.
"""

from __future__ import annotations

RETRY_GROUP_TOPIC_PREFIX = "%RETRY%"
DLQ_GROUP_TOPIC_PREFIX = "%DLQ%"


def retry_topic(group: str) -> str:
    """``%RETRY%<group>`` (MixAll.getRetryTopic)."""
    return RETRY_GROUP_TOPIC_PREFIX + group


def dlq_topic(group: str) -> str:
    """``%DLQ%<group>`` (MixAll.getDLQTopic)."""
    return DLQ_GROUP_TOPIC_PREFIX + group


def is_retry_topic(topic: str) -> bool:
    return topic.startswith(RETRY_GROUP_TOPIC_PREFIX)


def group_of_retry_topic(topic: str) -> str:
    """The group a ``%RETRY%<group>`` topic belongs to (``topic`` must be a retry topic)."""
    assert is_retry_topic(topic), topic
    return topic[len(RETRY_GROUP_TOPIC_PREFIX) :]


def is_group_topic(topic: str) -> bool:
    """A retry or dead-letter topic: it belongs to a group, not to the application."""
    return topic.startswith((RETRY_GROUP_TOPIC_PREFIX, DLQ_GROUP_TOPIC_PREFIX))
