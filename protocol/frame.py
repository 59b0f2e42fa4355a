"""RocketMQ remoting frames: ``int32 length | int32 (serType << 24 | headerLen) | header | body``.

Rules (reference/rocketmq-wire.md §1.1):
- All integers are big-endian. ``length`` counts everything after itself.
- The decoder is incremental and pure: feed it bytes split anywhere, it returns every frame
  that is complete. It never allocates for a frame before checking its length against the
  cap, and it never holds more than one partial frame plus one read's worth of bytes. When
  it holds nothing (the usual case) frames are cut from the read itself: only the tail of
  a partial frame is copied.
- A length below 4, a header length beyond the frame or a length over the cap is a
  ``ProtocolError``; after one the decoder is poisoned (the stream has lost sync) and the
  connection must be closed.
"""

from __future__ import annotations

import struct

import attrs

from protocol.errors import FrameTooLarge, ProtocolError

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
_INT32 = struct.Struct(">i")
_PREFIX = struct.Struct(">iI")  # length, (serType << 24 | headerLen)
_HEADER_LEN_MASK = 0xFFFFFF


@attrs.frozen(kw_only=True)
class Frame:
    """One complete frame: its header bytes (not yet parsed) and body."""

    serialize_type: int
    header: bytes
    body: bytes

    @property
    def size_bytes(self) -> int:
        """The bytes this frame took on the wire, its length prefix included."""
        return 8 + len(self.header) + len(self.body)


def encode_frame(header: bytes, body: bytes = b"", *, serialize_type: int = 0) -> bytes:
    """Return the wire bytes of one frame."""
    header_len = len(header)
    if header_len > _HEADER_LEN_MASK:
        raise FrameTooLarge(f"header of {header_len} bytes exceeds the 24-bit header length")
    prefix = _PREFIX.pack(4 + header_len + len(body), (serialize_type << 24) | header_len)
    if body:
        return b"".join((prefix, header, body))
    return prefix + header  # most answers: half the time of a join


@attrs.define
class FrameDecoder:
    """Incremental frame decoder (sans-I/O)."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    _buffer: bytearray = attrs.field(factory=bytearray, init=False)
    _poisoned: bool = attrs.field(default=False, init=False)

    @property
    def buffered_bytes(self) -> int:
        """Bytes held that do not yet form a complete frame."""
        return len(self._buffer)

    @property
    def pending_frame_bytes(self) -> int | None:
        """Wire size the partial frame announced, once its length prefix has arrived."""
        if len(self._buffer) < 4:
            return None
        (length,) = _INT32.unpack_from(self._buffer, 0)
        return 4 + int(length)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return every frame it completed, in order."""
        if self._poisoned:
            raise ProtocolError("decoder already failed; the connection must be closed")
        # Nothing held (the usual case): cut the frames out of ``data`` itself and keep
        # only its incomplete tail, instead of copying the whole read into the buffer.
        buf: bytes | bytearray = data
        if self._buffer:
            self._buffer += data
            buf = self._buffer
        frames: list[Frame] = []
        pos = 0
        try:
            while (found := self._frame_at(buf, pos)) is not None:
                frame, pos = found
                frames.append(frame)
        except ProtocolError:
            self._poisoned = True
            self._buffer.clear()
            raise
        # One cut per feed keeps many small frames in one read linear, not quadratic.
        if buf is self._buffer:
            del self._buffer[:pos]
        elif pos < len(data):
            self._buffer += data[pos:]
        return frames

    def _frame_at(self, buf: bytes | bytearray, pos: int) -> tuple[Frame, int] | None:
        if len(buf) - pos < 4:
            return None
        (length,) = _INT32.unpack_from(buf, pos)
        if length < 4:
            raise ProtocolError(f"frame length {length} is below the minimum of 4")
        if length > self.max_frame_bytes:
            raise FrameTooLarge(
                f"frame of {length} bytes exceeds the cap of {self.max_frame_bytes} bytes"
            )
        if len(buf) - pos < 8:
            return None
        # Checked before the body arrives: no point buffering a frame we will refuse.
        (_, type_and_len) = _PREFIX.unpack_from(buf, pos)
        serialize_type = type_and_len >> 24
        header_len = type_and_len & _HEADER_LEN_MASK
        if header_len > length - 4:
            raise ProtocolError(
                f"header length {header_len} does not fit in a frame of {length} bytes"
            )
        end = pos + 4 + length
        if len(buf) < end:
            return None
        body_at = pos + 8 + header_len
        return _new_frame(
            serialize_type, bytes(buf[pos + 8 : body_at]), bytes(buf[body_at:end])
        ), end


# attrs' __init__ costs a bound setattr per field; a read of small frames makes many.
_set_type, _set_header, _set_body = (Frame.__dict__[f.name].__set__ for f in attrs.fields(Frame))


def _new_frame(serialize_type: int, header: bytes, body: bytes) -> Frame:
    frame: Frame = object.__new__(Frame)
    _set_type(frame, serialize_type)
    _set_header(frame, header)
    _set_body(frame, body)
    return frame
