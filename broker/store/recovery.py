"""CommitLog recovery: find the end of valid data, repair a torn tail, refuse corruption.

Rules (DESIGN.md §4 "Recovery", reference/rocketmq-wire.md §3.9; etcd WAL's torn-tail rule):
- The walk starts at a record boundary known from the checkpoint (or at the oldest segment)
  and checks every record: magic, size (>= the minimum, leaves 8 bytes for a blank marker
  in its segment), the PHYSICALOFFSET field equal to where the record lies, the field layout
  and, when configured, the body CRC. A blank marker must reach exactly to the segment end
  and sends the walk to the next segment. Zeros (size 0, magic 0) end the data.
- Where the walk stops is judged by ``judge_tail`` (pure):
  * below the checkpoint's fsynced offset -> corruption (fsynced data is bad or missing);
  * a valid record anywhere after it -> corruption (a hole in the middle of the log);
  * otherwise, non-zero bytes after it -> a torn tail: those bytes are copied to
    ``<segment>.broken`` and cut off (one log line);
  * otherwise -> the clean end.
- Corruption raises ``DamagedSegment`` (a ``CorruptRecord`` and an ``UnreadableFile``:
  ``<segment>: damaged at offset N (file position P) ...``); the store does not open.
- Segments below the re-verified ones are walked too (``scan_old_segments``: size, magic,
  PHYSICALOFFSET and body CRC of each record, no decode), so damage anywhere refuses
  start (issue 13 row 8). With ``skip_damaged_segments`` each damaged range (to the next
  valid record of its segment, or the segment's end) is logged with its file and offset
  and returned as a ``Damage`` instead; the walk goes on past it, and data ending below the
  fsynced offset is cut like a torn tail.
- A "valid record after" is found by searching the bytes for a record magic whose
  PHYSICALOFFSET field equals its position and that decodes (with CRC): random bytes do not
  pass that by accident. Holes in sparse files are skipped with SEEK_DATA.
"""

from __future__ import annotations

import enum
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import attrs

from broker.store.commitlog import CommitLog, Segment
from broker.store.damage import Damage
from broker.store.files import UnreadableFile
from protocol.crc import crc32
from protocol.errors import CorruptRecord, MalformedRecord
from protocol.message import (
    BLANK_MAGIC,
    BLANK_MARKER_BYTES,
    MAGIC_V1,
    MAGIC_V2,
    MIN_RECORD_BYTES,
    SYSFLAG_BORNHOST_V6,
    SYSFLAG_STOREHOST_V6,
    decode_record,
    peek_record_header,
)

log = logging.getLogger(__name__)

_CHUNK_BYTES = 4 * 1024 * 1024
_BODY_CRC_POS = 8
_PHYS_FIELD_POS = 28
_SYSFLAG_POS = 36
_BORN_HOST_POS = 48
_CRC_MASK = 0x7FFFFFFF
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_MAGICS = (MAGIC_V1.to_bytes(4, "big", signed=True), MAGIC_V2.to_bytes(4, "big", signed=True))


@attrs.frozen(kw_only=True)
class RecoveryReport:
    """What opening the store found and did."""

    #: CommitLog offset where the next record goes.
    end_offset: int
    min_offset: int
    #: Where the validating walk started.
    scanned_from: int
    #: Non-zero bytes cut off a torn tail (0 when the log ended cleanly).
    truncated_bytes: int
    #: The copy of the cut bytes, if any.
    broken_file: Path | None
    #: Records whose ConsumeQueue/index entries were (re)written while opening.
    redispatched_count: int
    #: ConsumeQueue entries / index entries dropped because they pointed past the end.
    dropped_cq_entries: int
    dropped_index_entries: int
    #: The abort marker was present (the previous run did not close the store).
    abnormal_shutdown: bool
    checkpoint_valid: bool
    #: ConsumeQueues found damaged and rebuilt from the CommitLog ("topic/queueId").
    rebuilt_queues: tuple[str, ...] = ()
    #: Damaged CommitLog ranges skipped (``skip_damaged_segments``).
    skipped_damage: tuple[Damage, ...] = ()


class TailVerdict(enum.Enum):
    """How the end of the walk is judged."""

    CLEAN = "clean"
    TORN = "torn"
    CORRUPT = "corrupt"


def judge_tail(
    *, end_offset: int, durable_offset: int, valid_after: int | None, garbage_bytes: int
) -> tuple[TailVerdict, str]:
    """Classify where the validating walk stopped; returns the verdict and why."""
    if end_offset < durable_offset:
        return (
            TailVerdict.CORRUPT,
            f"valid data ends at {end_offset}, below the fsynced offset {durable_offset}",
        )
    if valid_after is not None:
        return (
            TailVerdict.CORRUPT,
            f"a valid record follows at offset {valid_after}, so this is not a torn tail",
        )
    if garbage_bytes:
        return TailVerdict.TORN, f"{garbage_bytes} bytes of a partial record after the end"
    return TailVerdict.CLEAN, "end of data"


@attrs.frozen(kw_only=True)
class WalkEnd:
    """Where the walk stopped and why (``reason`` None: zeros or the last segment's end)."""

    offset: int
    reason: str | None


def walk_records(clog: CommitLog, start: int, *, check_crc: bool) -> WalkEnd:
    """Walk valid records from ``start`` (a record boundary) to where they stop."""
    pos = start
    while True:
        seg = clog.segment_for(pos)
        if seg is None:
            return WalkEnd(offset=pos, reason=None)
        stop = _walk_segment(seg, pos, check_crc=check_crc)
        if stop.offset < seg.end:
            return stop
        pos = seg.end


def _walk_segment(seg: Segment, start: int, *, check_crc: bool, light: bool = False) -> WalkEnd:
    """Walk one segment from ``start``; ``light`` checks size, magic, the PHYSICALOFFSET
    field and the body CRC of each record without decoding it (the old-segment scan, at
    several times the speed of a full decode)."""
    pos = start
    while pos < seg.end:
        want = min(_CHUNK_BYTES, seg.end - pos)
        buf = os.pread(seg.fd, want, pos - seg.start)
        i = 0
        while pos + i < seg.end:
            where = pos + i
            if len(buf) - i < BLANK_MARKER_BYTES:
                if i == 0:
                    return WalkEnd(offset=where, reason="file shorter than its segment size")
                break  # read on from here
            size, magic = peek_record_header(buf, i)
            if size == 0 and magic == 0:
                return WalkEnd(offset=where, reason=None)
            if magic == BLANK_MAGIC:
                if size != seg.end - where:
                    return WalkEnd(
                        offset=where,
                        reason=f"blank marker of {size} bytes does not reach the segment end",
                    )
                return WalkEnd(offset=seg.end, reason=None)
            if magic not in (MAGIC_V1, MAGIC_V2):
                return WalkEnd(offset=where, reason=f"bad magic 0x{magic & 0xFFFFFFFF:08X}")
            if size < MIN_RECORD_BYTES or where + size + BLANK_MARKER_BYTES > seg.end:
                return WalkEnd(offset=where, reason=f"record size {size} does not fit")
            if i + size > len(buf):
                if i == 0:
                    buf = os.pread(seg.fd, size, where - seg.start)
                    if len(buf) < size:
                        return WalkEnd(offset=where, reason="record cut by the end of the file")
                else:
                    break
            if light:
                (lies_at,) = _INT64.unpack_from(buf, i + _PHYS_FIELD_POS)
                if lies_at != where:
                    return WalkEnd(offset=where, reason=f"record says it lies at {lies_at}")
                if check_crc and not _body_crc_matches(buf, i, size):
                    return WalkEnd(offset=where, reason="record body fails its CRC")
                i += size
                continue
            try:
                rec, _ = decode_record(buf, i, check_crc=check_crc, max_size=seg.size)
            except MalformedRecord as exc:
                return WalkEnd(
                    offset=where, reason=str(exc).replace(f"record at offset {i}", "record")
                )
            if rec.physical_offset != where:
                return WalkEnd(
                    offset=where,
                    reason=f"record says it lies at {rec.physical_offset}, not {where}",
                )
            i += size
        pos += i
    return WalkEnd(offset=seg.end, reason=None)


def _body_crc_matches(buf: bytes, i: int, size: int) -> bool:
    """Whether the body of the record at ``buf[i:i + size]`` matches its BODYCRC field
    (record layout, wire §3.2: host fields are 8 bytes, or 20 with their IPv6 flag)."""
    (sys_flag,) = _INT32.unpack_from(buf, i + _SYSFLAG_POS)
    born = 20 if sys_flag & SYSFLAG_BORNHOST_V6 else 8
    store = 20 if sys_flag & SYSFLAG_STOREHOST_V6 else 8
    at = i + _BORN_HOST_POS + born + 8 + store + 12  # + store time, reconsume, prepared
    (body_len,) = _INT32.unpack_from(buf, at)
    if body_len < 0 or at + 4 + body_len > i + size:
        return False
    crc = crc32(memoryview(buf)[at + 4 : at + 4 + body_len]) & _CRC_MASK
    (stored,) = _INT32.unpack_from(buf, i + _BODY_CRC_POS)
    return bool(crc == stored)


def _data_chunks(fd: int, begin: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(position, bytes) of [begin, end) in chunks, skipping holes of sparse files."""
    pos = begin
    while pos < end:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            return  # ENXIO: only a hole up to the end of the file
        if pos >= end:
            return
        try:
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
        except OSError:
            hole = end
        stop = min(end, max(hole, pos + 1))
        while pos < stop:
            n = min(_CHUNK_BYTES, stop - pos)
            data = os.pread(fd, n, pos)
            if not data:
                return
            yield pos, data
            pos += len(data)


def _is_record_at(seg: Segment, file_pos: int, *, check_crc: bool) -> bool:
    head = os.pread(seg.fd, BLANK_MARKER_BYTES, file_pos)
    if len(head) < BLANK_MARKER_BYTES:
        return False
    size, magic = peek_record_header(head, 0)
    if magic not in (MAGIC_V1, MAGIC_V2) or size < MIN_RECORD_BYTES:
        return False
    if file_pos + size > seg.size:
        return False
    buf = os.pread(seg.fd, size, file_pos)
    if int.from_bytes(buf[_PHYS_FIELD_POS : _PHYS_FIELD_POS + 8], "big") != seg.start + file_pos:
        return False
    try:
        decode_record(buf, 0, check_crc=check_crc, max_size=seg.size)
    except MalformedRecord:
        return False
    return True


def _valid_record_in(seg: Segment, begin: int, *, check_crc: bool) -> int | None:
    """File position of the first valid record at or after file position ``begin``."""
    carry = b""
    carry_pos = begin
    for chunk_pos, data in _data_chunks(seg.fd, begin, seg.size):
        if chunk_pos != carry_pos + len(carry):
            carry = b""
        window = carry + data
        base = chunk_pos - len(carry)
        candidates = sorted(c for m in _MAGICS for c in _candidates(window, m, base))
        for cand in candidates:  # in position order: the first valid one is the answer
            if cand >= begin and _is_record_at(seg, cand, check_crc=check_crc):
                return cand
        carry = window[-3:]
        carry_pos = chunk_pos + len(data) - len(carry)
    return None


def _candidates(window: bytes, magic: bytes, base: int) -> Iterator[int]:
    j = window.find(magic)
    while j != -1:
        yield base + j - 4
        j = window.find(magic, j + 1)


def find_valid_record_after(clog: CommitLog, offset: int, *, check_crc: bool = True) -> int | None:
    """Offset of the first valid record lying after ``offset`` (exclusive), or None."""
    for seg in clog.segments:
        if seg.end <= offset + 1:
            continue
        found = _valid_record_in(seg, max(offset + 1, seg.start) - seg.start, check_crc=check_crc)
        if found is not None:
            return seg.start + found
    return None


def garbage_extent(clog: CommitLog, offset: int) -> int:
    """Bytes from ``offset`` to the last non-zero byte of its segment (0 if all zeros)."""
    seg = clog.segment_for(offset)
    if seg is None:
        return 0
    begin = offset - seg.start
    last_nonzero = begin
    for chunk_pos, data in _data_chunks(seg.fd, begin, seg.size):
        stripped = len(data.rstrip(b"\0"))
        if stripped:
            last_nonzero = chunk_pos + stripped
    return last_nonzero - begin


def later_segments_with_data(clog: CommitLog, offset: int) -> list[Segment]:
    """Segments after the one holding ``offset`` that contain any non-zero byte."""
    out: list[Segment] = []
    for seg in clog.segments:
        if seg.start <= offset:
            continue
        if any(data.strip(b"\0") for _pos, data in _data_chunks(seg.fd, 0, seg.size)):
            out.append(seg)
    return out


def keep_broken_copy(seg: Segment, file_pos: int, length: int) -> Path:
    """Copy ``length`` bytes at ``file_pos`` of ``seg`` to ``<segment>.broken[.N]``."""
    target = seg.path.with_name(seg.path.name + ".broken")
    n = 0
    while target.exists():
        n += 1
        target = seg.path.with_name(f"{seg.path.name}.broken.{n}")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        done = 0
        while done < length:
            data = os.pread(seg.fd, min(_CHUNK_BYTES, length - done), file_pos + done)
            if not data:
                break
            os.write(fd, data)
            done += len(data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return target


def cut_tail(
    clog: CommitLog, end_offset: int, *, node: str, reason: str
) -> tuple[int, Path | None]:
    """Repair a torn tail at ``end_offset``: keep a copy, zero it, drop later segments.

    Returns (non-zero bytes cut, path of the first copy).
    """
    seg = clog.segment_for(end_offset)
    cut = garbage_extent(clog, end_offset)
    broken: Path | None = None
    if seg is not None and cut:
        broken = keep_broken_copy(seg, end_offset - seg.start, cut)
    for later in later_segments_with_data(clog, end_offset):
        copy = keep_broken_copy(later, 0, later.size)
        cut += later.size
        broken = broken or copy
    _cut_at(clog, end_offset)
    log.warning(
        "%s: torn CommitLog tail at offset %d (%s): cut %d bytes, copy kept in %s",
        node,
        end_offset,
        reason,
        cut,
        broken,
    )
    return cut, broken


def _cut_at(clog: CommitLog, end_offset: int) -> None:
    """Make ``end_offset`` the write position: drop later segments, zero the rest of its own."""
    if not clog.segments:
        return
    clog.write_offset = clog.segments[-1].end
    clog.truncate(end_offset)
    seg = clog.segment_for(end_offset)
    if seg is not None:
        os.fsync(seg.fd)


class DamagedSegment(UnreadableFile, CorruptRecord):
    """A CommitLog segment holds bytes that are no record where records must be."""


#: What a refusal tells the operator to do.
_REMEDY = (
    "refusing to start: restore the file, or start with --skip-damaged-segments "
    "(skipDamagedSegments = true) to serve everything else and never the damaged bytes"
)


@attrs.frozen(kw_only=True)
class LogRecovery:
    """What ``recover_commitlog`` found and did."""

    end_offset: int
    #: Non-zero bytes cut off a torn tail, and the copy kept of them.
    cut_bytes: int
    broken_file: Path | None
    #: Ranges skipped (``skip_damaged``), oldest first.
    damages: tuple[Damage, ...]


def _damage_at(clog: CommitLog, offset: int, end_offset: int, reason: str) -> Damage:
    seg = clog.segment_for(offset)
    assert seg is not None
    return Damage(
        path=seg.path,
        offset=offset,
        end_offset=min(end_offset, seg.end),
        reason=reason,
        segment_start=seg.start,
    )


def _refuse_or_keep(damage: Damage, *, skip: bool, node: str) -> Damage:
    if not skip:
        raise DamagedSegment(damage.path, f"{damage.problem()}; {_REMEDY}")
    log.error("%s: skipping damaged CommitLog bytes: %s", node, damage.describe())
    return damage


def scan_old_segments(clog: CommitLog, below: int, *, skip: bool, node: str) -> list[Damage]:
    """Walk the record headers of every segment ending at or below ``below`` (those the
    checkpoint walk does not re-verify); each damaged range refuses start, or is logged
    and returned when ``skip``."""
    damages: list[Damage] = []
    for seg in clog.segments:
        if seg.end > below:
            break
        pos = seg.start
        while pos < seg.end:
            stop = _walk_segment(seg, pos, check_crc=True, light=True)
            if stop.offset >= seg.end:
                break
            found = _valid_record_in(seg, stop.offset + 1 - seg.start, check_crc=True)
            resume = seg.end if found is None else seg.start + found
            reason = stop.reason or "zeros where a record or the end marker should be"
            damages.append(
                _refuse_or_keep(_damage_at(clog, stop.offset, resume, reason), skip=skip, node=node)
            )
            pos = resume
    return damages


def recover_commitlog(
    clog: CommitLog,
    *,
    start: int,
    durable_offset: int,
    check_crc: bool,
    node: str,
    skip_damaged: bool = False,
) -> LogRecovery:
    """Walk from ``start``, judge the end, repair or refuse; with ``skip_damaged`` a
    damaged range followed by valid records is logged, kept aside and walked past, and
    data ending below the durable offset is cut like a torn tail.

    Raises ``CorruptRecord`` (``DamagedSegment`` when a file holds the damage).
    """
    last_end = clog.segments[-1].end if clog.segments else clog.min_offset
    if durable_offset > last_end:
        raise CorruptRecord(
            f"{clog.directory}: the checkpoint says data was fsynced up to offset "
            f"{durable_offset} but the CommitLog files end at {last_end}"
        )
    damages: list[Damage] = []
    pos = start
    while True:
        stop = walk_records(clog, pos, check_crc=check_crc)
        end = stop.offset
        valid_after = find_valid_record_after(clog, end, check_crc=check_crc)
        garbage = garbage_extent(clog, end) + sum(
            seg.size for seg in later_segments_with_data(clog, end)
        )
        verdict, why = judge_tail(
            end_offset=end,
            durable_offset=durable_offset,
            valid_after=valid_after,
            garbage_bytes=garbage,
        )
        detail = f"{why}; {stop.reason}" if stop.reason else why
        if verdict is TailVerdict.CORRUPT and valid_after is not None:
            damage = _damage_at(clog, end, valid_after, detail)
            damages.append(_refuse_or_keep(damage, skip=skip_damaged, node=node))
            pos = damage.end_offset
            continue
        if verdict is TailVerdict.CORRUPT:
            seg = clog.segment_for(end)
            if seg is None or not skip_damaged:
                where = seg.path if seg is not None else clog.directory
                at = f"file position {end - seg.start}" if seg is not None else "past the files"
                raise DamagedSegment(where, f"damaged at offset {end} ({at}): {detail}; {_REMEDY}")
            log.error("%s: %s: %s; cutting there (skipDamagedSegments)", node, seg.path, detail)
        if verdict is not TailVerdict.CLEAN:
            cut, broken = cut_tail(clog, end, node=node, reason=detail)
            return LogRecovery(
                end_offset=end, cut_bytes=cut, broken_file=broken, damages=tuple(damages)
            )
        _cut_at(clog, end)
        clog.write_offset = end
        return LogRecovery(end_offset=end, cut_bytes=0, broken_file=None, damages=tuple(damages))
