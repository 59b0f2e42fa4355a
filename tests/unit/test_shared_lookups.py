"""proxy/lookups.py: a miss loads once however many calls wait for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from proxy.lookups import SharedLookups


async def all_waiting_then(
    get: Callable[[], Awaitable[None]], calls: int, release: trio.Event
) -> None:
    """Start ``calls`` of ``get``, let every one reach its wait, then set ``release``."""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            release.set()


async def test_a_burst_of_misses_loads_once_and_every_caller_gets_its_value() -> None:
    lookups: SharedLookups[str, int] = SharedLookups(ttl_s=10.0, max_entries=8)
    release = trio.Event()
    got: list[int] = []

    async def load() -> int:
        await release.wait()
        return 7

    async def get() -> None:
        got.append(await lookups.get("G", load))

    await all_waiting_then(get, 100, release)
    assert got == [7] * 100 and lookups.loads == 1


async def test_a_failed_load_raises_for_its_caller_and_the_next_waiter_loads_again() -> None:
    lookups: SharedLookups[str, int] = SharedLookups(ttl_s=10.0, max_entries=8)
    release = trio.Event()
    attempts: list[int] = []
    outcomes: list[object] = []

    async def load() -> int:
        attempts.append(1)
        await release.wait()
        if len(attempts) == 1:
            raise LookupError("the cluster did not answer")
        return 3

    async def get() -> None:
        try:
            outcomes.append(await lookups.get("T", load))
        except LookupError as exc:
            outcomes.append(exc)

    await all_waiting_then(get, 3, release)
    assert len(attempts) == 2  # the failed load, then one more for both waiters
    assert [type(o) for o in outcomes] == [LookupError, int, int] and outcomes[1:] == [3, 3]


async def test_values_are_read_again_after_the_ttl_and_the_cache_stays_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lookups: SharedLookups[str, str] = SharedLookups(ttl_s=10.0, max_entries=2)
    version = 0

    async def load() -> str:
        return f"v{version}"

    assert await lookups.get("a", load) == "v0"
    version = 1
    await trio.sleep(9.9)
    assert await lookups.get("a", load) == "v0"
    await trio.sleep(0.2)
    assert await lookups.get("a", load) == "v1"
    await lookups.get("b", load)
    assert lookups.loads == 3
    await lookups.get("c", load)  # a third key: the two kept are dropped
    await lookups.get("a", load)
    assert lookups.loads == 5


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        SharedLookups(ttl_s=0.0, max_entries=1)
    with pytest.raises(ValueError):
        SharedLookups(ttl_s=1.0, max_entries=0)
