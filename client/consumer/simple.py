"""``SimpleConsumer``: pop consumption over remoting (receive, ack, change invisible time).

Rules (protocol/pop.py; RocketMQ 5's SimpleConsumer semantics):
- ``receive`` pops from one broker group's master at a time (round-robin over the groups
  that have readable queues of the topic), queue id -1 (the broker picks), long polling up
  to ``long_poll_s``. Every message comes with its receipt handle and stays invisible to
  the group for ``invisible_s``; unless it is acked in time it is delivered again, with
  ``delivery_attempt`` one higher, and after the group's ``retryMaxTimes`` retries it goes
  to ``%DLQ%<group>``.
- ``ack`` and ``change_invisible`` go to the broker group that handed the message out
  (its name is in the handle); ``change_invisible`` returns the message with its new
  handle, which replaces the old one.
- ``order=True`` receives FIFO: a queue is held for the group until its messages are
  acked (or their invisible time lapses and they come again).
- Every call runs under a deadline (``timeout_s``, plus ``long_poll_s`` for a receive).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs

from client.consumer.lifecycle import _namesrv_list
from client.message import MAX_MESSAGE_BYTES, ReceivedMessage
from client.routes import RouteCache
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import MalformedRecord, NetworkError, RocketError, error_for_response
from protocol.headers import ConsumerSendMsgBackRequestHeader
from protocol.message import iter_records
from protocol.pop import (
    INIT_MODE_MAX,
    PROPERTY_POP_CK,
    AckMessageRequestHeader,
    BatchAckEntry,
    ChangeInvisibleTimeRequestHeader,
    ChangeInvisibleTimeResponseHeader,
    PopMessageRequestHeader,
    PopMessageResponseHeader,
    ReceiptHandle,
    encode_batch_ack_body,
    handles_for,
    order_counts,
    retry_mark,
)
from protocol.rpc import RemotingClient, open_client


@attrs.frozen(kw_only=True)
class PoppedMessage:
    """A received message and its receipt handle."""

    message: ReceivedMessage
    #: The topic asked for (``message.topic`` is the stored one: a retry topic on retries).
    topic: str
    handle: ReceiptHandle

    @property
    def delivery_attempt(self) -> int:
        return self.message.reconsume_times + 1

    @property
    def receipt_handle(self) -> str:
        return self.handle.encode()


class SimpleConsumer:
    """Receive, ack and change the invisible time of messages of one group."""

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        *,
        group: str,
        timeout_s: float = 3.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.client = client
        self.routes = routes
        self.group = group
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._turn = itertools.count()

    async def _broker_addr(self, topic: str, broker_name: str) -> str:
        info = await self.routes.get(topic)
        addr = info.master_of(broker_name)
        if addr is None:
            self.routes.invalidate(topic)
            raise NetworkError(f"broker group {broker_name} has no master now")
        return addr

    async def _call(
        self, topic: str, addr: str, request: RemotingCommand, timeout_s: float
    ) -> RemotingCommand:
        """One request; a failed one, or a broker that no longer takes writes (a deposed
        master), makes the route be read again, so the next call finds the new master."""
        try:
            response = await self.client.call(addr, request, timeout_s=timeout_s)
        except RocketError:
            self.routes.invalidate(topic)
            raise
        if response.code == ResponseCode.SERVICE_NOT_AVAILABLE:
            self.routes.invalidate(topic)
        return response

    async def receive(
        self,
        topic: str,
        *,
        max_nums: int = 16,
        invisible_s: float = 30.0,
        expression: str = "*",
        expression_type: str = "TAG",
        long_poll_s: float = 0.0,
        order: bool = False,
        broker_name: str | None = None,
    ) -> list[PoppedMessage]:
        """Up to ``max_nums`` messages, invisible to the group for ``invisible_s``, from
        ``broker_name`` (default: the next broker group of the topic in turn)."""
        if broker_name is None:
            info = await self.routes.get(topic)
            names = sorted({q.broker_name for q in info.subscribe})
            if not names:
                raise NetworkError(f"topic {topic} has no readable queue")
            name = names[next(self._turn) % len(names)]
        else:
            name = broker_name
        addr = await self._broker_addr(topic, name)
        header = PopMessageRequestHeader(
            consumer_group=self.group,
            topic=topic,
            queue_id=-1,
            max_msg_nums=max_nums,
            invisible_time=int(invisible_s * 1000),
            poll_time=int(long_poll_s * 1000),
            born_time=0,
            init_mode=INIT_MODE_MAX,
            exp_type=expression_type,
            exp=expression,
            order=order,
        )
        request = RemotingCommand.request(RequestCode.POP_MESSAGE, header.to_ext_fields())
        response = await self._call(topic, addr, request, self.timeout_s + long_poll_s)
        if response.code in (
            ResponseCode.PULL_NOT_FOUND,
            ResponseCode.POLLING_TIMEOUT,
            ResponseCode.POLLING_FULL,
        ):
            return []
        if response.code != ResponseCode.SUCCESS:
            raise error_for_response(response.code, response.remark)
        reply = PopMessageResponseHeader.from_ext_fields(response.ext_fields)
        return self._messages(topic, name, reply, response.body, order=order)

    def _messages(
        self,
        topic: str,
        broker_name: str,
        reply: PopMessageResponseHeader,
        body: bytes,
        *,
        order: bool,
    ) -> list[PoppedMessage]:
        records = []
        try:
            for record in iter_records(body):
                records.append(record)
        except MalformedRecord:
            pass  # what was read is handed out; the rest comes again after its invisible time
        handles = handles_for(
            [(r.topic, r.queue_id, r.queue_offset) for r in records], reply, broker_name
        )
        counts = order_counts(reply.order_count_info) if order else {}
        out = []
        for stored, handle in zip(records, handles, strict=True):
            properties = dict(stored.properties)
            properties[PROPERTY_POP_CK] = handle.encode()
            key = f"{retry_mark(stored.topic)}@qo{stored.queue_id}%{stored.queue_offset}"
            count = counts.get(key)
            record = attrs.evolve(
                stored,
                properties=properties,
                reconsume_times=count if count else stored.reconsume_times,
            )
            try:
                message = ReceivedMessage.from_record(record, broker_name, self.max_message_bytes)
            except MalformedRecord:
                continue
            out.append(PoppedMessage(message=message, topic=topic, handle=handle))
        return out

    async def ack(self, popped: PoppedMessage) -> None:
        """The message is consumed: it is not delivered again."""
        await self.ack_handle(popped.topic, popped.handle)

    async def ack_many(self, popped: Sequence[PoppedMessage]) -> None:
        """Ack several messages with one BATCH_ACK_MESSAGE per broker group."""
        by_broker: dict[tuple[str, str], dict[tuple[str, int, int, int, int, int], list[int]]] = {}
        for p in popped:
            h = p.handle
            key = (
                h.retry,
                h.queue_id,
                h.ck_offset,
                h.revive_qid,
                h.pop_time_ms,
                h.invisible_time_ms,
            )
            entries = by_broker.setdefault((h.broker_name, p.topic), {})
            entries.setdefault(key, []).append(h.queue_offset)
        for (broker_name, topic), entries in by_broker.items():
            body = encode_batch_ack_body(
                broker_name,
                [
                    BatchAckEntry(
                        group=self.group,
                        topic=topic,
                        retry=retry,
                        start_offset=start,
                        queue_id=qid,
                        revive_qid=rqid,
                        pop_time_ms=pop_time,
                        invisible_time_ms=invisible,
                        offsets=tuple(sorted(offsets)),
                    )
                    for (retry, qid, start, rqid, pop_time, invisible), offsets in entries.items()
                ],
            )
            addr = await self._broker_addr(topic, broker_name)
            request = RemotingCommand.request(RequestCode.BATCH_ACK_MESSAGE, {}, body)
            response = await self._call(topic, addr, request, self.timeout_s)
            if response.code != ResponseCode.SUCCESS:
                raise error_for_response(response.code, response.remark)

    async def change_invisible(self, popped: PoppedMessage, invisible_s: float) -> PoppedMessage:
        """Make the message visible again ``invisible_s`` from now (0: at once, a nack);
        the returned message carries the new handle."""
        handle = await self.change_invisible_handle(popped.topic, popped.handle, invisible_s)
        return attrs.evolve(popped, handle=handle)

    async def ack_handle(self, topic: str, handle: ReceiptHandle) -> None:
        """``ack`` by topic and handle alone (a gateway keeps no message)."""
        addr = await self._broker_addr(topic, handle.broker_name)
        header = AckMessageRequestHeader(
            consumer_group=self.group,
            topic=topic,
            queue_id=handle.queue_id,
            extra_info=handle.encode(),
            offset=handle.queue_offset,
        )
        request = RemotingCommand.request(RequestCode.ACK_MESSAGE, header.to_ext_fields())
        response = await self._call(topic, addr, request, self.timeout_s)
        if response.code != ResponseCode.SUCCESS:
            raise error_for_response(response.code, response.remark)

    async def change_invisible_handle(
        self, topic: str, handle: ReceiptHandle, invisible_s: float
    ) -> ReceiptHandle:
        """``change_invisible`` by topic and handle alone; the new handle."""
        addr = await self._broker_addr(topic, handle.broker_name)
        header = ChangeInvisibleTimeRequestHeader(
            consumer_group=self.group,
            topic=topic,
            queue_id=handle.queue_id,
            extra_info=handle.encode(),
            offset=handle.queue_offset,
            invisible_time=int(invisible_s * 1000),
        )
        request = RemotingCommand.request(
            RequestCode.CHANGE_MESSAGE_INVISIBLETIME, header.to_ext_fields()
        )
        response = await self._call(topic, addr, request, self.timeout_s)
        if response.code != ResponseCode.SUCCESS:
            raise error_for_response(response.code, response.remark)
        reply = ChangeInvisibleTimeResponseHeader.from_ext_fields(response.ext_fields)
        return attrs.evolve(
            handle,
            ck_offset=handle.ck_offset if handle.is_order else handle.queue_offset,
            pop_time_ms=reply.pop_time,
            invisible_time_ms=reply.invisible_time,
            revive_qid=reply.revive_qid,
        )

    async def dead_letter(
        self,
        topic: str,
        handle: ReceiptHandle,
        *,
        commit_log_offset: int,
        msg_id: str,
        max_reconsume_times: int,
    ) -> None:
        """Put the message in ``%DLQ%<group>`` now (CONSUMER_SEND_MSG_BACK, delay level -1);
        ack it afterwards."""
        addr = await self._broker_addr(topic, handle.broker_name)
        header = ConsumerSendMsgBackRequestHeader(
            offset=commit_log_offset,
            group=self.group,
            delay_level=-1,
            origin_msg_id=msg_id,
            origin_topic=topic,
            max_reconsume_times=max_reconsume_times,
        )
        request = RemotingCommand.request(
            RequestCode.CONSUMER_SEND_MSG_BACK, header.to_ext_fields()
        )
        response = await self._call(topic, addr, request, self.timeout_s)
        if response.code != ResponseCode.SUCCESS:
            raise error_for_response(response.code, response.remark)


@asynccontextmanager
async def open_simple_consumer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str,
    timeout_s: float = 3.0,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> AsyncIterator[SimpleConsumer]:
    """A pop consumer of ``group`` (no background tasks but routes)."""
    addrs = _namesrv_list(namesrv)
    async with open_client(name=f"simple consumer {group}", default_timeout_s=timeout_s) as client:
        routes = RouteCache(client, addrs, request_timeout_s=timeout_s)
        yield SimpleConsumer(
            client, routes, group=group, timeout_s=timeout_s, max_message_bytes=max_message_bytes
        )
