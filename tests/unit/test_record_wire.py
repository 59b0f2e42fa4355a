"""Records from a producer's properties string as it came: the same bytes as the dict path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.message import (
    PROPERTY_CLUSTER,
    PROPERTY_UNIQ_KEY,
    MessageRecord,
    encode_record,
    properties_from_string,
    properties_to_string,
)
from protocol.record_wire import (
    append_property,
    encode_record_from_wire,
    find_property,
    properties_are_canonical,
    record_properties_from_wire,
)

# Few letters and both separators: duplicates, empty pairs and stray separators are common.
RAW_TEXT = st.text(alphabet="ab\x01\x02", max_size=16)
KEYS = st.sampled_from(["a", "b", "ab", "", "\x01", "a\x02", PROPERTY_UNIQ_KEY, PROPERTY_CLUSTER])
# No surrogates: text that came off the wire was UTF-8 (and ours must encode to it).
PLAIN = st.text(
    st.characters(
        min_codepoint=1,
        max_codepoint=0x10FFFF,
        exclude_categories=("Cs",),
        exclude_characters="\x01\x02",
    ),
    min_size=1,
    max_size=12,
)
PROPERTY_DICTS = st.dictionaries(
    st.sampled_from(["KEYS", "TAGS", "WAIT", PROPERTY_UNIQ_KEY, PROPERTY_CLUSTER]) | PLAIN,
    PLAIN | st.sampled_from(["", "cluster-a"]),
    max_size=5,
)


def _reference_canonical(text: str) -> bool:
    try:
        return properties_to_string(properties_from_string(text)) == text
    except ValueError:  # a value that held 0x01: the dict path refuses it
        return False


@settings(max_examples=2000)
@given(text=RAW_TEXT)
def test_canonical_is_what_the_dict_round_trip_gives_back(text: str) -> None:
    assert properties_are_canonical(text) == _reference_canonical(text)


@settings(max_examples=2000)
@given(text=RAW_TEXT, key=KEYS)
def test_find_property_is_the_parsers_answer(text: str, key: str) -> None:
    assert find_property(text, key) == properties_from_string(text).get(key)


def test_find_property_examples() -> None:
    text = "a\x011\x02b\x01\x02a\x012\x02ca\x013\x02a\x01\x02"
    assert find_property(text, "a") == "2"  # the last non-empty one
    assert find_property(text, "b") is None  # empty value: dropped
    assert find_property(text, "ca") == "3"
    assert find_property("x\x01y\x01z", "x") == "y\x01z"  # no final separator, 0x01 inside


def test_append_property_refuses_what_the_dict_path_refuses() -> None:
    assert append_property("a\x011\x02", "k", "") == "a\x011\x02"  # skipped, as to_string does
    for key, value in [("", "v"), ("k\x01", "v"), ("k", "v\x02")]:
        with pytest.raises(ValueError):
            append_property("", key, value)


def _dict_path_record(text: str, cluster: str, uniq_key: str, **fields: object) -> bytes:
    """What the send path builds today: parse, add UNIQ_KEY when missing, set CLUSTER."""
    properties = properties_from_string(text)
    if PROPERTY_UNIQ_KEY not in properties:
        properties[PROPERTY_UNIQ_KEY] = uniq_key
    properties[PROPERTY_CLUSTER] = cluster
    record = MessageRecord(properties=properties, store_timestamp_ms=0, **fields)  # type: ignore[arg-type]
    return encode_record(record)


RECORD_FIELDS = st.fixed_dictionaries(
    {
        "topic": st.sampled_from(["TopicA", "t" * 127, "t" * 128, "主题"]),
        "body": st.binary(max_size=64),
        "queue_id": st.integers(0, 2**31 - 1),
        "flag": st.integers(-(2**31), 2**31 - 1),
        "sys_flag": st.sampled_from([0, 1, 2, 8]),
        "born_timestamp_ms": st.integers(0, 2**63 - 1),
        "born_host": st.tuples(st.sampled_from(["127.0.0.1", "10.1.2.3"]), st.integers(0, 65535)),
        "store_host": st.just(("192.168.0.7", 10911)),
        "reconsume_times": st.integers(0, 16),
    }
)


@settings(deadline=None, max_examples=500)
@given(
    properties=PROPERTY_DICTS,
    noise=st.sampled_from(["", "\x02", "x\x01\x02", "WAIT\x01true\x02"]),
    cluster=st.sampled_from(["cluster-a", "DefaultCluster"]),
    fields=RECORD_FIELDS,
)
def test_records_from_the_wire_are_the_dict_paths_bytes(
    properties: dict[str, str], noise: str, cluster: str, fields: dict[str, object]
) -> None:
    text = properties_to_string(properties) + noise
    minted: list[str] = []

    def new_uniq_key() -> str:
        minted.append(f"7F0000010000000000000000000000{len(minted):02X}")
        return minted[-1]

    wire = record_properties_from_wire(text, cluster=cluster, new_uniq_key=new_uniq_key)
    stated = properties_from_string(text).get(PROPERTY_CLUSTER)
    if not _reference_canonical(text) or stated not in (None, cluster):
        assert wire is None  # the caller takes the dict path
        return
    assert wire is not None
    has_key = PROPERTY_UNIQ_KEY in properties_from_string(text)
    assert len(minted) == (0 if has_key else 1)  # a key is minted only when missing
    uniq_key = minted[0] if minted else "unused"
    expected = _dict_path_record(text, cluster, uniq_key, **fields)
    assert encode_record_from_wire(properties=wire, **fields) == expected  # type: ignore[arg-type]
