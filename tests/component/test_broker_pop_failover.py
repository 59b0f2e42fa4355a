"""Pop checkpoints and acks are replicated: a slave that takes over as master knows them.

A master and its slave in this process (``pair`` from test_broker_replication); pops and
acks go to the master over the wire. The master then stops for good and the slave's store
is served as the new master: the popped messages that were not acked come back once their
invisible time lapses, the acked one never does.
"""

from __future__ import annotations

from pathlib import Path

import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.headers import QueryConsumerOffsetRequestHeader
from protocol.message import iter_records
from protocol.pop import (
    AckMessageRequestHeader,
    PopMessageRequestHeader,
    PopMessageResponseHeader,
    ReceiptHandle,
    handles_for,
)
from tests.component.broker_fixtures import TEST_DEADLINE_S, BrokerEnv, expect, wait_until
from tests.component.test_broker_replication import pair

TOPIC = "PopRepl"
GROUP = "PopReplG"


async def pop(
    env: BrokerEnv, *, invisible_ms: int, poll_ms: int = 0
) -> list[tuple[bytes, ReceiptHandle]]:
    header = PopMessageRequestHeader(
        consumer_group=GROUP,
        topic=TOPIC,
        queue_id=-1,
        max_msg_nums=32,
        invisible_time=invisible_ms,
        poll_time=poll_ms,
        born_time=0,
        init_mode=0,
    )
    response = await env.call(RequestCode.POP_MESSAGE, header, timeout_s=poll_ms / 1000 + 5)
    if response.code != ResponseCode.SUCCESS:
        assert response.code in (ResponseCode.PULL_NOT_FOUND, ResponseCode.POLLING_TIMEOUT)
        return []
    reply = PopMessageResponseHeader.from_ext_fields(response.ext_fields)
    records = list(iter_records(response.body))
    handles = handles_for(
        [(r.topic, r.queue_id, r.queue_offset) for r in records], reply, env.config.broker_name
    )
    return [(r.body, h) for r, h in zip(records, handles, strict=True)]


async def ack(env: BrokerEnv, handle: ReceiptHandle) -> None:
    header = AckMessageRequestHeader(
        consumer_group=GROUP,
        topic=TOPIC,
        queue_id=handle.queue_id,
        extra_info=handle.encode(),
        offset=handle.queue_offset,
    )
    expect(await env.call(RequestCode.ACK_MESSAGE, header), ResponseCode.SUCCESS)


async def test_a_promoted_slave_redelivers_unacked_pops_and_not_acked_ones(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with pair(tmp_path) as p:
            await p.master.create_topic(TOPIC, queues=1)
            for body in (b"m0", b"m1", b"m2"):
                await p.master.send_ok(TOPIC, body)
            popped = dict(await pop(p.master, invisible_ms=3000))
            assert sorted(popped) == [b"m0", b"m1", b"m2"]
            await ack(p.master, popped[b"m1"])
            # The revive log (CommitLog) and the pop offset (consumer offsets) on the slave.
            await p.caught_up()

            async def offset_copied() -> bool:
                header = QueryConsumerOffsetRequestHeader(
                    consumer_group=GROUP, topic=TOPIC, queue_id=0
                )
                response = await p.slave.call(RequestCode.QUERY_CONSUMER_OFFSET, header)
                return response.ext_fields.get("offset") == "3"

            await wait_until(offset_copied, what="the pop offset on the slave")
            await p.master.stop()
            await p.slave.restart(broker_id=0, broker_role="ASYNC_MASTER")
            again: list[tuple[bytes, ReceiptHandle]] = []
            with trio.fail_after(10):
                while len(again) < 2:
                    again += await pop(p.slave, invisible_ms=10_000, poll_ms=1000)
            assert sorted(body for body, _ in again) == [b"m0", b"m2"]
            for _, handle in again:
                await ack(p.slave, handle)
            # The acked m1 never comes back.
            assert await pop(p.slave, invisible_ms=10_000, poll_ms=2500) == []
