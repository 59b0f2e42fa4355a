"""A bad record never costs the others (issue 13, rows 5 and 6): the pure decoding side.

- ``inflate``: zlib only, never past its cap (a 200 MiB bomb costs at most the cap, shown
  with tracemalloc), truncated or foreign compression refused as ``MalformedRecord``.
- ``decode_pull_body`` / ``parse_pull_response``: every kind of bad record (not zlib, a
  bomb, a CRC mismatch, properties that are not UTF-8, fields that disagree with the
  size, broken framing) is skipped and listed while the good records of the same answer
  are returned, and the answer always moves the queue forward.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import pytest

from client.consumer import (
    PullStatus,
    SkippedRecord,
    check_pull_offsets,
    decode_pull_body,
    parse_pull_response,
)
from client.message import inflate
from protocol.bodies import parse_subscription
from protocol.codes import ResponseCode
from protocol.errors import MalformedRecord, ProtocolError
from protocol.message import SYSFLAG_COMPRESSED, SYSFLAG_COMPRESSION_ZLIB
from tests.unit.test_sdk_allocate import QUEUE, answer, record

MIB = 1024 * 1024
ALL = parse_subscription("*", topic="T")


def bomb(inflated_bytes: int) -> bytes:
    """A zlib stream of zeros: about 1/1000 of what it inflates to."""
    packer = zlib.compressobj(9)
    chunk = bytes(MIB)
    parts = [packer.compress(chunk) for _ in range(inflated_bytes // MIB)]
    return b"".join([*parts, packer.flush()])


# --- inflate -----------------------------------------------------------------------------


def test_inflate_passes_plain_bodies_and_reads_zlib() -> None:
    assert inflate(b"plain", 0) == b"plain"
    assert inflate(zlib.compress(b"x" * 5000), SYSFLAG_COMPRESSED) == b"x" * 5000
    # RocketMQ 5 may name the type: ZLIB (3 << 8) is read too.
    flags = SYSFLAG_COMPRESSED | SYSFLAG_COMPRESSION_ZLIB
    assert inflate(zlib.compress(b"y"), flags) == b"y"
    # Exactly at the cap is fine; one byte over is not.
    assert len(inflate(zlib.compress(bytes(1000)), SYSFLAG_COMPRESSED, 1000)) == 1000
    with pytest.raises(MalformedRecord, match="past the 999-byte limit"):
        inflate(zlib.compress(bytes(1000)), SYSFLAG_COMPRESSED, 999)


@pytest.mark.parametrize(
    ("body", "flags", "why"),
    [
        (b"not deflate", SYSFLAG_COMPRESSED, "does not inflate"),
        (zlib.compress(b"z" * 1000)[:-6], SYSFLAG_COMPRESSED, "truncated"),
        (zlib.compress(b"z"), SYSFLAG_COMPRESSED | 0x100, "type 0x1"),  # LZ4
        (zlib.compress(b"z"), SYSFLAG_COMPRESSED | 0x200, "type 0x2"),  # ZSTD
    ],
)
def test_inflate_refuses_what_is_not_a_whole_zlib_stream(body: bytes, flags: int, why: str) -> None:
    with pytest.raises(MalformedRecord, match=why):
        inflate(body, flags)


def test_a_zlib_bomb_never_allocates_past_the_cap() -> None:
    """200 MiB of zeros in ~200 KiB: refused after at most the cap (4 MiB) of output, so
    the peak allocation stays near the cap, not near 200 MiB (it was 274 MB before)."""
    data = bomb(200 * MIB)
    assert len(data) < 300 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(MalformedRecord, match="inflates past"):
            inflate(data, SYSFLAG_COMPRESSED, 4 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB + 2 * MIB, peak


# --- pull bodies -------------------------------------------------------------------------


def decode(body: bytes, *, requested: int = 3, next_offset: int = 9, max_nums: int = 32):  # type: ignore[no-untyped-def]
    return decode_pull_body(
        body,
        QUEUE,
        ALL,
        requested=requested,
        next_begin_offset=next_offset,
        max_nums=max_nums,
        max_body_bytes=4 * MIB,
    )


def with_crc(data: bytes, crc: int) -> bytes:
    return data[:8] + struct.pack(">i", crc) + data[12:]


def test_good_records_around_bad_ones_are_all_returned() -> None:
    """Each kind of content damage costs only its own record; its offsets are kept for
    the send-back (queue offset, CommitLog offset, UNIQ_KEY)."""
    good = [record(3, None), record(5, None), record(8, None)]
    bad_zlib = record(4, None, body=b"not deflate", sys_flag=SYSFLAG_COMPRESSED)
    bad_crc = with_crc(record(6, None, body=b"payload"), 12345)
    big = record(7, None, body=bomb(8 * MIB), sys_flag=SYSFLAG_COMPRESSED)
    body = good[0] + bad_zlib + good[1] + bad_crc + big + good[2]
    result = decode(body)
    assert [m.queue_offset for m in result.messages] == [3, 5, 8]
    assert [s.queue_offset for s in result.skipped] == [4, 6, 7]
    assert [s.commit_log_offset for s in result.skipped] == [1004, 1006, 1007]
    assert [s.msg_id for s in result.skipped] == ["ID4", "ID6", "ID7"]
    assert "does not inflate" in result.skipped[0].reason
    assert "CRC mismatch" in result.skipped[1].reason
    assert "inflates past" in result.skipped[2].reason
    assert result.next_begin_offset == 9 and not result.resync


def test_undecodable_properties_and_inconsistent_sizes_are_skipped_by_size() -> None:
    """Damage inside a record whose framing holds: skipped, the next record still read."""
    props_bad = bytearray(record(4, None))
    # The properties are the record's tail: make their first byte invalid UTF-8.
    props_bad[len(props_bad) - len(b"UNIQ_KEY\x01ID4\x02")] = 0xFF
    sizes_bad = bytearray(record(5, None, body=b"abc"))
    struct.pack_into(">i", sizes_bad, 84, 2)  # body length 2, TOTALSIZE still says 3
    result = decode(record(3, None) + bytes(props_bad) + bytes(sizes_bad) + record(6, None))
    assert [m.queue_offset for m in result.messages] == [3, 6]
    assert [s.queue_offset for s in result.skipped] == [4, 5]
    assert "UTF-8" in result.skipped[0].reason and result.skipped[0].msg_id == ""
    assert "overruns" in result.skipped[1].reason


def test_a_bad_record_of_another_tag_is_dropped_quietly() -> None:
    """The tag re-filter runs first: a record this subscription does not take is not
    reported (nor sent to this group's DLQ), whatever its body."""
    bad = record(4, "Other", body=b"not deflate", sys_flag=SYSFLAG_COMPRESSED)
    result = decode_pull_body(
        record(3, "Mine") + bad,
        QUEUE,
        parse_subscription("Mine", topic="T"),
        requested=3,
        next_begin_offset=5,
        max_nums=32,
    )
    assert [m.queue_offset for m in result.messages] == [3]
    assert result.skipped == ()


def test_broken_framing_mid_body_resumes_just_past_the_last_record_read() -> None:
    garbage = b"\x00" * 120
    result = decode(record(3, None) + record(4, None) + garbage + record(6, None))
    assert [m.queue_offset for m in result.messages] == [3, 4]
    assert (result.skipped, result.next_begin_offset, result.resync) == ((), 5, False)


def test_broken_framing_at_the_start_asks_for_one_message_which_names_it() -> None:
    """The first record unreadable, its offset unknown: ``resync``; a pull of one then
    names it (the broker's next offset is just past its one record) and moves past it."""
    garbage = b"\xff" * 120 + record(6, None)
    first = decode(garbage, requested=5, next_offset=9)
    assert first.resync and first.next_begin_offset == 5 and not first.messages
    single = decode(b"\xff" * 120, requested=5, next_offset=6, max_nums=1)
    (skipped,) = single.skipped
    assert (skipped.queue_offset, skipped.commit_log_offset) == (5, None)
    assert single.next_begin_offset == 6 and not single.resync


def test_a_skipped_record_with_an_insane_offset_is_listed_without_one() -> None:
    """Offsets are trusted only in order and before the broker's next offset."""
    bad = record(30, None, body=b"not deflate", sys_flag=SYSFLAG_COMPRESSED)
    result = decode(record(3, None) + bad)
    (skipped,) = result.skipped
    assert skipped.queue_offset is None and skipped.commit_log_offset is None


def test_parse_pull_response_reports_skips_and_moves_forward() -> None:
    bad = record(4, None, body=b"not deflate", sys_flag=SYSFLAG_COMPRESSED)
    only_bad = parse_pull_response(
        answer(ResponseCode.SUCCESS, bad, next_offset=5), QUEUE, ALL, requested=4
    )
    assert only_bad.status is PullStatus.NO_MATCHED_MSG and only_bad.messages == ()
    assert [s.queue_offset for s in only_bad.skipped] == [4]
    assert only_bad.next_begin_offset == 5
    check_pull_offsets(only_bad, 4)
    mixed = parse_pull_response(
        answer(ResponseCode.SUCCESS, record(3, None) + bad, next_offset=5), QUEUE, ALL, requested=3
    )
    assert mixed.status is PullStatus.FOUND
    assert [m.queue_offset for m in mixed.messages] == [3]
    assert isinstance(mixed.skipped[0], SkippedRecord)


def test_an_offset_both_delivered_and_skipped_is_a_protocol_error() -> None:
    bad = record(3, None, body=b"not deflate", sys_flag=SYSFLAG_COMPRESSED)
    result = parse_pull_response(
        answer(ResponseCode.SUCCESS, bad + record(3, None), next_offset=5),
        QUEUE,
        ALL,
        requested=3,
    )
    with pytest.raises(ProtocolError, match="twice"):
        check_pull_offsets(result, 3)
