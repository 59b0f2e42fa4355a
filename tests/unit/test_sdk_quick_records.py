"""The consumer's one-pass record decoder (``client.consumer.records.quick_message``).

It must give exactly what the full path gives (``decode_record`` then
``ReceivedMessage.from_record``) for every record it takes, and leave to the full path
every record it cannot take (compressed, IPv6 hosts, anything damaged), which
tests/unit/test_sdk_records.py covers through ``decode_pull_body``.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from client.consumer import decode_pull_body
from client.consumer.records import RECORD_HEAD, quick_message
from client.message import ReceivedMessage
from protocol.bodies import parse_subscription
from protocol.message import (
    SYSFLAG_COMPRESSED,
    MessageRecord,
    decode_record,
    encode_record,
)
from protocol.route import MessageQueue

QUEUE = MessageQueue(topic="T", broker_name="broker-a", queue_id=1)


def stored(topic: str = "T", queue_id: int = 1, **fields: object) -> bytes:
    values: dict[str, object] = {
        "topic": topic,
        "body": b"hello",
        "queue_id": queue_id,
        "born_timestamp_ms": 1_700_000_000_000,
        "born_host": ("10.0.0.1", 40000),
        "store_timestamp_ms": 1_700_000_000_005,
        "store_host": ("10.0.0.2", 10911),
        "queue_offset": 7,
        "physical_offset": 123_456,
        "properties": {"UNIQ_KEY": "ABC", "TAGS": "TagA", "KEYS": "k1  k2"},
    }
    values.update(fields)
    return encode_record(MessageRecord(**values))  # type: ignore[arg-type]


def full_path(data: bytes) -> ReceivedMessage:
    rec, _ = decode_record(data)
    return ReceivedMessage.from_record(rec, QUEUE.broker_name, queue=QUEUE)


def quick(data: bytes, queue: MessageQueue = QUEUE) -> ReceivedMessage | None:
    return quick_message(data, 0, len(data), RECORD_HEAD.unpack_from(data, 0), queue)


@pytest.mark.parametrize(
    "data",
    [
        stored(),
        stored(body=b""),
        stored(body=bytes(range(256)) * 40, flag=-7, reconsume_times=2, sys_flag=0x2),
        stored(properties={}),
        stored(properties={"RECONSUME_TIME": "5", "RETRY_TOPIC": "Orig", "a": "é"}),
        stored(topic="t" * 127),  # the longest magic V1 topic
        stored(topic="v2-" + "t" * 200),  # magic V2: a two-byte topic length
        stored(topic="Other", queue_id=3),  # not the pulled queue: its own MessageQueue
        stored(topic="U"),  # as long as the queue's topic, not it: decoded, not assumed
        stored(topic="é"),  # one char like "T", two bytes
        stored(store_host=("127.0.0.1", 0), born_host=("0.0.0.0", 65535)),
    ],
)
def test_a_good_record_is_the_message_the_full_path_makes(data: bytes) -> None:
    message = quick(data)
    assert message is not None
    assert message == full_path(data)


@pytest.mark.parametrize(
    "data",
    [
        stored(body=zlib.compress(b"x" * 10), sys_flag=SYSFLAG_COMPRESSED),
        stored()[:8] + struct.pack(">i", 1) + stored()[12:],  # body CRC mismatch
        stored()[:-1] + b"\xff",  # properties not UTF-8
        stored()[:84] + struct.pack(">i", 4) + stored()[88:],  # body length off by one
    ],
)
def test_what_the_full_path_must_judge_is_left_to_it(data: bytes) -> None:
    assert quick(data) is None


def test_a_pull_body_decodes_the_same_with_and_without_the_one_pass_path() -> None:
    """decode_pull_body takes the one-pass path for bytes only: a memoryview of the same
    body goes the full path, and both give the same messages."""
    body = b"".join(stored(queue_offset=i, physical_offset=1000 + i) for i in range(3, 9))
    everything = parse_subscription("*", topic="T")
    args = {"requested": 3, "next_begin_offset": 9, "max_nums": 32}
    fast = decode_pull_body(body, QUEUE, everything, **args)  # type: ignore[arg-type]
    slow = decode_pull_body(memoryview(body), QUEUE, everything, **args)  # type: ignore[arg-type]
    assert fast == slow and len(fast.messages) == 6
