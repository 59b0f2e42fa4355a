"""``ReplicaWaiters``: sync writes' callbacks called a slice per Trio step, so a mass
release or expiry cannot hold the broker's loop (its controller heartbeats run between)."""

from __future__ import annotations

import math

import trio
import trio.testing

from broker.ha.waiters import ReplicaOutcome, ReplicaWaiters

OK, TIMEOUT = ReplicaOutcome.OK, ReplicaOutcome.TIMEOUT
FAR_S = 1e9


def filed(
    waiters: ReplicaWaiters, ends: range, deadline_s: float = FAR_S
) -> list[tuple[int, ReplicaOutcome]]:
    """File a waiter per end offset; the list their calls append (end, outcome) to."""
    called: list[tuple[int, ReplicaOutcome]] = []
    for end in ends:
        assert waiters.add(end, deadline_s, lambda o, end=end: called.append((end, o))) is not None
    return called


class Ticker:
    """A task that checks in at every scheduling turn: how far the calls were each time."""

    def __init__(self, called: list[tuple[int, ReplicaOutcome]]) -> None:
        self.called = called
        self.seen: list[int] = []

    async def run(self) -> None:
        while True:
            self.seen.append(len(self.called))
            await trio.lowlevel.checkpoint()


def test_without_a_timer_task_a_release_calls_everything_at_once() -> None:
    waiters = ReplicaWaiters(10_000, per_step=10)
    called = filed(waiters, range(1, 101))
    waiters.release(60)
    assert called == [(end, OK) for end in range(1, 61)]
    assert waiters.live == 40


async def test_a_release_calls_one_slice_now_and_the_timer_the_rest_between_other_tasks() -> None:
    waiters = ReplicaWaiters(10_000, per_step=100)
    called = filed(waiters, range(1, 1001))
    ticker = Ticker(called)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiters.run_timer)
        await trio.testing.wait_all_tasks_blocked()
        waiters.release(700)
        assert len(called) == 100, "the first slice is called in the releasing step"
        nursery.start_soon(ticker.run)
        with trio.fail_after(5):
            while len(called) < 700:
                await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    assert called == [(end, OK) for end in range(1, 701)], "once each, lowest first"
    assert waiters.live == 300
    between = {n for n in ticker.seen if 100 < n < 700}
    assert len(between) >= 2, f"the ticker ran between slices only at {sorted(set(ticker.seen))}"
    assert all(n % 100 == 0 for n in ticker.seen), "a slice is never cut by another task"


async def test_an_expiry_calls_a_slice_per_step() -> None:
    waiters = ReplicaWaiters(10_000, per_step=50)
    called = filed(waiters, range(1, 301), deadline_s=-FAR_S)  # every deadline has passed
    ticker = Ticker(called)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        nursery.start_soon(waiters.run_timer)
        with trio.fail_after(5):
            while len(called) < 300:
                await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    assert sorted(called) == [(end, TIMEOUT) for end in range(1, 301)]
    assert {n for n in ticker.seen if 0 < n < 300}, "the expiry held the loop throughout"
    assert all(n % 50 == 0 for n in ticker.seen)
    assert waiters.live == 0


async def test_released_waiters_the_timer_did_not_reach_get_ok_at_the_end_and_others_timeout() -> (
    None
):
    waiters = ReplicaWaiters(10_000, per_step=100)
    called = filed(waiters, range(1, 601))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiters.run_timer)
        await trio.testing.wait_all_tasks_blocked()
        waiters.release(450)
        nursery.cancel_scope.cancel()  # the mastership ends before the timer's next slice
    assert len(called) == 100
    await waiters.fail_all()
    assert called == [(end, OK) for end in range(1, 451)] + [
        (end, TIMEOUT) for end in range(451, 601)
    ]
    assert waiters.live == 0
    # The next mastership starts over: its log may be cut below 450.
    later = filed(waiters, range(10, 11), deadline_s=-FAR_S)
    assert waiters.expire(0.0) == math.inf
    assert later == [(10, TIMEOUT)]


async def test_the_end_of_a_mastership_answers_a_slice_per_step_even_when_cancelled() -> None:
    """``fail_all`` runs in the cancelled mastership's ``finally``: shielded, it answers
    every waiter, lowest first, with the loop's other tasks run between slices."""
    waiters = ReplicaWaiters(10_000, per_step=50)
    called = filed(waiters, range(1, 301))
    ticker = Ticker(called)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiters.run_timer)
        await trio.testing.wait_all_tasks_blocked()
        waiters.release(120)  # the first 50 now; 51-120 left to the timer
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        with trio.CancelScope() as mastership:
            mastership.cancel()
            await waiters.fail_all()
        nursery.cancel_scope.cancel()
    assert called == [(end, OK) for end in range(1, 121)] + [
        (end, TIMEOUT) for end in range(121, 301)
    ]
    assert waiters.live == 0
    assert {n for n in ticker.seen if 50 < n < 300}, "the end held the loop throughout"
    assert all(n % 50 == 0 for n in ticker.seen), "a slice is never cut by another task"


async def test_a_released_waiter_past_its_deadline_still_gets_ok(
    mock_clock: trio.testing.MockClock,
) -> None:
    """The timer calls released waiters before it expires any: a waiter the ack covered
    is never answered TIMEOUT because its slice came after its deadline."""
    waiters = ReplicaWaiters(10_000, per_step=10)
    called = filed(waiters, range(1, 101), deadline_s=trio.current_time() + 1.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiters.run_timer)
        await trio.testing.wait_all_tasks_blocked()
        waiters.release(80)
        assert called == [(end, OK) for end in range(1, 11)]
        mock_clock.jump(2.0)  # every deadline passes before the timer's next slice
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert called == [(end, OK) for end in range(1, 81)] + [
        (end, TIMEOUT) for end in range(81, 101)
    ]


async def test_abandoned_waiters_are_skipped_and_do_not_count_in_a_slice() -> None:
    waiters = ReplicaWaiters(10_000, per_step=10)
    called: list[int] = []
    kept = []
    for end in range(1, 41):
        waiter = waiters.add(end, FAR_S, lambda _o, end=end: called.append(end))
        assert waiter is not None
        kept.append(waiter)
    for waiter in kept[::2]:
        waiters.abandon(waiter)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiters.run_timer)
        await trio.testing.wait_all_tasks_blocked()
        waiters.release(40)
        assert called == list(range(2, 21, 2)), "ten live ones in the first slice"
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert called == list(range(2, 41, 2))
    assert waiters.live == 0
