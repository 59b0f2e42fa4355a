"""``LitePullConsumer``: rebalanced like a push consumer, but the application calls ``poll``.

Rules:
- Messages a ``poll`` returned count as processed at the next ``poll`` or ``commit``, or
  when the ``async with`` block exits cleanly; only then may their offsets be committed.
- Batches wait in a bounded channel; ``max_inflight_per_queue`` bounds what is buffered
  or polled and unfinished per queue.
"""

from __future__ import annotations

from collections import deque

import trio

from client.consumer.rebalancing import _Batch, _chunks, _QueueState, _RebalancingConsumer
from client.consumer.types import ConsumerConfig
from client.message import ReceivedMessage
from client.routes import RouteCache
from protocol.bodies import CONSUME_ACTIVELY
from protocol.rpc import RemotingClient


class LitePullConsumer(_RebalancingConsumer):
    """Rebalanced like a push consumer, but the application calls ``poll``.

    Messages returned by ``poll`` count as processed when ``poll`` (or ``commit``) is
    called again, or when the ``async with`` block exits without an exception; their
    offsets are then committed at the next persist interval, or at once by ``commit``.
    """

    consume_type = CONSUME_ACTIVELY

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        config: ConsumerConfig,
        *,
        client_id: str,
        nursery: trio.Nursery,
        poll_batch_size: int,
    ) -> None:
        super().__init__(client, routes, config, client_id=client_id, nursery=nursery)
        assert poll_batch_size > 0
        self.poll_batch_size = poll_batch_size
        self._send, self._receive = trio.open_memory_channel[_Batch](config.buffered_batches)
        self._leftover: deque[tuple[_QueueState, int, ReceivedMessage]] = deque()
        self._polled: list[tuple[_QueueState, int, ReceivedMessage]] = []

    def _waiting_batches(self) -> int:
        return self._send.statistics().current_buffer_used

    async def _deliver(
        self, state: _QueueState, generation: int, messages: list[ReceivedMessage]
    ) -> None:
        for chunk in _chunks(messages, self.poll_batch_size):
            await self._send.send(_Batch(state, generation, chunk))

    def _finish_polled(self) -> None:
        polled, self._polled = self._polled, []
        for state, generation, message in polled:
            self._finish(state, generation, [message])
            self.consumed_ok += 1

    def _before_final_commit(self, finish_polled: bool) -> None:
        if finish_polled:
            self._finish_polled()

    def _take(self, batch: _Batch) -> None:
        if batch.state.active:
            self._leftover.extend((batch.state, batch.generation, m) for m in batch.messages)

    def _live_leftover(self) -> bool:
        while self._leftover and not self._leftover[0][0].active:
            self._leftover.popleft()
        return bool(self._leftover)

    async def poll(self, timeout_s: float = 5.0) -> list[ReceivedMessage]:
        """Up to ``poll_batch_size`` messages; [] when none came within ``timeout_s``.

        Calling it counts the messages of the previous poll as processed.
        """
        self._finish_polled()
        if self._stopping:
            return []
        with trio.move_on_after(timeout_s):
            while not self._live_leftover():
                self._take(await self._receive.receive())
        while len(self._leftover) < self.poll_batch_size:
            try:
                self._take(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        out: list[tuple[_QueueState, int, ReceivedMessage]] = []
        while self._live_leftover() and len(out) < self.poll_batch_size:
            out.append(self._leftover.popleft())
        self._polled = out
        return [m for _, _, m in out]

    async def commit(self) -> None:
        """Count everything polled so far as processed and commit the offsets now."""
        self._finish_polled()
        await self.persist_offsets()
