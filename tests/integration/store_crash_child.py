"""Child process for test_store_crash.py: write to a SYNC_FLUSH store, print every ack.

Usage: store_crash_child.py STORE_DIR CONCURRENCY

Prints ``READY`` once the store is open, then ``ACK <physical offset> <key>`` for each
message as soon as ``wait_flushed`` confirmed it, until killed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from broker.store.config import FlushMode, StoreConfig
from broker.store.store import MessageStore
from protocol.message import MessageRecord

CONFIG = StoreConfig(
    segment_bytes=256 * 1024,
    cq_entries_per_file=500,
    index_slots=1000,
    index_entries=20_000,
    min_free_disk_bytes=0,
    flush_mode=FlushMode.SYNC_FLUSH,
    checkpoint_interval_s=0.2,
)


def message(key: str, queue_id: int) -> MessageRecord:
    return MessageRecord(
        topic="CrashTopic",
        body=key.encode() * 40,
        queue_id=queue_id,
        born_timestamp_ms=1,
        born_host=("127.0.0.1", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"KEYS": key, "UNIQ_KEY": key},
    )


async def writer(store: MessageStore, worker: int) -> None:
    n = 0
    while True:
        key = f"p{os.getpid()}-w{worker}-{n}"
        result = store.put_message(message(key, worker % 4))
        if await store.wait_flushed(result.end_offset, timeout_s=10):
            print(f"ACK {result.physical_offset} {key}", flush=True)
        n += 1


async def main() -> None:
    store = MessageStore.open(Path(sys.argv[1]), CONFIG)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        print("READY", flush=True)
        for worker in range(int(sys.argv[2])):
            nursery.start_soon(writer, store, worker)


if __name__ == "__main__":
    trio.run(main)
