"""Held CommitLog writes (issue 14, seventh pass): a failed write sends no SEND_OK for what
it lost, the broker cuts its state back and takes sends again, and what was acked before
survives a restart. The failure is real to the broker: ``os.pwritev`` / ``os.pwrite`` on
CommitLog files fail with ENOSPC after writing part of the bytes (as a full disk does)."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from protocol.batch_body import BatchItem, encode_batch_body
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder
from protocol.headers import SendMessageRequestHeaderV2
from protocol.rpc import split_address
from tests.component.broker_fixtures import (
    CALL_TIMEOUT_S,
    broker_env,
    send_header,
    wait_until,
)

TOPIC = "HeldT"


def _is_commitlog(fd: int) -> bool:
    try:
        return "/commitlog/" in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False


def fail_commitlog_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """CommitLog writes fail with ENOSPC after part of their bytes reached the file; the
    list counts the failures."""
    real_pwrite, real_pwritev = os.pwrite, os.pwritev
    failures: list[int] = []

    def pwrite(fd: int, data: bytes, pos: int) -> int:
        if not _is_commitlog(fd):
            return real_pwrite(fd, data, pos)
        real_pwrite(fd, bytes(data)[:100], pos)
        failures.append(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    def pwritev(fd: int, buffers: Sequence[bytes], pos: int) -> int:
        if not _is_commitlog(fd):
            return real_pwritev(fd, buffers, pos)
        real_pwrite(fd, bytes(buffers[0]), pos)  # the first record got there
        failures.append(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "pwritev", pwritev)
    return failures


def send_frames(count: int, first_opaque: int, *, batch: int = 0) -> bytes:
    """``count`` single sends, or with ``batch`` as many SEND_BATCH_MESSAGEs of that many."""
    out = []
    for i in range(count):
        header = SendMessageRequestHeaderV2.from_v1(
            send_header(TOPIC, queue_id=0, batch=True if batch else None)
        )
        if batch:
            items = [BatchItem(body=b"lost-%d-%d" % (i, k)) for k in range(batch)]
            code, body = RequestCode.SEND_BATCH_MESSAGE, encode_batch_body(items)
        else:
            code, body = RequestCode.SEND_MESSAGE_V2, b"lost-%d" % i
        request = RemotingCommand.request(
            code, header.to_ext_fields(), body, opaque=first_opaque + i
        )
        out.append(request.encode())
    return b"".join(out)


async def answers_until_closed(addr: str, data: bytes) -> list[RemotingCommand]:
    """Write ``data`` on a fresh connection; every response until the broker closes it."""
    host, port = split_address(addr)
    decoder = FrameDecoder()
    answers: list[RemotingCommand] = []
    with trio.fail_after(CALL_TIMEOUT_S):
        async with await trio.open_tcp_stream(host, port) as stream:
            await stream.send_all(data)
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:  # reset: closed with our bytes unread
                    break
                if not chunk:
                    break
                commands = (RemotingCommand.from_frame(f) for f in decoder.feed(chunk))
                answers.extend(c for c in commands if c.is_response)
    return answers


@pytest.mark.parametrize("batch", [0, 4], ids=["single", "batch"])
async def test_a_failed_held_write_sends_no_send_ok_and_the_broker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    async with broker_env(tmp_path) as env:
        await env.create_topic(TOPIC, queues=1)
        acked = [await env.send_ok(TOPIC, b"acked-%d" % i) for i in range(5)]
        assert [s.queue_offset for s in acked] == list(range(5))

        failures = fail_commitlog_writes(monkeypatch)
        answers = await answers_until_closed(env.addr, send_frames(20, 1000, batch=batch))
        monkeypatch.undo()
        # (a) the connection was dropped without a SEND_OK for any lost record
        assert failures, "no CommitLog write was attempted"
        assert not [a for a in answers if a.code == ResponseCode.SUCCESS], answers

        # (b) sends are refused until the store cut its state back, then go on where the
        # acked records end: the lost ones left no queue offset, entry or byte behind.
        resumed: list[RemotingCommand] = []

        async def accepted() -> bool:
            response = await env.send(TOPIC, b"after")
            if response.code == ResponseCode.SUCCESS:
                resumed.append(response)
                return True
            assert response.code == ResponseCode.SERVICE_NOT_AVAILABLE, response.remark
            return False

        await wait_until(accepted, timeout_s=10.0, what="sends accepted again")
        assert int(resumed[0].ext_fields["queueOffset"]) == 5
        bodies = [r.body for r in await env.pull_all(TOPIC)]
        assert bodies == [b"acked-%d" % i for i in range(5)] + [b"after"]

        # (c) what was acked is intact after a restart, and sends go on
        await env.restart()
        bodies = [r.body for r in await env.pull_all(TOPIC)]
        assert bodies == [b"acked-%d" % i for i in range(5)] + [b"after"]
        assert (await env.send_ok(TOPIC, b"later")).queue_offset == 6
