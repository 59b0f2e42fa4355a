"""Dispatch in runs (a confirm move releasing many records) writes the same bytes as
dispatch at put time: every ConsumeQueue file and index file, byte for byte."""

from __future__ import annotations

import random
from pathlib import Path

import attrs

from broker.clock import ManualClock
from broker.store.config import StoreConfig
from broker.store.store import MessageStore
from protocol.message import (
    SYSFLAG_TRANSACTION_PREPARED_TYPE,
    SYSFLAG_TRANSACTION_ROLLBACK_TYPE,
    MessageRecord,
)

# Small files: runs cross ConsumeQueue files and index files roll over mid-run.
CFG = StoreConfig(
    min_free_disk_bytes=0,
    segment_bytes=1 << 20,
    cq_entries_per_file=7,
    index_slots=13,
    index_entries=40,
)


def _messages(count: int) -> list[MessageRecord]:
    rng = random.Random(7)
    out = []
    for i in range(count):
        props = {"TAGS": rng.choice(["A", "B", "C"]), "UNIQ_KEY": f"7F00000100002A3B4C5D{i:012X}"}
        if rng.random() < 0.3:
            props["KEYS"] = " ".join(rng.choice(["order-1", "k2", "", "Ünï", "0A"]) for _ in "xy")
        if rng.random() < 0.1:
            del props["UNIQ_KEY"]
        flag = rng.choice([0] * 8 + [SYSFLAG_TRANSACTION_PREPARED_TYPE])
        if rng.random() < 0.05:
            flag = SYSFLAG_TRANSACTION_ROLLBACK_TYPE
        out.append(
            MessageRecord(
                topic=rng.choice(["Orders", "Pay"]),
                body=bytes([i % 256]) * rng.randint(1, 64),
                queue_id=rng.randrange(3),
                born_timestamp_ms=1,
                born_host=("1.2.3.4", 1),
                store_timestamp_ms=0,
                store_host=("0.0.0.0", 0),
                properties=props,
                sys_flag=flag,
            )
        )
    return out


def _files(root: Path) -> dict[str, bytes]:
    found = {}
    for sub in ("consumequeue", "index"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file():
                found[str(p.relative_to(root))] = p.read_bytes()
    return found


async def test_runs_write_the_bytes_of_dispatch_at_put_time(tmp_path: Path) -> None:
    msgs = _messages(300)
    at_put = MessageStore.open(tmp_path / "a", CFG, clock=ManualClock(step_ms=700))
    for m in msgs:
        at_put.put_message(m)
    heard_a: list[tuple[str, int, int, int]] = []
    heard_b: list[tuple[str, int, int, int]] = []
    confirmed = MessageStore.open(
        tmp_path / "b",
        attrs.evolve(CFG, dispatch_confirmed_only=True),
        clock=ManualClock(step_ms=700),
    )
    confirmed.add_arrival_listener(lambda *a: heard_b.append(a))
    ends = [confirmed.put_message(m).end_offset for m in msgs]
    # Confirm moves of every size: one record, a few, a long run, a move inside a record.
    rng = random.Random(3)
    i = 0
    while i < len(ends):
        i = min(len(ends), i + rng.choice([1, 2, 5, 27, 64, 100]))
        confirmed.set_confirm_offset(ends[i - 1] - rng.choice([0, 0, 1]))
        confirmed.write_queue_entries()
    confirmed.set_confirm_offset(ends[-1])
    assert confirmed.dispatched_offset == at_put.dispatched_offset == ends[-1]
    # The listeners hear every entry, in order, as at put time.
    replay = MessageStore.open(tmp_path / "c", CFG, clock=ManualClock(step_ms=700))
    replay.add_arrival_listener(lambda *a: heard_a.append(a))
    for m in msgs:
        replay.put_message(m)
    assert heard_b == heard_a and len(heard_a) > 200
    for store in (at_put, confirmed, replay):
        await store.close()
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sum(1 for name in a if name.startswith("index")) > 3  # index files rolled
    assert sum(1 for name in a if name.startswith("consumequeue")) > 10
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
