"""A history file read as often as the checkers need it, one line at a time.

Rules:
- A chaos run at 2,000 msg/s writes about 6,000 lines a second: ten minutes are 3.6 M
  entries, several GB as Python objects. ``HistoryFile`` holds none of them: every
  iteration opens the file again and parses it line by line, so each checker keeps only
  its own state (memory bounded by what the checkers keep, not by the history).
- A malformed line raises ``HistoryError`` (from ``history.parse_line``) when it is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from scenarios.history import Entry, iter_history


class HistoryFile:
    """The entries of the history at ``path``, re-read on every iteration."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[Entry]:
        with self.path.open(encoding="utf-8") as f:
            yield from iter_history(f)
