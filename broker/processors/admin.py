"""Administration and queries: topics, subscription groups, stats, QUERY_MESSAGE, VIEW_MESSAGE_BY_ID.

Rules (reference/rocketmq-wire.md §2.5, §2.15; AdminBrokerProcessor.java):
- Topic and group changes are persisted before they are answered (concurrent ones share
  one write, off the event loop: ``broker/persistence.py``), and topic changes are
  announced to the NameServers first too (one registration round serves a burst:
  ``broker/registration.py``; a NameServer that does not answer in time delays nothing
  past ``request_timeout_s``, the round goes on).
- Bodies RocketMQ keys by MessageQueue objects (TopicStatsTable, ConsumeStats) cannot be
  standard JSON; we send them as lists of ``{"messageQueue": {...}, ...}`` entries, which
  our SDK reads (documented deviation: Java's mqadmin cannot parse these two bodies).
- QUERY_MESSAGE answers the records byte for byte, at most ``maxMsgsNumBatch`` (32 by
  UNIQ_KEY, ``defaultQueryMaxNum``); nothing found is QUERY_NOT_FOUND.
- Per-queue loops (stats) run over the topic's queues, at most ``maxTopicQueueNums``;
  queue counts are checked where topics are created (``broker/topics.py``).
- GET_ALL_CONSUMER_OFFSET / GET_ALL_DELAY_OFFSET are what a slave copies from its master
  (``broker/slavesync.py``): standard JSON, integer keys as strings. GET_BROKER_HA_STATUS
  (907) answers RocketMQ's HARuntimeInfo field names (``mqadmin haStatus``).
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from broker.clients import ConsumerManager
from broker.clock import Clock
from broker.config import BrokerConfig
from broker.groups import SubscriptionGroupManager
from broker.longpoll import PullHoldService
from broker.offsets import ConsumerOffsetManager
from broker.persistence import MetadataFiles
from broker.processors.stats import consume_stats_json
from broker.registration import NameServerRegistrar
from broker.role import RoleState
from broker.schedule import ScheduleService
from broker.store.store import MessageStore
from broker.topics import TopicConfigManager
from protocol.bodies import ConsumerConnection, SubscriptionGroupConfig
from protocol.codes import PERM_INHERIT, PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import InvalidParameter, MissingHeaderField, QueryNotFound, TopicNotExist
from protocol.headers import (
    CreateTopicRequestHeader,
    DeleteSubscriptionGroupRequestHeader,
    DeleteTopicRequestHeader,
    GetConsumeStatsRequestHeader,
    GetTopicStatsInfoRequestHeader,
    QueryMessageRequestHeader,
    QueryMessageResponseHeader,
    ViewMessageRequestHeader,
)
from protocol.route import TopicConfig, dumps_json
from protocol.rpc import Connection, Handler
from protocol.topic_attributes import AttributeError_, apply_changes

#: QUERY_MESSAGE by UNIQ_KEY returns at most this many (RocketMQ defaultQueryMaxNum).
QUERY_MAX_NUM = 32


def _mq(topic: str, broker_name: str, queue_id: int) -> dict[str, Any]:
    return {"brokerName": broker_name, "queueId": queue_id, "topic": topic}


class BrokerForAdmin(Protocol):
    """What ``AdminProcessor`` uses of its broker (``Broker`` satisfies it structurally)."""

    @property
    def config(self) -> BrokerConfig: ...
    @property
    def role(self) -> RoleState: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def groups(self) -> SubscriptionGroupManager: ...
    @property
    def metadata(self) -> MetadataFiles: ...
    @property
    def registrar(self) -> NameServerRegistrar: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def consumers(self) -> ConsumerManager: ...
    @property
    def pull_holds(self) -> PullHoldService: ...
    @property
    def schedule(self) -> ScheduleService: ...
    @property
    def store(self) -> MessageStore: ...
    def topic_changed(self) -> None: ...
    def ha_runtime_body(self) -> bytes: ...


class AdminProcessor:
    def __init__(self, broker: BrokerForAdmin, *, clock: Clock) -> None:
        self.broker = broker
        self._clock = clock

    @property
    def store(self) -> MessageStore:
        return self.broker.store

    def handlers(self) -> dict[int, Handler]:
        return {
            RequestCode.UPDATE_AND_CREATE_TOPIC: self.create_topic,
            RequestCode.DELETE_TOPIC_IN_BROKER: self.delete_topic,
            RequestCode.GET_ALL_TOPIC_CONFIG: self.all_topic_config,
            RequestCode.GET_ALL_CONSUMER_OFFSET: self.all_consumer_offsets,
            RequestCode.GET_ALL_DELAY_OFFSET: self.all_delay_offsets,
            RequestCode.GET_BROKER_HA_STATUS: self.ha_status,
            RequestCode.GET_TOPIC_STATS_INFO: self.topic_stats,
            RequestCode.GET_CONSUME_STATS: self.consume_stats,
            RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: self.update_group,
            RequestCode.DELETE_SUBSCRIPTIONGROUP: self.delete_group,
            RequestCode.GET_SUBSCRIPTIONGROUP_CONFIG: self.get_group,
            RequestCode.GET_TOPIC_CONFIG: self.get_topic_config,
            RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG: self.all_groups,
            RequestCode.GET_CONSUMER_CONNECTION_LIST: self.consumer_connections,
            RequestCode.QUERY_MESSAGE: self.query_message,
            RequestCode.VIEW_MESSAGE_BY_ID: self.view_message,
        }

    # --- topics ----------------------------------------------------------------------

    async def create_topic(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = CreateTopicRequestHeader.from_ext_fields(request.ext_fields)
        if h.read_queue_nums <= 0 or h.write_queue_nums <= 0:
            raise InvalidParameter(
                f"queue nums must be positive (read {h.read_queue_nums}, "
                f"write {h.write_queue_nums})"
            )
        if h.perm & ~(PERM_READ | PERM_WRITE | PERM_INHERIT | 0x8):
            raise InvalidParameter(f"perm {h.perm} has unknown bits")
        existing = self.broker.topics.get(h.topic)
        try:
            attributes = apply_changes(existing.attributes if existing else {}, h.attributes)
        except AttributeError_ as exc:
            raise InvalidParameter(str(exc)) from None
        config = TopicConfig(
            topic_name=h.topic,
            read_queue_nums=h.read_queue_nums,
            write_queue_nums=h.write_queue_nums,
            perm=h.perm,
            topic_filter_type=h.topic_filter_type or "SINGLE_TAG",
            topic_sys_flag=h.topic_sys_flag or 0,
            order=h.order,
            attributes=attributes,
        )
        changed = self.broker.topics.create_or_update(config, now_ms=self._clock.wall_ms())
        if changed:
            self.broker.topic_changed()
        await self._topics_persisted(announce=changed)
        return request.respond()

    async def delete_topic(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = DeleteTopicRequestHeader.from_ext_fields(request.ext_fields)
        deleted = self.broker.topics.delete(h.topic, now_ms=self._clock.wall_ms()) is not None
        if deleted:
            self.broker.offsets.remove_topic(h.topic)
            self.broker.topic_changed()
        await self._topics_persisted(announce=deleted)
        return request.respond()

    async def _topics_persisted(self, *, announce: bool) -> None:
        """The topic table is on disk and, after a change of this request, announced
        (waiting at most ``request_timeout_s`` for the NameServers)."""
        broker = self.broker
        round_number = broker.registrar.next_round()  # taken before anything awaits
        await broker.metadata.persisted(broker.metadata.topics)
        if announce:
            with trio.move_on_after(broker.config.request_timeout_s):
                await broker.registrar.announced(round_number)

    async def get_topic_config(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        """GET_TOPIC_CONFIG (351): one topic's config (its attributes: message types)."""
        topic = request.ext_fields.get("topic")
        if not topic:
            raise MissingHeaderField("required header field 'topic' is missing")
        config = self.broker.topics.get(topic)
        if config is None:
            raise TopicNotExist(f"No topic {topic} in this broker")
        return request.respond(body=dumps_json(config.to_json()))

    async def all_topic_config(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(body=self.broker.topics.snapshot().to_bytes())

    async def all_consumer_offsets(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        return request.respond(body=dumps_json(self.broker.offsets.offset_table_json()))

    async def all_delay_offsets(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        return request.respond(body=dumps_json(self.broker.schedule.offset_table_json()))

    async def ha_status(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(body=self.broker.ha_runtime_body())

    # --- stats -----------------------------------------------------------------------

    async def topic_stats(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = GetTopicStatsInfoRequestHeader.from_ext_fields(request.ext_fields)
        config = self.broker.topics.get(h.topic)
        if config is None:
            raise TopicNotExist(f"topic[{h.topic}] not exist")
        entries = []
        for queue_id in range(max(config.read_queue_nums, config.write_queue_nums)):
            max_offset = self.store.max_offset(h.topic, queue_id)
            last = (
                self.store.store_time_at(h.topic, queue_id, max_offset - 1) if max_offset else None
            )
            entries.append(
                {
                    "messageQueue": _mq(h.topic, self.broker.config.broker_name, queue_id),
                    "minOffset": self.store.min_offset(h.topic, queue_id),
                    "maxOffset": max_offset,
                    "lastUpdateTimestamp": last or 0,
                }
            )
        return request.respond(body=dumps_json({"offsetTable": entries}))

    async def consume_stats(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = GetConsumeStatsRequestHeader.from_ext_fields(request.ext_fields)
        broker = self.broker
        topics = [h.topic] if h.topic else broker.offsets.topics_of_group(h.consumer_group)
        entries: list[dict[str, Any]] = []
        for topic in topics:
            stats = consume_stats_json(broker, h.consumer_group, topic, consume_tps=0.0)
            entries += stats["offsetTable"] if stats is not None else []
        return request.respond(body=dumps_json({"consumeTps": 0.0, "offsetTable": entries}))

    # --- subscription groups -----------------------------------------------------------

    async def update_group(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        config = SubscriptionGroupConfig.from_bytes(request.body)
        if self.broker.groups.update(config, now_ms=self._clock.wall_ms()):
            self.broker.metadata.groups.changed()
        await self._groups_persisted()
        return request.respond()

    async def delete_group(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = DeleteSubscriptionGroupRequestHeader.from_ext_fields(request.ext_fields)
        if self.broker.groups.delete(h.group_name, now_ms=self._clock.wall_ms()) is not None:
            self.broker.metadata.groups.changed()
        if h.clean_offset:
            self.broker.offsets.remove_group(h.group_name)
        await self._groups_persisted()
        return request.respond()

    async def _groups_persisted(self) -> None:
        metadata = self.broker.metadata
        await metadata.persisted(metadata.groups)

    async def get_group(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        """GET_SUBSCRIPTIONGROUP_CONFIG (352). Unlike Java, asking never auto-creates."""
        group = request.ext_fields.get("group")
        if not group:
            raise MissingHeaderField(
                "required header field 'group' is missing for GET_SUBSCRIPTIONGROUP_CONFIG"
            )
        config = self.broker.groups.get(group)
        if config is None:
            return request.respond(
                ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST, f"No group {group} in this broker"
            )
        return request.respond(body=config.to_bytes())

    async def all_groups(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(body=self.broker.groups.snapshot().to_bytes())

    async def consumer_connections(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        group = request.ext_fields.get("consumerGroup", "")
        listing: ConsumerConnection | None = self.broker.consumers.consumer_connection(group)
        if listing is None:
            return request.respond(
                ResponseCode.CONSUMER_NOT_ONLINE, f"the consumer group[{group}] not online"
            )
        return request.respond(body=listing.to_bytes())

    # --- message queries -------------------------------------------------------------

    async def query_message(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = QueryMessageRequestHeader.from_ext_fields(request.ext_fields)
        max_num = min(h.max_num, self.broker.config.max_msgs_num_batch)
        if request.ext_fields.get("_UNIQUE_KEY_QUERY") == "true":
            max_num = min(max_num, QUERY_MAX_NUM)
        result = self.store.query_messages(
            h.topic, h.key, max(1, max_num), h.begin_timestamp, h.end_timestamp
        )
        if not result.records:
            raise QueryNotFound(f"can not find message by key {h.key!r} in topic {h.topic}")
        reply = QueryMessageResponseHeader(
            index_last_update_timestamp=result.index_last_update_timestamp_ms,
            index_last_update_phyoffset=result.index_last_update_phy_offset,
        )
        return request.respond(ext_fields=reply.to_ext_fields(), body=b"".join(result.records))

    async def view_message(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = ViewMessageRequestHeader.from_ext_fields(request.ext_fields)
        record = self.store.read_record(h.offset)
        if record is None:
            return request.respond(
                ResponseCode.SYSTEM_ERROR, f"can not find message by the offset, {h.offset}"
            )
        return request.respond(body=record)
