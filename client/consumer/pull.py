"""``PullConsumer``: pull exactly the queue and offset you name; offsets are yours to commit.

Rules:
- No membership, no rebalance, no heartbeat: pulls carry their subscription expression.
- Every call runs under a deadline (``timeout_s``, plus ``long_poll_s`` for a long poll).
- Pulls, offset reads and commits go to the queue's master, else to a slave of its group;
  a failed pull makes the route be read again.
- A record that cannot be decoded is skipped (``PullResult.skipped``), never raised:
  the offsets are the caller's, so sending it anywhere is the caller's choice too.
"""

from __future__ import annotations

from client.consumer.api import BrokerApi, _now_ms
from client.consumer.core import PULL_SUBSCRIPTION, PULL_SUSPEND
from client.consumer.types import MessageSelector, PullResult, subscription_of
from client.message import MAX_MESSAGE_BYTES
from client.offsets import BrokerOffsetStore
from client.routes import RouteCache
from protocol.errors import RocketError
from protocol.route import MessageQueue
from protocol.rpc import RemotingClient


class PullConsumer:
    """Pull exactly the queue and offset you name; offsets are yours to commit.

    It registers no membership with the brokers (nothing is rebalanced); pulls carry
    their subscription expression, so no heartbeat is needed. ``commit`` needs the group
    to exist on the broker (UPDATE_CONSUMER_OFFSET refuses unknown groups with
    ``SubscriptionGroupNotExist``); a pull creates it where the broker auto-creates groups.

    Failover: pulls, offset reads (``committed_offset``, ``max_offset``, ...) and commits
    go to the queue's master, else to a slave of its group (after a failure the route is
    read again). A slave's answers may lag the master's; ``committed_offset`` raises
    ``NetworkError`` rather than answer None when only a slave answered and it has no
    offset. A commit a slave took is overwritten by the master's value once the master is
    back: commit again then (``commit`` returns True once a master took it).
    """

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        *,
        group: str,
        timeout_s: float,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.group = group
        self.timeout_s = timeout_s
        self.routes = routes
        self.api = BrokerApi(client, routes, timeout_s, max_body_bytes=max_message_bytes)
        #: Undecodable or poisoned records skipped by ``pull`` (each also in its result).
        self.skipped_records = 0
        self._offsets = BrokerOffsetStore(client, routes, group=group, timeout_s=timeout_s)

    async def fetch_subscribe_queues(self, topic: str) -> list[MessageQueue]:
        """The readable queues of ``topic`` (route read from a NameServer now)."""
        info = await self.routes.refresh(topic)
        return sorted(info.subscribe)

    async def pull(
        self,
        queue: MessageQueue,
        offset: int,
        max_nums: int = 32,
        *,
        expression: str | MessageSelector = "*",
        timeout_s: float | None = None,
        long_poll_s: float = 0.0,
    ) -> PullResult:
        """Up to ``max_nums`` messages from ``offset``; ``long_poll_s`` > 0 waits for arrivals.

        The whole call has the deadline ``timeout_s`` (+ ``long_poll_s``). Records that
        cannot be decoded are left out, logged and listed in ``PullResult.skipped``;
        ``next_begin_offset`` is past them, so pulling on from it never meets them again.
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        subscription = subscription_of(queue.topic, expression, sub_version=_now_ms())
        flag = PULL_SUBSCRIPTION | (PULL_SUSPEND if long_poll_s > 0 else 0)
        try:
            result = await self.api.pull(
                queue,
                group=self.group,
                offset=offset,
                max_nums=max_nums,
                subscription=subscription,
                sys_flag=flag,
                suspend_s=long_poll_s,
                timeout_s=timeout_s,
            )
        except RocketError:
            self.routes.invalidate(queue.topic)
            raise
        self.skipped_records += len(result.skipped)
        return result

    async def committed_offset(self, queue: MessageQueue) -> int | None:
        """The group's committed offset of ``queue``; None when it has none."""
        return await self._offsets.read_stored(queue)

    async def commit(self, queue: MessageQueue, offset: int) -> bool:
        """Store ``offset`` (the next message to consume) as the group's offset of ``queue``.

        True when the master took it, False when only a slave could (master down).
        """
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        return await self._offsets.commit(queue, offset)

    async def max_offset(self, queue: MessageQueue) -> int:
        return await self.api.max_offset(queue)

    async def min_offset(self, queue: MessageQueue) -> int:
        return await self.api.min_offset(queue)

    async def search_offset(self, queue: MessageQueue, timestamp_ms: int) -> int:
        return await self.api.search_offset(queue, timestamp_ms)
