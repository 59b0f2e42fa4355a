"""Facts the proxy reads from the cluster and keeps a while: a cache whose misses load once.

Rules:
- A value is kept ``ttl_s`` from when its load began, then read again.
- One load per key at a time (``protocol.tasks.OneLoadPerKey``): calls that miss while a
  load runs wait for it and take its value, so a burst of calls for one uncached key (a
  thousand receives of a new group) sends the cluster one request, not one each. A load
  that raises gives the error to its own caller only; the first waiter loads again.
- At most ``max_entries`` keys: the cache is cleared when a new key would pass it.
- Values are never None (None is what a miss reads as).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

from protocol.tasks import OneLoadPerKey

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedLookups(Generic[K, V]):
    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError(f"ttl_s must be > 0 and max_entries >= 1: {ttl_s}, {max_entries}")
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        #: key -> (Trio time its load began, value)
        self._values: dict[K, tuple[float, V]] = {}
        self._loads: OneLoadPerKey[K] = OneLoadPerKey()
        #: Loads started (tests and stats: a burst of misses counts one).
        self.loads = 0

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The kept value of ``key``, or ``load()``'s (shared with concurrent misses)."""

        def kept() -> V | None:
            entry = self._values.get(key)
            if entry is None or trio.current_time() - entry[0] >= self._ttl_s:
                return None
            return entry[1]

        async def load_and_keep() -> V:
            began = trio.current_time()
            self.loads += 1
            value = await load()
            if key not in self._values and len(self._values) >= self._max_entries:
                self._values.clear()
            self._values[key] = (began, value)
            return value

        value = kept()
        return value if value is not None else await self._loads.load(key, kept, load_and_keep)
