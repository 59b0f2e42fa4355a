"""What the micro-benchmarks share: the records they store and their command line.

Rules:
- Records come from a small pool reused cyclically: a large Python heap slows page-cache
  writes on some kernels, which would measure the benchmark, not the store.
- Every run gets fresh store directories under one temporary parent (``--dir`` to choose
  where), removed afterwards; the figures end as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from protocol.message import MessageRecord

#: The runs of one micro-benchmark: (parent directory, arguments) → figures by run name.
Runs = Callable[[Path, argparse.Namespace], Awaitable[dict[str, Any]]]

TOPIC = "BenchTopic"
QUEUES = 8


def store_records(size: int, distinct: int = 1024) -> list[MessageRecord]:
    """``distinct`` records of ``size``-byte bodies over ``QUEUES`` queues of ``TOPIC``,
    each with a tag, a key and a UNIQ_KEY as a Java producer sends them."""
    return [
        MessageRecord(
            topic=TOPIC,
            body=bytes([i % 256]) * size,
            queue_id=i % QUEUES,
            born_timestamp_ms=int(time.time() * 1000),
            born_host=("127.0.0.1", 50000),
            store_timestamp_ms=0,
            store_host=("0.0.0.0", 0),
            properties={
                "TAGS": "TagA",
                "KEYS": f"key-{i}",
                "UNIQ_KEY": f"7F0000010000ABCDEF01{i:012X}",
                "WAIT": "true",
            },
        )
        for i in range(distinct)
    ]


def main(
    description: str,
    runs: Runs,
    *,
    prefix: str,
    default_count: int,
    more_args: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse ``--count --size --concurrency --dir`` (and what ``more_args`` adds), do
    ``runs`` in a fresh temporary directory (removed afterwards) and print their figures
    as a final JSON line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--count", type=int, default=default_count)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the store dirs")
    if more_args is not None:
        more_args(parser)
    args = parser.parse_args()
    parent = Path(tempfile.mkdtemp(prefix=prefix, dir=args.dir))
    try:
        results = trio.run(runs, parent, args)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    config = {"count": args.count, "size": args.size, "concurrency": args.concurrency}
    print(json.dumps(config | results))
