"""The transactional producer: a half message, a local transaction, then commit or rollback.

    async def charge(message, send_result):
        ...  # the local transaction
        return LocalTransactionState.COMMIT_MESSAGE

    async with open_transaction_producer(namesrv, group="PG", checker=was_charged) as p:
        result = await p.send_in_transaction(Message(topic="T", body=b"order"), charge)

Guarantees (TransactionMQProducer / DefaultMQProducerImpl.sendMessageInTransaction):
- ``send_in_transaction`` sends the message as a half message (``TRAN_MSG=true``,
  ``PGROUP``, the PREPARED sysFlag; a delay level is refused) with the producer's usual
  retries and failover. Consumers never see a half message. Only when the broker answered
  SEND_OK does the local transaction run; any other outcome rolls back without running it.
  The local transaction may be a plain or an async function; raising counts as UNKNOW.
- Its answer is sent as END_TRANSACTION to the master of the broker group holding the half
  message (RocketMQ's clients send it oneway; we wait for the answer, under ``timeout_s``,
  and report it in ``end_error`` instead of raising). Whatever happens to that request, an
  unresolved half message is checked by the broker ``transactionTimeOut`` (6 s) after it
  was stored, then every ``transactionCheckInterval``: the ``checker`` is called with the
  half message (as a ``ReceivedMessage`` of its real topic) and its answer goes back as
  END_TRANSACTION (``fromTransactionCheck=true``) on the connection the check came on. A
  checker that raises or takes longer than ``timeout_s`` answers UNKNOW (checked again).
- The broker learns where to send checks from this producer's heartbeats: one goes to a
  broker as soon as a half message was stored there, then every ``heartbeat_interval_s``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from client.message import Message, ReceivedMessage, SendResult, SendStatus
from client.producer import Producer, open_producer
from client.routes import RouteCache
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import MalformedRecord, RocketError, error_for_response
from protocol.message import (
    PROPERTY_PGROUP,
    PROPERTY_TRAN_MSG,
    decode_record,
    parse_offset_msg_id,
)
from protocol.rpc import Connection, RemotingClient
from protocol.transaction import (
    CheckTransactionStateRequestHeader,
    EndTransactionRequestHeader,
    LocalTransactionState,
)

log = logging.getLogger(__name__)

__all__ = [
    "LocalTransactionState",
    "TransactionProducer",
    "TransactionSendResult",
    "open_transaction_producer",
]

State = LocalTransactionState | Awaitable[LocalTransactionState]
LocalTransaction = Callable[[Message, SendResult], State]
Checker = Callable[[ReceivedMessage], State]


@attrs.frozen(kw_only=True)
class TransactionSendResult:
    """The half message's send result, what the local transaction decided, and why the
    END_TRANSACTION request failed, if it did (the broker's check then decides)."""

    send_result: SendResult
    local_state: LocalTransactionState
    end_error: str | None = None


class TransactionProducer:
    """Sends messages in transactions; build it with ``open_transaction_producer``."""

    def __init__(self, producer: Producer, checker: Checker) -> None:
        self.producer = producer
        self.checker = checker
        self._heartbeat_sent: set[str] = set()
        self.checks_answered = 0

    async def send_in_transaction(
        self, message: Message, local_transaction: LocalTransaction
    ) -> TransactionSendResult:
        """Half message, local transaction, END_TRANSACTION (see the module docstring)."""
        if message.delay_level:
            raise ValueError("a transactional message cannot be delayed")
        producer = self.producer
        props = dict(message.properties)
        props[PROPERTY_TRAN_MSG] = "true"
        props[PROPERTY_PGROUP] = producer.group
        half = attrs.evolve(message, properties=props)
        result = await producer.send(half)
        await self._heartbeat_once(result)
        state = LocalTransactionState.ROLLBACK_MESSAGE
        if result.status is SendStatus.SEND_OK:
            state = await _decide(local_transaction, message, result, what="local transaction")
        end_error = await self._end(message.topic, result, state)
        return TransactionSendResult(send_result=result, local_state=state, end_error=end_error)

    async def _heartbeat_once(self, result: SendResult) -> None:
        info = self.producer.routes.cached(result.queue.topic)
        addr = info.master_of(result.queue.broker_name) if info is not None else None
        if addr is not None and addr not in self._heartbeat_sent:
            await self.producer.heartbeat()
            self._heartbeat_sent.update(self.producer.routes.broker_addresses())

    async def _end(
        self, topic: str, result: SendResult, state: LocalTransactionState
    ) -> str | None:
        """END_TRANSACTION for ``result``; None when the broker took it, else why not."""
        producer = self.producer
        header = EndTransactionRequestHeader(
            producer_group=producer.group,
            tran_state_table_offset=result.queue_offset,
            commit_log_offset=parse_offset_msg_id(result.offset_msg_id)[2],
            commit_or_rollback=state.wire_value,
            msg_id=result.msg_id,
            transaction_id=result.msg_id,
            topic=topic,
            broker_name=result.queue.broker_name,
        )
        try:
            with trio.fail_after(producer.timeout_s):
                response = await call_end_transaction(
                    producer.client,
                    producer.routes,
                    topic,
                    result.queue.broker_name,
                    header,
                    timeout_s=producer.timeout_s,
                )
                if response is None:
                    return f"broker group {result.queue.broker_name} has no master now"
        except trio.TooSlowError:
            return f"END_TRANSACTION not answered within {producer.timeout_s} s"
        except RocketError as exc:
            return str(exc)
        if response.code != ResponseCode.SUCCESS:
            error = str(error_for_response(response.code, response.remark))
            log.warning("END_TRANSACTION of %s refused: %s", result.msg_id, error)
            return error
        return None

    async def on_check(self, request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
        """CHECK_TRANSACTION_STATE from a broker: ask the checker, answer END_TRANSACTION."""
        try:
            header, message = decode_check(request)
        except (RocketError, MalformedRecord, ValueError) as exc:
            log.warning("malformed CHECK_TRANSACTION_STATE from %s: %s", conn.peer, exc)
            return None
        state = LocalTransactionState.UNKNOW
        with trio.move_on_after(self.producer.timeout_s):
            state = await _decide(self.checker, message, what="transaction checker")
        reply = EndTransactionRequestHeader(
            producer_group=self.producer.group,
            tran_state_table_offset=header.tran_state_table_offset,
            commit_log_offset=header.commit_log_offset,
            commit_or_rollback=state.wire_value,
            msg_id=message.properties.get("UNIQ_KEY") or header.msg_id or "",
            transaction_id=header.transaction_id,
            from_transaction_check=True,
            topic=message.topic,
            broker_name=header.broker_name,
        )
        answer = RemotingCommand.request(
            RequestCode.END_TRANSACTION, reply.to_ext_fields(), oneway=True
        )
        try:
            with trio.fail_after(self.producer.timeout_s):
                await conn.oneway(answer)
        except (trio.TooSlowError, RocketError) as exc:
            log.warning("answer to the check of %s not sent: %s", message.msg_id, exc)
            return None
        self.checks_answered += 1
        return None


def decode_check(
    request: RemotingCommand,
) -> tuple[CheckTransactionStateRequestHeader, ReceivedMessage]:
    """A broker's CHECK_TRANSACTION_STATE: its header and the half message it asks about.
    Raises RocketError, MalformedRecord or ValueError when the request is malformed."""
    header = CheckTransactionStateRequestHeader.from_ext_fields(request.ext_fields)
    record, _ = decode_record(request.body)
    return header, ReceivedMessage.from_record(record, header.broker_name or "")


async def call_end_transaction(
    client: RemotingClient,
    routes: RouteCache,
    topic: str,
    broker_name: str,
    header: EndTransactionRequestHeader,
    *,
    timeout_s: float,
) -> RemotingCommand | None:
    """END_TRANSACTION ``header`` (of a half message of ``topic`` stored by group
    ``broker_name``) to that group's master: the broker's answer, or None when the group
    has no master now. Used by the SDK's transaction producer and
    by ``rmq proxy`` (clients' EndTransaction)."""
    info = await routes.get(topic)
    addr = info.master_of(broker_name)
    if addr is None:
        return None
    request = RemotingCommand.request(RequestCode.END_TRANSACTION, header.to_ext_fields())
    return await client.call(addr, request, timeout_s=timeout_s)


async def _decide(function: Callable[..., State], *args: Any, what: str) -> LocalTransactionState:
    """Call a local transaction or checker (plain or async); raising means UNKNOW."""
    try:
        state: object = function(*args)
        if inspect.isawaitable(state):
            state = await state
    except Exception:
        log.exception("%s failed; the transaction stays open (UNKNOW)", what)
        return LocalTransactionState.UNKNOW
    if not isinstance(state, LocalTransactionState):
        log.warning("%s returned %r, not a LocalTransactionState: UNKNOW", what, state)
        return LocalTransactionState.UNKNOW
    return state


@asynccontextmanager
async def open_transaction_producer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str,
    checker: Checker,
    timeout_s: float = 3.0,
    **producer_options: Any,
) -> AsyncIterator[TransactionProducer]:
    """A started transactional producer (``producer_options`` go to ``open_producer``)."""
    holder: list[TransactionProducer] = []

    async def on_check(request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
        if not holder:
            return None  # a check before we are started: the broker checks again
        return await holder[0].on_check(request, conn)

    async with open_producer(
        namesrv,
        group=group,
        timeout_s=timeout_s,
        handlers={RequestCode.CHECK_TRANSACTION_STATE: on_check},
        **producer_options,
    ) as producer:
        holder.append(TransactionProducer(producer, checker))
        yield holder[0]
