"""Transactional messages over the wire: half messages, END_TRANSACTION, checks, restarts.

A real broker and NameServer in this process; the test speaks RocketMQ's remoting as a Java
producer would (half send with TRAN_MSG/PGROUP and the PREPARED sysFlag, END_TRANSACTION,
a CHECK_TRANSACTION_STATE handler answering END_TRANSACTION with fromTransactionCheck).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from broker.transaction.state import commit_record
from protocol.batch_body import BatchItem, encode_batch_body
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import SendMessageRequestHeaderV2
from protocol.message import (
    SYSFLAG_TRANSACTION_COMMIT_TYPE,
    SYSFLAG_TRANSACTION_NOT_TYPE,
    SYSFLAG_TRANSACTION_PREPARED_TYPE,
    SYSFLAG_TRANSACTION_ROLLBACK_TYPE,
    MessageRecord,
    decode_record,
    parse_offset_msg_id,
)
from protocol.rpc import Connection
from protocol.transaction import CheckTransactionStateRequestHeader, EndTransactionRequestHeader
from tests.component.broker_fixtures import (
    TEST_DEADLINE_S,
    Arrivals,
    BrokerEnv,
    Sent,
    broker_env,
    expect,
    message_properties,
    send_header,
    wait_until,
)

HALF = "RMQ_SYS_TRANS_HALF_TOPIC"
OP = "RMQ_SYS_TRANS_OP_HALF_TOPIC"
#: Checks within a second in these tests (RocketMQ: 6 s, then every 30 s).
FAST_CHECKS = {"transaction_timeout_s": 0.3, "transaction_check_interval_s": 0.3}


async def send_half(
    env: BrokerEnv,
    topic: str,
    body: bytes = b"tx",
    *,
    group: str = "PG",
    queue_id: int = 1,
    extra: dict[str, str] | None = None,
) -> Sent:
    props = message_properties(
        tags="TagA", extra={"TRAN_MSG": "true", "PGROUP": group, **(extra or {})}
    )
    header = attrs.evolve(
        send_header(topic, properties=props, queue_id=queue_id, producer_group=group),
        sys_flag=SYSFLAG_TRANSACTION_PREPARED_TYPE,
    )
    response = expect(
        await env.call(
            RequestCode.SEND_MESSAGE_V2, SendMessageRequestHeaderV2.from_v1(header), body
        ),
        ResponseCode.SUCCESS,
    )
    ext = response.ext_fields
    return Sent(
        msg_id=ext["msgId"],
        queue_id=int(ext["queueId"]),
        queue_offset=int(ext["queueOffset"]),
        response=response,
    )


def end_header(
    sent: Sent, value: int, *, group: str = "PG", from_check: bool | None = None
) -> EndTransactionRequestHeader:
    return EndTransactionRequestHeader(
        producer_group=group,
        tran_state_table_offset=sent.queue_offset,
        commit_log_offset=parse_offset_msg_id(sent.msg_id)[2],
        commit_or_rollback=value,
        msg_id=sent.response.ext_fields.get("transactionId", ""),
        from_transaction_check=from_check,
    )


async def end(env: BrokerEnv, header: EndTransactionRequestHeader) -> RemotingCommand:
    return await env.call(RequestCode.END_TRANSACTION, header)


async def visible(env: BrokerEnv, topic: str, queue_id: int = 1) -> list[MessageRecord]:
    return await env.pull_all(topic, queue_id)


async def test_commit_makes_the_message_visible_once(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            sent = await send_half(env, "T", b"order-1")
            assert sent.queue_id == 1  # the real queue; queueOffset is the half queue offset
            assert await visible(env, "T") == []
            (parked,) = await env.pull_all(HALF, 0, group="TOOLS_CONSUMER")
            assert parked.properties["REAL_TOPIC"] == "T"
            assert parked.properties["REAL_QID"] == "1"
            assert parked.properties["TRAN_MSG"] == "true"

            expect(await end(env, end_header(sent, SYSFLAG_TRANSACTION_COMMIT_TYPE)), 0)
            (msg,) = await visible(env, "T")
            assert msg.body == b"order-1" and msg.tags == "TagA"
            assert msg.sys_flag & 0xC == SYSFLAG_TRANSACTION_COMMIT_TYPE
            assert msg.properties["__transactionId__"] == parked.uniq_key == msg.uniq_key
            assert msg.properties["PGROUP"] == "PG"
            assert "TRAN_MSG" not in msg.properties and "REAL_TOPIC" not in msg.properties
            assert msg.prepared_transaction_offset == parked.physical_offset

            again = expect(await end(env, end_header(sent, SYSFLAG_TRANSACTION_COMMIT_TYPE)), 0)
            assert "already committed" in (again.remark or "")
            contrary = expect(
                await end(env, end_header(sent, SYSFLAG_TRANSACTION_ROLLBACK_TYPE)),
                ResponseCode.SYSTEM_ERROR,
            )
            assert "already resolved (COMMIT)" in (contrary.remark or "")
            assert len(await visible(env, "T")) == 1
            (op,) = await env.pull_all(OP, 0, group="TOOLS_CONSUMER")
            assert op.body == str(sent.queue_offset).encode() and op.tags == "d"


async def test_rollback_is_never_visible(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, **FAST_CHECKS) as env:
            await env.create_topic("T", queues=2)
            sent = await send_half(env, "T")
            expect(await end(env, end_header(sent, SYSFLAG_TRANSACTION_ROLLBACK_TYPE)), 0)
            expect(
                await end(env, end_header(sent, SYSFLAG_TRANSACTION_COMMIT_TYPE)),
                ResponseCode.SYSTEM_ERROR,
            )
            unknown = expect(await end(env, end_header(sent, SYSFLAG_TRANSACTION_NOT_TYPE)), 0)
            assert "checked" in (unknown.remark or "")
            await trio.sleep(1.0)  # past several check rounds: nothing is checked or shown
            assert await visible(env, "T") == []
            assert (await env.runtime_info())["transactionChecksSent"] == "0"


async def test_bad_end_transaction_is_refused_and_shows_nothing(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            sent = await send_half(env, "T")
            plain = await env.send_ok("T", b"plain", queue_id=0)
            commit = SYSFLAG_TRANSACTION_COMMIT_TYPE
            cases = [
                (
                    attrs.evolve(end_header(sent, commit), commit_log_offset=10**12),
                    ResponseCode.SYSTEM_ERROR,
                    "Find prepared transaction message failed",
                ),
                (
                    attrs.evolve(
                        end_header(sent, commit),
                        commit_log_offset=parse_offset_msg_id(plain.msg_id)[2],
                    ),
                    ResponseCode.SYSTEM_ERROR,
                    "is not a half message",
                ),
                (
                    end_header(sent, commit, group="OTHER"),
                    ResponseCode.SYSTEM_ERROR,
                    "producer group wrong",
                ),
                (
                    attrs.evolve(end_header(sent, commit), tran_state_table_offset=99),
                    ResponseCode.SYSTEM_ERROR,
                    "transaction state table offset wrong",
                ),
                (
                    attrs.evolve(end_header(sent, commit), commit_or_rollback=5),
                    ResponseCode.INVALID_PARAMETER,
                    "commitOrRollback",
                ),
            ]
            for header, code, remark in cases:
                response = expect(await end(env, header), code)
                assert remark in (response.remark or ""), response.remark
            raw = await env.call(
                RequestCode.END_TRANSACTION, {"producerGroup": "PG", "commitOrRollback": "8"}
            )
            assert raw.code == ResponseCode.SYSTEM_ERROR and "tranStateTableOffset" in (
                raw.remark or ""
            )
            assert [m.body for m in await env.pull_all("T", 0)] == [b"plain"]
            assert await visible(env, "T") == []
            # The half is still open: the right END_TRANSACTION still works.
            expect(await end(env, end_header(sent, commit)), 0)
            assert len(await visible(env, "T")) == 1


async def test_a_half_message_cannot_be_batched(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            header = attrs.evolve(
                send_header("T", batch=True), sys_flag=SYSFLAG_TRANSACTION_PREPARED_TYPE
            )
            body = encode_batch_body([BatchItem(body=b"x", flag=0, properties={"UNIQ_KEY": "A"})])
            response = expect(
                await env.call(
                    RequestCode.SEND_BATCH_MESSAGE, SendMessageRequestHeaderV2.from_v1(header), body
                ),
                ResponseCode.MESSAGE_ILLEGAL,
            )
            assert "batch" in (response.remark or "")
            assert await env.pull_all(HALF, 0, group="TOOLS_CONSUMER") == []


class Checker:
    """A producer's CHECK_TRANSACTION_STATE handler: records each check, answers ``answer``."""

    def __init__(self) -> None:
        self.checks: Arrivals[tuple[CheckTransactionStateRequestHeader, MessageRecord]] = Arrivals()
        self.answer: int | None = None

    async def handle(self, request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
        header = CheckTransactionStateRequestHeader.from_ext_fields(request.ext_fields)
        record, _ = decode_record(request.body)
        self.checks.add((header, record))
        if self.answer is not None:
            reply = EndTransactionRequestHeader(
                producer_group=record.properties["PGROUP"],
                tran_state_table_offset=header.tran_state_table_offset,
                commit_log_offset=header.commit_log_offset,
                commit_or_rollback=self.answer,
                msg_id=header.msg_id or "",
                transaction_id=header.transaction_id,
                from_transaction_check=True,
            )
            await conn.oneway(
                RemotingCommand.request(
                    RequestCode.END_TRANSACTION, reply.to_ext_fields(), oneway=True
                )
            )
        return None


@asynccontextmanager
async def checked_broker(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[BrokerEnv, Checker]]:
    """A broker with topic T (2 queues) whose transaction checks reach a ``Checker`` (the
    producer of group PG)."""
    checker = Checker()
    handlers = {RequestCode.CHECK_TRANSACTION_STATE: checker.handle}
    async with broker_env(tmp_path, client_handlers=handlers, **(FAST_CHECKS | overrides)) as env:
        await env.create_topic("T", queues=2)
        await env.heartbeat("producer-1", producer_group="PG")
        yield env, checker


async def test_an_open_half_is_checked_and_the_answer_applied(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with checked_broker(tmp_path) as (env, checker):
            sent = await send_half(env, "T", b"checked")
            checker.answer = None  # the first check finds the transaction still unknown
            ((header, record),) = await checker.checks.wait_for(1, timeout_s=5.0)
            assert header.tran_state_table_offset == sent.queue_offset
            assert header.commit_log_offset == parse_offset_msg_id(sent.msg_id)[2]
            assert header.transaction_id == sent.response.ext_fields["transactionId"]
            assert header.topic == "T" and header.broker_name == env.config.broker_name
            assert (record.topic, record.queue_id, record.body) == ("T", 1, b"checked")
            assert record.properties["TRANSACTION_CHECK_TIMES"] == "1"
            checker.answer = SYSFLAG_TRANSACTION_COMMIT_TYPE
            await checker.checks.wait_for(2, timeout_s=5.0)

            async def committed() -> bool:
                return len(await visible(env, "T")) == 1

            await wait_until(committed, what="the checked transaction committed")
            assert checker.checks.items[1][1].properties["TRANSACTION_CHECK_TIMES"] == "2"
            await trio.sleep(1.0)  # resolved: no further checks, still one message
            assert len(checker.checks.items) == 2
            assert len(await visible(env, "T")) == 1


async def test_a_half_whose_first_check_time_is_no_number_is_checked_as_any(
    tmp_path: Path,
) -> None:
    """CHECK_IMMUNITY_TIME_IN_SECONDS "²" passed ``str.isdigit`` and failed ``int()`` in the
    check scan, which took the broker down, again at every restart. It is now ignored: the
    half is checked after the default timeout, and so is the next one."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with checked_broker(tmp_path) as (env, checker):
            odd = await send_half(env, "T", b"odd", extra={"CHECK_IMMUNITY_TIME_IN_SECONDS": "²"})
            plain = await send_half(env, "T", b"plain")
            checker.answer = SYSFLAG_TRANSACTION_COMMIT_TYPE
            checks = await checker.checks.wait_for(2, timeout_s=5.0)
            assert sorted(h.tran_state_table_offset for h, _ in checks) == [
                odd.queue_offset,
                plain.queue_offset,
            ]


async def test_unanswered_half_is_discarded_after_check_max(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with checked_broker(tmp_path, transaction_check_max=2) as (env, checker):
            sent = await send_half(env, "T", b"abandoned")

            async def discarded() -> bool:
                # TOPIC_NOT_EXIST until the first discard creates it.
                pulled = await env.pull("TRANS_CHECK_MAX_TIME_TOPIC", 0, 0, group="TOOLS")
                return pulled.code == ResponseCode.SUCCESS and len(pulled.records) == 1

            await wait_until(discarded, timeout_s=10.0, what="the half discarded")
            assert len(checker.checks.items) == 2
            assert await visible(env, "T") == []
            late = expect(
                await end(env, end_header(sent, SYSFLAG_TRANSACTION_COMMIT_TYPE)),
                ResponseCode.SYSTEM_ERROR,
            )
            assert "DISCARD" in (late.remark or "")


async def test_a_pending_half_is_checked_after_a_restart(tmp_path: Path) -> None:
    checker = Checker()
    checker.answer = SYSFLAG_TRANSACTION_COMMIT_TYPE
    handlers = {RequestCode.CHECK_TRANSACTION_STATE: checker.handle}
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(
            tmp_path,
            client_handlers=handlers,
            transaction_timeout_s=2.0,
            transaction_check_interval_s=0.3,
        ) as env:
            await env.create_topic("T", queues=2)
            committed_before = await send_half(env, "T", b"committed before")
            expect(await end(env, end_header(committed_before, SYSFLAG_TRANSACTION_COMMIT_TYPE)), 0)
            sent = await send_half(env, "T", b"open at restart")
            await env.restart()
            await env.heartbeat("producer-1", producer_group="PG")
            ((header, record),) = await checker.checks.wait_for(1, timeout_s=8.0)
            assert header.tran_state_table_offset == sent.queue_offset
            assert record.body == b"open at restart"

            async def both() -> bool:
                return len(await visible(env, "T")) == 2

            await wait_until(both, what="the open transaction committed after the restart")
            bodies = sorted(m.body for m in await visible(env, "T"))
            assert bodies == [b"committed before", b"open at restart"]
            again = expect(
                await end(env, end_header(committed_before, SYSFLAG_TRANSACTION_COMMIT_TYPE)), 0
            )
            assert "already" in (again.remark or "")
            assert (await env.runtime_info())["transactionHalfOpenNums"] == "0"


async def test_a_commit_whose_op_was_lost_is_not_written_twice(tmp_path: Path) -> None:
    """A crash between the commit record and its op (simulated: the broker stores the
    commit record alone, then restarts): the next commit writes only the op, and a due
    check resolves such a half without asking the producer.

    The one test here that reaches into the broker: no request can stop it between two
    appends, so the torn state is made with its own store_put."""
    checker = Checker()
    handlers = {RequestCode.CHECK_TRANSACTION_STATE: checker.handle}
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(
            tmp_path,
            client_handlers=handlers,
            transaction_timeout_s=2.0,  # the restart comes before the first check is due
            transaction_check_interval_s=0.3,
        ) as env:
            await env.heartbeat("producer-1", producer_group="PG")
            await env.create_topic("T", queues=2)
            sent = await send_half(env, "T", b"once")
            offset = parse_offset_msg_id(sent.msg_id)[2]
            raw = env.b.store.read_record(offset)
            assert raw is not None
            half, _ = decode_record(raw)
            env.b.store_put([commit_record(half)])  # the commit, and no op: the torn state
            await env.restart()
            assert [m.body for m in await visible(env, "T")] == [b"once"]
            expect(await end(env, end_header(sent, SYSFLAG_TRANSACTION_COMMIT_TYPE)), 0)
            assert [m.body for m in await visible(env, "T")] == [b"once"]
            ops = await env.pull_all(OP, 0, group="TOOLS_CONSUMER")
            assert [(o.tags, o.properties.get("TRAN_OP")) for o in ops] == [("d", "COMMIT")]

            checked = await send_half(env, "T", b"checked")
            raw = env.b.store.read_record(parse_offset_msg_id(checked.msg_id)[2])
            assert raw is not None
            env.b.store_put([commit_record(decode_record(raw)[0])])
            await env.restart()
            await env.heartbeat("producer-1", producer_group="PG")

            async def resolved() -> bool:
                return len(await env.pull_all(OP, 0, group="TOOLS_CONSUMER")) == 2

            await wait_until(resolved, what="the torn half resolved by its due check")
            assert sorted(m.body for m in await visible(env, "T")) == [b"checked", b"once"]
            assert checker.checks.items == []
