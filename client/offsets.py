"""Where a consumer group's offsets live: on the brokers (clustering) or in a local file
(broadcasting).

Rules (reference/rocketmq-wire.md §2.6, §4.6):
- An offset is the next message to consume: everything before it has been processed.
- ``update`` only changes memory; ``persist`` writes what changed since the last persist.
  A consumer calls ``update`` with a queue's committable offset (the lowest offset still
  in the listener's hands) and ``persist`` every few seconds, when it drops a queue and
  when it stops.
- ``read_stored`` asks the store itself (the broker, or the file as loaded at start): None
  means "this group has no offset for that queue" and the caller applies consume_from.
- Broker store: QUERY_CONSUMER_OFFSET is sent with ``setZeroIfNotFound=false`` so the
  broker never answers "0" on its own for a young queue; consume_from decides instead.
  UPDATE_CONSUMER_OFFSET goes to the master of the queue's broker group, as a request with
  a deadline (not oneway), so a failure is seen and retried at the next persist.
- File store: one JSON document per (client, group), replaced atomically (write a temp
  file, fsync, rename, fsync the directory) in a worker thread.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import trio

from client.routes import RouteCache
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import MalformedBody, NetworkError, QueryNotFound, RocketError
from protocol.headers import (
    OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader,
)
from protocol.route import MessageQueue
from protocol.rpc import RemotingClient, check_success

log = logging.getLogger(__name__)

#: Version of the local offsets document.
FILE_VERSION = 1


class OffsetStore(Protocol):
    """What a consumer needs from an offset store."""

    async def load(self) -> None:
        """Read whatever must be read before the first ``read_stored``."""

    async def read_stored(self, queue: MessageQueue) -> int | None:
        """The group's stored offset of ``queue``; None when it has none."""

    def update(self, queue: MessageQueue, offset: int) -> None:
        """Remember ``offset`` as the queue's committable offset (memory only)."""

    def get(self, queue: MessageQueue) -> int | None:
        """The offset last given to ``update`` (None: never)."""

    async def persist(self, queues: Iterable[MessageQueue]) -> None:
        """Write the offsets of ``queues`` that changed; failures are logged and retried later."""

    def remove(self, queue: MessageQueue) -> None:
        """Forget the queue's in-memory offset (after it was persisted and dropped)."""


class BrokerOffsetStore:
    """Offsets kept by the brokers (clustering): RemoteBrokerOffsetStore."""

    def __init__(
        self, client: RemotingClient, routes: RouteCache, *, group: str, timeout_s: float
    ) -> None:
        self._client = client
        self._routes = routes
        self.group = group
        self.timeout_s = timeout_s
        self._table: dict[MessageQueue, int] = {}
        self._persisted: dict[MessageQueue, int] = {}

    async def load(self) -> None:
        return None

    async def _master(self, queue: MessageQueue) -> str:
        info = await self._routes.get(queue.topic)
        addr = info.master_of(queue.broker_name)
        if addr is None:
            raise NetworkError(f"broker group {queue.broker_name} has no master now")
        return addr

    async def read_stored(self, queue: MessageQueue) -> int | None:
        header = QueryConsumerOffsetRequestHeader(
            consumer_group=self.group,
            topic=queue.topic,
            queue_id=queue.queue_id,
            set_zero_if_not_found=False,
        )
        request = RemotingCommand.request(RequestCode.QUERY_CONSUMER_OFFSET, header.to_ext_fields())
        addr = await self._master(queue)
        response = await self._client.call(addr, request, timeout_s=self.timeout_s)
        try:
            check_success(response)
        except QueryNotFound:
            return None
        offset = OffsetResponseHeader.from_ext_fields(response.ext_fields).offset
        return offset if offset >= 0 else None

    def update(self, queue: MessageQueue, offset: int) -> None:
        assert offset >= 0, f"offset of {queue} must not be negative: {offset}"
        self._table[queue] = offset

    def get(self, queue: MessageQueue) -> int | None:
        return self._table.get(queue)

    def remove(self, queue: MessageQueue) -> None:
        self._table.pop(queue, None)
        self._persisted.pop(queue, None)

    async def commit(self, queue: MessageQueue, offset: int) -> None:
        """UPDATE_CONSUMER_OFFSET now; raises the ``RocketError`` of a failure."""
        header = UpdateConsumerOffsetRequestHeader(
            consumer_group=self.group,
            topic=queue.topic,
            queue_id=queue.queue_id,
            commit_offset=offset,
        )
        request = RemotingCommand.request(
            RequestCode.UPDATE_CONSUMER_OFFSET, header.to_ext_fields()
        )
        addr = await self._master(queue)
        check_success(await self._client.call(addr, request, timeout_s=self.timeout_s))

    async def persist(self, queues: Iterable[MessageQueue]) -> None:
        failed_brokers: set[str] = set()
        for queue in sorted(set(queues)):
            offset = self._table.get(queue)
            if offset is None or self._persisted.get(queue) == offset:
                continue
            if queue.broker_name in failed_brokers:
                continue  # one deadline per broker and round, not one per queue
            try:
                with trio.fail_after(self.timeout_s):
                    await self.commit(queue, offset)
            except (RocketError, trio.TooSlowError) as exc:
                failed_brokers.add(queue.broker_name)
                log.warning(
                    "%s: committing offset %d of %s failed: %s", self.group, offset, queue, exc
                )
                continue
            self._persisted[queue] = offset


class LocalFileOffsetStore:
    """Offsets in a local JSON file (broadcasting): LocalFileOffsetStore."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._table: dict[MessageQueue, int] = {}
        self._stored: dict[MessageQueue, int] = {}
        self._written: dict[MessageQueue, int] = {}

    async def load(self) -> None:
        self._stored = await trio.to_thread.run_sync(read_offsets_file, self.path)
        self._written = dict(self._stored)

    async def read_stored(self, queue: MessageQueue) -> int | None:
        return self._stored.get(queue)

    def update(self, queue: MessageQueue, offset: int) -> None:
        assert offset >= 0, f"offset of {queue} must not be negative: {offset}"
        self._table[queue] = offset

    def get(self, queue: MessageQueue) -> int | None:
        return self._table.get(queue)

    def remove(self, queue: MessageQueue) -> None:
        # Kept in the file: a broadcasting consumer that gets the queue back resumes there.
        offset = self._table.pop(queue, None)
        if offset is not None:
            self._stored[queue] = offset

    async def persist(self, queues: Iterable[MessageQueue]) -> None:
        del queues  # the file holds every queue; it is rewritten whole
        merged = {**self._stored, **self._table}
        if merged == self._written:
            return
        try:
            await trio.to_thread.run_sync(write_offsets_file, self.path, merged)
        except OSError as exc:
            log.warning("writing offsets to %s failed: %s", self.path, exc)
            return
        self._written = merged


def read_offsets_file(path: Path) -> dict[MessageQueue, int]:
    """The offsets of a document written by ``write_offsets_file``; {} when there is none.

    Raises ``MalformedBody`` for a document that is not ours (it is never overwritten
    silently: the user decides).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        doc: Any = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise ValueError(f"expected version {FILE_VERSION}")
        out: dict[MessageQueue, int] = {}
        for entry in doc["offsets"]:
            queue = MessageQueue(
                topic=str(entry["topic"]),
                broker_name=str(entry["brokerName"]),
                queue_id=int(entry["queueId"]),
            )
            out[queue] = int(entry["offset"])
        return out
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedBody(f"offsets file {path} is not a valid offsets document: {exc}") from exc


def write_offsets_file(path: Path, offsets: dict[MessageQueue, int]) -> None:
    """Replace ``path`` atomically with ``offsets`` (blocking: call it from a thread)."""
    doc = {
        "version": FILE_VERSION,
        "offsets": [
            {"topic": q.topic, "brokerName": q.broker_name, "queueId": q.queue_id, "offset": o}
            for q, o in sorted(offsets.items())
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
