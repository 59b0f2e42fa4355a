"""The HA stream between a master and its slaves (RocketMQ's AutoSwitch HA layout).

Rules (reference/rocketmq-controller.md §4.4):
- Big-endian. ``state`` is HAConnectionState's ordinal (READY 0, HANDSHAKE 1, TRANSFER 2).
- Slave → master: one 16-byte handshake (state, isSyncFromLastFile int16, isAsyncLearner
  int16, slaveBrokerId int64), then 12-byte acks (state, slave max offset int64).
- Master → slave: one handshake (20-byte header: state, body size, master max offset,
  last epoch; body = N × (epoch int32, start offset int64)), then transfers (36-byte
  header: state, body size, batch offset, epoch, epoch start offset, confirm offset;
  body = raw CommitLog bytes; an empty body is a heartbeat).
- Decoders are sans-I/O: feed bytes split anywhere, get whole messages; a body over the cap
  or a state that does not fit the stream is a ``ProtocolError`` and the connection drops.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Sequence
from typing import NamedTuple

import attrs

from protocol.errors import ProtocolError


class HAState(enum.IntEnum):
    READY = 0
    HANDSHAKE = 1
    TRANSFER = 2
    SUSPEND = 3
    SHUTDOWN = 4


_SLAVE_HANDSHAKE = struct.Struct(">ihhq")
SLAVE_HANDSHAKE_BYTES = _SLAVE_HANDSHAKE.size
_ACK = struct.Struct(">iq")
_MASTER_HANDSHAKE = struct.Struct(">iiqi")
_EPOCH = struct.Struct(">iq")
_TRANSFER = struct.Struct(">iiqiqq")

_TRANSFER_STATE = int(HAState.TRANSFER)

#: Largest transfer body accepted (RocketMQ sends ≤ 32 KiB batches; leave room).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: At most this many epoch entries in a handshake (RocketMQ's buffer holds 1000).
MAX_EPOCH_ENTRIES = 1000


@attrs.frozen(kw_only=True)
class SlaveHandshake:
    slave_broker_id: int
    sync_from_last_file: bool = False
    async_learner: bool = False

    def encode(self) -> bytes:
        return _SLAVE_HANDSHAKE.pack(
            HAState.HANDSHAKE,
            int(self.sync_from_last_file),
            int(self.async_learner),
            self.slave_broker_id,
        )


@attrs.frozen(kw_only=True)
class Ack:
    """The slave's max CommitLog offset."""

    max_offset: int

    def encode(self) -> bytes:
        return encode_ack(self.max_offset)


@attrs.frozen(kw_only=True)
class MasterHandshake:
    max_offset: int
    last_epoch: int
    epochs: tuple[tuple[int, int], ...]

    def encode(self) -> bytes:
        body = b"".join(_EPOCH.pack(e, s) for e, s in self.epochs)
        head = _MASTER_HANDSHAKE.pack(
            HAState.HANDSHAKE, len(body), self.max_offset, self.last_epoch
        )
        return head + body


class Transfer(NamedTuple):
    """A master's transfer. A named tuple rather than a frozen attrs class (as immutable):
    a slave decodes one per record at one message in flight, and
    ``SlaveSideDecoder.feed`` builds it with one C call (``_new_transfer``) instead of an
    ``__init__`` that sets each field."""

    offset: int
    epoch: int
    epoch_start_offset: int
    confirm_offset: int
    data: bytes = b""

    @property
    def is_heartbeat(self) -> bool:
        return not self.data

    def encode(self) -> bytes:
        head = _TRANSFER.pack(
            HAState.TRANSFER,
            len(self.data),
            self.offset,
            self.epoch,
            self.epoch_start_offset,
            self.confirm_offset,
        )
        return head + self.data


#: ``Transfer`` from a tuple of its fields, without a Python-level ``__new__``.
_new_transfer = functools.partial(tuple.__new__, Transfer)


def encode_transfer_parts(
    *, offset: int, epoch: int, epoch_start_offset: int, confirm_offset: int, data_len: int
) -> bytes:
    """Just the 36-byte header, for writers that send the body separately (no copy)."""
    return _TRANSFER.pack(
        HAState.TRANSFER, data_len, offset, epoch, epoch_start_offset, confirm_offset
    )


def encode_ack(max_offset: int) -> bytes:
    """``Ack(max_offset=max_offset).encode()`` without building the Ack."""
    return _ACK.pack(_TRANSFER_STATE, max_offset)


@attrs.define
class _Buffer:
    data: bytearray = attrs.field(factory=bytearray)

    def take(self, n: int) -> bytes | None:
        if len(self.data) < n:
            return None
        out = bytes(self.data[:n])
        del self.data[:n]
        return out

    def peek(self, n: int) -> bytes | None:
        return bytes(self.data[:n]) if len(self.data) >= n else None


def _check_state(state: int, expected: HAState, what: str) -> None:
    if state != expected:
        raise ProtocolError(f"HA {what} carries state {state}, expected {expected.name}")


def _check_ack(state: int, max_offset: int) -> None:
    """Refuse an ack that does not carry TRANSFER or names a negative offset."""
    _check_state(state, HAState.TRANSFER, "ack")
    if max_offset < 0:
        raise ProtocolError(f"HA ack offset {max_offset} is negative")


@attrs.define
class MasterSideDecoder:
    """Decodes what a slave sends: one handshake, then acks."""

    _buf: _Buffer = attrs.field(factory=_Buffer)
    _handshaken: bool = False

    def feed(self, data: bytes) -> list[SlaveHandshake | Ack]:
        self._buf.data += data
        out: list[SlaveHandshake | Ack] = []
        while True:
            if not self._handshaken:
                raw = self._buf.take(_SLAVE_HANDSHAKE.size)
                if raw is None:
                    return out
                state, from_last, learner, slave_id = _SLAVE_HANDSHAKE.unpack(raw)
                _check_state(state, HAState.HANDSHAKE, "handshake")
                self._handshaken = True
                out.append(
                    SlaveHandshake(
                        slave_broker_id=slave_id,
                        sync_from_last_file=bool(from_last),
                        async_learner=bool(learner),
                    )
                )
            else:
                raw = self._buf.take(_ACK.size)
                if raw is None:
                    return out
                state, max_offset = _ACK.unpack(raw)
                _check_ack(state, max_offset)
                out.append(Ack(max_offset=max_offset))

    def feed_acks(self, data: bytes) -> tuple[int, int] | None:
        """After the handshake: the lowest and highest offset of the acks ``data``
        completes (None: no whole ack yet), each checked as ``feed`` checks it, and none
        below the one before it in this read. A read of acks builds no ``Ack`` objects, and
        the master takes several acks of one read as one (the highest; the lowest only
        for the check against the ack before)."""
        if not self._handshaken:
            raise ProtocolError("HA acks before the handshake")
        buf = self._buf.data
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        size = _ACK.size
        whole = len(data) - len(data) % size
        if whole < len(data):
            buf += memoryview(data)[whole:]
            if not whole:
                return None
            data = data[:whole]
        low = high = -1
        for state, max_offset in _ACK.iter_unpack(data):
            if state != _TRANSFER_STATE or max_offset < 0:
                _check_ack(state, max_offset)
            if max_offset < high:
                raise ProtocolError(f"HA ack went back from {high} to {max_offset}")
            high = max_offset
            if low < 0:
                low = max_offset
        return low, high


@attrs.define
class SlaveSideDecoder:
    """Decodes what a master sends: one handshake, then transfers.

    A read is cut into messages where it lies; only an incomplete message's bytes are
    kept, and joined with the next read (a read of whole transfers is never copied whole).
    """

    max_body_bytes: int = MAX_BODY_BYTES
    _rest: bytearray = attrs.field(factory=bytearray)
    _handshaken: bool = False

    def feed(self, data: bytes) -> list[MasterHandshake | Transfer]:
        rest = self._rest
        if rest:
            rest += data
            data = bytes(rest)
            rest.clear()
        out: list[MasterHandshake | Transfer] = []
        pos = 0
        end = len(data)
        if not self._handshaken:
            pos = self._handshake(data, out)
        head = _TRANSFER.size
        while self._handshaken and end - pos >= head:
            state, body_size, offset, epoch, epoch_start, confirm = _TRANSFER.unpack_from(data, pos)
            _check_state(state, HAState.TRANSFER, "transfer")
            if not 0 <= body_size <= self.max_body_bytes:
                raise ProtocolError(f"HA transfer body of {body_size} bytes exceeds the cap")
            stop = pos + head + body_size
            if stop > end:
                break
            out.append(
                _new_transfer((offset, epoch, epoch_start, confirm, data[pos + head : stop]))
            )
            pos = stop
        if pos < end:
            rest += memoryview(data)[pos:]
        return out

    def _handshake(self, data: bytes, out: list[MasterHandshake | Transfer]) -> int:
        """Decode the handshake at the start of ``data`` into ``out``; return where it
        ends (0: not all here yet)."""
        if len(data) < _MASTER_HANDSHAKE.size:
            return 0
        state, body_size, max_offset, last_epoch = _MASTER_HANDSHAKE.unpack_from(data)
        _check_state(state, HAState.HANDSHAKE, "handshake")
        if body_size < 0 or body_size % _EPOCH.size or body_size > MAX_EPOCH_ENTRIES * _EPOCH.size:
            raise ProtocolError(f"HA handshake body of {body_size} bytes is not an epoch list")
        stop: int = _MASTER_HANDSHAKE.size + body_size
        if len(data) < stop:
            return 0
        epochs = tuple(
            _EPOCH.unpack_from(data, _MASTER_HANDSHAKE.size + i * _EPOCH.size)
            for i in range(body_size // _EPOCH.size)
        )
        self._handshaken = True
        out.append(MasterHandshake(max_offset=max_offset, last_epoch=last_epoch, epochs=epochs))
        return stop


def handshake_epochs(pairs: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The newest ``MAX_EPOCH_ENTRIES`` entries, as the handshake can carry."""
    return tuple(pairs[-MAX_EPOCH_ENTRIES:])
