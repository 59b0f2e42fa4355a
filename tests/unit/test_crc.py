"""``protocol.crc.crc32`` (python-isal's where installed) gives ``zlib.crc32``'s values for
every kind of buffer the store hands it: the CRC is on disk and on the wire."""

from __future__ import annotations

import importlib
import sys
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocol.crc
from protocol.crc import crc32


@given(st.binary(max_size=70_000), st.integers(min_value=0, max_value=64))
def test_crc32_is_zlibs_for_bytes_bytearrays_and_views(data: bytes, skip: int) -> None:
    expected = zlib.crc32(data)
    assert crc32(data) == expected
    assert crc32(bytearray(data)) == expected
    padded = bytes(skip) + data
    assert crc32(memoryview(padded)[skip:]) == expected


def test_crc32_of_known_values() -> None:
    assert crc32(b"") == 0
    assert crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value


def test_without_isal_it_is_zlibs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)  # import fails, as uninstalled
    fallback = importlib.reload(protocol.crc)
    try:
        assert fallback.crc32 is zlib.crc32
    finally:
        monkeypatch.undo()
        importlib.reload(protocol.crc)
