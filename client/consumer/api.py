"""``BrokerApi``: the broker requests consumers make (pull, offsets, consumer list,
send-back, queue locks), each under a deadline.

Rules:
- Thin I/O around the pure core: requests are built from protocol headers and bodies,
  answers parsed by ``client.consumer.core``; every call runs under ``timeout_s`` (a
  long-polling pull under its suspend time plus that).
- Errors raised are ``RocketError``s; ``lock``, ``unlock`` and ``each`` log a broker's
  failure and go on with the others (a lock is then unknown, not refused).
- Offset reads go to the queue's master, else a slave (``call_replicas``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import attrs
import trio

from client.consumer.core import PULL_SUSPEND, parse_pull_response, pull_replica
from client.consumer.types import PullResult, SkippedRecord
from client.message import MAX_MESSAGE_BYTES
from client.offsets import call_replicas
from client.routes import RouteCache, TopicInfo
from protocol.bodies import (
    ConsumerListBody,
    LockBatchRequestBody,
    LockBatchResponseBody,
    SubscriptionData,
    UnlockBatchRequestBody,
)
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import NetworkError, RocketError
from protocol.headers import (
    ConsumerSendMsgBackRequestHeader,
    GetConsumerListByGroupRequestHeader,
    GetMaxOffsetRequestHeader,
    GetMinOffsetRequestHeader,
    OffsetResponseHeader,
    PullMessageRequestHeader,
    SearchOffsetRequestHeader,
)
from protocol.route import MASTER_ID, MessageQueue
from protocol.rpc import RemotingClient, check_success

log = logging.getLogger(__name__)

#: Tries to put a skipped (undecodable) record in the DLQ before committing past it.
DEAD_LETTER_TRIES = 3


def _now_ms() -> int:
    return int(time.time() * 1000)


def _by_broker(queues: Iterable[MessageQueue]) -> dict[str, list[MessageQueue]]:
    out: dict[str, list[MessageQueue]] = {}
    for queue in queues:
        out.setdefault(queue.broker_name, []).append(queue)
    return out


class BrokerApi:
    """The broker requests consumers make, each under a deadline."""

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        timeout_s: float,
        *,
        max_body_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.client = client
        self.routes = routes
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes

    async def master(self, queue: MessageQueue) -> str:
        info = await self.routes.get(queue.topic)
        addr = info.master_of(queue.broker_name)
        if addr is None:
            raise NetworkError(f"broker group {queue.broker_name} has no master now")
        return addr

    async def call(
        self, addr: str, request: RemotingCommand, *, timeout_s: float | None = None
    ) -> RemotingCommand:
        """The SUCCESS response, or the ``RocketError`` of anything else."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        return check_success(await self.client.call(addr, request, timeout_s=timeout))

    async def pull(
        self,
        queue: MessageQueue,
        *,
        group: str,
        offset: int,
        max_nums: int,
        subscription: SubscriptionData,
        sys_flag: int,
        commit_offset: int = 0,
        suspend_s: float = 0.0,
        broker_id: int = MASTER_ID,
        timeout_s: float | None = None,
    ) -> PullResult:
        info = await self.routes.get(queue.topic)
        target_id, addr = pull_replica(info, queue.broker_name, broker_id)
        header = PullMessageRequestHeader(
            consumer_group=group,
            topic=queue.topic,
            queue_id=queue.queue_id,
            queue_offset=offset,
            max_msg_nums=max_nums,
            sys_flag=sys_flag,
            commit_offset=commit_offset,
            suspend_timeout_millis=int(suspend_s * 1000),
            sub_version=subscription.sub_version,
            subscription=subscription.sub_string,
            expression_type=subscription.expression_type,
        )
        timeout = (self.timeout_s if timeout_s is None else timeout_s) + suspend_s
        result = await self._pull_once(addr, queue, header, subscription, timeout)
        if result.resync:
            # The answer's first record is unreadable: one message names its offset.
            single = attrs.evolve(header, max_msg_nums=1, sys_flag=sys_flag & ~PULL_SUSPEND)
            result = await self._pull_once(addr, queue, single, subscription, self.timeout_s)
        for skipped in result.skipped:
            log.warning(
                "%s: skipped record %s of %s: %s",
                group,
                skipped.queue_offset,
                queue,
                skipped.reason,
            )
        return attrs.evolve(result, broker_id=target_id)

    async def _pull_once(
        self,
        addr: str,
        queue: MessageQueue,
        header: PullMessageRequestHeader,
        subscription: SubscriptionData,
        timeout_s: float,
    ) -> PullResult:
        request = RemotingCommand.request(RequestCode.PULL_MESSAGE, header.to_ext_fields())
        response = await self.client.call(addr, request, timeout_s=timeout_s)
        return parse_pull_response(
            response,
            queue,
            subscription,
            requested=header.queue_offset,
            max_nums=header.max_msg_nums,
            max_body_bytes=self.max_body_bytes,
        )

    async def _queue_offset(
        self, code: int, queue: MessageQueue, header_ext: dict[str, str]
    ) -> tuple[int, int]:
        """(broker id, offset), asked of the master, else (not routed or not answering) of
        a slave: a slave's answer may lag the master's by what it has not replicated yet."""
        request = RemotingCommand.request(code, header_ext)
        broker_id, response = await call_replicas(
            self.client, self.routes, queue, request, timeout_s=self.timeout_s
        )
        check_success(response)
        return broker_id, OffsetResponseHeader.from_ext_fields(response.ext_fields).offset

    async def max_offset_at(self, queue: MessageQueue) -> tuple[int, int]:
        """(id of the broker that answered, its max offset of ``queue``)."""
        header = GetMaxOffsetRequestHeader(topic=queue.topic, queue_id=queue.queue_id)
        return await self._queue_offset(RequestCode.GET_MAX_OFFSET, queue, header.to_ext_fields())

    async def max_offset(self, queue: MessageQueue) -> int:
        return (await self.max_offset_at(queue))[1]

    async def min_offset(self, queue: MessageQueue) -> int:
        header = GetMinOffsetRequestHeader(topic=queue.topic, queue_id=queue.queue_id)
        code = RequestCode.GET_MIN_OFFSET
        return (await self._queue_offset(code, queue, header.to_ext_fields()))[1]

    async def search_offset(self, queue: MessageQueue, timestamp_ms: int) -> int:
        header = SearchOffsetRequestHeader(
            topic=queue.topic, queue_id=queue.queue_id, timestamp=timestamp_ms
        )
        code = RequestCode.SEARCH_OFFSET_BY_TIMESTAMP
        return (await self._queue_offset(code, queue, header.to_ext_fields()))[1]

    async def consumer_ids(self, group: str, info: TopicInfo) -> list[str]:
        """GET_CONSUMER_LIST_BY_GROUP from the first broker of the route that answers."""
        header = GetConsumerListByGroupRequestHeader(consumer_group=group)
        request = RemotingCommand.request(
            RequestCode.GET_CONSUMER_LIST_BY_GROUP, header.to_ext_fields()
        )
        last: RocketError | None = None
        for data in sorted(info.route.broker_datas, key=lambda d: d.broker_name):
            addrs = data.broker_addrs
            if not addrs:
                continue
            addr = addrs.get(MASTER_ID) or addrs[min(addrs)]
            try:
                response = await self.call(addr, request)
            except RocketError as exc:
                last = exc
                continue
            return list(ConsumerListBody.from_bytes(response.body).consumer_id_list)
        raise last or NetworkError(f"no broker in the route of {info.topic} to ask for {group}")

    async def send_back(
        self,
        queue: MessageQueue,
        *,
        commit_log_offset: int,
        msg_id: str,
        original_topic: str,
        group: str,
        delay_level: int,
        max_reconsume_times: int,
    ) -> None:
        """CONSUMER_SEND_MSG_BACK to the master of the queue the message was pulled from.

        ``delay_level`` -1 sends it to the group's DLQ at once, 0 lets the broker choose.
        """
        header = ConsumerSendMsgBackRequestHeader(
            offset=commit_log_offset,
            group=group,
            delay_level=delay_level,
            origin_msg_id=msg_id,
            origin_topic=original_topic,
            max_reconsume_times=max_reconsume_times,
        )
        request = RemotingCommand.request(
            RequestCode.CONSUMER_SEND_MSG_BACK, header.to_ext_fields()
        )
        await self.call(await self.master(queue), request)

    async def dead_letter(
        self,
        record: SkippedRecord,
        *,
        group: str,
        max_reconsume_times: int,
        backoff_s: float,
        stopped: trio.Event,
    ) -> bool:
        """Send a skipped record to ``group``'s DLQ (up to DEAD_LETTER_TRIES times while
        ``stopped`` is not set); False when the broker refused or could not be told."""
        assert record.commit_log_offset is not None
        for attempt in range(DEAD_LETTER_TRIES):
            if attempt:
                with trio.move_on_after(backoff_s):
                    await stopped.wait()
            if stopped.is_set():
                return False
            try:
                await self.send_back(
                    record.queue,
                    commit_log_offset=record.commit_log_offset,
                    msg_id=record.msg_id,
                    original_topic=record.original_topic,
                    group=group,
                    delay_level=-1,
                    max_reconsume_times=max_reconsume_times,
                )
                return True
            except RocketError as exc:
                log.info("%s: DLQ send-back of a skipped record failed: %s", group, exc)
                if not exc.retriable:
                    return False
        return False

    async def lock(
        self, group: str, client_id: str, queues: Iterable[MessageQueue]
    ) -> dict[MessageQueue, bool]:
        """LOCK_BATCH_MQ per broker group: whether we hold each queue now.

        Queues of a broker that did not answer are left out (unknown, not refused).
        """
        answer: dict[MessageQueue, bool] = {}
        for broker_queues in _by_broker(queues).values():
            body = LockBatchRequestBody(
                consumer_group=group, client_id=client_id, mq_set=tuple(sorted(broker_queues))
            )
            request = RemotingCommand.request(RequestCode.LOCK_BATCH_MQ, body=body.to_bytes())
            try:
                response = await self.call(await self.master(broker_queues[0]), request)
            except RocketError as exc:
                log.warning("%s: locking %d queues failed: %s", group, len(broker_queues), exc)
                continue
            locked = set(LockBatchResponseBody.from_bytes(response.body).lock_ok_mq_set)
            answer.update((q, q in locked) for q in broker_queues)
        return answer

    async def unlock(self, group: str, client_id: str, queues: Iterable[MessageQueue]) -> None:
        """UNLOCK_BATCH_MQ per broker group; failures are logged (locks expire in 60 s)."""
        for broker_queues in _by_broker(queues).values():
            body = UnlockBatchRequestBody(
                consumer_group=group, client_id=client_id, mq_set=tuple(sorted(broker_queues))
            )
            request = RemotingCommand.request(RequestCode.UNLOCK_BATCH_MQ, body=body.to_bytes())
            try:
                await self.call(await self.master(broker_queues[0]), request)
            except RocketError as exc:
                log.warning("%s: unlocking %d queues failed: %s", group, len(broker_queues), exc)

    async def each(self, addrs: Iterable[str], request: RemotingCommand, what: str) -> int:
        """Send ``request`` to every address concurrently; the number that succeeded."""
        ok = 0

        async def one(addr: str) -> None:
            nonlocal ok
            try:
                await self.call(addr, request)
                ok += 1
            except RocketError as exc:
                log.warning("%s to %s failed: %s", what, addr, exc)

        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(one, addr)
        return ok
