"""Pure decisions of the read path: the pull status table and which entries a pull takes.

Rules (reference/rocketmq-wire.md §2.4, ``DefaultMessageStore.getMessage``):
- The offset is judged against the queue's [min, max) first: NO_MATCHED_LOGIC_QUEUE (no
  queue), NO_MESSAGE_IN_QUEUE (max == 0), OFFSET_TOO_SMALL, OFFSET_OVERFLOW_ONE (offset ==
  max), OFFSET_OVERFLOW_BADLY (offset > max); each with its ``nextBeginOffset``.
- Otherwise entries are scanned from the offset: one taken at least, then up to
  ``max_count`` and ``max_bytes``; entries filtered out by tag code are skipped (and counted
  in ``nextBeginOffset``), entries below the CommitLog minimum are MESSAGE_WAS_REMOVING.
  The status is FOUND once anything was taken; otherwise the reason of the last skip.
- No I/O here: the store reads the entries and the records.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from broker.store.consumequeue import CqEntry


class GetMessageStatus(enum.Enum):
    """RocketMQ ``GetMessageStatus`` (the PULL response remark is the name)."""

    FOUND = "FOUND"
    NO_MATCHED_MESSAGE = "NO_MATCHED_MESSAGE"
    MESSAGE_WAS_REMOVING = "MESSAGE_WAS_REMOVING"
    OFFSET_FOUND_NULL = "OFFSET_FOUND_NULL"
    OFFSET_OVERFLOW_BADLY = "OFFSET_OVERFLOW_BADLY"
    OFFSET_OVERFLOW_ONE = "OFFSET_OVERFLOW_ONE"
    OFFSET_TOO_SMALL = "OFFSET_TOO_SMALL"
    NO_MATCHED_LOGIC_QUEUE = "NO_MATCHED_LOGIC_QUEUE"
    NO_MESSAGE_IN_QUEUE = "NO_MESSAGE_IN_QUEUE"


@attrs.frozen(kw_only=True)
class OffsetCheck:
    """Outcome of judging a pull offset: ``status`` None means "scan the queue"."""

    status: GetMessageStatus | None
    next_begin_offset: int


def check_offset(
    offset: int, min_offset: int, max_offset: int, *, queue_exists: bool
) -> OffsetCheck:
    """The status table of wire §2.4 for everything decided before reading entries."""
    if not queue_exists:
        return OffsetCheck(status=GetMessageStatus.NO_MATCHED_LOGIC_QUEUE, next_begin_offset=0)
    if max_offset == 0:
        return OffsetCheck(status=GetMessageStatus.NO_MESSAGE_IN_QUEUE, next_begin_offset=0)
    if offset < min_offset:
        return OffsetCheck(status=GetMessageStatus.OFFSET_TOO_SMALL, next_begin_offset=min_offset)
    if offset == max_offset:
        return OffsetCheck(status=GetMessageStatus.OFFSET_OVERFLOW_ONE, next_begin_offset=offset)
    if offset > max_offset:
        return OffsetCheck(
            status=GetMessageStatus.OFFSET_OVERFLOW_BADLY, next_begin_offset=max_offset
        )
    return OffsetCheck(status=None, next_begin_offset=offset)


@attrs.frozen(kw_only=True)
class Selection:
    """The entries a pull takes out of the scanned ones."""

    status: GetMessageStatus
    picked: tuple[CqEntry, ...]
    next_begin_offset: int


def select_entries(
    entries: Sequence[CqEntry],
    *,
    offset: int,
    max_count: int,
    max_bytes: int,
    tag_codes: frozenset[int] | None,
    min_physical_offset: int,
) -> Selection:
    """Choose the entries to return from ``entries`` (consecutive, starting at ``offset``).

    ``tag_codes`` None accepts every entry (subscription ``*``).
    """
    assert max_count > 0 and max_bytes > 0
    status = GetMessageStatus.NO_MATCHED_MESSAGE
    picked: list[CqEntry] = []
    total = 0
    next_begin = offset
    for e in entries:
        if picked and (len(picked) >= max_count or total + e.size > max_bytes):
            break
        assert e.queue_offset >= next_begin, (e.queue_offset, next_begin)
        next_begin = e.queue_offset + 1
        if e.physical_offset < min_physical_offset:
            if not picked:
                status = GetMessageStatus.MESSAGE_WAS_REMOVING
            continue
        if tag_codes is not None and e.tags_code not in tag_codes:
            if not picked:
                status = GetMessageStatus.NO_MATCHED_MESSAGE
            continue
        picked.append(e)
        total += e.size
        status = GetMessageStatus.FOUND
    return Selection(status=status, picked=tuple(picked), next_begin_offset=next_begin)
