"""IndexFile: hash index from ``topic#key`` to CommitLog offsets, in RocketMQ's layout.

Rules (reference/rocketmq-wire.md §3.8, ``STORE/index/IndexFile.java``):
- File = 40-byte header | ``slots`` x int32 slot table | ``entries`` x 20-byte entries.
  Header: beginTimestamp int64, endTimestamp int64, beginPhyOffset int64, endPhyOffset
  int64, hashSlotCount int32, indexCount int32. Entry: keyHash int32, phyOffset int64,
  timeDiff int32 (seconds since beginTimestamp), prevIndex int32. Big-endian.
- ``indexCount`` starts at 1: entry 0 is never used, so slot value 0 means "empty"; a slot or
  prev value above ``indexCount`` is stale (written after the header was) and means "empty".
- keyHash = abs(Java ``hashCode``) (0 for Integer.MIN_VALUE); bucket = keyHash % slots.
- Keys are ``topic#UNIQ_KEY`` and ``topic#<each KEYS token>``; rollback messages get none.
  A hash match is only a candidate: callers re-check the key in the record.
- Entries are appended in CommitLog order, so the newest entries of the newest file are the
  ones past any truncation point; ``truncate_after`` unlinks them newest first.
- Files are memory-mapped and sparse; with ``preallocate`` their blocks are allocated at
  creation, so a full disk fails the roll (``DiskFull``) rather than a later write through
  the map (SIGBUS). Without it, the store's free-space threshold is the guard.
- Files are named ``yyyyMMddHHmmssSSS`` (UTC) like RocketMQ's; a name is always later than the
  previous one, even when the clock steps back.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import attrs

from broker.store.flush import collect_fds
from protocol.errors import DiskFull
from protocol.message import java_string_hash
from protocol.speedups import index_put as _compiled_index_put
from protocol.speedups import topic_key_hash as _compiled_topic_key_hash

log = logging.getLogger(__name__)

HEADER = struct.Struct(">qqqqii")
HEADER_BYTES = HEADER.size
SLOT = struct.Struct(">i")
SLOT_BYTES = SLOT.size
ENTRY = struct.Struct(">iqii")
ENTRY_BYTES = ENTRY.size
INVALID_INDEX = 0
_INT32_MAX = 0x7FFFFFFF
assert HEADER_BYTES == 40 and ENTRY_BYTES == 20
#: ``(key_hash, physical_offset, store_timestamp_ms)`` of one index key to write.
HashedKey = tuple[int, int, int]
#: Consecutive entries ``IndexFile.put_hashed`` packs with one struct call.
_ENTRY_RUN = 64

#: ``_ENTRIES[n]``: ``n`` consecutive entries (big-endian, no padding: ``n`` x ``ENTRY``).
_ENTRIES = [struct.Struct(">" + "iqii" * n) for n in range(_ENTRY_RUN + 1)]


# --- pure pieces ------------------------------------------------------------------------------


# Java's hashCode is the polynomial sum(c[i] * 31**(n-1-i)) mod 2**32. For ASCII text it is
# evaluated at C speed by splitting each byte c into 31*q + r (q < 5) and letting int(..., 31)
# evaluate both digit strings: sum(q[i]*31**(n-i)) + sum(r[i]*31**(n-1-i)). Five times faster
# than a Python loop, which matters: every message indexes two or more keys on the put path.
_DIGITS_31 = b"0123456789abcdefghijklmnopqrstu"
_HIGH_DIGIT = bytes(_DIGITS_31[c // 31] for c in range(128)) + bytes(128)
_LOW_DIGIT = bytes(_DIGITS_31[c % 31] for c in range(128)) + bytes(128)


#: Bytes hashed per ``int(..., 31)``: Python refuses to convert more digits than
#: ``sys.get_int_max_str_digits()`` (4300 by default, never set below 640) in a base that
#: is no power of two, and a key off the wire (QUERY_MESSAGE's, a KEYS token) may be longer.
_HASH_CHUNK = 512
#: 31**_HASH_CHUNK mod 2**32: one chunk's shift of the hash so far.
_HASH_CHUNK_SHIFT = pow(31, _HASH_CHUNK, 1 << 32)


def _ascii_hash(data: bytes) -> int:
    """Java's hashCode of non-empty ASCII ``data`` (at most ``_HASH_CHUNK`` bytes), unmasked."""
    return int(data.translate(_HIGH_DIGIT) + b"0", 31) + int(data.translate(_LOW_DIGIT), 31)


def java_hash_unsigned(key: str) -> int:
    """Java ``String.hashCode()`` as an unsigned 32-bit value."""
    if key.isascii():
        data = key.encode("ascii")
        if len(data) <= _HASH_CHUNK:  # the common case: one conversion pair
            return _ascii_hash(data) & 0xFFFFFFFF if data else 0
        h = 0
        for start in range(0, len(data), _HASH_CHUNK):
            chunk = data[start : start + _HASH_CHUNK]
            shift = _HASH_CHUNK_SHIFT if len(chunk) == _HASH_CHUNK else pow(31, len(chunk), 1 << 32)
            h = (h * shift + _ascii_hash(chunk)) & 0xFFFFFFFF
        return h
    return java_string_hash(key) & 0xFFFFFFFF


def index_key_hash(key: str) -> int:
    """RocketMQ ``indexKeyHashMethod``: abs of Java ``hashCode``, 0 when that overflows."""
    return _abs_int32(java_hash_unsigned(key))


def _abs_int32(h: int) -> int:
    if h & 0x80000000:
        h = 0x100000000 - h  # abs of the negative int32
        return 0 if h == 0x80000000 else h
    return h


# ``topic#key`` hashed without building the string: Java's hash of a concatenation is
# hash(topic#) * 31**len(key) + hash(key) (mod 2**32), and the first term is the same for
# every key of a topic and length (``_topic_terms``: one list per topic). A key whose
# characters all lie within 31 consecutive codes (a UNIQ_KEY is upper-case hex: '0'..'F' is
# 48..70) is one base-31 number once _WINDOW_LOW is taken off each character:
# hash(key) = int(digits, 31) + _WINDOW_LOW * (31**(n-1) + ... + 31 + 1), a constant of the
# length folded into the topic's term. One translate and one int() (instead of two of each,
# a concatenation and the prefix's characters): a UNIQ_KEY costs about half as much.
_WINDOW_LOW = 40
#: ``_WINDOW_LOW + i`` -> base-31 digit i; other bytes -> "!", which ``isalnum`` refuses.
_WINDOW = bytes(
    _DIGITS_31[c - _WINDOW_LOW] if _WINDOW_LOW <= c < _WINDOW_LOW + 31 else ord("!")
    for c in range(256)
)
#: Key lengths with a precomputed term (longer keys compute theirs).
_TERM_LENGTHS = 64
#: Topics with their terms kept (then the table starts over).
_TERM_TOPICS = 1024
_topic_terms: dict[str, tuple[list[int], list[int]]] = {}


def _terms_of(topic: str) -> tuple[list[int], list[int]]:
    """For key lengths n < _TERM_LENGTHS: hash(topic#) * 31**n, the term of any key, and
    that plus the window's constant, the term of a key within the window (mod 2**32)."""
    prefix = java_hash_unsigned(f"{topic}#")
    powers = [pow(31, n, 1 << 32) for n in range(_TERM_LENGTHS)]
    plain = [(prefix * p) & 0xFFFFFFFF for p in powers]
    window = [(t + _WINDOW_LOW * ((31**n - 1) // 30)) & 0xFFFFFFFF for n, t in enumerate(plain)]
    if len(_topic_terms) >= _TERM_TOPICS:
        _topic_terms.clear()
    _topic_terms[topic] = plain, window
    return plain, window


def topic_key_hash_python(topic: str, key: str) -> int:
    """``index_key_hash(f"{topic}#{key}")``, the hash of an index key, computed faster."""
    n = len(key)
    if n >= _TERM_LENGTHS or not key.isascii():  # UTF-16 length differs: hash it whole
        return _abs_int32(java_hash_unsigned(f"{topic}#{key}"))
    terms = _topic_terms.get(topic) or _terms_of(topic)
    digits = key.encode().translate(_WINDOW)
    if digits.isalnum():  # all within the window (and not empty)
        h = (terms[1][n] + int(digits, 31)) & 0xFFFFFFFF
    else:
        h = (terms[0][n] + java_hash_unsigned(key)) & 0xFFFFFFFF
    if h & 0x80000000:  # _abs_int32, inline
        h = 0x100000000 - h
        return 0 if h == 0x80000000 else h
    return h


#: ``topic_key_hash_python``, compiled where it is built (protocol/_speedups.c).
topic_key_hash: Callable[[str, str], int] = _compiled_topic_key_hash or topic_key_hash_python


def slot_of(key_hash: int, slots: int) -> int:
    """Bucket of a key hash."""
    assert key_hash >= 0 and slots > 0
    return key_hash % slots


def index_file_bytes(slots: int, entries: int) -> int:
    """Size of an index file."""
    return HEADER_BYTES + slots * SLOT_BYTES + entries * ENTRY_BYTES


def slot_position(slot: int) -> int:
    """Byte position of slot ``slot``."""
    return HEADER_BYTES + slot * SLOT_BYTES


def entry_position(slots: int, index: int) -> int:
    """Byte position of entry number ``index`` (1-based in practice)."""
    return HEADER_BYTES + slots * SLOT_BYTES + index * ENTRY_BYTES


def time_diff_s(store_timestamp_ms: int, begin_timestamp_ms: int) -> int:
    """Entry timeDiff: whole seconds since the file's first entry, clamped to [0, int32 max]."""
    if begin_timestamp_ms <= 0:
        return 0
    diff = (store_timestamp_ms - begin_timestamp_ms) // 1000
    return max(0, min(diff, _INT32_MAX))


def add_index_keys(
    out: list[HashedKey],
    topic: str,
    uniq_key: str | None,
    keys_value: str | None,
    phys: int,
    store_ms: int,
) -> bool:
    """Append to ``out`` the hashed index keys of a record that is no rollback (callers
    skip rollbacks, which RocketMQ never indexes): ``topic#UNIQ_KEY`` first, then
    ``topic#<token>`` for each non-empty space-separated token of its KEYS property.
    True if it added any."""
    before = len(out)
    if uniq_key:
        out.append((topic_key_hash(topic, uniq_key), phys, store_ms))
    if keys_value:
        for key in keys_value.split(" "):
            if key:
                out.append((topic_key_hash(topic, key), phys, store_ms))
    return len(out) > before


def index_file_name(ms: int) -> str:
    """``yyyyMMddHHmmssSSS`` of epoch ``ms`` in UTC."""
    dt = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(milliseconds=ms)
    return dt.strftime("%Y%m%d%H%M%S") + f"{dt.microsecond // 1000:03d}"


def parse_index_file_name(name: str) -> int | None:
    """Epoch ms of an index file name, or None if it is not one."""
    if len(name) != 17 or not name.isdigit():
        return None
    dt = datetime.datetime.strptime(name[:14], "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (dt - epoch) // datetime.timedelta(milliseconds=1) + int(name[14:])


@attrs.frozen(kw_only=True)
class IndexHeader:
    """The 40-byte header."""

    begin_timestamp_ms: int = 0
    end_timestamp_ms: int = 0
    begin_phy_offset: int = 0
    end_phy_offset: int = 0
    hash_slot_count: int = 0
    index_count: int = 1

    def encode(self) -> bytes:
        """Header bytes."""
        return HEADER.pack(
            self.begin_timestamp_ms,
            self.end_timestamp_ms,
            self.begin_phy_offset,
            self.end_phy_offset,
            self.hash_slot_count,
            self.index_count,
        )

    @classmethod
    def decode(cls, data: bytes) -> IndexHeader:
        """Parse header bytes."""
        b_ts, e_ts, b_phy, e_phy, slot_count, count = HEADER.unpack(data[:HEADER_BYTES])
        return cls(
            begin_timestamp_ms=b_ts,
            end_timestamp_ms=e_ts,
            begin_phy_offset=b_phy,
            end_phy_offset=e_phy,
            hash_slot_count=slot_count,
            index_count=count,
        )


# --- one file ---------------------------------------------------------------------------------


class IndexFile:
    """One memory-mapped index file."""

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, slots: int, entries: int) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self.slots = slots
        self.entries = entries
        self._entries_pos = entry_position(slots, 0)
        h = IndexHeader.decode(mm[:HEADER_BYTES])
        self.begin_timestamp_ms = h.begin_timestamp_ms
        self.end_timestamp_ms = h.end_timestamp_ms
        self.begin_phy_offset = h.begin_phy_offset
        self.end_phy_offset = h.end_phy_offset
        self.hash_slot_count = h.hash_slot_count
        self.index_count = max(1, min(h.index_count, entries))

    @classmethod
    def create(cls, path: Path, slots: int, entries: int, *, preallocate: bool) -> IndexFile:
        """Create an empty file (header with indexCount 1)."""
        size = index_file_bytes(slots, entries)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if preallocate:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise DiskFull(f"no space for index file {path} ({size} bytes)") from exc
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.ftruncate(fd, size)
            else:
                os.ftruncate(fd, size)
            os.pwrite(fd, IndexHeader().encode(), 0)
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return cls(path, fd, mm, slots, entries)

    @classmethod
    def open(cls, path: Path, slots: int, entries: int) -> IndexFile | None:
        """Map an existing file; None when its size does not match ``slots``/``entries``."""
        size = index_file_bytes(slots, entries)
        fd = os.open(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size != size:
                os.close(fd)
                return None
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mm, slots, entries)

    def write_header(self) -> None:
        """Copy the in-memory header into the map."""
        HEADER.pack_into(
            self._mm,
            0,
            self.begin_timestamp_ms,
            self.end_timestamp_ms,
            self.begin_phy_offset,
            self.end_phy_offset,
            self.hash_slot_count,
            self.index_count,
        )

    @property
    def is_full(self) -> bool:
        """No room for another entry."""
        return self.index_count >= self.entries

    @property
    def used_entries(self) -> int:
        """Entries written (indexCount - 1)."""
        return self.index_count - 1

    def _slot_value(self, slot_pos: int) -> int:
        (value,) = SLOT.unpack_from(self._mm, slot_pos)
        return INVALID_INDEX if value <= INVALID_INDEX or value > self.index_count else int(value)

    def put(self, key_hash: int, physical_offset: int, store_timestamp_ms: int) -> None:
        """Append one entry, link it into its bucket, then write the header (the caller
        checks ``is_full``): the bytes ``put_hashed`` of this one key and ``write_header``
        write, from the values in hand (every record's index entry comes here)."""
        count = self.index_count
        assert count < self.entries and key_hash >= 0
        mm = self._mm
        slot_pos = HEADER_BYTES + (key_hash % self.slots) * SLOT_BYTES
        (prev,) = SLOT.unpack_from(mm, slot_pos)
        slot_count = self.hash_slot_count
        if prev <= INVALID_INDEX or prev > count:
            prev = INVALID_INDEX
            slot_count += 1
            self.hash_slot_count = slot_count
        if count <= 1:
            self.begin_phy_offset = physical_offset
            self.begin_timestamp_ms = store_timestamp_ms
        # time_diff_s, inline.
        begin_ms = self.begin_timestamp_ms
        diff = 0
        if begin_ms > 0:
            diff = (store_timestamp_ms - begin_ms) // 1000
            if diff < 0:
                diff = 0
            elif diff > _INT32_MAX:
                diff = _INT32_MAX
        ENTRY.pack_into(
            mm, self._entries_pos + count * ENTRY_BYTES, key_hash, physical_offset, diff, prev
        )
        SLOT.pack_into(mm, slot_pos, count)
        count += 1
        self.index_count = count
        self.end_phy_offset = physical_offset
        self.end_timestamp_ms = store_timestamp_ms
        HEADER.pack_into(  # write_header, inline
            mm,
            0,
            begin_ms,
            store_timestamp_ms,
            self.begin_phy_offset,
            physical_offset,
            slot_count,
            count,
        )

    def put_hashed(self, items: Sequence[HashedKey], start: int) -> int:
        """``put`` of ``items[start:]`` in order until the file is full; return the index
        after the last one put. The same bytes as ``put`` one by one, with the entries
        packed in one call per ``_ENTRY_RUN`` (they are consecutive) and the bucket heads
        written as they go (a later key of the run may share a bucket). The caller calls
        ``write_header``."""
        count = self.index_count
        stop = min(len(items), start + self.entries - count)
        if stop <= start:
            return start
        mm = self._mm
        slots = self.slots
        read_slot = SLOT.unpack_from
        write_slot = SLOT.pack_into
        if count <= 1:
            _h, self.begin_phy_offset, self.begin_timestamp_ms = items[start]
        begin_ms = self.begin_timestamp_ms
        new_slots = 0
        last_ms = -1
        diff = 0
        phys = ms = 0
        for chunk_start in range(start, stop, _ENTRY_RUN):
            first = count
            values: list[int] = []
            for key_hash, phys, ms in items[chunk_start : min(stop, chunk_start + _ENTRY_RUN)]:
                slot_pos = HEADER_BYTES + (key_hash % slots) * SLOT_BYTES
                (prev,) = read_slot(mm, slot_pos)
                if prev <= INVALID_INDEX or prev > count:
                    prev = INVALID_INDEX
                    new_slots += 1
                if ms != last_ms:  # time_diff_s, inline and once per store time
                    last_ms = ms
                    diff = 0 if begin_ms <= 0 else max(0, min((ms - begin_ms) // 1000, _INT32_MAX))
                values += (key_hash, phys, diff, prev)
                write_slot(mm, slot_pos, count)
                count += 1
            _ENTRIES[count - first].pack_into(mm, self._entries_pos + first * ENTRY_BYTES, *values)
        self.hash_slot_count += new_slots
        self.index_count = count
        self.end_phy_offset = phys
        self.end_timestamp_ms = ms
        return stop

    def time_matched(self, begin_ms: int, end_ms: int) -> bool:
        """Whether [begin_ms, end_ms] overlaps this file's time range (``isTimeMatched``)."""
        b, e = self.begin_timestamp_ms, self.end_timestamp_ms
        return (begin_ms < b and end_ms > e) or b <= begin_ms <= e or b <= end_ms <= e

    def select(
        self, key_hash: int, max_num: int, begin_ms: int, end_ms: int, out: list[int]
    ) -> None:
        """Append to ``out`` the offsets of entries with ``key_hash`` in the time range,
        newest first, until ``out`` holds ``max_num``."""
        if self.index_count <= 1:
            return
        current = self._slot_value(slot_position(slot_of(key_hash, self.slots)))
        steps = 0
        while current != INVALID_INDEX and len(out) < max_num and steps < self.entries:
            steps += 1
            h, phys, diff, prev = ENTRY.unpack_from(self._mm, entry_position(self.slots, current))
            if diff < 0:
                break
            time_read = self.begin_timestamp_ms + diff * 1000
            if h == key_hash and begin_ms <= time_read <= end_ms:
                out.append(phys)
            if prev <= INVALID_INDEX or prev > self.index_count or prev >= current:
                break
            if time_read < begin_ms:
                break
            current = prev

    def truncate_after(self, physical_offset: int) -> int:
        """Unlink every entry pointing at or past ``physical_offset``; return how many."""
        removed = 0
        mm = self._mm
        while self.index_count > 1:
            last = self.index_count - 1
            pos = entry_position(self.slots, last)
            key_hash, phys, _diff, prev = ENTRY.unpack_from(mm, pos)
            if phys < physical_offset:
                break
            slot_pos = slot_position(slot_of(max(key_hash, 0), self.slots))
            (head,) = SLOT.unpack_from(mm, slot_pos)
            # Entries are unlinked newest first, so each is its bucket's head.
            assert head == last, (head, last)
            restored = prev if INVALID_INDEX < prev < last else INVALID_INDEX
            SLOT.pack_into(mm, slot_pos, restored)
            if restored == INVALID_INDEX:
                self.hash_slot_count -= 1
            mm[pos : pos + ENTRY_BYTES] = bytes(ENTRY_BYTES)
            self.index_count = last
            removed += 1
        if removed:
            if self.index_count > 1:
                _h, phys, diff, _p = ENTRY.unpack_from(
                    mm, entry_position(self.slots, self.index_count - 1)
                )
                self.end_phy_offset = phys
                self.end_timestamp_ms = self.begin_timestamp_ms + diff * 1000
            else:
                self.begin_phy_offset = self.end_phy_offset = 0
                self.begin_timestamp_ms = self.end_timestamp_ms = 0
            self.write_header()
        return removed

    def dup_fd(self) -> int:
        """A duplicate descriptor for fsync from a worker thread."""
        self.write_header()
        return os.dup(self._fd)

    def close(self) -> None:
        """Unmap and close."""
        with contextlib.suppress(ValueError, BufferError):
            self._mm.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


# --- the set of files -------------------------------------------------------------------------


class IndexService:
    """All index files under ``<store>/index/``, oldest first; only the newest is written."""

    def __init__(self, directory: Path, slots: int, entries: int, *, preallocate: bool) -> None:
        self.directory = directory
        self.slots = slots
        self.entries = entries
        self.preallocate = preallocate
        self.files: list[IndexFile] = []
        self._last_name_ms = 0
        self._dirty: dict[int, IndexFile] = {}
        #: ``open`` found files of another geometry and deleted them all.
        self.was_reset = False

    @classmethod
    def open(
        cls, directory: Path, slots: int, entries: int, *, preallocate: bool, node: str = "store"
    ) -> IndexService:
        """Open every index file; files of another geometry are deleted (the index is derived
        data: recovery re-indexes the CommitLog from where the remaining files end)."""
        svc = cls(directory, slots, entries, preallocate=preallocate)
        directory.mkdir(parents=True, exist_ok=True)
        named = sorted(
            (ms, p)
            for p in directory.iterdir()
            if (ms := parse_index_file_name(p.name)) is not None
        )
        for ms, path in named:
            f = IndexFile.open(path, slots, entries)
            if f is None:
                log.warning(
                    "%s: index file %s does not match %d slots / %d entries; "
                    "deleting all index files to rebuild them",
                    node,
                    path,
                    slots,
                    entries,
                )
                svc.close()
                for _ms, p in named:
                    p.unlink(missing_ok=True)
                svc.files.clear()
                svc.was_reset = True
                return svc
            svc.files.append(f)
            svc._last_name_ms = ms
        return svc

    @property
    def end_phy_offset(self) -> int:
        """CommitLog offset of the newest indexed record; -1 when nothing is indexed."""
        for f in reversed(self.files):
            if f.used_entries:
                return f.end_phy_offset
        return -1

    @property
    def last_update_timestamp_ms(self) -> int:
        """Store time of the newest indexed record (QUERY_MESSAGE indexLastUpdateTimestamp)."""
        for f in reversed(self.files):
            if f.used_entries:
                return f.end_timestamp_ms
        return 0

    def _writable(self, now_ms: int) -> IndexFile:
        if self.files and not self.files[-1].is_full:
            return self.files[-1]
        name_ms = max(now_ms, self._last_name_ms + 1)
        path = self.directory / index_file_name(name_ms)
        f = IndexFile.create(path, self.slots, self.entries, preallocate=self.preallocate)
        self._last_name_ms = name_ms
        if self.files:
            self._dirty[id(self.files[-1])] = self.files[-1]
        self.files.append(f)
        return f

    def put(self, keys: Iterable[str], physical_offset: int, store_timestamp_ms: int) -> None:
        """Index ``keys`` (already ``topic#key``) for the record at ``physical_offset``."""
        self.put_hashed([(index_key_hash(k), physical_offset, store_timestamp_ms) for k in keys])

    def put_hashed(self, items: Sequence[HashedKey]) -> None:
        """Index keys already hashed (``topic_key_hash``), in CommitLog order, a new file
        named by the store time of its first key; each file's header written once. On an
        error (a new file that cannot be created) the keys before it are indexed and every
        touched file's header is written."""
        if not items:
            return
        files = self.files
        f = files[-1] if files else None
        done = 0
        try:
            while done < len(items):
                if f is None or f.index_count >= f.entries:  # is_full, inline
                    if f is not None:
                        f.write_header()
                    f = self._writable(items[done][2])
                self._dirty[id(f)] = f
                done = f.put_hashed(items, done)
        finally:
            if f is not None:
                f.write_header()

    def put_one(self, key_hash: int, physical_offset: int, store_timestamp_ms: int) -> None:
        """``put_hashed`` of one key: the common record's only key (its UNIQ_KEY) when
        a put dispatches at once, without the list and the loop."""
        files = self.files
        f = files[-1] if files else None
        if f is None or f.index_count >= f.entries:
            f = self._writable(store_timestamp_ms)
        self._dirty[id(f)] = f
        # ``f.put`` (which writes the header too) in one compiled call where it is built;
        # the Python ``put`` stays the definition and runs for anything else.
        if (
            _compiled_index_put is None
            or _compiled_index_put(f, key_hash, physical_offset, store_timestamp_ms) is None
        ):
            f.put(key_hash, physical_offset, store_timestamp_ms)

    def query(self, key: str, max_num: int, begin_ms: int, end_ms: int) -> list[int]:
        """CommitLog offsets of records that may carry ``key`` (``topic#key``), newest first,
        without duplicates; at most ``max_num``."""
        key_hash = index_key_hash(key)
        found: list[int] = []
        for f in reversed(self.files):
            if len(found) >= max_num:
                break
            if f.used_entries and f.time_matched(begin_ms, end_ms):
                f.select(key_hash, max_num, begin_ms, end_ms, found)
            if f.begin_timestamp_ms < begin_ms:
                break
        return list(dict.fromkeys(found))[:max_num]

    def truncate_after(self, physical_offset: int) -> int:
        """Drop every entry pointing at or past ``physical_offset``; return how many."""
        removed = 0
        while self.files:
            f = self.files[-1]
            if f.used_entries and f.begin_phy_offset < physical_offset:
                removed += f.truncate_after(physical_offset)
                self._dirty[id(f)] = f
                break
            removed += f.used_entries
            self._remove(f)
        return removed

    def delete_below(self, min_physical: int) -> int:
        """Retention: delete files (never the newest) whose records all lie below
        ``min_physical``; return how many."""
        deleted = 0
        while len(self.files) > 1 and self.files[0].end_phy_offset < min_physical:
            self._remove(self.files[0])
            deleted += 1
        return deleted

    def _remove(self, f: IndexFile) -> None:
        self.files.remove(f)
        self._dirty.pop(id(f), None)
        f.close()
        f.path.unlink(missing_ok=True)

    def dirty_fds(self) -> list[int]:
        """Duplicated fds of files written since ``clear_dirty`` (the caller fsyncs and
        closes them); all or none (``collect_fds``)."""
        return collect_fds(f.dup_fd() for f in self._dirty.values())

    def clear_dirty(self) -> None:
        """The files ``dirty_fds`` named are being fsynced."""
        self._dirty.clear()

    def close(self) -> None:
        """Unmap and close every file."""
        for f in self.files:
            f.close()
        self._dirty.clear()
