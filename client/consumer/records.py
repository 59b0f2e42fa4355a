"""One pass from a pulled record to its ``ReceivedMessage``, for records with nothing wrong.

Rules:
- ``quick_message`` is handed a record whose framing ``decode_pull_body`` checked (magic
  V1 or V2, a sane size inside the body) and the fixed fields it unpacked once. It returns
  the message, or None as soon as anything is unusual: IPv6 hosts, a compressed body,
  lengths that do not add up to the record's size, a body CRC mismatch, text that is not
  UTF-8, ports or offsets out of range. None sends the record down the full path
  (``decode_record`` + ``ReceivedMessage.from_record``), which names what is wrong, so
  this path changes no outcome, only the cost of the common one: one unpack, one copy of
  the body, one properties parse and one object per message (wire.md §3.2).
- Host texts and message-id prefixes are cached per store host (a queue has one).
- ``compiled_walk`` is the compiled twin of ``decode_pull_body``'s loop over records this
  path takes, where it is built (``protocol/_speedups_pull.c``): it builds the same
  messages and stops at the first record it does not take (another topic or queue id too),
  which the Python loop then judges. ``tests/unit/test_speedups.py`` holds the two equal.
- Pure.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from typing import Any

from client.message import ReceivedMessage, received_message
from protocol import speedups
from protocol.message import (
    KEY_SEPARATOR,
    MAGIC_V1,
    MAX_TOPIC_LENGTH_V1,
    PROPERTY_KEYS,
    PROPERTY_RECONSUME_TIME,
    PROPERTY_TAGS,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_BORNHOST_V6,
    SYSFLAG_COMPRESSED,
    SYSFLAG_STOREHOST_V6,
    offset_msg_id,
    properties_from_string,
)
from protocol.route import MessageQueue
from protocol.slots import slot_descriptors

#: Fields 1-14 of a record (wire.md §3.2) plus the body length, IPv4 hosts: the body
#: follows at ``RECORD_HEAD.size``. A framed record (size >= MIN_RECORD_BYTES) holds them.
RECORD_HEAD = struct.Struct(">iiiiiqqiq4siq4siiqi")
_HEAD_SIZE = RECORD_HEAD.size
#: Records with these flags take the full path (other host layout, a body to inflate).
_UNUSUAL_FLAGS = SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6 | SYSFLAG_COMPRESSED
_CRC_MASK = 0x7FFFFFFF
_INT16_MAX = 0x7FFF
_PORT_MAX = 0xFFFF


@functools.lru_cache(maxsize=256)
def _encoded(topic: str) -> bytes:
    return topic.encode()


@functools.lru_cache(maxsize=256)
def _offset_id_prefix(packed_ip: bytes, port: int) -> str:
    """The host part of ``offset_msg_id`` for an IPv4 store host."""
    return offset_msg_id(".".join(str(b) for b in packed_ip), port, 0)[:-16]


@functools.lru_cache(maxsize=256)
def _host(packed_ip: bytes, port: int) -> tuple[str, int]:
    return f"{packed_ip[0]}.{packed_ip[1]}.{packed_ip[2]}.{packed_ip[3]}", port


def quick_message(
    buf: bytes,
    pos: int,
    size: int,
    head: tuple[Any, ...],
    queue: MessageQueue,
) -> ReceivedMessage | None:
    """The message of the framed record at ``pos`` (``head``: its ``RECORD_HEAD`` fields),
    or None when the full path must decide (module rules)."""
    (
        _,
        magic,
        stored_crc,
        queue_id,
        flag,
        queue_offset,
        commit_offset,
        sys_flag,
        born_ts,
        born_ip,
        born_port,
        store_ts,
        store_ip,
        store_port,
        reconsume,
        _,
        body_len,
    ) = head
    if (
        sys_flag & _UNUSUAL_FLAGS
        or commit_offset < 0
        or body_len < 0
        or not 0 <= born_port <= _PORT_MAX
        or not 0 <= store_port <= _PORT_MAX
    ):
        return None
    end = pos + size
    p = pos + _HEAD_SIZE + body_len
    if p + 3 > end:
        return None
    if magic == MAGIC_V1:
        topic_len = buf[p]
        p += 1
        if topic_len > MAX_TOPIC_LENGTH_V1:
            return None
    else:  # MAGIC_V2 (the framing check let no other through)
        topic_len = (buf[p] << 8) | buf[p + 1]
        p += 2
    if not 0 < topic_len <= _INT16_MAX or p + topic_len + 2 > end:
        return None
    topic_at = p
    p += topic_len
    props_len = (buf[p] << 8) | buf[p + 1]
    p += 2
    if props_len > _INT16_MAX or p + props_len != end:
        return None
    body = buf[pos + _HEAD_SIZE : pos + _HEAD_SIZE + body_len]
    if zlib.crc32(body) & _CRC_MASK != stored_crc:
        return None
    try:
        # The queue's own topic (every record of a plain pull) is not decoded again.
        topic = queue.topic
        if topic_len != len(topic) or not buf.startswith(_encoded(topic), topic_at):
            topic = buf[topic_at : topic_at + topic_len].decode()
        props = properties_from_string(buf[p:end].decode()) if props_len else {}
    except UnicodeDecodeError:
        return None
    if topic != queue.topic or queue_id != queue.queue_id:
        queue = MessageQueue(topic=topic, broker_name=queue.broker_name, queue_id=queue_id)
    store_host = _host(store_ip, store_port)
    return received_message(
        topic,
        body,
        props,
        queue,
        # offset_msg_id's text, its host part cached by the packed address (the offset was
        # checked >= 0 above and is an int64 by the unpack).
        f"{_offset_id_prefix(store_ip, store_port)}{commit_offset:016X}",
        queue_offset,
        commit_offset,
        born_ts,
        store_ts,
        _host(born_ip, born_port),
        store_host,
        reconsume,
        sys_flag,
        flag,
    )


#: ``ReceivedMessage`` and its slots' descriptors in field order, and the properties the
#: compiled walk reads (received_message's), in its context's order.
_RECEIVED_SLOTS = (ReceivedMessage, *slot_descriptors(ReceivedMessage))
_WALK_NAMES = (PROPERTY_RECONSUME_TIME, PROPERTY_KEYS, PROPERTY_TAGS, PROPERTY_UNIQ_KEY)


def compiled_walk(
    queue: MessageQueue,
) -> Callable[[bytes, int, list[ReceivedMessage], int, int], tuple[int, int]] | None:
    """``walk(buf, pos, out, last, next_begin_offset) -> (pos, last)`` for a pull of
    ``queue`` whose subscription takes every record, or None where not compiled (module
    rules)."""
    quick_messages = speedups.quick_messages
    if quick_messages is None:
        return None
    ctx = (
        _RECEIVED_SLOTS,
        queue,
        queue.topic,
        _encoded(queue.topic),
        queue.queue_id,
        _WALK_NAMES,
        KEY_SEPARATOR,
    )
    return lambda buf, pos, out, last, next_begin: quick_messages(
        buf, pos, out, last, next_begin, ctx
    )
