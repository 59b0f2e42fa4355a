"""protocol/call_deadlines.py: one connection's call deadlines, lazily deleted."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from protocol.call_deadlines import CallDeadlines


def test_expire_ends_live_calls_due_and_skips_ended_ones() -> None:
    waiting = {1: 1.0, 2: 2.0, 3: 3.0}
    deadlines = CallDeadlines()
    for opaque, deadline_s in waiting.items():
        deadlines.add(opaque, deadline_s, len(waiting), lambda o, d: waiting.get(o) == d)
    del waiting[2]  # answered: its entry goes stale
    live = lambda o, d: waiting.get(o) == d  # noqa: E731
    assert deadlines.expire(0.5, live) == ([], 1.0)
    assert deadlines.expire(1.0, live) == ([1], 3.0)  # the stale 2.0 is not a wake-up
    del waiting[1]
    assert deadlines.expire(2.5, live) == ([], 3.0)
    assert deadlines.expire(10.0, live) == ([3], math.inf)
    assert len(deadlines) == 0


def test_a_reused_opaque_with_another_deadline_is_not_the_old_call() -> None:
    waiting = {7: 5.0}
    deadlines = CallDeadlines()
    deadlines.add(7, 1.0, 1, lambda o, d: True)  # an earlier call with opaque 7, ended
    deadlines.add(7, 5.0, 1, lambda o, d: True)
    assert deadlines.expire(2.0, lambda o, d: waiting.get(o) == d) == ([], 5.0)


@given(st.lists(st.booleans(), min_size=1, max_size=2000))
def test_the_heap_stays_bounded_by_the_calls_waiting(answered: list[bool]) -> None:
    """However many calls come and go, the heap holds at most 4 x waiting + 65."""
    waiting: dict[int, float] = {}
    deadlines = CallDeadlines()
    for opaque, is_answered in enumerate(answered):
        waiting[opaque] = 100.0 + opaque
        deadlines.add(opaque, waiting[opaque], len(waiting), lambda o, d: waiting.get(o) == d)
        if is_answered:
            del waiting[opaque]
        assert len(deadlines) <= 4 * (len(waiting) + 1) + 65
    expired, _next = deadlines.expire(math.inf, lambda o, d: waiting.get(o) == d)
    assert sorted(expired) == sorted(waiting)
