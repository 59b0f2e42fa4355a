"""A handler's answer given later, and answers given together (protocol/connection.py).

A handler whose answer only an event elsewhere decides (a sync send waiting for its
replicas) returns a ``LaterAnswer`` instead of waiting: no task; ``give`` writes the answer
from wherever it is called. ``answers_together`` makes the answers given within one
synchronous block leave in one write per connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocol.command import RemotingCommand

if TYPE_CHECKING:
    import trio

    from protocol.connection import Connection


class LaterAnswer:
    """A handler's answer given later by a callback, where the handler would otherwise
    wait: ``give`` encodes and writes it from wherever it is called (no task resumes).

    The request holds its slot (``max_requests_in_flight``) and its budgeted bytes until
    then. Given before the connection took it: answered as a plain return. Given after the
    connection ended, or a second time: dropped. ``watch`` adds a callback told of the
    answer when it is given (request statistics).
    """

    __slots__ = ("_conn", "_request", "_response", "_size_bytes", "_watchers", "given")

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._request: RemotingCommand | None = None
        self._size_bytes = 0
        self._response: RemotingCommand | None = None
        self._watchers: list[Callable[[RemotingCommand], None]] | None = None
        self.given = False

    def watch(self, watcher: Callable[[RemotingCommand], None]) -> None:
        if self._watchers is None:
            self._watchers = []
        self._watchers.append(watcher)

    def give(self, response: RemotingCommand) -> None:
        if self.given:
            return
        self.given = True
        conn = self._conn
        if conn is None:  # not taken yet: the connection answers it as a plain return
            self._response = response
        else:
            self._conn = None
            conn._answer_later(self, response)
        if self._watchers is not None:  # after the answer is on its way
            for watcher in self._watchers:
                watcher(response)

    def drop(self) -> None:
        """The connection ended: a later ``give`` does nothing."""
        self.given = True
        self._conn = None


class Unwatched:
    """An open round nobody waits for yet (``Connection._round_written``): its
    ``trio.Event`` (made, then set: ~2-3 µs) is made only when a sender has to wait."""

    __slots__ = ()


UNWATCHED = Unwatched()


class _Together(threading.local):
    """Each thread's ``answers_together`` blocks: how deep, and the rounds they opened."""

    def __init__(self) -> None:
        self.depth = 0
        self.rounds: list[tuple[Connection, trio.Nursery]] = []


together = _Together()


class answers_together:  # lowercase: used as a block, like contextlib's
    """Within this block ``LaterAnswer.give`` queues its answer; at the block's end each
    connection writes its queued answers at once, in one write (one ack releasing 64 sends
    of one client costs one syscall, not 64). Blocks nest; the outermost one writes."""

    __slots__ = ()

    def __enter__(self) -> None:
        together.depth += 1

    def __exit__(self, *_exc: object) -> None:
        blocks = together
        blocks.depth -= 1
        if blocks.depth or not blocks.rounds:
            return
        rounds, blocks.rounds = blocks.rounds, []
        for conn, nursery in rounds:
            conn._write_opened_round(nursery)
