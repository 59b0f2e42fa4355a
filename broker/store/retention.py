"""Pure retention choice: which old CommitLog segments to delete.

Rules (RocketMQ ``fileReservedTime``, DESIGN.md §4 "Retention"):
- Only a prefix of the segment list is deleted, oldest first, so the log stays contiguous.
- The newest (active) segment is never deleted, nor one holding bytes not yet fsynced.
- A segment is expired when its newest store time is older than ``now - reserved``; a
  segment whose newest store time is unknown is kept.
- At most ``max_count`` segments per round (bounded work).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs


@attrs.frozen(kw_only=True)
class SegmentInfo:
    """What retention needs to know of one segment."""

    start_offset: int
    end_offset: int
    #: Store time of the newest record in the segment (an upper bound is fine); None if unknown.
    newest_store_timestamp_ms: int | None


def choose_expired_segments(
    segments: Sequence[SegmentInfo],
    *,
    now_ms: int,
    reserved_ms: int,
    flushed_offset: int,
    max_count: int,
) -> int:
    """Return how many leading segments to delete."""
    assert max_count >= 0
    count = 0
    for seg in segments[:-1]:
        if count >= max_count:
            break
        if seg.end_offset > flushed_offset:
            break
        newest = seg.newest_store_timestamp_ms
        if newest is None or newest + reserved_ms >= now_ms:
            break
        count += 1
    return count
