"""The broker's appends and the wait for their durability (split out of ``broker/server.py``).

Rules (the ones ``broker/server.py``'s docstring states for every put):
- Every put (send, batch, send-back, delayed re-put) wakes the HA streamers: a put written
  at once right away, a held one (below) once ``commit_before_write`` wrote its bytes,
  one wake-up for the read's held puts together. A SYNC_MASTER
  refuses a put before storing it while its in-sync set is below ``min_in_sync_replicas``
  (RocketMQ's IN_SYNC_REPLICAS_NOT_ENOUGH → SYSTEM_ERROR, which producers retry on
  another broker group); storage failures become SERVICE_NOT_AVAILABLE.
- A stored send is answered once it is as durable as configured: SYNC_FLUSH waits for the
  group fsync, a SYNC_MASTER for the slaves' acks (or ``slave_timeout_s``), both side by
  side; a replication failure wins over a flush timeout (RocketMQ's handleDiskFlushAndHA).
- A single send or a batch on a broker that is no SYNC_MASTER is held in the CommitLog
  (``put_encoded(hold=True)``) and written by ``commit_before_write``, which the client
  server runs before each socket write: one write per read of sends. A failed commit
  drops every connection holding an answer not yet written (its record may be lost). A
  SYNC_MASTER writes at once: a replication waiter's answer is in no connection's queue
  (its streamer reads each put back at once anyway); SYNC_FLUSH waiters above a cut fail.
- Where replication is the only wait (a SYNC_MASTER under ASYNC_FLUSH), ``when_replicated``
  gives the code to a callback instead of a waiting task (the send path's ``LaterAnswer``),
  called from the ack that replicates the write, the HA master's timer or its end.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import trio

from broker.agent import BrokerAgent
from broker.config import BrokerConfig
from broker.ha import HAMaster, ReplicaOutcome
from broker.processors.send import store_put_error
from broker.role import RoleState
from broker.stats import BrokerStats
from broker.store.results import PUT_OK, AppendResult
from broker.store.store import MessageStore
from protocol.codes import ResponseCode
from protocol.errors import StorageError, SystemError_
from protocol.message import MessageRecord
from protocol.rpc import RemotingServer

log = logging.getLogger(__name__)

#: A replication outcome → the send's response code (SendMessageProcessor's mapping).
_REPLICA_CODES = {
    ReplicaOutcome.OK: ResponseCode.SUCCESS,
    ReplicaOutcome.TIMEOUT: ResponseCode.FLUSH_SLAVE_TIMEOUT,
    ReplicaOutcome.NO_SLAVE: ResponseCode.SLAVE_NOT_AVAILABLE,
}


class BrokerForWrites(Protocol):
    """What ``BrokerWrites`` reads of its broker, at each use (roles change at runtime)."""

    name: str
    config: BrokerConfig
    role: RoleState
    stats: BrokerStats
    ha_master: HAMaster | None
    agent: BrokerAgent | None

    server: RemotingServer

    @property
    def store(self) -> MessageStore: ...
    @property
    def accepts_writes(self) -> bool: ...


class BrokerWrites:
    """Appends through the broker's checks and counters, and the wait for durability."""

    def __init__(self, broker: BrokerForWrites) -> None:
        self.broker = broker
        #: Held puts stored since the last ``commit_before_write``: the HA master's wake-up
        #: (``notify_appended``) they owe, given once their bytes are in the file.
        self._wake_owed = False

    def store_put(self, records: Sequence[MessageRecord], *, hold: bool = False) -> AppendResult:
        """Append one record or a batch; storage failures become SERVICE_NOT_AVAILABLE.
        ``hold``: a client's batch, whose answer leaves through the server (its bytes may
        wait for ``commit_before_write``; a SYNC_MASTER writes at once all the same).

        A SYNC_MASTER whose in-sync set is below ``min_in_sync_replicas`` refuses before
        writing (RocketMQ's IN_SYNC_REPLICAS_NOT_ENOUGH → SYSTEM_ERROR, which producers
        retry on another broker group).
        """
        store = self.broker.store
        topic = records[0].topic
        if len(records) == 1:
            return self._guarded_put(topic, functools.partial(store.put_message, records[0]))
        held = hold and self._may_hold()
        return self._guarded_put(
            topic, functools.partial(store.put_messages, records, hold=held), held=held
        )

    def store_put_encoded(
        self,
        topic: str,
        queue_id: int,
        sys_flag: int,
        encoded: bytes,
        properties: Mapping[str, str],
        *,
        body_bytes: int,
    ) -> AppendResult:
        """``store_put`` of one record already encoded (the send path's straight case):
        ``_guarded_put`` with ``_check_in_sync``, ``_may_hold`` and ``_counted`` written
        out, without the partial and their frames (every single send comes here)."""
        broker = self.broker
        master = broker.ha_master
        held = master is None or not broker.role.is_sync_master
        if not held and not master.check_writable(broker.config.min_in_sync_replicas):  # type: ignore[union-attr]
            raise SystemError_("in-sync replicas not enough")
        try:
            result = broker.store.put_encoded(
                topic,
                queue_id,
                sys_flag,
                encoded,
                properties,
                body_bytes=body_bytes,
                hold=held,
            )
        except StorageError as exc:
            raise self._refused(exc) from None
        if result.status is PUT_OK:  # result.ok without the property's frame
            broker.stats.on_put(topic, 1, result.wrote_bytes)
            if master is not None:
                if held:
                    self._wake_owed = True
                else:
                    master.notify_appended()
        return result

    def store_put_encoded_batch(
        self,
        topic: str,
        queue_id: int,
        sys_flag: int,
        encoded: list[bytes],
        properties: list[Mapping[str, str]],
        *,
        body_bytes: int,
    ) -> AppendResult:
        """``store_put`` of a client's batch already encoded (the send path's straight case
        for SEND_BATCH_MESSAGE): its bytes may wait for ``commit_before_write``, as a
        batch's do."""
        held = self._may_hold()
        return self._guarded_put(
            topic,
            functools.partial(
                self.broker.store.put_encoded_batch,
                topic,
                queue_id,
                sys_flag,
                encoded,
                properties,
                body_bytes=body_bytes,
                hold=held,
            ),
            held=held,
        )

    def _may_hold(self) -> bool:
        """A put's bytes may wait for ``commit_before_write``: no replication waiter may
        answer for a held record (a failed commit drops only the answers queued on
        connections), so not on a SYNC_MASTER with an HA master."""
        broker = self.broker
        return broker.ha_master is None or not broker.role.is_sync_master

    def commit_before_write(self) -> None:
        """``RemotingServer.before_write``: held appends go to the file before any answer
        leaves. After a failed write (reported once by ``commit_held``) every connection
        with an answer not yet written is dropped, and this raises: the caller's too."""
        broker = self.broker
        if broker.store.commit_held():
            if self._wake_owed:
                self._wake_owed = False
                master = broker.ha_master
                if master is not None:  # None: the role changed since the puts
                    master.notify_appended()
            return
        self._wake_owed = False  # their bytes are gone: nothing new to stream
        dropped = broker.server.drop_unwritten("a CommitLog write failed; answers not sent")
        log.error(
            "%s: a CommitLog write failed: %d connections holding answers dropped",
            broker.name,
            dropped,
        )
        raise StorageError("a CommitLog write failed; answers not sent")

    def _check_in_sync(self) -> HAMaster | None:
        broker = self.broker
        master = broker.ha_master
        if (
            master is not None
            and broker.role.is_sync_master
            and not master.check_writable(broker.config.min_in_sync_replicas)
        ):
            raise SystemError_("in-sync replicas not enough")
        return master

    def _guarded_put(
        self, topic: str, put: Callable[[], AppendResult], *, held: bool = False
    ) -> AppendResult:
        master = self._check_in_sync()
        try:
            result = put()
        except StorageError as exc:
            raise self._refused(exc) from None
        if result.ok:
            self._counted(topic, result, master, held=held)
        return result

    def _refused(self, exc: StorageError) -> Exception:
        log.warning("%s: append refused: %s", self.broker.name, exc)
        return store_put_error(exc)

    def _counted(
        self, topic: str, result: AppendResult, master: HAMaster | None, *, held: bool
    ) -> None:
        """After a put that stored: the per-topic put counters (RocketMQ's incTopicPutNums /
        incTopicPutSize with the stored bytes: one call per put, not per message), and the
        HA streamers woken: now, or for a held put once ``commit_before_write`` wrote it."""
        self.broker.stats.on_put(topic, result.message_count, result.wrote_bytes)
        if master is not None:
            if held:
                self._wake_owed = True
            else:
                master.notify_appended()

    def durable_at_once(self, *, wait_store: bool) -> bool:
        """True when ``wait_durable`` would answer SUCCESS without waiting (the producer
        does not wait for the store, or ASYNC_FLUSH on a broker that is no SYNC_MASTER): the
        send path then answers without a coroutine. Read at each call (roles change)."""
        if not wait_store:
            return True
        broker = self.broker
        if broker.config.flush_disk_type == "SYNC_FLUSH":
            return False
        return broker.ha_master is None or not broker.role.is_sync_master

    def answers_later(self, *, wait_store: bool) -> bool:
        """True when the one wait of a stored send is a SYNC_MASTER's replication (no
        SYNC_FLUSH): ``when_replicated`` can answer it from a callback. Read at each call."""
        broker = self.broker
        return (
            wait_store
            and broker.ha_master is not None
            and broker.role.is_sync_master
            and broker.config.flush_disk_type != "SYNC_FLUSH"
        )

    def when_replicated(self, result: AppendResult, then: Callable[[int], None]) -> int | None:
        """``wait_durable`` where ``answers_later``, without a task: the response code now,
        or None and ``then(code)`` called once later."""
        broker = self.broker
        master = broker.ha_master
        assert master is not None

        def replicated(outcome: ReplicaOutcome) -> None:
            then(self._replica_code(master, outcome))

        outcome = master.when_replicated(
            result.end_offset, broker.config.slave_timeout_s, replicated
        )
        return None if outcome is None else self._replica_code(master, outcome)

    async def wait_durable(self, result: AppendResult, *, wait_store: bool) -> int:
        """Wait until the append is as durable as configured; the send's response code.

        SYNC_FLUSH waits for the group fsync; a SYNC_MASTER waits for the slaves' acks; both
        wait side by side. A replication failure wins over a flush timeout, as in
        RocketMQ's handleDiskFlushAndHA.
        """
        if self.durable_at_once(wait_store=wait_store):
            return ResponseCode.SUCCESS
        broker = self.broker
        flush = broker.config.flush_disk_type == "SYNC_FLUSH"
        master = broker.ha_master if broker.role.is_sync_master else None
        if master is None:
            return await self._wait_flushed(result) if flush else ResponseCode.SUCCESS
        if not flush:
            return await self._wait_replicated(master, result)
        codes: dict[str, int] = {}

        async def flushed() -> None:
            codes["flush"] = await self._wait_flushed(result)

        async def replicated() -> None:
            codes["replica"] = await self._wait_replicated(master, result)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flushed)
            nursery.start_soon(replicated)
        if codes["replica"] != ResponseCode.SUCCESS:
            return codes["replica"]
        return codes["flush"]

    async def _wait_flushed(self, result: AppendResult) -> int:
        broker = self.broker
        flushed = await broker.store.wait_flushed(
            result.end_offset, broker.config.sync_flush_timeout_s
        )
        return ResponseCode.SUCCESS if flushed else ResponseCode.FLUSH_DISK_TIMEOUT

    async def _wait_replicated(self, master: HAMaster, result: AppendResult) -> int:
        broker = self.broker
        outcome = await master.wait_replicated(result.end_offset, broker.config.slave_timeout_s)
        return self._replica_code(master, outcome)

    def _replica_code(self, master: HAMaster, outcome: ReplicaOutcome) -> int:
        """A replication's outcome as the send's response code, once the wait ended."""
        broker = self.broker
        if broker.agent is not None and (
            master is not broker.ha_master or not broker.accepts_writes
        ):
            # Deposed or past its lease while waiting (#7017): the write is stored here and
            # maybe on the member now elected, so its fate is unknown. Not SEND_OK, and not a
            # refusal either (a client would count a message it may find stored as failed):
            # "stored, not replicated as required", as RocketMQ answers a slave timeout.
            return ResponseCode.FLUSH_SLAVE_TIMEOUT
        return _REPLICA_CODES[outcome]
