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
- Broker store, failover (RocketMQ's findBrokerAddressInSubscribe / InAdmin): reads and
  commits go to the master of the queue's broker group; when the route has no master, or
  the master does not answer (network error, timeout), to its slaves in id order. Slaves
  take UPDATE_CONSUMER_OFFSET and answer QUERY_CONSUMER_OFFSET from the table they copy
  from their master (``broker/processors/offsets.py``).
- Only a master's answer "no offset" is believed: a slave that has none may simply not
  have copied it yet, and applying consume_from then would restart the queue at 0 (a flood
  of duplicates) or at the end (a loss). It raises ``NetworkError`` instead, and the caller
  retries later.
- A commit counts as persisted only once a master took it. A commit a slave took is sent
  again every round until a master takes it: the master's values overwrite the slave's
  when it is back (``broker/slavesync.py``), so the position must reach the master.
- ``remove`` keeps the queue's last position for FLOOR_TTL_S (``floor``): everything
  before it was processed by this consumer, so when it owns the queue again it starts no
  lower, whatever a slave with a lagging copy, a slave restarted as master, or a master
  that lost recent commits answers. A position that never reached a master is also
  offered to the master once one answers, raising the master's offset to it, never
  lowering it (another consumer may own the queue by then).
- Commits are requests with a deadline (not oneway), so a failure is seen and retried.
- File store: one JSON document per (client, group), replaced atomically (write a temp
  file, fsync, rename, fsync the directory) in a worker thread.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import trio

from client.routes import RouteCache
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import (
    MalformedBody,
    NetworkError,
    QueryNotFound,
    RemotingTimeout,
    RocketError,
)
from protocol.headers import (
    OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader,
)
from protocol.route import MASTER_ID, MessageQueue
from protocol.rpc import RemotingClient, check_success

log = logging.getLogger(__name__)

#: Version of the local offsets document.
FILE_VERSION = 1
#: How long a dropped queue's last position is remembered as a floor. Bounded so that an
#: offset an operator moved back meanwhile wins again after a while.
FLOOR_TTL_S = 600.0


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

    def floor(self, queue: MessageQueue) -> int | None:
        """The last position of a recently removed queue: owning it again, start no lower."""


async def call_replicas(
    client: RemotingClient,
    routes: RouteCache,
    queue: MessageQueue,
    request: RemotingCommand,
    *,
    timeout_s: float,
    down: set[str] | None = None,
) -> tuple[int, RemotingCommand]:
    """Send ``request`` to the queue's master, else to its slaves; (broker id, response).

    The next replica is tried only when one does not answer (network error or timeout);
    any response, error codes included, is returned. Addresses in ``down`` are skipped and
    those that fail are added to it (one deadline per address and persist round).
    """
    info = await routes.get(queue.topic)
    replicas = info.replicas_of(queue.broker_name)
    last: RocketError | None = None
    for broker_id, addr in replicas:
        if down is not None and addr in down:
            continue
        try:
            return broker_id, await client.call(addr, request, timeout_s=timeout_s)
        except (NetworkError, RemotingTimeout) as exc:
            last = exc
            if down is not None:
                down.add(addr)
    if replicas:
        routes.invalidate(queue.topic)  # a broker is gone: the next attempt reads the route
    if last is not None:
        raise last
    raise NetworkError(
        f"no broker of group {queue.broker_name} answers for {queue.topic} "
        f"(route: {dict(replicas) or 'none'})"
    )


class BrokerOffsetStore:
    """Offsets kept by the brokers (clustering): RemoteBrokerOffsetStore, with failover."""

    def __init__(
        self, client: RemotingClient, routes: RouteCache, *, group: str, timeout_s: float
    ) -> None:
        self._client = client
        self._routes = routes
        self.group = group
        self.timeout_s = timeout_s
        self._table: dict[MessageQueue, int] = {}
        #: What a master took last, per queue (commits a slave took are not in here).
        self._persisted: dict[MessageQueue, int] = {}
        #: Removed queues: (last position, when removed) — see ``floor``.
        self._floors: dict[MessageQueue, tuple[int, float]] = {}
        #: Removed queues whose last position never reached a master (offered later).
        self._unsaved: set[MessageQueue] = set()

    async def load(self) -> None:
        return None

    async def read_stored(self, queue: MessageQueue) -> int | None:
        header = QueryConsumerOffsetRequestHeader(
            consumer_group=self.group,
            topic=queue.topic,
            queue_id=queue.queue_id,
            set_zero_if_not_found=False,
        )
        request = RemotingCommand.request(RequestCode.QUERY_CONSUMER_OFFSET, header.to_ext_fields())
        broker_id, response = await call_replicas(
            self._client, self._routes, queue, request, timeout_s=self.timeout_s
        )
        try:
            check_success(response)
        except QueryNotFound:
            if broker_id == MASTER_ID:
                return None
            # Unknown is not "none": the slave may not have copied the master's offset yet.
            self._routes.invalidate(queue.topic)  # the next attempt looks for a master
            raise NetworkError(
                f"the master of {queue.broker_name} is unreachable and its slave {broker_id} "
                f"has no offset of {self.group} for {queue}; retry when the master is back"
            ) from None
        offset = OffsetResponseHeader.from_ext_fields(response.ext_fields).offset
        return offset if offset >= 0 else None

    def update(self, queue: MessageQueue, offset: int) -> None:
        assert offset >= 0, f"offset of {queue} must not be negative: {offset}"
        self._table[queue] = offset
        if self._floors and self._floors.pop(queue, None) is not None:  # per message: rare
            self._unsaved.discard(queue)

    def get(self, queue: MessageQueue) -> int | None:
        return self._table.get(queue)

    def remove(self, queue: MessageQueue) -> None:
        offset = self._table.pop(queue, None)
        if offset is not None:
            self._floors[queue] = (offset, time.monotonic())
            if self._persisted.get(queue) != offset:
                self._unsaved.add(queue)
        self._persisted.pop(queue, None)

    def floor(self, queue: MessageQueue) -> int | None:
        entry = self._floors.get(queue)
        if entry is None:
            return None
        offset, removed_at = entry
        if time.monotonic() - removed_at > FLOOR_TTL_S:
            del self._floors[queue]
            self._unsaved.discard(queue)
            return None
        return offset

    async def commit(
        self, queue: MessageQueue, offset: int, *, down: set[str] | None = None
    ) -> bool:
        """UPDATE_CONSUMER_OFFSET now; True when a master took it, False when a slave did.

        Raises the ``RocketError`` of a failure.
        """
        header = UpdateConsumerOffsetRequestHeader(
            consumer_group=self.group,
            topic=queue.topic,
            queue_id=queue.queue_id,
            commit_offset=offset,
        )
        request = RemotingCommand.request(
            RequestCode.UPDATE_CONSUMER_OFFSET, header.to_ext_fields()
        )
        broker_id, response = await call_replicas(
            self._client, self._routes, queue, request, timeout_s=self.timeout_s, down=down
        )
        check_success(response)
        return broker_id == MASTER_ID

    async def persist(self, queues: Iterable[MessageQueue]) -> None:
        owned = set(queues)
        down: set[str] = set()
        failed_brokers: set[str] = set()
        for queue in sorted(owned):
            offset = self._table.get(queue)
            if offset is None or self._persisted.get(queue) == offset:
                continue
            if queue.broker_name in failed_brokers:
                continue  # one deadline per broker and round, not one per queue
            try:
                with trio.fail_after(self.timeout_s * 2):
                    if await self.commit(queue, offset, down=down):
                        self._persisted[queue] = offset
            except (RocketError, trio.TooSlowError) as exc:
                failed_brokers.add(queue.broker_name)
                log.warning(
                    "%s: committing offset %d of %s failed: %s", self.group, offset, queue, exc
                )
        for queue in sorted(self._unsaved - owned):
            offset = self.floor(queue)
            if offset is not None and queue.broker_name not in failed_brokers:
                await self._offer_unsaved(queue, offset, down)

    async def _offer_unsaved(self, queue: MessageQueue, offset: int, down: set[str]) -> None:
        """Raise the master's offset of a queue we dropped to our unsaved position."""
        info = self._routes.cached(queue.topic)
        master = info.master_of(queue.broker_name) if info is not None else None
        if master is None or master in down:
            return  # wait for a master: a slave's copy is overwritten by the master's
        try:
            with trio.fail_after(self.timeout_s * 2):
                stored = await self.read_stored(queue)
                raise_it = stored is None or stored < offset
                if raise_it and not await self.commit(queue, offset, down=down):
                    return  # a slave took it: offer it again when the master answers
        except (RocketError, trio.TooSlowError) as exc:
            log.debug("%s: offering offset %d of %s failed: %s", self.group, offset, queue, exc)
            return
        if self._floors.get(queue, (None,))[0] == offset:
            self._unsaved.discard(queue)


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

    def floor(self, queue: MessageQueue) -> int | None:
        return None  # ``read_stored`` already answers from memory

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
