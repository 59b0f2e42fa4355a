"""IndexFile pure pieces: hashing, header, positions, keys, names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.store.index import (
    ENTRY_BYTES,
    HEADER_BYTES,
    HashedKey,
    IndexHeader,
    add_index_keys,
    entry_position,
    index_file_bytes,
    index_file_name,
    index_key_hash,
    java_hash_unsigned,
    parse_index_file_name,
    slot_of,
    slot_position,
    time_diff_s,
    topic_key_hash,
    topic_key_hash_python,
)
from protocol.message import (
    java_string_hash,
)


@given(st.text(max_size=200))
def test_fast_hash_matches_java_hashcode(s: str) -> None:
    assert java_hash_unsigned(s) == java_string_hash(s) & 0xFFFFFFFF


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
def test_fast_hash_ascii(s: str) -> None:
    assert java_hash_unsigned(s) == java_string_hash(s) & 0xFFFFFFFF


@pytest.mark.parametrize("length", [511, 512, 513, 1025, 4301, 20_000])
def test_keys_longer_than_int_conversion_allows_hash_as_java_does(length: int) -> None:
    # int(..., 31) refuses more than 4300 digits: a QUERY_MESSAGE key or KEYS token that
    # long answered "internal error", and under RMQ_PURE_PYTHON it failed the put path.
    key = "".join(chr(32 + i % 95) for i in range(length))
    assert java_hash_unsigned(key) == java_string_hash(key) & 0xFFFFFFFF
    expected = index_key_hash(f"T#{key}")
    assert topic_key_hash("T", key) == topic_key_hash_python("T", key) == expected


def test_known_java_hashes() -> None:
    assert java_hash_unsigned("") == 0
    assert java_hash_unsigned("a") == 97
    assert java_hash_unsigned("hello") == 99162322
    # "polygenelubricants".hashCode() == Integer.MIN_VALUE: Math.abs overflows, RocketMQ uses 0.
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert index_key_hash("polygenelubricants") == 0


@given(st.text(max_size=60))
def test_index_key_hash_is_abs(s: str) -> None:
    h = java_string_hash(s)
    expected = 0 if h == -(2**31) else abs(h)
    assert index_key_hash(s) == expected
    assert 0 <= slot_of(expected, 5_000_000) < 5_000_000


@given(
    st.text(min_size=1, max_size=30),
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet="0123456789ABCDEF", max_size=80),  # UNIQ_KEYs
        st.text(alphabet=st.characters(min_codepoint=35, max_codepoint=75), max_size=80),
        st.text(alphabet="a\ud800\udfff\U0001f600\uffff\x00", max_size=10),
    ),
)
def test_topic_key_hash_is_the_hash_of_the_joined_key(topic: str, key: str) -> None:
    # topic_key_hash is the compiled one where protocol/_speedups.c is built.
    expected = index_key_hash(f"{topic}#{key}")
    assert topic_key_hash(topic, key) == topic_key_hash_python(topic, key) == expected


def test_topic_key_hash_known_values() -> None:
    # Keys within the window, outside it, non-ASCII, and past the precomputed lengths.
    for topic, key in [
        ("BenchTopic", "7F0000010000ABCDEF01000000000ABC"),
        ("T", "order-1"),
        ("T", "Ünï"),
        ("Tö", "0A"),
        ("T", "A" * 200),
        ("T", "\U0001f600\ud800"),
    ]:
        expected = index_key_hash(f"{topic}#{key}")
        assert topic_key_hash(topic, key) == topic_key_hash_python(topic, key) == expected


def test_layout_sizes_match_rocketmq_defaults() -> None:
    assert HEADER_BYTES == 40 and ENTRY_BYTES == 20
    assert index_file_bytes(5_000_000, 20_000_000) == 420_000_040
    assert slot_position(0) == 40
    assert slot_position(3) == 52
    assert entry_position(10, 1) == 40 + 40 + 20


def test_header_round_trip() -> None:
    h = IndexHeader(
        begin_timestamp_ms=1, end_timestamp_ms=2, begin_phy_offset=3, end_phy_offset=4,
        hash_slot_count=5, index_count=6,
    )  # fmt: skip
    data = h.encode()
    assert len(data) == 40
    assert data[:8] == (1).to_bytes(8, "big")
    assert data[-4:] == (6).to_bytes(4, "big")
    assert IndexHeader.decode(data) == h


def test_time_diff_clamps() -> None:
    assert time_diff_s(5000, 0) == 0  # no begin timestamp yet
    assert time_diff_s(5999, 1000) == 4
    assert time_diff_s(500, 1000) == 0
    assert time_diff_s(2**62, 1) == 2**31 - 1


def test_add_index_keys() -> None:
    """UNIQ_KEY first, then each non-empty KEYS token, hashed as ``topic#key``."""
    out: list[HashedKey] = [(1, 2, 3)]
    assert add_index_keys(out, "T", "U1", "a  b", 100, 7)
    assert out == [(1, 2, 3)] + [(index_key_hash(k), 100, 7) for k in ("T#U1", "T#a", "T#b")]
    out = []
    assert not add_index_keys(out, "T", None, None, 0, 0)
    assert not add_index_keys(out, "T", "", " ", 0, 0)
    assert out == []
    assert add_index_keys(out, "T", None, "k", 5, 6)
    assert out == [(index_key_hash("T#k"), 5, 6)]


@given(st.integers(0, 4102444800000))
def test_file_name_round_trip(ms: int) -> None:
    name = index_file_name(ms)
    assert len(name) == 17 and name.isdigit()
    assert parse_index_file_name(name) == ms


def test_file_name_examples() -> None:
    assert index_file_name(0) == "19700101000000000"
    assert parse_index_file_name("00000000000000000x") is None
    assert parse_index_file_name("checkpoint") is None
