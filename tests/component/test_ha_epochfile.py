"""The epoch file on disk: load, persist every change, refuse corruption."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from broker.ha.epoch import EpochCache
from broker.ha.epochfile import FILE_NAME, EpochFile
from broker.store.files import UnreadableFile


async def test_missing_file_is_an_empty_list_and_changes_persist(tmp_path: Path) -> None:
    f = EpochFile.load(tmp_path)
    assert f.cache == EpochCache()
    assert not (tmp_path / FILE_NAME).exists()
    await f.append(1, 0)
    await f.append(3, 500)
    await f.append(4, 900)
    assert EpochFile.load(tmp_path).cache.pairs() == [(1, 0), (3, 500), (4, 900)]
    await f.truncate_suffix_by_offset(900)
    assert EpochFile.load(tmp_path).cache.pairs() == [(1, 0), (3, 500)]
    await f.truncate_prefix_by_offset(500)
    assert EpochFile.load(tmp_path).cache.pairs() == [(3, 500)]
    # Unlike RocketMQ, truncating everything really empties the file.
    await f.truncate_suffix_by_offset(0)
    assert EpochFile.load(tmp_path).cache == EpochCache()
    assert not list(tmp_path.glob(".*.tmp"))


async def test_a_refused_change_leaves_memory_and_disk_alone(tmp_path: Path) -> None:
    f = EpochFile.load(tmp_path)
    await f.append(5, 100)
    before = (tmp_path / FILE_NAME).read_bytes()
    with pytest.raises(ValueError):
        await f.append(4, 200)
    assert f.cache.pairs() == [(5, 100)]
    assert (tmp_path / FILE_NAME).read_bytes() == before


async def test_concurrent_changes_are_serialised(tmp_path: Path) -> None:
    f = EpochFile.load(tmp_path)

    def next_epoch(c: EpochCache) -> EpochCache:
        return c.append(c.last_epoch + 1, 0 if c.last is None else c.last.start_offset + 10)

    # Each change sees the one before (the writes go through threads: without the lock,
    # two tasks would build on the same list and one entry would be lost).
    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(f.update, next_epoch)
    assert f.cache.pairs() == [(e, (e - 1) * 10) for e in range(1, 7)]
    assert EpochFile.load(tmp_path).cache == f.cache


def test_a_corrupt_file_refuses_to_load(tmp_path: Path) -> None:
    data = EpochCache.of([(1, 0), (2, 10)]).to_bytes()
    (tmp_path / FILE_NAME).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(UnreadableFile, match="corrupt") as info:
        EpochFile.load(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / FILE_NAME}: epoch file fails its length")
