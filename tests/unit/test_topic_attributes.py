"""protocol/topic_attributes.py: RocketMQ 5's ``+key=value,-key`` topic attributes."""

from __future__ import annotations

import pytest

from protocol.topic_attributes import AttributeError_, apply_changes, message_type, parse_changes


def test_set_and_remove() -> None:
    assert parse_changes("+message.type=FIFO") == ({"message.type": "FIFO"}, frozenset())
    assert parse_changes(None) == ({}, frozenset())
    assert apply_changes({}, "+message.type=DELAY") == {"message.type": "DELAY"}
    assert apply_changes({"message.type": "FIFO"}, "-message.type") == {}
    assert apply_changes({"message.type": "FIFO"}, None) == {"message.type": "FIFO"}
    assert message_type({}) == "NORMAL"
    assert message_type({"message.type": "MIXED"}) == "MIXED"


@pytest.mark.parametrize(
    "text",
    [
        "message.type=FIFO",  # no sign
        "+message.type",  # no value
        "+=x",
        "+message.type=FIFO,+message.type=NORMAL",
        "+message.type=FIFO,-message.type",
        "+message.type=fifo",  # values are upper case, as TopicMessageType's
        "+queue.type=BatchCQ",  # not served here
        "-",
        "+message.type=FIFO," + "x" * 5000,
    ],
)
def test_bad_attributes_are_refused(text: str) -> None:
    with pytest.raises(AttributeError_):
        parse_changes(text)
