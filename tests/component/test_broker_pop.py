"""Pop consumption (POP_MESSAGE, ACK_MESSAGE, CHANGE_MESSAGE_INVISIBLETIME) through the SDK's
SimpleConsumer against a NameServer and a real broker in this process (port 0).

Invisible times are one second (the broker's minimum), so a message not acked comes back
through ``%RETRY%<group>_<topic>`` about a second later; every wait is under a deadline.
Messages are told apart by body, so a loss or an extra delivery is visible.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from broker.pop import service as revive_service
from broker.pop.checkpoint import Ack
from client.consumer import PoppedMessage, SimpleConsumer, open_pull_consumer, open_simple_consumer
from client.message import Message
from client.producer import open_producer
from protocol.bodies import SubscriptionGroupConfig
from protocol.codes import RequestCode, ResponseCode
from protocol.errors import ServerError
from protocol.message import iter_records
from protocol.pop import (
    AckMessageRequestHeader,
    BatchAckEntry,
    encode_batch_ack_body,
    pop_retry_topic,
)
from protocol.route import MessageQueue
from tests.component.sdk_fixtures import SdkCluster, sdk_cluster

DEADLINE_S = 25.0
TOPIC = "PopT"
GROUP = "PopG"


async def receive_until(
    consumer: SimpleConsumer,
    want: int,
    *,
    invisible_s: float = 1.0,
    timeout_s: float = 10.0,
    order: bool = False,
) -> list[PoppedMessage]:
    """Receive until ``want`` messages came (or fail after ``timeout_s``)."""
    got: list[PoppedMessage] = []
    with trio.fail_after(timeout_s):
        while len(got) < want:
            got += await consumer.receive(
                TOPIC, max_nums=32, invisible_s=invisible_s, long_poll_s=0.5, order=order
            )
    return got


async def send_bodies(
    namesrv: str, bodies: list[bytes], *, sharding_key: str | None = None
) -> None:
    async with open_producer(namesrv, auto_batch=False) as producer:
        for body in bodies:
            await producer.send(Message(topic=TOPIC, body=body), sharding_key=sharding_key)


async def set_group(c: SdkCluster, **fields: object) -> None:
    config = SubscriptionGroupConfig(group_name=GROUP, **fields)  # type: ignore[arg-type]
    response = await c.call(
        c.addr("broker-a"), RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, {}, config.to_bytes()
    )
    assert response.code == ResponseCode.SUCCESS, response.remark


async def test_acked_messages_stay_acked_and_the_rest_come_back(tmp_path: Path) -> None:
    """Of four popped messages two are acked: only the other two come again, through the
    group's pop retry topic, with the same message id and delivery attempt 2."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 2)
            await send_bodies(c.namesrv, [b"m0", b"m1", b"m2", b"m3"])
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                first = await receive_until(consumer, 4, invisible_s=1.0)
                assert sorted(p.message.body for p in first) == [b"m0", b"m1", b"m2", b"m3"]
                assert all(p.delivery_attempt == 1 for p in first)
                by_body = {p.message.body: p for p in first}
                await consumer.ack(by_body[b"m0"])
                await consumer.ack(by_body[b"m2"])
                again = await receive_until(consumer, 2, timeout_s=10.0)
                assert sorted(p.message.body for p in again) == [b"m1", b"m3"]
                assert all(p.delivery_attempt == 2 for p in again)
                assert {p.message.topic for p in again} == {pop_retry_topic(TOPIC, GROUP)}
                for p in again:
                    assert p.message.msg_id == by_body[p.message.body].message.msg_id
                    await consumer.ack(p)
                # Acked everywhere: nothing more within two invisible times.
                assert await consumer.receive(TOPIC, invisible_s=1.0, long_poll_s=2.5) == []


async def test_change_invisible_time_extends_and_nacks(tmp_path: Path) -> None:
    """Extending keeps a message away past its first invisible time; a nack (0 s) brings
    one back at once; the new handle acks it."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 1)
            await send_bodies(c.namesrv, [b"keep", b"nack"])
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                got = {p.message.body: p for p in await receive_until(consumer, 2)}
                kept = await consumer.change_invisible(got[b"keep"], 8.0)
                assert kept.handle.pop_time_ms >= got[b"keep"].handle.pop_time_ms
                await consumer.change_invisible(got[b"nack"], 0.0)
                (back,) = await receive_until(consumer, 1, timeout_s=5.0)
                assert back.message.body == b"nack" and back.delivery_attempt == 2
                await consumer.ack(back)
                # "keep" would have been due a second after the pop: not seen in 2.5 s.
                assert await consumer.receive(TOPIC, invisible_s=1.0, long_poll_s=2.5) == []
                await consumer.ack(kept)


async def test_attempts_past_the_groups_max_go_to_the_dlq(tmp_path: Path) -> None:
    """With retryMaxTimes 1 a message never acked is delivered twice, then lands in
    %DLQ%<group> with reconsumeTimes 2."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 1)
            await set_group(c, retry_max_times=1)
            await send_bodies(c.namesrv, [b"poison"])
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                attempts = []
                for _ in range(2):
                    (p,) = await receive_until(consumer, 1, timeout_s=8.0)
                    attempts.append(p.delivery_attempt)
                assert attempts == [1, 2]
                assert await consumer.receive(TOPIC, invisible_s=1.0, long_poll_s=2.5) == []
            async with open_pull_consumer(c.namesrv, group="reader") as reader:
                dlq = MessageQueue(topic=f"%DLQ%{GROUP}", broker_name="broker-a", queue_id=0)
                with trio.fail_after(5):
                    while True:
                        try:
                            result = await reader.pull(dlq, 0, long_poll_s=0.5)
                        except ServerError:
                            await trio.sleep(0.2)  # the DLQ topic's route is on its way
                            continue
                        if result.messages:
                            break
                (dead,) = result.messages
                assert dead.body == b"poison" and dead.reconsume_times == 2


@pytest.mark.parametrize("read_budget", [8192, 1])
async def test_a_restart_forgets_no_ack_and_loses_no_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_budget: int
) -> None:
    """Pop three, ack one, restart the broker before the invisible time lapses: after the
    restart exactly the two unacked messages come back (the revive log is re-read, also
    when a round may read only one record of it and must not decide before the end)."""
    monkeypatch.setattr(revive_service, "_READ_BUDGET", read_budget)
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path, flush_disk_type="SYNC_FLUSH") as c:
            await c.create_topic(TOPIC, 1)
            await send_bodies(c.namesrv, [b"a", b"b", b"c"])
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                got = {p.message.body: p for p in await receive_until(consumer, 3, invisible_s=3.0)}
                await consumer.ack(got[b"b"])
            await c.stop_broker("broker-a")
            await c.start_broker("broker-a")
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                again = await receive_until(consumer, 2, timeout_s=12.0)
                assert sorted(p.message.body for p in again) == [b"a", b"c"]
                for p in again:
                    await consumer.ack(p)
                assert await consumer.receive(TOPIC, invisible_s=1.0, long_poll_s=2.0) == []


async def test_order_pop_holds_the_queue_until_acked(tmp_path: Path) -> None:
    """An order pop holds its queue: nothing more of it while the batch is out; acked, the
    next messages come in order; not acked, the same batch comes again with attempt 2."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 1)
            await send_bodies(c.namesrv, [b"o0", b"o1", b"o2"], sharding_key="k")
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                batch = await consumer.receive(TOPIC, max_nums=2, invisible_s=1.0, order=True)
                assert [p.message.body for p in batch] == [b"o0", b"o1"]
                assert await consumer.receive(TOPIC, max_nums=2, order=True) == []
                # Not acked: the same two again once the invisible time lapsed.
                await trio.sleep(1.1)
                again = await consumer.receive(TOPIC, max_nums=2, invisible_s=5.0, order=True)
                assert [p.message.body for p in again] == [b"o0", b"o1"]
                assert [p.delivery_attempt for p in again] == [2, 2]
                for p in again:
                    await consumer.ack(p)
                rest = await consumer.receive(TOPIC, max_nums=2, invisible_s=5.0, order=True)
                assert [p.message.body for p in rest] == [b"o2"]
                assert rest[0].delivery_attempt == 1


async def test_a_malformed_handle_is_refused_with_invalid_parameter(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 1)
            for extra in ("", "1 2 3", "x 1 1000 0 0 broker-a 0 5", "0 1 1000 0 7 broker-a 0 5"):
                header = AckMessageRequestHeader(
                    consumer_group=GROUP, topic=TOPIC, queue_id=0, extra_info=extra, offset=5
                )
                response = await c.call(
                    c.addr("broker-a"), RequestCode.ACK_MESSAGE, header.to_ext_fields()
                )
                assert response.code == ResponseCode.INVALID_PARAMETER, (extra, response.remark)
                assert response.remark


async def test_a_handle_naming_a_queue_or_offset_its_topic_lacks_is_refused(tmp_path: Path) -> None:
    # Well-formed but forged: each was taken and left a revive record for a message that
    # never was, which the revive then looked for (found by a live fuzz).
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 2)
            await set_group(c)
            for queue_id, retry, topic in (
                (2, "0", TOPIC),
                (1, "1", pop_retry_topic(TOPIC, GROUP)),
            ):
                extra = f"0 1700000000000 60000 0 {retry} broker-a {queue_id} 0"
                for code, ext in (
                    (RequestCode.ACK_MESSAGE, {}),
                    (RequestCode.CHANGE_MESSAGE_INVISIBLETIME, {"invisibleTime": "60000"}),
                ):
                    header = AckMessageRequestHeader(
                        consumer_group=GROUP,
                        topic=TOPIC,
                        queue_id=queue_id,
                        extra_info=extra,
                        offset=0,
                    )
                    response = await c.call(
                        c.addr("broker-a"), code, {**header.to_ext_fields(), **ext}
                    )
                    assert response.code == ResponseCode.MESSAGE_ILLEGAL, response.remark
                    assert f"queueId[{queue_id}] is illegal, topic:[{topic}]" in (
                        response.remark or ""
                    )
            # A queue the topic has, at an offset past its end (it holds nothing yet).
            past = AckMessageRequestHeader(
                consumer_group=GROUP,
                topic=TOPIC,
                queue_id=1,
                extra_info="0 1700000000000 60000 0 0 broker-a 1 7",
                offset=7,
            )
            response = await c.call(
                c.addr("broker-a"), RequestCode.ACK_MESSAGE, past.to_ext_fields()
            )
            assert response.code == ResponseCode.NO_MESSAGE, response.remark
            assert "offset is illegal, key:PopT@1, commit:7, store:0~0" in (response.remark or "")


async def test_a_batch_ack_leaves_out_offsets_its_queue_lacks(tmp_path: Path) -> None:
    """A batch ack's bit set can name any offset: those past the queue's end are left out
    (Java's AckMessageProcessor does the same), so an all-forged entry writes no revive
    record, and a mixed one writes a record of the held offsets only."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 1)
            await set_group(c)
            await send_bodies(c.namesrv, [b"h0", b"h1"])  # queue 0 holds offsets 0 and 1
            broker = c.broker("broker-a")
            revive = broker.pop.revive

            def revive_records() -> int:  # in revive queue 0, the entries' reviveQid
                return broker.store.max_offset(revive.topic, 0)

            def entry(*offsets: int) -> BatchAckEntry:
                return BatchAckEntry(
                    group=GROUP,
                    topic=TOPIC,
                    retry="0",
                    start_offset=0,
                    queue_id=0,
                    revive_qid=0,
                    pop_time_ms=1_700_000_000_000,
                    invisible_time_ms=60_000,
                    offsets=offsets,
                )

            before = revive_records()
            forged = encode_batch_ack_body("broker-a", [entry(5, 900)])
            response = await c.call(c.addr("broker-a"), RequestCode.BATCH_ACK_MESSAGE, {}, forged)
            assert response.code == ResponseCode.SUCCESS, response.remark
            assert revive_records() == before
            mixed = encode_batch_ack_body("broker-a", [entry(1, 7)])
            response = await c.call(c.addr("broker-a"), RequestCode.BATCH_ACK_MESSAGE, {}, mixed)
            assert response.code == ResponseCode.SUCCESS, response.remark
            assert revive_records() == before + 1
            read = broker.store.get_messages(
                GROUP, revive.topic, 0, before, max_count=1, max_bytes=1 << 20
            )
            (record,) = iter_records(read.body)
            assert Ack.from_json(record.body).ack_offsets == (1,)


@pytest.mark.parametrize("invisible_ms", [0, 999, 12 * 3600 * 1000 + 1])
async def test_pop_refuses_invisible_times_out_of_range(tmp_path: Path, invisible_ms: int) -> None:
    from protocol.pop import PopMessageRequestHeader

    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 1)
            header = PopMessageRequestHeader(
                consumer_group=GROUP,
                topic=TOPIC,
                queue_id=-1,
                max_msg_nums=1,
                invisible_time=invisible_ms,
                poll_time=0,
                born_time=0,
                init_mode=0,
            )
            response = await c.call(
                c.addr("broker-a"), RequestCode.POP_MESSAGE, header.to_ext_fields()
            )
            assert response.code == ResponseCode.INVALID_PARAMETER, response.remark


async def test_batch_ack_acks_several_messages_in_one_request(tmp_path: Path) -> None:
    """BATCH_ACK_MESSAGE (the SDK's ack_many): three of four acked in one request, from two
    queues; only the fourth comes back."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 2)
            await send_bodies(c.namesrv, [b"b0", b"b1", b"b2", b"b3"])
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                got = {p.message.body: p for p in await receive_until(consumer, 4)}
                assert len({p.handle.queue_id for p in got.values()}) == 2
                await consumer.ack_many([got[b"b0"], got[b"b1"], got[b"b3"]])
                (back,) = await receive_until(consumer, 1, timeout_s=8.0)
                assert back.message.body == b"b2" and back.delivery_attempt == 2
                await consumer.ack_many([back])
                assert await consumer.receive(TOPIC, invisible_s=1.0, long_poll_s=2.5) == []


async def test_a_refused_checkpoint_hands_nothing_out_and_moves_no_offset(tmp_path: Path) -> None:
    """A SYNC_MASTER whose in-sync set falls below minInSyncReplicas refuses every write,
    checkpoints included: the pop fails and keeps the offset, so once writes are taken
    again the same messages are handed out (none was popped without a checkpoint)."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path, broker_role="SYNC_MASTER", slave_timeout_s=0.3) as c:
            await c.create_topic(TOPIC, 1)
            await send_bodies(c.namesrv, [b"k0", b"k1"])  # stored (SLAVE_NOT_AVAILABLE)
            addr = c.addr("broker-a")

            async def min_in_sync(n: int) -> None:
                body = f"minInSyncReplicas={n}\n".encode()
                response = await c.call(addr, RequestCode.UPDATE_BROKER_CONFIG, {}, body)
                assert response.code == ResponseCode.SUCCESS, response.remark

            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                await min_in_sync(2)
                with pytest.raises(ServerError, match="in-sync replicas"):
                    await consumer.receive(TOPIC, invisible_s=1.0)
                await min_in_sync(1)
                got = await receive_until(consumer, 2, invisible_s=10.0)
                assert sorted(p.message.body for p in got) == [b"k0", b"k1"]
                assert all(p.delivery_attempt == 1 for p in got)


async def test_order_pop_dead_letters_a_message_out_of_attempts(tmp_path: Path) -> None:
    """Order pops, retryMaxTimes 1: a head message delivered twice and never acked goes
    to %DLQ%<group> on the next pop, and the queue moves on to the message after it."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 1)
            await set_group(c, retry_max_times=1)
            await send_bodies(c.namesrv, [b"stuck", b"next"], sharding_key="k")
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                seen = []
                for _ in range(2):
                    with trio.fail_after(5):
                        while not (
                            got := await consumer.receive(
                                TOPIC, max_nums=1, invisible_s=1.0, order=True, long_poll_s=0.5
                            )
                        ):
                            pass
                    seen.append((got[0].message.body, got[0].delivery_attempt))
                assert seen == [(b"stuck", 1), (b"stuck", 2)]
                with trio.fail_after(5):
                    while not (
                        got := await consumer.receive(
                            TOPIC, max_nums=1, invisible_s=5.0, order=True, long_poll_s=0.5
                        )
                    ):
                        pass
                assert [(p.message.body, p.delivery_attempt) for p in got] == [(b"next", 1)]
            async with open_pull_consumer(c.namesrv, group="reader") as reader:
                dlq = MessageQueue(topic=f"%DLQ%{GROUP}", broker_name="broker-a", queue_id=0)
                with trio.fail_after(5):
                    while True:
                        try:
                            result = await reader.pull(dlq, 0, long_poll_s=0.5)
                        except ServerError:
                            await trio.sleep(0.2)
                            continue
                        if result.messages:
                            break
                assert [(m.body, m.reconsume_times) for m in result.messages] == [(b"stuck", 2)]


async def test_sql92_pops_hand_out_only_matching_messages(tmp_path: Path) -> None:
    """A SQL92 pop hands out the messages whose properties match; the others are stepped
    over for the group (never handed out later); a bad expression is refused."""
    with trio.fail_after(DEADLINE_S):
        async with sdk_cluster(tmp_path) as c:
            await c.create_topic(TOPIC, 1)
            async with open_producer(c.namesrv, auto_batch=False) as producer:
                for i in range(1, 5):
                    await producer.send(
                        Message(topic=TOPIC, body=b"n%d" % i, properties={"n": str(i)})
                    )
            async with open_simple_consumer(c.namesrv, group=GROUP) as consumer:
                got = []
                with trio.fail_after(5):
                    while len(got) < 2:
                        got += await consumer.receive(
                            TOPIC, expression="n > 2", expression_type="SQL92", long_poll_s=0.5
                        )
                assert sorted(p.message.body for p in got) == [b"n3", b"n4"]
                await consumer.ack_many(got)
                assert await consumer.receive(TOPIC, invisible_s=1.0, long_poll_s=1.0) == []
                with pytest.raises(ServerError) as refused:
                    await consumer.receive(TOPIC, expression="n >>> 2", expression_type="SQL92")
                assert refused.value.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED
