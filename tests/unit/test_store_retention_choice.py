"""Pure retention choice."""

from __future__ import annotations

from broker.store.retention import SegmentInfo, choose_expired_segments

HOUR_MS = 3600 * 1000


def _segs(*newest: int | None) -> list[SegmentInfo]:
    return [
        SegmentInfo(start_offset=i * 100, end_offset=(i + 1) * 100, newest_store_timestamp_ms=t)
        for i, t in enumerate(newest)
    ]


def test_deletes_expired_prefix_only() -> None:
    segs = _segs(0, 1, 50 * HOUR_MS, 2, 100 * HOUR_MS)
    n = choose_expired_segments(
        segs, now_ms=100 * HOUR_MS, reserved_ms=72 * HOUR_MS, flushed_offset=10**9, max_count=10
    )
    assert n == 2  # the third is young, so the fourth (old) waits: the log stays contiguous


def test_never_deletes_the_active_segment() -> None:
    segs = _segs(0, 0, 0)
    n = choose_expired_segments(
        segs, now_ms=10**12, reserved_ms=1, flushed_offset=10**9, max_count=10
    )
    assert n == 2


def test_never_deletes_unflushed_bytes() -> None:
    segs = _segs(0, 0, 0)
    n = choose_expired_segments(
        segs, now_ms=10**12, reserved_ms=1, flushed_offset=150, max_count=10
    )
    assert n == 1


def test_unknown_time_is_kept_and_max_count_bounds() -> None:
    assert (
        choose_expired_segments(
            _segs(None, 0, 0), now_ms=10**12, reserved_ms=1, flushed_offset=10**9, max_count=10
        )
        == 0
    )
    assert (
        choose_expired_segments(
            _segs(0, 0, 0, 0, 0), now_ms=10**12, reserved_ms=1, flushed_offset=10**9, max_count=3
        )
        == 3
    )
    assert (
        choose_expired_segments(
            _segs(0, 0), now_ms=10**12, reserved_ms=1, flushed_offset=10**9, max_count=0
        )
        == 0
    )


def test_exactly_at_the_reserved_age_is_kept() -> None:
    segs = _segs(1000, 5000)
    assert (
        choose_expired_segments(
            segs, now_ms=2000, reserved_ms=1000, flushed_offset=10**9, max_count=5
        )
        == 0
    )
    assert (
        choose_expired_segments(
            segs, now_ms=2001, reserved_ms=1000, flushed_offset=10**9, max_count=5
        )
        == 1
    )
