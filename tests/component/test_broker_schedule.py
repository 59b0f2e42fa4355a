"""ScheduleService under ``autojump_clock``: RocketMQ's 18 delay levels (1 s .. 2 h) in virtual time.

The service runs against a real store and a stand-in for the broker (``BrokerForSchedule``
is all it needs), with a ``TrioWallClock``: store timestamps and due times move with
Trio's clock, so two hours of delays pass in a moment of real time. The end-to-end tests
in test_broker_delay.py cover the wire path with one-second levels on the real clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import trio
import trio.testing

from broker.clock import TrioWallClock
from broker.schedule import BrokerForSchedule, ScheduleService
from broker.store.config import DEFAULT_DELAY_LEVELS_S, StoreConfig
from broker.store.results import SCHEDULE_TOPIC, AppendResult
from broker.store.store import MessageStore
from protocol.message import MessageRecord, iter_records

CFG = StoreConfig(
    segment_bytes=1 << 20,
    cq_entries_per_file=100,
    index_slots=64,
    index_entries=1000,
    min_free_disk_bytes=0,
)
LEVELS = len(DEFAULT_DELAY_LEVELS_S)


@attrs.define
class FakeBroker:
    """Just what ScheduleService uses of a broker: a master that always takes writes."""

    store: MessageStore
    name: str = "schedule-test"
    delay_levels_s: tuple[float, ...] = DEFAULT_DELAY_LEVELS_S
    accepts_writes: bool = True

    @property
    def max_delay_level(self) -> int:
        return len(self.delay_levels_s)

    def store_put(self, records: Sequence[MessageRecord]) -> AppendResult:
        (record,) = records
        return self.store.put_message(record)


def parked(level: int) -> MessageRecord:
    """A message as SendProcessor parks it for delay ``level`` (queue level - 1)."""
    return MessageRecord(
        topic=SCHEDULE_TOPIC,
        body=f"level-{level}".encode(),
        queue_id=level - 1,
        born_timestamp_ms=1,
        born_host=("10.0.0.1", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={
            "DELAY": str(level),
            "REAL_TOPIC": "T",
            "REAL_QID": "0",
            "UNIQ_KEY": f"U{level:02d}",
        },
    )


async def test_all_18_delay_levels_are_delivered_when_due_in_virtual_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    clock = TrioWallClock(start_ms=1_700_000_000_000)
    store = MessageStore.open(tmp_path / "store", CFG, clock=clock)
    broker: BrokerForSchedule = FakeBroker(store)
    schedule = ScheduleService(broker, tmp_path / "delayOffset.cbor", clock=clock)
    arrived_s: dict[int, float] = {}  # queue offset in T -> Trio time of its arrival
    all_arrived = trio.Event()

    def on_arrival(topic: str, queue_id: int, queue_offset_end: int, tags_code: int) -> None:
        if topic == "T":
            arrived_s[queue_offset_end - 1] = trio.current_time()
            if len(arrived_s) == LEVELS:
                all_arrived.set()

    store.add_arrival_listener(on_arrival)
    start_s = trio.current_time()
    # Parked one after another, the longest delay first, 10 virtual ms apart.
    stored_ms: dict[int, int] = {}
    for level in range(LEVELS, 0, -1):
        stored_ms[level] = store.put_message(parked(level)).store_timestamp_ms
        await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        await nursery.start(schedule.run)
        with trio.fail_after(3 * 3600):  # virtual seconds
            await all_arrived.wait()
        nursery.cancel_scope.cancel()

    # Two hours passed on Trio's clock (and on the wall clock that follows it).
    assert trio.current_time() - start_s >= DEFAULT_DELAY_LEVELS_S[-1]
    result = store.get_messages("CG", "T", 0, 0, max_count=32, max_bytes=1 << 20)
    delivered = list(iter_records(result.body))
    levels = [int(r.body.decode().removeprefix("level-")) for r in delivered]
    assert levels == list(range(1, LEVELS + 1))  # shortest delay first
    for queue_offset, record in enumerate(delivered):
        level = levels[queue_offset]
        due_ms = stored_ms[level] + int(DEFAULT_DELAY_LEVELS_S[level - 1] * 1000)
        # Re-put at its due time, to the millisecond, on both clocks.
        assert 0 <= record.store_timestamp_ms - due_ms <= 2, (level, record.store_timestamp_ms)
        arrived_ms = clock.start_ms + round((arrived_s[queue_offset] - start_s) * 1000)
        assert abs(arrived_ms - record.store_timestamp_ms) <= 2, level
        assert record.uniq_key == f"U{level:02d}"
        assert record.topic == "T" and "DELAY" not in record.properties
    assert schedule.delivered == LEVELS
    assert schedule.offsets == {level: 1 for level in range(1, LEVELS + 1)}
    await store.close()
