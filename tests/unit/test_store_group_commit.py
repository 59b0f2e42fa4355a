"""GroupCommit waiter table."""

from __future__ import annotations

import trio

from broker.store.flush import GroupCommit


async def test_release_wakes_covered_waiters_only() -> None:
    g = GroupCommit(max_waiters=10)
    a, b, c = g.add(100), g.add(200), g.add(300)
    assert a and b and c
    assert g.pending == 3
    assert g.release(200) == 2
    assert a.event.is_set() and a.ok and b.ok
    assert not c.event.is_set()
    assert g.pending == 1


async def test_table_is_bounded_and_abandoned_waiters_free_space() -> None:
    g = GroupCommit(max_waiters=2)
    a, b = g.add(1), g.add(2)
    assert a and b
    assert g.add(3) is None
    a.abandoned = True
    c = g.add(3)
    assert c is not None
    assert g.pending == 2
    assert g.release(10) == 2  # b and c; a was dropped
    assert not a.event.is_set()


async def test_fail_above_and_fail_all() -> None:
    g = GroupCommit(max_waiters=10)
    a, b = g.add(100), g.add(200)
    assert a and b
    assert g.fail_above(150) == 1
    assert b.event.is_set() and not b.ok
    assert not a.event.is_set()
    g.fail_all()
    assert a.event.is_set() and not a.ok
    assert g.pending == 0


async def test_wait_for_work_returns_when_a_waiter_arrives() -> None:
    g = GroupCommit(max_waiters=10)
    woke = trio.Event()

    async def flusher() -> None:
        await g.wait_for_work()
        woke.set()

    async with trio.open_nursery() as n:
        n.start_soon(flusher)
        await trio.sleep(0.01)
        assert not woke.is_set()
        g.add(5)
        with trio.fail_after(1):
            await woke.wait()
