"""Task helpers shared by servers and clients (kept apart from protocol/rpc.py's transport).

Rules:
- ``background_nursery``: background tasks of a block end with it, and the block's own
  exception leaves unwrapped.
- ``run_steps``: a long pure computation (a ``Steps`` generator) yields to other tasks
  between its slices and is closed if cancelled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
