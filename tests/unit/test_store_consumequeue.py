"""ConsumeQueue entry codec and the pure searches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.store.consumequeue import (
    CQ_ENTRY_BYTES,
    BoundaryType,
    decode_entries,
    encode_entry,
    first_true,
    search_offset_by_time,
)


def test_entry_layout_is_rocketmq_big_endian() -> None:
    data = encode_entry(0x0102030405060708, 0x11223344, -2)
    assert len(data) == CQ_ENTRY_BYTES == 20
    assert data == bytes.fromhex("010203040506070811223344fffffffffffffffe")


@given(st.lists(st.tuples(
    st.integers(0, 2**63 - 1), st.integers(1, 2**31 - 1), st.integers(-(2**63), 2**63 - 1)
), max_size=20), st.integers(0, 10**12))  # fmt: skip
def test_codec_round_trip(rows: list[tuple[int, int, int]], first: int) -> None:
    data = b"".join(encode_entry(*r) for r in rows)
    entries = decode_entries(data, first)
    assert [(e.physical_offset, e.size, e.tags_code) for e in entries] == rows
    assert [e.queue_offset for e in entries] == list(range(first, first + len(rows)))


def test_decode_stops_at_unwritten_entry() -> None:
    data = encode_entry(10, 5, 0) + bytes(20) + encode_entry(30, 5, 0)
    assert [e.physical_offset for e in decode_entries(data, 0)] == [10]


def test_encode_refuses_nonsense() -> None:
    with pytest.raises(AssertionError):
        encode_entry(-1, 5, 0)
    with pytest.raises(AssertionError):
        encode_entry(1, 0, 0)


@given(st.integers(0, 50), st.integers(0, 50))
def test_first_true(split: int, extra: int) -> None:
    hi = split + extra
    calls: list[int] = []

    def pred(i: int) -> bool:
        calls.append(i)
        return i >= split

    assert first_true(0, hi, pred) == min(split, hi)
    assert len(calls) <= hi.bit_length() + 1


TIMES = [100, 200, 200, 200, 300, 400]  # store times of queue offsets 10..15


def _time_at(q: int) -> int:
    return TIMES[q - 10]


@pytest.mark.parametrize(
    ("ts", "lower", "upper"),
    [
        (50, 10, 10),  # all newer: LOWER -> min; UPPER -> min
        (100, 10, 10),
        (150, 11, 10),
        (200, 11, 13),  # duplicates: first / last of the run
        (250, 14, 13),
        (400, 15, 15),
        (999, 16, 15),  # all older: LOWER -> max; UPPER -> last
    ],
)
def test_search_by_time(ts: int, lower: int, upper: int) -> None:
    assert search_offset_by_time(10, 16, ts, BoundaryType.LOWER, _time_at) == lower
    assert search_offset_by_time(10, 16, ts, BoundaryType.UPPER, _time_at) == upper


def test_search_empty_queue() -> None:
    assert search_offset_by_time(7, 7, 5, BoundaryType.LOWER, _time_at) == 7
    assert search_offset_by_time(7, 7, 5, BoundaryType.UPPER, _time_at) == 7
