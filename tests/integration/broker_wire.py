"""Helpers for broker integration tests: a real ``rmq broker`` process, and a client that
speaks to it only over the wire (create a topic, SEND_MESSAGE_V2, PULL_MESSAGE), plus a
reader of the CommitLog files as bytes on disk (no store code), to damage them on purpose.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import attrs

from launcher.ready import BROKER_READY
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import (
    CreateTopicRequestHeader,
    PullMessageRequestHeader,
    PullMessageResponseHeader,
    SendMessageRequestHeaderV2,
)
from protocol.message import (
    BLANK_MAGIC,
    PROPERTY_KEYS,
    MessageRecord,
    iter_records,
    peek_record_header,
    properties_to_string,
)
from protocol.rpc import RemotingClient, check_success
from tests.support.processes import START_TIMEOUT_S, ManagedProcess, managed_process, rmq_argv

PRODUCER_GROUP = "it-producer"
CHECK_GROUP = "it-check"
#: PULL sysFlag: the subscription travels in the request (no HEART_BEAT needed).
PULL_FLAG_SUBSCRIPTION = 0x4
_PULL_BATCH = 32


def broker_argv(namesrv: str, store_dir: Path, *extra: str) -> list[str]:
    return rmq_argv("broker", "--port", "0", "-n", namesrv, "--dir", str(store_dir), *extra)


def broker_process(
    namesrv: str, store_dir: Path, *extra: str, start_timeout_s: float = START_TIMEOUT_S
) -> AbstractAsyncContextManager[ManagedProcess]:
    """``rmq broker --port 0`` on ``store_dir``, ready once it printed its boot line."""
    return managed_process(
        broker_argv(namesrv, store_dir, *extra),
        name="broker",
        ready=BROKER_READY,
        start_timeout_s=start_timeout_s,
    )


async def create_topic(client: RemotingClient, addr: str, topic: str, queues: int) -> None:
    header = CreateTopicRequestHeader(
        topic=topic,
        default_topic="TBW102",
        read_queue_nums=queues,
        write_queue_nums=queues,
        perm=PERM_READ | PERM_WRITE,
        topic_filter_type="SINGLE_TAG",
    )
    request = RemotingCommand.request(RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext_fields())
    check_success(await client.call(addr, request))


async def send_message(
    client: RemotingClient, addr: str, topic: str, queue_id: int, key: str, body: bytes
) -> RemotingCommand:
    """SEND_MESSAGE_V2 with ``key`` in KEYS; the response, whatever its code."""
    header = SendMessageRequestHeaderV2(
        a=PRODUCER_GROUP,
        b=topic,
        c="TBW102",
        d=4,
        e=queue_id,
        f=0,
        g=int(time.time() * 1000),
        h=0,
        i=properties_to_string({PROPERTY_KEYS: key}),
        j=0,
        k=False,
        m=False,
    )
    request = RemotingCommand.request(
        RequestCode.SEND_MESSAGE_V2, header.to_ext_fields(), body=body
    )
    return await client.call(addr, request)


async def pull_queue(
    client: RemotingClient, addr: str, topic: str, queue_id: int
) -> list[MessageRecord]:
    """Every record of one queue from offset 0 (bodies CRC-checked while decoding)."""
    records: list[MessageRecord] = []
    offset = 0
    for _ in range(100_000):  # bounded: each round advances by at least one record
        header = PullMessageRequestHeader(
            consumer_group=CHECK_GROUP,
            topic=topic,
            queue_id=queue_id,
            queue_offset=offset,
            max_msg_nums=_PULL_BATCH,
            sys_flag=PULL_FLAG_SUBSCRIPTION,
            commit_offset=0,
            suspend_timeout_millis=0,
            sub_version=0,
            subscription="*",
            expression_type="TAG",
        )
        request = RemotingCommand.request(RequestCode.PULL_MESSAGE, header.to_ext_fields())
        response = await client.call(addr, request)
        reply = PullMessageResponseHeader.from_ext_fields(response.ext_fields)
        if response.code == ResponseCode.PULL_NOT_FOUND:
            assert offset == reply.max_offset, (queue_id, offset, reply)
            return records
        assert response.code == ResponseCode.SUCCESS, (queue_id, offset, response)
        batch = list(iter_records(response.body, check_crc=True))
        assert batch, (queue_id, offset, reply)
        records += batch
        assert reply.next_begin_offset > offset, (queue_id, offset, reply)
        offset = reply.next_begin_offset
    raise AssertionError(f"queue {queue_id} of {topic} never ended")


async def pull_all(
    client: RemotingClient, addr: str, topic: str, queues: int
) -> dict[int, list[MessageRecord]]:
    return {q: await pull_queue(client, addr, topic, q) for q in range(queues)}


# --- the CommitLog as bytes on disk -----------------------------------------------------------


@attrs.frozen(kw_only=True)
class RecordPlace:
    """Where one record lies: its segment file, position in it, global offset, size."""

    segment: Path
    file_pos: int
    offset: int
    size: int


def segments(store_dir: Path) -> list[Path]:
    clog = store_dir / "commitlog"
    return sorted(p for p in clog.iterdir() if len(p.name) == 20 and p.name.isdigit())


def scan_commitlog(store_dir: Path) -> tuple[list[RecordPlace], int]:
    """Every record of the CommitLog, and the global offset where the next one would go.

    Walks each segment from 0 with ``peek_record_header``: a blank marker sends the walk to
    the next segment, size 0 ends the data.
    """
    places: list[RecordPlace] = []
    end = 0
    for seg in segments(store_dir):
        start = int(seg.name)
        data = seg.read_bytes()
        pos = 0
        while pos + 8 <= len(data):
            size, magic = peek_record_header(data, pos)
            if magic == BLANK_MAGIC:
                break  # padding up to the segment end: the data goes on in the next one
            if size == 0:
                return places, start + pos
            places.append(RecordPlace(segment=seg, file_pos=pos, offset=start + pos, size=size))
            pos += size
        end = start + len(data)
    return places, end


def pwrite(path: Path, data: bytes, file_pos: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pwrite(fd, data, file_pos) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)
