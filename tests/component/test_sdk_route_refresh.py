"""RouteCache.refresh under concurrency: one fetch at a time per topic, whatever wakes whom.

Found by the chaos harness (master_kill_multi_master): when a master died, every pull loop
invalidated the route and refreshed it at once; waiters that woke to an empty cache each
started a fetch, deleted one another's in-flight marker, and the consumer died of a
KeyError.
"""

from __future__ import annotations

from typing import Any

import trio

from client.routes import RouteCache
from protocol.errors import NetworkError
from protocol.route import TopicRouteData


class _Fetches:
    """Stands in for the NameServer round trip: each fetch waits to be released."""

    def __init__(self) -> None:
        self.started = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = trio.Event()
        self.fail_next = False

    async def fetch(self, _topic: str) -> TopicRouteData:
        self.started += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.fail_next:
                self.fail_next = False
                raise NetworkError("NameServer unreachable")
            return TopicRouteData()
        finally:
            self.in_flight -= 1


def _cache(fetches: _Fetches) -> RouteCache:
    cache = RouteCache(client=Any, namesrv=["127.0.0.1:9876"])  # type: ignore[arg-type]
    cache._fetch = fetches.fetch  # type: ignore[method-assign]
    return cache


class _Forgetful(dict[str, Any]):
    """A route table that loses every route at once, as if invalidated right away."""

    def __setitem__(self, key: str, value: Any) -> None:
        pass


async def test_waiters_that_find_no_route_fetch_one_at_a_time() -> None:
    fetches = _Fetches()
    cache = _cache(fetches)
    cache._topics = _Forgetful()
    done = 0

    async def refresh() -> None:
        nonlocal done
        await cache.refresh("T")
        done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(refresh)
        await trio.testing.wait_all_tasks_blocked()
        assert fetches.started == 1
        fetches.release.set()
    assert done == 5
    # Every waiter found no route and fetched in turn: never two fetches at once.
    assert fetches.started == 5
    assert fetches.max_in_flight == 1
    assert cache._fetching.running == {}


async def test_waiters_of_a_failed_fetch_retry_one_at_a_time() -> None:
    fetches = _Fetches()
    fetches.fail_next = True
    cache = _cache(fetches)
    outcomes: list[str] = []

    async def refresh() -> None:
        try:
            await cache.refresh("T")
            outcomes.append("ok")
        except NetworkError:
            outcomes.append("failed")

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(refresh)
        await trio.testing.wait_all_tasks_blocked()
        fetches.release.set()
    assert sorted(outcomes) == ["failed", "ok", "ok", "ok"]
    assert fetches.started == 2
    assert fetches.max_in_flight == 1
    assert cache._fetching.running == {}
