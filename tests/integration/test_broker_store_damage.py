"""Issue 13 row 8: store damage done on disk between two starts of a real ``rmq broker``.

A ConsumeQueue file truncated or partly overwritten is found at start and rebuilt from the
CommitLog (nothing unreachable); 4 KiB zeroed in an old CommitLog segment (outside the
re-verified tail) refuses start naming the file and offset, and with
``--skip-damaged-segments`` the broker serves the rest and never the damaged bytes.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from protocol.rpc import RemotingClient, open_client
from tests.integration.broker_wire import (
    broker_argv,
    broker_process,
    create_topic,
    pull_all,
    pwrite,
    scan_commitlog,
    send_message,
)
from tests.support.processes import ManagedProcess, namesrv_process, run_command

pytestmark = pytest.mark.integration

TOPIC = "DamageTopic"
QUEUES = 4
PER_QUEUE = 100
#: Small segments: 400 messages of ~450 bytes fill six, so the oldest lies outside the
#: three the store re-verifies at start.
FLAGS = ("--flush", "SYNC_FLUSH", "--segment-bytes", str(32 * 1024))
CQ_ENTRY = struct.Struct(">qiq")
TEST_TIMEOUT_S = 180.0


@attrs.frozen
class Stored:
    namesrv: str
    store: Path
    #: KEYS value -> (queue id, body)
    sent: dict[str, tuple[int, bytes]]


@asynccontextmanager
async def stored_messages(tmp_path: Path) -> AsyncIterator[tuple[Stored, RemotingClient]]:
    """A store holding ``QUEUES * PER_QUEUE`` messages, the broker stopped cleanly."""
    store = tmp_path / "store"
    rng = random.Random(8)
    with trio.fail_after(TEST_TIMEOUT_S):
        async with namesrv_process() as ns, open_client(default_timeout_s=15.0) as client:
            async with broker_process(ns.address, store, *FLAGS) as broker:
                await create_topic(client, broker.address, TOPIC, QUEUES)
                sent: dict[str, tuple[int, bytes]] = {}
                for i in range(QUEUES * PER_QUEUE):
                    key, body = f"m-{i:04d}", rng.randbytes(300)
                    sent[key] = (i % QUEUES, body)
                    response = await send_message(
                        client, broker.address, TOPIC, i % QUEUES, key, body
                    )
                    assert response.code == 0, response
                assert await broker.stop() == 0
            yield Stored(ns.address, store, sent), client


async def pulled(client: RemotingClient, broker: ManagedProcess) -> dict[str, tuple[int, bytes]]:
    """Every message of the topic, by key; each queue's offsets must be 0, 1, 2, ..."""
    out: dict[str, tuple[int, bytes]] = {}
    for queue_id, records in (await pull_all(client, broker.address, TOPIC, QUEUES)).items():
        for rec in records:
            key = rec.properties["KEYS"]
            assert key not in out, key
            out[key] = (rec.queue_id, rec.body)
        offsets = [r.queue_offset for r in records]
        assert offsets == sorted(offsets), queue_id
    return out


def cq_file(store: Path, queue_id: int) -> Path:
    (path,) = sorted((store / "consumequeue" / TOPIC / str(queue_id)).iterdir())
    return path


@pytest.mark.parametrize("damage", ["truncated", "tail overwritten", "middle zeroed"])
async def test_a_damaged_consume_queue_is_rebuilt_at_start(tmp_path: Path, damage: str) -> None:
    async with stored_messages(tmp_path) as (stored, client):
        path = cq_file(stored.store, 1)
        if damage == "truncated":
            os.truncate(path, 50 * CQ_ENTRY.size + 7)
        elif damage == "tail overwritten":
            pwrite(path, random.Random(1).randbytes(40 * CQ_ENTRY.size), 60 * CQ_ENTRY.size)
        else:
            pwrite(path, bytes(10 * CQ_ENTRY.size), 20 * CQ_ENTRY.size)
        async with broker_process(stored.namesrv, stored.store, *FLAGS) as broker:
            assert await pulled(client, broker) == stored.sent
            assert "rebuilt from the CommitLog" in broker.stderr.text, broker.describe("silent")
            assert f"consume queue {TOPIC}/1" in broker.stderr.text
            assert await broker.stop() == 0
        # The rebuilt queue is durable: the next start finds nothing to repair.
        async with broker_process(stored.namesrv, stored.store, *FLAGS) as broker:
            assert await pulled(client, broker) == stored.sent
            assert "rebuilt from the CommitLog" not in broker.stderr.text


async def test_zeroed_bytes_in_an_old_segment_refuse_start_then_are_skipped(
    tmp_path: Path,
) -> None:
    async with stored_messages(tmp_path) as (stored, client):
        places, _ = scan_commitlog(stored.store)
        segments = sorted({p.segment for p in places})
        assert len(segments) >= 5, "the damage must lie outside the re-verified segments"
        first = segments[0]
        zero_at = 8 * 1024
        pwrite(first, bytes(4096), zero_at)
        hit = {
            i
            for i, p in enumerate(places)
            if p.segment == first and p.file_pos < zero_at + 4096 and zero_at < p.file_pos + p.size
        }
        assert 5 <= len(hit) <= 15

        done = await run_command(broker_argv(stored.namesrv, stored.store, *FLAGS), timeout_s=60)
        assert done.returncode != 0, done.describe()
        assert "Traceback" not in done.stderr, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, done.stderr
        first_hit = min(places[i].offset for i in hit)
        assert errors[0].startswith(f"error: {first}: "), errors[0]
        assert f"offset {first_hit}" in errors[0], errors[0]
        assert "--skip-damaged-segments" in errors[0], errors[0]

        skip = (*FLAGS, "--skip-damaged-segments")
        async with broker_process(stored.namesrv, stored.store, *skip) as broker:
            got = await pulled(client, broker)  # every record served decodes, CRC checked
            lost = {f"m-{i:04d}" for i in hit}
            assert set(got) == set(stored.sent) - lost
            assert all(got[k] == stored.sent[k] for k in got)
            assert f"{first}" in broker.stderr.text and "skipping" in broker.stderr.text
