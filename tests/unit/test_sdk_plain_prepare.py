"""The producer's direct path for plain messages makes exactly what the general path makes.

``Producer._prepare`` writes the wire properties of a message with at most tags straight
into a string (no dict, no ``properties_to_string``); every other message takes the general
path. Whatever the path, the outcome (properties, body, sysFlag, batchable) must be the one
the general path gives for the same UNIQ_KEY.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.message import Message
from client.producer import COMPRESS_OVER_BYTES, Producer, _batchable, plain_properties
from protocol.message import properties_to_string


def _producer() -> Producer:
    # Only _prepare is used: no connection, no route (a real Producer, never started).
    return Producer(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        group="g",
        client_id="c",
        timeout_s=1.0,
        retries=0,
        rng=random.Random(7),
    )


def _general(message: Message, uniq_key: str) -> tuple[str, bool]:
    properties = properties_to_string(message.wire_properties(uniq_key))
    return properties, _batchable(message, properties)


MESSAGES = [
    Message(topic="T", body=b"x"),
    Message(topic="T", body=b""),
    Message(topic="T", body=b"x", tags="TagA"),
    Message(topic="T", body=b"x", tags=""),
    Message(topic="T", body=b"x", tags="é" * 20_000),  # over the bound in bytes, not chars
    Message(topic="T", body=b"x", tags="a" * 40_000),
    Message(topic="T", body=b"x", flag=7),
    Message(topic="T", body=b"x", flag=1 << 40),  # out of int32: never batched
    Message(topic="%RETRY%g", body=b"x"),  # a group topic: never batched
    Message(topic="T", body=b"x", keys="k1 k2"),
    Message(topic="T", body=b"x", properties={"a": "1"}),
    Message(topic="T", body=b"x", wait_store=False),
    Message(topic="T", body=b"x", delay_level=3),
    Message(topic="T", body=b"x", delay_s=1.5),
    Message(topic="T", body=b"x" * COMPRESS_OVER_BYTES),
    Message(topic="T", body=b"x", msg_id="7F000001000000000000000000000001"),
]


@pytest.mark.parametrize("message", MESSAGES)
def test_the_outgoing_message_is_the_general_paths(message: Message) -> None:
    item = _producer()._prepare(message, batch=False)
    properties, batchable = _general(message, item.uniq_key)
    assert item.properties == properties
    assert item.batchable == (batchable and not item.sys_flag)
    if len(message.body) < COMPRESS_OVER_BYTES:
        assert item.body == message.body and item.sys_flag == 0


@given(st.text(max_size=30))
def test_plain_properties_are_the_general_string_or_none(tags: str) -> None:
    message = Message(topic="T", body=b"x", tags=tags)
    direct = plain_properties(message, "7F0000010000ABCD")
    try:
        expected = properties_to_string(message.wire_properties("7F0000010000ABCD"))
    except ValueError:
        assert direct is None  # a separator in the tags: the general path refuses it
    else:
        assert direct in (None, expected)
        if "\x01" not in tags and "\x02" not in tags:
            assert direct == expected


def test_a_separator_in_the_tags_is_refused_as_before() -> None:
    with pytest.raises(ValueError, match="0x01 or 0x02"):
        _producer()._prepare(Message(topic="T", body=b"x", tags="a\x01b"), batch=False)


def test_batch_items_take_the_general_path() -> None:
    message = Message(topic="T", body=b"x", tags="t")
    item = _producer()._prepare(message, batch=True)
    assert item.properties == _general(message, item.uniq_key)[0]
    assert not item.batchable
