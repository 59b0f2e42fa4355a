"""ConsumeQueue: per topic and queue, a dense array of 20-byte entries into the CommitLog.

Rules (reference/rocketmq-wire.md §3.7):
- Entry = ``commitLogOffset int64 | size int32 | tagsCode int64``, big-endian. Logical offset
  ``q`` lives at byte ``q * 20`` of the queue; files hold ``entries_per_file`` entries and are
  named by their 20-digit zero-padded start *byte* offset.
- A file is created at full size (sparse); unwritten entries read as zeros (size 0), which
  marks the end of the queue when it is opened again.
- A queue that starts at an offset > 0 (built after retention, or on a slave) has its first
  file pre-filled with *blank* entries (size ``BLANK_SIZE``) like RocketMQ's ``fillPreBlank``,
  so "valid entries form a prefix of every file" holds and the end is found by bisection.
- Entries are appended in CommitLog order, so physical offsets increase along a queue; the
  minimum logical offset is the first non-blank entry at or past the CommitLog minimum.
- The last file is never deleted by retention: it remembers the queue's max offset.
- ``open`` never refuses a queue: a gap in its files, a short file or entries after its end
  are noted in ``damage`` (files after a gap are deleted); ``first_bad_entry`` (pure) says
  where entries stop making sense. The store rebuilds such a queue from the CommitLog
  (``repair.py``); records lost in skipped damaged bytes get entries pointing at those
  bytes (``fill``), so queue offsets stay dense and those are never served.
- Appended entries are held in memory (one queue's consecutive entries within one file, at
  most ``PENDING_MAX_ENTRIES`` plus one ``append_run`` of ``RUN_MAX_ENTRIES``, the entries
  a dispatch run packs with one struct call) and written with one pwrite by
  ``write_pending``: the queue calls it when the held run reaches that bound or leaves its
  file, the store for every queue it appended to from its flush tick
  (``MessageStore.write_queue_entries``). Every method that reads,
  cuts, fsyncs or closes the files writes them first, so nothing ever reads around them;
  ``max_offset`` counts them from the start. A kill -9 loses what was held like any
  unsynced tail: recovery re-dispatches from the checkpoint's dispatched offset, below
  which every entry was written and fsynced (``dirty_fds`` writes them first).
- A queue computes its own directory from the ConsumeQueue root, its topic and queue id
  (``paths.queue_path``): a name that would lead outside the root raises ``UnsafeName``
  before anything is created, whoever asks.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from broker.store.flush import collect_fds
from broker.store.paths import queue_path
from protocol.errors import CorruptRecord
from protocol.slots import slot_builder

log = logging.getLogger(__name__)

CQ_ENTRY = struct.Struct(">qiq")
CQ_ENTRY_BYTES = CQ_ENTRY.size
#: Size field of a pre-fill entry (RocketMQ writes Integer.MAX_VALUE there).
BLANK_SIZE = 0x7FFFFFFF
_BLANK_ENTRY = CQ_ENTRY.pack(0, BLANK_SIZE, 0)
assert CQ_ENTRY_BYTES == 20
#: How far past a queue's last entry ``open`` looks for entries that should not be there.
_AFTER_END_BYTES = 64 * 1024
#: Entries one queue holds before writing them (one pwrite of 5 KiB at most).
PENDING_MAX_ENTRIES = 256
_PENDING_MAX_BYTES = PENDING_MAX_ENTRIES * CQ_ENTRY_BYTES
#: Entries one ``append_run`` takes at most (held on top of ``PENDING_MAX_ENTRIES``).
RUN_MAX_ENTRIES = 64
#: ``_RUNS[n]``: ``n`` consecutive entries (big-endian, no padding: ``n`` x ``CQ_ENTRY``).
_RUNS = [struct.Struct(">" + "qiq" * n) for n in range(RUN_MAX_ENTRIES + 1)]


@attrs.frozen(kw_only=True, slots=True)
class CqEntry:
    """One ConsumeQueue entry with its logical offset."""

    queue_offset: int
    physical_offset: int
    size: int
    tags_code: int

    @property
    def is_blank(self) -> bool:
        """A pre-fill entry below the queue's first real message."""
        return self.size == BLANK_SIZE


class BoundaryType(enum.Enum):
    """Which side of a timestamp ``offset_by_time`` answers (wire §2.7)."""

    #: First offset whose store time >= timestamp.
    LOWER = "lower"
    #: Last offset whose store time <= timestamp.
    UPPER = "upper"


# --- pure pieces ------------------------------------------------------------------------------


def encode_entry(physical_offset: int, size: int, tags_code: int) -> bytes:
    """Return the 20 bytes of one entry."""
    assert physical_offset >= 0 and 0 < size <= BLANK_SIZE, (physical_offset, size)
    return CQ_ENTRY.pack(physical_offset, size, tags_code)


#: ``CqEntry(queue_offset=, physical_offset=, size=, tags_code=)`` positionally, without
#: attrs' ``__init__``: a pull decodes 32 entries (``protocol/slots.py``).
_make_entry = slot_builder(CqEntry)


def decode_entries(data: bytes, first_queue_offset: int) -> list[CqEntry]:
    """Decode consecutive entries; stops at the first unwritten (zero-size) one."""
    assert len(data) % CQ_ENTRY_BYTES == 0
    out: list[CqEntry] = []
    for i, (phys, size, tags) in enumerate(CQ_ENTRY.iter_unpack(data), first_queue_offset):
        if size <= 0 or phys < 0:
            break
        out.append(_make_entry(i, phys, size, tags))
    return out


def first_bad_entry(
    entries: Sequence[tuple[int, int, int]], *, first_real: bool, end_physical: int, max_size: int
) -> int | None:
    """Index of the first entry of ``entries`` (raw ``(phys, size, tags)`` in queue order,
    zeros included) that cannot be right, or None.

    Blank pre-fill entries may only come first (``first_real``: none may), sizes lie in
    (0, ``max_size``], records end by ``end_physical``, physical offsets never decrease.
    """
    last_phys = 0
    blanks_allowed = not first_real
    for i, (phys, size, _tags) in enumerate(entries):
        if size == BLANK_SIZE and blanks_allowed and phys == 0:
            continue
        blanks_allowed = False
        if not 0 < size <= max_size or phys < last_phys or phys + size > end_physical:
            return i
        last_phys = phys
    return None


def first_true(lo: int, hi: int, pred: Callable[[int], bool]) -> int:
    """Smallest ``i`` in ``[lo, hi)`` with ``pred(i)``, or ``hi``; ``pred`` must be monotonic."""
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def search_offset_by_time(
    lo: int,
    hi: int,
    timestamp_ms: int,
    boundary: BoundaryType,
    store_time_at: Callable[[int], int],
) -> int:
    """Bisect queue offsets ``[lo, hi)`` by the store time of the records they point at.

    LOWER: first offset with store time >= ``timestamp_ms`` (``hi`` if all are older).
    UPPER: last offset with store time <= ``timestamp_ms`` (``lo`` if all are newer).
    An empty range answers ``lo``.
    """
    if lo >= hi:
        return lo
    if boundary is BoundaryType.LOWER:
        return first_true(lo, hi, lambda q: store_time_at(q) >= timestamp_ms)
    first_newer = first_true(lo, hi, lambda q: store_time_at(q) > timestamp_ms)
    return max(lo, first_newer - 1)


# --- one queue on disk -------------------------------------------------------------------------


@attrs.define
class _CqFile:
    first_offset: int  # logical offset of the file's first entry
    path: Path
    fd: int


def _file_name(byte_offset: int) -> str:
    return f"{byte_offset:020d}"


class ConsumeQueue:
    """One topic/queue's entries under ``<store>/consumequeue/<topic>/<queueId>/``."""

    def __init__(self, root: Path, topic: str, queue_id: int, entries_per_file: int) -> None:
        """A queue under ``root`` (``<store>/consumequeue``); raises ``UnsafeName``."""
        self.topic = topic
        self.queue_id = queue_id
        self.directory = queue_path(root, topic, queue_id)
        self.entries_per_file = entries_per_file
        self._files: list[_CqFile] = []
        #: First logical offset still readable.
        self.min_offset = 0
        #: Next logical offset to write (= number of entries ever written).
        self.max_offset = 0
        self._dirty: set[int] = set()  # indexes into _files' first_offset values
        #: Entries appended and not yet written (``write_pending``): consecutive, in
        #: ``_pending_file`` from entry ``_pending_index`` of that file on.
        self._pending = bytearray()
        self._pending_file: _CqFile | None = None
        self._pending_index = 0
        self._repairs_logged = False
        #: Why ``open`` found this queue damaged (None: nothing seen); the store rebuilds it.
        self.damage: str | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, root: Path, topic: str, queue_id: int, entries_per_file: int, min_physical: int
    ) -> ConsumeQueue:
        """Open an existing queue directory (or an absent one: an empty queue).

        Damage seen here (a file missing in the sequence or misnamed, a file shorter than
        its size, entries after the end) is noted in ``damage``, never raised: the store
        checks the entries and rebuilds the queue from the CommitLog. Files after a gap are
        deleted (derived data, rebuilt).
        """
        cq = cls(root, topic, queue_id, entries_per_file)
        directory = cq.directory
        file_bytes = entries_per_file * CQ_ENTRY_BYTES
        names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        names = [n for n in names if len(n) == 20 and n.isascii() and n.isdigit()]
        for i, name in enumerate(names):
            start = int(name)
            previous = cq._files[-1].first_offset * CQ_ENTRY_BYTES if cq._files else None
            if start % file_bytes != 0 or (previous is not None and start != previous + file_bytes):
                cq.damage = f"file {name} does not follow with {file_bytes}-byte files"
                for later in names[i:]:
                    (directory / later).unlink()
                break
            path = directory / name
            fd = os.open(path, os.O_RDWR)
            size = os.fstat(fd).st_size
            if size < file_bytes:
                cq.damage = cq.damage or f"file {name} is {size} bytes, not {file_bytes}"
                os.ftruncate(fd, file_bytes)
            cq._files.append(_CqFile(start // CQ_ENTRY_BYTES, path, fd))
        if not cq._files:
            return cq
        last = cq._files[-1]
        written = first_true(0, entries_per_file, lambda i: cq._read_raw(last, i).size <= 0)
        cq.max_offset = last.first_offset + written
        cq.min_offset = cq._files[0].first_offset
        if cq.damage is None and cq._bytes_after_end(last, written):
            cq.damage = f"entries follow unwritten ones in file {last.path.name}"
        cq.advance_min(min_physical)
        return cq

    def _bytes_after_end(self, last: _CqFile, written: int) -> bool:
        """Whether non-zero bytes lie in the ``_AFTER_END_BYTES`` after the last entry (a
        zeroed stretch made the bisection stop early)."""
        start = written * CQ_ENTRY_BYTES
        tail = os.pread(last.fd, _AFTER_END_BYTES, start)
        return bool(tail.strip(b"\0"))

    # -- reading ---------------------------------------------------------------------------

    def _file_for(self, queue_offset: int) -> _CqFile | None:
        if not self._files:
            return None
        idx = (queue_offset - self._files[0].first_offset) // self.entries_per_file
        if 0 <= idx < len(self._files):
            f = self._files[idx]
            assert f.first_offset <= queue_offset < f.first_offset + self.entries_per_file
            return f
        return None

    def _read_raw(self, f: _CqFile, index_in_file: int) -> CqEntry:
        if self._pending:
            self.write_pending()
        data = os.pread(f.fd, CQ_ENTRY_BYTES, index_in_file * CQ_ENTRY_BYTES)
        if len(data) < CQ_ENTRY_BYTES:
            data = data.ljust(CQ_ENTRY_BYTES, b"\0")
        phys, size, tags = CQ_ENTRY.unpack(data)
        return CqEntry(
            queue_offset=f.first_offset + index_in_file,
            physical_offset=phys,
            size=size,
            tags_code=tags,
        )

    def entry_at(self, queue_offset: int) -> CqEntry | None:
        """The entry at ``queue_offset`` if it is within [min, max) and its file exists."""
        if not self.min_offset <= queue_offset < self.max_offset:
            return None
        f = self._file_for(queue_offset)
        if f is None:
            return None
        entry = self._read_raw(f, queue_offset - f.first_offset)
        return None if entry.size <= 0 or entry.is_blank else entry

    def read_entries(self, queue_offset: int, max_count: int) -> list[CqEntry] | None:
        """Up to ``max_count`` entries from ``queue_offset``, within one file.

        ``None`` when the file holding ``queue_offset`` is gone (a hole: OFFSET_FOUND_NULL).
        """
        data = self.read_entry_bytes(queue_offset, max_count)
        return None if data is None else decode_entries(data, queue_offset)

    def read_entry_bytes(self, queue_offset: int, max_count: int) -> bytes | None:
        """``read_entries``' whole entries as read, not decoded (``CQ_ENTRY`` each; from
        the first unwritten one on they are zeros); empty outside [min, max)."""
        assert max_count > 0
        if not self.min_offset <= queue_offset < self.max_offset:
            return b""
        if self._pending:
            self.write_pending()
        f = self._file_for(queue_offset)
        if f is None:
            return None
        index = queue_offset - f.first_offset
        count = min(max_count, self.max_offset - queue_offset, self.entries_per_file - index)
        data = os.pread(f.fd, count * CQ_ENTRY_BYTES, index * CQ_ENTRY_BYTES)
        usable = len(data) - len(data) % CQ_ENTRY_BYTES
        return data[:usable] if usable < len(data) else data

    def raw_entries(self, begin: int, end: int) -> list[tuple[int, int, int]]:
        """Raw ``(phys, size, tags)`` of logical offsets [begin, end), zeros included."""
        if self._pending:
            self.write_pending()
        out: list[tuple[int, int, int]] = []
        q = begin
        while q < end:
            f = self._file_for(q)
            if f is None:
                break
            index = q - f.first_offset
            count = min(end - q, self.entries_per_file - index)
            data = os.pread(f.fd, count * CQ_ENTRY_BYTES, index * CQ_ENTRY_BYTES)
            data = data.ljust(count * CQ_ENTRY_BYTES, b"\0")
            out += CQ_ENTRY.iter_unpack(data)
            q += count
        return out

    def next_file_offset(self, queue_offset: int) -> int:
        """Logical offset where the file after the one holding ``queue_offset`` starts."""
        return (queue_offset // self.entries_per_file + 1) * self.entries_per_file

    @property
    def last_physical_end(self) -> int:
        """End (offset + size) in the CommitLog of the last entry; -1 for an empty queue."""
        entry = self.entry_at(self.max_offset - 1) if self.max_offset > self.min_offset else None
        return -1 if entry is None else entry.physical_offset + entry.size

    def first_offset_at_or_after_physical(self, physical_offset: int) -> int:
        """Smallest logical offset in [min, max) whose entry points at or past ``physical_offset``."""

        def pred(q: int) -> bool:
            f = self._file_for(q)
            if f is None:
                return False
            e = self._read_raw(f, q - f.first_offset)
            return not e.is_blank and e.physical_offset >= physical_offset

        return first_true(self.min_offset, self.max_offset, pred)

    # -- writing -----------------------------------------------------------------------------

    def _create_file(self, first_offset: int) -> _CqFile:
        assert first_offset % self.entries_per_file == 0
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / _file_name(first_offset * CQ_ENTRY_BYTES)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(fd, self.entries_per_file * CQ_ENTRY_BYTES)
        f = _CqFile(first_offset, path, fd)
        self._files.append(f)
        return f

    def append(self, queue_offset: int, physical_offset: int, size: int, tags_code: int) -> bool:
        """Add the entry for the next logical offset (``queue_offset == max_offset``),
        held until ``write_pending``; True when the queue held nothing before it (the
        caller must see that ``write_pending`` runs).

        An empty queue accepts any starting offset (its first file is pre-filled with blanks).
        """
        pending = self._pending
        f = self._pending_file
        if (
            pending
            and queue_offset == self.max_offset
            and f is not None
            and queue_offset - f.first_offset < self.entries_per_file
        ):
            # The held run goes on in its file (most appends of a busy read): no file
            # lookup, no new run.
            assert physical_offset >= 0 and 0 < size <= BLANK_SIZE, (physical_offset, size)
            pending += CQ_ENTRY.pack(physical_offset, size, tags_code)
            self.max_offset = queue_offset + 1
            if len(pending) >= _PENDING_MAX_BYTES:
                self.write_pending()
            return False
        if queue_offset != self.max_offset:
            if self.max_offset == self.min_offset and queue_offset > self.max_offset:
                self._start_at(queue_offset)
            else:
                raise CorruptRecord(
                    f"consume queue {self.topic}/{self.queue_id}: entry for offset {queue_offset} "
                    f"but the queue ends at {self.max_offset} (delete consumequeue/ to rebuild it)"
                )
        f = self._file_for(queue_offset)
        if f is None:
            f = self._create_file(queue_offset - queue_offset % self.entries_per_file)
        started = False
        if f is not self._pending_file or not pending:
            if pending:
                self.write_pending()  # the held entries are in the file before
            self._pending_file = f
            self._pending_index = queue_offset - f.first_offset
            self._dirty.add(f.first_offset)
            started = True
        pending += encode_entry(physical_offset, size, tags_code)
        self.max_offset = queue_offset + 1
        if len(pending) >= _PENDING_MAX_BYTES:
            self.write_pending()
        return started

    def room_after_append(self) -> int:
        """After an ``append``: how many more entries ``append_run`` may add at once (the
        rest of the file its last entry went to). The caller keeps a run shorter still
        (``RUN_MAX_ENTRIES``), so what is held stays bounded."""
        f = self._pending_file
        assert f is not None and self.max_offset > f.first_offset
        return f.first_offset + self.entries_per_file - self.max_offset

    def append_run(self, values: Sequence[int]) -> bool:
        """``append`` of the entries that follow on from the last one appended, in its
        file (``room_after_append``): ``values`` holds (physical offset, size, tags code)
        of each, flat, at most ``RUN_MAX_ENTRIES`` entries; packed with one struct call
        and held, never written here (so it never raises ``OSError``). True when the
        queue held nothing before (as ``append``: the caller sees that ``write_pending``
        runs)."""
        n = len(values) // 3
        assert 0 < n <= RUN_MAX_ENTRIES and len(values) == 3 * n
        f = self._pending_file
        assert f is not None and self.max_offset + n <= f.first_offset + self.entries_per_file
        pending = self._pending
        started = not pending
        if started:  # ``append`` wrote what it held: the run goes on from the queue's end
            self._pending_index = self.max_offset - f.first_offset
        pending += _RUNS[n].pack(*values)
        self.max_offset += n
        return started

    @property
    def pending_entries(self) -> int:
        """Entries appended and not yet written."""
        return len(self._pending) // CQ_ENTRY_BYTES

    def write_pending(self) -> None:
        """Write the held entries with one pwrite. An error (``OSError``) keeps them held,
        to be written by the next call."""
        pending = self._pending
        f = self._pending_file
        if not pending or f is None:
            return
        pos = self._pending_index * CQ_ENTRY_BYTES
        written = os.pwrite(f.fd, pending, pos)
        if written != len(pending):  # a regular file writes short only when space runs out
            del pending[: written - written % CQ_ENTRY_BYTES]
            self._pending_index += written // CQ_ENTRY_BYTES
            raise OSError(errno.ENOSPC, f"short write to {f.path}")
        self._dirty.add(f.first_offset)
        pending.clear()

    def fill(self, until_offset: int, physical_offset: int, size: int) -> None:
        """Append entries up to ``until_offset`` for records lost in damaged CommitLog bytes:
        they point at those bytes (``physical_offset``, ``size``), which are never served.
        Held like any append: the caller (the store's dispatch) arranges the write."""
        size = min(size, BLANK_SIZE - 1)
        while self.max_offset < until_offset:
            self.append(self.max_offset, physical_offset, size, 0)

    def _start_at(self, queue_offset: int) -> None:
        """Make an empty queue begin at ``queue_offset`` (RocketMQ ``fillPreBlank``)."""
        self._pending.clear()  # an empty queue holds none (entries below its minimum)
        self._pending_file = None
        for f in self._files:
            os.close(f.fd)
            f.path.unlink()
        self._files.clear()
        first = queue_offset - queue_offset % self.entries_per_file
        f = self._create_file(first)
        pad = queue_offset - first
        if pad:
            os.pwrite(f.fd, _BLANK_ENTRY * pad, 0)
        self._dirty.add(f.first_offset)
        self.min_offset = self.max_offset = queue_offset

    def repair(self, queue_offset: int, physical_offset: int, size: int, tags_code: int) -> bool:
        """Recovery: make the entry at an existing ``queue_offset`` match; True if rewritten."""
        assert queue_offset < self.max_offset
        if self._pending:
            self.write_pending()
        f = self._file_for(queue_offset)
        if f is None or queue_offset < self.min_offset:
            return False  # already dropped by retention
        index = queue_offset - f.first_offset
        current = self._read_raw(f, index)
        if (current.physical_offset, current.size, current.tags_code) == (
            physical_offset,
            size,
            tags_code,
        ):
            return False
        if not self._repairs_logged:
            log.warning(
                "consume queue %s/%d: entry %d pointed at %d, rewritten to %d",
                self.topic,
                self.queue_id,
                queue_offset,
                current.physical_offset,
                physical_offset,
            )
            self._repairs_logged = True
        os.pwrite(f.fd, encode_entry(physical_offset, size, tags_code), index * CQ_ENTRY_BYTES)
        self._dirty.add(f.first_offset)
        return True

    def truncate_to_offset(self, queue_offset: int) -> None:
        """Drop every entry at or past ``queue_offset``."""
        if queue_offset >= self.max_offset:
            return
        if self._pending:
            self.write_pending()
        queue_offset = max(queue_offset, self._files[0].first_offset if self._files else 0)
        while self._files and self._files[-1].first_offset > queue_offset:
            f = self._files.pop()
            os.close(f.fd)
            f.path.unlink()
            self._dirty.discard(f.first_offset)
        if self._files:
            f = self._files[-1]
            pos = (queue_offset - f.first_offset) * CQ_ENTRY_BYTES
            # Re-extending after the cut leaves a hole that reads as zeros (unwritten).
            os.ftruncate(f.fd, pos)
            os.ftruncate(f.fd, self.entries_per_file * CQ_ENTRY_BYTES)
            self._dirty.add(f.first_offset)
        self.max_offset = queue_offset
        self.min_offset = min(self.min_offset, queue_offset)

    def clear_after_end(self) -> None:
        """Zero whatever the last file holds past the last entry (found there by ``open``)."""
        if not self._files:
            return
        if self._pending:
            self.write_pending()
        f = self._files[-1]
        pos = max(0, self.max_offset - f.first_offset) * CQ_ENTRY_BYTES
        os.ftruncate(f.fd, pos)
        os.ftruncate(f.fd, self.entries_per_file * CQ_ENTRY_BYTES)
        self._dirty.add(f.first_offset)

    def truncate_from_physical(self, physical_offset: int) -> None:
        """Drop every entry pointing at or past ``physical_offset`` (they are at the end)."""
        if self.max_offset > self.min_offset:
            self.truncate_to_offset(self.first_offset_at_or_after_physical(physical_offset))

    def advance_min(self, min_physical: int) -> int:
        """Retention: skip entries below ``min_physical``; delete whole files below the new
        minimum except the last one. Returns the number of files deleted."""
        if self._pending:
            self.write_pending()
        self.min_offset = max(self.min_offset, self.first_offset_at_or_after_physical(min_physical))
        deleted = 0
        while len(self._files) > 1 and (
            self._files[0].first_offset + self.entries_per_file <= self.min_offset
        ):
            f = self._files.pop(0)
            os.close(f.fd)
            f.path.unlink()
            self._dirty.discard(f.first_offset)
            deleted += 1
        return deleted

    # -- durability ------------------------------------------------------------------------------

    def dirty_fds(self) -> list[int]:
        """Duplicated fds of files written since ``clear_dirty`` (the caller fsyncs and
        closes them); all or none (``collect_fds``). Held entries are written first."""
        if self._pending:
            self.write_pending()
        return collect_fds(os.dup(f.fd) for f in self._files if f.first_offset in self._dirty)

    def clear_dirty(self) -> None:
        """The files ``dirty_fds`` named are being fsynced."""
        self._dirty.clear()

    @property
    def file_count(self) -> int:
        """Number of files on disk."""
        return len(self._files)

    def close(self) -> None:
        """Write the held entries (as far as possible) and close every file descriptor."""
        if self._pending:
            try:
                self.write_pending()
            except OSError as exc:
                log.warning(
                    "consume queue %s/%d: entries lost at close: %s", self.topic, self.queue_id, exc
                )
        self._pending.clear()
        self._pending_file = None
        for f in self._files:
            with contextlib.suppress(OSError):
                os.close(f.fd)
        self._files.clear()
