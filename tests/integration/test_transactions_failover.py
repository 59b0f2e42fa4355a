"""Transactions across a failover, with real processes (``rmq cluster up --mode controller``).

Two half messages are stored on the master of broker-a and replicated; the master is
killed with SIGKILL. On the member elected next, one transaction is committed by an
explicit END_TRANSACTION naming the offsets the first master answered, the other is
checked by the new master (its check state rebuilt from the replicated half and op
queues) and committed by the producer's checker. Each message is then visible exactly
once, and a repeated commit adds nothing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from client.admin import AdminError, open_admin
from client.consumer import PullStatus, open_pull_consumer
from client.message import Message, ReceivedMessage, SendResult
from client.transaction import LocalTransactionState, open_transaction_producer
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError
from protocol.message import parse_offset_msg_id
from protocol.route import MessageQueue
from protocol.rpc import open_client
from protocol.transaction import EndTransactionRequestHeader
from tests.integration.test_cluster_cli import (
    NAMESRV_LINE,
    assert_ok,
    cluster_dir,
    read_record,
    rmq,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC = "TxFailover"
QUEUES = 2


def end_header(result: SendResult) -> EndTransactionRequestHeader:
    return EndTransactionRequestHeader(
        producer_group="TXG",
        tran_state_table_offset=result.queue_offset,
        commit_log_offset=parse_offset_msg_id(result.offset_msg_id)[2],
        commit_or_rollback=LocalTransactionState.COMMIT_MESSAGE.wire_value,
        msg_id=result.msg_id,
        transaction_id=result.msg_id,
    )


async def test_commit_and_check_on_the_new_master_show_each_message_once(
    tmp_path: Path,
) -> None:
    async with cluster_dir(tmp_path / "c") as root:
        done = await rmq(
            "cluster", "up", "--mode", "controller", "--dir", str(root), "--namesrv-port", "0",
            "--broker-set", "transactionTimeOut=3000",
            "--broker-set", "transactionCheckInterval=500",
        )  # fmt: skip
        matches = [NAMESRV_LINE.match(line) for line in assert_ok(done).splitlines()]
        found = [m.group(1) for m in matches if m]
        assert len(found) == 1, done.describe()
        namesrv = found[0]
        replicas = [line.split()[2] for line in done.stdout.splitlines() if " replica " in line]
        assert len(replicas) == 3, done.describe()
        pids = {n["address"]: int(n["pid"]) for n in read_record(root)["nodes"] if n["address"]}
        checked: list[bytes] = []

        def checker(message: ReceivedMessage) -> LocalTransactionState:
            checked.append(message.body)
            if message.body == b"checked on the new master":
                return LocalTransactionState.COMMIT_MESSAGE
            return LocalTransactionState.UNKNOW

        def unknown(message: Message, result: SendResult) -> LocalTransactionState:
            return LocalTransactionState.UNKNOW

        async with (
            open_admin(namesrv) as admin,
            open_transaction_producer(
                namesrv, group="TXG", checker=checker, heartbeat_interval_s=1.0
            ) as producer,
            open_pull_consumer(namesrv, group="reader") as reader,
            open_client(name="tx-failover", default_timeout_s=3.0) as client,
        ):
            with trio.fail_after(30):
                while True:
                    try:
                        await admin.create_topic(
                            TOPIC,
                            cluster="DefaultCluster",
                            read_queue_nums=QUEUES,
                            write_queue_nums=QUEUES,
                        )
                        break
                    except (RocketError, AdminError):
                        await trio.sleep(0.2)  # no master elected yet
                # Every replica holds the topic's config (copied from the master every
                # few seconds) before the master dies, so the new master serves pulls.
                for addr in replicas:
                    while True:
                        answer = await client.call(
                            addr,
                            RemotingCommand.request(RequestCode.GET_ALL_TOPIC_CONFIG),
                            timeout_s=3.0,
                        )
                        if TOPIC.encode() in answer.body:
                            break
                        await trio.sleep(0.2)
                committed = await producer.send_in_transaction(
                    Message(topic=TOPIC, body=b"committed on the new master"), unknown
                )
                checked_one = await producer.send_in_transaction(
                    Message(topic=TOPIC, body=b"checked on the new master"), unknown
                )
            ip, port, _ = parse_offset_msg_id(committed.send_result.offset_msg_id)
            old_master = f"{ip}:{port}"
            os.kill(pids[old_master], signal.SIGKILL)

            request = RemotingCommand.request(
                RequestCode.END_TRANSACTION, end_header(committed.send_result).to_ext_fields()
            )
            with trio.fail_after(40):
                new_master = None
                while new_master is None:
                    route = await admin.topic_route(TOPIC)
                    (data,) = route.broker_datas
                    addr = data.broker_addrs.get(0)
                    if addr is not None and addr != old_master:
                        try:
                            answer = await client.call(addr, request, timeout_s=3.0)
                        except RocketError:
                            answer = None
                        if answer is not None and answer.code == ResponseCode.SUCCESS:
                            new_master = addr
                            continue
                    await trio.sleep(0.2)

                async def bodies() -> list[bytes]:
                    out: list[bytes] = []
                    for qid in range(QUEUES):
                        queue = MessageQueue(topic=TOPIC, broker_name="broker-a", queue_id=qid)
                        pulled = await reader.pull(queue, 0, 32)
                        if pulled.status is PullStatus.FOUND:
                            out.extend(m.body for m in pulled.messages)
                    return sorted(out)

                expected = [b"checked on the new master", b"committed on the new master"]
                while True:
                    if await bodies() == expected:
                        break
                    await trio.sleep(0.2)
            # Repeats add nothing: the explicit commit again, and more check rounds.
            again = await client.call(new_master, request, timeout_s=3.0)
            assert again.code == ResponseCode.SUCCESS and "already" in (again.remark or "")
            await trio.sleep(2.0)
            assert await bodies() == expected
            assert b"checked on the new master" in checked
            assert checked_one.local_state is LocalTransactionState.UNKNOW
