"""Raw remoting for the benchmarks that talk to a broker directly: requests built as a Java
client builds them, and the broker calls around a run.

Rules:
- Requests carry what RocketMQ's Java producer sends: ``SEND_MESSAGE_V2`` with a fresh
  UNIQ_KEY per message (batch items included), ``WAIT=true`` and a tag; queues round-robin.
- Every call runs under ``CALL_TIMEOUT_S``. Around a run, an answer that is not SUCCESS
  raises (``check_success``): a benchmark cannot go on without its topic. During a run a
  failure is counted (``record_error``), not fatal: a benchmark reports what happened.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from bench.measure import Meter
from protocol.batch_body import BatchItem, decode_batch_body, encode_batch_body
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError
from protocol.headers import (
    CreateTopicRequestHeader,
    PullMessageRequestHeader,
    SendMessageRequestHeaderV2,
)
from protocol.message import properties_to_string
from protocol.rpc import RemotingClient, check_success, open_client

CALL_TIMEOUT_S = 10.0
PRODUCER_GROUP = "bench-producer-group"
CONSUMER_GROUP = "bench-consumer-group"
PULL_BATCH = 32
FLAG_SUBSCRIPTION = 0x4
PERM_READ_WRITE = 6


# --- requests -------------------------------------------------------------------------------


class SendRequests:
    """SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE requests as a Java producer builds them.

    Queues round-robin; every message carries a fresh UNIQ_KEY (Java's producer sets one per
    message, batch items included), ``WAIT=true`` and a tag.
    """

    def __init__(self, topic: str, size: int, queues: int, batch: int) -> None:
        self.size = size
        self.batch = batch
        self._queues = queues
        self._seq = itertools.count()
        self._body = bytes(i % 251 for i in range(size))
        self._key_prefix = f"7F000001{os.getpid() & 0xFFFF:04X}{int(time.time()) & 0xFFFFFFFF:08X}"
        header = SendMessageRequestHeaderV2(
            a=PRODUCER_GROUP,
            b=topic,
            c="TBW102",
            d=4,
            e=0,
            f=0,
            g=0,
            h=0,
            i=None,
            j=0,
            k=False,
            m=batch > 1,
            n=None,
        )
        self._ext = header.to_ext_fields()
        self._batch_props = properties_to_string({"WAIT": "true"})
        self._item_head, self._item_tail = self._batch_item_template()

    def _uniq_key(self, n: int) -> str:
        return f"{self._key_prefix}{n:012X}"

    def _batch_item_template(self) -> tuple[bytes, bytes]:
        """One encoded batch item split around its UNIQ_KEY counter (spliced per item)."""
        marker = "#" * 12
        item = BatchItem(
            body=self._body,
            properties={"UNIQ_KEY": self._key_prefix + marker, "WAIT": "true", "TAGS": "TagA"},
        )
        encoded = encode_batch_body([item])
        head, sep, tail = encoded.partition(marker.encode())
        assert sep and marker.encode() not in tail
        # The splice must give exactly what the library encodes.
        probe = BatchItem(
            body=self._body,
            properties={"UNIQ_KEY": self._uniq_key(7), "WAIT": "true", "TAGS": "TagA"},
        )
        assert head + b"%012X" % 7 + tail == encode_batch_body([probe])
        return head, tail

    def single(self) -> RemotingCommand:
        n = next(self._seq)
        ext = dict(self._ext)
        ext["e"] = str(n % self._queues)
        ext["g"] = str(int(time.time() * 1000))
        ext["i"] = properties_to_string(
            {"UNIQ_KEY": self._uniq_key(n), "WAIT": "true", "TAGS": "TagA"}
        )
        return RemotingCommand.request(RequestCode.SEND_MESSAGE_V2, ext, self._body)

    def batched(self) -> RemotingCommand:
        n = next(self._seq)
        first = n * self.batch
        head, tail = self._item_head, self._item_tail
        body = b"".join(
            b"".join((head, b"%012X" % k, tail)) for k in range(first, first + self.batch)
        )
        ext = dict(self._ext)
        ext["e"] = str(n % self._queues)
        ext["g"] = str(int(time.time() * 1000))
        ext["i"] = self._batch_props
        return RemotingCommand.request(RequestCode.SEND_BATCH_MESSAGE, ext, body)

    def check_batch(self) -> None:
        """The batch body decodes into ``batch`` distinct items (run once, up front)."""
        items = decode_batch_body(self.batched().body)
        keys = {item.properties["UNIQ_KEY"] for item in items}
        assert len(items) == self.batch == len(keys), (len(items), len(keys))


def pull_request(topic: str, queue_id: int, offset: int) -> RemotingCommand:
    header = PullMessageRequestHeader(
        consumer_group=CONSUMER_GROUP,
        topic=topic,
        queue_id=queue_id,
        queue_offset=offset,
        max_msg_nums=PULL_BATCH,
        sys_flag=FLAG_SUBSCRIPTION,
        commit_offset=0,
        suspend_timeout_millis=0,
        sub_version=0,
        subscription="*",
        expression_type="TAG",
    )
    return RemotingCommand.request(RequestCode.PULL_MESSAGE, header.to_ext_fields())


# --- calls around a run ---------------------------------------------------------------------


async def create_topic(client: RemotingClient, addr: str, topic: str, queues: int) -> None:
    """UPDATE_AND_CREATE_TOPIC on the broker at ``addr``, read-write, ``queues`` queues."""
    header = CreateTopicRequestHeader(
        topic=topic,
        default_topic="TBW102",
        read_queue_nums=queues,
        write_queue_nums=queues,
        perm=PERM_READ_WRITE,
        topic_filter_type="SINGLE_TAG",
    )
    request = RemotingCommand.request(RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext_fields())
    check_success(await client.call(addr, request, timeout_s=CALL_TIMEOUT_S))


async def _table(client: RemotingClient, addr: str, code: RequestCode) -> Any:
    request = RemotingCommand.request(code)
    response = check_success(await client.call(addr, request, timeout_s=CALL_TIMEOUT_S))
    return json.loads(response.body)


async def runtime_info(client: RemotingClient, addr: str) -> dict[str, str]:
    """The broker's GET_BROKER_RUNTIME_INFO table."""
    table: dict[str, str] = (await _table(client, addr, RequestCode.GET_BROKER_RUNTIME_INFO))[
        "table"
    ]
    return table


async def ha_status(client: RemotingClient, addr: str) -> dict[str, Any]:
    """The broker's GET_BROKER_HA_STATUS document."""
    doc: dict[str, Any] = await _table(client, addr, RequestCode.GET_BROKER_HA_STATUS)
    return doc


@asynccontextmanager
async def open_clients(count: int) -> AsyncIterator[list[RemotingClient]]:
    """``count`` clients, so ``count`` connections to each broker."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                open_client(name=f"bench-{i}", default_timeout_s=CALL_TIMEOUT_S)
            )
            for i in range(count)
        ]


def record_error(
    meter: Meter, now_s: float, msgs: int, error: RocketError | RemotingCommand
) -> None:
    """Count a failed request of ``msgs`` messages: no answer (``error`` was raised) or an
    answer that is not SUCCESS (``error`` is that answer)."""
    if isinstance(error, RemotingCommand):
        name = code_name(error.code)
        detail = f"response {name}: {error.remark}"
        meter.record_failed(now_s, msgs, response=True, kind=name, detail=detail)
    else:
        name = type(error).__name__
        meter.record_failed(now_s, msgs, response=False, kind=name, detail=f"{name}: {error}")


def code_name(code: int) -> str:
    try:
        return ResponseCode(code).name
    except ValueError:
        return str(code)
