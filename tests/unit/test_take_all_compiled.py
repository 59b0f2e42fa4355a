"""The compiled ``take_all`` (protocol/_speedups_cq.c) is ``StoreReads._take_all``'s walk
over raw ConsumeQueue entries: the same status, next begin offset and picked entries for
any entries and limits, and None (the Python walk runs) for what it does not take."""

from __future__ import annotations

import types
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.store import reads
from broker.store.consumequeue import CQ_ENTRY
from broker.store.reads import StoreReads
from tests.support.speedups import with_and_without

_speedups = pytest.importorskip(
    "protocol._speedups", reason="the C extension is not built (no compiler on this machine)"
)

#: Entries as a store holds them, and the unwritten and damaged ones a walk must stop at.
ENTRY = st.tuples(
    st.integers(min_value=-3, max_value=3) | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([10, 20, 30])  # sums that meet max_bytes exactly
    | st.integers(min_value=-2, max_value=4_200)
    | st.integers(-(2**31), 2**31 - 1),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


def _walk(min_physical: int, data: bytes, offset: int, max_count: int, max_bytes: int) -> Any:
    """``StoreReads._take_all`` over ``data`` (the compiled walk in use where built)."""
    store: Any = types.SimpleNamespace(_clog=types.SimpleNamespace(min_offset=min_physical))
    return StoreReads._take_all(store, data, offset, max_count, max_bytes)


@settings(max_examples=500, deadline=None)
@given(
    entries=st.lists(ENTRY, max_size=40),
    offset=st.integers(min_value=0, max_value=2**40) | st.just(2**63 - 41),
    max_count=st.integers(min_value=1, max_value=40),
    max_bytes=st.sampled_from([10, 20, 30, 40, 60])
    | st.integers(min_value=1, max_value=200_000)
    | st.just(2**62),
    min_physical=st.integers(min_value=-2, max_value=5_000) | st.integers(-(2**63), 2**63 - 1),
)
def test_take_all_is_the_python_walk(
    entries: list[tuple[int, int, int]],
    offset: int,
    max_count: int,
    max_bytes: int,
    min_physical: int,
) -> None:
    data = b"".join(CQ_ENTRY.pack(*e) for e in entries)
    # It walks every such input itself (no fallback to the Python walk hides a difference).
    assert _speedups.take_all(data, offset, max_count, max_bytes, min_physical) is not None
    compiled, pure = with_and_without(
        reads,
        "_compiled_take_all",
        lambda: _walk(min_physical, data, offset, max_count, max_bytes),
    )
    assert compiled == pure


def test_take_all_fills_max_bytes_exactly() -> None:
    data = b"".join(CQ_ENTRY.pack(100 * i, 10, 0) for i in range(3))
    assert _speedups.take_all(data, 5, 8, 20, 0) is not None
    assert _walk(0, data, 5, 8, 20) == (
        reads.GetMessageStatus.FOUND,
        7,
        [(5, 0, 10), (6, 100, 10)],
    )


def test_take_all_leaves_what_it_does_not_take_to_python() -> None:
    entry = CQ_ENTRY.pack(100, 50, 0)
    assert _speedups.take_all(entry[:-1], 0, 1, 1, 0) is None  # no whole entry
    assert _speedups.take_all(entry, -1, 1, 1, 0) is None  # offsets are never negative
    assert _speedups.take_all(entry, 2**63 - 1, 1, 1, 0) is None  # past int64
    assert _speedups.take_all(entry, 0, 0, 1, 0) is None  # limits are at least 1
    assert _speedups.take_all(entry, 0, 1, 2**63, 0) is None
    assert _speedups.take_all("text", 0, 1, 1, 0) is None
    with pytest.raises(TypeError):
        _speedups.take_all(entry, 0)
