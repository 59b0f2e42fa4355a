"""Background machinery of the broker under failure: tasks that run out of descriptors are
started again (``broker/background.py``), and metadata writers coalesce, write off the loop
and survive failing writes (``broker/store/metadata.py``). Issue 13 rows 3 and 7."""

from __future__ import annotations

import errno
import itertools
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from broker.background import fd_exhausted, keep_alive
from broker.store import metadata
from broker.store.metadata import DocumentWriter
from protocol.errors import StorageError

DEADLINE_S = 30.0


def emfile() -> OSError:
    return OSError(errno.EMFILE, os.strerror(errno.EMFILE))


def test_fd_exhausted() -> None:
    assert fd_exhausted(emfile())
    assert fd_exhausted(OSError(errno.ENFILE, "table full"))
    assert fd_exhausted(BaseExceptionGroup("g", [emfile(), ExceptionGroup("h", [emfile()])]))
    assert not fd_exhausted(BaseExceptionGroup("g", [emfile(), ValueError()]))
    assert not fd_exhausted(OSError(errno.ENOSPC, "disk full"))
    assert not fd_exhausted(ValueError())


async def test_keep_alive_restarts_a_task_out_of_descriptors(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[float] = []
    started = 0

    async def task(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runs.append(trio.current_time())
        if len(runs) == 1:
            raise emfile()  # before started(): the caller keeps waiting for a run that starts
        task_status.started()
        if len(runs) < 4:
            async with trio.open_nursery() as nursery:  # errors from a task's nursery count
                nursery.start_soon(_raise, emfile())
                await trio.sleep_forever()
        await trio.sleep_forever()

    with trio.fail_after(DEADLINE_S), caplog.at_level(logging.INFO, "broker.background"):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: keep_alive(
                    task,
                    what="the test task",
                    node=lambda: "b-0",
                    retry_s=2.0,
                    task_status=task_status,
                )
            )
            started += 1
            await trio.sleep(7)
            nursery.cancel_scope.cancel()
    assert started == 1
    assert len(runs) == 4 and [round(b - a) for a, b in itertools.pairwise(runs)] == [2, 2, 2]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "the test task ran out of file descriptors" in errors[0].message


async def test_keep_alive_lets_other_errors_through() -> None:
    async def task(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise OSError(errno.ENOSPC, "disk full")

    with pytest.raises(OSError, match="disk full"):
        await keep_alive(task, what="t", node=lambda: "b-0", retry_s=1.0)


async def _raise(exc: BaseException) -> None:
    raise exc


def writer(path: Path, table: dict[str, int], interval_s: float = 1.0) -> DocumentWriter:
    def snapshot() -> Any:
        copy = dict(table)
        return lambda: copy

    return DocumentWriter(
        path, kind="test", version=1, snapshot=snapshot, interval_s=interval_s, node=lambda: "b-0"
    )


def on_disk(path: Path) -> Any:
    found = metadata.load_document(path, kind="test", max_version=1)
    return None if found is None else found[1]


async def test_waiters_share_writes_and_background_changes_wait_an_interval(
    tmp_path: Path,
) -> None:
    path = tmp_path / "doc.cbor"
    table: dict[str, int] = {}
    w = writer(path, table, interval_s=0.5)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(w.run)

            async def change_and_wait(i: int) -> None:
                table[f"k{i}"] = i
                w.changed()
                await w.persisted(timeout_s=10)
                assert on_disk(path)[f"k{i}"] == i  # on disk before "answered"

            async with trio.open_nursery() as clients:
                for i in range(500):
                    clients.start_soon(change_and_wait, i)
            assert len(on_disk(path)) == 500
            assert w.writes <= 50, w.writes  # one write serves every waiter of its round
            # A change nobody waits for is written within the interval, not at once.
            writes = w.writes
            table["late"] = 1
            w.changed()
            await trio.sleep(0.1)
            assert w.writes == writes and "late" not in on_disk(path)
            await trio.sleep(1.0)
            assert on_disk(path)["late"] == 1
            nursery.cancel_scope.cancel()


async def test_failing_writes_fail_their_waiters_and_are_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "doc.cbor"
    table = {"a": 1}
    w = writer(path, table, interval_s=0.2)
    real = metadata.save_document
    failing = [True]

    def save(*args: Any, **kwargs: Any) -> None:
        if failing[0]:
            raise emfile()
        real(*args, **kwargs)

    monkeypatch.setattr(metadata, "save_document", save)
    with trio.fail_after(DEADLINE_S), caplog.at_level(logging.INFO, "broker.store.metadata"):
        async with trio.open_nursery() as nursery:
            await nursery.start(w.run)
            w.changed()
            with pytest.raises(StorageError, match="Too many open files"):
                await w.persisted(timeout_s=10)
            await trio.sleep(1.0)  # several retries, one log line
            assert on_disk(path) is None and w.pending
            failing[0] = False
            await w.persisted(timeout_s=10)
            assert on_disk(path) == {"a": 1} and not w.pending
            nursery.cancel_scope.cancel()
    lines = [r.message for r in caplog.records]
    assert sum("cannot write" in line for line in lines) == 1
    assert any("written again" in line for line in lines)


async def test_close_writes_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "doc.cbor"
    table = {"a": 1}
    w = writer(path, table, interval_s=60.0)
    w.changed()
    await w.close()
    assert on_disk(path) == {"a": 1}
    await w.close()  # nothing pending: no write
    assert w.writes == 1
