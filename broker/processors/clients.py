"""Client registry requests: HEART_BEAT (34), UNREGISTER_CLIENT (35),
GET_CONSUMER_LIST_BY_GROUP (38), LOCK_BATCH_MQ (41), UNLOCK_BATCH_MQ (42), CHECK_CLIENT_CONFIG (46).

Rules (reference/rocketmq-wire.md §2.8–§2.9, §2.12; ClientManageProcessor.java):
- A consumer heartbeat creates the group (when allowed) and its ``%RETRY%<group>`` topic,
  registers the member on this connection, and a membership change sends
  NOTIFY_CONSUMER_IDS_CHANGED to every member. A consumer of a group that does not exist
  and may not be created is skipped, the rest of the heartbeat still succeeds (as Java).
- Broadcasting consumers get no retry topic (their failures are not retried by the broker).
- A heartbeat that created a retry topic is answered once a registration round announced
  it (waiting at most ``request_timeout_s``), as Java's heartbeat registers the new topic
  before it returns: clients look ``%RETRY%<group>`` up right after their heartbeat, and
  the NameServer registrations of a burst of changes are spaced out
  (``broker/registration.py``).
- GET_CONSUMER_LIST_BY_GROUP with no live member answers SYSTEM_ERROR, as RocketMQ does.
- Sizes are bounded before anything is registered or locked: a heartbeat with more than
  ``maxHeartbeatGroups`` groups or ``maxHeartbeatSubscriptions`` subscriptions, and a lock
  or unlock body with more than ``maxLockBatchQueues`` queues, are INVALID_PARAMETER. A
  lock names queues of topics this broker has: a queue id the topic does not have is
  INVALID_PARAMETER, a topic it does not have is not locked (not in ``lockOKMQSet``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import trio

from broker.clients import ClientConnection, ClientManager, ConsumerManager, Notify
from broker.clock import Clock
from broker.config import BrokerConfig
from broker.filtering import FilterCache
from broker.locks import RebalanceLockManager
from broker.processors.checks import check_count, check_queue_id
from broker.registration import NameServerRegistrar
from broker.topics import TopicConfigManager
from protocol.bodies import (
    BROADCASTING,
    EXPRESSION_TAG,
    CheckClientRequestBody,
    ConsumerListBody,
    HeartbeatData,
    LockBatchRequestBody,
    LockBatchResponseBody,
    SubscriptionGroupConfig,
    UnlockBatchRequestBody,
)
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import InvalidParameter
from protocol.headers import GetConsumerListByGroupRequestHeader, UnregisterClientRequestHeader
from protocol.route import MessageQueue, TopicConfig
from protocol.rpc import Connection, Handler

log = logging.getLogger(__name__)


class BrokerForClients(Protocol):
    """What ``ClientProcessor`` uses of its broker (``Broker`` satisfies it structurally)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> BrokerConfig: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def registrar(self) -> NameServerRegistrar: ...
    @property
    def clients(self) -> ClientManager: ...
    @property
    def consumers(self) -> ConsumerManager: ...
    @property
    def locks(self) -> RebalanceLockManager: ...
    def find_group(self, group: str) -> SubscriptionGroupConfig | None: ...
    def create_retry_topic(self, group: str) -> TopicConfig: ...
    def notify_consumers(self, notifications: Sequence[Notify]) -> None: ...


class ClientProcessor:
    def __init__(self, broker: BrokerForClients, *, clock: Clock) -> None:
        self.broker = broker
        self._clock = clock
        self._filters = FilterCache(max_entries=64)

    def handlers(self) -> dict[int, Handler]:
        return {
            RequestCode.HEART_BEAT: self.heartbeat,
            RequestCode.UNREGISTER_CLIENT: self.unregister_client,
            RequestCode.GET_CONSUMER_LIST_BY_GROUP: self.consumer_list,
            RequestCode.LOCK_BATCH_MQ: self.lock_batch,
            RequestCode.UNLOCK_BATCH_MQ: self.unlock_batch,
            RequestCode.CHECK_CLIENT_CONFIG: self.check_client_config,
        }

    async def heartbeat(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        broker = self.broker
        data = HeartbeatData.from_bytes(request.body)
        self._check_heartbeat_size(data)
        client = ClientConnection(
            client_id=data.client_id,
            channel_id=conn.id,
            address=conn.peer,
            language=request.language,
            version=request.version,
        )
        now = self._clock.wall_ms()
        changed = False
        round_number = broker.registrar.next_round()  # taken before anything awaits
        topics_version = broker.topics.data_version
        for consumer in data.consumer_data_set:
            group = broker.find_group(consumer.group_name)
            if group is None:
                # ClientManageProcessor.heartBeat skips such a consumer and still answers
                # SUCCESS (its producers register); its pulls then get 26.
                log.warning(
                    "%s: heartbeat from %s: subscription group %s does not exist and cannot "
                    "be created; consumer not registered",
                    broker.name,
                    data.client_id,
                    consumer.group_name,
                )
                continue
            if consumer.message_model != BROADCASTING:
                broker.create_retry_topic(consumer.group_name)
            registered = broker.consumers.register_consumer(
                consumer,
                client,
                now_ms=now,
                notify_enabled=group.notify_consumer_ids_changed_enable,
                without_sub=data.without_sub,
                fingerprint=data.heartbeat_fingerprint,
            )
            changed = changed or registered.fingerprint_changed or registered.changed
            broker.notify_consumers(registered.notifies)
        broker.clients.register_producers(data, client, now_ms=now)
        if broker.topics.data_version != topics_version:
            with trio.move_on_after(broker.config.request_timeout_s):
                await broker.registrar.announced(round_number)
        return request.respond(
            ext_fields={
                "IS_SUPPORT_HEART_BEAT_V2": "true",
                "IS_SUB_CHANGE": "true" if changed else "false",
            }
        )

    def _check_heartbeat_size(self, data: HeartbeatData) -> None:
        config = self.broker.config
        groups = len(data.consumer_data_set) + len(data.producer_data_set)
        check_count(
            "groups in a heartbeat", groups, config.max_heartbeat_groups, "maxHeartbeatGroups"
        )
        subscriptions = sum(len(c.subscription_data_set) for c in data.consumer_data_set)
        check_count(
            "subscriptions in a heartbeat",
            subscriptions,
            config.max_heartbeat_subscriptions,
            "maxHeartbeatSubscriptions",
        )

    def _check_mq_count(self, mq_set: tuple[MessageQueue, ...]) -> None:
        limit = self.broker.config.max_lock_batch_queues
        check_count("message queues", len(mq_set), limit, "maxLockBatchQueues")

    def _lockable(self, mq_set: tuple[MessageQueue, ...]) -> list[MessageQueue]:
        """The queues of ``mq_set`` that may be locked (see the module rules)."""
        broker = self.broker
        self._check_mq_count(mq_set)
        lockable: list[MessageQueue] = []
        for mq in mq_set:
            config = broker.topics.get(mq.topic)
            if config is None:
                continue
            check_queue_id(
                mq.topic, config, mq.queue_id, max_queue_nums=broker.config.max_topic_queue_nums
            )
            lockable.append(mq)
        return lockable

    async def unregister_client(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        h = UnregisterClientRequestHeader.from_ext_fields(request.ext_fields)
        notifies = self.broker.clients.unregister(h.client_id, h.producer_group, h.consumer_group)
        self.broker.notify_consumers(notifies)
        return request.respond()

    async def consumer_list(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        h = GetConsumerListByGroupRequestHeader.from_ext_fields(request.ext_fields)
        ids = self.broker.consumers.consumer_ids(h.consumer_group)
        if not ids:
            return request.respond(
                ResponseCode.SYSTEM_ERROR,
                f"no consumer for this group, {h.consumer_group}",
            )
        return request.respond(body=ConsumerListBody(consumer_id_list=tuple(ids)).to_bytes())

    async def lock_batch(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        body = LockBatchRequestBody.from_bytes(request.body)
        if not body.client_id:
            raise InvalidParameter("LOCK_BATCH_MQ needs a clientId")
        locked = self.broker.locks.lock_batch(
            body.consumer_group, self._lockable(body.mq_set), body.client_id, self._clock.wall_ms()
        )
        reply = LockBatchResponseBody(lock_ok_mq_set=tuple(sorted(locked)))
        return request.respond(body=reply.to_bytes())

    async def unlock_batch(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        body = UnlockBatchRequestBody.from_bytes(request.body)
        self._check_mq_count(body.mq_set)
        self.broker.locks.unlock_batch(body.consumer_group, body.mq_set, body.client_id)
        return request.respond()

    async def check_client_config(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        """A consumer vets its subscription before it pulls: a SQL92 expression that does
        not parse is SUBSCRIPTION_PARSE_FAILED with the parser's message (checkClientConfig)."""
        sub = CheckClientRequestBody.from_bytes(request.body).subscription_data
        if sub is not None and sub.expression_type.upper() != EXPRESSION_TAG:
            self._filters.compile(
                sub.expression_type,
                sub.sub_string,
                enabled=self.broker.config.enable_property_filter,
            )
        return request.respond()
