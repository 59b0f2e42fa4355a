"""Natural batching of concurrent sends: RocketMQ 5.1's producer autoBatch, minus its wait.

Rules:
- Sends that may share a request meet in a lane: one per (broker address, topic) for
  unordered sends, one per (broker address, queue) for ordered ones.
- No added delay. A send to a lane with nothing in flight or queued leaves at once, alone
  (the SEND_MESSAGE_V2 it would be without batching). Sends that arrive while a request
  of their lane is in flight queue up and leave together, as one SEND_BATCH_MESSAGE, as
  soon as it returns; or at once when a full batch (``max_count`` messages or
  ``max_bytes``) is queued, for unordered lanes, which may have several requests in
  flight. An ordered lane never has more than one, so its messages are stored in the
  order they entered it.
- At most ``total_max_bytes`` queue over all lanes; past that an unordered send leaves
  alone at once (RocketMQ's totalBatchMaxBytes).
- Every caller waits for its own outcome under its own deadline. A caller cancelled (or
  past its deadline) while its message still queues takes the message out: it is never
  sent. Once its message left, the request goes on for the others; the caller learns
  nothing more (``RemotingTimeout`` past the deadline: the outcome is unknown).
- Deadlines are kept by one task per batcher, not a cancel scope per caller (a scope
  costs ~6 µs, a fifth of the producer's CPU per message at 64 in flight): callers are
  listed in arrival order, which is deadline order when they share a timeout, and the
  task wakes at the soonest deadline of those not answered yet and answers the late
  ones with a timeout. Callers already answered leave the front of the list as they go.
- A waiting caller is parked on its own task and woken by whoever answers it (a Trio
  ``reschedule``), not through a ``trio.Event`` per message: a batch's answers wake its
  callers in one pass, and a cancelled caller is let go by Trio's abort hook (its message
  withdrawn when still queued, as before).
- A request's outcome is each caller's: its own result, or the request's error (each
  caller gets its own copy). A batch the broker refused for good (not retriable) may have
  been refused for being a batch: each of its callers then sends alone, and hears what a
  single send hears.
- What sends a request and splits its answer is the producer's ``exchange``; this module
  only decides who goes together, and when.
- The queue of an unordered batch is the producer's choice per batch (``batch_queue``),
  as RocketMQ selects a queue per batch: each message's round-robin queue would send the
  batch to its first message's, and batches whose sizes line up with the queue count
  would then all go to the same few queues (one of two, with 8 queues at 256 in flight).
  An ordered lane's messages share their queue; a message alone keeps its own.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

from client.message import SendResult
from protocol.errors import ConnectionLost, RemotingTimeout, RocketError
from protocol.route import MessageQueue

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Sends ``items`` to ``addr`` as one request on ``queue`` before ``deadline``: a result
#: per item, in order, or a ``RocketError`` for all of them.
Exchange = Callable[[str, MessageQueue, list[T], float], Awaitable[list[SendResult]]]
#: The queue an unordered batch goes to, given its first message's (module rules).
BatchQueue = Callable[[MessageQueue], MessageQueue]
#: Idle lanes are forgotten once there are more than this many.
MAX_IDLE_LANES = 1024
#: Defaults of ``BatchConfig``: messages and bytes of one batch (RocketMQ 5.1's
#: batchMaxBytes), bytes waiting over all lanes (its totalBatchMaxBytes).
BATCH_MAX_COUNT = 256
BATCH_MAX_BYTES = 32 * 1024
TOTAL_BATCH_MAX_BYTES = 32 * 1024 * 1024


@attrs.frozen(kw_only=True)
class BatchConfig:
    """Bounds of one automatic batch (defaults: RocketMQ 5.1's batchMaxBytes and
    totalBatchMaxBytes; no batchMaxDelayMs: a batch never waits for company)."""

    max_count: int = BATCH_MAX_COUNT
    max_bytes: int = BATCH_MAX_BYTES
    total_max_bytes: int = TOTAL_BATCH_MAX_BYTES

    def __attrs_post_init__(self) -> None:
        if self.max_count < 2 or self.max_bytes <= 0 or self.total_max_bytes <= 0:
            raise ValueError(f"batch bounds must be positive (max_count >= 2): {self}")


class _Waiter(Generic[T]):
    """One caller's message in a lane, and its outcome once known (a plain slotted
    class: one is made per batched message)."""

    __slots__ = ("alone", "deadline", "error", "item", "queue", "result", "size", "taken", "task")

    def __init__(self, item: T | None, queue: MessageQueue, size: int, deadline: float) -> None:
        self.item = item
        self.queue = queue
        self.size = size
        self.deadline = deadline
        #: The caller's task while it waits to be answered; None once answered (woken)
        #: or given up (cancelled): nobody wakes it twice.
        self.task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        self.result: SendResult | None = None
        self.error: RocketError | None = None
        #: Refused as part of a batch: the caller sends it alone.
        self.alone = False
        #: Left in a request (no longer the caller's to withdraw).
        self.taken = False

    def wake(self) -> None:
        """Answer the caller (what it hears is set first); no-op once answered."""
        task = self.task
        if task is not None:
            self.task = None
            _reschedule(task)

    def abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        """Trio's abort hook: the caller was cancelled while parked; it goes at once."""
        self.task = None
        return _ABORT_SUCCEEDED


_reschedule = trio.lowlevel.reschedule
_park = trio.lowlevel.wait_task_rescheduled
_ABORT_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED


@attrs.define(eq=False)
class _Lane(Generic[T]):
    addr: str
    ordered: bool
    waiting: deque[_Waiter[T]] = attrs.field(factory=deque)
    waiting_bytes: int = 0
    in_flight: int = 0
    flushing: bool = False
    wake: trio.Event = attrs.field(factory=trio.Event)

    def idle(self) -> bool:
        return not self.in_flight and not self.waiting

    def full(self, config: BatchConfig) -> bool:
        return len(self.waiting) >= config.max_count or self.waiting_bytes >= config.max_bytes

    def may_send(self, config: BatchConfig) -> bool:
        """Whether what waits may leave now (see the module rules)."""
        if not self.waiting:
            return False
        return not self.in_flight or (not self.ordered and self.full(config))

    def take(self, config: BatchConfig) -> list[_Waiter[T]]:
        """The next batch: queue order, at least one, within the count and byte bounds."""
        batch: list[_Waiter[T]] = []
        size = 0
        while self.waiting and len(batch) < config.max_count:
            waiter = self.waiting[0]
            if batch and size + waiter.size > config.max_bytes:
                break
            self.waiting.popleft()
            waiter.taken = True
            size += waiter.size
            batch.append(waiter)
        self.waiting_bytes -= size
        return batch


def _copy_error(error: RocketError) -> RocketError:
    """The same error for another caller: same class, message and attributes, its own
    traceback (one instance raised in many tasks would chain their tracebacks)."""
    copy = error.__class__.__new__(error.__class__)
    copy.args = error.args
    copy.__dict__.update(error.__dict__)
    return copy


class Batcher(Generic[T]):
    """The lanes of one producer; ``send`` is what its send path calls per attempt."""

    def __init__(
        self,
        nursery: trio.Nursery,
        exchange: Exchange[T],
        config: BatchConfig,
        *,
        batch_queue: BatchQueue | None = None,
    ) -> None:
        self.config = config
        self._nursery = nursery
        self._exchange = exchange
        self._batch_queue = batch_queue
        self._lanes: dict[tuple[str, str, int], _Lane[T]] = {}
        self.waiting_bytes = 0
        #: The callers waiting for an outcome, in arrival order (answered ones leave from
        #: the front; an answered caller drops its message and result, so those queued
        #: behind a slow one hold neither); the deadline keeper wakes at ``_wake_at``,
        #: never after the soonest deadline.
        self._timed: deque[_Waiter[T]] = deque()
        self._wake_at = math.inf
        self._keeper: trio.CancelScope | None = None

    def waiting_messages(self) -> int:
        return sum(len(lane.waiting) for lane in self._lanes.values())

    def send(
        self, addr: str, queue: MessageQueue, item: T, size: int, deadline: float, *, ordered: bool
    ) -> Awaitable[SendResult]:
        """Send ``item`` to ``queue`` at ``addr``, alone or with others (module rules).

        Not a coroutine itself: it decides at once and hands back the coroutine to await
        (``_alone``'s or ``_queued``'s), so a caller's wake-up passes one frame less.
        """
        lane = self._lane(addr, queue, ordered)
        if lane.idle() or (not ordered and self.waiting_bytes + size > self.config.total_max_bytes):
            return self._alone(lane, queue, item, deadline)
        return self._queued(lane, queue, item, size, deadline)

    async def _queued(
        self, lane: _Lane[T], queue: MessageQueue, item: T, size: int, deadline: float
    ) -> SendResult:
        """Wait in ``lane`` for a batch to carry ``item`` (or to be sent alone after all)."""
        addr = lane.addr
        waiter = _Waiter(item, queue, size, deadline)
        lane.waiting.append(waiter)
        lane.waiting_bytes += size
        self.waiting_bytes += size
        self._kick(lane)
        self._keep_deadline(waiter)
        try:
            await _park(waiter.abort)
        finally:
            waiter.task = None  # answered, or given up: either way no longer timed
            waiter.item = None  # the request holds it while it needs it; the list does not
            if not waiter.taken:  # cancelled or past its deadline: never sent
                lane.waiting.remove(waiter)
                lane.waiting_bytes -= size
                self.waiting_bytes -= size
            timed = self._timed
            while timed and timed[0].task is None:
                timed.popleft()
            if not timed and self._keeper is not None:
                self._keeper.cancel()  # nothing left to time: the keeper ends
        if waiter.alone:
            return await self._alone(lane, queue, item, deadline)
        if waiter.error is not None:
            raise waiter.error
        result = waiter.result
        if result is None:
            raise RemotingTimeout(f"send to {queue.topic} at {addr} got no answer in time")
        waiter.result = None  # held only by the deadline list from here
        return result

    def _keep_deadline(self, waiter: _Waiter[T]) -> None:
        """List ``waiter`` for the deadline keeper; wake it sooner if this one is sooner."""
        self._timed.append(waiter)
        if waiter.deadline < self._wake_at:
            self._wake_at = waiter.deadline
            if self._keeper is None:
                self._keeper = trio.CancelScope(deadline=waiter.deadline)
                self._nursery.start_soon(self._keep_deadlines, self._keeper)
            else:
                self._keeper.deadline = waiter.deadline

    async def _keep_deadlines(self, keeper: trio.CancelScope) -> None:
        """Answer every caller still waiting at its deadline (with no result: a timeout);
        end when none waits (the next caller starts a keeper again)."""
        while True:
            with keeper:
                await trio.sleep_forever()
            now = trio.current_time()
            soonest = math.inf
            for waiter in self._timed:
                if waiter.task is None:
                    continue
                if waiter.deadline <= now:
                    waiter.wake()  # its caller withdraws its message or hears RemotingTimeout
                else:
                    soonest = min(soonest, waiter.deadline)
            self._wake_at = soonest
            if soonest == math.inf:
                self._keeper = None
                return
            keeper = self._keeper = trio.CancelScope(deadline=soonest)

    def _lane(self, addr: str, queue: MessageQueue, ordered: bool) -> _Lane[T]:
        key = (addr, queue.topic, queue.queue_id if ordered else -1)
        lane = self._lanes.get(key)
        if lane is None:
            if len(self._lanes) >= MAX_IDLE_LANES:
                self._lanes = {k: v for k, v in self._lanes.items() if not v.idle()}
            lane = self._lanes[key] = _Lane(addr=addr, ordered=ordered)
        return lane

    async def _alone(
        self, lane: _Lane[T], queue: MessageQueue, item: T, deadline: float
    ) -> SendResult:
        """Send one item at once, in the caller's task (counted as in flight on its lane)."""
        lane.in_flight += 1
        try:
            (result,) = await self._exchange(lane.addr, queue, [item], deadline)
            return result
        finally:
            self._landed(lane)

    def _landed(self, lane: _Lane[T]) -> None:
        lane.in_flight -= 1
        if lane.waiting or lane.flushing:  # else ``_kick`` finds nothing to do
            self._kick(lane)

    def _kick(self, lane: _Lane[T]) -> None:
        """Make what waits in ``lane`` leave when it may."""
        if lane.flushing:
            lane.wake.set()
        elif lane.may_send(self.config):
            lane.flushing = True
            self._nursery.start_soon(self._flush, lane)

    async def _flush(self, lane: _Lane[T]) -> None:
        """Send the lane's waiting messages, batch after batch, while any wait."""
        try:
            while lane.waiting:
                if not lane.may_send(self.config):
                    lane.wake = trio.Event()
                    await lane.wake.wait()
                    continue
                batch = lane.take(self.config)
                # Taken now: a caller cancelled from here on drops its own reference.
                items: list[T] = [w.item for w in batch]  # type: ignore[misc]
                self.waiting_bytes -= sum(w.size for w in batch)
                lane.in_flight += 1
                if lane.ordered:
                    await self._request(lane, batch, items)
                else:
                    self._nursery.start_soon(self._request, lane, batch, items)
        finally:
            lane.flushing = False

    async def _request(self, lane: _Lane[T], batch: list[_Waiter[T]], items: list[T]) -> None:
        deadline = max(w.deadline for w in batch)
        queue = batch[0].queue
        if len(batch) > 1 and not lane.ordered and self._batch_queue is not None:
            queue = self._batch_queue(queue)
        try:
            results = await self._exchange(lane.addr, queue, items, deadline)
        except RocketError as exc:
            alone = len(batch) > 1 and not exc.retriable
            if alone:
                log.info("a batch of %d was refused (%s); each is sent alone", len(batch), exc)
            for waiter in batch:
                if waiter.task is not None:
                    waiter.alone = alone
                    waiter.error = _copy_error(exc)
                    waiter.wake()
        else:
            # One pass over the batch's callers: each woken straight (no event, no lock).
            for waiter, result in zip(batch, results, strict=True):
                task = waiter.task
                if task is not None:
                    waiter.task = None
                    waiter.result = result
                    _reschedule(task)
        finally:
            for waiter in batch:
                if waiter.task is not None:  # cancelled: the producer is closing
                    waiter.error = ConnectionLost("the producer closed with this send in flight")
                    waiter.wake()
            self._landed(lane)
