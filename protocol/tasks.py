"""Task helpers shared by servers and clients (kept apart from protocol/rpc.py's transport).

Rules:
- ``background_nursery``: background tasks of a block end with it, and the block's own
  exception leaves unwrapped.
- ``run_steps``: a long pure computation (a ``Steps`` generator) yields to other tasks
  between its slices and is closed if cancelled.
- ``OneLoadPerKey``: a cache's loads run one per key at a time; a miss during a load
  waits for it and takes what it kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import trio
import trio.lowlevel

from protocol.steps import Steps, T


@asynccontextmanager
async def background_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for background tasks of a context manager's body.

    The tasks are cancelled when the body ends, and an exception from the body leaves as
    itself, not wrapped in an exception group by the nursery.
    """
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            yield nursery
        except BaseException as exc:  # re-raised below, outside the nursery
            body_error = exc
        finally:
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error


async def run_steps(steps: Steps[T]) -> T:
    """Drive a ``Steps`` generator to its result, letting other tasks run between slices.

    One large request's work (a registration of 100,000 topics) thus never stalls the
    event loop for more than one slice. If we are cancelled, the generator is closed, so
    its ``finally`` blocks release what it held.
    """
    try:
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await trio.lowlevel.checkpoint()
    finally:
        steps.close()


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class OneLoadPerKey(Generic[K]):
    """At most one load per key at a time, for a cache whose miss costs a request: a
    burst of misses for one key sends one. A load that raises gives the error to its own
    caller; its waiters wake and the first of them loads again."""

    def __init__(self) -> None:
        #: key -> set when that key's load ends (empty when no load runs).
        self.running: dict[K, trio.Event] = {}

    async def load(
        self, key: K, kept: Callable[[], V | None], load: Callable[[], Awaitable[V]]
    ) -> V:
        """``load()``'s value, or, when a load of ``key`` was running, what ``kept()``
        finds after it (None: it kept nothing, and this call loads)."""
        # Loop, not ``if``: when a load fails (or what it kept is gone meanwhile) every
        # waiter wakes at once; the first starts the next load and the rest wait for that
        # one, instead of each starting its own and deleting the others' events.
        while (pending := self.running.get(key)) is not None:
            await pending.wait()
            value = kept()
            if value is not None:
                return value
        done = self.running[key] = trio.Event()
        try:
            return await load()
        finally:
            del self.running[key]
            done.set()
