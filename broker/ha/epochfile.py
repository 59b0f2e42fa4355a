"""The epoch file on disk: ``<store_dir>/epochFileCheckpoint``, next to the CommitLog.

Rules (reference/rocketmq-controller.md §4.1):
- The bytes are ``EpochCache.to_bytes`` (magic, count, CRC, entries); every change replaces
  the file atomically (temp, fsync, rename, fsync dir), so a crash leaves the old or the
  new list, never a mix; RocketMQ's ``.bak`` copy is not needed.
- A corrupt file refuses to load (``UnreadableFile``: ``<path>: <what is wrong>``, one line
  for ``rmq broker``): guessing epochs could pair a divergent tail with the wrong master.
  A missing file is an empty list (a fresh replica).
- Changes are serialised by one lock and the in-memory cache is updated only after the
  write succeeded, so readers never see an epoch the disk does not have.
- Truncating to an empty list writes an empty file (RocketMQ skips the write and keeps
  stale entries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from broker.ha.epoch import EpochCache
from broker.store.files import reading
from broker.store.metadata import atomic_write_bytes

log = logging.getLogger(__name__)

FILE_NAME = "epochFileCheckpoint"


class EpochFile:
    """The persisted epoch list of one store. Build it with ``EpochFile.load``."""

    def __init__(self, path: Path, cache: EpochCache, *, node_name: str = "broker") -> None:
        self.path = path
        self.node = node_name
        self._cache = cache
        self._lock = trio.Lock()

    @classmethod
    def load(cls, store_dir: Path | str, *, node_name: str = "broker") -> EpochFile:
        """Read ``<store_dir>/epochFileCheckpoint`` (blocking; call it before serving)."""
        path = Path(store_dir) / FILE_NAME
        with reading(path):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return cls(path, EpochCache(), node_name=node_name)
            return cls(path, EpochCache.from_bytes(data), node_name=node_name)

    @property
    def cache(self) -> EpochCache:
        return self._cache

    async def replace(self, cache: EpochCache) -> None:
        """Make ``cache`` the durable epoch list (no write when nothing changed)."""
        await self.update(lambda _old: cache)

    async def update(self, change: Callable[[EpochCache], EpochCache]) -> EpochCache:
        """Apply ``change`` to the current list under the lock and persist the result."""
        async with self._lock:
            new = change(self._cache)
            if new != self._cache:
                await trio.to_thread.run_sync(atomic_write_bytes, self.path, new.to_bytes())
                self._cache = new
            return new

    async def append(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` starts at ``start_offset`` (ValueError when out of order)."""
        await self.update(lambda c: c.append(epoch, start_offset))
        log.info("%s: epoch %d starts at offset %d", self.node, epoch, start_offset)

    async def truncate_suffix_by_offset(self, offset: int) -> None:
        """Drop entries starting at or after ``offset`` (the CommitLog was cut there)."""
        await self.update(lambda c: c.truncate_suffix_by_offset(offset))

    async def truncate_prefix_by_offset(self, offset: int) -> None:
        """Drop entries ending at or before ``offset`` (retention deleted those segments)."""
        await self.update(lambda c: c.truncate_prefix_by_offset(offset))
