"""``RateMeter``: bytes per second over the last whole seconds of its window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.ha.stream import RateMeter

STEPS = st.lists(st.tuples(st.floats(0, 3), st.integers(0, 10_000)), max_size=60)


@given(steps=STEPS, window=st.sampled_from([1.0, 2.0, 5.0]), later=st.floats(0, 8))
def test_rate_is_the_bytes_of_the_window_seconds(
    steps: list[tuple[float, int]], window: float, later: float
) -> None:
    meter = RateMeter(window_s=window)
    now, seen = 100.0, []
    for gap, nbytes in steps:  # time only moves forward
        now += gap
        meter.record(now, nbytes)
        seen.append((int(now), nbytes))
    now += later
    oldest = int(now) - int(window) + 1
    assert meter.rate(now) == sum(n for s, n in seen if s >= oldest) / window
    assert meter.total_bytes == sum(n for _, n in seen)
