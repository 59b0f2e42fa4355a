"""Atomic files and versioned CBOR documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.store.metadata import atomic_write_bytes, load_document, save_document
from protocol.errors import MalformedBody


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "topics.cbor"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topics.cbor"]


def test_document_round_trip_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "offsets.cbor"
    assert load_document(path, kind="consumer-offsets", max_version=1) is None
    save_document(path, kind="consumer-offsets", version=1, payload={"T@g": {"0": 15}})
    assert load_document(path, kind="consumer-offsets", max_version=1) == (1, {"T@g": {"0": 15}})
    with pytest.raises(MalformedBody):
        load_document(path, kind="topics", max_version=1)
    save_document(path, kind="consumer-offsets", version=3, payload={})
    with pytest.raises(MalformedBody):
        load_document(path, kind="consumer-offsets", max_version=2)
    path.write_bytes(b"\xff\x00garbage")
    with pytest.raises(MalformedBody):
        load_document(path, kind="consumer-offsets", max_version=3)
