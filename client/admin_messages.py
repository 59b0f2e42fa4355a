"""Queue offsets and messages: min/max/search offsets, queries by key, id and offset,
VIEW_MESSAGE_BY_ID, PULL, reading a topic without committing, and sending one message
(mqadmin queryMsgByKey, queryMsgById, queryMsgByOffset, consumeMessage, sendMessage).

Rules:
- Reads go to each broker group's master, or to a slave while the group has none;
  nothing here commits an offset (pulls use ``TOOLS_CONSUMER`` by default).
- Queries by key or id ask every broker group and re-check what the index returned
  (it matches hashes); a missing message raises ``MessageNotFound`` saying what to check.
- ``MessageAdmin`` adds these commands to ``AdminSession``; ``Admin`` inherits them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from client.admin_session import AdminError, AdminSession, _group_hint, read_address
from client.admin_values import PullPage
from client.message import Message, ReceivedMessage, SendResult
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    NetworkError,
    RemotingTimeout,
    RocketError,
    SubscriptionGroupNotExist,
    TopicNotExist,
)
from protocol.headers import (
    GetMaxOffsetRequestHeader,
    GetMinOffsetRequestHeader,
    OffsetResponseHeader,
    PullMessageRequestHeader,
    PullMessageResponseHeader,
    QueryMessageRequestHeader,
    SearchOffsetRequestHeader,
    ViewMessageRequestHeader,
)
from protocol.message import PROPERTY_UNIQ_KEY, iter_records, parse_offset_msg_id
from protocol.route import MessageQueue, subscribe_queues

#: The consumer group mqadmin pulls with (MixAll.TOOLS_CONSUMER_GROUP).
TOOLS_CONSUMER_GROUP = "TOOLS_CONSUMER"
#: The producer group ``send`` uses.
TOOLS_PRODUCER_GROUP = "TOOLS_PRODUCER"
#: queryMsgByKey's default maxNum (mqadmin -m).
DEFAULT_QUERY_MAX_NUM = 64
#: QUERY_MESSAGE by UNIQ_KEY: the broker caps maxNum at defaultQueryMaxNum (32).
UNIQ_KEY_QUERY_MAX_NUM = 32
#: Latest timestamp a query may name (Java's Long.MAX_VALUE).
MAX_TIMESTAMP_MS = 2**63 - 1
#: consumeMessage's default count (mqadmin -c).
DEFAULT_CONSUME_COUNT = 128
#: Messages one PULL may return.
PULL_BATCH = 32

_SUBSCRIPTION_ALL = 0x4  # PullSysFlag: use the header's subscription ("*")
#: PULL response code → Java's PullStatus name.
_PULL_STATUS: dict[int, str] = {
    ResponseCode.SUCCESS: "FOUND",
    ResponseCode.PULL_NOT_FOUND: "NO_NEW_MSG",
    ResponseCode.PULL_RETRY_IMMEDIATELY: "NO_MATCHED_MSG",
    ResponseCode.PULL_OFFSET_MOVED: "OFFSET_ILLEGAL",
}


class MessageNotFound(AdminError):
    """No message matches the key, id or queue offset asked for."""


class MessageAdmin(AdminSession):
    """The queue offset and message commands of ``Admin`` (which inherits them)."""

    # --- offsets ---------------------------------------------------------------------

    async def _offset(self, addr: str, code: int, ext: Mapping[str, str]) -> int:
        response = await self._broker_call(addr, RemotingCommand.request(code, ext))
        return OffsetResponseHeader.from_ext_fields(response.ext_fields).offset

    async def search_offset(self, addr: str, mq: MessageQueue, timestamp_ms: int) -> int:
        """The first offset of ``mq`` stored at or after ``timestamp_ms`` (end if none)."""
        header = SearchOffsetRequestHeader(
            topic=mq.topic, queue_id=mq.queue_id, timestamp=timestamp_ms
        )
        return await self._offset(
            addr, RequestCode.SEARCH_OFFSET_BY_TIMESTAMP, header.to_ext_fields()
        )

    async def min_offset(self, addr: str, mq: MessageQueue) -> int:
        header = GetMinOffsetRequestHeader(topic=mq.topic, queue_id=mq.queue_id)
        return await self._offset(addr, RequestCode.GET_MIN_OFFSET, header.to_ext_fields())

    async def max_offset(self, addr: str, mq: MessageQueue) -> int:
        header = GetMaxOffsetRequestHeader(topic=mq.topic, queue_id=mq.queue_id)
        return await self._offset(addr, RequestCode.GET_MAX_OFFSET, header.to_ext_fields())

    # --- message queries -------------------------------------------------------------

    async def _query(
        self, addr: str, broker_name: str, header: QueryMessageRequestHeader, *, uniq: bool
    ) -> list[ReceivedMessage]:
        ext = header.to_ext_fields()
        if uniq:
            ext["_UNIQUE_KEY_QUERY"] = "true"
        response = await self._broker_call(
            addr,
            RemotingCommand.request(RequestCode.QUERY_MESSAGE, ext),
            ok=(ResponseCode.SUCCESS, ResponseCode.QUERY_NOT_FOUND),
        )
        if response.code != ResponseCode.SUCCESS:
            return []
        return [ReceivedMessage.from_record(r, broker_name) for r in iter_records(response.body)]

    async def _query_all(
        self, topic: str, key: str, max_num: int, begin_ms: int, end_ms: int, *, uniq: bool
    ) -> list[ReceivedMessage]:
        route = await self.topic_route(topic)
        targets = [(d.broker_name, a) for d in route.broker_datas if (a := read_address(d))]
        header = QueryMessageRequestHeader(
            topic=topic, key=key, max_num=max_num, begin_timestamp=begin_ms, end_timestamp=end_ms
        )
        results = await self._gather(targets, lambda t: self._query(t[1], t[0], header, uniq=uniq))
        pages = self._all_ok([a for _, a in targets], results, "query")
        found = {(m.queue.broker_name, m.commit_log_offset): m for p in pages for m in p}
        return sorted(found.values(), key=lambda m: (m.store_timestamp_ms, m.queue))

    async def query_by_key(
        self,
        topic: str,
        key: str,
        *,
        max_num: int = DEFAULT_QUERY_MAX_NUM,
        begin_ms: int = 0,
        end_ms: int = MAX_TIMESTAMP_MS,
    ) -> list[ReceivedMessage]:
        """Messages of ``topic`` with ``key`` among their KEYS, from every broker group,
        oldest first (at most ``max_num``); keys are re-checked, as the index hashes them."""
        messages = await self._query_all(topic, key, max_num, begin_ms, end_ms, uniq=False)
        matching = [
            m
            for m in messages
            if m.topic == topic and key in m.keys and begin_ms <= m.store_timestamp_ms <= end_ms
        ]
        return matching[:max_num]

    async def query_by_id(self, topic: str, msg_id: str) -> list[ReceivedMessage]:
        """The message(s) with this id: a client id (UNIQ_KEY; a retried send may have
        stored it twice) or a broker offset id (store address + CommitLog offset)."""
        route = await self.topic_route(topic)
        offset_id = _parse_offset_id(msg_id)
        names = {a: d.broker_name for d in route.broker_datas for a in d.broker_addrs.values()}
        if offset_id is not None and offset_id[0] in names:
            return [
                await self.view_message(offset_id[0], offset_id[1], broker_name=names[offset_id[0]])
            ]
        found = await self._query_all(
            topic, msg_id, UNIQ_KEY_QUERY_MAX_NUM, 0, MAX_TIMESTAMP_MS, uniq=True
        )
        found = [m for m in found if m.properties.get(PROPERTY_UNIQ_KEY) == msg_id]
        if found:
            return found
        if offset_id is not None:  # an offset id of a broker the route no longer names
            return [await self.view_message(offset_id[0], offset_id[1])]
        raise MessageNotFound(
            f"no message with id {msg_id} in topic {topic}; check the id and the topic "
            "(sendMessage prints both ids; queryMsgByKey lists ids by key)"
        )

    async def view_message(
        self, addr: str, commit_log_offset: int, *, broker_name: str = ""
    ) -> ReceivedMessage:
        """The message at ``commit_log_offset`` of the broker at ``addr`` (VIEW_MESSAGE_BY_ID)."""
        header = ViewMessageRequestHeader(offset=commit_log_offset)
        request = RemotingCommand.request(RequestCode.VIEW_MESSAGE_BY_ID, header.to_ext_fields())
        try:
            response = await self._broker_call(addr, request)
        except RocketError as exc:
            if isinstance(exc, NetworkError | RemotingTimeout):
                raise
            raise MessageNotFound(
                f"no message at CommitLog offset {commit_log_offset} of broker {addr} ({exc}); "
                "the id may be wrong or the message already deleted by retention"
            ) from None
        records = list(iter_records(response.body))
        if not records:
            raise MessageNotFound(f"broker {addr} returned no message at {commit_log_offset}")
        return ReceivedMessage.from_record(records[0], broker_name)

    async def _queue_address(self, topic: str, broker_name: str) -> str:
        route = await self.topic_route(topic)
        for data in route.broker_datas:
            if data.broker_name == broker_name:
                addr = read_address(data)
                if addr is None:
                    break
                return addr
        names = ", ".join(sorted(d.broker_name for d in route.broker_datas)) or "none"
        raise AdminError(
            f"topic {topic} has no live broker group named {broker_name!r} "
            f"(its groups: {names}); check -b"
        )

    async def pull(
        self,
        mq: MessageQueue,
        offset: int,
        *,
        max_nums: int = PULL_BATCH,
        group: str = TOOLS_CONSUMER_GROUP,
        addr: str | None = None,
    ) -> PullPage:
        """One PULL of up to ``max_nums`` messages from ``offset``; commits nothing."""
        addr = addr or await self._queue_address(mq.topic, mq.broker_name)
        header = PullMessageRequestHeader(
            consumer_group=group,
            topic=mq.topic,
            queue_id=mq.queue_id,
            queue_offset=offset,
            max_msg_nums=max_nums,
            sys_flag=_SUBSCRIPTION_ALL,
            commit_offset=0,
            suspend_timeout_millis=0,
            sub_version=0,
            subscription="*",
            expression_type="TAG",
        )
        request = RemotingCommand.request(RequestCode.PULL_MESSAGE, header.to_ext_fields())
        try:
            response = await self._broker_call(addr, request, ok=tuple(_PULL_STATUS))
        except SubscriptionGroupNotExist as exc:
            raise _group_hint(exc, group) from None
        reply = PullMessageResponseHeader.from_ext_fields(response.ext_fields)
        messages: tuple[ReceivedMessage, ...] = ()
        if response.code == ResponseCode.SUCCESS:
            messages = tuple(
                ReceivedMessage.from_record(r, mq.broker_name) for r in iter_records(response.body)
            )
        return PullPage(
            queue=mq,
            status=_PULL_STATUS[response.code],
            messages=messages,
            next_begin_offset=reply.next_begin_offset,
            min_offset=reply.min_offset,
            max_offset=reply.max_offset,
        )

    async def query_by_offset(
        self, topic: str, broker_name: str, queue_id: int, offset: int
    ) -> ReceivedMessage:
        """The message at ``offset`` of one queue."""
        mq = MessageQueue(topic=topic, broker_name=broker_name, queue_id=queue_id)
        page = await self.pull(mq, offset, max_nums=1)
        for message in page.messages:
            if message.queue_offset == offset:
                return message
        raise MessageNotFound(
            f"no message at offset {offset} of {broker_name} queue {queue_id} of {topic} "
            f"(it holds offsets {page.min_offset} to {page.max_offset - 1}); "
            "rmq admin topicStatus shows each queue's range"
        )

    async def consume(
        self,
        topic: str,
        *,
        broker_name: str | None = None,
        queue_id: int | None = None,
        offset: int | None = None,
        count: int = DEFAULT_CONSUME_COUNT,
        group: str = TOOLS_CONSUMER_GROUP,
    ) -> list[ReceivedMessage]:
        """Read up to ``count`` messages without committing: every readable queue (or the
        one named) from its first offset (or ``offset``), queue after queue."""
        if count < 1:
            raise AdminError(f"count must be at least 1, not {count}")
        route = await self.topic_route(topic)
        queues = [
            q
            for q in subscribe_queues(topic, route)
            if broker_name in (None, q.broker_name) and queue_id in (None, q.queue_id)
        ]
        if not queues:
            raise AdminError(
                f"topic {topic} has no readable queue matching broker {broker_name or 'any'} "
                f"queue {queue_id if queue_id is not None else 'any'}; check -b and -i "
                "(rmq admin topicRoute lists them)"
            )
        addrs = {d.broker_name: read_address(d) for d in route.broker_datas}
        out: list[ReceivedMessage] = []
        for mq in queues:
            addr = addrs.get(mq.broker_name)
            if addr is None or len(out) >= count:
                continue
            start = max(offset or 0, await self.min_offset(addr, mq))
            out.extend(await self._read_queue(addr, mq, start, count - len(out), group))
        return out

    async def _read_queue(
        self, addr: str, mq: MessageQueue, offset: int, count: int, group: str
    ) -> list[ReceivedMessage]:
        out: list[ReceivedMessage] = []
        while len(out) < count:  # every FOUND page adds at least one message
            page = await self.pull(
                mq, offset, max_nums=min(PULL_BATCH, count - len(out)), group=group, addr=addr
            )
            if page.status not in ("FOUND", "NO_MATCHED_MSG") or page.next_begin_offset <= offset:
                break
            out.extend(page.messages[: count - len(out)])
            offset = page.next_begin_offset
        return out

    # --- sending ---------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        body: bytes,
        *,
        keys: Sequence[str] = (),
        tags: str | None = None,
        broker_name: str | None = None,
        queue_id: int | None = None,
        delay_s: float | None = None,
    ) -> SendResult:
        """Send one message (to one queue when ``broker_name`` and ``queue_id`` are given;
        a timer message delivered ``delay_s`` after it is stored when given)."""
        from client.producer import open_producer  # the producer pulls in more than admin needs

        message = Message(
            topic=topic, body=body, keys=tuple(keys), tags=tags or None, delay_s=delay_s
        )

        def pick(queues: Sequence[MessageQueue], _key: str) -> MessageQueue:
            for q in queues:
                if q.broker_name == broker_name and q.queue_id == queue_id:
                    return q
            raise AdminError(
                f"topic {topic} has no writable queue {queue_id} on broker {broker_name}; "
                "check -b and -i (rmq admin topicRoute lists them)"
            )

        selector = pick if broker_name is not None and queue_id is not None else None
        async with open_producer(
            self.namesrv, group=TOOLS_PRODUCER_GROUP, timeout_s=self.timeout_s
        ) as producer:
            try:
                return await producer.send(message, selector=selector)
            except TopicNotExist as exc:
                raise TopicNotExist(
                    f"{exc.remark}; create it first: rmq admin updateTopic -t {topic} -c CLUSTER"
                ) from None


def _parse_offset_id(msg_id: str) -> tuple[str, int] | None:
    """``(store address, CommitLog offset)`` when ``msg_id`` reads as a broker offset id."""
    try:
        ip, port, offset = parse_offset_msg_id(msg_id)
    except ValueError:
        return None
    if not 0 < port <= 0xFFFF:
        return None
    return f"{ip}:{port}", offset
