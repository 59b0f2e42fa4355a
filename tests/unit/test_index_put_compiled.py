"""The compiled ``index_put`` (protocol/_speedups_index.c) is ``IndexFile.put``: on twin
files given the same puts, the same bytes in the map and the same attributes; where it
answers None nothing changed and the Python ``put`` decides (or refuses)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.store.index import SLOT, IndexFile, slot_position

_speedups = pytest.importorskip(
    "protocol._speedups", reason="the C extension is not built (no compiler on this machine)"
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
#: Timestamps around a real begin time, and the edges (0, negative, int64's ends).
TIMES = st.integers(min_value=1_700_000_000_000, max_value=1_700_000_000_000 + 10**13) | INT64

ATTRIBUTES = (
    "index_count",
    "hash_slot_count",
    "begin_timestamp_ms",
    "end_timestamp_ms",
    "begin_phy_offset",
    "end_phy_offset",
)


def _state(f: IndexFile) -> tuple[bytes, tuple[Any, ...]]:
    return bytes(f._mm), tuple(getattr(f, name) for name in ATTRIBUTES)


@contextmanager
def _twins(slots: int, entries: int) -> Iterator[tuple[IndexFile, IndexFile]]:
    with tempfile.TemporaryDirectory() as tmp:
        one = IndexFile.create(Path(tmp, "a"), slots, entries, preallocate=False)
        two = IndexFile.create(Path(tmp, "b"), slots, entries, preallocate=False)
        try:
            yield one, two
        finally:
            for f in (one, two):
                f._mm.close()
                os.close(f._fd)


def _python_put(f: IndexFile, key_hash: int, phys: int, ms: int) -> str | None:
    """What ``put`` refused with (AssertionError, struct.error, ...), or None."""
    try:
        f.put(key_hash, phys, ms)
    except Exception as exc:
        return type(exc).__name__
    return None


@settings(max_examples=300, deadline=None)
@given(
    slots=st.integers(min_value=1, max_value=8),
    entries=st.integers(min_value=1, max_value=12),
    puts=st.lists(
        st.tuples(st.integers(min_value=-3, max_value=2**31 + 3), INT64, TIMES), max_size=16
    ),
    stale=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=7),
            st.integers(min_value=-2, max_value=16) | st.integers(-(2**31), 2**31 - 1),
        ),
        max_size=4,
    ),
)
def test_index_put_is_python_put(
    slots: int,
    entries: int,
    puts: list[tuple[int, int, int]],
    stale: list[tuple[int, int]],
) -> None:
    with _twins(slots, entries) as (python, compiled):
        for slot, value in stale:  # slot values left by a crash or a truncation
            if slot < slots and -(2**31) <= value < 2**31:
                for f in (python, compiled):
                    SLOT.pack_into(f._mm, slot_position(slot), value)
        for key_hash, phys, ms in puts:
            before = _state(compiled)
            refused = _python_put(python, key_hash, phys, ms)
            answer = _speedups.index_put(compiled, key_hash, phys, ms)
            if answer is None:
                assert _state(compiled) == before  # nothing changed
                assert _python_put(compiled, key_hash, phys, ms) == refused
            else:
                assert answer is True and refused is None
            assert _state(compiled) == _state(python)


def test_index_put_fills_the_file_then_leaves_it_to_python() -> None:
    with _twins(4, 3) as (python, compiled):
        for n in range(2):  # entry 0 is never used: two entries fit
            python.put(7 + n, 100 * n, 1_700_000_000_000 + n)
            assert _speedups.index_put(compiled, 7 + n, 100 * n, 1_700_000_000_000 + n)
        assert _state(compiled) == _state(python)
        assert compiled.is_full
        assert _speedups.index_put(compiled, 9, 300, 1_700_000_000_002) is None
        with pytest.raises(AssertionError):
            compiled.put(9, 300, 1_700_000_000_002)


def test_index_put_refuses_what_is_no_index_file() -> None:
    assert _speedups.index_put(object(), 1, 2, 3) is None
    with _twins(2, 2) as (f, _):
        empty = _state(f)
        f.index_count = "1"  # type: ignore[assignment]
        assert _speedups.index_put(f, 1, 2, 3) is None
        f.index_count = 1
        assert _state(f) == empty
    with pytest.raises(TypeError):
        _speedups.index_put(1, 2)
