"""The compiled ``cut_records`` (protocol/_speedups_cq.c) inside ``StoreReads._result``:
a pull answers the same records, offsets and status with it as with the Python loop alone,
whatever lies in the log where the picked entries point (whole records, records of another
offset or size, wrong magic, short and foreign bytes), and the same reads are refused."""

from __future__ import annotations

import os
import struct
import tempfile
import types
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.store import reads
from broker.store.pull import GetMessageStatus
from broker.store.reads import StoreReads
from protocol.message import MAGIC_V1, MAGIC_V2
from tests.support.speedups import with_and_without

_speedups = pytest.importorskip(
    "protocol._speedups", reason="the C extension is not built (no compiler on this machine)"
)

HEAD = struct.Struct(">ii20xq")


@st.composite
def logs(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int, int]]]:
    """A log of units (records, some damaged) and the entries a pull picked over it."""
    log = bytearray()
    picked: list[tuple[int, int, int]] = []
    queue_offset = draw(st.integers(min_value=0, max_value=2**40))
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        phys = len(log)
        size = draw(st.sampled_from([36, 40, 64, 200]) | st.integers(min_value=1, max_value=300))
        kind = draw(st.sampled_from(["record", "record", "record", "v2", "bad", "skew", "magic"]))
        unit = bytearray(draw(st.binary(min_size=size, max_size=size)))
        if size >= HEAD.size and kind != "bad":
            magic = {"v2": MAGIC_V2, "magic": 0x12345678}.get(kind, MAGIC_V1)
            lies_at = phys + 1 if kind == "skew" else phys
            total = size if kind != "skew" or draw(st.booleans()) else size + 1
            HEAD.pack_into(unit, 0, total, magic, lies_at)
        log += unit
        if draw(st.integers(min_value=0, max_value=4)):  # most units are picked
            claimed = size if draw(st.integers(min_value=0, max_value=5)) else size + 3
            picked.append((queue_offset, phys, claimed))
            queue_offset += 1
        if draw(st.booleans()):
            log += bytes(draw(st.integers(min_value=1, max_value=64)))  # another queue's
    return bytes(log), picked


def _pull(path: str, size: int, picked: list[tuple[int, int, int]]) -> Any:
    """``StoreReads._result`` over the log in ``path``: the answer and the refused reads."""
    fd = os.open(path, os.O_RDONLY)
    refused: list[int] = []
    seg = types.SimpleNamespace(start=0, end=size, fd=fd)
    clog = types.SimpleNamespace(
        commit=lambda: True,
        segment_for=lambda offset: seg if 0 <= offset < size else None,
        read=lambda offset, n: os.pread(fd, n, offset) if offset + n <= size else None,
    )
    store: Any = types.SimpleNamespace(
        _clog=clog, _damage=None, _refuse_read=lambda what, phys: refused.append(phys)
    )
    try:
        result = StoreReads._result(
            store, GetMessageStatus.FOUND, 99, list(picked), (0, 100), "T", 0
        )
    finally:
        os.close(fd)
    return result, refused


@settings(max_examples=300, deadline=None)
@given(logs())
def test_result_is_the_same_with_and_without_cut_records(
    log_and_picked: tuple[bytes, list[tuple[int, int, int]]],
) -> None:
    log, picked = log_and_picked
    with tempfile.NamedTemporaryFile() as f:
        f.write(log)
        f.flush()
        compiled, pure = with_and_without(
            reads, "_compiled_cut_records", lambda: _pull(f.name, len(log), picked)
        )
        assert compiled == pure


def test_cut_records_stops_at_what_it_cannot_take() -> None:
    record = bytearray(40)
    HEAD.pack_into(record, 0, 40, MAGIC_V1, 1000)
    span = bytes(record) * 2  # the second one claims offset 1000 too: not its own
    records: list[bytes] = []
    offsets: list[int] = []
    picked = [(7, 1000, 40), (8, 1040, 40)]
    assert _speedups.cut_records(span, 1000, picked, 0, 2, records, offsets) == 1
    assert records == [bytes(record)] and offsets == [7]
    assert _speedups.cut_records(span, 1000, picked, 2, 1, records, offsets) is None
    assert _speedups.cut_records(bytearray(span), 1000, picked, 0, 2, [], []) is None
    with pytest.raises(TypeError):
        _speedups.cut_records(span, 1000)
