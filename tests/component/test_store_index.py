"""IndexFile on disk: byte layout, chained buckets, rolling, truncation, queries via the store."""

from __future__ import annotations

import struct
from pathlib import Path

import attrs

from broker.clock import ManualClock
from broker.store.config import StoreConfig
from broker.store.index import (
    ENTRY_BYTES,
    HEADER_BYTES,
    IndexFile,
    IndexService,
    index_key_hash,
)
from broker.store.store import MessageStore
from protocol.message import SYSFLAG_TRANSACTION_ROLLBACK_TYPE, MessageRecord


def test_file_layout_matches_rocketmq(tmp_path: Path) -> None:
    f = IndexFile.create(tmp_path / "idx", slots=10, entries=8, preallocate=True)
    h = index_key_hash("T#k")
    f.put(h, 1234, 1_000_000)
    f.put(h, 5678, 1_003_500)
    f.write_header()
    f.close()
    raw = (tmp_path / "idx").read_bytes()
    assert len(raw) == HEADER_BYTES + 10 * 4 + 8 * ENTRY_BYTES
    begin_ts, end_ts, begin_phy, end_phy, slot_count, count = struct.unpack(">qqqqii", raw[:40])
    assert (begin_ts, end_ts, begin_phy, end_phy, slot_count, count) == (
        1_000_000, 1_003_500, 1234, 5678, 1, 3,
    )  # fmt: skip
    slot = struct.unpack_from(">i", raw, 40 + (h % 10) * 4)[0]
    assert slot == 2  # the newest entry heads the chain
    e1 = struct.unpack_from(">iqii", raw, 40 + 40 + 1 * 20)
    e2 = struct.unpack_from(">iqii", raw, 40 + 40 + 2 * 20)
    assert e1 == (h, 1234, 0, 0)
    assert e2 == (h, 5678, 3, 1)  # 3.5 s after the first entry, chained to entry 1
    again = IndexFile.open(tmp_path / "idx", 10, 8)
    assert again is not None
    out: list[int] = []
    again.select(h, 10, 0, 2**62, out)
    assert out == [5678, 1234]
    assert IndexFile.open(tmp_path / "idx", 11, 8) is None
    again.close()


def test_colliding_buckets_and_time_window(tmp_path: Path) -> None:
    svc = IndexService(tmp_path, slots=1, entries=100, preallocate=False)
    for i in range(10):
        svc.put([f"T#k{i % 3}"], 100 * i, 1_000_000 + i * 1000)
    assert svc.query("T#k1", 10, 0, 2**62) == [700, 400, 100]
    assert svc.query("T#k1", 2, 0, 2**62) == [700, 400]
    assert svc.query("T#k1", 10, 1_004_000, 1_008_000) == [700, 400]
    assert svc.query("T#zz", 10, 0, 2**62) == []
    svc.close()


def test_rolling_and_truncation_across_files(tmp_path: Path) -> None:
    svc = IndexService(tmp_path, slots=7, entries=5, preallocate=True)  # 4 entries per file
    for i in range(10):
        svc.put([f"T#a{i}", "T#common"], 100 * i, 1_000_000 + i)
    assert len(svc.files) == 5
    assert len({f.path.name for f in svc.files}) == 5
    assert svc.query("T#common", 100, 0, 2**62) == [100 * i for i in reversed(range(10))]
    assert svc.end_phy_offset == 900
    removed = svc.truncate_after(450)
    assert removed == 10  # records 5..9, two keys each
    assert svc.end_phy_offset == 400
    assert svc.query("T#common", 100, 0, 2**62) == [400, 300, 200, 100, 0]
    assert svc.query("T#a7", 10, 0, 2**62) == []
    assert svc.query("T#a3", 10, 0, 2**62) == [300]
    # Writing after the truncation continues cleanly in the kept file.
    svc.put(["T#common"], 500, 1_000_100)
    assert svc.query("T#common", 2, 0, 2**62) == [500, 400]
    assert svc.delete_below(250) == 1  # the first file ends at 100
    assert svc.query("T#common", 100, 0, 2**62) == [500, 400, 300, 200]
    svc.close()
    reopened = IndexService.open(tmp_path, 7, 5, preallocate=True)
    assert reopened.query("T#common", 100, 0, 2**62) == [500, 400, 300, 200]
    assert not reopened.was_reset
    reopened.close()


def test_truncate_everything_resets_header(tmp_path: Path) -> None:
    svc = IndexService(tmp_path, slots=7, entries=50, preallocate=False)
    svc.put(["T#x", "T#y"], 10, 5000)
    assert svc.truncate_after(0) == 2
    assert svc.files == [] and svc.end_phy_offset == -1
    svc.close()


def _m(i: int, keys: str) -> MessageRecord:
    return MessageRecord(
        topic="Orders",
        body=b"b",
        queue_id=0,
        born_timestamp_ms=1,
        born_host=("1.2.3.4", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"KEYS": keys, "UNIQ_KEY": f"ID{i:030d}"},
    )


async def test_query_by_key_and_by_uniq_key_through_the_store(tmp_path: Path) -> None:
    cfg = StoreConfig(index_slots=3, index_entries=9, min_free_disk_bytes=0, segment_bytes=1 << 20)
    store = MessageStore.open(tmp_path, cfg, clock=ManualClock(now_ms=1_000_000, step_ms=1000))
    r = [store.put_message(_m(i, f"order-{i % 4} all")) for i in range(12)]
    res = store.query_messages("Orders", "order-1", 32, 0, 2**62)
    assert res.physical_offsets == tuple(r[i].physical_offset for i in (9, 5, 1))
    assert res.index_last_update_phy_offset == r[-1].physical_offset
    assert res.index_last_update_timestamp_ms == r[-1].store_timestamp_ms
    assert len(store.query_messages("Orders", "all", 5, 0, 2**62).records) == 5
    uniq = store.query_messages("Orders", f"ID{7:030d}", 32, 0, 2**62)
    assert uniq.physical_offsets == (r[7].physical_offset,)
    assert store.query_messages("Other", "all", 5, 0, 2**62).records == ()
    # Time window: only messages stored within it.
    t0, t1 = r[4].store_timestamp_ms, r[8].store_timestamp_ms
    window = store.query_messages("Orders", "all", 32, t0, t1)
    assert window.physical_offsets == tuple(r[i].physical_offset for i in range(8, 3, -1))
    # A rolled-back transaction record gets no index entry (neither KEYS nor UNIQ_KEY).
    rollback = attrs.evolve(_m(99, "rolled"), sys_flag=SYSFLAG_TRANSACTION_ROLLBACK_TYPE)
    assert store.put_message(rollback).ok
    assert store.query_messages("Orders", "rolled", 32, 0, 2**62).records == ()
    assert store.query_messages("Orders", f"ID{99:030d}", 32, 0, 2**62).records == ()
    await store.close()
