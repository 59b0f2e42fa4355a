"""The one definition of a group's retry and dead-letter topic names (protocol/group_topics.py)."""

from __future__ import annotations

import pytest

from protocol.group_topics import dlq_topic, is_group_topic, is_retry_topic, retry_topic


def test_names_are_rocketmqs() -> None:
    assert retry_topic("G") == "%RETRY%G"
    assert dlq_topic("G") == "%DLQ%G"


@pytest.mark.parametrize(
    ("topic", "retry", "group"),
    [
        ("%RETRY%G", True, True),
        ("%DLQ%G", False, True),
        ("G", False, False),
        ("TopicTest", False, False),
        ("RETRY%G", False, False),
    ],
)
def test_predicates(topic: str, retry: bool, group: bool) -> None:
    assert is_retry_topic(topic) is retry
    assert is_group_topic(topic) is group
