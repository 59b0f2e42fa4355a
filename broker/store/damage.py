"""Damaged CommitLog ranges the operator chose to skip (``skip_damaged_segments``).

Rules (issue 13 row 8: 4 KiB zeroed in an old segment were served as undecodable records):
- A ``Damage`` is a byte range of one segment where no valid record lies: from the first
  bad unit to the next valid record in that segment, or to the segment's end. Recovery
  finds them; without ``skip_damaged_segments`` the first one refuses start.
- Skipped ranges are never read as records: dispatch jumps over them, and an entry or a
  read that overlaps one is not served. They are found again at every start (nothing is
  persisted); retention forgets those below the oldest segment.
- Pure: values and interval queries only.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from pathlib import Path

import attrs


@attrs.frozen(kw_only=True)
class Damage:
    """A range [offset, end_offset) of ``path`` with no valid record in it."""

    path: Path
    #: Global CommitLog offsets.
    offset: int
    end_offset: int
    reason: str
    #: Start of ``path`` in the global offset space.
    segment_start: int

    def problem(self) -> str:
        """``damaged at offset N (file position P), L bytes up to offset E: <reason>``."""
        return (
            f"damaged at offset {self.offset} (file position {self.offset - self.segment_start}"
            f"), {self.end_offset - self.offset} bytes up to offset {self.end_offset}: "
            f"{self.reason}"
        )

    def describe(self) -> str:
        """``<file>: <problem>``."""
        return f"{self.path}: {self.problem()}"


@attrs.frozen
class DamageMap:
    """Sorted, disjoint damaged ranges with overlap queries."""

    ranges: tuple[Damage, ...] = ()

    @classmethod
    def of(cls, damages: Iterable[Damage]) -> DamageMap:
        ordered = tuple(sorted(damages, key=lambda d: d.offset))
        for before, after in itertools.pairwise(ordered):
            assert before.end_offset <= after.offset, (before, after)
        return cls(ordered)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def _index_after(self, offset: int) -> int:
        """Index of the first range ending after ``offset``."""
        return bisect.bisect_right([d.end_offset for d in self.ranges], offset)

    def overlapping(self, offset: int, size: int) -> Damage | None:
        """A range overlapping [offset, offset + size), if any."""
        i = self._index_after(offset)
        if i < len(self.ranges) and self.ranges[i].offset < offset + max(size, 1):
            return self.ranges[i]
        return None

    def next_at_or_after(self, offset: int) -> Damage | None:
        """The first range that ends after ``offset`` (it may contain ``offset``)."""
        i = self._index_after(offset)
        return self.ranges[i] if i < len(self.ranges) else None

    def last_before(self, offset: int) -> Damage | None:
        """The last range starting below ``offset``."""
        i = bisect.bisect_left([d.offset for d in self.ranges], offset)
        return self.ranges[i - 1] if i > 0 else None

    def above(self, min_offset: int) -> DamageMap:
        """Ranges not wholly below ``min_offset`` (retention deleted the rest)."""
        return DamageMap(tuple(d for d in self.ranges if d.end_offset > min_offset))
