"""Checkpoint codec: round trip, and every torn or foreign file decodes to None."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.store.checkpoint import CHECKPOINT_BYTES, Checkpoint

_i64 = st.integers(min_value=0, max_value=2**63 - 1)


@given(st.builds(
    Checkpoint,
    physic_msg_timestamp_ms=_i64, logics_msg_timestamp_ms=_i64, index_msg_timestamp_ms=_i64,
    master_flushed_offset=_i64, confirm_offset=_i64, flushed_offset=_i64,
    dispatched_offset=_i64, min_physical_offset=_i64,
))  # fmt: skip
def test_round_trip(ckpt: Checkpoint) -> None:
    data = ckpt.encode()
    assert len(data) == CHECKPOINT_BYTES
    assert Checkpoint.decode(data) == ckpt


def test_every_flipped_byte_is_detected() -> None:
    data = Checkpoint(flushed_offset=123456, dispatched_offset=1000, confirm_offset=77).encode()
    for i in range(len(data)):
        torn = bytearray(data)
        torn[i] ^= 0x40
        assert Checkpoint.decode(bytes(torn)) is None, i


def test_short_long_and_empty_files_are_torn() -> None:
    data = Checkpoint(flushed_offset=5).encode()
    assert Checkpoint.decode(data[:-1]) is None
    assert Checkpoint.decode(data + b"\0") is None
    assert Checkpoint.decode(b"") is None
    assert Checkpoint.decode(bytes(CHECKPOINT_BYTES)) is None
