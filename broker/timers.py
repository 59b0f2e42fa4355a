"""Timer messages (RocketMQ 5.x): the pure rules and the bounded index of pending timers.

Rules (HookUtils.checkIfTimerMessage / transformTimerMessage, TimerMessageStore):
- A message is a timer message when it carries ``TIMER_DELAY_SEC``, ``TIMER_DELAY_MS``,
  ``TIMER_DELIVER_MS`` or Aliyun's older ``__STARTDELIVERTIME`` (epoch ms), read in that
  order, has no positive ``DELAY`` level (a level wins and the timer properties are
  dropped), is not already in the timer topic and has no ``TIMER_OUT_MS`` (a delivered
  timer message that is sent again, e.g. as a retry, is not parked twice).
- Due time in the past or now: stored at once as a normal message. Further away than
  ``timerMaxDelaySec``, or not a number: refused (MESSAGE_ILLEGAL with RocketMQ's remark).
- A parked message lives in ``rmq_sys_wheel_timer`` queue 0 with ``TIMER_OUT_MS`` = due,
  ``REAL_TOPIC`` and ``REAL_QID``; the dispatcher gives its ConsumeQueue entry the due time
  as tag code. That ConsumeQueue is the durable timer log: it is rebuilt from the CommitLog
  on every replica, so a new master after a failover has every timer its log holds.
- ``TimerIndex`` keeps the delivery progress in a few numbers (``TimerCheckpoint``):
  every entry below ``scan_from`` is delivered; every entry in [scan_from, enqueued) whose
  key (due time, queue offset) is <= ``through`` is delivered; the rest are pending. Only the
  pending entries of a window are in memory: those due within ``HORIZON_MS`` (60 s), at
  most ``capacity``, ordered by (due, queue offset); the others are counted and found again
  by rescanning [scan_from, enqueued) once the window is delivered and they come near. Memory is bounded however many timers are pending;
  a rescan costs one pass over the pending part of the ConsumeQueue (20 bytes an entry).
- ``through`` never passes the wall clock, so an entry that shows up late
  (its due time already covered, e.g. dispatch held back until replicas confirmed it) is
  delivered at once by the caller before the index steps over it (``is_late``).
- Delivery is at least once: the checkpoint is persisted every few seconds and copied to
  slaves as often, so a crash or failover re-delivers what was delivered since the last
  copy (as RocketMQ's timer checkpoint does).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

import attrs

from broker.store.results import TIMER_TOPIC
from protocol.message import (
    PROPERTY_DELAY,
    PROPERTY_START_DELIVER_TIME,
    PROPERTY_TIMER_DELAY_MS,
    PROPERTY_TIMER_DELAY_SEC,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_TIMER_OUT_MS,
    int_property,
)

#: ``timerMaxDelaySec`` default: 3 days.
DEFAULT_MAX_DELAY_S = 3 * 24 * 3600
TIMER_PROPERTIES = (
    PROPERTY_TIMER_DELAY_SEC,
    PROPERTY_TIMER_DELAY_MS,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_START_DELIVER_TIME,
)
_MAX = 1 << 62
#: Pending timers due within this of now are held in memory; later ones are counted and
#: found again by a rescan when their time comes near.
HORIZON_MS = 60_000
_NO_KEY = (_MAX, _MAX)


class TimerIllegal(ValueError):
    """A timer property that is not a number, or a due time past the maximum delay."""


def illegal_remark(max_delay_s: int) -> str:
    """RocketMQ's remark for WHEEL_TIMER_MSG_ILLEGAL (SendMessageProcessor)."""
    return (
        "timer message illegal, the delay time should not be bigger than the max delay "
        f"{max_delay_s * 1000}ms; or if set del msg, the delay time should be bigger than "
        "the current time"
    )


def _number(properties: Mapping[str, str], key: str) -> int:
    raw = properties[key]
    try:
        return int(raw.strip())
    except ValueError:
        raise TimerIllegal(f"{key}={raw!r} is not an integer") from None


def requested_due_ms(properties: Mapping[str, str], now_ms: int) -> int | None:
    """The due time a message asks for, or None when it is not a timer message."""
    if properties.get(PROPERTY_TIMER_OUT_MS) is not None:
        return None
    if properties.get(PROPERTY_TIMER_DELAY_SEC) is not None:
        return now_ms + _number(properties, PROPERTY_TIMER_DELAY_SEC) * 1000
    if properties.get(PROPERTY_TIMER_DELAY_MS) is not None:
        return now_ms + _number(properties, PROPERTY_TIMER_DELAY_MS)
    if properties.get(PROPERTY_TIMER_DELIVER_MS) is not None:
        return _number(properties, PROPERTY_TIMER_DELIVER_MS)
    if properties.get(PROPERTY_START_DELIVER_TIME) is not None:
        return _number(properties, PROPERTY_START_DELIVER_TIME)
    return None


def park_due_ms(
    properties: dict[str, str], topic: str, *, now_ms: int, max_delay_s: int
) -> int | None:
    """When to deliver a message being sent: None to store it as it is now.

    Drops the timer properties of a message with a positive DELAY level (the level wins,
    as in RocketMQ). Raises ``TimerIllegal`` for a bad number or a delay past
    ``max_delay_s``.
    """
    if topic == TIMER_TOPIC:
        return None
    level = properties.get(PROPERTY_DELAY, "")
    if (int_property(level.strip()) or 0) > 0:
        for key in TIMER_PROPERTIES:
            properties.pop(key, None)
        return None
    due_ms = requested_due_ms(properties, now_ms)
    if due_ms is None or due_ms <= now_ms:
        return None
    if due_ms - now_ms > max_delay_s * 1000:
        raise TimerIllegal(f"due in {due_ms - now_ms} ms, more than {max_delay_s} s")
    return due_ms


@attrs.frozen(kw_only=True)
class TimerEntry:
    """One parked message: its timer ConsumeQueue offset, CommitLog place and due time."""

    queue_offset: int
    physical_offset: int
    size: int
    due_ms: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.due_ms, self.queue_offset)


@attrs.frozen(kw_only=True)
class TimerCheckpoint:
    """The delivery progress (see the module rules); persisted and copied to slaves."""

    scan_from: int = 0
    enqueued: int = 0
    #: With ``delivered_through_offset``: the key ``(due_ms, queue_offset)`` up to which
    #: the entries in [scan_from, enqueued) are delivered (keys order entries with equal
    #: due times by offset).
    delivered_through_ms: int = 0
    delivered_through_offset: int = _MAX

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.scan_from <= self.enqueued:
            raise ValueError(f"timer checkpoint: bad offsets {self.scan_from}..{self.enqueued}")
        if self.delivered_through_ms < 0 or self.delivered_through_offset < -1:
            raise ValueError("timer checkpoint: negative progress")

    @property
    def through(self) -> tuple[int, int]:
        return (self.delivered_through_ms, self.delivered_through_offset)

    def to_json(self) -> dict[str, int]:
        return {
            "scanFrom": self.scan_from,
            "enqueued": self.enqueued,
            "deliveredThroughMs": self.delivered_through_ms,
            "deliveredThroughOffset": self.delivered_through_offset,
        }

    @classmethod
    def from_json(cls, value: object) -> TimerCheckpoint:
        """Parse ``to_json``'s form; ValueError names what is wrong."""
        if not isinstance(value, dict):
            raise ValueError("timer checkpoint: expected an object")
        fields = {}
        for name, key, default in (
            ("scan_from", "scanFrom", 0),
            ("enqueued", "enqueued", 0),
            ("delivered_through_ms", "deliveredThroughMs", 0),
            ("delivered_through_offset", "deliveredThroughOffset", _MAX),
        ):
            v = value.get(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or not -1 <= v <= _MAX:
                raise ValueError(f"timer checkpoint: {key} {v!r} is not an offset")
            fields[name] = v
        return cls(**fields)

    def clamped(self, queue_end: int) -> TimerCheckpoint:
        """This checkpoint within a ConsumeQueue that ends at ``queue_end`` (a slave that
        became master may hold fewer entries than its old master reported)."""
        enqueued = min(self.enqueued, queue_end)
        return attrs.evolve(self, scan_from=min(self.scan_from, enqueued), enqueued=enqueued)


@attrs.define
class TimerIndex:
    """Pending timers of a window, in memory; the rest counted (module rules)."""

    capacity: int
    scan_from: int = 0
    enqueued: int = 0
    #: Entries in [scan_from, enqueued) with a key up to this are delivered.
    through: tuple[int, int] = (0, _MAX)
    #: Every pending entry in [scan_from, enqueued) with key <= window_key is in ``_heap``.
    window_key: tuple[int, int] = _NO_KEY
    #: Pending entries outside the window (an upper bound after ``restore``), and the
    #: smallest key among them.
    beyond: int = 0
    beyond_min: tuple[int, int] = (0, 0)
    _heap: list[tuple[int, int, int, int]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        assert self.capacity > 0

    @classmethod
    def restore(cls, checkpoint: TimerCheckpoint, *, capacity: int) -> TimerIndex:
        """An index that knows nothing of [scan_from, enqueued) yet: it asks for a scan."""
        pending = checkpoint.enqueued - checkpoint.scan_from
        return cls(
            capacity=capacity,
            scan_from=checkpoint.scan_from,
            enqueued=checkpoint.enqueued,
            through=checkpoint.through,
            window_key=checkpoint.through if pending else _NO_KEY,
            beyond=pending,
            beyond_min=(0, 0),
        )

    def checkpoint(self) -> TimerCheckpoint:
        return TimerCheckpoint(
            scan_from=self.scan_from,
            enqueued=self.enqueued,
            delivered_through_ms=self.through[0],
            delivered_through_offset=self.through[1],
        )

    @property
    def in_memory(self) -> int:
        return len(self._heap)

    @property
    def pending(self) -> int:
        return len(self._heap) + self.beyond

    def is_late(self, entry: TimerEntry) -> bool:
        """An entry whose due time the progress already covers: deliver it before ``add``."""
        return entry.key <= self.through

    def add(self, entry: TimerEntry, now_ms: int, horizon_ms: int = HORIZON_MS) -> None:
        """Take the next ConsumeQueue entry (at ``enqueued`` or past a hole); a late one must
        have been delivered first. Only entries due within ``horizon_ms`` go in memory."""
        assert entry.queue_offset >= self.enqueued, (entry.queue_offset, self.enqueued)
        self.enqueued = entry.queue_offset + 1
        if self.is_late(entry):
            self.advance(now_ms)
            return
        if entry.key <= self.window_key and entry.due_ms > now_ms + horizon_ms:
            self._limit_window((now_ms + horizon_ms, _MAX))
        if entry.key <= self.window_key:
            heapq.heappush(
                self._heap, (entry.due_ms, entry.queue_offset, entry.physical_offset, entry.size)
            )
            if len(self._heap) > self.capacity:
                self._shrink_window()
        else:
            self._count_beyond(entry.key)

    def _count_beyond(self, key: tuple[int, int]) -> None:
        self.beyond_min = key if not self.beyond else min(self.beyond_min, key)
        self.beyond += 1

    def _limit_window(self, key: tuple[int, int]) -> None:
        """Lower the window to ``key``: what the heap holds past it is counted beyond."""
        self.window_key = min(self.window_key, key)
        out = [item for item in self._heap if (item[0], item[1]) > self.window_key]
        if out:
            self._heap = [item for item in self._heap if (item[0], item[1]) <= self.window_key]
            heapq.heapify(self._heap)
            first_out = min((item[0], item[1]) for item in out)
            self.beyond_min = first_out if not self.beyond else min(self.beyond_min, first_out)
            self.beyond += len(out)

    def _shrink_window(self) -> None:
        """Over capacity: keep the smaller half, count the rest as beyond the window."""
        ordered = sorted(self._heap)
        half = self.capacity // 2 or 1
        keep, out = ordered[:half], ordered[half:]
        self._heap = keep  # a sorted list is a valid heap
        self.window_key = (keep[-1][0], keep[-1][1])
        first_out = (out[0][0], out[0][1])
        self.beyond_min = first_out if not self.beyond else min(self.beyond_min, first_out)
        self.beyond += len(out)

    def next_due(self, now_ms: int) -> TimerEntry | None:
        """The pending entry to deliver now, if any (``delivered`` once it is)."""
        if not self._heap:
            return None
        due_ms, queue_offset, phys, size = self._heap[0]
        if due_ms > now_ms:
            return None
        return TimerEntry(queue_offset=queue_offset, physical_offset=phys, size=size, due_ms=due_ms)

    def delivered(self, entry: TimerEntry, now_ms: int) -> None:
        """``entry`` (``next_due``'s answer) is stored in its real topic."""
        popped = heapq.heappop(self._heap)
        assert popped[1] == entry.queue_offset
        self.advance(now_ms)

    def advance(self, now_ms: int) -> None:
        """Move the progress up to the clock, below everything still pending."""
        bound = (now_ms, _MAX)
        if self._heap:
            bound = min(bound, (self._heap[0][0], self._heap[0][1] - 1))
        if self.beyond:
            bound = min(bound, (self.beyond_min[0], self.beyond_min[1] - 1))
        elif not self._heap:
            self.scan_from = self.enqueued  # nothing pending: no rescan needs the past
        self.through = max(self.through, bound)

    def wait_ms(self, now_ms: int) -> int | None:
        """Milliseconds until the next known due time (None: nothing in the window)."""
        if not self._heap:
            return None
        return max(0, self._heap[0][0] - now_ms)

    def needs_scan(self, now_ms: int, lookahead_ms: int) -> bool:
        """Whether entries beyond the window may come due within ``lookahead_ms``. Only
        once the window is delivered: everything beyond it is due after everything in it,
        so a rescan earlier would only read the log again."""
        return self.beyond > 0 and not self._heap and self.beyond_min[0] <= now_ms + lookahead_ms

    def skip_to(self, queue_offset: int) -> None:
        """Entries before ``queue_offset`` are holes (blank or removed): nothing to take."""
        self.enqueued = max(self.enqueued, queue_offset)

    def start_rescan(self, now_ms: int, horizon_ms: int) -> Rescan:
        """A rebuild of the window from [scan_from, enqueued): feed it those entries in
        offset order (``Rescan.feed``), then ``finish_rescan`` (nothing else may change the
        index in between)."""
        return Rescan(
            capacity=self.capacity,
            through=self.through,
            limit_ms=now_ms + horizon_ms,
            first_pending=self.enqueued,
        )

    def finish_rescan(self, scan: Rescan, now_ms: int) -> None:
        self.scan_from = scan.first_pending
        self._heap = sorted((-d, -q, p, s) for d, q, p, s in scan.kept)
        if scan.beyond == 0:
            self.window_key = _NO_KEY
        elif len(scan.kept) < self.capacity:
            self.window_key = (scan.limit_ms, _MAX)
        else:
            self.window_key = (self._heap[-1][0], self._heap[-1][1])
        self.beyond = scan.beyond
        self.beyond_min = scan.beyond_min
        self.advance(now_ms)


@attrs.define
class Rescan:
    """A window rebuild in progress: the ``capacity`` smallest pending keys due before
    ``limit_ms`` are kept, every other pending entry is counted."""

    capacity: int
    through: tuple[int, int]
    limit_ms: int
    first_pending: int
    #: A max-heap of the kept entries, as ``(-due, -queue_offset, phys, size)``.
    kept: list[tuple[int, int, int, int]] = attrs.field(factory=list)
    beyond: int = 0
    beyond_min: tuple[int, int] = (0, 0)
    _seen_pending: bool = False

    def _count(self, key: tuple[int, int]) -> None:
        self.beyond_min = key if not self.beyond else min(self.beyond_min, key)
        self.beyond += 1

    def feed(self, entries: Iterable[tuple[int, int, int, int]]) -> None:
        """Take ``(queue_offset, phys, size, due_ms)`` entries, in offset order."""
        through = self.through
        limit_ms = self.limit_ms
        kept = self.kept
        cap = self.capacity
        for queue_offset, phys, size, due_ms in entries:
            if (due_ms, queue_offset) <= through:
                continue
            if not self._seen_pending:
                self._seen_pending = True
                self.first_pending = queue_offset
            if due_ms > limit_ms:
                self._count((due_ms, queue_offset))
                continue
            item = (-due_ms, -queue_offset, phys, size)
            if len(kept) < cap:
                heapq.heappush(kept, item)
            elif item > kept[0]:
                out = heapq.heapreplace(kept, item)
                self._count((-out[0], -out[1]))
            else:
                self._count((due_ms, queue_offset))
