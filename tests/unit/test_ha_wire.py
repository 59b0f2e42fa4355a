"""HA stream codec: known layouts, random splits, and refusal of malformed streams."""

from __future__ import annotations

import contextlib
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.ha.wire import (
    Ack,
    MasterHandshake,
    MasterSideDecoder,
    SlaveHandshake,
    SlaveSideDecoder,
    Transfer,
    encode_ack,
)
from protocol.errors import ProtocolError


def feed_in_pieces(
    decoder: MasterSideDecoder | SlaveSideDecoder, data: bytes, cuts: list[int]
) -> list[object]:
    out: list[object] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        out.extend(decoder.feed(data[a:b]))
    return out


def test_known_layouts() -> None:
    assert SlaveHandshake(slave_broker_id=2, async_learner=True).encode() == struct.pack(
        ">ihhq", 1, 0, 1, 2
    )
    assert Ack(max_offset=7).encode() == struct.pack(">iq", 2, 7)
    hs = MasterHandshake(max_offset=900, last_epoch=3, epochs=((1, 0), (3, 500)))
    assert hs.encode() == struct.pack(">iiqi", 1, 24, 900, 3) + struct.pack(">iqiq", 1, 0, 3, 500)
    t = Transfer(offset=100, epoch=3, epoch_start_offset=50, confirm_offset=90, data=b"abc")
    assert t.encode() == struct.pack(">iiqiqq", 2, 3, 100, 3, 50, 90) + b"abc"
    assert len(t.encode()) == 36 + 3


@given(
    slave_id=st.integers(0, 2**40),
    acks=st.lists(st.integers(0, 2**50), max_size=20),
    cuts=st.lists(st.integers(0, 10**4), max_size=30),
)
def test_master_side_decoder_random_splits(slave_id: int, acks: list[int], cuts: list[int]) -> None:
    stream = SlaveHandshake(slave_broker_id=slave_id).encode() + b"".join(
        Ack(max_offset=a).encode() for a in acks
    )
    got = feed_in_pieces(MasterSideDecoder(), stream, cuts)
    assert got == [SlaveHandshake(slave_broker_id=slave_id), *(Ack(max_offset=a) for a in acks)]


@given(
    acks=st.lists(st.integers(0, 2**50), min_size=1, max_size=20),
    cuts=st.lists(st.integers(0, 10**4), max_size=30),
)
def test_feed_acks_gives_each_reads_lowest_and_highest(acks: list[int], cuts: list[int]) -> None:
    """Acks in order, split anywhere: each read with whole acks gives the lowest and the
    highest it completed, in order, and together they span every ack."""
    acks.sort()
    decoder = MasterSideDecoder()
    assert decoder.feed(SlaveHandshake(slave_broker_id=1).encode()) == [
        SlaveHandshake(slave_broker_id=1)
    ]
    stream = b"".join(Ack(max_offset=a).encode() for a in acks)
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    got = [decoder.feed_acks(stream[a:b]) for a, b in itertools.pairwise(bounds)]
    spans = [g for g in got if g is not None]
    assert spans[0][0] == acks[0] and spans[-1][1] == acks[-1]
    for (low, high), (next_low, _) in itertools.pairwise(spans):
        assert low <= high <= next_low
    assert {a for span in spans for a in span} <= set(acks)


def test_feed_acks_refuses_what_feed_refuses_and_acks_going_back() -> None:
    decoder = MasterSideDecoder()
    with pytest.raises(ProtocolError, match="before the handshake"):
        decoder.feed_acks(encode_ack(5))
    decoder.feed(SlaveHandshake(slave_broker_id=1).encode())
    assert decoder.feed_acks(encode_ack(5)[:7]) is None
    assert decoder.feed_acks(encode_ack(5)[7:] + encode_ack(9)) == (5, 9)
    with pytest.raises(ProtocolError, match="went back"):
        decoder.feed_acks(encode_ack(9) + encode_ack(8))
    with pytest.raises(ProtocolError, match="negative"):
        MasterSideDecoder(handshaken=True).feed_acks(struct.pack(">iq", 2, -5))
    with pytest.raises(ProtocolError, match="state"):
        MasterSideDecoder(handshaken=True).feed_acks(struct.pack(">iq", 1, 5))


@given(
    epochs=st.lists(st.tuples(st.integers(1, 100), st.integers(0, 2**40)), max_size=10),
    bodies=st.lists(st.binary(max_size=200), max_size=10),
    cuts=st.lists(st.integers(0, 10**4), max_size=30),
)
def test_slave_side_decoder_random_splits(
    epochs: list[tuple[int, int]], bodies: list[bytes], cuts: list[int]
) -> None:
    hs = MasterHandshake(
        max_offset=5, last_epoch=epochs[-1][0] if epochs else 0, epochs=tuple(epochs)
    )
    transfers = [
        Transfer(offset=i * 1000, epoch=2, epoch_start_offset=0, confirm_offset=i, data=b)
        for i, b in enumerate(bodies)
    ]
    stream = hs.encode() + b"".join(t.encode() for t in transfers)
    assert feed_in_pieces(SlaveSideDecoder(), stream, cuts) == [hs, *transfers]


def test_wrong_state_and_oversize_are_refused() -> None:
    with pytest.raises(ProtocolError, match="state"):
        MasterSideDecoder().feed(struct.pack(">ihhq", 2, 0, 0, 1))
    decoder = MasterSideDecoder()
    decoder.feed(SlaveHandshake(slave_broker_id=1).encode())
    with pytest.raises(ProtocolError, match="negative"):
        decoder.feed(struct.pack(">iq", 2, -5))
    slave = SlaveSideDecoder(max_body_bytes=10)
    slave.feed(MasterHandshake(max_offset=0, last_epoch=0, epochs=()).encode())
    with pytest.raises(ProtocolError, match="cap"):
        slave.feed(struct.pack(">iiqiqq", 2, 11, 0, 1, 0, 0))
    with pytest.raises(ProtocolError, match="epoch list"):
        SlaveSideDecoder().feed(struct.pack(">iiqi", 1, 13, 0, 0))


# Fuzz (issue 13): any bytes, split anywhere, after a valid handshake or not, end either in
# messages or in ProtocolError, never in another exception.
_PREFIXES = st.sampled_from(
    [
        b"",
        SlaveHandshake(slave_broker_id=1).encode(),
        MasterHandshake(max_offset=10, last_epoch=1, epochs=((1, 0),)).encode(),
    ]
)


@given(prefix=_PREFIXES, data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 700)))
def test_fuzz_decoders_raise_only_protocol_errors(
    prefix: bytes, data: bytes, cuts: list[int]
) -> None:
    for decoder in (MasterSideDecoder(), SlaveSideDecoder(max_body_bytes=256)):
        with contextlib.suppress(ProtocolError):
            feed_in_pieces(decoder, prefix + data, cuts)


@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 700)))
def test_fuzz_feed_acks_raises_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    decoder = MasterSideDecoder(handshaken=True)
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    with contextlib.suppress(ProtocolError):
        for a, b in itertools.pairwise(bounds):
            decoder.feed_acks(data[a:b])
