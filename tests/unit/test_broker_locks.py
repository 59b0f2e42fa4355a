"""Orderly-consumer queue locks: step the manager, assert every lock entry after each event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from broker.locks import LOCK_MAX_LIVE_MS, RebalanceLockManager
from protocol.route import MessageQueue

T0 = 1_700_000_000_000
Q0, Q1, Q2 = (MessageQueue(topic="T", broker_name="broker-a", queue_id=i) for i in range(3))
A, B = "10.0.0.1@1", "10.0.0.2@2"


def state(m: RebalanceLockManager) -> dict[str, dict[int, tuple[str, int]]]:
    return {
        g: {mq.queue_id: (e.client_id, e.last_update_ms) for mq, e in m.entries(g).items()}
        for g in m.groups()
    }


SAME = object()


@attrs.frozen
class Step:
    label: str
    event: Callable[[RebalanceLockManager], Any]
    result: Any
    state: Any = SAME


def run(steps: list[Step]) -> None:
    m = RebalanceLockManager()
    before = state(m)
    assert before == {}
    for step in steps:
        assert step.event(m) == step.result, step.label
        after = state(m)
        assert after == (before if step.state is SAME else step.state), step.label
        before = after


def lock(client: str, now: int, *mqs: MessageQueue, group: str = "g") -> Callable[[Any], Any]:
    return lambda m: m.lock_batch(group, mqs, client, now)


LIVE = LOCK_MAX_LIVE_MS

LIFECYCLE = [
    Step("nothing locked", lambda m: m.is_locked("g", Q0, A, T0), False),
    Step(
        "A locks Q0, Q1", lock(A, T0, Q0, Q1), frozenset({Q0, Q1}), {"g": {0: (A, T0), 1: (A, T0)}}
    ),
    Step("A holds Q0", lambda m: m.is_locked("g", Q0, A, T0 + 1), True),
    Step("B does not", lambda m: m.is_locked("g", Q0, B, T0 + 1), False),
    Step("owner of Q1", lambda m: m.owner("g", Q1, T0 + 1), A),
    Step(
        "B asks for Q1, Q2: only Q2 is free",
        lock(B, T0 + 10, Q1, Q2),
        frozenset({Q2}),
        {"g": {0: (A, T0), 1: (A, T0), 2: (B, T0 + 10)}},
    ),
    Step(
        "A renews Q0 at 20 s",
        lock(A, T0 + 20_000, Q0),
        frozenset({Q0}),
        {"g": {0: (A, T0 + 20_000), 1: (A, T0), 2: (B, T0 + 10)}},
    ),
    Step("Q1 still A's at exactly 60 s", lambda m: m.is_locked("g", Q1, A, T0 + LIVE), True),
    Step("B cannot take Q1 at exactly 60 s", lock(B, T0 + LIVE, Q1), frozenset()),
    Step("Q1 expired 1 ms later", lambda m: m.is_locked("g", Q1, A, T0 + LIVE + 1), False),
    Step("no owner then", lambda m: m.owner("g", Q1, T0 + LIVE + 1), None),
    Step("not all expired", lambda m: m.is_lock_all_expired("g", T0 + LIVE + 1), False),
    Step(
        "B takes the expired Q1",
        lock(B, T0 + LIVE + 1, Q1),
        frozenset({Q1}),
        {"g": {0: (A, T0 + 20_000), 1: (B, T0 + LIVE + 1), 2: (B, T0 + 10)}},
    ),
    Step(
        "same queues in another group are independent",
        lock(A, T0 + LIVE + 2, Q1, group="h"),
        frozenset({Q1}),
        {
            "g": {0: (A, T0 + 20_000), 1: (B, T0 + LIVE + 1), 2: (B, T0 + 10)},
            "h": {1: (A, T0 + LIVE + 2)},
        },
    ),
    Step(
        "A unlocks Q0 and Q1: only its own Q0 is released",
        lambda m: m.unlock_batch("g", [Q0, Q1], A),
        frozenset({Q0}),
        {"g": {1: (B, T0 + LIVE + 1), 2: (B, T0 + 10)}, "h": {1: (A, T0 + LIVE + 2)}},
    ),
    Step("unlock in an unknown group", lambda m: m.unlock_batch("x", [Q0], A), frozenset()),
    Step("unlock of an unlocked queue", lambda m: m.unlock_batch("g", [Q0], B), frozenset()),
    Step(
        "B's expired Q2 is still B's to release",
        lambda m: m.unlock_batch("g", [Q2], B),
        frozenset({Q2}),
        {"g": {1: (B, T0 + LIVE + 1)}, "h": {1: (A, T0 + LIVE + 2)}},
    ),
    Step("all of h expired later", lambda m: m.is_lock_all_expired("h", T0 + 2 * LIVE + 3), True),
    Step("unknown group counts as expired", lambda m: m.is_lock_all_expired("x", T0), True),
    Step(
        "housekeeping forgets expired entries",
        lambda m: m.remove_expired(T0 + 2 * LIVE + 2),
        1,
        {"h": {1: (A, T0 + LIVE + 2)}},
    ),
    Step(
        "the last lock of h released: the group goes",
        lambda m: m.unlock_batch("h", [Q1], A),
        frozenset({Q1}),
        {},
    ),
    Step("empty batch", lock(A, T0, group="z"), frozenset(), {}),
]


def test_lifecycle() -> None:
    run(LIFECYCLE)


def test_try_lock_and_custom_lifetime() -> None:
    m = RebalanceLockManager(lock_max_live_ms=1_000)
    assert m.try_lock("g", Q0, A, T0) is True
    assert m.try_lock("g", Q0, B, T0 + 1_000) is False
    assert m.try_lock("g", Q0, A, T0 + 1_000) is True  # renewal
    assert m.try_lock("g", Q0, B, T0 + 2_001) is True
    assert state(m) == {"g": {0: (B, T0 + 2_001)}}


def test_programmer_errors() -> None:
    with pytest.raises(AssertionError):
        RebalanceLockManager(lock_max_live_ms=0)
    m = RebalanceLockManager()
    with pytest.raises(AssertionError):
        m.lock_batch("g", [Q0], "", T0)
    assert state(m) == {}
