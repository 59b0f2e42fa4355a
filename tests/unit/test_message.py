"""Tests for protocol/message.py: record, properties, id and batch codecs.

Known answers are built here field by field with ``struct.pack`` from the layout tables in
reference/rocketmq-wire.md §2.3 and §3.2, independently of the module under test; two more
come from records a Java broker wrote (ali-ons' test fixtures).
"""

from __future__ import annotations

import calendar
import contextlib
import itertools
import json
import os
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.batch_body import BatchItem, decode_batch_body, encode_batch_body
from protocol.errors import LimitExceeded, MalformedRecord
from protocol.message import (
    BLANK_MAGIC,
    MAGIC_V1,
    MAGIC_V2,
    MAX_PROPERTIES_BYTES,
    MIN_RECORD_BYTES,
    PROPERTY_KEYS,
    PROPERTY_SHARDING_KEY,
    PROPERTY_TAGS,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_BORNHOST_V6,
    SYSFLAG_COMPRESSED,
    SYSFLAG_STOREHOST_V6,
    SYSFLAG_TRANSACTION_COMMIT_TYPE,
    MessageRecord,
    UniqKeyGenerator,
    blank_marker,
    decode_properties,
    decode_record,
    encode_properties,
    encode_record,
    iter_records,
    java_string_hash,
    make_uniq_key_generator,
    next_month_start_ms,
    offset_msg_id,
    parse_offset_msg_id,
    peek_record_header,
    properties_from_string,
    properties_to_string,
    record_size,
    start_of_month_ms,
    tags_code,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# --- independent reference helpers -------------------------------------------------------


def ref_java_hash(s: str) -> int:
    """Java String.hashCode as the javadoc states it: sum of s[i]*31^(n-1-i), int32."""
    data = s.encode("utf-16-be", "surrogatepass")
    units = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    n = len(units)
    total = sum(u * pow(31, n - 1 - i, 2**32) for i, u in enumerate(units)) % 2**32
    return total - 2**32 if total >= 2**31 else total


def ref_record_bytes(
    *,
    magic: int = -626843481,
    body_crc: int | None = None,
    queue_id: int,
    flag: int,
    queue_offset: int,
    physical_offset: int,
    sys_flag: int,
    born_ts: int,
    born_ip: bytes,
    born_port: int,
    store_ts: int,
    store_ip: bytes,
    store_port: int,
    reconsume_times: int,
    prepared_offset: int,
    body: bytes,
    topic: bytes,
    props: bytes,
) -> bytes:
    """One CommitLog record, row by row from the §3.2 table."""
    topic_len = (
        struct.pack(">b", len(topic)) if magic == -626843481 else struct.pack(">h", len(topic))
    )
    rest = b"".join(
        [
            struct.pack(">i", magic),  # 2 MAGICCODE
            struct.pack(">i", zlib.crc32(body) & 0x7FFFFFFF if body_crc is None else body_crc),
            struct.pack(">i", queue_id),  # 4 QUEUEID
            struct.pack(">i", flag),  # 5 FLAG
            struct.pack(">q", queue_offset),  # 6 QUEUEOFFSET
            struct.pack(">q", physical_offset),  # 7 PHYSICALOFFSET
            struct.pack(">i", sys_flag),  # 8 SYSFLAG
            struct.pack(">q", born_ts),  # 9 BORNTIMESTAMP
            born_ip + struct.pack(">i", born_port),  # 10 BORNHOST
            struct.pack(">q", store_ts),  # 11 STORETIMESTAMP
            store_ip + struct.pack(">i", store_port),  # 12 STOREHOST
            struct.pack(">i", reconsume_times),  # 13 RECONSUMETIMES
            struct.pack(">q", prepared_offset),  # 14 PREPARED TRANSACTION OFFSET
            struct.pack(">i", len(body)) + body,  # 15 BODY
            topic_len + topic,  # 16 TOPIC
            struct.pack(">h", len(props)) + props,  # 17 PROPERTIES
        ]
    )
    return struct.pack(">i", 4 + len(rest)) + rest  # 1 TOTALSIZE


KNOWN_FIELDS = {
    "queue_id": 3,
    "flag": 7,
    "queue_offset": 1234,
    "physical_offset": 0x0102030405,
    "sys_flag": 0x8,
    "born_ts": 1700000000123,
    "born_ip": bytes([192, 168, 1, 20]),
    "born_port": 50123,
    "store_ts": 1700000000456,
    "store_ip": bytes([10, 0, 0, 2]),
    "store_port": 10911,
    "reconsume_times": 2,
    "prepared_offset": 99,
    "body": b"hello, rocketmq",
    "topic": b"TopicTest",
    "props": b"TAGS\x01TagA\x02KEYS\x01k1 k2\x02UNIQ_KEY\x01AC1100010000000000000000000A0001\x02",
}

KNOWN_RECORD = MessageRecord(
    topic="TopicTest",
    body=b"hello, rocketmq",
    queue_id=3,
    flag=7,
    queue_offset=1234,
    physical_offset=0x0102030405,
    sys_flag=SYSFLAG_TRANSACTION_COMMIT_TYPE,
    born_timestamp_ms=1700000000123,
    born_host=("192.168.1.20", 50123),
    store_timestamp_ms=1700000000456,
    store_host=("10.0.0.2", 10911),
    reconsume_times=2,
    prepared_transaction_offset=99,
    properties={
        "TAGS": "TagA",
        "KEYS": "k1 k2",
        "UNIQ_KEY": "AC1100010000000000000000000A0001",
    },
)

# First record of ali-ons test/fixtures/message.bin, written by a Java broker (RocketMQ 3.x).
JAVA_MESSAGE_HEX = (
    "00000084daa320a755bdf8fc000000000000000000000000000001140000006500e59f3e000000000000014f"
    "efa25a930a3e3c520000d3390000014fefa25ad50ada91a6000029cc00000000000000000000000000000016"
    "7b22726f6f6d223a2231222c226d7367223a2231227d09546f70696354657374000a54414753015461674102"
)
# The three records of ali-ons test/fixtures/batch_message.bin (a PULL body).
JAVA_PULL_BODY_HEX = (
    "0000007ddaa320a75fde743c00000000000000000000000000000116000000659560a2aa000000000000014f"
    "efb8eb8a0a13d7100000d0d20000014fefb8ebfc0ada91a6000029cc0000000000000000000000000000000f"
    "48656c6c6f204d657461512021212109546f70696354657374000a544147530154616741020000007ddaa320"
    "a75fde743c00000000000000000000000000000117000000659560d349000000000000014fefb8eb830a13d7"
    "100000d0cd0000014fefb8ebfe0ada91a6000029cc0000000000000000000000000000000f48656c6c6f204d"
    "657461512021212109546f70696354657374000a544147530154616741020000007ddaa320a75fde743c0000"
    "0000000000000000000000000118000000659560d578000000000000014fefb8eba40a13d7100000d0d60000"
    "014fefb8ebfe0ada91a6000029cc0000000000000000000000000000000f48656c6c6f204d65746151202121"
    "2109546f70696354657374000a54414753015461674102"
)


def make_record(**overrides: object) -> MessageRecord:
    return attrs.evolve(KNOWN_RECORD, **overrides)  # type: ignore[arg-type]


# --- constants and hashing ---------------------------------------------------------------


def test_magic_constants_are_javas_signed_ints() -> None:
    assert MAGIC_V1 == -626843481
    assert MAGIC_V1 & 0xFFFFFFFF == 0xDAA320A7
    assert MAGIC_V2 & 0xFFFFFFFF == 0xDAA320AB
    assert BLANK_MAGIC & 0xFFFFFFFF == 0xCBD43194
    assert PROPERTY_UNIQ_KEY == "UNIQ_KEY"
    assert PROPERTY_SHARDING_KEY == "__SHARDINGKEY"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 97),
        ("null", 3392903),
        ("hello", 99162322),
        ("polygenelubricants", -(2**31)),  # the classic Integer.MIN_VALUE hash
        ("\U0001f600", 0xD83D * 31 + 0xDE00),  # two UTF-16 code units, not one code point
    ],
)
def test_java_string_hash_known_answers(text: str, expected: int) -> None:
    assert java_string_hash(text) == expected
    assert ref_java_hash(text) == expected


@given(st.text())
def test_java_string_hash_matches_reference(text: str) -> None:
    assert java_string_hash(text) == ref_java_hash(text)


def test_tags_code() -> None:
    assert tags_code(None) == 0
    assert tags_code("") == 0
    assert tags_code("null") == 3392903  # ali-ons' untagged messages
    assert tags_code("TagA") == ref_java_hash("TagA")


# --- properties --------------------------------------------------------------------------


def test_encode_properties_known_answer() -> None:
    props = {"TAGS": "TagA", "KEYS": "a b", "中": "文"}
    expected = b"TAGS\x01TagA\x02KEYS\x01a b\x02" + "中\x01文\x02".encode()
    assert encode_properties(props) == expected
    assert properties_to_string(props) == expected.decode()
    assert encode_properties({}) == b""


def test_encode_properties_skips_empty_values() -> None:
    assert encode_properties({"KEYS": "", "TAGS": "x"}) == b"TAGS\x01x\x02"


@pytest.mark.parametrize(
    "props",
    [{"": "v"}, {"a\x01b": "v"}, {"k": "v\x02"}, {"k\x02": "v"}, {"k": "a\x01b"}],
)
def test_encode_properties_rejects_separators_and_empty_keys(props: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_properties(props)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"a\x01b", {"a": "b"}),  # no trailing separator
        (b"a\x01b\x02", {"a": "b"}),
        (b"\x02\x02a\x01b\x02\x02", {"a": "b"}),
        (b"\x01x\x02k\x01v\x02", {"k": "v"}),  # empty key skipped
        (b"k\x01\x02", {}),  # empty value skipped
        (b"kv\x02", {}),  # no 0x01 at all
        (b"k\x01v\x01w\x02", {"k": "v\x01w"}),  # split at the first 0x01
        (b"k\x011\x02k\x012\x02", {"k": "2"}),  # later duplicate wins
        (b"TAGS\x01null\x02", {"TAGS": "null"}),  # ali-ons, untagged
    ],
)
def test_decode_properties_tolerates_like_java(raw: bytes, expected: dict[str, str]) -> None:
    assert decode_properties(raw) == expected
    assert properties_from_string(raw.decode()) == expected


def test_decode_properties_rejects_invalid_utf8() -> None:
    with pytest.raises(MalformedRecord, match="UTF-8"):
        decode_properties(b"k\x01\xff\x02")


prop_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x01\x02"),
    min_size=1,
    max_size=20,
)
prop_maps = st.dictionaries(prop_text, prop_text, max_size=8)


@given(prop_maps)
def test_properties_round_trip(props: dict[str, str]) -> None:
    data = encode_properties(props)
    assert decode_properties(data) == props
    assert list(decode_properties(data)) == list(props)  # order kept


# --- records: known answers --------------------------------------------------------------


def test_encode_record_known_answer() -> None:
    expected = ref_record_bytes(**KNOWN_FIELDS)  # type: ignore[arg-type]
    assert encode_record(KNOWN_RECORD) == expected
    assert len(expected) == record_size(9, 15, len(KNOWN_FIELDS["props"]))  # type: ignore[arg-type]
    assert expected[88 : 88 + 15] == b"hello, rocketmq"  # body starts at offset 88 (§3.2)


def test_decode_record_known_answer() -> None:
    data = ref_record_bytes(**KNOWN_FIELDS)  # type: ignore[arg-type]
    record, size = decode_record(data)
    assert size == len(data)
    assert record == KNOWN_RECORD
    assert record.body_crc == zlib.crc32(b"hello, rocketmq") & 0x7FFFFFFF
    assert record.tags == "TagA"
    assert record.keys == ["k1", "k2"]
    assert record.uniq_key == "AC1100010000000000000000000A0001"
    assert record.msg_id == "0A00000200002A9F0000000102030405"


def test_record_written_by_java_broker() -> None:
    data = bytes.fromhex(JAVA_MESSAGE_HEX)
    record, size = decode_record(data + b"\xee" * 10)  # trailing bytes are not its business
    assert size == 132
    assert record.topic == "TopicTest"
    assert record.body == b'{"room":"1","msg":"1"}'
    assert record.properties == {PROPERTY_TAGS: "TagA"}
    assert record.queue_offset == 276
    assert record.born_host == ("10.62.60.82", 54073)
    assert record.store_host == ("10.218.145.166", 10700)
    assert record.msg_id == "0ADA91A6000029CC0000006500E59F3E"  # as ali-ons' own test expects
    assert encode_record(record) == data  # byte-exact re-encode


def test_pull_body_written_by_java_broker() -> None:
    data = bytes.fromhex(JAVA_PULL_BODY_HEX)
    records = list(iter_records(data))
    assert [r.msg_id for r in records] == [
        "0ADA91A6000029CC000000659560A2AA",
        "0ADA91A6000029CC000000659560D349",
        "0ADA91A6000029CC000000659560D578",
    ]
    assert all(r.body == b"Hello MetaQ !!!" for r in records)
    assert b"".join(encode_record(r) for r in records) == data


def test_long_topic_switches_to_magic_v2() -> None:
    for topic, magic, header in (
        ("t" * 127, MAGIC_V1, b"\x7f"),
        ("t" * 128, MAGIC_V2, b"\x00\x80"),
    ):
        data = encode_record(make_record(topic=topic))
        assert peek_record_header(data) == (len(data), magic)
        assert data[88 + 15 : 88 + 15 + len(header)] == header
        assert len(data) == record_size(
            len(topic), 15, len(encode_properties(KNOWN_RECORD.properties))
        )
        assert decode_record(data)[0].topic == topic


def test_topic_length_counts_utf8_bytes() -> None:
    topic = "é" * 64  # 64 chars, 128 bytes: must not fit a signed length byte
    data = encode_record(make_record(topic=topic))
    assert peek_record_header(data)[1] == MAGIC_V2
    assert decode_record(data)[0].topic == topic


def test_ipv4_mapped_hosts_are_stored_as_ipv4() -> None:
    rec = make_record(born_host=("::ffff:1.2.3.4", 5), store_host=("::ffff:10.0.0.2", 10911))
    decoded, _ = decode_record(encode_record(rec))
    assert decoded.born_host == ("1.2.3.4", 5)
    assert decoded.store_host == ("10.0.0.2", 10911)
    assert decoded.sys_flag & (SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6) == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"born_host": ("::1", 1)},
        {"store_host": ("2001:db8::1", 10911)},
        {"store_host": ("not-an-ip", 10911)},
        {"store_host": ("10.0.0.2", 70000)},
        {"born_host": ("10.0.0.2", -1)},
        {"topic": ""},
        {"topic": "t" * 32768},
        {"sys_flag": SYSFLAG_BORNHOST_V6},
        {"queue_id": 2**31},
        {"physical_offset": 2**63},
        {"properties": {"k": "v" * MAX_PROPERTIES_BYTES}},
        {"properties": {"k": "a\x02b"}},
    ],
)
def test_encode_record_rejects(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        encode_record(make_record(**overrides))


def test_record_properties_and_hash() -> None:
    rec = make_record(properties={PROPERTY_KEYS: " a  b ", PROPERTY_TAGS: "null"})
    assert rec.keys == ["a", "b"]
    assert rec.tags == "null"
    assert rec.uniq_key is None
    assert make_record(properties={}).keys == []
    assert hash(rec) == hash(make_record(properties={}))  # properties left out of hash()


# --- records: rejects --------------------------------------------------------------------


def known_bytes(**overrides: object) -> bytes:
    fields = dict(KNOWN_FIELDS, **overrides)
    return ref_record_bytes(**fields)  # type: ignore[arg-type]


def set_int(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def test_decode_rejects_bad_magic() -> None:
    data = set_int(known_bytes(), 4, ">I", 0x12345678)
    with pytest.raises(MalformedRecord, match=r"offset 0: bad magic 0x12345678"):
        decode_record(data)


def test_decode_rejects_blank_marker() -> None:
    with pytest.raises(MalformedRecord, match="blank end-of-segment marker"):
        decode_record(blank_marker(100) + bytes(92))


def test_decode_names_the_offset_of_the_bad_record() -> None:
    good = known_bytes()
    bad = set_int(good, 4, ">i", 0)
    with pytest.raises(MalformedRecord, match=f"record at offset {len(good)}: bad magic"):
        list(iter_records(good + bad))


def test_decode_rejects_truncated_buffer() -> None:
    data = known_bytes()
    with pytest.raises(MalformedRecord, match=f"truncated, size says {len(data)} bytes"):
        decode_record(data[:-1])
    with pytest.raises(MalformedRecord, match="only 5 bytes left"):
        decode_record(data[:5])


@given(st.data())
def test_every_strict_prefix_is_refused(data: st.DataObject) -> None:
    raw = encode_record(data.draw(records()))
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MalformedRecord):
        decode_record(raw[:cut])


def test_decode_rejects_size_field_larger_than_fields() -> None:
    data = known_bytes()
    lying = set_int(data, 0, ">i", len(data) + 4) + b"\x00" * 4
    with pytest.raises(
        MalformedRecord, match=f"size says {len(data) + 4} bytes but its fields take {len(data)}"
    ):
        decode_record(lying)


def test_decode_rejects_size_field_smaller_than_fields() -> None:
    data = known_bytes()
    lying = set_int(data, 0, ">i", len(data) - 1)
    with pytest.raises(MalformedRecord, match=r"properties length \d+ overruns"):
        decode_record(lying)


@pytest.mark.parametrize(
    ("size", "match"),
    [(0, "below the minimum"), (-5, "below the minimum"), (MIN_RECORD_BYTES - 1, "below")],
)
def test_decode_rejects_size_below_minimum(size: int, match: str) -> None:
    with pytest.raises(MalformedRecord, match=match):
        decode_record(set_int(known_bytes(), 0, ">i", size))


def test_decode_rejects_size_above_maximum() -> None:
    data = known_bytes()
    with pytest.raises(MalformedRecord, match="above the maximum 100"):
        decode_record(data, max_size=100)


def test_decode_rejects_crc_mismatch_unless_told_not_to_check() -> None:
    data = bytearray(known_bytes())
    data[88] ^= 0xFF  # first body byte
    with pytest.raises(MalformedRecord, match="offset 0: body CRC mismatch"):
        decode_record(bytes(data))
    record, _ = decode_record(bytes(data), check_crc=False)
    assert record.body[0] == ord("h") ^ 0xFF


def test_decode_rejects_bad_lengths() -> None:
    with pytest.raises(MalformedRecord, match="body length -1"):
        decode_record(set_int(known_bytes(), 84, ">i", -1))
    with pytest.raises(MalformedRecord, match="body length 1000"):
        decode_record(set_int(known_bytes(), 84, ">i", 1000))
    topic_at = 88 + len(KNOWN_FIELDS["body"])  # type: ignore[arg-type]
    with pytest.raises(MalformedRecord, match="topic length 200 is invalid for magic V1"):
        decode_record(set_int(known_bytes(), topic_at, ">B", 200))
    with pytest.raises(MalformedRecord, match="topic length 0"):
        decode_record(known_bytes(topic=b""))
    props_at = topic_at + 1 + len(KNOWN_FIELDS["topic"])  # type: ignore[arg-type]
    with pytest.raises(MalformedRecord, match="properties length -2"):
        decode_record(set_int(known_bytes(), props_at, ">h", -2))


def test_decode_rejects_invalid_utf8_and_bad_ports() -> None:
    with pytest.raises(MalformedRecord, match="topic is not valid UTF-8"):
        decode_record(known_bytes(topic=b"\xc3("))
    with pytest.raises(MalformedRecord, match="properties are not valid UTF-8"):
        decode_record(known_bytes(props=b"k\x01\xff\x02"))
    with pytest.raises(MalformedRecord, match="port out of range"):
        decode_record(known_bytes(store_port=70000))


def test_decode_reads_ipv6_hosts_from_java_stores() -> None:
    data = known_bytes(
        sys_flag=SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6,
        born_ip=bytes.fromhex("20010db8000000000000000000000001"),
        store_ip=bytes.fromhex("fe800000000000000000000000000002"),
    )
    record, size = decode_record(data)
    assert size == len(data) == len(known_bytes()) + 24
    assert record.born_host == ("2001:db8::1", 50123)
    assert record.store_host == ("fe80::2", 10911)
    assert record.body == b"hello, rocketmq"
    assert record.msg_id == "FE800000000000000000000000000002" + "00002A9F" + "0000000102030405"
    with pytest.raises(ValueError):
        encode_record(record)  # we never write IPv6 hosts


def test_decode_ipv6_flag_on_a_small_record_is_refused() -> None:
    data = set_int(known_bytes(body=b""), 36, ">i", SYSFLAG_STOREHOST_V6)
    with pytest.raises(MalformedRecord):
        decode_record(data[: MIN_RECORD_BYTES + 10])


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(0, 3))
def test_decode_of_garbage_raises_only_malformed_record(garbage: bytes, pos: int) -> None:
    # Make the garbage look like a record more often than chance would.
    head = struct.pack(">ii", len(garbage), MAGIC_V1 if pos % 2 else MAGIC_V2)
    for data in (garbage, head + garbage):
        with contextlib.suppress(MalformedRecord):
            decode_record(data, pos, check_crc=bool(pos & 2))


# --- records: round trips ----------------------------------------------------------------

int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
hosts = st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535))
topics = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=140)


@st.composite
def records(draw: st.DrawFn) -> MessageRecord:
    return MessageRecord(
        topic=draw(topics),
        body=draw(st.binary(max_size=4096)),
        queue_id=draw(int32),
        flag=draw(int32),
        queue_offset=draw(int64),
        physical_offset=draw(int64),
        sys_flag=draw(int32) & ~(SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6),
        born_timestamp_ms=draw(int64),
        born_host=draw(hosts),
        store_timestamp_ms=draw(int64),
        store_host=draw(hosts),
        reconsume_times=draw(int32),
        prepared_transaction_offset=draw(int64),
        properties=draw(prop_maps),
    )


@given(records())
def test_record_round_trip(record: MessageRecord) -> None:
    data = encode_record(record)
    topic_len = len(record.topic.encode())
    assert len(data) == record_size(
        topic_len, len(record.body), len(encode_properties(record.properties))
    )
    assert peek_record_header(data) == (len(data), MAGIC_V1 if topic_len <= 127 else MAGIC_V2)
    decoded, size = decode_record(data)
    assert size == len(data)
    assert decoded == record
    assert decode_record(memoryview(data))[0] == record
    assert decode_record(bytearray(data))[0] == record


@given(st.lists(records(), max_size=5), st.binary(max_size=3))
def test_iter_records_walks_concatenated_records(recs: list[MessageRecord], prefix: bytes) -> None:
    data = b"".join(encode_record(r) for r in recs)
    assert list(iter_records(data)) == recs
    # decode_record at an offset inside a larger buffer
    pos = len(prefix)
    for r in recs:
        record, size = decode_record(prefix + data, pos)
        assert record == r
        pos += size


# --- blank marker and header peek --------------------------------------------------------


def test_blank_marker() -> None:
    marker = blank_marker(4096)
    assert marker == struct.pack(">iI", 4096, 0xCBD43194)
    assert peek_record_header(b"xx" + marker, 2) == (4096, BLANK_MAGIC)
    with pytest.raises(ValueError):
        blank_marker(7)
    with pytest.raises(ValueError):
        blank_marker(2**31)


def test_peek_needs_eight_bytes() -> None:
    with pytest.raises(MalformedRecord, match="offset 3: only 5 bytes left"):
        peek_record_header(bytes(8), 3)
    assert peek_record_header(known_bytes()) == (len(known_bytes()), MAGIC_V1)


# --- message ids -------------------------------------------------------------------------


def test_offset_msg_id_known_answers() -> None:
    assert offset_msg_id("127.0.0.1", 10911, 0) == "7F00000100002A9F0000000000000000"
    assert (
        offset_msg_id("10.218.145.166", 10700, 433858845551) == "0ADA91A6000029CC0000006504009B6F"
    )
    assert offset_msg_id("::ffff:127.0.0.1", 10911, 1) == "7F00000100002A9F0000000000000001"
    assert parse_offset_msg_id("0ADA91A6000029CC0000006504009B6F") == (
        "10.218.145.166",
        10700,
        433858845551,
    )
    assert parse_offset_msg_id("7f00000100002a9f00000000000000ff") == ("127.0.0.1", 10911, 255)
    ipv6 = offset_msg_id("2001:db8::1", 10911, 5)
    assert len(ipv6) == 56
    assert parse_offset_msg_id(ipv6) == ("2001:db8::1", 10911, 5)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7F00000100002A9F000000000000000",  # 31 digits
        "7F00000100002A9F00000000000000000",  # 33 digits
        "7F00000100002A9F000000000000000G",
        "7F 0000100002A9F0000000000000000",
        "7F00000100002A9F0000000000000000" + " " * 24,  # bytes.fromhex skips whitespace
        "7F0000010001869F0000000000000000",  # port 99999
        "7F00000100002A9F8000000000000000",  # negative offset
    ],
)
def test_parse_offset_msg_id_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_offset_msg_id(text)


@pytest.mark.parametrize(
    ("ip", "port", "offset"),
    [
        ("1.2.3.4", -1, 0),
        ("1.2.3.4", 65536, 0),
        ("1.2.3.4", 1, -1),
        ("nope", 1, 0),
        ("1.2.3.4", 1, 2**63),
    ],
)
def test_offset_msg_id_rejects(ip: str, port: int, offset: int) -> None:
    with pytest.raises(ValueError):
        offset_msg_id(ip, port, offset)


@given(st.ip_addresses(v=4).map(str), st.integers(0, 65535), st.integers(0, 2**63 - 1))
def test_offset_msg_id_round_trip(ip: str, port: int, offset: int) -> None:
    text = offset_msg_id(ip, port, offset)
    assert len(text) == 32
    assert text == text.upper()
    assert parse_offset_msg_id(text) == (ip, port, offset)


def utc_ms(year: int, month: int, day: int, *, hour: int = 0, minute: int = 0, ms: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, 0)) * 1000 + ms


@pytest.mark.parametrize(
    ("now", "start", "next_start"),
    [
        (utc_ms(2024, 2, 29, hour=12, minute=34, ms=789), utc_ms(2024, 2, 1), utc_ms(2024, 3, 1)),
        (utc_ms(2024, 12, 31, hour=23, minute=59, ms=999), utc_ms(2024, 12, 1), utc_ms(2025, 1, 1)),
        (utc_ms(2025, 1, 1), utc_ms(2025, 1, 1), utc_ms(2025, 2, 1)),
        (0, 0, utc_ms(1970, 2, 1)),
    ],
)
def test_month_boundaries(now: int, start: int, next_start: int) -> None:
    assert start_of_month_ms(now) == start
    assert next_month_start_ms(now) == next_start


def test_uniq_key_layout() -> None:
    month = utc_ms(2024, 5, 1)
    gen = UniqKeyGenerator(
        ip=bytes([10, 1, 2, 3]), pid=0x12345, class_loader_hash=0xDEADBEEF, month_start_ms=month
    )
    first = gen.next_id(month + 0x01020304)
    assert len(first) == 32
    # ip | pid (low 16 bits) | class-loader hash | ms since month start | counter
    assert first == "0A010203" + "2345" + "DEADBEEF" + "01020304" + "0000"
    assert gen.next_id(month + 5) == "0A0102032345DEADBEEF" + "00000005" + "0001"
    assert gen.counter == 2


def test_uniq_key_counter_wraps_and_month_rolls_over() -> None:
    month = utc_ms(2024, 1, 1)
    gen = UniqKeyGenerator(
        ip=bytes(4), pid=1, class_loader_hash=-1, month_start_ms=month, counter=0xFFFF
    )
    assert gen.next_id(month).endswith("00000000FFFF")
    assert gen.next_id(month).endswith("000000000000")
    assert gen.next_id(month - 500).endswith("000000000001")  # small clock step back → 0
    feb = utc_ms(2024, 2, 1)
    assert gen.next_id(feb + 7).endswith("000000070002")
    assert gen.month_start_ms == feb
    assert gen.next_id(feb)[:20] == "00000000" + "0001" + "FFFFFFFF"


def test_make_uniq_key_generator_is_deterministic_given_its_inputs() -> None:
    now = utc_ms(2024, 5, 17, hour=8, ms=1)
    a = make_uniq_key_generator("192.168.0.9", 4242, random.Random(7), now)
    b = make_uniq_key_generator("192.168.0.9", 4242, random.Random(7), now)
    expected_hash = random.Random(7).getrandbits(32)
    assert a.next_id(now) == b.next_id(now)
    key = a.next_id(now)
    assert key[:8] == "C0A80009"
    assert key[8:12] == f"{4242:04X}"
    assert key[12:20] == f"{expected_hash:08X}"
    assert int(key[20:28], 16) == now - utc_ms(2024, 5, 1)
    assert key[28:] == "0001"
    assert len(make_uniq_key_generator("::1", 1, random.Random(1), now).next_id(now)) == 56
    with pytest.raises(ValueError):
        UniqKeyGenerator(ip=b"\x01\x02", pid=1, class_loader_hash=1, month_start_ms=0)


# --- batch bodies ------------------------------------------------------------------------


def ref_batch_item(flag: int, body: bytes, props: bytes) -> bytes:
    """One item of a SEND_BATCH_MESSAGE body as MessageDecoder.encodeMessage writes it."""
    rest = b"".join(
        [
            struct.pack(">i", 0),  # magic
            struct.pack(">i", 0),  # body CRC
            struct.pack(">i", flag),
            struct.pack(">i", len(body)) + body,
            struct.pack(">h", len(props)) + props,
        ]
    )
    return struct.pack(">i", 4 + len(rest)) + rest


def test_batch_body_known_answer() -> None:
    expected = ref_batch_item(1, b"one", b"TAGS\x01a\x02") + ref_batch_item(0, b"", b"")
    items = [
        BatchItem(flag=1, body=b"one", properties={"TAGS": "a"}),
        BatchItem(body=b""),
    ]
    assert encode_batch_body(items) == expected
    assert decode_batch_body(expected) == items
    assert decode_batch_body(b"") == []


batch_items = st.builds(BatchItem, body=st.binary(max_size=512), flag=int32, properties=prop_maps)


@given(st.lists(batch_items, max_size=6))
def test_batch_body_round_trip(items: list[BatchItem]) -> None:
    assert decode_batch_body(encode_batch_body(items)) == items


def test_decode_batch_body_rejects() -> None:
    good = ref_batch_item(0, b"body", b"k\x01v\x02")
    with pytest.raises(MalformedRecord, match=f"batch item at offset {len(good)}: only 5 bytes"):
        decode_batch_body(good + b"\x00" * 5)
    with pytest.raises(MalformedRecord, match="size says 99"):
        decode_batch_body(set_int(good, 0, ">i", 99))
    with pytest.raises(MalformedRecord, match="body length -1"):
        decode_batch_body(set_int(good, 16, ">i", -1))
    with pytest.raises(MalformedRecord, match="body length 50"):
        decode_batch_body(set_int(good, 16, ">i", 50))
    with pytest.raises(MalformedRecord, match="properties length -1"):
        decode_batch_body(set_int(good, 24, ">h", -1))
    with pytest.raises(MalformedRecord, match="properties length 20"):
        decode_batch_body(set_int(good, 24, ">h", 20))
    with pytest.raises(MalformedRecord, match="not valid UTF-8"):
        decode_batch_body(ref_batch_item(0, b"", b"k\x01\xff\x02"))


@given(st.lists(batch_items, min_size=1, max_size=3), st.data())
def test_batch_body_cut_inside_an_item_is_refused(
    items: list[BatchItem], data: st.DataObject
) -> None:
    raw = encode_batch_body(items)
    boundaries = set(itertools.accumulate(len(encode_batch_body([i])) for i in items))
    cut = data.draw(st.integers(1, len(raw) - 1).filter(lambda c: c not in boundaries))
    with pytest.raises(MalformedRecord):
        decode_batch_body(raw[:cut])
    # A cut between items is a shorter, valid batch.
    for n, end in enumerate(sorted(boundaries), start=1):
        assert decode_batch_body(raw[:end]) == items[:n]


def test_encode_batch_body_rejects() -> None:
    with pytest.raises(ValueError):
        encode_batch_body([BatchItem(body=b"", properties={"k": "v" * 40000})])
    with pytest.raises(ValueError):
        encode_batch_body([BatchItem(body=b"", flag=2**31)])


# --- ali-ons compatibility ---------------------------------------------------------------

ALIONS_DIR = Path(os.environ.get("RMQ_ALIONS_DIR", REPO_ROOT / "tests" / "compat" / "node_modules"))
NODE = shutil.which("node")

# Reads {"records": hex, "tags": [...], "msgIds": [...]} on stdin and answers with what
# ali-ons' own decoder and helpers make of them.
NODE_SCRIPT = r"""
const path = require('path');
const { createRequire } = require('module');
const req = createRequire(path.join(process.env.ALIONS_DIR, 'ali-ons', 'package.json'));
const ByteBuffer = req('byte');
const decoder = req('./lib/message/message_decoder');
const utils = req('./lib/utils');
let input = '';
process.stdin.on('data', d => { input += d; });
process.stdin.on('end', () => {
  const q = JSON.parse(input);
  const msgs = decoder.decodes(ByteBuffer.wrap(Buffer.from(q.records, 'hex')));
  const messages = msgs.map(m => ({
    msgId: m.msgId, topic: m.topic, storeSize: m.storeSize, bodyCRC: m.bodyCRC,
    body: m.body ? Buffer.from(m.body).toString('hex') : '', properties: m.properties,
    queueId: m.queueId, flag: m.flag, queueOffset: m.queueOffset,
    commitLogOffset: m.commitLogOffset, sysFlag: m.sysFlag, bornTimestamp: m.bornTimestamp,
    bornHost: m.bornHost, storeTimestamp: m.storeTimestamp, storeHost: m.storeHost,
    reconsumeTimes: m.reconsumeTimes, preparedTransactionOffset: m.preparedTransactionOffset,
  }));
  const hashes = q.tags.map(t => utils.hashCode(t));
  const ids = q.msgIds.map(id => {
    const d = decoder.decodeMessageId(id);
    return [d.address, d.offset.toString()];
  });
  process.stdout.write(JSON.stringify({ messages, hashes, ids }));
});
"""


@pytest.mark.compat
@pytest.mark.skipif(
    NODE is None or not (ALIONS_DIR / "ali-ons").is_dir(),
    reason=f"needs node and ali-ons under {ALIONS_DIR} (set RMQ_ALIONS_DIR)",
)
def test_ali_ons_decodes_our_records() -> None:
    assert NODE is not None
    compressed = zlib.compress(b"inflate me " * 50)
    recs = [
        KNOWN_RECORD,
        make_record(
            topic="%RETRY%GID_alions",
            body=b"",
            sys_flag=0,
            physical_offset=2**40 + 17,
            queue_offset=2**33,
            properties={"TAGS": "null", "KEYS": "a b", "中文": "值", "RECONSUME_TIME": "3"},
        ),
        make_record(topic="t" * 127, body=compressed, sys_flag=SYSFLAG_COMPRESSED),
    ]
    tags = ["TagA", "null", "中文", "polygenelubricants", ""]
    ids = [r.msg_id for r in recs]
    query = {"records": b"".join(map(encode_record, recs)).hex(), "tags": tags, "msgIds": ids}
    proc = subprocess.run(
        [NODE, "-e", NODE_SCRIPT],
        input=json.dumps(query),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ALIONS_DIR": str(ALIONS_DIR)},
        check=True,
    )
    answer = json.loads(proc.stdout)
    got = answer["messages"]
    assert len(got) == len(recs)
    for rec, msg in zip(recs, got, strict=True):
        body = zlib.decompress(rec.body) if rec.sys_flag & SYSFLAG_COMPRESSED else rec.body
        props = {k: v for k, v in msg["properties"].items() if k}  # ali-ons adds "" and TAGS
        assert msg["msgId"] == rec.msg_id
        assert msg["topic"] == rec.topic
        assert msg["storeSize"] == len(encode_record(rec))
        assert msg["bodyCRC"] == rec.body_crc
        assert bytes.fromhex(msg["body"]) == body  # ali-ons inflates zlib bodies itself
        assert props == dict(rec.properties)
        assert msg["queueId"] == rec.queue_id
        assert msg["flag"] == rec.flag
        assert msg["queueOffset"] == rec.queue_offset
        assert msg["commitLogOffset"] == rec.physical_offset
        assert msg["sysFlag"] == rec.sys_flag
        assert msg["bornTimestamp"] == rec.born_timestamp_ms
        assert msg["storeTimestamp"] == rec.store_timestamp_ms
        assert msg["bornHost"] == f"{rec.born_host[0]}:{rec.born_host[1]}"
        assert msg["storeHost"] == f"{rec.store_host[0]}:{rec.store_host[1]}"
        assert msg["reconsumeTimes"] == rec.reconsume_times
        assert msg["preparedTransactionOffset"] == rec.prepared_transaction_offset
    assert answer["hashes"] == [tags_code(t) for t in tags]
    assert answer["ids"] == [
        [f"{r.store_host[0]}:{r.store_host[1]}", str(r.physical_offset)] for r in recs
    ]


def test_decode_batch_body_stops_past_max_items() -> None:
    """Issue 13 row 4: the item count is bounded while decoding, not after."""
    body = encode_batch_body([BatchItem(body=b"")] * 1000)
    assert len(decode_batch_body(body, max_items=1000)) == 1000
    with pytest.raises(LimitExceeded, match="more than 999 messages"):
        decode_batch_body(body, max_items=999)
