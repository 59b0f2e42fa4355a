"""Send ten messages and consume them back (README's example; runs as written)."""

import os

import trio

from client.admin import open_admin
from client.consumer import ConsumeFrom, ConsumeResult, open_push_consumer
from client.message import Message
from client.producer import open_producer

NAMESRV = os.environ.get("NAMESRV_ADDR", "127.0.0.1:9876")


async def main() -> None:
    async with open_admin(NAMESRV) as admin:  # topics must exist before sending
        await admin.create_topic(
            "DemoTopic", cluster="DefaultCluster", read_queue_nums=4, write_queue_nums=4
        )
    async with open_producer(NAMESRV, group="demo-producer") as producer:
        for i in range(10):
            message = Message(
                topic="DemoTopic", body=f"hello {i}".encode(), tags="TagA", keys=[f"order-{i}"]
            )
            result = await producer.send(message)
            print("sent", result.msg_id, result.status.name)

    received: set[str] = set()
    all_received = trio.Event()

    async def listener(messages):  # at-least-once: a message may come twice, never zero times
        for m in messages:
            print("got", m.msg_id, m.tags, m.body.decode())
            received.add(m.msg_id)
        if len(received) >= 10:
            all_received.set()
        return ConsumeResult.SUCCESS

    async with open_push_consumer(
        NAMESRV,
        group="demo-consumer",
        subscriptions={"DemoTopic": "TagA"},
        listener=listener,
        consume_from=ConsumeFrom.FIRST,
    ):
        with trio.fail_after(30):
            await all_received.wait()
    print(f"{len(received)} messages consumed")


trio.run(main)
