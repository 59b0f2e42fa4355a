"""CommitLog segment files: fixed-size, named by start offset, written with ``os.pwrite``.

Rules (reference/rocketmq-wire.md §3.2, §3.9):
- Segment ``k`` is ``<dir>/<20-digit start offset>`` and holds global offsets
  [start, start + segment_bytes). Starts are multiples of ``segment_bytes`` and contiguous.
- A segment is created at full size (sparse, ``ftruncate``): the bytes after the last record
  read as zeros, which recovery takes as the end.
- A record never spans segments: when it does not fit with 8 bytes to spare, the rest of the
  segment gets a blank marker and the record goes to the next one (``reserve``).
- Writes go through ``os.pwrite`` to the page cache (measured as fast as a memory map for
  1 KiB records and, unlike a map of a sparse file, a full disk is an ``ENOSPC`` error, not
  SIGBUS). A failed write leaves no partial record: the tail is cut back and re-extended.
- Reads are ``os.pread``. This module knows bytes and offsets, not record fields.
- ``last_append`` keeps the bytes of the last ``append`` (where they went, a copy; at most
  64 KiB) until anything else changes the log's end: a master's HA streamer sends the put
  it is told of without reading it back (``read_raw``). Cleared by every other write or
  cut.

Held appends (``hold``: the send path's puts, issue 14): the bytes are kept in a list and
written with one ``os.pwritev`` by ``commit``, which the broker runs before each socket
write of a server connection (``RemotingServer.before_write``): one write per read of
sends instead of one per send. Invariants:
- No byte leaves the process before the record it describes or carries is in the file
  (page cache): the broker commits before writing any answer, the HA master's read
  (``read_raw``) and every ``read`` commit first. A kill -9 after an answer loses nothing
  the answer promised.
- Every other operation of this class sees a consistent file: ``read``, ``reserve``
  before a blank marker or a new segment, a direct ``append``, ``append_raw_piece``,
  ``truncate``, ``dup_fds`` (the flush's fsync), ``delete_head`` and ``close`` commit
  first. Held bytes therefore always lie in the last segment, contiguous, from
  ``_held_start`` to ``write_offset``.
- Held bytes are bounded: past ``HOLD_LIMIT_BYTES`` (or ``HOLD_LIMIT_PIECES``) the put
  that crossed it commits.
- A commit that fails (ENOSPC, EIO) never raises: it cuts the log back to where the held
  bytes began (tail zeroed, ``write_offset`` lowered), counts ``commit_failures`` and
  sets ``failed_at``; the store refuses puts until it has cut its own state (queue
  entries, index keys, queue offsets) back there and cleared it (``clear_failure``), and
  the broker drops every connection holding an answer not written yet.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

import attrs

from broker.store.flush import collect_fds
from protocol.errors import CorruptRecord, DiskFull, StorageError
from protocol.message import BLANK_MARKER_BYTES, blank_marker

log = logging.getLogger(__name__)

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: The largest append kept in ``last_append``.
_KEPT_APPEND_BYTES = 64 * 1024
#: Held appends past this many bytes are committed by the append that crossed it: bounds
#: the memory and what one failed commit throws away (64 in flight of 1 KiB is 70 KiB).
HOLD_LIMIT_BYTES = 256 * 1024
#: And past this many pieces: one ``pwritev`` takes at most IOV_MAX (1,024 on Linux).
HOLD_LIMIT_PIECES = min(1024, os.sysconf("SC_IOV_MAX"))


def segment_name(start_offset: int) -> str:
    """File name of the segment starting at ``start_offset``."""
    return f"{start_offset:020d}"


@attrs.define
class Segment:
    """One open segment file."""

    start: int
    size: int
    path: Path
    fd: int
    #: Whether the directory entry of this file was fsynced since it was created.
    dir_synced: bool = True

    @property
    def end(self) -> int:
        """Global offset just past the segment."""
        return self.start + self.size


class CommitLog:
    """The ordered segments of ``<store>/commitlog/`` and the write position."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.segments: list[Segment] = []
        #: Global offset where the next record goes (end of valid data).
        self.write_offset = 0
        #: (offset, bytes) of the last ``append`` while nothing else wrote or cut since (a
        #: ``hold``'s own bytearray, handed over: copied only when ``read_raw`` returns it).
        self.last_append: tuple[int, bytes | bytearray] | None = None
        #: Held appends (``hold``), not yet in the file: written by ``commit``.
        self._held: list[bytes | bytearray] = []
        self._held_start = 0
        self._held_bytes = 0
        #: Commits that failed since the log was opened (the broker compares it).
        self.commit_failures = 0
        #: Where the last failed commit cut the log back to, until ``clear_failure``.
        self.failed_at: int | None = None
        #: Why it failed (for the refusals' remarks).
        self.failure: str = ""

    @classmethod
    def open(cls, directory: Path, segment_bytes: int) -> CommitLog:
        """Open every segment file; ``write_offset`` is left for recovery to set."""
        log_ = cls(directory, segment_bytes)
        directory.mkdir(parents=True, exist_ok=True)
        names = sorted(
            p.name for p in directory.iterdir() if len(p.name) == 20 and p.name.isdigit()
        )
        for name in names:
            start = int(name)
            path = directory / name
            if start % segment_bytes:
                raise CorruptRecord(
                    f"CommitLog file {path}: start {start} is not a multiple of "
                    f"segment_bytes {segment_bytes} (was the store made with another size?)"
                )
            if log_.segments and start != log_.segments[-1].end:
                raise CorruptRecord(
                    f"CommitLog file {path}: expected the next file to start at "
                    f"{log_.segments[-1].end} (a segment file is missing)"
                )
            fd = os.open(path, os.O_RDWR)
            size = os.fstat(fd).st_size
            if size > segment_bytes:
                os.close(fd)
                raise CorruptRecord(
                    f"CommitLog file {path}: {size} bytes, more than segment_bytes {segment_bytes}"
                )
            if size < segment_bytes:
                os.ftruncate(fd, segment_bytes)  # a short file: the missing tail reads as zeros
            log_.segments.append(Segment(start, segment_bytes, path, fd))
        if log_.segments:
            log_.write_offset = log_.segments[0].start
        return log_

    # -- geometry --------------------------------------------------------------------------

    @property
    def min_offset(self) -> int:
        """Lowest offset still on disk (the write offset of an empty log)."""
        return self.segments[0].start if self.segments else self.write_offset

    def segment_for(self, offset: int) -> Segment | None:
        """The segment holding ``offset``, if any."""
        if not self.segments:
            return None
        idx = (offset - self.segments[0].start) // self.segment_bytes
        if 0 <= idx < len(self.segments):
            seg = self.segments[idx]
            assert seg.start <= offset < seg.end
            return seg
        return None

    def segment_start_of(self, offset: int) -> int:
        """Start of the segment (existing or not) that would hold ``offset``."""
        return offset - offset % self.segment_bytes

    # -- reading ---------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> bytes | None:
        """``size`` bytes at ``offset`` (within one segment); None if that segment is gone."""
        if self._held:
            self.commit()
        seg = self.segment_for(offset)
        if seg is None or offset + size > seg.end:
            return None
        return os.pread(seg.fd, size, offset - seg.start)

    # -- writing ---------------------------------------------------------------------------

    def _create_segment(self, start: int) -> Segment:
        assert start % self.segment_bytes == 0
        path = self.directory / segment_name(start)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise DiskFull(f"cannot create CommitLog file {path}: {exc.strerror}") from exc
            raise
        try:
            os.ftruncate(fd, self.segment_bytes)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return Segment(start, self.segment_bytes, path, fd, dir_synced=False)

    def ensure_segment(self) -> Segment:
        """The segment holding ``write_offset``, created if the log is empty or just filled."""
        seg = self.segments[-1] if self.segments else None
        if seg is not None and self.write_offset < seg.end:
            return seg
        assert seg is None or self.write_offset == seg.end
        new = self._create_segment(self.write_offset)
        self.segments.append(new)
        return new

    def reserve(self, size: int) -> int:
        """Make room for ``size`` contiguous bytes; return the offset they will go to.

        When they do not fit in the current segment with ``BLANK_MARKER_BYTES`` to spare, the
        remainder is padded with a blank marker and a new segment is started.
        """
        assert 0 < size <= self.segment_bytes - BLANK_MARKER_BYTES, size
        if self.segments:  # the common case first: it fits in the last segment
            last = self.segments[-1]
            if self.write_offset + size + BLANK_MARKER_BYTES <= last.start + last.size:
                return self.write_offset
        if self._held:
            self.commit()  # before a blank marker or a new segment
        seg = self.ensure_segment()
        left = seg.end - self.write_offset
        if size + BLANK_MARKER_BYTES <= left:
            return self.write_offset
        new = self._create_segment(seg.end)
        try:
            self._pwrite(seg, blank_marker(left), self.write_offset)
        except BaseException:
            os.close(new.fd)
            new.path.unlink(missing_ok=True)
            raise
        self.segments.append(new)
        self.write_offset = new.start
        return new.start

    def append(self, data: bytes | bytearray) -> int:
        """Write ``data`` at ``write_offset`` (after ``reserve``); return where it went.

        Raises ``StorageError`` (nothing written) when the held bytes before it, written
        first here or by ``reserve``, could not be: the log was cut back where they began,
        below the offset ``data`` was stamped for, and puts wait for the store's cut back."""
        if self._held:
            self.commit()
        if self.failed_at is not None:
            raise StorageError(f"CommitLog write failed: {self.failure}")
        offset = self.write_offset
        # After ``reserve`` the last segment holds ``offset`` (ensure_segment, inline).
        seg = self.segments[-1] if self.segments else None
        if seg is None or offset >= seg.start + seg.size:
            seg = self.ensure_segment()
        assert offset + len(data) <= seg.start + seg.size
        self._pwrite(seg, data, offset)
        self.write_offset = offset + len(data)
        # A copy: the caller's buffer is its own to reuse (~0.1 µs a KiB, against a pread
        # and a parse of the record per HA batch). Not of a large batch: a streamer that
        # asks for exactly one put is one at a send or a few in flight; at many in flight
        # it reads a backlog of puts anyway.
        self.last_append = (offset, bytes(data)) if len(data) <= _KEPT_APPEND_BYTES else None
        return offset

    def hold(self, data: bytearray) -> int:
        """``append`` without the write: ``data`` (handed over, not copied: the caller
        never touches it again) is kept until ``commit``; return where it goes. Past
        ``HOLD_LIMIT_BYTES`` held, it commits at once."""
        offset = self.write_offset
        size = len(data)
        segments = self.segments
        seg = segments[-1] if segments else None
        if seg is None or offset >= seg.start + seg.size:
            if self._held:
                self.commit()
            seg = self.ensure_segment()
        assert offset + size <= seg.start + seg.size
        held = self._held
        if not held:
            self._held_start = offset
        held.append(data)
        held_bytes = self._held_bytes = self._held_bytes + size
        self.write_offset = offset + size
        # Not a copy: ``data`` is the log's now. A streamer asks for exactly the last put
        # rarely once puts are held (a read's puts go to it together), so the copy waits
        # for that read (``read_raw``) instead of costing every put.
        self.last_append = (offset, data) if size <= _KEPT_APPEND_BYTES else None
        if held_bytes >= HOLD_LIMIT_BYTES or len(held) >= HOLD_LIMIT_PIECES:
            self.commit()
        return offset

    @property
    def held_bytes(self) -> int:
        """Bytes held, not yet written."""
        return self._held_bytes

    def commit(self) -> bool:
        """Write the held bytes with one ``os.pwritev``; False when that failed (the log is
        then cut back to where they began: see the module docstring)."""
        held = self._held
        if not held:
            return True
        start, total = self._held_start, self._held_bytes
        self._held, self._held_bytes = [], 0
        seg = self.segments[-1]
        pos = start - seg.start
        try:
            # One piece (a send alone in its read): pwrite, which costs less than pwritev.
            if len(held) == 1:
                written = os.pwrite(seg.fd, held[0], pos)
            else:
                written = os.pwritev(seg.fd, held, pos)
            if written < total:  # a short write (space runs out): the rest, checked
                data = held[0] if len(held) == 1 else b"".join(held)
                self._pwrite(seg, memoryview(data)[written:], start + written)
        except (OSError, StorageError) as exc:
            self._zero_from(seg, pos)  # _pwrite did it too: a zeroed tail either way
            self.write_offset = start
            self.last_append = None
            self.commit_failures += 1
            self.failed_at = start if self.failed_at is None else min(self.failed_at, start)
            self.failure = str(exc)
            log.error(
                "CommitLog write of %d held bytes to %s at %d failed: %s; cut back to %d",
                total,
                seg.path,
                pos,
                exc,
                start,
            )
            return False
        return True

    def clear_failure(self) -> None:
        """The store's state is cut back to ``failed_at``: appends may go on."""
        self.failed_at = None
        self.failure = ""

    def append_raw_piece(self, data: bytes | memoryview) -> None:
        """Write replicated bytes at ``write_offset``; they must end within the segment or
        exactly at its end (the caller splits at segment boundaries)."""
        if self._held:
            self.commit()
        self.last_append = None
        seg = self.ensure_segment()
        offset = self.write_offset
        assert offset + len(data) <= seg.end
        self._pwrite(seg, data, offset)
        self.write_offset = offset + len(data)

    def _pwrite(self, seg: Segment, data: bytes | bytearray | memoryview, offset: int) -> None:
        pos = offset - seg.start
        try:
            written = os.pwrite(seg.fd, data, pos)
            while written < len(data):  # a short write only happens when space runs out
                more = os.pwrite(seg.fd, memoryview(data)[written:], pos + written)
                if more <= 0:
                    raise OSError(errno.ENOSPC, "short write")
                written += more
        except OSError as exc:
            self._zero_from(seg, pos)
            if exc.errno in _NO_SPACE:
                raise DiskFull(
                    f"no space left writing {len(data)} bytes to {seg.path} at {pos}"
                ) from exc
            raise StorageError(f"write to {seg.path} at {pos} failed: {exc}") from exc

    def _zero_from(self, seg: Segment, pos: int) -> None:
        """Cut a segment back to ``pos`` bytes and re-extend it: the tail reads as zeros."""
        with contextlib.suppress(OSError):
            os.ftruncate(seg.fd, pos)
            os.ftruncate(seg.fd, seg.size)

    # -- shrinking ---------------------------------------------------------------------------

    def truncate(self, offset: int) -> None:
        """Drop everything at or past ``offset`` (a record boundary, checked by the caller)."""
        if self._held:
            self.commit()
        assert self.min_offset <= offset <= self.write_offset or not self.segments
        self.last_append = None
        while self.segments and self.segments[-1].start > offset:
            seg = self.segments.pop()
            os.close(seg.fd)
            seg.path.unlink()
        if self.segments and offset < self.segments[-1].end:
            seg = self.segments[-1]
            self._zero_from(seg, offset - seg.start)
        self.write_offset = offset

    def delete_head(self, count: int) -> list[Path]:
        """Delete the ``count`` oldest segments (never the newest); return their paths."""
        if self._held:
            self.commit()
        assert 0 <= count < max(1, len(self.segments))
        removed: list[Path] = []
        for _ in range(count):
            seg = self.segments.pop(0)
            os.close(seg.fd)
            seg.path.unlink()
            removed.append(seg.path)
        return removed

    def reset_empty(self, offset: int) -> None:
        """An empty log (no segments) restarts at ``offset`` (a segment boundary)."""
        assert not self.segments and offset % self.segment_bytes == 0
        self.last_append = None
        self.write_offset = offset

    # -- durability --------------------------------------------------------------------------

    def dup_fds(self, begin: int, end: int) -> tuple[list[int], bool]:
        """Duplicated fds of the segments overlapping [begin, end), and whether the directory
        must be fsynced too (a segment was created since). The caller closes the fds."""
        if self._held:
            self.commit()
        fds = collect_fds(
            os.dup(seg.fd) for seg in self.segments if seg.end > begin and seg.start < end
        )
        need_dir = False
        for seg in self.segments:
            if not seg.dir_synced:
                need_dir = True
                seg.dir_synced = True
        return fds, need_dir

    def close(self) -> None:
        """Close every segment (held bytes written first)."""
        if self._held:
            self.commit()
        for seg in self.segments:
            with contextlib.suppress(OSError):
                os.close(seg.fd)
        self.segments.clear()
