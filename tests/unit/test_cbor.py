"""Versioned CBOR envelopes: round trips and every way ``loads`` refuses."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cbor import dumps, loads
from protocol.errors import MalformedBody

payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(payloads, st.integers(1, 10))
def test_round_trip(payload: Any, version: int) -> None:
    assert loads(dumps("route", version, payload), kind="route", max_version=10) == (
        version,
        payload,
    )


def test_older_versions_are_returned_for_the_caller_to_upgrade() -> None:
    assert loads(dumps("k", 1, {"a": 1}), kind="k", max_version=3) == (1, {"a": 1})


def test_encoding_is_canonical() -> None:
    assert dumps("k", 1, {"b": 1, "a": 2}) == dumps("k", 1, {"a": 2, "b": 1})
    assert dumps("k", 1, None) == cbor2.dumps(
        {"kind": "k", "version": 1, "payload": None}, canonical=True
    )


def test_wrong_kind() -> None:
    with pytest.raises(MalformedBody, match="expected kind 'b', got 'a'"):
        loads(dumps("a", 1, {}), kind="b", max_version=1)


def test_newer_version() -> None:
    with pytest.raises(MalformedBody, match="version 3 is newer than supported 2"):
        loads(dumps("k", 3, {}), kind="k", max_version=2)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", b"\xa1", b"{not cbor}", b"\x9f\x01", dumps("k", 1, {}) + b"\x00"],
)
def test_garbage(data: bytes) -> None:
    with pytest.raises(MalformedBody):
        loads(data, kind="k", max_version=1)


@pytest.mark.parametrize(
    "envelope",
    [
        [1, 2],
        "k",
        {"kind": "k", "version": 1},
        {"kind": "k", "version": 1, "payload": 0, "extra": 1},
        {"kind": "k", "version": "1", "payload": 0},
        {"kind": "k", "version": True, "payload": 0},
        {"kind": "k", "version": 0, "payload": 0},
        {"kind": "k", "version": 1.0, "payload": 0},
    ],
)
def test_wrong_shape(envelope: Any) -> None:
    with pytest.raises(MalformedBody):
        loads(cbor2.dumps(envelope), kind="k", max_version=1)


def test_deep_nesting_is_refused() -> None:
    deep: Any = 0
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(MalformedBody):
        loads(dumps("k", 1, deep), kind="k", max_version=1)


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_malformed_body(data: bytes) -> None:
    with pytest.raises(MalformedBody):
        loads(data, kind="k", max_version=1)


def test_dumps_asserts_its_arguments() -> None:
    with pytest.raises(AssertionError):
        dumps("", 1, None)
    with pytest.raises(AssertionError):
        dumps("k", 0, None)
