"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320) over the wire.

Every stored message is read back with PULL (and VIEW_MESSAGE_BY_ID) and compared field by
field with what was sent; ids in the send response are decoded and checked against the
record they name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio

from protocol.batch_body import BatchItem, encode_batch_body
from protocol.codes import RequestCode, ResponseCode
from protocol.headers import SendMessageRequestHeaderV2, ViewMessageRequestHeader
from protocol.message import decode_record, parse_offset_msg_id
from protocol.rpc import RemotingClient, open_client
from tests.component.broker_fixtures import (
    TEST_DEADLINE_S,
    broker_env,
    expect,
    json_frame,
    raw_exchange,
    send_header,
)

_HEX32 = re.compile(r"[0-9A-F]{32}")

SIZES = [0, 1, 117, 4096, 65_536, 1024 * 1024]


def _body(size: int) -> bytes:
    return bytes((i * 7 + size) % 251 for i in range(size))


@pytest.mark.parametrize("v1", [False, True], ids=["V2", "V1"])
async def test_send_stores_body_and_properties_byte_for_byte(tmp_path: Path, v1: bool) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            conn = await env.client.connection(env.addr)
            local_ip, _, local_port = conn.local.rpartition(":")
            sent = []
            for i, size in enumerate(SIZES):
                result = await env.send_ok(
                    "T",
                    _body(size),
                    tags=f"Tag{i % 2}",
                    keys=f"k{i} shared",
                    properties={"color": "blue", "n": str(i), "ünïcode": "välue"},
                    queue_id=1,
                    v1=v1,
                    flag=i,
                )
                assert result.queue_id == 1
                assert result.queue_offset == i
                assert result.response.ext_fields["MSG_REGION"] == "DefaultRegion"
                sent.append(result)

            records = await env.pull_all("T", 1)
            assert len(records) == len(SIZES)
            for i, (size, result, record) in enumerate(zip(SIZES, sent, records, strict=True)):
                assert record.body == _body(size)
                assert record.topic == "T"
                assert record.queue_id == 1
                assert record.queue_offset == i
                assert record.flag == i
                assert record.reconsume_times == 0
                assert record.born_host == (local_ip, int(local_port))
                assert record.store_host == (env.b.config.advertised_ip, env.b.listen_port)
                props = dict(record.properties)
                assert props.pop("TAGS") == f"Tag{i % 2}"
                assert props.pop("KEYS") == f"k{i} shared"
                assert _HEX32.fullmatch(props.pop("UNIQ_KEY"))
                assert props.pop("CLUSTER") == "DefaultCluster"
                assert props == {"color": "blue", "n": str(i), "ünïcode": "välue"}
                # The response msgId is the offsetMsgId of exactly this record.
                assert result.msg_id == record.msg_id
                ip, port, commit_offset = parse_offset_msg_id(result.msg_id)
                assert f"{ip}:{port}" == env.addr
                assert commit_offset == record.physical_offset


async def test_msg_id_is_the_commit_offset_readable_with_view_message(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            first = await env.send_ok("T", b"first")
            second = await env.send_ok("T", b"second" * 10)
            _, _, first_offset = parse_offset_msg_id(first.msg_id)
            _, _, second_offset = parse_offset_msg_id(second.msg_id)
            assert first_offset == 0  # a fresh store starts at offset 0
            for msg_id, body in ((first.msg_id, b"first"), (second.msg_id, b"second" * 10)):
                _, _, offset = parse_offset_msg_id(msg_id)
                response = expect(
                    await env.call(
                        RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageRequestHeader(offset=offset)
                    ),
                    ResponseCode.SUCCESS,
                )
                record, size = decode_record(response.body)
                assert size == len(response.body)
                assert record.body == body
                assert record.physical_offset == offset
            # The second record starts right where the first ends.
            first_view = await env.call(
                RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageRequestHeader(offset=first_offset)
            )
            assert second_offset == first_offset + len(first_view.body)


async def test_uniq_key_is_added_when_missing_and_kept_when_given(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            given = "0A0B0C0D00002A2A0000000100000001"
            sent = [
                await env.send_ok("T", b"with", properties={"UNIQ_KEY": given}),
                await env.send_ok("T", b"without-1"),
                await env.send_ok("T", b"without-2"),
            ]
            with_key, gen1, gen2 = records = await env.pull_all("T", 0)
            assert with_key.uniq_key == given
            # Like Java's broker, the response's transactionId tells the client its UNIQ_KEY,
            # including one the broker generated.
            for result, record in zip(sent, records, strict=True):
                assert result.response.ext_fields["transactionId"] == record.uniq_key
            assert gen1.uniq_key and _HEX32.fullmatch(gen1.uniq_key)
            assert gen2.uniq_key and _HEX32.fullmatch(gen2.uniq_key)
            assert gen1.uniq_key != gen2.uniq_key
            # The broker's ids carry its own IP (127.0.0.1) as their first four bytes.
            assert gen1.uniq_key.startswith("7F000001")


async def test_queue_id_minus_one_lets_the_broker_pick_a_writable_queue(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=4)
            chosen = [(await env.send_ok("T", queue_id=-1)).queue_id for _ in range(40)]
            assert set(chosen) <= {0, 1, 2, 3}
            assert len(set(chosen)) > 1  # random choice: all 40 on one queue is ~1e-23
            # Offsets per queue are consecutive from 0.
            for queue_id in range(4):
                records = await env.pull_all("T", queue_id)
                assert [r.queue_offset for r in records] == list(range(chosen.count(queue_id)))


async def test_batch_gets_consecutive_offsets_and_one_id_per_message(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            await env.send_ok("T", b"before", queue_id=1)
            items = [
                BatchItem(
                    body=f"batch-{i}".encode(),
                    flag=i,
                    properties={"TAGS": "B", "KEYS": f"bk{i}", "idx": str(i)}
                    | ({"UNIQ_KEY": f"{i:032X}"} if i % 2 else {}),
                )
                for i in range(5)
            ]
            header = SendMessageRequestHeaderV2.from_v1(send_header("T", queue_id=1, batch=True))
            response = expect(
                await env.call(RequestCode.SEND_BATCH_MESSAGE, header, encode_batch_body(items)),
                ResponseCode.SUCCESS,
            )
            assert response.ext_fields["queueId"] == "1"
            assert response.ext_fields["queueOffset"] == "1"
            ids = response.ext_fields["msgId"].split(",")
            assert len(ids) == 5

            records = (await env.pull_all("T", 1))[1:]
            assert [r.queue_offset for r in records] == [1, 2, 3, 4, 5]
            assert [r.body for r in records] == [item.body for item in items]
            assert [r.flag for r in records] == list(range(5))
            assert [r.msg_id for r in records] == ids
            for i, record in enumerate(records):
                assert record.properties["idx"] == str(i)
                assert record.properties["KEYS"] == f"bk{i}"
                if i % 2:
                    assert record.uniq_key == f"{i:032X}"
                else:
                    assert record.uniq_key and _HEX32.fullmatch(record.uniq_key)
            assert len({r.uniq_key for r in records}) == 5


async def test_sync_flush_broker_answers_after_the_fsync(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        # The periodic flush is slowed down so only the send's own group commit can explain
        # a flushed offset past the message.
        async with broker_env(
            tmp_path, flush_disk_type="SYNC_FLUSH", async_flush_interval_s=60.0
        ) as env:
            await env.create_topic("T", queues=1)
            for size in (10, 5000, 200_000):
                sent = await env.send_ok("T", b"s" * size)
                _, _, offset = parse_offset_msg_id(sent.msg_id)
                view = await env.call(
                    RequestCode.VIEW_MESSAGE_BY_ID, ViewMessageRequestHeader(offset=offset)
                )
                info = await env.runtime_info()
                assert int(info["flushedOffset"]) >= offset + len(view.body)


async def test_auto_create_topic_from_tbw102(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, default_topic_queue_nums=4) as env:
            assert await env.route("Fresh") is None
            sent = await env.send_ok("Fresh", b"x", queue_id=-1, default_topic_queue_nums=3)
            assert 0 <= sent.queue_id < 3
            table = json.loads((await env.call(RequestCode.GET_ALL_TOPIC_CONFIG)).body)
            config = table["topicConfigTable"]["Fresh"]
            assert (config["readQueueNums"], config["writeQueueNums"]) == (3, 3)
            assert config["perm"] == 6  # the template's perm without INHERIT
            await env.wait_route("Fresh", queues=3)
            # The request can never get more queues than the template has.
            await env.send_ok("Greedy", b"x", default_topic_queue_nums=64)
            table = json.loads((await env.call(RequestCode.GET_ALL_TOPIC_CONFIG)).body)
            assert table["topicConfigTable"]["Greedy"]["writeQueueNums"] == 4


async def test_unknown_topic_is_refused_when_auto_create_is_off(tmp_path: Path) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, auto_create_topic_enable=False) as env:
            response = await env.send("Nope", b"x")
            expect(response, ResponseCode.TOPIC_NOT_EXIST)
            assert response.remark and "Nope" in response.remark
            assert await env.route("TBW102") is None  # no template without auto-create
            table = json.loads((await env.call(RequestCode.GET_ALL_TOPIC_CONFIG)).body)
            assert "Nope" not in table["topicConfigTable"]
            await env.create_topic("Nope", queues=1)
            await env.send_ok("Nope", b"x")


async def test_v2_header_with_ali_ons_style_numbers_and_booleans(tmp_path: Path) -> None:
    """ali-ons sends JSON numbers and booleans in extFields; the broker reads them alike."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            header = {
                "code": 310,
                "extFields": {
                    "a": "PG", "b": "T", "c": "TBW102", "d": 4, "e": 1, "f": 0,
                    "g": 1_700_000_000_000, "h": 0, "i": "TAGS\x01A\x02", "j": 0, "k": False,
                },
                "flag": 0, "language": "JAVA", "opaque": 77, "version": 121,
            }  # fmt: skip
            (response,) = await raw_exchange(env.addr, json_frame(header, b"num"))
            expect(response, ResponseCode.SUCCESS)
            assert response.opaque == 77 and response.is_response
            assert response.ext_fields["queueId"] == "1"
            assert all(isinstance(v, str) for v in response.ext_fields.values())
            (record,) = await env.pull_all("T", 1)
            assert record.body == b"num" and record.tags == "A"
            assert record.born_timestamp_ms == 1_700_000_000_000


@pytest.mark.parametrize("flush", ["ASYNC_FLUSH", "SYNC_FLUSH"])
async def test_concurrent_sends_get_unique_consecutive_offsets(tmp_path: Path, flush: str) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path, flush_disk_type=flush) as env:
            await env.create_topic("T", queues=3)
            results: list[tuple[int, int, str, bytes]] = []

            async def producer(client: RemotingClient, name: str) -> None:
                for i in range(40):
                    body = f"{name}-{i}".encode()
                    sent = await env.send_ok("T", body, queue_id=i % 3, client=client)
                    results.append((sent.queue_id, sent.queue_offset, sent.msg_id, body))

            async with open_client(name="second") as second, trio.open_nursery() as nursery:
                for n in range(4):  # four tasks share each connection
                    nursery.start_soon(producer, env.client, f"a{n}")
                    nursery.start_soon(producer, second, f"b{n}")
            assert len(results) == 320
            assert len({r[2] for r in results}) == 320
            for queue_id in range(3):
                mine = sorted((r for r in results if r[0] == queue_id), key=lambda r: r[1])
                assert [r[1] for r in mine] == list(range(len(mine)))
                records = await env.pull_all("T", queue_id)
                assert [(r.msg_id, r.body) for r in records] == [(r[2], r[3]) for r in mine]
