"""SQL92 with a real broker process: an SDK push consumer gets exactly the matching
messages through long polling; a malformed expression fails its start with the broker's
parse error."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from client.admin import open_admin
from client.consumer import ConsumeFrom, ConsumeResult, MessageSelector, open_push_consumer
from client.message import Message, ReceivedMessage
from client.producer import open_producer
from protocol.errors import ServerError
from tests.integration.broker_wire import broker_process
from tests.support.processes import namesrv_process

pytestmark = pytest.mark.integration

EXPR = "kind = 'order' AND amount BETWEEN 100 AND 500"
SENT = [("order", 100), ("order", 99), ("refund", 200), ("order", 500), ("order", 250)]
SENT += [("order", 501), ("", 300)]


async def test_sql92_push_consumer_against_a_broker_process(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with namesrv_process() as ns, broker_process(ns.address, tmp_path / "b") as b:
            async with open_admin(ns.address) as admin:
                await admin.create_topic(
                    "SqlP", broker_addr=b.address, read_queue_nums=2, write_queue_nums=2
                )
            got: list[ReceivedMessage] = []
            enough = trio.Event()

            async def listener(messages: list[ReceivedMessage]) -> ConsumeResult:
                got.extend(messages)
                if len(got) >= 3:
                    enough.set()
                return ConsumeResult.SUCCESS

            want: list[bytes] = []
            async with (
                open_producer(ns.address) as producer,
                open_push_consumer(
                    ns.address,
                    group="SqlG",
                    listener=listener,
                    subscriptions={"SqlP": MessageSelector.by_sql(EXPR)},
                    consume_from=ConsumeFrom.FIRST,
                    heartbeat_interval_s=1.0,
                ),
            ):
                await trio.sleep(1.0)  # its pulls are held by now
                for i, (kind, amount) in enumerate(SENT):
                    props = {"kind": kind, "amount": str(amount)} if kind else {"amount": "300"}
                    await producer.send(Message(topic="SqlP", body=b"%d" % i, properties=props))
                    if kind == "order" and 100 <= amount <= 500:
                        want.append(b"%d" % i)
                await enough.wait()
                await trio.sleep(1.0)  # nothing else comes
            assert sorted(m.body for m in got) == sorted(want)

            with pytest.raises(ServerError, match="amount BETWEEN 1 AND"):
                async with open_push_consumer(
                    ns.address,
                    group="SqlBad",
                    listener=listener,
                    subscriptions={"SqlP": MessageSelector.by_sql("amount BETWEEN 1 AND")},
                ):
                    pass
