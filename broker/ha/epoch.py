"""The epoch file: which master epoch wrote which range of the CommitLog.

Rules (reference/rocketmq-controller.md §4.1, §4.5; EpochFileCache.java):
- Entries are ``(epoch, start_offset)`` sorted by both; each entry ends where the next
  starts, the last one is open-ended (``end_offset`` None).
- ``append`` only accepts an epoch above the last one. Unlike RocketMQ we also record a new
  epoch that starts at the *same* offset as the previous one (no data written in between):
  the older entry is then empty and is replaced, so a master elected twice without writing
  still announces its newest epoch (RocketMQ drops it silently, apache/rocketmq#9942).
- ``find_consistent_point(other)``: walking this cache from the highest epoch down, the
  first epoch present in ``other`` with the same start offset gives min(this end, other
  end); none gives -1. Ends of the last entries are the caller's max offsets.
- Pure: the file bytes are built and parsed here; writing them is the caller's job
  (atomically, through ``broker/store/metadata.py``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence

import attrs

from protocol.errors import MalformedBody

_MAGIC = b"RMQE"
_HEADER = struct.Struct(">4sII")  # magic, entry count, crc32 of the entries
_ENTRY = struct.Struct(">iq")  # epoch, start offset (the HA handshake's 12-byte entry)


@attrs.frozen(kw_only=True)
class EpochEntry:
    epoch: int
    start_offset: int
    #: Exclusive end; None for the last (open) entry.
    end_offset: int | None = None


@attrs.frozen
class EpochCache:
    """An immutable list of epoch entries; every change returns a new cache."""

    entries: tuple[EpochEntry, ...] = ()

    def __attrs_post_init__(self) -> None:
        for before, after in zip(self.entries, self.entries[1:], strict=False):
            assert before.epoch < after.epoch, self.entries
            assert before.start_offset <= after.start_offset, self.entries
            assert before.end_offset == after.start_offset, self.entries
        if self.entries:
            assert self.entries[-1].end_offset is None, self.entries

    @classmethod
    def of(cls, pairs: Iterable[tuple[int, int]]) -> EpochCache:
        """Build from ``(epoch, start_offset)`` pairs (sorted, as the wire carries them)."""
        cache = cls()
        for epoch, start in pairs:
            cache = cache.append(epoch, start)
        return cache

    @property
    def last(self) -> EpochEntry | None:
        return self.entries[-1] if self.entries else None

    @property
    def last_epoch(self) -> int:
        return self.entries[-1].epoch if self.entries else 0

    def pairs(self) -> list[tuple[int, int]]:
        return [(e.epoch, e.start_offset) for e in self.entries]

    def append(self, epoch: int, start_offset: int) -> EpochCache:
        """Record that ``epoch`` starts at ``start_offset``; raises ValueError if out of order."""
        last = self.last
        if last is None:
            return EpochCache((EpochEntry(epoch=epoch, start_offset=start_offset),))
        if epoch <= last.epoch:
            raise ValueError(f"epoch {epoch} is not above the last epoch {last.epoch}")
        if start_offset < last.start_offset:
            raise ValueError(
                f"epoch {epoch} starts at {start_offset}, before epoch {last.epoch} "
                f"at {last.start_offset}"
            )
        kept = self.entries if start_offset > last.start_offset else self.entries[:-1]
        if kept:
            kept = (*kept[:-1], attrs.evolve(kept[-1], end_offset=start_offset))
        return EpochCache((*kept, EpochEntry(epoch=epoch, start_offset=start_offset)))

    def entry_at(self, offset: int) -> EpochEntry | None:
        """The entry whose range holds ``offset``."""
        for entry in reversed(self.entries):
            if entry.start_offset <= offset and (
                entry.end_offset is None or offset < entry.end_offset
            ):
                return entry
        return None

    def find(self, epoch: int) -> EpochEntry | None:
        for entry in self.entries:
            if entry.epoch == epoch:
                return entry
        return None

    def truncate_suffix_by_offset(self, offset: int) -> EpochCache:
        """Drop entries starting at or after ``offset`` (the log was cut there)."""
        kept = [e for e in self.entries if e.start_offset < offset]
        return self._reopened(kept)

    def truncate_suffix_by_epoch(self, epoch: int) -> EpochCache:
        """Drop entries with epoch ≥ ``epoch``."""
        return self._reopened([e for e in self.entries if e.epoch < epoch])

    def truncate_prefix_by_offset(self, offset: int) -> EpochCache:
        """Drop entries that end at or before ``offset`` (old segments were deleted)."""
        kept = [e for e in self.entries if e.end_offset is None or e.end_offset > offset]
        return EpochCache(tuple(kept))

    def _reopened(self, kept: Sequence[EpochEntry]) -> EpochCache:
        if not kept:
            return EpochCache()
        return EpochCache((*kept[:-1], attrs.evolve(kept[-1], end_offset=None)))

    def find_consistent_point(
        self, self_max_offset: int, other: EpochCache, other_max_offset: int
    ) -> int:
        """The offset up to which this log and ``other`` agree; -1 if they share no epoch."""
        for mine in reversed(self.entries):
            theirs = other.find(mine.epoch)
            if theirs is None or theirs.start_offset != mine.start_offset:
                continue
            my_end = mine.end_offset if mine.end_offset is not None else self_max_offset
            their_end = theirs.end_offset if theirs.end_offset is not None else other_max_offset
            return min(my_end, their_end)
        return -1

    # --- file format -----------------------------------------------------------------

    def to_bytes(self) -> bytes:
        body = b"".join(_ENTRY.pack(e.epoch, e.start_offset) for e in self.entries)
        return _HEADER.pack(_MAGIC, len(self.entries), zlib.crc32(body)) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> EpochCache:
        """Parse epoch file bytes; ``MalformedBody`` says what is wrong with them."""
        if len(data) < _HEADER.size:
            raise MalformedBody(f"not an epoch file: {len(data)} bytes, a header is 12")
        magic, count, crc = _HEADER.unpack_from(data, 0)
        body = data[_HEADER.size :]
        if magic != _MAGIC:
            raise MalformedBody(f"not an epoch file: magic {magic!r}, expected {_MAGIC!r}")
        if len(body) != count * _ENTRY.size or zlib.crc32(body) != crc:
            raise MalformedBody(
                f"epoch file fails its length or CRC check ({count} entries announced, "
                f"{len(body)} bytes after the header): it is corrupt"
            )
        pairs = [_ENTRY.unpack_from(body, i * _ENTRY.size) for i in range(count)]
        try:
            return cls.of(pairs)
        except ValueError as exc:
            raise MalformedBody(f"epoch file entries out of order: {exc}") from None
