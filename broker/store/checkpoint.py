"""The store checkpoint: where the CommitLog, ConsumeQueues and index were durable.

Rules:
- Layout (ours, not RocketMQ's 5 x int64, since no client ever reads it): 8-byte magic
  ``RMQCKPT1``, int32 version, 8 x int64 fields (below), int32 CRC32 of everything before it.
  All big-endian. A file of another length, magic or CRC is *torn* and decodes to ``None``;
  the store then recovers from the beginning of the CommitLog instead of trusting it.
- The file is replaced atomically (``metadata.atomic_write_bytes``); the CRC is the second
  line of defence (a filesystem that reorders the rename before the data).
- ``flushed_offset`` is a promise: every CommitLog byte below it was fsynced. Recovery treats a
  bad record below it as corruption, never as a torn tail.
- ``dispatched_offset``: every ConsumeQueue entry and index key for records below it was
  fsynced before the checkpoint was written.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import attrs

from broker.store.metadata import atomic_write_bytes

MAGIC = b"RMQCKPT1"
VERSION = 1
_BODY = struct.Struct(">8si8q")
_CRC = struct.Struct(">I")
CHECKPOINT_BYTES = _BODY.size + _CRC.size


@attrs.frozen(kw_only=True)
class Checkpoint:
    """What was durable when the checkpoint was written."""

    #: Store time of the last record covered by ``flushed_offset`` (RocketMQ physicMsgTimestamp).
    physic_msg_timestamp_ms: int = 0
    #: Store time of the last record dispatched to ConsumeQueues (logicsMsgTimestamp).
    logics_msg_timestamp_ms: int = 0
    #: Store time of the last record indexed (indexMsgTimestamp).
    index_msg_timestamp_ms: int = 0
    #: On a slave: the master's flushed offset as last reported (masterFlushedOffset).
    master_flushed_offset: int = 0
    #: Highest offset known replicated to the SyncStateSet (confirmPhyOffset).
    confirm_offset: int = 0
    #: Every CommitLog byte below this was fsynced.
    flushed_offset: int = 0
    #: ConsumeQueue/index entries of every record below this were fsynced.
    dispatched_offset: int = 0
    #: Lowest CommitLog offset still kept when written (informational).
    min_physical_offset: int = 0

    def encode(self) -> bytes:
        """Return the checkpoint file bytes."""
        body = _BODY.pack(
            MAGIC,
            VERSION,
            self.physic_msg_timestamp_ms,
            self.logics_msg_timestamp_ms,
            self.index_msg_timestamp_ms,
            self.master_flushed_offset,
            self.confirm_offset,
            self.flushed_offset,
            self.dispatched_offset,
            self.min_physical_offset,
        )
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint | None:
        """Parse checkpoint bytes; ``None`` when they are torn or not a checkpoint."""
        if len(data) != CHECKPOINT_BYTES:
            return None
        body = data[: _BODY.size]
        (crc,) = _CRC.unpack_from(data, _BODY.size)
        if zlib.crc32(body) != crc:
            return None
        magic, version, *fields = _BODY.unpack(body)
        if magic != MAGIC or version != VERSION:
            return None
        if any(value < 0 for value in fields):
            return None
        return cls(
            physic_msg_timestamp_ms=fields[0],
            logics_msg_timestamp_ms=fields[1],
            index_msg_timestamp_ms=fields[2],
            master_flushed_offset=fields[3],
            confirm_offset=fields[4],
            flushed_offset=fields[5],
            dispatched_offset=fields[6],
            min_physical_offset=fields[7],
        )


def read_checkpoint(path: Path) -> tuple[Checkpoint | None, bool]:
    """Return (checkpoint or None, whether a file existed)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, False
    return Checkpoint.decode(data), True


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint file durably (blocking: fsync + rename + fsync dir)."""
    atomic_write_bytes(path, checkpoint.encode())
