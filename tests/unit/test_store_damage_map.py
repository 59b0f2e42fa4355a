"""Pure pieces of damage handling: the entry sanity check and the damaged-range map."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.store.consumequeue import BLANK_SIZE, first_bad_entry
from broker.store.damage import Damage, DamageMap

END = 10_000


@pytest.mark.parametrize(
    ("entries", "first_real", "bad"),
    [
        ([(0, 100, 0), (100, 50, 7), (150, 10, 0)], True, None),
        ([(0, BLANK_SIZE, 0), (0, BLANK_SIZE, 0), (500, 10, 0)], False, None),
        ([(0, BLANK_SIZE, 0), (500, 10, 0)], True, 0),  # a blank after real entries
        ([(500, 10, 0), (0, BLANK_SIZE, 0)], False, 1),
        ([(0, 100, 0), (0, 0, 0), (200, 10, 0)], True, 1),  # zeros inside
        ([(100, 10, 0), (50, 10, 0)], True, 1),  # going backwards
        ([(100, 10, 0), (100, 10, 0)], True, None),  # lost records share a damaged range
        ([(9_990, 20, 0)], True, 0),  # past the log's end
        ([(0, 5_000, 0)], True, 0),  # larger than a record can be
        ([(-1, 10, 0)], True, 0),
        ([], True, None),
    ],
)
def test_first_bad_entry(
    entries: list[tuple[int, int, int]], first_real: bool, bad: int | None
) -> None:
    assert first_bad_entry(entries, first_real=first_real, end_physical=END, max_size=4096) == bad


def damage(offset: int, end: int) -> Damage:
    return Damage(path=Path("seg"), offset=offset, end_offset=end, reason="x", segment_start=0)


def test_damage_map_queries() -> None:
    m = DamageMap.of([damage(500, 600), damage(100, 200)])
    assert [d.offset for d in m.ranges] == [100, 500]
    assert m.overlapping(50, 50) is None and m.overlapping(50, 51) == damage(100, 200)
    assert m.overlapping(199, 1) == damage(100, 200) and m.overlapping(200, 300) is None
    assert m.overlapping(450, 100) == damage(500, 600)
    assert m.next_at_or_after(150) == damage(100, 200)
    assert m.next_at_or_after(200) == damage(500, 600) and m.next_at_or_after(600) is None
    assert m.last_before(100) is None and m.last_before(101) == damage(100, 200)
    assert m.last_before(10_000) == damage(500, 600)
    assert m.above(200).ranges == (damage(500, 600),) and not m.above(600)
    assert not DamageMap() and m
    text = damage(100, 200).describe()
    assert text == "seg: damaged at offset 100 (file position 100), 100 bytes up to offset 200: x"


def test_overlapping_ranges_are_a_bug() -> None:
    with pytest.raises(AssertionError):
        DamageMap.of([damage(0, 100), damage(50, 150)])
