"""Background tasks that outlive running out of file descriptors.

Rules (issue 13 row 3: 20,000 idle connections ended a broker through a background file
open):
- A process out of descriptors (EMFILE, ENFILE) is a state that passes: connections close,
  the transport's caps refuse new ones. A background task that hits it is logged (once
  per outage) and started again after ``retry_s``; it never ends the process. Any other
  error still ends it, as before.
- ``keep_alive`` wraps a task's whole ``run``: the task must be restartable (it re-reads its
  state when it starts). Errors that arrive inside an exception group count only when
  every error in the group is an exhausted-descriptors ``OSError``.
- ``Cancelled`` and every other ``BaseException`` pass through untouched.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)

#: ``errno`` values meaning "no file descriptor left, for now".
FD_EXHAUSTED_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


def fd_exhausted(exc: BaseException) -> bool:
    """True for an ``OSError`` EMFILE/ENFILE, or a group made only of such errors."""
    if isinstance(exc, BaseExceptionGroup):
        return all(fd_exhausted(inner) for inner in exc.exceptions)
    return isinstance(exc, OSError) and exc.errno in FD_EXHAUSTED_ERRNOS


#: A task as ``nursery.start`` runs it.
Task = Callable[..., Awaitable[None]]

#: Failures further apart than this many retries are separate outages (each logged).
_OUTAGE_GAP_RETRIES = 10


class _Status:
    """Forwards ``started`` once, and remembers whether it was called."""

    def __init__(self, outer: trio.TaskStatus[None]) -> None:
        self._outer = outer
        self.called = False

    def started(self, value: None = None) -> None:
        if not self.called:
            self.called = True
            self._outer.started(value)


async def keep_alive(
    run: Task,
    *,
    what: str,
    node: Callable[[], str],
    retry_s: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run(task_status=...)``; start it again ``retry_s`` after it fails for lack of
    descriptors (see the module rules). ``task_status.started()`` reaches the caller once,
    from whichever run gets that far."""
    status = _Status(task_status)
    last_failure_s: float | None = None
    while True:
        try:
            await run(task_status=status)
            return
        except BaseException as exc:
            if not fd_exhausted(exc):
                raise
            now = trio.current_time()
            if last_failure_s is None or now - last_failure_s > _OUTAGE_GAP_RETRIES * retry_s:
                log.error(
                    "%s: %s ran out of file descriptors (%s); starting it again every %.1f s "
                    "until descriptors are free",
                    node(),
                    what,
                    _first_error(exc),
                    retry_s,
                )
            last_failure_s = now
        await trio.sleep(retry_s)


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
