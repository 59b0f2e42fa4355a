"""``read_stored_fields`` is ``decode_record`` for the fields it gives: same values for
every record decode_record takes, the same MalformedRecord for every other one."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import record_fields
from protocol.errors import MalformedRecord
from protocol.message import (
    MAGIC_V1,
    SYSFLAG_BORNHOST_V6,
    MessageRecord,
    decode_record,
    encode_record,
)
from protocol.record_fields import StoredFields, read_stored_fields, stored_fields_of
from tests.support.speedups import with_and_without

TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x01\x02"), min_size=1, max_size=6
)
RECORDS = st.builds(
    MessageRecord,
    # Both magics: topics up to 127 UTF-8 bytes are V1, longer ones V2.
    topic=st.sampled_from(["T", "TopicTest", "é" * 70, "x" * 200]),
    body=st.binary(max_size=40),
    queue_id=st.integers(-(2**31), 2**31 - 1),
    queue_offset=st.integers(0, 2**40),
    physical_offset=st.integers(0, 2**40),
    sys_flag=st.sampled_from([0, 0x4, 0x8, 0xC, 0x2]),
    born_timestamp_ms=st.integers(0, 2**41),
    born_host=st.just(("10.0.0.1", 4000)),
    store_timestamp_ms=st.integers(0, 2**41),
    store_host=st.just(("10.0.0.2", 10911)),
    properties=st.dictionaries(TEXT, TEXT, max_size=4),
)


def _reference(buf: bytes | memoryview, pos: int, **kw: object) -> StoredFields | str:
    try:
        return stored_fields_of(*decode_record(buf, pos, **kw))  # type: ignore[arg-type]
    except MalformedRecord as exc:
        return str(exc)


def _encoded(topic: str, body: bytes, properties: dict[str, str] | None = None) -> bytes:
    rec = MessageRecord(
        topic=topic,
        body=body,
        queue_id=1,
        born_timestamp_ms=1,
        born_host=("1.2.3.4", 1),
        store_timestamp_ms=2,
        store_host=("1.2.3.4", 2),
        properties=properties or {},
    )
    return encode_record(rec)


def _lean(buf: bytes | memoryview, pos: int, **kw: object) -> StoredFields | str:
    """read_stored_fields's answer, the same with and without its compiled fast path
    (protocol/_speedups.c, where it is built)."""
    compiled, pure = with_and_without(
        record_fields, "_c_read_stored_fields", lambda: _lean_once(buf, pos, **kw)
    )
    assert compiled == pure
    return compiled


def _lean_once(buf: bytes | memoryview, pos: int, **kw: object) -> StoredFields | str:
    try:
        return read_stored_fields(buf, pos, **kw)  # type: ignore[arg-type]
    except MalformedRecord as exc:
        return str(exc)


@settings(max_examples=500)
@given(rec=RECORDS, lead=st.binary(max_size=9), check_crc=st.booleans())
def test_good_records_read_as_decode_record_reads_them(
    rec: MessageRecord, lead: bytes, check_crc: bool
) -> None:
    raw = lead + encode_record(rec)
    for buf in (raw, memoryview(raw)):
        got = _lean(buf, len(lead), check_crc=check_crc)
        assert not isinstance(got, str)
        assert got == _reference(buf, len(lead), check_crc=check_crc)


@settings(max_examples=1500)
@given(
    rec=RECORDS,
    # Mostly whole records of a legal size with a byte or two changed, so that most cases
    # get past the size checks to the fields the fast path reads.
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=2),
    cut=st.sampled_from([0, 0, 0, 0, 0, 1, 7]),
    check_crc=st.booleans(),
    max_size=st.sampled_from([2**24, 2**24, 2**24, 100]),
)
def test_damaged_records_fail_as_decode_record_fails(
    rec: MessageRecord,
    edits: list[tuple[int, int]],
    cut: int,
    check_crc: bool,
    max_size: int,
) -> None:
    raw = bytearray(encode_record(rec))
    for at, value in edits:  # bytes in the fixed fields, the lengths, topic, properties
        raw[at % len(raw)] = value
    data = bytes(raw[: len(raw) - cut])
    kw = {"check_crc": check_crc, "max_size": max_size}
    assert _lean(data, 0, **kw) == _reference(data, 0, **kw)


@given(
    field=st.sampled_from(["ports", "body_len", "topic_len", "props_len", "utf8", "v6", "crc"]),
    value=st.integers(-(2**15), 2**16),
)
def test_each_fast_path_check_falls_back_to_the_full_decode(field: str, value: int) -> None:
    raw = bytearray(_encoded("T", b"body", {"TAGS": "a"}))
    if field == "ports":
        struct.pack_into(">i", raw, 52, value)  # born port
    elif field == "body_len":
        struct.pack_into(">i", raw, 84, value)
    elif field == "topic_len":
        raw[92] = value & 0xFF
    elif field == "props_len":
        struct.pack_into(">h", raw, 94, max(-(2**15), min(value, 2**15 - 1)))
    elif field == "utf8":
        raw[93] = 0xFF
    elif field == "crc":
        raw[88 + value % 4] ^= 1 + value % 255
    else:
        struct.pack_into(">i", raw, 36, SYSFLAG_BORNHOST_V6)
    data = bytes(raw)
    assert _lean(data, 0) == _reference(data, 0)


def test_a_short_buffer_and_a_negative_position_fail_as_decode_record_fails() -> None:
    raw = _encoded("T", b"")
    for data, pos in ((raw[:50], 0), (raw[:5], 0), (raw, -1), (raw, len(raw))):
        got = _lean(data, pos)
        assert isinstance(got, str)
        assert got == _reference(data, pos)


def test_a_v1_topic_length_over_127_is_refused() -> None:
    """A V2 record of a 130-byte topic with its topic length cut to one byte: a V1 record
    whose lengths add up, and whose topic length V1 cannot have."""
    v2 = _encoded("x" * 130, b"b")
    assert v2[89:91] == b"\x00\x82"  # the topic length after the 1-byte body
    v1 = bytearray(v2[:89] + v2[90:])
    struct.pack_into(">ii", v1, 0, len(v1), MAGIC_V1)
    got = _lean(bytes(v1), 0)
    assert got == _reference(bytes(v1), 0)
    assert got == "record at offset 0: topic length 130 is invalid for magic V1"
