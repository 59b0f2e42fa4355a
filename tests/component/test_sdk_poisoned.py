"""One bad record never stops a queue (issue 13, rows 5 and 6), against a real broker.

Poisoned records are written the way an attacker would: a raw SEND_MESSAGE_V2 with
sysFlag bit 0 (compressed) and a body that is not zlib, and a 200 KiB zlib bomb that
inflates to 200 MiB. Store damage (a flipped body byte: CRC mismatch; a broken record
magic) is made by writing into the broker's CommitLog file, as a bad disk would. For push,
lite pull and pull consumers: the good messages around the bad ones are consumed, each
bad one is skipped, counted and logged, sent to the DLQ when the broker can find it, else
committed past, never redelivered, and the inflate never holds more than the cap.
"""

from __future__ import annotations

import os
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest
import trio

from client.consumer import (
    ConsumeFrom,
    MessageModel,
    PullStatus,
    dlq_topic,
    open_lite_pull_consumer,
    open_pull_consumer,
    open_push_consumer,
)
from client.message import Message, SendResult
from client.producer import Producer, open_producer
from protocol.codes import RequestCode, ResponseCode
from protocol.headers import SendMessageRequestHeaderV2
from protocol.message import SYSFLAG_COMPRESSED, parse_offset_msg_id
from protocol.route import MessageQueue
from tests.component.sdk_fixtures import SdkCluster, sdk_cluster, wait_until
from tests.component.test_sdk_consumer import FAST, Collector, committed

DEADLINE_S = 30.0
MIB = 1024 * 1024
TOPIC = "Poison"
QUEUE = MessageQueue(topic=TOPIC, broker_name="broker-a", queue_id=0)
#: What the consumers may allocate at most while meeting a 200 MiB bomb (before the fix:
#: 274 MB); the cap is 4 MiB, the rest is the test's own broker and clients.
PEAK_BYTES = 48 * MIB
#: The retry delay levels are 1 s here: anything sent back would be redelivered by then.
REDELIVERY_WINDOW_S = 2.0
OPTIONS = {**FAST, "retry_backoff_s": 0.1, "consume_from": ConsumeFrom.FIRST}


def bomb(inflated_bytes: int) -> bytes:
    packer = zlib.compressobj(9)
    chunk = bytes(MIB)
    return b"".join(
        [*(packer.compress(chunk) for _ in range(inflated_bytes // MIB)), packer.flush()]
    )


async def send_raw(c: SdkCluster, body: bytes, *, sys_flag: int) -> None:
    """A SEND_MESSAGE_V2 as any client may write it: the broker stores the body as given."""
    header = SendMessageRequestHeaderV2(
        a="attacker",
        b=TOPIC,
        c="TBW102",
        d=1,
        e=0,
        f=sys_flag,
        g=int(time.time() * 1000),
        h=0,
        i="",
        n="broker-a",
    )
    response = await c.call(
        c.addr("broker-a"), RequestCode.SEND_MESSAGE_V2, header.to_ext_fields(), body
    )
    assert response.code == ResponseCode.SUCCESS, response.remark


async def poisoned_queue(c: SdkCluster, producer: Producer) -> list[bytes]:
    """good-0, good-1, not-zlib, bomb, good-2, good-3 on one queue; the good bodies."""
    await c.create_topic(TOPIC, 1)
    good = [b"good-%d" % i for i in range(4)]
    for body in good[:2]:
        await producer.send(Message(topic=TOPIC, body=body))
    await send_raw(c, b"this is not zlib", sys_flag=SYSFLAG_COMPRESSED)
    await send_raw(c, bomb(200 * MIB), sys_flag=SYSFLAG_COMPRESSED)
    for body in good[2:]:
        await producer.send(Message(topic=TOPIC, body=body))
    return good


async def dlq_holds_the_two_bad_records(c: SdkCluster, group: str) -> None:
    """The DLQ copies are as bad as the originals: a pull skips both, naming them."""
    async with open_pull_consumer(c.namesrv, group="inspector") as reader:
        dlq = MessageQueue(topic=dlq_topic(group), broker_name="broker-a", queue_id=0)
        result = await reader.pull(dlq, 0, 32)
        assert result.messages == () and len(result.skipped) == 2, result
        assert reader.skipped_records == 2


@pytest.mark.parametrize("mode", ["concurrently", "orderly", "broadcasting"])
async def test_push_consumer_consumes_around_poisoned_records_and_dead_letters_them(
    tmp_path: Path, mode: str
) -> None:
    """The messages before and after a non-zlib body and a zlib bomb are all consumed; the
    two bad records are counted, sent to %DLQ%<group> (broadcasting: skipped, as failed
    messages are there), committed past, never redelivered; and memory stays bounded
    while meeting the bomb."""
    broadcasting = mode == "broadcasting"
    options = {
        **OPTIONS,
        "orderly": mode == "orderly",
        "message_model": MessageModel.BROADCASTING if broadcasting else MessageModel.CLUSTERING,
        "offset_store_dir": tmp_path / "offsets",
    }
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            good = await poisoned_queue(c, producer)
            collector = Collector()
            tracemalloc.start()
            try:
                async with open_push_consumer(
                    c.namesrv, group="G", listener=collector, subscriptions={TOPIC: "*"}, **options
                ) as consumer:

                    def settled() -> bool:
                        queue = consumer.statistics().queues.get(QUEUE)
                        return (
                            collector.count() >= 4
                            and queue is not None
                            and (queue.committable_offset == 6)
                        )

                    await wait_until(settled, what="good consumed, committable past the bad")
                    _, peak = tracemalloc.get_traced_memory()
                    await trio.sleep(REDELIVERY_WINDOW_S)
                    stats = consumer.statistics()
            finally:
                tracemalloc.stop()
            assert sorted(collector.bodies) == good
            dead = 0 if broadcasting else 2
            assert (stats.skipped_records, stats.dead_lettered, stats.sent_back) == (2, dead, 0)
            assert peak < PEAK_BYTES, peak
            if not broadcasting:
                assert await committed(c, "G", TOPIC) == {0: 6}
                await dlq_holds_the_two_bad_records(c, "G")


async def test_lite_pull_consumer_polls_around_poisoned_records(tmp_path: Path) -> None:
    """``poll`` returns every good message; the bad ones go to the DLQ, the queue moves on."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            good = await poisoned_queue(c, producer)
            async with open_lite_pull_consumer(
                c.namesrv, group="L", subscriptions={TOPIC: "*"}, **OPTIONS
            ) as consumer:
                got: list[bytes] = []
                while len(got) < 4:
                    got += [m.body for m in await consumer.poll(timeout_s=1.0)]
                await consumer.commit()
                await wait_until(
                    lambda: consumer.statistics().dead_lettered == 2, what="bad dead-lettered"
                )
                await consumer.commit()
                assert await committed(c, "L", TOPIC) == {0: 6}
                assert await consumer.poll(timeout_s=REDELIVERY_WINDOW_S) == []
                assert consumer.statistics().skipped_records == 2
            assert sorted(got) == good
            await dlq_holds_the_two_bad_records(c, "L")


async def test_pull_consumer_returns_the_good_messages_and_lists_the_bad(tmp_path: Path) -> None:
    """One pull answers the four good messages and lists the two bad ones with their
    offsets; its next offset is past them all."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            good = await poisoned_queue(c, producer)
            async with open_pull_consumer(c.namesrv, group="P") as reader:
                result = await reader.pull(QUEUE, 0, 32)
                assert result.status is PullStatus.FOUND
                assert [m.body for m in result.messages] == good
                assert [m.queue_offset for m in result.messages] == [0, 1, 4, 5]
                assert [s.queue_offset for s in result.skipped] == [2, 3]
                assert "does not inflate" in result.skipped[0].reason
                assert "inflates past" in result.skipped[1].reason
                assert all(s.commit_log_offset is not None for s in result.skipped)
                assert result.next_begin_offset == 6 and reader.skipped_records == 2


# --- store damage -------------------------------------------------------------------------


def commitlog_file(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "broker-a").rglob("commitlog/00000000000000000000")
    return path


def damage(tmp_path: Path, result: SendResult, at: int, data: bytes) -> None:
    """Overwrite bytes of the record ``result`` names, ``at`` bytes into it."""
    _, _, commit_offset = parse_offset_msg_id(result.offset_msg_id)
    fd = os.open(commitlog_file(tmp_path), os.O_WRONLY)
    try:
        os.pwrite(fd, data, commit_offset + at)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("at", "data", "why"),
    [
        (88, b"X", "CRC mismatch"),  # the first body byte: the stored CRC no longer matches
        (4, b"\x00\x00\x00\x00", None),  # the magic: framing broken, the broker refuses it
    ],
)
async def test_a_damaged_record_the_broker_cannot_dead_letter_is_committed_past(
    tmp_path: Path, at: int, data: bytes, why: str | None
) -> None:
    """A record damaged in the CommitLog: the others are consumed and its offset is
    committed past. A bad body CRC reaches the SDK, which skips it with a logged reason
    (the broker refuses to copy it to the DLQ). A broken magic is no record at all: the
    broker never serves it (logged there), so the SDK only sees the offset jump."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c, open_producer(c.namesrv) as producer:
            await c.create_topic(TOPIC, 1)
            bodies = [b"body-%d" % i for i in range(5)]
            results = [await producer.send(Message(topic=TOPIC, body=b)) for b in bodies]
            damage(tmp_path, results[2], at, data)
            async with open_pull_consumer(c.namesrv, group="P") as reader:
                pulled = await reader.pull(QUEUE, 2, 32)  # the damaged record comes first
                assert [m.queue_offset for m in pulled.messages] == [3, 4]
                if why is None:
                    assert pulled.skipped == ()
                else:
                    assert [s.queue_offset for s in pulled.skipped] == [2]
                    assert why in pulled.skipped[0].reason
            collector = Collector()
            async with open_push_consumer(
                c.namesrv,
                group="G",
                listener=collector,
                subscriptions={TOPIC: "*"},
                message_model=MessageModel.CLUSTERING,
                **OPTIONS,
            ) as consumer:
                await wait_until(
                    lambda: consumer.statistics().queues[QUEUE].committable_offset == 5,
                    what="committable past the damaged record",
                )
                stats = consumer.statistics()
                skipped_by_sdk = 0 if why is None else 1
                assert (stats.skipped_records, stats.dead_lettered) == (skipped_by_sdk, 0)
            assert sorted(collector.bodies) == bodies[:2] + bodies[3:]
            assert await committed(c, "G", TOPIC) == {0: 5}
