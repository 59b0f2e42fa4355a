"""TimerService under ``autojump_clock``: timers spread over six hours, many sharing a due
time, a small in-memory capacity, a pause of mastership halfway; every timer delivered
once, at its due time (to the millisecond, but for those due during the pause).

Like test_broker_schedule.py: a real store, a stand-in broker (``BrokerForTimers``), and a
``TrioWallClock`` so hours pass in seconds of real time (the service wakes once a virtual
second while idle, which is what bounds the span).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio
import trio.testing

from broker.clock import TrioWallClock
from broker.config import BrokerConfig
from broker.store.results import TIMER_TOPIC, AppendResult
from broker.store.store import MessageStore
from broker.timers import TimerCheckpoint
from broker.timerstore import TimerService
from protocol.message import MessageRecord, iter_records
from tests.component.test_broker_schedule import CFG

SPAN_MS = 6 * 3600 * 1000
COUNT = 300
CAPACITY = 16


@attrs.define
class FakeBroker:
    """What TimerService uses of a broker; ``accepts_writes`` is flipped by the test."""

    store: MessageStore
    config: BrokerConfig
    name: str = "timer-test"
    accepts_writes: bool = True

    def store_put(self, records: Sequence[MessageRecord]) -> AppendResult:
        (record,) = records
        return self.store.put_message(record)


def parked(i: int, due_ms: int) -> MessageRecord:
    """A message as the send path parks it (TimerService.park's properties)."""
    return MessageRecord(
        topic=TIMER_TOPIC,
        body=b"%d" % i,
        queue_id=0,
        born_timestamp_ms=1,
        born_host=("10.0.0.1", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={
            "TIMER_OUT_MS": str(due_ms),
            "TIMER_DELAY_MS": "1",
            "REAL_TOPIC": "T",
            "REAL_QID": "0",
            "UNIQ_KEY": f"U{i:04d}",
        },
    )


async def test_timers_over_hours_with_a_small_window(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    clock = TrioWallClock(start_ms=1_700_000_000_000)
    store = MessageStore.open(tmp_path / "store", CFG, clock=clock)
    config = BrokerConfig(store_dir=tmp_path, timer_index_capacity=CAPACITY)
    broker = FakeBroker(store, config)
    service = TimerService(broker, tmp_path / "timerCheckpoint.cbor", clock=clock)
    rng = random.Random(7)
    start_ms = clock.wall_ms()
    # Many share a due time (ties) and some come due within the first minute.
    dues = [
        start_ms + rng.choice([rng.randrange(1, SPAN_MS), 30_000, 90_000]) for _ in range(COUNT)
    ]
    for i, due_ms in enumerate(dues):
        store.put_message(parked(i, due_ms))
    peak_in_memory = 0

    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        with trio.fail_after(7 * 3600):  # virtual seconds
            paused = False
            while service.delivered < COUNT:
                index = service.index
                if index is not None:
                    peak_in_memory = max(peak_in_memory, index.in_memory)
                if not paused and service.delivered >= COUNT // 2:
                    # Mastership lost and regained: the index restarts from the checkpoint.
                    broker.accepts_writes = False
                    await trio.sleep(5)
                    assert service.index is None
                    broker.accepts_writes = True
                    paused = True
                await trio.sleep(30)
            await trio.sleep(60)  # nothing more comes
        nursery.cancel_scope.cancel()

    delivered: list[MessageRecord] = []
    offset = 0
    while offset < store.max_offset("T", 0):  # a read stays within one ConsumeQueue file
        result = store.get_messages("CG", "T", 0, offset, max_count=32, max_bytes=1 << 24)
        delivered += iter_records(result.body)
        offset = result.next_begin_offset
    bodies = [int(r.body) for r in delivered]
    assert sorted(bodies) == list(range(COUNT)), "each timer exactly once"
    for record in delivered:
        due_ms = dues[int(record.body)]
        late_ms = record.store_timestamp_ms - due_ms
        # Due during the 5 s pause: delivered once mastership is back (idle checks are 1 s).
        assert 0 <= late_ms <= 8000, (record.body, late_ms)
        assert record.properties["TIMER_OUT_MS"] == str(due_ms)
        assert "REAL_TOPIC" not in record.properties
    on_time = [r for r in delivered if r.store_timestamp_ms - dues[int(r.body)] <= 2]
    assert len(on_time) >= COUNT - 10, len(on_time)
    assert peak_in_memory <= CAPACITY
    assert service.rescans >= 3
    assert service.checkpoint == TimerCheckpoint(
        scan_from=COUNT,
        enqueued=COUNT,
        delivered_through_ms=service.checkpoint.delivered_through_ms,
        delivered_through_offset=service.checkpoint.delivered_through_offset,
    )
    await store.close()
