"""What checking and dispatching a stored record needs, read without decoding all of it.

Rules (reference/rocketmq-wire.md §3.2; the layout is ``protocol/message.py``'s):
- ``read_stored_fields`` accepts exactly the records ``decode_record`` accepts, with the
  same ``MalformedRecord`` for the others, and returns the same values for the fields it
  gives: ``decode_record`` stays the definition. A record the fast path is not sure of (a
  failed check, IPv6 hosts) goes to ``decode_record``, which raises the precise error or
  decodes it; tests/unit/test_record_fields.py holds the two together with Hypothesis.
- The fast path skips what a replica's check does not need: no body copy (the CRC runs
  over a slice of ``buf``; a memoryview makes it a view), no host text, no
  ``MessageRecord``. Pure.
"""

from __future__ import annotations

from protocol.crc import crc32
from protocol.message import (
    _CRC_MASK,
    _FIXED_V4,
    _FIXED_V4_SIZE,
    _INT16,
    _V6_HOST_FLAGS,
    MAGIC_V1,
    MAGIC_V2,
    MAX_RECORD_BYTES,
    MAX_TOPIC_LENGTH_V1,
    MIN_RECORD_BYTES,
    MessageRecord,
    decode_record,
    properties_from_string,
)
from protocol.speedups import read_stored_fields as _c_read_stored_fields

#: (total size, topic, queue id, queue offset, physical offset, sys flag, properties,
#: store timestamp ms, body length): a plain tuple, built once per record.
StoredFields = tuple[int, str, int, int, int, int, dict[str, str], int, int]


def read_stored_fields(
    buf: bytes | bytearray | memoryview,
    pos: int = 0,
    *,
    check_crc: bool = True,
    max_size: int = MAX_RECORD_BYTES,
) -> StoredFields:
    """The record at ``pos``'s fields a replica checks and dispatches, as ``StoredFields``.

    Every check of ``decode_record`` holds (magic, size bounds, the record fits, host
    ports, lengths adding up to TOTALSIZE, UTF-8 of topic and properties, the body CRC
    unless ``check_crc`` is false).

    Raises:
        MalformedRecord: as ``decode_record`` raises it for this record.
    """
    if _c_read_stored_fields is not None:
        # The fast path below, compiled (protocol/_speedups.c); None: decode_record.
        fields = _c_read_stored_fields(buf, pos, check_crc, max_size)
        if fields is not None:
            return fields  # type: ignore[no-any-return]
    elif pos >= 0 and len(buf) - pos >= _FIXED_V4_SIZE:
        (
            size,
            magic,
            stored_crc,
            queue_id,
            _,
            queue_offset,
            physical_offset,
            sys_flag,
            _,
            _,
            born_port,
            store_ts,
            _,
            store_port,
            _,
            _,
            body_len,
        ) = _FIXED_V4.unpack_from(buf, pos)
        end = pos + size
        body_at = pos + _FIXED_V4_SIZE
        p = body_at + body_len  # the topic length
        if (
            MIN_RECORD_BYTES <= size <= max_size
            and end <= len(buf)
            and not sys_flag & _V6_HOST_FLAGS
            and 0 <= born_port <= 0xFFFF
            and 0 <= store_port <= 0xFFFF
            and body_len >= 0
        ):
            if magic == MAGIC_V1 and p + 1 <= end:
                topic_len = buf[p]
                p += 1
                topic_ok = 0 < topic_len <= MAX_TOPIC_LENGTH_V1
            elif magic == MAGIC_V2 and p + 2 <= end:
                (topic_len,) = _INT16.unpack_from(buf, p)
                p += 2
                topic_ok = topic_len > 0
            else:
                topic_ok = False
            if topic_ok and p + topic_len + 2 <= end:
                props_at = p + topic_len + 2
                (props_len,) = _INT16.unpack_from(buf, props_at - 2)
                if props_len >= 0 and props_at + props_len == end:
                    try:
                        topic = str(buf[p : p + topic_len], "utf-8")
                        props = (
                            properties_from_string(str(buf[props_at:end], "utf-8"))
                            if props_len
                            else {}
                        )
                    except UnicodeDecodeError:
                        pass  # decode_record names the field
                    else:
                        if (
                            not check_crc
                            or crc32(buf[body_at : body_at + body_len]) & _CRC_MASK == stored_crc
                        ):
                            return (
                                size,
                                topic,
                                queue_id,
                                queue_offset,
                                physical_offset,
                                sys_flag,
                                props,
                                store_ts,
                                body_len,
                            )
    return stored_fields_of(*decode_record(buf, pos, check_crc=check_crc, max_size=max_size))


def stored_fields_of(rec: MessageRecord, size: int) -> StoredFields:
    """``StoredFields`` of a decoded record of TOTALSIZE ``size``."""
    return (
        size,
        rec.topic,
        rec.queue_id,
        rec.queue_offset,
        rec.physical_offset,
        rec.sys_flag,
        dict(rec.properties),
        rec.store_timestamp_ms,
        len(rec.body),
    )
