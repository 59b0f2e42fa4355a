"""Transactions against real processes (``rmq cluster up --mode single``): commit, rollback
and a checked transaction through the SDK, then ``rmq admin transactionStatus``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from client.admin import open_admin
from client.consumer import PullStatus, open_pull_consumer
from client.message import Message, ReceivedMessage, SendResult
from client.transaction import LocalTransactionState, open_transaction_producer
from protocol.route import MessageQueue
from tests.integration.test_cluster_cli import NAMESRV_LINE, assert_ok, cluster_dir, rmq

pytestmark = pytest.mark.integration

TOPIC = "TxCli"


async def test_commit_rollback_check_and_transaction_status(tmp_path: Path) -> None:
    async with cluster_dir(tmp_path / "c") as root:
        done = await rmq(
            "cluster", "up", "--mode", "single", "--dir", str(root), "--namesrv-port", "0",
            "--broker-set", "transactionTimeOut=1000",
            "--broker-set", "transactionCheckInterval=500",
        )  # fmt: skip
        match = NAMESRV_LINE.match(assert_ok(done).splitlines()[0])
        assert match, done.describe()
        namesrv = match.group(1)

        def checker(message: ReceivedMessage) -> LocalTransactionState:
            return LocalTransactionState.COMMIT_MESSAGE

        def local(message: Message, result: SendResult) -> LocalTransactionState:
            return {
                b"commit": LocalTransactionState.COMMIT_MESSAGE,
                b"rollback": LocalTransactionState.ROLLBACK_MESSAGE,
            }.get(message.body, LocalTransactionState.UNKNOW)

        with trio.fail_after(30):
            async with (
                open_admin(namesrv) as admin,
                open_transaction_producer(namesrv, group="TXG", checker=checker) as producer,
                open_pull_consumer(namesrv, group="reader") as reader,
            ):
                await admin.create_topic(TOPIC, cluster="DefaultCluster", write_queue_nums=1,
                                         read_queue_nums=1)  # fmt: skip
                for body in (b"commit", b"rollback", b"ask me"):
                    result = await producer.send_in_transaction(
                        Message(topic=TOPIC, body=body), local
                    )
                    assert result.end_error is None, result

                queue = MessageQueue(topic=TOPIC, broker_name="broker-a", queue_id=0)
                while True:
                    pulled = await reader.pull(queue, 0, 32)
                    got = (
                        [m.body for m in pulled.messages]
                        if pulled.status is PullStatus.FOUND
                        else []
                    )
                    if len(got) >= 2:
                        break
                    await trio.sleep(0.1)
                assert got == [b"commit", b"ask me"]

            status = json.loads(
                assert_ok(await rmq("admin", "transactionStatus", "-n", namesrv, "--json"))
            )
            (broker,) = status
            assert broker["brokerName"] == "broker-a" and broker["halfOpen"] == 0
            assert broker["checksSent"] >= 1 and broker["discarded"] == 0
