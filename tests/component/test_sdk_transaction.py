"""The SDK's transactional producer against real in-process brokers over real sockets."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from client.admin import open_admin
from client.consumer import PullConsumer, PullStatus, open_pull_consumer
from client.message import Message, ReceivedMessage, SendResult, SendStatus
from client.transaction import LocalTransactionState, open_transaction_producer
from protocol.codes import RequestCode, ResponseCode
from protocol.errors import RocketError
from protocol.message import parse_offset_msg_id
from protocol.route import MessageQueue
from protocol.transaction import EndTransactionRequestHeader
from tests.component.sdk_fixtures import SdkCluster, sdk_cluster, wait_until
from tests.component.test_sdk_consumer_failover import (
    SLAVE,
    TOPIC,
    master_and_slave,
    wait_replicated,
)

DEADLINE_S = 30.0
FAST_CHECKS = {"transaction_timeout_s": 0.3, "transaction_check_interval_s": 0.3}


async def messages_of(reader: PullConsumer, topic: str, queues: int = 4) -> list[ReceivedMessage]:
    out: list[ReceivedMessage] = []
    for qid in range(queues):
        queue = MessageQueue(topic=topic, broker_name="broker-a", queue_id=qid)
        pulled = await reader.pull(queue, 0, 32)
        if pulled.status is PullStatus.FOUND:
            out.extend(pulled.messages)
    return out


async def test_commit_rollback_and_a_checked_transaction(tmp_path: Path) -> None:
    checked: list[ReceivedMessage] = []
    decisions = {"later": LocalTransactionState.COMMIT_MESSAGE}

    async def checker(message: ReceivedMessage) -> LocalTransactionState:
        checked.append(message)
        return decisions.get(message.body.decode(), LocalTransactionState.UNKNOW)

    def local(message: Message, result: SendResult) -> LocalTransactionState:
        assert result.status is SendStatus.SEND_OK
        return {
            b"yes": LocalTransactionState.COMMIT_MESSAGE,
            b"no": LocalTransactionState.ROLLBACK_MESSAGE,
        }.get(message.body, LocalTransactionState.UNKNOW)

    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path, **FAST_CHECKS) as c,
            open_transaction_producer(c.namesrv, group="TXG", checker=checker) as producer,
            open_pull_consumer(c.namesrv, group="reader") as reader,
        ):
            await c.create_topic("Orders")
            committed = await producer.send_in_transaction(
                Message(topic="Orders", body=b"yes", tags="t"), local
            )
            assert committed.local_state is LocalTransactionState.COMMIT_MESSAGE
            assert committed.end_error is None
            rolled = await producer.send_in_transaction(Message(topic="Orders", body=b"no"), local)
            assert rolled.local_state is LocalTransactionState.ROLLBACK_MESSAGE
            assert rolled.end_error is None
            open_one = await producer.send_in_transaction(
                Message(topic="Orders", body=b"later"), local
            )
            assert open_one.local_state is LocalTransactionState.UNKNOW

            async def later_committed() -> bool:
                bodies = sorted(m.body for m in await messages_of(reader, "Orders"))
                return bodies == [b"later", b"yes"]

            await wait_until(later_committed, what="the checked transaction committed")
            assert [m.body for m in checked] == [b"later"]
            assert checked[0].topic == "Orders"
            assert checked[0].msg_id == open_one.send_result.msg_id
            assert producer.checks_answered == 1
            (yes,) = [m for m in await messages_of(reader, "Orders") if m.body == b"yes"]
            assert yes.msg_id == committed.send_result.msg_id
            assert yes.tags == "t"
            await trio.sleep(1.0)  # more check rounds: nothing changes
            assert len(await messages_of(reader, "Orders")) == 2
            assert len(checked) == 1


async def test_a_failing_local_transaction_is_checked_then_rolled_back(tmp_path: Path) -> None:
    async def checker(message: ReceivedMessage) -> LocalTransactionState:
        return LocalTransactionState.ROLLBACK_MESSAGE

    async def local(message: Message, result: SendResult) -> LocalTransactionState:
        raise RuntimeError("database down")

    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path, **FAST_CHECKS) as c,
            open_transaction_producer(c.namesrv, group="TXG", checker=checker) as producer,
            open_pull_consumer(c.namesrv, group="reader") as reader,
            open_admin(c.namesrv) as admin,
        ):
            await c.create_topic("Orders")
            result = await producer.send_in_transaction(Message(topic="Orders", body=b"x"), local)
            assert result.local_state is LocalTransactionState.UNKNOW
            await wait_until(lambda: producer.checks_answered >= 1, what="a check answered")

            async def rolled_back() -> bool:
                (b,) = await admin.cluster_list()
                return b.table is not None and b.table["transactionHalfOpenNums"] == "0"

            await wait_until(rolled_back, what="the half rolled back")
            assert await messages_of(reader, "Orders") == []

            async def progress_saved() -> bool:
                try:
                    progress = await admin.consumer_progress("CID_RMQ_SYS_TRANS")
                except RocketError:
                    return False  # no offsets committed yet
                half = [q for q in progress.queues if q.queue.topic == "RMQ_SYS_TRANS_HALF_TOPIC"]
                return len(half) == 1 and half[0].consumer_offset == half[0].broker_offset == 1

            # The check progress shows as RocketMQ keeps it: CID_RMQ_SYS_TRANS's offsets.
            await wait_until(progress_saved, what="the check progress in consumerProgress")


async def test_a_slave_keeps_no_state_refuses_end_transaction_and_never_checks(
    tmp_path: Path,
) -> None:
    def unknown(message: Message, result: SendResult) -> LocalTransactionState:
        return LocalTransactionState.UNKNOW

    async def runtime(c: SdkCluster, addr: str) -> dict[str, str]:
        response = await c.call(addr, RequestCode.GET_BROKER_RUNTIME_INFO, {})
        table: dict[str, str] = json.loads(response.body)["table"]
        return table

    with trio.fail_after(DEADLINE_S):
        async with (
            master_and_slave(tmp_path, **FAST_CHECKS) as c,
            open_transaction_producer(
                c.namesrv, group="TXG", checker=lambda m: LocalTransactionState.UNKNOW
            ) as producer,
        ):
            sent = await producer.send_in_transaction(Message(topic=TOPIC, body=b"x"), unknown)
            slave = c.addr(SLAVE)
            await wait_replicated(c, c.addr("broker-a"), slave, TOPIC, 2)
            header = EndTransactionRequestHeader(
                producer_group="TXG",
                tran_state_table_offset=sent.send_result.queue_offset,
                commit_log_offset=parse_offset_msg_id(sent.send_result.offset_msg_id)[2],
                commit_or_rollback=LocalTransactionState.COMMIT_MESSAGE.wire_value,
                msg_id=sent.send_result.msg_id,
            )
            refused = await c.call(slave, RequestCode.END_TRANSACTION, header.to_ext_fields())
            assert refused.code == ResponseCode.SERVICE_NOT_AVAILABLE
            assert "send END_TRANSACTION to the master" in (refused.remark or "")

            async def checked_by_master() -> bool:
                return (await runtime(c, c.addr("broker-a")))["transactionChecksSent"] != "0"

            await wait_until(checked_by_master, what="the master checks the open half")
            on_slave = await runtime(c, slave)
            assert on_slave["transactionHalfOpenNums"] == "-1"
            assert on_slave["transactionChecksSent"] == "0"
