"""Frame codec: ``int32 length | int32 (serType << 24 | headerLen) | header | body``."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import FrameTooLarge, ProtocolError
from protocol.frame import DEFAULT_MAX_FRAME_BYTES, Frame, FrameDecoder, encode_frame

frames_st = st.builds(
    Frame,
    serialize_type=st.sampled_from([0, 1]),
    header=st.binary(max_size=64),
    body=st.binary(max_size=200),
)


def _prefix(length: int, type_and_len: int) -> bytes:
    return struct.pack(">iI", length, type_and_len)


def test_encode_frame_known_bytes() -> None:
    assert encode_frame(b"abc", b"de", serialize_type=1) == (
        b"\x00\x00\x00\x09" + b"\x01\x00\x00\x03" + b"abc" + b"de"
    )
    assert encode_frame(b"{}") == b"\x00\x00\x00\x06\x00\x00\x00\x02{}"


def test_encode_frame_refuses_header_over_24_bits() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(bytes(1 << 24))


@settings(deadline=None)
@given(frames=st.lists(frames_st, max_size=8), data=st.data())
def test_random_splits_yield_exactly_the_frames(frames: list[Frame], data: st.DataObject) -> None:
    wire = b"".join(encode_frame(f.header, f.body, serialize_type=f.serialize_type) for f in frames)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(wire)), max_size=20), label="cuts"))
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    start = 0
    for end in [*cuts, len(wire)]:
        decoded += decoder.feed(wire[start:end])
        start = end
        # Everything fed so far, minus the frames that came out, is held.
        consumed = sum(4 + 4 + len(f.header) + len(f.body) for f in decoded)
        assert decoder.buffered_bytes == end - consumed
    assert decoded == frames
    assert decoder.buffered_bytes == 0
    # Cut from the read or from the buffer, a frame owns immutable copies.
    assert all(type(f.header) is bytes and type(f.body) is bytes for f in decoded)


@given(frames=st.lists(frames_st, min_size=1, max_size=4))
def test_one_byte_pieces(frames: list[Frame]) -> None:
    wire = b"".join(encode_frame(f.header, f.body, serialize_type=f.serialize_type) for f in frames)
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    for i in range(len(wire)):
        decoded += decoder.feed(wire[i : i + 1])
    assert decoded == frames
    assert decoder.buffered_bytes == 0


def test_all_frames_of_one_read_come_out_in_order() -> None:
    frames = [Frame(serialize_type=i % 2, header=b"h%d" % i, body=b"b" * i) for i in range(50)]
    wire = b"".join(encode_frame(f.header, f.body, serialize_type=f.serialize_type) for f in frames)
    assert FrameDecoder().feed(wire) == frames


def test_other_serialize_types_pass_through() -> None:
    # The decoder does not judge the type byte; RemotingCommand.from_frame does.
    (frame,) = FrameDecoder().feed(encode_frame(b"h", b"b", serialize_type=0x7F))
    assert frame == Frame(serialize_type=0x7F, header=b"h", body=b"b")


def test_empty_header_and_body() -> None:
    assert FrameDecoder().feed(_prefix(4, 0)) == [Frame(serialize_type=0, header=b"", body=b"")]


def test_over_the_cap_raises_on_the_length_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(FrameTooLarge, match="1025"):
        decoder.feed(struct.pack(">i", 1025))
    assert decoder.buffered_bytes == 0


def test_at_the_cap_waits_for_the_body() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    assert decoder.feed(struct.pack(">i", 1024)) == []
    assert decoder.buffered_bytes == 4
    assert decoder.feed(struct.pack(">I", 0) + bytes(1020)) == [
        Frame(serialize_type=0, header=b"", body=bytes(1020))
    ]


def test_default_cap_is_16_mib() -> None:
    assert DEFAULT_MAX_FRAME_BYTES == 16 * 1024 * 1024
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(struct.pack(">i", DEFAULT_MAX_FRAME_BYTES + 1))
    assert FrameDecoder().feed(struct.pack(">i", DEFAULT_MAX_FRAME_BYTES)) == []


def test_over_the_cap_after_good_frames_in_the_same_read() -> None:
    decoder = FrameDecoder(max_frame_bytes=64)
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"ok") + struct.pack(">i", 65))


@pytest.mark.parametrize("length", [0, 3, -1, -(2**31)])
def test_length_below_four(length: int) -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        decoder.feed(struct.pack(">i", length))
    assert info.type is ProtocolError  # not FrameTooLarge: a negative length is not "large"


def test_header_length_beyond_frame_raises_before_the_body() -> None:
    decoder = FrameDecoder()
    # Frame of 100 bytes claims a 97-byte header: 4 + 97 > 100. Only the prefix is fed.
    with pytest.raises(ProtocolError, match="header length 97"):
        decoder.feed(_prefix(100, 97))


def test_header_length_filling_the_frame_is_fine() -> None:
    assert FrameDecoder().feed(_prefix(7, (1 << 24) | 3) + b"abc") == [
        Frame(serialize_type=1, header=b"abc", body=b"")
    ]


def test_header_length_beyond_frame_with_type_byte() -> None:
    # The type byte must not count as header length, nor hide an oversize one.
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(_prefix(6, (1 << 24) | 3) + b"abc")


@pytest.mark.parametrize(
    "bad",
    [
        struct.pack(">i", 2),
        struct.pack(">i", 1 << 30),
        _prefix(5, 2) + b"ab",
    ],
)
def test_decoder_is_poisoned_after_an_error(bad: bytes) -> None:
    decoder = FrameDecoder(max_frame_bytes=1 << 20)
    with pytest.raises(ProtocolError):
        decoder.feed(bad)
    assert decoder.buffered_bytes == 0
    with pytest.raises(ProtocolError, match="already failed"):
        decoder.feed(encode_frame(b"{}", b"good"))
    with pytest.raises(ProtocolError):
        decoder.feed(b"")
    assert decoder.buffered_bytes == 0


def test_buffered_bytes_tracks_partial_frames() -> None:
    decoder = FrameDecoder()
    one = encode_frame(b"header", b"body")
    assert decoder.buffered_bytes == 0
    assert decoder.feed(one[:5]) == []
    assert decoder.buffered_bytes == 5
    assert decoder.feed(one[5:] + one[:3]) == [
        Frame(serialize_type=0, header=b"header", body=b"body")
    ]
    assert decoder.buffered_bytes == 3
    assert decoder.feed(b"") == []
    assert decoder.buffered_bytes == 3
    assert len(decoder.feed(one[3:])) == 1
    assert decoder.buffered_bytes == 0
