"""Work in bounded steps: a pure generator yields between slices and returns its result.

Rules:
- A decoder or table update whose cost grows with what a peer sent is written as a
  ``Steps[T]`` generator: it does a bounded slice of work (``STEP_ITEMS`` items or about
  as much CPU), yields ``None``, and finally returns its result. It stays pure.
- A server drives it with ``protocol.rpc.run_steps``, which lets other tasks run at each
  yield, so one large request never stalls the event loop; everyone else calls ``finish``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")

#: A generator of bounded slices of work returning a ``T``.
Steps = Generator[None, None, T]

#: Items (topics, records) per slice: a few milliseconds of Python work each.
STEP_ITEMS = 500


def finish(steps: Steps[T]) -> T:
    """Run ``steps`` to the end without pausing and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
