"""The producer: ``async with open_producer(...) as producer: await producer.send(msg)``.

Guarantees (stated here so users can rely on them):
- ``send`` returns only when the broker answered: SEND_OK means stored as durably as the
  broker is configured to (flushed in SYNC_FLUSH, replicated on a SYNC_MASTER); the other
  ``SendStatus`` values mean stored, but not as durable as configured.
- Failover: a send that certainly stored nothing (no connection could be made, the
  route names no master, a slave or a fenced broker refused it) is tried again, on
  another broker group when there is one, else on the same group once the route names
  its new master, until the call's ``timeout_s`` runs out; so a master failover within
  the timeout is not seen by the caller, and an ordered key stays on its queue. A
  failure that may hide a stored message (connection lost mid-call, timeout, system
  error) is retried at most ``retries`` times on another group (never for an ordered
  send), so a retried send may be stored twice: delivery is at least once, and
  consumers de-duplicate by ``msg_id`` when they must.
- An outcome that is unknown is reported as unknown: when an attempt ended with
  ``RemotingTimeout`` or ``ConnectionLost`` (the message may be stored) and no later one
  succeeded, that error is what ``send`` raises, whatever refused the retries after it.
  Other errors say the broker refused the message or could not be reached.
- After any failure the topic's route is re-read from the NameServer at once.
- Every error raised is a ``protocol.errors.RocketError`` whose message says what failed.
- A message keeps its ``msg_id`` (UNIQ_KEY) through every attempt, so the copies a
  retry may store share it and consumers can de-duplicate by it.
- Natural batching (``auto_batch``, on by default; RocketMQ 5.1's autoBatch without its
  wait, ``client.batching``): concurrent ``send`` calls for one topic and broker that
  queue up while a request to it is in flight leave together as one SEND_BATCH_MESSAGE.
  Nothing waits for company: a lone send leaves at once as before. Each caller still gets
  its own ``SendResult`` (its msg_id, the batch's queue, its own queue offset) or, when
  the request fails, the error a single send would have got, with the same retries;
  ordered sends batch only with sends to the same queue and keep their order. Delayed,
  compressed (>= 4 KiB), ``wait_store=False``, transactional and group-topic messages
  always go alone. ``statistics()`` counts requests, batch requests and what waits.

Queue selection is round robin over writable queues, skipping brokers that failed or were
slow recently (RocketMQ's MQFaultStrategy); ``send(..., sharding_key=...)`` pins a key to
one queue for ordered messages.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import random
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from client.batching import (
    BATCH_MAX_BYTES,
    BATCH_MAX_COUNT,
    TOTAL_BATCH_MAX_BYTES,
    BatchConfig,
    Batcher,
)
from client.message import Message, SendResult, SendStatus, make_send_result
from client.routes import FaultStrategy, RouteCache, TopicInfo
from protocol.acl_client import sign_requests
from protocol.acl_sign import Credentials
from protocol.batch_body import encode_batch_items
from protocol.bodies import HeartbeatData, ProducerData
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    ConnectionLost,
    NetworkError,
    NoPermission,
    RemotingTimeout,
    RocketError,
    ServiceNotAvailable,
    SystemBusy,
    TopicNotExist,
    error_for_response,
)
from protocol.group_topics import is_group_topic
from protocol.headers import SendMessageResponseHeader
from protocol.message import (
    MAX_PROPERTIES_BYTES,
    PROPERTY_PGROUP,
    PROPERTY_TAGS,
    PROPERTY_TRAN_MSG,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_COMPRESSED,
    SYSFLAG_TRANSACTION_PREPARED_TYPE,
    make_uniq_key_generator,
    properties_to_string,
)
from protocol.route import MessageQueue
from protocol.rpc import Handler, RemotingClient, background_nursery, open_client

log = logging.getLogger(__name__)

#: Bodies at least this large are zlib-compressed, as RocketMQ's clients do.
COMPRESS_OVER_BYTES = 4 * 1024
#: After every broker group refused a send (nothing stored), the next try in the deadline
#: waits ``refused_pause_s``: ``REFUSED_PAUSE_S`` for the first ``REFUSED_FLAT_TRIES``
#: refusals in a row, then ``REFUSED_PAUSE_S`` longer per refusal up to
#: ``REFUSED_PAUSE_MAX_S``. A master failover elects and registers the new master within
#: tens of ms: a try every 20 ms over its first 100 ms finds it within 20 ms (growing from
#: the first refusal, tries at 20, 60, 120 ms added up to 70 ms to a 50 ms failover);
#: a group without a master for longer is asked about at most 5 times a second per send.
REFUSED_PAUSE_S = 0.02
REFUSED_FLAT_TRIES = 5
REFUSED_PAUSE_MAX_S = 0.2
#: (topic, broker) pairs whose batch turns are kept (``Producer._batch_queue``).
MAX_BATCH_TURNS = 4096


def refused_pause_s(refused_in_a_row: int) -> float:
    """The pause before the next try after ``refused_in_a_row`` refusals (see above)."""
    steps = max(1, refused_in_a_row - REFUSED_FLAT_TRIES + 1)
    return min(REFUSED_PAUSE_MAX_S, REFUSED_PAUSE_S * steps)


_STATUS_BY_CODE: dict[int, SendStatus] = {
    ResponseCode.SUCCESS: SendStatus.SEND_OK,
    ResponseCode.FLUSH_DISK_TIMEOUT: SendStatus.FLUSH_DISK_TIMEOUT,
    ResponseCode.FLUSH_SLAVE_TIMEOUT: SendStatus.FLUSH_SLAVE_TIMEOUT,
    ResponseCode.SLAVE_NOT_AVAILABLE: SendStatus.SLAVE_NOT_AVAILABLE,
}
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
#: Queue selector for ordered sends: (queues, key) → queue.
QueueSelector = Callable[[Sequence[MessageQueue], str], MessageQueue]


def local_ip() -> str:
    """The IPv4 address this host would use to reach the network (127.0.0.1 offline)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def make_client_id(instance: str = "DEFAULT") -> str:
    """``ip@instance#pid`` like the Java client's ``clientIP@instanceName``."""
    return f"{local_ip()}@{instance}#{os.getpid()}"


def hash_selector(queues: Sequence[MessageQueue], key: str) -> MessageQueue:
    """The same key always gets the same queue while the queue count is unchanged."""
    digest = hashlib.md5(key.encode(), usedforsecurity=False).digest()
    return queues[int.from_bytes(digest[:4], "big") % len(queues)]


class _Outgoing:
    """A message made ready to send once, whatever the attempts: its id, wire properties
    and (compressed) body stay the same on every retry.

    A plain slotted class, written once by ``_prepare`` and only read after: one is made
    per message, and a frozen attrs class costs three times as much to build (a call per
    field, where a plain ``__init__`` stores each slot directly).
    """

    __slots__ = ("batchable", "body", "message", "properties", "sys_flag", "uniq_key")

    def __init__(
        self,
        message: Message,
        uniq_key: str,
        properties: str,
        body: bytes,
        sys_flag: int,
        batchable: bool,
    ) -> None:
        self.message = message
        self.uniq_key = uniq_key
        #: The wire properties (UNIQ_KEY included), encoded.
        self.properties = properties
        self.body = body
        self.sys_flag = sys_flag
        #: May share a SEND_BATCH_MESSAGE with others (client.batching).
        self.batchable = batchable

    @property
    def batch_bytes(self) -> int:
        """About what it adds to a batch body (item head 20 + properties length 2)."""
        return len(self.body) + len(self.properties) + 22


@attrs.frozen(kw_only=True)
class ProducerStatistics:
    """Counters of one producer's send requests (``Producer.statistics``)."""

    #: SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE requests made (every attempt counts).
    requests: int
    #: Of those, SEND_BATCH_MESSAGE ones (natural batching and ``send_batch``).
    batch_requests: int
    #: Messages carried by the batch requests.
    batched_messages: int
    #: Messages waiting in natural-batching lanes now.
    waiting_messages: int


class Producer:
    """Sends messages; build it with ``open_producer``."""

    def __init__(
        self,
        client: RemotingClient,
        routes: RouteCache,
        *,
        group: str,
        client_id: str,
        timeout_s: float,
        retries: int,
        rng: random.Random,
        batching: tuple[trio.Nursery, BatchConfig] | None = None,
    ) -> None:
        self.group = group
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.retries = retries
        self._client = client
        self.routes = routes
        self.faults = FaultStrategy()
        self._rr = itertools.count(rng.randrange(1 << 16))
        self._uniq = make_uniq_key_generator("127.0.0.1", os.getpid(), rng, int(time.time() * 1000))
        self._batcher: Batcher[_Outgoing] | None = None
        if batching is not None:
            self._batcher = Batcher(
                batching[0], self._exchange, batching[1], batch_queue=self._batch_queue
            )
        #: (topic, broker name) -> batches sent there, for ``_batch_queue``'s turns.
        self._batch_turns: dict[tuple[str, str], int] = {}
        self._requests = 0
        self._batch_requests = 0
        self._batched_messages = 0

    @property
    def client(self) -> RemotingClient:
        """The producer's connections (client/transaction.py ends transactions on them)."""
        return self._client

    # --- public API ------------------------------------------------------------------

    async def send(
        self,
        message: Message,
        *,
        timeout_s: float | None = None,
        sharding_key: str | None = None,
        selector: QueueSelector | None = None,
    ) -> SendResult:
        """Send and wait for the broker's answer (see the module docstring)."""
        return await self._send_items(
            message.topic,
            [self._prepare(message, batch=False)],
            timeout_s=timeout_s,
            sharding_key=sharding_key,
            selector=selector,
        )

    async def send_batch(
        self, messages: Sequence[Message], *, timeout_s: float | None = None
    ) -> SendResult:
        """Send messages of one topic as one request; they get consecutive queue offsets.

        The result's ``msg_id`` and ``offset_msg_id`` are the messages' ids, comma-joined.
        """
        if not messages:
            raise ValueError("send_batch needs at least one message")
        topics = {m.topic for m in messages}
        if len(topics) != 1:
            raise ValueError(f"a batch goes to one topic, got {sorted(topics)}")
        if any(m.is_delayed for m in messages):
            raise ValueError("delayed messages cannot be sent in a batch")
        items = [self._prepare(m, batch=True) for m in messages]
        return await self._send_items(messages[0].topic, items, timeout_s=timeout_s)

    async def send_oneway(self, message: Message) -> None:
        """Send without waiting for an answer: fastest, and nothing tells you it was stored.

        Finding the route and writing the request still happen under ``timeout_s``.
        """
        try:
            with trio.fail_after(self.timeout_s):
                info = await self.routes.get(message.topic)
                queue = self._select(info, None, trio.current_time())
                addr = self._master(info, queue)
                request = self._request(queue, [self._prepare(message, batch=False)])
                await self._client.oneway(addr, attrs_evolve_oneway(request))
        except trio.TooSlowError:
            raise RemotingTimeout(
                f"oneway send to {message.topic} not written within {self.timeout_s} s"
            ) from None
        except RocketError:
            self.routes.invalidate(message.topic)
            raise

    def statistics(self) -> ProducerStatistics:
        batcher = self._batcher
        return ProducerStatistics(
            requests=self._requests,
            batch_requests=self._batch_requests,
            batched_messages=self._batched_messages,
            waiting_messages=batcher.waiting_messages() if batcher is not None else 0,
        )

    # --- the send loop ---------------------------------------------------------------

    def _prepare(self, message: Message, *, batch: bool) -> _Outgoing:
        """Id, wire properties and body, once per message (a ``ValueError`` if invalid).

        Bodies of single sends over COMPRESS_OVER_BYTES are compressed; a batch's never
        are (RocketMQ's clients do the same: one sysFlag covers a whole batch).
        """
        if message.msg_id is None:
            uniq_key = self._uniq.next_id(int(time.time() * 1000))
            properties = plain_properties(message, uniq_key)
            if properties is not None and not batch and len(message.body) < COMPRESS_OVER_BYTES:
                # The common message: what the general path below makes, written directly.
                batchable = (
                    _INT32_MIN <= message.flag <= _INT32_MAX
                    and (
                        len(properties) * 4 <= MAX_PROPERTIES_BYTES
                        or len(properties.encode()) <= MAX_PROPERTIES_BYTES
                    )
                    and not is_group_topic(message.topic)
                )
                return _Outgoing(message, uniq_key, properties, message.body, 0, batchable)
        else:
            uniq_key = message.msg_id
        wire = message.wire_properties(uniq_key)
        properties = properties_to_string(wire)
        body, sys_flag = message.body, 0
        if not batch and len(body) >= COMPRESS_OVER_BYTES:
            body, sys_flag = _zlib(body), SYSFLAG_COMPRESSED
        if wire.get(PROPERTY_TRAN_MSG) == "true":  # a half message (client/transaction.py)
            sys_flag |= SYSFLAG_TRANSACTION_PREPARED_TYPE
        batchable = not batch and not sys_flag and _batchable(message, properties)
        return _Outgoing(message, uniq_key, properties, body, sys_flag, batchable)

    async def _send_items(
        self,
        topic: str,
        items: list[_Outgoing],
        *,
        timeout_s: float | None,
        sharding_key: str | None = None,
        selector: QueueSelector | None = None,
    ) -> SendResult:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        # One clock read per attempt: the deadline, what is left of it and queue selection
        # share it (a read costs ~1 µs, a send at 1 in flight ~130 µs in all).
        now_s = trio.current_time()
        deadline = now_s + timeout
        ordered = sharding_key is not None or selector is not None
        last_error: RocketError | None = None
        # An attempt whose outcome is unknown (the message may be stored): if nothing
        # succeeds after it, it is what the caller hears, not a later definite refusal.
        unknown: RocketError | None = None
        last_broker: str | None = None
        retried = 0
        refused_in_a_row = 0
        routed = False
        while (remaining := deadline - now_s) > 0:
            info = self.routes.cached(topic)
            try:
                if info is None:
                    with trio.fail_after(remaining):
                        info = await self.routes.get(topic)
                routed = True
                if ordered:
                    queue = self._select_ordered(info, sharding_key or "", selector)
                else:
                    queue = self._select(info, last_broker, now_s)
                return await self._send_once(info, queue, items, deadline, ordered)
            except trio.TooSlowError:
                # The deadline ran out while the route was read again: what refused the
                # message before (nothing stored) says more than this timeout.
                last_error = last_error or RemotingTimeout(
                    f"no route for {topic} within {timeout} s"
                )
                break
            except RocketError as exc:
                if exc.retriable:
                    self.routes.invalidate(topic)
                if isinstance(exc, RemotingTimeout | ConnectionLost):
                    unknown = exc
                last_error = exc
                last_broker = getattr(exc, "broker_name", None)
                log.debug("send to %s failed: %s", topic, exc)
                if not exc.retriable or (isinstance(exc, TopicNotExist) and not routed):
                    break  # refused for good, or a topic the NameServer never routed
                if not_stored(exc):
                    # Nothing was stored: waiting for a (new) master costs no duplicate and
                    # keeps an ordered key on its queue. Pause once every group refused.
                    refused_in_a_row += 1
                    groups = len({q.broker_name for q in info.publish}) if info else 1
                    if refused_in_a_row >= max(1, groups):
                        pause_s = refused_pause_s(refused_in_a_row)
                        await trio.sleep(min(pause_s, max(0.0, deadline - trio.current_time())))
                    now_s = trio.current_time()
                    continue
                refused_in_a_row = 0
                retried += 1
                if ordered or retried > self.retries:
                    break
                now_s = trio.current_time()
        if unknown is not None:
            raise unknown
        raise last_error or RemotingTimeout(f"send to {topic} timed out after {timeout} s")

    def _select(self, info: TopicInfo, avoid_broker: str | None, now_s: float) -> MessageQueue:
        queues = info.publish
        if not queues:
            # Retriable: the cached route may predate the new master's registration; the
            # send loop re-reads it (a plain ServerError kept a stale route for 30 s).
            raise TopicNotExist(f"topic {info.topic} has no writable queue with a live master")
        start = next(self._rr)
        for i in range(len(queues)):
            queue = queues[(start + i) % len(queues)]
            if queue.broker_name != avoid_broker and self.faults.is_available(
                queue.broker_name, now_s
            ):
                return queue
        for i in range(len(queues)):
            queue = queues[(start + i) % len(queues)]
            if queue.broker_name != avoid_broker:
                return queue
        return queues[start % len(queues)]

    def _batch_queue(self, first: MessageQueue) -> MessageQueue:
        """The queue of a natural batch bound for ``first``'s broker: that broker's
        writable queues in turn, batch after batch (client/batching.py's rules); ``first``
        when the cached route has none of them."""
        info = self.routes.cached(first.topic)
        broker = first.broker_name
        queues = [q for q in info.publish if q.broker_name == broker] if info is not None else []
        if not queues:
            return first
        turns = self._batch_turns
        key = (first.topic, broker)
        turn = turns.get(key, 0)
        if turn == 0 and len(turns) >= MAX_BATCH_TURNS:
            turns.clear()  # a producer of very many topics: their turns start over
        turns[key] = turn + 1
        return queues[turn % len(queues)]

    def _select_ordered(
        self, info: TopicInfo, key: str, selector: QueueSelector | None
    ) -> MessageQueue:
        if not info.publish:
            raise TopicNotExist(f"topic {info.topic} has no writable queue with a live master")
        return (selector or hash_selector)(info.publish, key)

    def _master(self, info: TopicInfo, queue: MessageQueue) -> str:
        addr = info.master_of(queue.broker_name)
        if addr is None:
            raise NetworkError(f"broker group {queue.broker_name} has no master now")
        return addr

    def _request(self, queue: MessageQueue, items: list[_Outgoing]) -> RemotingCommand:
        batch = len(items) > 1
        first = items[0]
        if batch:
            body = encode_batch_items(
                (i.body, i.message.flag, i.properties.encode()) for i in items
            )
        else:
            body = first.body
        ext = send_ext_fields(
            self.group,
            queue,
            sys_flag=0 if batch else first.sys_flag,
            born_ms=int(time.time() * 1000),
            flag=0 if batch else first.message.flag,
            properties="" if batch else first.properties,
            batch=batch,
        )
        code = RequestCode.SEND_BATCH_MESSAGE if batch else RequestCode.SEND_MESSAGE_V2
        return RemotingCommand.request(code, ext, body=body)

    def _send_once(
        self,
        info: TopicInfo,
        queue: MessageQueue,
        items: list[_Outgoing],
        deadline: float,
        ordered: bool = False,
    ) -> Awaitable[SendResult]:
        """One attempt: alone, through a batching lane, or as the caller's own batch.

        Not a coroutine itself: it hands back the one to await (the batcher's, for a
        batched send), so every batched caller's wake-up passes one frame less.
        """
        addr = self._master(info, queue)
        if self._batcher is not None and len(items) == 1 and items[0].batchable:
            item = items[0]
            return self._batcher.send(
                addr, queue, item, item.batch_bytes, deadline, ordered=ordered
            )
        return self._send_direct(addr, queue, items, deadline)

    async def _send_direct(
        self, addr: str, queue: MessageQueue, items: list[_Outgoing], deadline: float
    ) -> SendResult:
        results = await self._exchange(addr, queue, items, deadline)
        if len(results) == 1:
            return results[0]
        return attrs.evolve(
            results[0],
            msg_id=",".join(r.msg_id for r in results),
            offset_msg_id=",".join(r.offset_msg_id for r in results),
        )

    async def _exchange(
        self, addr: str, queue: MessageQueue, items: list[_Outgoing], deadline: float
    ) -> list[SendResult]:
        """One request carrying ``items`` and a result per item; errors name the broker."""
        request = self._request(queue, items)
        self._requests += 1
        if len(items) > 1:
            self._batch_requests += 1
            self._batched_messages += len(items)
        started = trio.current_time()
        try:
            response = await self._client.call(
                addr, request, timeout_s=max(0.0, deadline - started)
            )
        except RocketError as exc:
            self.faults.record(queue.broker_name, 0, failed=True, now_s=trio.current_time())
            exc.broker_name = queue.broker_name  # type: ignore[attr-defined]
            raise
        now_s = trio.current_time()
        latency_ms = (now_s - started) * 1000
        status = _STATUS_BY_CODE.get(response.code)
        if status is None:
            error = error_for_response(response.code, response.remark)
            self.faults.record(queue.broker_name, latency_ms, failed=error.retriable, now_s=now_s)
            error.broker_name = queue.broker_name  # type: ignore[attr-defined]
            raise error
        self.faults.record(queue.broker_name, latency_ms, failed=False, now_s=now_s)
        reply = SendMessageResponseHeader.from_ext_fields(response.ext_fields)
        if reply.queue_id != queue.queue_id:
            queue = attrs.evolve(queue, queue_id=reply.queue_id)
        return _split_results(status, reply, queue, items)

    # --- heartbeats ------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Tell every broker of every known route that this producer group is alive."""
        body = HeartbeatData(
            client_id=self.client_id, producer_data_set=(ProducerData(group_name=self.group),)
        ).to_bytes()
        request = RemotingCommand.request(RequestCode.HEART_BEAT, body=body)
        for addr in self.routes.broker_addresses():
            try:
                await self._client.call(addr, request, timeout_s=self.timeout_s)
            except RocketError as exc:
                log.debug("heartbeat to %s failed: %s", addr, exc)

    async def _heartbeat_loop(self, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            await self.heartbeat()


def send_ext_fields(
    group: str,
    queue: MessageQueue,
    *,
    sys_flag: int,
    born_ms: int,
    flag: int,
    properties: str,
    batch: bool,
) -> dict[str, str]:
    """``SendMessageRequestHeaderV2(...).to_ext_fields()`` of a producer's send, written
    out: the same keys in the same order with the same texts (so the same header bytes;
    tests/unit/test_sdk_send_ext_fields.py), without building the header (~3 µs a send).
    """
    return {
        "a": group,
        "b": queue.topic,
        "c": "TBW102",
        "d": "4",
        "e": str(queue.queue_id),
        "f": str(sys_flag),
        "g": str(born_ms),
        "h": str(flag),
        "i": properties,
        "j": "0",
        "k": "false",
        "m": "true" if batch else "false",
        "n": queue.broker_name,
    }


def not_stored(error: RocketError) -> bool:
    """Whether a failed send certainly stored nothing: no connection was made, the route
    named no master, or the broker refused before writing (a slave or a fenced broker,
    busy, no permission, topic missing there)."""
    if isinstance(error, ConnectionLost):
        return False
    return isinstance(
        error, NetworkError | ServiceNotAvailable | SystemBusy | NoPermission | TopicNotExist
    )


def plain_properties(message: Message, uniq_key: str) -> str | None:
    """``properties_to_string(message.wire_properties(uniq_key))`` for a message with no
    properties, keys, delay or ``wait_store=False`` and a generated (hex) ``uniq_key``,
    built without the dict; None for any other message (the general path then)."""
    if (
        message.properties
        or message.keys
        or not message.wait_store
        or message.delay_level
        or message.deliver_at_ms is not None
        or message.delay_s is not None
    ):
        return None
    tags = message.tags
    if not tags:
        return f"{PROPERTY_UNIQ_KEY}\x01{uniq_key}\x02"
    if "\x01" in tags or "\x02" in tags:
        return None  # the general path refuses it with its own message
    return f"{PROPERTY_TAGS}\x01{tags}\x02{PROPERTY_UNIQ_KEY}\x01{uniq_key}\x02"


def _batchable(message: Message, properties: str) -> bool:
    """Whether a message may share a SEND_BATCH_MESSAGE: the broker applies delay, WAIT
    and transaction handling per request, and refuses batches to group topics (so does
    RocketMQ's canBatch). One the batch encoder would refuse (a flag or properties out of
    range) goes alone, where the broker's answer reaches its own caller."""
    props = message.properties
    return (
        _INT32_MIN <= message.flag <= _INT32_MAX
        and (
            len(properties) * 4 <= MAX_PROPERTIES_BYTES
            or len(properties.encode()) <= MAX_PROPERTIES_BYTES
        )
        and not message.is_delayed
        and message.wait_store
        and not is_group_topic(message.topic)
        and PROPERTY_TRAN_MSG not in props
        and PROPERTY_PGROUP not in props
    )


def _split_results(
    status: SendStatus,
    reply: SendMessageResponseHeader,
    queue: MessageQueue,
    items: list[_Outgoing],
) -> list[SendResult]:
    """A result per item: a batch's records have consecutive offsets from the reply's,
    and the reply's msgId lists their offset ids in order (Java's splitSendResults)."""
    if len(items) == 1:
        return [
            make_send_result(status, items[0].uniq_key, reply.msg_id, queue, reply.queue_offset)
        ]
    offset_ids = reply.msg_id.split(",")
    if len(offset_ids) != len(items):
        log.warning("a batch of %d got %d offset ids back", len(items), len(offset_ids))
        offset_ids = [reply.msg_id] * len(items)
    first = reply.queue_offset
    return [
        make_send_result(status, item.uniq_key, offset_id, queue, first + i)
        for i, (item, offset_id) in enumerate(zip(items, offset_ids, strict=True))
    ]


def attrs_evolve_oneway(request: RemotingCommand) -> RemotingCommand:
    return RemotingCommand.request(request.code, request.ext_fields, request.body, oneway=True)


def _zlib(body: bytes) -> bytes:
    return zlib.compress(body, 5)


@asynccontextmanager
async def open_producer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str = "DEFAULT_PRODUCER",
    timeout_s: float = 3.0,
    credentials: Credentials | None = None,
    retries: int = 2,
    instance: str = "DEFAULT",
    heartbeat_interval_s: float = 30.0,
    route_refresh_interval_s: float = 30.0,
    auto_batch: bool = True,
    batch_max_count: int = BATCH_MAX_COUNT,
    batch_max_bytes: int = BATCH_MAX_BYTES,
    total_batch_max_bytes: int = TOTAL_BATCH_MAX_BYTES,
    rng: random.Random | None = None,
    tls: ssl.SSLContext | None = None,
    handlers: Mapping[int, Handler] | None = None,
) -> AsyncIterator[Producer]:
    """A started producer (every request signed with ``credentials``, ACL 1.0, when given);
    everything it runs stops when the block exits.

    ``tls``: a context to connect with (``protocol.tls.client_context``); None: TLS as
    ``$RMQ_TLS``/``$RMQ_TLS_CA_FILE`` say, plain when they are unset.

    ``auto_batch`` turns natural batching on (module docstring); ``batch_max_count`` and
    ``batch_max_bytes`` bound one batch, ``total_batch_max_bytes`` what may wait for one.
    ``handlers`` serve requests brokers push (CHECK_TRANSACTION_STATE: client/transaction.py).
    """
    addrs = [namesrv] if isinstance(namesrv, str) else list(namesrv)
    addrs = [a for part in addrs for a in part.replace(",", ";").split(";") if a.strip()]
    batch = BatchConfig(
        max_count=batch_max_count, max_bytes=batch_max_bytes, total_max_bytes=total_batch_max_bytes
    )
    async with open_client(
        name=f"producer {group}", handlers=handlers, default_timeout_s=timeout_s, tls=tls
    ) as client:
        routes = RouteCache(
            client, addrs, request_timeout_s=timeout_s, refresh_interval_s=route_refresh_interval_s
        )
        if credentials is not None:
            sign_requests(client, credentials)
        async with background_nursery() as nursery:
            producer = Producer(
                client,
                routes,
                group=group,
                client_id=make_client_id(instance),
                timeout_s=timeout_s,
                retries=retries,
                rng=rng or random.Random(),
                batching=(nursery, batch) if auto_batch else None,
            )
            nursery.start_soon(routes.run_refresh_loop)
            nursery.start_soon(producer._heartbeat_loop, heartbeat_interval_s)
            yield producer
