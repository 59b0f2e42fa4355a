"""Consumer offsets and queue offsets: codes 14, 15, 29, 30, 31, 32.

Rules (reference/rocketmq-wire.md §2.6–§2.7; ConsumerManageProcessor.java):
- QUERY_CONSUMER_OFFSET: a stored offset wins; otherwise, when the client allows it and
  the queue still holds its first message, 0 (so a new group on a young queue starts at
  the beginning); otherwise QUERY_NOT_FOUND and the client applies its consumeFromWhere.
- UPDATE_CONSUMER_OFFSET needs a known group (26) and topic (17), and ignores negative
  commits (ali-ons sends -1 for idle queues).
- Every queue id is checked against its topic (``broker/processors/checks.py``): a queue
  the topic does not have (and that holds no messages: a shrunk topic's old queues are
  still committed to while consumers drain them) is INVALID_PARAMETER, and an update for
  one stores nothing.
  Read-only queries on a topic this broker does not have answer 0, as RocketMQ does.
- A slave answers QUERY_CONSUMER_OFFSET from the table it copies from its master, and
  takes UPDATE_CONSUMER_OFFSET as RocketMQ's slaves do: clients that commit to a slave
  while the master is gone keep their progress there. The master's values overwrite such
  commits at the next metadata sync once it is back (``broker/slavesync.py``); the PULL
  piggy-backed commit is honoured on a master only (PullMessageProcessor).
"""

from __future__ import annotations

from typing import Protocol

from broker.config import BrokerConfig
from broker.groups import SubscriptionGroupManager
from broker.offsets import ConsumerOffsetManager
from broker.processors.checks import check_queue_id
from broker.store.consumequeue import BoundaryType
from broker.store.store import MessageStore
from broker.topics import TopicConfigManager
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import QueryNotFound
from protocol.headers import (
    GetEarliestMsgStoretimeRequestHeader,
    GetEarliestMsgStoretimeResponseHeader,
    GetMaxOffsetRequestHeader,
    GetMinOffsetRequestHeader,
    OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader,
    SearchOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader,
)
from protocol.rpc import Connection, Handler


def _offset_reply(request: RemotingCommand, offset: int) -> RemotingCommand:
    return request.respond(ext_fields=OffsetResponseHeader(offset=offset).to_ext_fields())


class BrokerForOffsets(Protocol):
    """What ``OffsetProcessor`` uses of its broker (``Broker`` satisfies it structurally)."""

    @property
    def config(self) -> BrokerConfig: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def groups(self) -> SubscriptionGroupManager: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def store(self) -> MessageStore: ...


class OffsetProcessor:
    def __init__(self, broker: BrokerForOffsets) -> None:
        self.broker = broker

    @property
    def store(self) -> MessageStore:
        return self.broker.store

    def _check_queue(self, topic: str, queue_id: int) -> None:
        broker = self.broker
        check_queue_id(
            topic,
            broker.topics.get(topic),
            queue_id,
            max_queue_nums=broker.config.max_topic_queue_nums,
            retained=self.store.max_offset(topic, queue_id) > 0,
        )

    def handlers(self) -> dict[int, Handler]:
        return {
            RequestCode.QUERY_CONSUMER_OFFSET: self.query_consumer_offset,
            RequestCode.UPDATE_CONSUMER_OFFSET: self.update_consumer_offset,
            RequestCode.GET_MAX_OFFSET: self.get_max_offset,
            RequestCode.GET_MIN_OFFSET: self.get_min_offset,
            RequestCode.SEARCH_OFFSET_BY_TIMESTAMP: self.search_offset,
            RequestCode.GET_EARLIEST_MSG_STORETIME: self.earliest_store_time,
        }

    async def query_consumer_offset(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        h = QueryConsumerOffsetRequestHeader.from_ext_fields(request.ext_fields)
        self._check_queue(h.topic, h.queue_id)
        stored = self.broker.offsets.query(h.topic, h.consumer_group, h.queue_id)
        if stored is not None and stored >= 0:
            return _offset_reply(request, stored)
        # Java also asks the message at offset 0 to be in memory; an empty queue has none,
        # so a new group on it gets QUERY_NOT_FOUND and applies its consumeFromWhere.
        young = (
            self.store.min_offset(h.topic, h.queue_id) <= 0
            and self.store.max_offset(h.topic, h.queue_id) > 0
        )
        if h.set_zero_if_not_found is not False and young:
            return _offset_reply(request, 0)
        raise QueryNotFound(
            f"Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first "
            f"(group {h.consumer_group}, topic {h.topic}, queue {h.queue_id})"
        )

    async def update_consumer_offset(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        h = UpdateConsumerOffsetRequestHeader.from_ext_fields(request.ext_fields)
        if self.broker.groups.get(h.consumer_group) is None:
            # Java checks containsSubscriptionGroup: a commit never creates a group.
            return request.respond(
                ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST, f"Group {h.consumer_group} not exist!"
            )
        if self.broker.topics.get(h.topic) is None:
            return request.respond(
                ResponseCode.TOPIC_NOT_EXIST, f"topic[{h.topic}] not exist, apply first please!"
            )
        self._check_queue(h.topic, h.queue_id)
        if h.commit_offset >= 0:
            self.broker.offsets.commit(h.topic, h.consumer_group, h.queue_id, h.commit_offset)
        return request.respond()

    async def get_max_offset(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = GetMaxOffsetRequestHeader.from_ext_fields(request.ext_fields)
        self._check_queue(h.topic, h.queue_id)
        return _offset_reply(request, self.store.max_offset(h.topic, h.queue_id))

    async def get_min_offset(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = GetMinOffsetRequestHeader.from_ext_fields(request.ext_fields)
        self._check_queue(h.topic, h.queue_id)
        return _offset_reply(request, self.store.min_offset(h.topic, h.queue_id))

    async def search_offset(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = SearchOffsetRequestHeader.from_ext_fields(request.ext_fields)
        self._check_queue(h.topic, h.queue_id)
        boundary = (
            BoundaryType.UPPER if (h.boundary_type or "").lower() == "upper" else BoundaryType.LOWER
        )
        offset = self.store.offset_by_time(h.topic, h.queue_id, h.timestamp, boundary)
        return _offset_reply(request, offset)

    async def earliest_store_time(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        h = GetEarliestMsgStoretimeRequestHeader.from_ext_fields(request.ext_fields)
        self._check_queue(h.topic, h.queue_id)
        timestamp = self.store.earliest_store_time_ms(h.topic, h.queue_id)
        reply = GetEarliestMsgStoretimeResponseHeader(timestamp=max(timestamp, 0))
        return request.respond(ext_fields=reply.to_ext_fields())
