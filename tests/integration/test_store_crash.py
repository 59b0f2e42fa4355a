"""Kill -9 a process writing with SYNC_FLUSH: every acknowledged message survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from broker.store.store import MessageStore
from protocol.message import decode_record, encode_record

sys.path.insert(0, str(Path(__file__).parent))
from store_crash_child import CONFIG, message

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("store_crash_child.py")


async def _read_lines(
    stream: trio.abc.ReceiveStream, lines: list[str], enough: trio.Event, want: int
) -> None:
    buf = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buf += chunk
        *complete, buf = buf.split(b"\n")
        lines.extend(c.decode() for c in complete)
        if sum(1 for line in lines if line.startswith("ACK")) >= want:
            enough.set()


async def _run_child_until_acks(store_dir: Path, want: int) -> list[tuple[int, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(CHILD), str(store_dir), "8"], stdout=subprocess.PIPE, env=env
    )
    lines: list[str] = []
    try:
        enough = trio.Event()
        assert proc.stdout is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_lines, proc.stdout, lines, enough, want)
            with trio.fail_after(60):
                await enough.wait()
            proc.send_signal(signal.SIGKILL)  # mid-stream: writers are still appending
            with trio.fail_after(10):
                await proc.wait()
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(10):
                await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert lines and lines[0] == "READY"
    acks = []
    for line in lines[1:]:
        _, offset, key = line.split(" ")
        acks.append((int(offset), key))
    return acks


def _check_acked(store: MessageStore, acks: list[tuple[int, str]]) -> None:
    for offset, key in acks:
        data = store.read_record(offset)
        assert data is not None, (offset, key)
        rec, _ = decode_record(data)
        assert rec.uniq_key == key
        assert store.query_index("CrashTopic", key, 4, 0, 2**62) == [offset]
        got = store.get_messages(
            "g", "CrashTopic", rec.queue_id, rec.queue_offset, max_count=1, max_bytes=1
        )
        assert got.records == (data,)


async def test_acked_messages_survive_sigkill_and_torn_tail_is_repaired(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    acks = await _run_child_until_acks(store_dir, want=400)
    assert len(acks) >= 400
    store = MessageStore.open(store_dir, CONFIG)
    report = store.recovery_report
    assert report is not None and report.abnormal_shutdown
    assert report.truncated_bytes == 0  # a killed process leaves whole records behind
    _check_acked(store, acks)
    for q in range(4):  # queue offsets are dense: no hole, no duplicate
        res = store.get_messages("g", "CrashTopic", q, 0, max_count=10**6, max_bytes=10**9)
        offsets = [decode_record(r)[0].queue_offset for r in res.records]
        assert offsets == list(range(len(offsets)))
    end = store.max_physical_offset
    await store.close()

    # A torn tail by hand: half a record after the last one.
    seg = sorted((store_dir / "commitlog").iterdir())[-1]
    half = encode_record(message("torn", 0))[:150]
    fd = os.open(seg, os.O_RDWR)
    try:
        os.pwrite(fd, half, end - int(seg.name))
    finally:
        os.close(fd)
    store = MessageStore.open(store_dir, CONFIG)
    report = store.recovery_report
    assert report is not None
    assert (report.end_offset, report.truncated_bytes) == (end, 150)
    assert report.broken_file is not None and report.broken_file.read_bytes() == half
    _check_acked(store, acks)
    await store.close()

    # And the store takes writes again in a new process.
    more = await _run_child_until_acks(store_dir, want=50)
    store = MessageStore.open(store_dir, CONFIG)
    _check_acked(store, acks + more)
    await store.close()
