"""Small durable files: atomic replacement, versioned CBOR documents, background writers.

Rules:
- A file is replaced by writing a temporary sibling, fsyncing it, renaming it over the
  target and fsyncing the directory, so a crash leaves either the old or the new bytes,
  never a mixture (DESIGN.md §4 "Metadata").
- Documents are framed by ``protocol.cbor`` (kind + version); this module adds no framing.
- The functions block; callers on the event loop wrap them in ``trio.to_thread.run_sync``
  when they sit on a latency-sensitive path.
- ``DocumentWriter`` keeps one document on disk from the event loop without blocking it:
  changes are coalesced, and each write (payload built, encoded, written, fsynced) runs in
  a worker thread. A round starts at once when a caller waits for its change to be on disk
  (concurrent waiters share one write: 6,000 pipelined topic creates are a few writes, not
  6,000), otherwise at most once per ``interval_s``. A failed write (out of descriptors,
  disk full) fails the waiters it covered, is logged once per outage and is retried every
  ``interval_s``; it never ends the writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import trio

from protocol import cbor
from protocol.errors import StorageError

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make the directory entry changes (create, rename, unlink) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save_document(path: Path, *, kind: str, version: int, payload: Any) -> None:
    """Write ``payload`` as a versioned CBOR document of ``kind``, atomically."""
    atomic_write_bytes(path, cbor.dumps(kind, version, payload))


def load_document(path: Path, *, kind: str, max_version: int) -> tuple[int, Any] | None:
    """Read a document written by ``save_document``; ``None`` if the file does not exist.

    Raises whatever ``protocol.cbor.loads`` raises for a wrong kind, a newer version or
    undecodable bytes: metadata that cannot be read is not silently replaced.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    version, payload = cbor.loads(data, kind=kind, max_version=max_version)
    return version, payload


#: ``snapshot()`` runs on the event loop and must be cheap (copy what will be written);
#: the function it returns runs in a worker thread and builds the payload.
Snapshot = Callable[[], Callable[[], Any]]


class _ToJson(Protocol):
    def to_json(self) -> Any: ...


def table_snapshot(
    key: str, table: Mapping[str, _ToJson], version: _ToJson
) -> Callable[[], dict[str, Any]]:
    """A name → config table and its data version as they are now (a shallow copy of frozen
    values), as a function building ``{key: [config JSON by name], "dataVersion": ...}``
    later, in a worker thread."""
    copy = dict(table)

    def payload() -> dict[str, Any]:
        return {
            key: [copy[name].to_json() for name in sorted(copy)],
            "dataVersion": version.to_json(),
        }

    return payload


class DocumentWriter:
    """Writes one versioned CBOR document in the background (see the module rules)."""

    def __init__(
        self,
        path: Path,
        *,
        kind: str,
        version: int,
        snapshot: Snapshot,
        interval_s: float,
        node: Callable[[], str],
    ) -> None:
        assert interval_s > 0
        self.path = path
        self._kind = kind
        self._version = version
        self._snapshot = snapshot
        self.interval_s = interval_s
        self.node = node
        #: Changes noted so far, and how many of them the file holds.
        self._changes = 0
        self._written = 0
        #: The most changes a caller of ``persisted`` waits to see written.
        self._wanted = 0
        self._wake = trio.Event()
        self._urgent = trio.Event()
        self._round_done = trio.Event()
        #: The last round's outcome: changes it covered and its error (None: written).
        self._last_round: tuple[int, str | None] = (0, None)
        #: Completed writes (tests and statistics).
        self.writes = 0

    @property
    def pending(self) -> bool:
        """Changes not on disk yet."""
        return self._changes > self._written

    def changed(self) -> None:
        """Note a change; the writer saves it within ``interval_s``."""
        self._changes += 1
        self._wake.set()

    async def persisted(self, timeout_s: float) -> None:
        """Return once every change noted before this call is on disk.

        Raises ``StorageError`` when the write covering them failed or did not finish
        within ``timeout_s`` (the writer keeps retrying in the background).
        """
        target = self._changes
        if target <= self._written:
            return
        self._wanted = max(self._wanted, target)
        self._urgent.set()
        self._wake.set()
        with trio.move_on_after(timeout_s):
            while self._written < target:
                done = self._round_done
                await done.wait()
                covered, error = self._last_round
                if error is not None and covered >= target:
                    raise StorageError(f"{self.path} not written: {error}")
        if self._written < target:
            raise StorageError(f"{self.path} not written within {timeout_s} s")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write rounds until cancelled (``close`` writes what is left)."""
        task_status.started()
        while True:
            while not self.pending:
                await self._wake.wait()
                self._wake = trio.Event()
            self._urgent = trio.Event()  # this round serves whoever waits now
            ok = await self._round()
            if ok and self._wanted > self._written:
                continue  # someone waits for a change this round missed: go on at once
            with trio.move_on_after(self.interval_s):
                if ok:
                    await self._urgent.wait()
                else:
                    await trio.sleep_forever()  # a failing disk is retried per interval

    async def close(self) -> None:
        """Write what is pending, on the calling task (clean shutdown)."""
        if self.pending:
            await self._round()

    async def _round(self) -> bool:
        covered = self._changes
        build = self._snapshot()
        try:
            await trio.to_thread.run_sync(self._write, build)
        except OSError as exc:
            if self._last_round[1] is None:
                log.error(
                    "%s: cannot write %s (%s); retrying every %.1f s",
                    self.node(),
                    self.path,
                    exc,
                    self.interval_s,
                )
            self._finish(covered, str(exc))
            return False
        if self._last_round[1] is not None:
            log.info("%s: %s written again", self.node(), self.path)
        self._written = max(self._written, covered)
        self.writes += 1
        self._finish(covered, None)
        return True

    def _finish(self, covered: int, error: str | None) -> None:
        self._last_round = (covered, error)
        done, self._round_done = self._round_done, trio.Event()
        done.set()

    def _write(self, build: Callable[[], Any]) -> None:
        save_document(self.path, kind=self._kind, version=self._version, payload=build())
