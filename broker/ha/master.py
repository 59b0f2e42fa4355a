"""HAMaster: the master's end of replication — serves slaves, tracks acks, releases sync writes.

Rules (reference/rocketmq-controller.md §4.4–4.7, DESIGN.md §5):
- A thin Trio shell around ``SyncState`` (pure). Every event (handshake, ack, disconnect,
  periodic check, new data, controller answer) goes through the core; its actions are
  performed here: push the confirm offset to the store, log set changes, hand proposals to
  ``on_proposal``, release sync waiters.
- One task per slave connection: read the 16-byte handshake, send the epoch list, wait for
  the first ack (the slave's start; 0 → the store's min offset), then one writer (the
  streamer, ``broker/ha/master_stream.py``) and the same task reading acks. Only the
  streamer writes to the socket, or the put path in its place while it is parked.
- A batch is at most ``batch_bytes`` of whole records from ``store.read_raw`` and never
  crosses an epoch boundary: it is cut at the end of the epoch that holds its first byte.
- Idle streamers park until ``notify_appended`` wakes them; an empty transfer (heartbeat)
  goes out after ``heartbeat_interval_s`` without sending, or ``confirm_linger_s`` after
  the confirm offset moved with no batch to carry it (one timer for all connections,
  armed by the move; it wakes no task), at once while puts come further apart than the
  linger. Every
  transfer header carries the confirm offset, so under steady writes the next batch tells
  the slave and no heartbeat goes out per confirm change (that doubled the master's sends
  and the slaves' wake-ups per sync write). A slave only learns the confirm later, never
  a higher one: it dispatches (serves) less for at most ``confirm_linger_s``, never data
  the SyncStateSet does not hold; nothing else reads a slave's confirm offset (elections
  go by epoch and max offset).
- Every mastership has its own epoch: static mode starts one in ``serve``, controller
  mode takes the controller's through ``new_epoch``.
- The HA port is an ``HAListener`` (``broker/listeners.py``): its own, bound in ``serve``
  and released when it stops (static mode), or the broker's, bound once and served by each
  mastership in turn (controller mode). Slave connections run in this master's nursery.
- A connection silent for ``housekeeping_timeout_s`` is closed. ``new_epoch`` drops and
  re-handshakes every connection (apache/rocketmq#9689: a live connection would keep
  streaming with a stale epoch).
- Admission (issue 13: 16 idle sockets held every slot and locked real slaves out): a
  connection must handshake within ``handshake_timeout_s`` (TLS and the cluster-secret
  challenge included, when configured: broker/ha/auth.py); at most
  ``max_pending_connections`` wait for their handshake (a new one closes the oldest, so a
  real slave, which handshakes at once, always gets through); at most ``max_connections``
  handshaken slaves, where a known slave (a SyncStateSet member now or earlier under this
  master) takes the place of one never in sync. A connection closed before it became
  a slave is logged with its reason (at most ``_REFUSALS_LOGGED_PER_S`` lines a second,
  the rest counted).
- ``wait_replicated`` / ``when_replicated`` are pipelined (``broker/ha/waiters.py``): each
  ack computes the replicated offset once and ends every waiter at or below it, lowest
  first, before the confirm offset it moved reaches the store (the answers a waiter writes
  leave before the confirmed records' dispatch, in the same step). No waiter holds a
  connection, a lock or a task; one timer ends them at their deadlines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from broker.background import fd_exhausted
from broker.ha.auth import challenge_slave, secure_accept
from broker.ha.config import HAConfig
from broker.ha.epochfile import EpochFile
from broker.ha.master_read import read_until_silent
from broker.ha.master_status import HAMasterStatus, SlaveStatus
from broker.ha.master_stream import HAStreamers, SlaveConn
from broker.ha.stream import (
    RateMeter,
    peer_name,
    receive_until,
    send_all,
)
from broker.ha.syncstate import (
    Action,
    ConfirmOffsetChanged,
    SyncState,
    SyncStateSetChanged,
    SyncStateSetProposed,
)
from broker.ha.waiters import ReplicaOutcome, ReplicaWaiters, Then, Waiter
from broker.ha.wire import (
    Ack,
    HAState,
    MasterHandshake,
    MasterSideDecoder,
    SlaveHandshake,
    handshake_epochs,
)
from broker.listeners import HAListener
from broker.store.store import MessageStore
from protocol.errors import ProtocolError, RemotingTimeout, RocketError

log = logging.getLogger(__name__)


class _Dropped(RocketError):
    """The master refuses to serve this slave (reason in the message)."""


#: Refusal log lines per second at most (a flood of sockets must not flood the log).
_REFUSALS_LOGGED_PER_S = 10


class HAMaster:
    """Serves the HA port while this broker is a master.

    The broker calls ``notify_appended`` after each put, awaits ``wait_replicated`` for
    sync writes, asks ``check_writable`` before storing, calls ``new_epoch`` when it becomes
    master (again), and in controller mode forwards ``on_proposal`` to the controller and
    feeds the answers back through ``apply_confirmed`` / ``proposal_rejected``.
    """

    def __init__(
        self,
        store: MessageStore,
        epochs: EpochFile,
        config: HAConfig | None = None,
        *,
        broker_id: int = 0,
        node_name: str = "broker",
        host: str = "127.0.0.1",
        port: int = 0,
        on_proposal: Callable[[SyncStateSetProposed], None] | None = None,
        sync_state_set: Iterable[int] = (),
        sync_state_set_epoch: int = 0,
    ) -> None:
        self.config = config or HAConfig()
        self.node = node_name
        self.broker_id = broker_id
        self.port = port
        self._host = host
        self._store = store
        self._epochs = epochs
        self._on_proposal = on_proposal
        last = epochs.cache.last
        self._core = SyncState.create(
            master_id=broker_id,
            now_s=0.0,
            controller_mode=self.config.controller_mode,
            all_ack=self.config.all_ack_in_sync_state_set,
            in_sync_replicas=self.config.in_sync_replicas,
            max_time_slave_not_catchup_s=self.config.max_time_slave_not_catchup_s,
            members=sync_state_set,
            epoch=sync_state_set_epoch,
            confirm_offset=store.confirm_offset if store.config.dispatch_confirmed_only else 0,
            epoch_start_offset=0 if last is None else last.start_offset,
        )
        self._conns: dict[int, SlaveConn] = {}  # handshaken, by slave broker id
        self._all_conns: set[SlaveConn] = set()
        #: Connections waiting for their handshake, oldest first.
        self._pending: dict[SlaveConn, None] = {}
        #: Slave ids that were SyncStateSet members under this master: each keeps a slot
        #: against ids never in sync (anyone can claim an id; only a replica gets in sync).
        self._known: set[int] = set(self._core.members)
        self._refused_connections = 0
        self._refusal_window_s = -1.0
        self._refusals_in_window = 0
        self._waiters = ReplicaWaiters(self.config.max_waiters)
        self._refused = 0
        self._serving = False
        self._nursery: trio.Nursery | None = None
        self._streamers = HAStreamers(store, epochs, self.config, self._core, self._conns)
        store.add_dispatch_watcher(self._on_dispatched)

    # ======================================================================================
    # the broker's API
    # ======================================================================================

    def notify_appended(self) -> None:
        """Call after every put: sends the new data to idle slaves or wakes their streamers;
        moves a confirm offset that follows the master (master-only set, or count mode)."""
        if not self._all_conns and not self._waiters.live:
            # No slave connected and no send waiting for one (a single master, the common
            # case): no streamer to wake or tell, so only the confirm offset moves (what
            # ``_after`` does of a ConfirmOffsetChanged when it has no connection and no
            # waiter), without the clock reads and the action dispatch (~1.7 µs a send).
            # The put gap is not kept: it only sets the linger of connected streamers, and
            # the first put after a slave connects reads a long gap (no linger, as after
            # any pause).
            confirm = self._core.master_advanced_to(self._store.max_physical_offset)
            if confirm is not None:
                self._store.set_confirm_offset(confirm)
            return
        now = _now()
        streamers = self._streamers
        streamers.put_seen(now)
        actions = self._core.master_advanced(self._store.max_physical_offset)
        if actions:
            self._after(actions)
        streamers.put_done(now)

    def when_replicated(
        self, end_offset: int, timeout_s: float, then: Then
    ) -> ReplicaOutcome | None:
        """``wait_replicated`` without a task: the outcome now, or None and ``then(outcome)``
        called once later, from the ack that replicates it, the timer at ``timeout_s``, or
        the end of this mastership (TIMEOUT)."""
        waiter = self._add_waiter(end_offset, timeout_s, then)
        return waiter if isinstance(waiter, ReplicaOutcome) else None

    async def wait_replicated(self, end_offset: int, timeout_s: float) -> ReplicaOutcome:
        """Wait until the data below ``end_offset`` is replicated as the policy requires."""
        done = trio.Event()
        outcomes: list[ReplicaOutcome] = []

        def then(outcome: ReplicaOutcome) -> None:
            outcomes.append(outcome)
            done.set()

        waiter = self._add_waiter(end_offset, timeout_s, then)
        if isinstance(waiter, ReplicaOutcome):
            return waiter
        try:
            await done.wait()
        finally:
            if not outcomes:  # cancelled
                self._waiters.abandon(waiter)
        return outcomes[0]

    def _add_waiter(self, end_offset: int, timeout_s: float, then: Then) -> ReplicaOutcome | Waiter:
        satisfied = self._core.satisfied(end_offset)
        if satisfied and end_offset <= self._store.dispatch_reach():
            return ReplicaOutcome.OK
        # Replicated but not yet visible (a dispatch slice ahead of it): it waits for the
        # slice that dispatches it (``_on_dispatched``).
        if not satisfied and (not self._serving or not self._core.has_live_slave()):
            return ReplicaOutcome.NO_SLAVE
        waiter = self._waiters.add(end_offset, _now() + timeout_s, then)
        if waiter is None:
            self._refused += 1
            return ReplicaOutcome.TIMEOUT
        return waiter

    def check_writable(self, min_in_sync_replicas: int) -> bool:
        """False → refuse the write before storing it (IN_SYNC_REPLICAS_NOT_ENOUGH)."""
        return self._core.can_accept_write(min_in_sync_replicas)

    async def new_epoch(self, epoch: int, start_offset: int | None = None) -> None:
        """This broker is master at ``epoch`` from ``start_offset`` (default: its max offset).

        Persists the epoch entry, then drops every slave connection so each re-handshakes
        with the new epoch list (apache/rocketmq#9689). The very first epoch of a store
        starts at its min offset, so data written before any epoch existed belongs to one.
        A lower epoch raises ValueError; the current one again is a no-op.
        """
        store = self._store
        last = self._epochs.cache.last
        if last is not None and epoch <= last.epoch:
            if epoch < last.epoch:
                raise ValueError(f"epoch {epoch} is below the last epoch {last.epoch}")
            return
        start = store.max_physical_offset if start_offset is None else start_offset
        if last is None:
            start = min(start, store.min_physical_offset)
        if not (last is None or last.start_offset <= start) or start > store.max_physical_offset:
            raise ValueError(f"epoch {epoch} cannot start at {start}")
        # Drop before the write (no batch goes out under the old epoch while the file is
        # written) and after it (nobody keeps a handshake that carried the old list).
        dropped = len(self._all_conns)
        self._reset_connections(f"master epoch changing to {epoch}", self._core.epoch_start_offset)
        await self._epochs.update(
            lambda c: c.truncate_suffix_by_offset(start + 1).append(epoch, start)
        )
        self._reset_connections(f"master epoch changed to {epoch}", start)
        log.info(
            "%s: master epoch %d starts at offset %d; %d HA connections dropped to re-handshake",
            self.node,
            epoch,
            start,
            dropped,
        )

    def apply_confirmed(self, members: Iterable[int], epoch: int) -> None:
        """Controller mode: the controller holds SyncStateSet ``members`` at ``epoch``."""
        self._after(
            self._core.apply_confirmed(members, epoch, master_max=self._store.max_physical_offset)
        )

    def proposal_rejected(self) -> None:
        """Controller mode: the controller definitely refused the last proposal."""
        self._after(self._core.proposal_rejected(master_max=self._store.max_physical_offset))

    @property
    def sync_state_set(self) -> tuple[frozenset[int], int]:
        """The confirmed SyncStateSet and its epoch."""
        return self._core.members, self._core.epoch

    @property
    def confirm_offset(self) -> int:
        return self._core.confirm_offset

    def sync_state_set_connected(self) -> bool:
        """Every other member of the confirmed SyncStateSet has a live HA connection now."""
        core = self._core
        others = core.members - {core.master_id}
        return all((s := core.slaves.get(m)) is not None and s.live for m in others)

    def status(self) -> HAMasterStatus:
        """What ``mqadmin haStatus`` shows."""
        now = _now()
        core = self._core
        max_offset = self._store.max_physical_offset
        last = self._epochs.cache.last
        slaves = []
        handshaken = (c for c in self._all_conns if c.broker_id >= 0)
        for conn in sorted(handshaken, key=lambda c: (c.broker_id, c.address)):
            progress = core.slaves.get(conn.broker_id)
            ack = -1 if progress is None else progress.ack_offset
            caught = None if progress is None else progress.caught_up_s
            slaves.append(
                SlaveStatus(
                    address=conn.address,
                    broker_id=conn.broker_id,
                    state=conn.state.name,
                    ack_offset=ack,
                    diff_bytes=max_offset - ack if ack >= 0 else max_offset,
                    transfer_bytes_per_s=conn.meter.rate(now),
                    in_sync=conn.broker_id in core.members,
                    caught_up_s_ago=None if caught is None else now - caught,
                )
            )
        return HAMasterStatus(
            node=self.node,
            ha_port=self.port,
            epoch=0 if last is None else last.epoch,
            epoch_start_offset=0 if last is None else last.start_offset,
            max_offset=max_offset,
            confirm_offset=core.confirm_offset,
            sync_state_set=tuple(sorted(core.members)),
            sync_state_set_epoch=core.epoch,
            proposal=None if core.proposal is None else tuple(sorted(core.proposal)),
            waiters=self._waiters.live,
            waiters_refused=self._refused,
            slaves=tuple(slaves),
            pending_connections=len(self._pending),
            refused_connections=self._refused_connections,
        )

    # ======================================================================================
    # serving
    # ======================================================================================

    async def serve(
        self,
        *,
        listener: HAListener | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve slaves on the HA port until cancelled; report the port.

        ``listener``: the broker's HA port, bound once for its life (controller mode keeps
        it across masterships); without one, this master binds ``port`` itself and releases
        it when it stops. Static mode begins a new epoch here (the last one + 1): a master
        that restarts after losing an unflushed tail must not let a slave holding that tail
        take it for the master's own data. Controller mode serves the epoch the broker set
        with ``new_epoch`` (the controller's), and refuses to start without one.
        """
        last = self._epochs.cache.last
        if not self.config.controller_mode:
            await self.new_epoch(1 if last is None else last.epoch + 1)
        elif last is None:
            raise ValueError("controller mode: call new_epoch(master epoch) before serve()")
        owned = listener is None
        if listener is None:
            listener = await HAListener.open(self._host, self.port, node_name=self.node)
        self.port = listener.port
        last = self._epochs.cache.last
        assert last is not None
        try:
            async with trio.open_nursery() as nursery:
                self._serving = True
                self._after(
                    self._core.connections_reset(epoch_start_offset=last.start_offset, now_s=_now())
                )
                self.notify_appended()
                nursery.start_soon(self._check_loop)
                nursery.start_soon(self._waiters.run_timer)
                nursery.start_soon(self._streamers.run_confirm_timer)
                if owned:
                    nursery.start_soon(listener.serve)
                self._nursery = nursery
                listener.attach(self._take_connection)
                log.info(
                    "%s: HA master listening on %s:%d at epoch %d, SyncStateSet %s",
                    self.node,
                    self._host,
                    self.port,
                    last.epoch,
                    sorted(self._core.members),
                )
                task_status.started(self.port)
        finally:
            listener.detach(self._take_connection)
            self._nursery = None
            self._serving = False
            self._reset_connections("HA master stopped", self._core.epoch_start_offset)
            await self._waiters.fail_all()
            if owned:
                await listener.aclose()
            log.info("%s: HA master stopped", self.node)

    async def _check_loop(self) -> None:
        trimmed = -1
        while True:
            await trio.sleep(self.config.check_interval_s)
            self._after(self._core.check(_now(), master_max=self._store.max_physical_offset))
            low = self._store.min_physical_offset
            if low != trimmed:  # retention deleted segments: forget their epochs
                try:
                    await self._epochs.truncate_prefix_by_offset(low)
                except OSError as exc:
                    if not fd_exhausted(exc):
                        raise
                    # Out of descriptors (issue 13 row 3): the next round trims instead.
                    log.warning("%s: epoch file not trimmed now: %s", self.node, exc)
                    continue
                trimmed = low

    def _take_connection(self, stream: trio.SocketStream) -> None:
        """The HA listener accepted a slave: serve it in this mastership's nursery."""
        assert self._nursery is not None, "attached only while serving"
        self._nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = SlaveConn(
            address=peer_name(stream),
            scope=trio.CancelScope(),
            meter=RateMeter(window_s=self.config.speed_window_s),
            last_send_s=_now(),
        )
        async with stream:
            self._admit_pending(conn)
            self._all_conns.add(conn)
            try:
                with conn.scope:
                    await self._session(stream, conn)
            except (RocketError, ValueError) as exc:
                conn.reason = str(exc)
            finally:
                self._all_conns.discard(conn)
                self._pending.pop(conn, None)
                self._unregister(conn)
            if conn.broker_id < 0:
                self._log_unadmitted(conn)
                return
            log.info(
                "%s: HA connection from slave %d at %s closed: %s",
                self.node,
                conn.broker_id,
                conn.address,
                conn.reason,
            )

    async def _session(self, raw: trio.SocketStream, conn: SlaveConn) -> None:
        cfg = self.config
        decoder = MasterSideDecoder()
        events: list[SlaveHandshake | Ack] = []
        what = conn.what = f"HA slave {conn.address}"
        stream: trio.abc.Stream = raw
        # One deadline for TLS, the cluster challenge and the handshake: a pending slot.
        with trio.move_on_after(cfg.handshake_timeout_s) as scope:
            stream = await secure_accept(raw, cfg, what)
            if cfg.cluster_secret is not None:
                answered = await challenge_slave(
                    stream,
                    cfg.cluster_secret,
                    deadline=scope.deadline,
                    send_timeout_s=cfg.send_timeout_s,
                    what=what,
                )
                events = decoder.feed(answered) if answered is not None else []
            while not events:
                events = await self._receive(stream, decoder, what)
        if not events:
            raise _Dropped(f"no handshake within {cfg.handshake_timeout_s:.1f} s")
        self._pending.pop(conn, None)
        hello = events.pop(0)
        if not isinstance(hello, SlaveHandshake):
            raise ProtocolError(f"{what} did not handshake")
        self._register(conn, hello)
        what = conn.what = f"HA slave {conn.broker_id} at {conn.address}"
        cache = self._epochs.cache
        last = cache.last
        assert last is not None
        greeting = MasterHandshake(
            max_offset=self._store.max_physical_offset,
            last_epoch=last.epoch,
            epochs=handshake_epochs(cache.pairs()),
        )
        await send_all(stream, greeting.encode(), timeout_s=cfg.send_timeout_s, what=what)
        while not events:
            events = await self._receive(stream, decoder, what)
        first = events[0]
        assert isinstance(first, Ack)
        conn.position = self._start_position(first.max_offset, what)
        for event in events:
            self._on_ack(conn, event)
        conn.state = HAState.TRANSFER
        log.info(
            "%s: slave %d at %s handshook, streaming from offset %d",
            self.node,
            conn.broker_id,
            conn.address,
            conn.position,
        )
        # Errors are caught inside the nursery (each side records why and cancels the
        # other), so only Cancelled crosses it.
        if type(stream) is trio.SocketStream:
            conn.direct = stream
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._streamers.run, stream, conn, nursery.cancel_scope)
            try:
                await self._read_acks(stream, decoder, conn, what)
            except (RocketError, ValueError) as exc:
                conn.reason = str(exc)
            finally:
                nursery.cancel_scope.cancel()

    async def _receive(
        self, stream: trio.abc.Stream, decoder: MasterSideDecoder, what: str
    ) -> list[SlaveHandshake | Ack]:
        timeout_s = self.config.housekeeping_timeout_s
        data = await receive_until(stream, trio.current_time() + timeout_s, what=what)
        if data is None:
            raise RemotingTimeout(f"{what} silent for {timeout_s:.1f} s")
        return decoder.feed(data)

    async def _read_acks(
        self, stream: trio.abc.Stream, decoder: MasterSideDecoder, conn: SlaveConn, what: str
    ) -> None:
        """Acks until the connection fails or stays silent ``housekeeping_timeout_s``."""

        def on_data(data: bytes) -> None:
            acks = decoder.feed_acks(data)
            if acks is not None:
                self._on_acks(conn, *acks)

        timeout_s = self.config.housekeeping_timeout_s
        await read_until_silent(stream, timeout_s=timeout_s, what=what, on_data=on_data)

    def _admit_pending(self, conn: SlaveConn) -> None:
        """Take ``conn`` as waiting for its handshake; close the oldest waiting when full."""
        while len(self._pending) >= self.config.max_pending_connections:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.reason = (
                f"{self.config.max_pending_connections} newer connections are waiting "
                "for their handshake"
            )
            oldest.scope.cancel()
        self._pending[conn] = None

    def _make_room(self, broker_id: int) -> None:
        """Before a new slave id joins: refuse it when every slot is taken, unless it is
        known and an unknown one can leave."""
        if broker_id in self._conns or len(self._conns) < self.config.max_connections:
            return
        known = self._core.members | self._known
        if broker_id not in known:
            raise _Dropped(f"{self.config.max_connections} slaves connected already")
        unknown = [c for c in self._conns.values() if c.broker_id not in known]
        if not unknown:
            raise _Dropped(f"{self.config.max_connections} known slaves connected already")
        victim = unknown[-1]
        victim.reason = f"its slot went to known slave {broker_id}"
        victim.scope.cancel()
        self._unregister(victim)

    def _log_unadmitted(self, conn: SlaveConn) -> None:
        """One WARNING line per connection closed before it became a slave (no handshake,
        a bad one, no slot), at most ``_REFUSALS_LOGGED_PER_S`` a second."""
        self._refused_connections += 1
        now = _now()
        if now - self._refusal_window_s >= 1.0:
            if self._refusals_in_window > _REFUSALS_LOGGED_PER_S:
                log.warning(
                    "%s: %d more HA connections refused in the last second",
                    self.node,
                    self._refusals_in_window - _REFUSALS_LOGGED_PER_S,
                )
            self._refusal_window_s, self._refusals_in_window = now, 0
        self._refusals_in_window += 1
        if self._refusals_in_window <= _REFUSALS_LOGGED_PER_S:
            log.warning(
                "%s: HA connection from %s closed before serving it: %s",
                self.node,
                conn.address,
                conn.reason,
            )

    def _register(self, conn: SlaveConn, hello: SlaveHandshake) -> None:
        broker_id = hello.slave_broker_id
        if broker_id == self.broker_id:
            raise _Dropped(f"slave at {conn.address} claims the master's broker id {broker_id}")
        self._make_room(broker_id)
        old = self._conns.get(broker_id)
        if old is not None:  # the slave reconnected before we noticed the old one died
            old.reason = "replaced by a new connection from the same slave"
            old.scope.cancel()
            self._unregister(old)
        conn.broker_id = broker_id
        self._after(self._core.slave_connected(broker_id, learner=hello.async_learner))
        self._conns[broker_id] = conn

    def _unregister(self, conn: SlaveConn) -> None:
        if self._conns.get(conn.broker_id) is not conn:
            return  # never handshook, replaced, or dropped by new_epoch
        del self._conns[conn.broker_id]
        self._after(
            self._core.slave_disconnected(
                conn.broker_id, master_max=self._store.max_physical_offset
            )
        )

    def _start_position(self, requested: int, what: str) -> int:
        store = self._store
        low, high = store.min_physical_offset, store.max_physical_offset
        if requested == 0:
            return low  # a fresh replica starts with the oldest data we have
        if requested < low:
            raise _Dropped(f"{what} asks for offset {requested}; data before {low} is deleted")
        if requested > high:
            raise _Dropped(f"{what} asks for offset {requested}, past our max offset {high}")
        return requested

    def _on_ack(self, conn: SlaveConn, ack: SlaveHandshake | Ack) -> None:
        if not isinstance(ack, Ack):
            raise ProtocolError("second HA handshake on one connection")
        self._on_acks(conn, ack.max_offset, ack.max_offset)

    def _on_acks(self, conn: SlaveConn, low: int, high: int) -> None:
        """The acks of one read, ``low`` to ``high`` (none below the one before it): as
        one ack of ``high``, once ``low`` is checked against the ack before them."""
        if high > conn.position:
            # After its first ack (its start) a slave holds only what this connection sent
            # it: an ack past that is a lie or a bug, and counting it could acknowledge a
            # sync write no replica has (apache/rocketmq#3015, past the sent offset rather
            # than only past the master's max).
            raise ProtocolError(f"ack of offset {high}, past the {conn.position} sent so far")
        core = self._core
        s = core.slaves.get(conn.broker_id) if low < high else None
        if s is not None and low < s.ack_offset:
            raise ProtocolError(f"ack went back from {s.ack_offset} to {low}")
        actions = core.slave_acked(
            conn.broker_id,
            high,
            _now(),
            master_max=self._store.max_physical_offset,
            sent_master_max=conn.sent_master_max,
            sent_at_s=conn.sent_at_s,
        )
        if actions or self._waiters.live:
            self._after(actions)

    # ======================================================================================
    # actions and waiters
    # ======================================================================================

    def _after(self, actions: list[Action]) -> None:
        confirm = -1
        for action in actions:
            if isinstance(action, ConfirmOffsetChanged):
                confirm = action.offset  # only ever up: the last is the highest
            elif isinstance(action, SyncStateSetChanged):
                self._known |= action.members
                log.info(
                    "%s: SyncStateSet is now %s at epoch %d",
                    self.node,
                    sorted(action.members),
                    action.epoch,
                )
            else:
                log.info(
                    "%s: proposing SyncStateSet %s against epoch %d",
                    self.node,
                    sorted(action.members),
                    action.epoch,
                )
                if self._on_proposal is not None:
                    self._on_proposal(action)
        if self._waiters.live:
            # Answers first (a continuation writes its SEND_OK to the client's socket at
            # once), then the confirmed records' ConsumeQueue/index dispatch, in this same
            # step: no pull runs between, so a client holding the SEND_OK finds the message.
            # Only what this step's dispatch reaches: a confirm jump is dispatched in
            # slices, and each slice answers its own (``_on_dispatched``).
            self._release_visible(confirm if confirm >= 0 else None)
        if confirm >= 0:
            self._store.set_confirm_offset(confirm)
            self._streamers.confirm_moved(confirm)

    def _on_dispatched(self) -> None:
        """A dispatch slice made more records visible: answer the sync writes it covers."""
        if self._waiters.live:
            self._release_visible(None)

    def _release_visible(self, confirm: int | None) -> None:
        """Answer the sync writes that are replicated and whose records this step's
        dispatch reaches (``confirm``: the confirm offset it moves to, None: it does not)."""
        reach = self._store.dispatch_reach(confirm)
        self._waiters.release(min(self._core.replicated_offset(), reach))

    def _reset_connections(self, reason: str, epoch_start_offset: int) -> None:
        self._streamers.forget_reads()
        self._drop_all(reason)
        self._after(
            self._core.connections_reset(epoch_start_offset=epoch_start_offset, now_s=_now())
        )

    def _drop_all(self, reason: str) -> None:
        for conn in self._all_conns:
            conn.reason = reason
            conn.scope.cancel()
        self._conns.clear()


def _now() -> float:
    return trio.current_time()
