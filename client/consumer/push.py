"""``PushConsumer``: pulls for a listener, concurrently or orderly (one queue at a time).

Rules:
- Concurrent: ``consume_concurrency`` workers take batches from a bounded queue; a
  failed batch is sent back to ``%RETRY%<group>`` (or the DLQ after
  ``max_reconsume_times``), and consumed again locally when the send-back fails.
- The queue between pullers and workers is a deque, not a memory channel: a pull's
  batches go in with one ``extend``. Idle workers are woken one at a time: a worker that
  takes a batch while more wait wakes the next idle one (unless one is already waking)
  before it calls the listener. A listener that waits thus spreads the batches over the
  workers as fast as they suspend, and one that never waits has its worker take batch
  after batch without a task switch (a schedule point every ``_NOWAIT_RUN`` batches, so
  it cannot starve the pullers), instead of a wake-up per batch handed to each idle
  worker. A puller waits while ``buffered_batches`` or more wait, so the queue holds at
  most that plus one pull's batches per puller.
- Orderly: one listener call at a time per queue, the queue locked on its broker
  (LOCK_BATCH_MQ, renewed every ``lock_interval_s``); nothing after a failed batch runs
  until it succeeds or goes to the DLQ.
- Broadcasting never retries: failed messages are logged and skipped, as in RocketMQ.
"""

from __future__ import annotations

import logging
from collections import deque

import attrs
import trio

from client.consumer.rebalancing import _Batch, _chunks, _QueueState, _RebalancingConsumer, _Tracked
from client.consumer.types import ConsumerConfig, ConsumeResult, Listener
from client.message import ReceivedMessage
from client.routes import RouteCache
from protocol.bodies import CONSUME_PASSIVELY
from protocol.errors import RocketError
from protocol.group_topics import retry_topic
from protocol.route import MessageQueue
from protocol.rpc import RemotingClient

log = logging.getLogger(__name__)


#: A client considers its queue lock valid this long after the broker granted it
#: (RocketMQ's client-side REBALANCE_LOCK_MAX_LIVE_TIME; the broker keeps it 60 s).
LOCK_VALID_S = 30.0
#: A concurrent worker takes at most this many buffered batches in a row without yielding.
_NOWAIT_RUN = 32


class PushConsumer(_RebalancingConsumer):
    """Pulls for its listener; build it with ``open_push_consumer`` (module docstring)."""

    consume_type = CONSUME_PASSIVELY

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        config: ConsumerConfig,
        listener: Listener,
        *,
        client_id: str,
        nursery: trio.Nursery,
    ) -> None:
        super().__init__(client, routes, config, client_id=client_id, nursery=nursery)
        self._listener = listener
        #: Batches waiting for a worker (module rules), idle workers, pullers waiting for room.
        self._ready: deque[_Batch] = deque()
        self._idle = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        #: Workers woken and not yet running (at most one at a time: module rules).
        self._waking = 0

    def _balanced_topics(self) -> list[str]:
        topics = sorted(self._subscriptions)
        if self.clustering and topics:
            topics.append(retry_topic(self.group))
        return topics

    def _waiting_batches(self) -> int:
        return len(self._ready)

    async def start(self) -> None:
        if not self.config.orderly:
            for _ in range(self.config.consume_concurrency):
                self._nursery.start_soon(self._worker)
        await super().start()

    # --- the listener --------------------------------------------------------------------

    async def _call_listener(
        self, queue: MessageQueue, messages: list[ReceivedMessage]
    ) -> ConsumeResult:
        try:
            result: object = await self._listener(list(messages))
        except Exception:
            return self._listener_raised(queue, len(messages))
        return self._judged(result)

    def _listener_raised(self, queue: MessageQueue, count: int) -> ConsumeResult:
        """Called while the listener's exception is handled: log it; the batch is retried."""
        log.exception(
            "%s: listener raised on %d messages of %s; they will be retried",
            self.group,
            count,
            queue,
        )
        return ConsumeResult.RETRY

    def _judged(self, result: object) -> ConsumeResult:
        """What the listener returned, as a ``ConsumeResult`` (anything else: RETRY)."""
        if result is ConsumeResult.SUCCESS:
            return result
        if result is not ConsumeResult.RETRY:
            log.warning(
                "%s: listener returned %r, not a ConsumeResult; retrying", self.group, result
            )
        return ConsumeResult.RETRY

    async def _send_back(self, state: _QueueState, message: ReceivedMessage, *, dlq: bool) -> bool:
        """To %RETRY% (or the DLQ); False when the broker could not be told."""
        try:
            await self.api.send_back(
                state.queue,
                commit_log_offset=message.commit_log_offset,
                msg_id=message.msg_id,
                original_topic=message.original_topic,
                group=self.group,
                delay_level=-1 if dlq else 0,
                max_reconsume_times=self.config.max_reconsume_times,
            )
        except RocketError as exc:
            log.warning("%s: send-back of %s failed: %s", self.group, message.msg_id, exc)
            return False
        if dlq:
            self.dead_lettered += 1
        else:
            self.sent_back += 1
        return True

    async def _deliver(
        self, state: _QueueState, generation: int, messages: list[ReceivedMessage]
    ) -> None:
        if self.config.orderly:
            state.buffer.extend(messages)
            state.arrived.set()
            return
        await self._enqueue(
            [
                _Batch(state, generation, c)
                for c in _chunks(messages, self.config.consume_batch_size)
            ]
        )

    async def _enqueue(self, batches: list[_Batch]) -> None:
        """Queue ``batches`` for the workers at once, once there is room (module rules)."""
        ready = self._ready
        while len(ready) >= self.config.buffered_batches:
            await self._room.park()
        ready.extend(batches)
        self._wake_one()

    def _wake_one(self) -> None:
        """Wake an idle worker for what waits, unless one is waking already."""
        if not self._waking and self._idle:
            self._waking += len(self._idle.unpark())

    def _track(self, state: _QueueState) -> _Tracked:
        """Count a consume-and-settle section (shutdown and drops wait for these)."""
        return _Tracked(self._running, state.running)

    # --- concurrent mode -----------------------------------------------------------------

    async def _worker(self) -> None:
        ready, room, listener = self._ready, self._room, self._listener
        in_a_row = 0
        while True:
            # A batch already queued is taken without a schedule point; every _NOWAIT_RUN
            # batches the worker yields anyway, so a listener that never awaits cannot
            # keep the pullers from running.
            if not ready:
                in_a_row = 0
                await self._idle.park()  # cancelled while parked: never counted as waking
                self._waking -= 1
                continue
            if in_a_row >= _NOWAIT_RUN:
                in_a_row = 0
                await trio.lowlevel.checkpoint()
                continue
            in_a_row += 1
            batch = ready.popleft()
            if ready:
                self._wake_one()  # the next batch may be taken while this one is consumed
            if room and len(ready) < self.config.buffered_batches:
                room.unpark_all()
            if not batch.state.active or self._stopping:
                continue  # redelivered to whoever owns the queue next
            # What _track counts, without an object per batch.
            state = batch.state
            running, queue_running = self._running, state.running
            running.inc()
            queue_running.inc()
            try:
                # _call_listener written in: no coroutine of ours between the listener and
                # this loop on the way of every message.
                messages = batch.messages
                try:
                    result: object = await listener(list(messages))
                except Exception:
                    result = self._listener_raised(state.queue, len(messages))
                if result is ConsumeResult.SUCCESS:
                    self.consumed_ok += len(messages)
                    self._finish(state, batch.generation, messages)
                else:
                    self._judged(result)  # logs an answer that is not a ConsumeResult
                    await self._consume_failed(batch)
            finally:
                running.dec()
                queue_running.dec()

    async def _consume_failed(self, batch: _Batch) -> None:
        """A batch the listener did not consume: sent back, or redelivered locally."""
        state = batch.state
        if not self.clustering:
            log.warning(
                "%s: broadcasting, %d failed messages of %s are dropped",
                self.group,
                len(batch.messages),
                state.queue,
            )
            self._finish(state, batch.generation, batch.messages)
            return
        failed: list[ReceivedMessage] = []
        for message in batch.messages:
            dlq = message.reconsume_times >= self.config.max_reconsume_times
            if await self._send_back(state, message, dlq=dlq):
                self._finish(state, batch.generation, [message])
            else:
                failed.append(message)
        if failed:
            self._nursery.start_soon(self._redeliver_later, _Batch(state, batch.generation, failed))

    async def _redeliver_later(self, batch: _Batch) -> None:
        with trio.move_on_after(self.config.retry_backoff_s):
            await batch.state.stopped.wait()
        if not batch.state.active or self._stopping:
            return
        again = [attrs.evolve(m, reconsume_times=m.reconsume_times + 1) for m in batch.messages]
        self.redelivered_locally += len(again)
        await self._enqueue([_Batch(batch.state, batch.generation, again)])

    # --- orderly mode --------------------------------------------------------------------

    def _start_queue_tasks(self, nursery: trio.Nursery, state: _QueueState) -> None:
        if self.config.orderly:
            nursery.start_soon(self._orderly_loop, state)

    def _start_services(self, nursery: trio.Nursery) -> None:
        if self.config.orderly and self.clustering:
            nursery.start_soon(self._every, self.config.lock_interval_s, self._renew_locks)

    async def _prepare_queue(self, queue: MessageQueue) -> float | None:
        if not (self.config.orderly and self.clustering):
            return 0.0
        now_s = trio.current_time()
        if not (await self.api.lock(self.group, self.client_id, [queue])).get(queue):
            log.info("%s: %s is locked by another consumer; retrying", self.group, queue)
            return None
        return now_s + LOCK_VALID_S

    async def _renew_locks(self) -> None:
        """Lock every owned queue again; a queue its broker refused stops being consumed."""
        states = list(self._queues.values())
        if not states:
            return
        now_s = trio.current_time()
        answer = await self.api.lock(self.group, self.client_id, [s.queue for s in states])
        for state in states:
            held = answer.get(state.queue)
            if held:
                state.lock_valid_until = now_s + LOCK_VALID_S
            elif held is not None:
                log.warning("%s: lost the lock of %s", self.group, state.queue)
                state.lock_valid_until = 0.0

    async def _released(self, states: list[_QueueState]) -> None:
        if self.config.orderly and self.clustering and states:
            await self.api.unlock(self.group, self.client_id, [s.queue for s in states])

    async def _pause(self, state: _QueueState, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await state.stopped.wait()

    def _halted(self, state: _QueueState) -> bool:
        return self._stopping or not state.active

    async def _hold_lock(self, state: _QueueState) -> bool:
        """Clustering: make sure our lock of the queue is valid (lock it again if needed)."""
        if not self.clustering:
            return True
        now_s = trio.current_time()
        if state.locked(now_s):
            return True
        if (await self.api.lock(self.group, self.client_id, [state.queue])).get(state.queue):
            state.lock_valid_until = now_s + LOCK_VALID_S
            return True
        return False

    async def _orderly_loop(self, state: _QueueState) -> None:
        """Consume the queue's messages one batch at a time, each until it is settled."""
        config = self.config
        while not self._halted(state):
            if not state.buffer:
                state.arrived = trio.Event()
                await state.arrived.wait()
                continue
            if not await self._hold_lock(state):
                await self._pause(state, config.orderly_suspend_s)
                continue
            generation = state.tracker.generation
            size = min(config.consume_batch_size, len(state.buffer))
            batch = [state.buffer.popleft() for _ in range(size)]
            while True:
                with self._track(state):
                    settled = await self._consume_orderly(state, batch)
                if settled:
                    self._finish(state, generation, batch)
                    break
                # Nothing after this batch runs until it is settled: that is the order.
                batch = [attrs.evolve(m, reconsume_times=m.reconsume_times + 1) for m in batch]
                self.redelivered_locally += len(batch)
                await self._pause(state, config.orderly_suspend_s)
                while not self._halted(state) and not await self._hold_lock(state):
                    await self._pause(state, config.orderly_suspend_s)
                if self._halted(state):
                    return  # unsettled: not committed, consumed again by the next owner

    async def _consume_orderly(self, state: _QueueState, batch: list[ReceivedMessage]) -> bool:
        """True when the batch is settled (consumed, or dead-lettered after its retries)."""
        if await self._call_listener(state.queue, batch) is ConsumeResult.SUCCESS:
            self.consumed_ok += len(batch)
            return True
        if any(m.reconsume_times < self.config.max_reconsume_times for m in batch):
            return False
        if not self.clustering:
            log.warning("%s: broadcasting, dropping %d failed messages", self.group, len(batch))
            return True
        for message in batch:
            if not await self._send_back(state, message, dlq=True):
                return False
        return True
