"""The pull status table (wire §2.4) and entry selection, as pure functions."""

from __future__ import annotations

import pytest

from broker.store.consumequeue import CqEntry
from broker.store.pull import GetMessageStatus as S
from broker.store.pull import check_offset, select_entries


@pytest.mark.parametrize(
    "row",
    [
        (0, 0, 0, False, S.NO_MATCHED_LOGIC_QUEUE, 0),
        (7, 0, 0, False, S.NO_MATCHED_LOGIC_QUEUE, 0),
        (0, 0, 0, True, S.NO_MESSAGE_IN_QUEUE, 0),
        (5, 0, 0, True, S.NO_MESSAGE_IN_QUEUE, 0),
        (2, 5, 10, True, S.OFFSET_TOO_SMALL, 5),
        (10, 5, 10, True, S.OFFSET_OVERFLOW_ONE, 10),
        (11, 5, 10, True, S.OFFSET_OVERFLOW_BADLY, 10),
        (99, 0, 3, True, S.OFFSET_OVERFLOW_BADLY, 3),
        (5, 5, 10, True, None, 5),
        (9, 5, 10, True, None, 9),
    ],
)
def test_check_offset_table(row: tuple[int, int, int, bool, S | None, int]) -> None:
    offset, min_o, max_o, exists, status, next_begin = row
    result = check_offset(offset, min_o, max_o, queue_exists=exists)
    assert result.status is status
    assert result.next_begin_offset == next_begin


def _entries(
    first: int, n: int, *, size: int = 100, tags: int = 1, phys0: int = 1000
) -> list[CqEntry]:
    return [
        CqEntry(queue_offset=first + i, physical_offset=phys0 + i * size, size=size, tags_code=tags)
        for i in range(n)
    ]


def test_select_takes_up_to_max_count() -> None:
    sel = select_entries(
        _entries(3, 10),
        offset=3,
        max_count=4,
        max_bytes=10**6,
        tag_codes=None,
        min_physical_offset=0,
    )
    assert sel.status is S.FOUND
    assert [e.queue_offset for e in sel.picked] == [3, 4, 5, 6]
    assert sel.next_begin_offset == 7


def test_select_stops_at_max_bytes_but_takes_at_least_one() -> None:
    big = _entries(0, 3, size=5000)
    sel = select_entries(
        big, offset=0, max_count=32, max_bytes=100, tag_codes=None, min_physical_offset=0
    )
    assert [e.queue_offset for e in sel.picked] == [0]
    assert sel.next_begin_offset == 1
    sel = select_entries(
        big, offset=0, max_count=32, max_bytes=10000, tag_codes=None, min_physical_offset=0
    )
    assert [e.queue_offset for e in sel.picked] == [0, 1]


def test_select_filters_by_tag_code_and_counts_skipped_offsets() -> None:
    entries = [
        CqEntry(queue_offset=q, physical_offset=q * 10, size=10, tags_code=t)
        for q, t in [(0, 7), (1, 8), (2, 7), (3, 9)]
    ]
    sel = select_entries(
        entries,
        offset=0,
        max_count=32,
        max_bytes=10**6,
        tag_codes=frozenset({7}),
        min_physical_offset=0,
    )
    assert [e.queue_offset for e in sel.picked] == [0, 2]
    assert sel.next_begin_offset == 4
    assert sel.status is S.FOUND


def test_select_nothing_matched() -> None:
    sel = select_entries(
        _entries(0, 5, tags=3),
        offset=0,
        max_count=32,
        max_bytes=10**6,
        tag_codes=frozenset({4}),
        min_physical_offset=0,
    )
    assert sel.status is S.NO_MATCHED_MESSAGE
    assert sel.picked == ()
    assert sel.next_begin_offset == 5


def test_select_records_below_commitlog_min_are_removing() -> None:
    sel = select_entries(
        _entries(0, 3, phys0=0), offset=0, max_count=32, max_bytes=10**6, tag_codes=None,
        min_physical_offset=10**6,
    )  # fmt: skip
    assert sel.status is S.MESSAGE_WAS_REMOVING
    assert sel.next_begin_offset == 3
    # Removed ones are skipped; later ones are found.
    sel = select_entries(
        _entries(0, 4, phys0=0), offset=0, max_count=32, max_bytes=10**6, tag_codes=None,
        min_physical_offset=200,
    )  # fmt: skip
    assert sel.status is S.FOUND
    assert [e.queue_offset for e in sel.picked] == [2, 3]


def test_select_empty_input_is_no_match_at_offset() -> None:
    sel = select_entries(
        [], offset=4, max_count=1, max_bytes=1, tag_codes=None, min_physical_offset=0
    )
    assert (sel.status, sel.picked, sel.next_begin_offset) == (S.NO_MATCHED_MESSAGE, (), 4)
