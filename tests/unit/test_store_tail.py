"""The pure judgement of where a CommitLog recovery walk stopped."""

from __future__ import annotations

import pytest

from broker.store.recovery import TailVerdict, judge_tail


@pytest.mark.parametrize(
    ("end", "durable", "valid_after", "garbage", "verdict"),
    [
        (1000, 1000, None, 0, TailVerdict.CLEAN),
        (1000, 500, None, 0, TailVerdict.CLEAN),
        (1000, 500, None, 37, TailVerdict.TORN),
        (1000, 1000, None, 37, TailVerdict.TORN),  # at the durable point: still the tail
        (900, 1000, None, 0, TailVerdict.CORRUPT),  # fsynced bytes are missing
        (900, 1000, None, 50, TailVerdict.CORRUPT),
        (1000, 500, 1200, 300, TailVerdict.CORRUPT),  # a hole, then valid data
        (1000, 0, 4096, 0, TailVerdict.CORRUPT),
    ],
)
def test_judge_tail(
    end: int, durable: int, valid_after: int | None, garbage: int, verdict: TailVerdict
) -> None:
    got, why = judge_tail(
        end_offset=end, durable_offset=durable, valid_after=valid_after, garbage_bytes=garbage
    )
    assert got is verdict
    assert why
