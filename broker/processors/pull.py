"""PULL_MESSAGE (11) and LITE_PULL_MESSAGE (361), with long polling.

Rules (reference/rocketmq-wire.md §2.4; PullMessageProcessor.java):
- Every response carries the four offsets (suggestWhichBrokerId, nextBeginOffset,
  minOffset, maxOffset), whatever its code, refusals included: ali-ons reads them
  unconditionally (a refusal keeps the request's offset as nextBeginOffset).
- The body of a FOUND answer is the records exactly as they lie in the CommitLog.
- A pull that finds nothing and carries SUSPEND is held until a message arrives for its
  queue or ``suspendTimeoutMillis`` passes, then evaluated once more without suspension.
  Past the broker's hold budget (``maxHeldPullNums`` pulls, ``maxHeldPullBytes`` bytes of
  requests) it is answered SYSTEM_BUSY at once: clients pull again after a pause (Java
  waits 3 s) instead of holding memory the broker does not have.
- A SQL92 subscription (the pull's own, or the group's from its heartbeat) is evaluated
  on each stored record (``broker/filtering.py``); records it refuses are stepped over
  (PULL_RETRY_IMMEDIATELY past them when none matched), and a held SQL92 pull is answered
  only for a match or at its deadline.
- COMMIT_OFFSET is honoured once, on the first evaluation, and only on a master.
- ``suggestWhichBrokerId`` is the broker's call (``BrokerForPull.suggest_broker_id``): a master
  sends far-behind consumers to a slave when ``slaveReadEnable``; a slave sends consumers
  back to its master while it is connected to one, and keeps them while it is not.
"""

from __future__ import annotations

import logging
from typing import Protocol

import attrs

from broker.clients import ConsumerManager
from broker.clock import Clock
from broker.config import BrokerConfig
from broker.filtering import FilterCache, RecordFilter, record_filter
from broker.longpoll import PullHoldService
from broker.offsetbounds import StaleOffsetGuard
from broker.offsets import ConsumerOffsetManager
from broker.stats import BrokerStats
from broker.store.pull import GetMessageStatus
from broker.store.results import GetMessageResult
from broker.store.store import MessageStore
from broker.topics import TopicConfigManager
from protocol.bodies import (
    EXPRESSION_TAG,
    SubscriptionData,
    SubscriptionGroupConfig,
    parse_subscription,
)
from protocol.codes import PERM_READ, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    InvalidParameter,
    MalformedBody,
    NoPermission,
    ServerError,
    SubscriptionGroupNotExist,
    SystemBusy,
    TopicNotExist,
)
from protocol.headers import PullMessageRequestHeader, PullMessageResponseHeader
from protocol.rpc import Connection, Handler

log = logging.getLogger(__name__)

FLAG_COMMIT_OFFSET = 0x1
FLAG_SUSPEND = 0x2
FLAG_SUBSCRIPTION = 0x4

#: Bytes one pull may return (RocketMQ: 256 KiB from memory).
MAX_PULL_BYTES = 256 * 1024
#: A held pull is answered this long before the client's own timeout would fire.
_SUSPEND_CAP_S = 25.0
#: What a pull wants: tag codes (None: every tag), and a SQL92 record filter (or None).
Wanted = tuple[frozenset[int] | None, RecordFilter | None]


def request_bytes(request: RemotingCommand) -> int:
    """What a held request keeps in memory, roughly: its body and its ext fields."""
    return len(request.body) + sum(len(k) + len(v) for k, v in request.ext_fields.items())


def response_code(status: GetMessageStatus, request_offset: int) -> int:
    """The PULL response code for a store status (PullMessageProcessor's table)."""
    if status is GetMessageStatus.FOUND:
        return ResponseCode.SUCCESS
    if status in (GetMessageStatus.NO_MATCHED_MESSAGE, GetMessageStatus.MESSAGE_WAS_REMOVING):
        return ResponseCode.PULL_RETRY_IMMEDIATELY
    if status in (GetMessageStatus.NO_MATCHED_LOGIC_QUEUE, GetMessageStatus.NO_MESSAGE_IN_QUEUE):
        return (
            ResponseCode.PULL_OFFSET_MOVED if request_offset != 0 else ResponseCode.PULL_NOT_FOUND
        )
    if status in (GetMessageStatus.OFFSET_FOUND_NULL, GetMessageStatus.OFFSET_OVERFLOW_ONE):
        return ResponseCode.PULL_NOT_FOUND
    # OFFSET_TOO_SMALL, OFFSET_OVERFLOW_BADLY
    return ResponseCode.PULL_OFFSET_MOVED


class BrokerForPull(Protocol):
    """What ``PullProcessor`` uses of its broker (``Broker`` satisfies it structurally)."""

    @property
    def config(self) -> BrokerConfig: ...
    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def broker_perm(self) -> int: ...
    @property
    def accepts_writes(self) -> bool: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def consumers(self) -> ConsumerManager: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def stale_offsets(self) -> StaleOffsetGuard: ...
    @property
    def pull_holds(self) -> PullHoldService: ...
    @property
    def store(self) -> MessageStore: ...
    @property
    def stats(self) -> BrokerStats: ...
    def find_group(self, group: str) -> SubscriptionGroupConfig | None: ...
    def suggest_broker_id(
        self, header: PullMessageRequestHeader, result: GetMessageResult
    ) -> int: ...


class PullProcessor:
    """Serves pulls from the ConsumeQueue and holds empty ones."""

    def __init__(self, broker: BrokerForPull, *, clock: Clock) -> None:
        self.broker = broker
        self._clock = clock
        self.filters = FilterCache()

    def handlers(self) -> dict[int, Handler]:
        return {
            RequestCode.PULL_MESSAGE: self.pull,
            RequestCode.LITE_PULL_MESSAGE: self.pull,
        }

    async def pull(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        header = PullMessageRequestHeader.from_ext_fields(request.ext_fields)
        try:
            wanted = self._check(header)
        except ServerError as exc:
            return self._refuse(request, header, exc)
        broker = self.broker
        if broker.accepts_writes and (moved := self._stale(header)) is not None:
            return self._moved(request, header, moved)
        if header.sys_flag & FLAG_COMMIT_OFFSET and broker.accepts_writes:
            broker.offsets.commit(
                header.topic, header.consumer_group, header.queue_id, header.commit_offset
            )
        max_bytes = min(header.max_msg_bytes or MAX_PULL_BYTES, MAX_PULL_BYTES)
        result = self._get(header, wanted, max_bytes)
        code = response_code(result.status, header.queue_offset)
        if code == ResponseCode.PULL_NOT_FOUND and header.sys_flag & FLAG_SUSPEND:
            holds = broker.pull_holds
            size = request_bytes(request)
            if not holds.reserve(size):
                busy = SystemBusy(
                    f"too many pulls held ({holds.reserved} pulls, {holds.reserved_bytes} "
                    f"bytes; maxHeldPullNums {holds.max_held}, maxHeldPullBytes "
                    f"{holds.max_held_bytes}); pull again later"
                )
                return self._refuse(request, header, busy)
            try:
                result = await self._hold(header, wanted, max_bytes)
            finally:
                holds.release(size)
            code = response_code(result.status, header.queue_offset)
        return self._respond(request, header, result, code)

    def _check(self, header: PullMessageRequestHeader) -> Wanted:
        """Validate the pull; the tag codes to match (None: every message) and the SQL92
        filter of a SQL92 subscription."""
        broker = self.broker
        if not broker.broker_perm & PERM_READ:
            raise NoPermission(f"the broker[{broker.address}] pulling message is forbidden")
        group = broker.find_group(header.consumer_group)
        if group is None:
            raise SubscriptionGroupNotExist(
                f"subscription group [{header.consumer_group}] does not exist"
            )
        if not group.consume_enable:
            # mqadmin updateSubGroup -s false pauses a group's consumption this way.
            raise NoPermission(f"subscription group no permission, {header.consumer_group}")
        config = broker.topics.get(header.topic)
        if config is None:
            raise TopicNotExist(f"topic[{header.topic}] not exist, apply first please!")
        if not config.perm & PERM_READ:
            raise NoPermission(f"the topic[{header.topic}] pulling message is forbidden")
        if not 0 <= header.queue_id < config.read_queue_nums:
            raise InvalidParameter(
                f"queueId[{header.queue_id}] is illegal, topic:[{header.topic}] "
                f"topicConfig.readQueueNums:[{config.read_queue_nums}] "
                f"consumer:[{header.consumer_group}]"
            )
        if header.sys_flag & FLAG_SUBSCRIPTION or header.subscription:
            limit = broker.config.max_subscription_length
            if len(header.subscription or "") > limit:
                raise ServerError(
                    f"subscription of {len(header.subscription or '')} characters exceeds the "
                    f"maximum of {limit} (maxSubscriptionLength)",
                    code=ResponseCode.SUBSCRIPTION_PARSE_FAILED,
                )
            try:
                subscription = parse_subscription(
                    header.subscription,
                    topic=header.topic,
                    expression_type=(header.expression_type or EXPRESSION_TAG).upper(),
                )
            except MalformedBody as exc:
                raise ServerError(
                    f"parse the consumer's subscription failed: {exc}",
                    code=ResponseCode.SUBSCRIPTION_PARSE_FAILED,
                ) from None
        else:
            registered = broker.consumers.subscription(header.consumer_group, header.topic)
            if registered is None:
                raise ServerError(
                    f"the consumer's subscription of {header.topic} not exist; "
                    "send a heartbeat first",
                    code=ResponseCode.SUBSCRIPTION_NOT_EXIST,
                )
            subscription = registered
        return self._wanted(subscription)

    def _wanted(self, subscription: SubscriptionData) -> Wanted:
        if subscription.expression_type.upper() != EXPRESSION_TAG:
            selector = self.filters.compile(
                subscription.expression_type,
                subscription.sub_string,
                enabled=self.broker.config.enable_property_filter,
            )
            return None, record_filter(selector)
        if subscription.is_sub_all:
            return None, None
        return frozenset(subscription.code_set), None

    def _get(
        self, header: PullMessageRequestHeader, wanted: Wanted, max_bytes: int
    ) -> GetMessageResult:
        tag_codes, sql_filter = wanted
        return self.broker.store.get_messages(
            header.consumer_group,
            header.topic,
            header.queue_id,
            header.queue_offset,
            max_count=max(1, min(header.max_msg_nums, 32)),
            max_bytes=max_bytes,
            tag_codes=tag_codes,
            record_filter=sql_filter,
        )

    async def _hold(
        self, header: PullMessageRequestHeader, wanted: Wanted, max_bytes: int
    ) -> GetMessageResult:
        """Wait for arrivals until the suspend deadline; re-check every interval. A SQL92
        pull steps over arrivals its filter refuses and goes on waiting, so it is answered
        only with a match or at its deadline (with the offset past what it stepped over)."""
        broker = self.broker
        suspend_s = min(header.suspend_timeout_millis / 1000, _SUSPEND_CAP_S)
        deadline = self._clock.now_s() + suspend_s
        check_s = broker.config.long_polling_check_interval_s
        while True:
            remaining = deadline - self._clock.now_s()
            if remaining <= 0:
                return self._get(header, wanted, max_bytes)
            await broker.pull_holds.wait(
                header.topic, header.queue_id, min(remaining, check_s), wanted[0]
            )
            result = self._get(header, wanted, max_bytes)
            while wanted[1] is not None and result.status is GetMessageStatus.NO_MATCHED_MESSAGE:
                header = attrs.evolve(header, queue_offset=result.next_begin_offset)
                result = self._get(header, wanted, max_bytes)
            if response_code(result.status, header.queue_offset) != ResponseCode.PULL_NOT_FOUND:
                return result

    def _stale(self, header: PullMessageRequestHeader) -> int | None:
        """The queue's end when a consumer's first pull since this broker began serving
        is past it: it read messages a power loss took (broker/offsetbounds.py)."""
        end = self.broker.stale_offsets.check(
            header.consumer_group, header.topic, header.queue_id, header.queue_offset
        )
        if end is not None:
            log.warning(
                "%s: %s pulled %s/%d at %d, past the queue's end %d when this broker began "
                "serving; moved back to %d",
                self.broker.name,
                header.consumer_group,
                header.topic,
                header.queue_id,
                header.queue_offset,
                end,
                end,
            )
        return end

    def _moved(
        self, request: RemotingCommand, header: PullMessageRequestHeader, end: int
    ) -> RemotingCommand:
        store = self.broker.store
        reply = PullMessageResponseHeader(
            suggest_which_broker_id=0,
            next_begin_offset=end,
            min_offset=store.min_offset(header.topic, header.queue_id),
            max_offset=store.max_offset(header.topic, header.queue_id),
        )
        status = GetMessageStatus.OFFSET_OVERFLOW_BADLY.value
        return request.respond(
            ResponseCode.PULL_OFFSET_MOVED, status, ext_fields=reply.to_ext_fields()
        )

    def _refuse(
        self, request: RemotingCommand, header: PullMessageRequestHeader, exc: ServerError
    ) -> RemotingCommand:
        """An error answer that still carries the four offsets: ali-ons reads them from every
        PULL response, and the request's own offset keeps a confused consumer in place."""
        store = self.broker.store
        reply = PullMessageResponseHeader(
            suggest_which_broker_id=0,
            next_begin_offset=header.queue_offset,
            min_offset=store.min_offset(header.topic, header.queue_id),
            max_offset=store.max_offset(header.topic, header.queue_id),
        )
        return request.respond(exc.code, exc.remark, ext_fields=reply.to_ext_fields())

    def _respond(
        self,
        request: RemotingCommand,
        header: PullMessageRequestHeader,
        result: GetMessageResult,
        code: int,
    ) -> RemotingCommand:
        reply = PullMessageResponseHeader(
            suggest_which_broker_id=self.broker.suggest_broker_id(header, result),
            next_begin_offset=result.next_begin_offset,
            min_offset=result.min_offset,
            max_offset=result.max_offset,
        )
        body = b""
        if code == ResponseCode.SUCCESS:
            body = result.body
            # Per-group get counters (incGroupGetNums / incGroupGetSize): one call per pull.
            self.broker.stats.on_get(
                header.consumer_group,
                header.topic,
                len(result.records),
                len(body),
                queue_id=header.queue_id,
                next_offset=result.next_begin_offset,
            )
        return request.respond(
            code, result.status.value, ext_fields=reply.to_ext_fields(), body=body
        )
