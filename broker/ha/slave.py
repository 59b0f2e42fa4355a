"""HASlave: the slave's end of replication — connect, reconcile, apply, ack, reconnect.

Rules (reference/rocketmq-controller.md §4.3–4.5, DESIGN.md §5):
- One task, one connection at a time, one loop: receive (until the silence deadline or the
  next periodic ack), apply every decoded transfer, ack once the local max grew. Every
  socket call has a deadline; any failure closes the connection and reconnects after a
  backoff that doubles up to ``reconnect_backoff_max_s`` (reset once a session streamed).
- Handshake: send ours, read the master's epoch list. An empty local epoch file is a fresh
  replica: keep the log, start at our max offset (0 → the master's oldest data). Otherwise
  the consistent point (``EpochCache.find_consistent_point``) is where both logs agree;
  the CommitLog is cut there first and the epoch file second, so a crash in between leaves
  extra epoch entries that cover nothing (harmless) rather than data claimed by the wrong
  epoch. No common epoch (point < 0): log, wait ``inconsistent_retry_s``, retry.
- A master whose last epoch is below the epoch we were told (``set_master``) is stale and
  is not followed (a deposed master must not feed us its tail, apache/rocketmq#7017).
- A data batch must start at our max offset (or anywhere on a segment boundary when our
  log is empty). A new epoch in its header is persisted before its bytes are appended, so
  no byte on disk is ever without its epoch. An older epoch, or the same epoch with another
  start, ends the connection.
- Under SYNC_FLUSH an ack reports the fsynced offset (one fsync per ack, covering every
  transfer applied since the previous ack), as the master's own SEND_OK waits for its fsync.
- The local confirm offset is min(header confirm, local max), never lowered by the master;
  it moves after the ack of what arrived with it (the master waits for the ack, not for our
  dispatch of what the confirm covers), and the store gets it (and dispatches up to it) in
  bulk: with the first transfer that comes ``CONFIRM_HOLD_S`` or more after the hold
  began, once ``CONFIRM_HOLD_BYTES`` of log wait, when it covers our whole log (a slave
  behind the others: the master sends it again only when it moves), on a read that ends
  with a heartbeat (our master sends one with the last confirm ``confirm_linger_s`` after
  traffic stops), at the periodic ack's turn of the read loop once the hold is that old,
  and when the connection ends. No wake-up of its own: a timer per hold cost more CPU
  than it saved at low rates.
- The master is not trusted (issue 13): every replicated record must carry a legal topic
  (the send path's ``validate_topic``) and a queue id below ``max_queue_nums`` besides the
  store's own checks (``MessageStore.append_raw``; a (topic, queue id) pair accepted once
  is not checked again), and a consistent point more than
  ``max_truncate_bytes`` below the highest offset the store held since it opened is not
  obeyed. Either is logged as an error; the connection drops and is retried after
  ``inconsistent_retry_s``, with nothing written or cut.
"""

from __future__ import annotations

import logging

import attrs
import trio

from broker.ha.auth import answer_master, secure_connect
from broker.ha.config import HAConfig
from broker.ha.epoch import EpochCache
from broker.ha.epochfile import EpochFile
from broker.ha.stream import (
    RateMeter,
    connect,
    receive_ready,
    receive_until,
    send_all,
    write_now,
)
from broker.ha.wire import (
    HAState,
    MasterHandshake,
    SlaveHandshake,
    SlaveSideDecoder,
    Transfer,
    encode_ack,
)
from broker.store.config import FlushMode
from broker.store.store import MessageStore
from broker.topics import validate_topic
from protocol.errors import CorruptRecord, ProtocolError, RemotingTimeout, RocketError

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class HASlaveStatus:
    node: str
    master_address: str | None
    master_epoch: int
    state: str
    max_offset: int
    acked_offset: int
    confirm_offset: int
    #: Master max offset from the last handshake.
    master_max_offset: int
    last_epoch: int
    transfer_bytes_per_s: float
    #: CommitLog bytes received since this HASlave started.
    transferred_bytes: int
    #: Seconds since the master last sent anything; None when not connected.
    last_read_s_ago: float | None
    connects: int
    last_error: str


#: Accepted (topic, queue id) pairs remembered at most (``HASlave._check_record``).
_ACCEPTED_QUEUES_MAX = 4096

#: How long, and over how many bytes of log, a confirm from the master may wait before
#: the store dispatches what it covers (``HASlave._update_confirm``). At one message in
#: flight the slave and the master share a CPU and the master, woken by our ack, waits
#: for the end of our run: a dispatch per message there is on every SEND_OK's path, one
#: per hold is on few of them and cheaper per record (a run of records at once). A slave
#: serves reads only when asked, and a confirm reaches it up to ``confirm_linger_s`` late
#: already.
CONFIRM_HOLD_S = 0.01
CONFIRM_HOLD_BYTES = 256 * 1024


def _ends_idle(pending: list[MasterHandshake | Transfer]) -> bool:
    """The read ended with a heartbeat: the master had nothing more to send then (a
    slave behind the others gets its last data and the confirm-only heartbeat that
    follows it in one read)."""
    return bool(pending) and isinstance(pending[-1], Transfer) and pending[-1].is_heartbeat


class _Inconsistent(RocketError):
    """The master's log cannot be followed from ours (no common epoch, stale master, a cut
    too deep, records we refuse)."""


def replicated_record_problem(topic: str, queue_id: int, *, max_queue_nums: int) -> str | None:
    """Why a record from a master is refused beyond the store's checks, or None."""
    problem = validate_topic(topic)
    if problem is not None:
        return f"topic {topic!r} is not a legal topic: {problem}"
    if not 0 <= queue_id < max_queue_nums:
        return f"queue id {queue_id} is outside [0, {max_queue_nums})"
    return None


class HASlave:
    """Follows one master at a time; ``set_master`` switches at runtime."""

    def __init__(
        self,
        store: MessageStore,
        epochs: EpochFile,
        config: HAConfig | None = None,
        *,
        broker_id: int,
        node_name: str = "broker",
        master_address: str | None = None,
        master_epoch: int = 0,
        async_learner: bool = False,
    ) -> None:
        self.config = config or HAConfig()
        self.node = node_name
        self.broker_id = broker_id
        self.async_learner = async_learner
        self._store = store
        self._epochs = epochs
        self._address = master_address
        self._master_epoch = master_epoch
        self._lot = trio.lowlevel.ParkingLot()
        self._scope: trio.CancelScope | None = None
        self._state = HAState.READY
        self._acked = -1
        #: An ack the socket took only in part (rest, offset, confirm offset to take after).
        self._owed_ack: tuple[bytes, int, int] | None = None
        self._last_ack_s = 0.0
        self._last_read_s: float | None = None
        #: The confirm offset given to the store (dispatched up to it).
        self._confirm = store.confirm_offset if store.config.dispatch_confirmed_only else 0
        #: The highest confirm offset from the master (within our log), not yet given to
        #: the store while ``_held_since`` (when the hold began) is set.
        self._due = self._confirm
        self._held_since: float | None = None
        self._master_max = -1
        self._connects = 0
        self._streamed = False
        self._last_error = ""
        self._meter = RateMeter(window_s=self.config.speed_window_s)
        #: (topic, queue id) pairs whose records passed ``replicated_record_problem``.
        self._accepted: set[tuple[str, int]] = set()

    # ======================================================================================
    # the broker's API
    # ======================================================================================

    @property
    def master_address(self) -> str | None:
        return self._address

    def set_master(self, address: str | None, epoch: int = 0) -> bool:
        """Follow ``address`` (``host:haPort``; None: nobody) from master ``epoch`` on.

        A notice older than one already taken (lower epoch) is ignored and returns False.
        A change drops the current connection at once.
        """
        if epoch < self._master_epoch:
            log.info(
                "%s: ignoring master %s at epoch %d: already following epoch %d",
                self.node,
                address,
                epoch,
                self._master_epoch,
            )
            return False
        changed = (address, epoch) != (self._address, self._master_epoch)
        self._address, self._master_epoch = address, epoch
        if changed:
            log.info("%s: HA master is now %s at epoch %d", self.node, address, epoch)
            if self._scope is not None:
                self._scope.cancel()
            self._lot.unpark_all()
        return True

    def status(self) -> HASlaveStatus:
        now = trio.current_time()
        return HASlaveStatus(
            node=self.node,
            master_address=self._address,
            master_epoch=self._master_epoch,
            state=self._state.name,
            max_offset=self._store.max_physical_offset,
            acked_offset=self._acked,
            confirm_offset=self._confirm,
            master_max_offset=self._master_max,
            last_epoch=self._epochs.cache.last_epoch,
            transfer_bytes_per_s=self._meter.rate(now),
            transferred_bytes=self._meter.total_bytes,
            last_read_s_ago=None if self._last_read_s is None else now - self._last_read_s,
            connects=self._connects,
            last_error=self._last_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Replicate until cancelled, reconnecting after every loss."""
        cfg = self.config
        backoff = cfg.reconnect_backoff_min_s
        task_status.started()
        while True:
            address = self._address
            if address is None:
                await self._lot.park()
                continue
            wait = backoff
            self._streamed = False
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    await self._session(address)
                except _Inconsistent as exc:
                    self._last_error = str(exc)
                    log.error("%s: cannot follow master %s: %s", self.node, address, exc)
                    wait = cfg.inconsistent_retry_s
                except (RocketError, ValueError) as exc:
                    self._last_error = str(exc)
                    log.warning("%s: HA connection to %s lost: %s", self.node, address, exc)
            self._scope = None
            self._last_read_s = None
            self._owed_ack = None
            if self._state is not HAState.READY:
                self._state = HAState.READY
            if scope.cancelled_caught:  # set_master: go to the new master now
                backoff = cfg.reconnect_backoff_min_s
                continue
            if self._streamed:
                backoff = wait = cfg.reconnect_backoff_min_s
            with trio.move_on_after(wait):
                await self._lot.park()  # set_master cuts the wait short
            backoff = min(backoff * 2, cfg.reconnect_backoff_max_s)

    # ======================================================================================
    # one connection
    # ======================================================================================

    async def _session(self, address: str) -> None:
        cfg = self.config
        what = f"HA master {address}"
        raw = await connect(address, timeout_s=cfg.connect_timeout_s)
        async with raw:
            stream = await secure_connect(raw, address, cfg, what)
            self._connects += 1
            self._state = HAState.HANDSHAKE
            self._last_read_s = trio.current_time()
            hello = SlaveHandshake(slave_broker_id=self.broker_id, async_learner=self.async_learner)
            if cfg.cluster_secret is None:
                await send_all(stream, hello.encode(), timeout_s=cfg.send_timeout_s, what=what)
            else:
                await answer_master(
                    stream,
                    cfg.cluster_secret,
                    hello.encode(),
                    timeout_s=cfg.handshake_timeout_s,
                    send_timeout_s=cfg.send_timeout_s,
                    what=what,
                )
            decoder = SlaveSideDecoder()
            events: list[MasterHandshake | Transfer] = []
            while not events:
                events = await self._receive(stream, decoder, what)
            greeting = events.pop(0)
            if not isinstance(greeting, MasterHandshake):
                raise ProtocolError(f"{what} did not handshake")
            self._master_max = greeting.max_offset
            if greeting.last_epoch < self._master_epoch:
                raise _Inconsistent(
                    f"it is at epoch {greeting.last_epoch}, below the master epoch "
                    f"{self._master_epoch} we were given: a deposed master"
                )
            start = await self._reconcile(greeting, what)
            await self._send_ack(stream, what)
            self._state = HAState.TRANSFER
            log.info(
                "%s: replicating from %s (epoch %d, max offset %d) from offset %d",
                self.node,
                address,
                greeting.last_epoch,
                greeting.max_offset,
                start,
            )
            await self._transfer_loop(stream, decoder, events, what)

    async def _reconcile(self, greeting: MasterHandshake, what: str) -> int:
        """Cut our log back to where it agrees with the master's; return our max offset."""
        store = self._store
        local = self._epochs.cache
        if local.last is None:
            if store.max_physical_offset > greeting.max_offset:
                raise _Inconsistent(
                    f"our log ends at {store.max_physical_offset}, past the master's "
                    f"{greeting.max_offset}, and our empty epoch file cannot tell what to cut"
                )
            log.info(
                "%s: empty epoch file: a fresh replica, starting at offset %d",
                self.node,
                store.max_physical_offset,
            )
            return store.max_physical_offset
        try:
            theirs = EpochCache.of(greeting.epochs)
        except ValueError as exc:
            raise ProtocolError(f"{what} sent a bad epoch list: {exc}") from None
        point = local.find_consistent_point(store.max_physical_offset, theirs, greeting.max_offset)
        if point < 0:
            raise _Inconsistent(
                f"no common epoch: ours {local.pairs()[-5:]}, theirs {theirs.pairs()[-5:]}"
            )
        self._check_cut(point, what)
        if point < store.max_physical_offset:
            log.warning(
                "%s: truncating the CommitLog from %d to %d, the consistent point with %s",
                self.node,
                store.max_physical_offset,
                point,
                what,
            )
            await store.truncate_to(point)  # log first, then epochs (see the module rules)
            self._confirm = min(self._confirm, point)
            self._due = min(self._due, point)
        await self._epochs.truncate_suffix_by_offset(point)
        await self._epochs.truncate_prefix_by_offset(store.min_physical_offset)
        return point

    def _check_cut(self, point: int, what: str) -> None:
        """Refuse a consistent point that throws away more than ``max_truncate_bytes``."""
        high = self._store.high_water_offset
        limit = self.config.max_truncate_bytes
        if high - point > limit:
            raise _Inconsistent(
                f"{what} asks to cut the CommitLog to {point}, {high - point} bytes below the "
                f"highest offset {high} held; refusing more than max_truncate_bytes {limit} "
                "(haMaxTruncateBytes)"
            )

    async def _transfer_loop(
        self,
        stream: trio.abc.Stream,
        decoder: SlaveSideDecoder,
        pending: list[MasterHandshake | Transfer],
        what: str,
    ) -> None:
        """Apply, ack and confirm what the master sends until the connection fails.

        Reads run in one cancel scope whose deadline is the next periodic ack or the
        silence limit as they stood when it was entered (a scope per read cost ~7 µs);
        it is left when that deadline passes (then whichever is really due is done and it
        is entered again) or when a message needs a wait. Inside it the read is the only
        checkpoint: what needs none (the common case, ``_take_now``) is applied, acked
        and confirmed right there; the rest (a new epoch's entry, an fsync, a send that
        must wait) is taken outside the scope (``_take``), so no deadline cuts it halfway.
        """
        cfg = self.config
        silence_s = cfg.housekeeping_timeout_s
        try:
            while True:
                await self._take(stream, pending, what)
                pending = []
                assert self._last_read_s is not None
                now = trio.current_time()
                if now >= self._last_read_s + silence_s:
                    raise RemotingTimeout(f"{what} silent for {silence_s:.1f} s")
                if now >= self._last_ack_s + cfg.ack_interval_s:
                    await self._send_ack(stream, what)  # at least every ack_interval_s
                held = self._held_since
                if held is not None and now >= held + CONFIRM_HOLD_S:
                    self._release_confirm()  # no transfer since: the periodic ack's turn
                deadline = min(self._last_ack_s + cfg.ack_interval_s, self._last_read_s + silence_s)
                with trio.CancelScope(deadline=deadline):
                    while not pending and self._owed_ack is None:
                        data = await receive_ready(stream, what=what)
                        self._last_read_s = trio.current_time()
                        pending = self._take_now(stream, decoder.feed(data), what)
        finally:
            self._release_confirm()  # what the master confirmed while we followed it

    async def _take(
        self, stream: trio.abc.Stream, pending: list[MasterHandshake | Transfer], what: str
    ) -> None:
        """Apply every transfer of ``pending`` (a new epoch's entry written before its
        bytes), ack once our log grew, then take the highest confirm offset."""
        confirm = -1
        if self._owed_ack is not None:  # ``_take_now`` applied, the socket took part of the ack
            rest, offset, confirm = self._owed_ack
            await send_all(stream, rest, timeout_s=self.config.send_timeout_s, what=what)
            self._owed_ack = None
            self._acked, self._last_ack_s = offset, trio.current_time()
        for message in pending:
            if not isinstance(message, Transfer):
                raise ProtocolError(f"{what} sent a second handshake")
            if not message.is_heartbeat:  # its confirm offset: taken once acked, below
                if self._check_batch(message):
                    await self._epochs.append(message.epoch, message.epoch_start_offset)
                self._append(message, trio.current_time())
            confirm = max(confirm, message.confirm_offset)
        if self._store.max_physical_offset > self._acked:
            await self._send_ack(stream, what)
        if confirm >= 0:
            # After the ack: dispatching what the confirm covers is off the sync
            # write's path (the master waits for the ack, not for our ConsumeQueue).
            self._update_confirm(confirm, trio.current_time(), at_once=_ends_idle(pending))

    def _take_now(
        self, stream: trio.abc.Stream, pending: list[MasterHandshake | Transfer], what: str
    ) -> list[MasterHandshake | Transfer]:
        """``_take`` without a wait, when none is needed: ASYNC_FLUSH, a plain TCP
        stream, every batch of our current epoch. Returns what is left for ``_take``:
        [] (all done; an ack the socket took only in part is owed, ``_owed_ack``), or
        ``pending`` itself, untouched."""
        store = self._store
        last = self._epochs.cache.last
        if (
            last is None
            or store.config.flush_mode is FlushMode.SYNC_FLUSH
            or type(stream) is not trio.SocketStream
        ):
            return pending
        for message in pending:
            if type(message) is not Transfer or (message.data and message.epoch != last.epoch):
                return pending
        now = self._last_read_s
        assert now is not None
        confirm = -1
        for message in pending:
            assert isinstance(message, Transfer)
            if message.data:
                self._check_batch(message)  # not a new epoch: checked above
                self._append(message, now)
            confirm = max(confirm, message.confirm_offset)
        offset = store.max_physical_offset
        if offset > self._acked:
            ack = encode_ack(offset)
            sent = write_now(stream, ack, what=what)
            if sent < len(ack):
                self._owed_ack = (ack[sent:], offset, confirm)
                return []
            self._acked, self._last_ack_s = offset, now
        if confirm >= 0:
            self._update_confirm(confirm, now, at_once=_ends_idle(pending))  # as in ``_take``
        return []

    async def _receive(
        self, stream: trio.abc.Stream, decoder: SlaveSideDecoder, what: str
    ) -> list[MasterHandshake | Transfer]:
        """Decoded messages of the next read (the handshake's); ``RemotingTimeout`` after
        ``housekeeping_timeout_s`` of silence."""
        assert self._last_read_s is not None
        timeout_s = self.config.housekeeping_timeout_s
        data = await receive_until(stream, self._last_read_s + timeout_s, what=what)
        if data is None:
            raise RemotingTimeout(f"{what} silent for {timeout_s:.1f} s")
        self._last_read_s = trio.current_time()
        return decoder.feed(data)

    def _check_batch(self, batch: Transfer) -> bool:
        """Refuse a batch that does not continue our log (``ProtocolError``); True when
        its epoch is new to us (its entry is written before its bytes)."""
        store = self._store
        local_max = store.max_physical_offset
        if local_max not in (batch.offset, store.min_physical_offset):
            raise ProtocolError(f"batch at offset {batch.offset}, our log ends at {local_max}")
        if not batch.epoch_start_offset <= batch.offset:
            raise ProtocolError(
                f"batch at {batch.offset} claims epoch {batch.epoch} starting later, at "
                f"{batch.epoch_start_offset}"
            )
        last = self._epochs.cache.last
        if last is None or batch.epoch > last.epoch:
            return True
        if batch.epoch < last.epoch or batch.epoch_start_offset != last.start_offset:
            raise ProtocolError(
                f"batch of epoch {batch.epoch}@{batch.epoch_start_offset} after our epoch "
                f"{last.epoch}@{last.start_offset}"
            )
        return False

    def _append(self, batch: Transfer, now_s: float) -> None:
        try:
            self._store.append_raw(batch.data, batch.offset, check=self._check_record)
        except CorruptRecord as exc:
            raise _Inconsistent(str(exc)) from None
        self._streamed = True
        self._meter.record(now_s, len(batch.data))

    def _check_record(self, topic: str, queue_id: int) -> str | None:
        # The store asks once per pair and transfer; a pair accepted once is not checked
        # again in later transfers either.
        key = (topic, queue_id)
        if key in self._accepted:
            return None
        problem = replicated_record_problem(
            topic, queue_id, max_queue_nums=self.config.max_queue_nums
        )
        if problem is None:
            if len(self._accepted) >= _ACCEPTED_QUEUES_MAX:
                self._accepted.clear()  # bounded: a flood of names only costs re-checks
            self._accepted.add(key)
        return problem

    def _update_confirm(self, master_confirm: int, now_s: float, *, at_once: bool) -> None:
        """Take the master's confirm offset (within our log): given to the store, which
        dispatches up to it, at once when ``at_once`` (a read that ended with a heartbeat:
        we are idle), when it covers our whole log (a slave behind the others: the
        confirm came before the data, and no later message need carry it again), when
        ``CONFIRM_HOLD_BYTES`` of log wait or the hold began ``CONFIRM_HOLD_S`` ago or
        more; else held (see the module rules for the other ends of a hold)."""
        end = self._store.max_physical_offset
        value = min(master_confirm, end)
        if value <= self._confirm:
            return
        self._due = max(self._due, value)
        held = self._held_since
        if (
            at_once
            or value == end  # all we hold is confirmed: the master may never send more
            or self._due - self._confirm >= CONFIRM_HOLD_BYTES
            or (held is not None and now_s >= held + CONFIRM_HOLD_S)
        ):
            self._release_confirm()
        elif held is None:
            self._held_since = now_s

    def _release_confirm(self) -> None:
        """Give the store the confirm offset held back (``_update_confirm``)."""
        self._held_since = None
        if self._due > self._confirm:
            self._confirm = self._due
            self._store.set_confirm_offset(self._due)

    async def _send_ack(self, stream: trio.abc.Stream, what: str) -> None:
        store = self._store
        if store.config.flush_mode is FlushMode.SYNC_FLUSH:
            # Ack only what survives a power loss: a SEND_OK counted on this ack must not
            # hang on our page cache (issue 19 finding 2). One group fsync per ack, which
            # covers every transfer applied since the last one.
            offset = await store.flush()
        else:
            offset = store.max_physical_offset
        await send_all(stream, encode_ack(offset), timeout_s=self.config.send_timeout_s, what=what)
        self._acked = offset
        self._last_ack_s = trio.current_time()
