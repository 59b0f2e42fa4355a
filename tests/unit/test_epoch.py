"""The epoch cache: append rules, truncation, the consistent point, the file format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.ha.epoch import EpochCache, EpochEntry
from protocol.errors import MalformedBody


def cache(*pairs: tuple[int, int]) -> EpochCache:
    return EpochCache.of(pairs)


# The four cases of reference/rocketmq-controller.md §4.5 (EpochFileCacheTest.java).
@pytest.mark.parametrize(
    ("local", "local_max", "master", "master_max", "expected"),
    [
        (((1, 100), (2, 300), (3, 500)), 700, ((1, 100), (2, 300), (3, 500)), 600, 600),
        (((1, 100), (2, 300), (3, 500)), 700, ((1, 100), (2, 300), (3, 450)), 600, 450),
        (((1, 100), (2, 300), (3, 500)), 700, ((1, 200), (2, 500)), 600, -1),
        (((1, 100), (2, 300), (3, 500), (4, 800)), 900, ((1, 100), (2, 300), (3, 500)), 700, 700),
    ],
)
def test_consistent_point_reference_cases(
    local: tuple[tuple[int, int], ...],
    local_max: int,
    master: tuple[tuple[int, int], ...],
    master_max: int,
    expected: int,
) -> None:
    assert cache(*local).find_consistent_point(local_max, cache(*master), master_max) == expected


def test_consistent_point_of_identical_logs_is_the_shorter_end() -> None:
    c = cache((1, 0), (2, 50))
    assert c.find_consistent_point(80, c, 120) == 80
    assert c.find_consistent_point(120, c, 80) == 80


def test_empty_cache_has_no_consistent_point() -> None:
    assert EpochCache().find_consistent_point(0, cache((1, 0)), 10) == -1


def test_append_sets_the_previous_end_and_keeps_order() -> None:
    c = cache((1, 0)).append(2, 100)
    assert c.entries == (
        EpochEntry(epoch=1, start_offset=0, end_offset=100),
        EpochEntry(epoch=2, start_offset=100),
    )
    assert c.last_epoch == 2


@pytest.mark.parametrize(("epoch", "start"), [(1, 200), (0, 200), (3, 50)])
def test_append_refuses_out_of_order_and_leaves_cache_unchanged(epoch: int, start: int) -> None:
    c = cache((1, 0), (2, 100))
    with pytest.raises(ValueError, match="epoch"):
        c.append(epoch, start)
    assert c.pairs() == [(1, 0), (2, 100)]


def test_append_at_the_same_offset_replaces_the_empty_epoch() -> None:
    # RocketMQ drops the newer epoch here (#9942); we keep the newest and drop the empty one.
    c = cache((1, 0), (2, 100)).append(3, 100)
    assert c.pairs() == [(1, 0), (3, 100)]
    assert c.entries[0].end_offset == 100


def test_truncations() -> None:
    c = cache((1, 0), (2, 100), (3, 300))
    assert c.truncate_suffix_by_offset(300).pairs() == [(1, 0), (2, 100)]
    assert c.truncate_suffix_by_offset(300).last == EpochEntry(epoch=2, start_offset=100)
    assert c.truncate_suffix_by_offset(0).pairs() == []
    assert c.truncate_suffix_by_epoch(2).pairs() == [(1, 0)]
    assert c.truncate_prefix_by_offset(100).pairs() == [(2, 100), (3, 300)]
    assert c.truncate_prefix_by_offset(99).pairs() == [(1, 0), (2, 100), (3, 300)]


def test_entry_at() -> None:
    c = cache((1, 0), (2, 100))
    assert c.entry_at(0) == EpochEntry(epoch=1, start_offset=0, end_offset=100)
    assert c.entry_at(99) is not None and c.entry_at(99).epoch == 1  # type: ignore[union-attr]
    assert c.entry_at(100) == EpochEntry(epoch=2, start_offset=100)
    assert c.entry_at(10**12) == EpochEntry(epoch=2, start_offset=100)


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 10**6)), max_size=20))
def test_file_round_trip(raw: list[tuple[int, int]]) -> None:
    pairs: list[tuple[int, int]] = []
    for epoch, start in sorted(set(raw)):
        if not pairs or (epoch > pairs[-1][0] and start > pairs[-1][1]):
            pairs.append((epoch, start))
    c = EpochCache.of(pairs)
    assert EpochCache.from_bytes(c.to_bytes()) == c


@pytest.mark.parametrize("cut", [0, 5, 12, 20])
def test_truncated_or_corrupt_file_is_refused(cut: int) -> None:
    data = cache((1, 0), (2, 100)).to_bytes()
    with pytest.raises(MalformedBody):
        EpochCache.from_bytes(data[:cut])
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    with pytest.raises(MalformedBody, match="CRC"):
        EpochCache.from_bytes(bytes(flipped))
