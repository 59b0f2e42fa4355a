"""The master's streamers: what goes out to each slave, and when (split out of master.py).

Rules (the streaming rules of ``broker/ha/master.py``'s docstring, and these):
- Only a connection's streamer writes to its socket, or the put path in its place while
  the streamer is parked and everything sent so far is acked (``send_now``): one write
  per slave and put, no wake-up. A batch is at most ``batch_bytes`` of whole records from
  ``store.read_raw`` (the last put's own bytes when that is all there is) and never
  crosses an epoch boundary. Every transfer header carries the confirm offset.
- A confirm move a batch does not carry goes out as an empty transfer within
  ``confirm_linger_s`` (at once while puts come further apart than that). One timer for
  all connections sees to it (``run_confirm_timer``): a move arms it only when it is not
  armed earlier already, so a move costs no deadline change per streamer, and a batch
  that carries the confirm leaves no deadline behind to fire (each one cost a
  cancellation, a wake-up and a park of its streamer, ~0.2 per sync send at one in
  flight). When it fires, it wakes the streamers of slaves still told less after their
  linger, and arms itself again for the others; under steady writes it fires about once
  a linger, where each streamer's pulled-in park deadline fired per streamer.
- A streamer parks until the put path wakes it, its heartbeat is due
  (``heartbeat_interval_s`` after its last send), or its own confirm linger ends.
"""

from __future__ import annotations

import math

import attrs
import trio

from broker.ha.config import HAConfig
from broker.ha.epochfile import EpochFile
from broker.ha.stream import RateMeter, send_all, write_now
from broker.ha.syncstate import SyncState
from broker.ha.wire import HAState, encode_transfer_parts
from broker.store.store import MessageStore
from protocol.errors import RocketError, StorageError

_TRANSFER_HEAD_BYTES = len(  # bytes of a transfer's header
    encode_transfer_parts(offset=0, epoch=0, epoch_start_offset=0, confirm_offset=0, data_len=0)
)


@attrs.define(eq=False)
class SlaveConn:
    """One slave connection (mutable, owned by its task)."""

    address: str
    scope: trio.CancelScope
    meter: RateMeter
    last_send_s: float
    broker_id: int = -1
    state: HAState = HAState.HANDSHAKE
    #: How errors name this connection.
    what: str = "HA slave"
    #: Next offset to send.
    position: int = -1
    #: ``position`` is the end of a batch read on this connection, so a unit boundary
    #: (this master's log is not cut while it serves); the first one, the slave's
    #: choice, is checked by the read.
    at_boundary: bool = False
    #: Master max offset when the last data batch went out, and when.
    sent_master_max: int = -1
    sent_at_s: float | None = None
    sent_confirm: int = -1
    #: When the confirm offset first moved past ``sent_confirm``; None: it has not moved
    #: since the last send (or nobody looked yet).
    confirm_moved_s: float | None = None
    #: The streamer's park while it has nothing to send (its deadline: the next heartbeat).
    park_scope: trio.CancelScope | None = None
    reason: str = "dropped"
    #: A plain TCP stream the put path may write to while the streamer is parked.
    direct: trio.SocketStream | None = None
    #: The rest of a transfer the put path began: the streamer sends it first.
    unsent: bytes = b""


class HAStreamers:
    """The streamers of one mastership's connections (``conns``: the handshaken ones, by
    slave id, the master's own dict) and the timer of their confirm lingers."""

    def __init__(
        self,
        store: MessageStore,
        epochs: EpochFile,
        config: HAConfig,
        core: SyncState,
        conns: dict[int, SlaveConn],
    ) -> None:
        self._store = store
        self._epochs = epochs
        self._config = config
        self._core = core
        self._conns = conns
        self._lot = trio.lowlevel.ParkingLot()
        #: The last batch read (position, limit, bytes): every streamer woken by one put
        #: asks for the same bytes; one read serves them all. Cleared whenever the log may
        #: have been cut (a new epoch, a new mastership).
        self._last_read: tuple[int, int, bytes] | None = None
        #: When the last put came, and how long after the one before it.
        self._last_put_s = 0.0
        self._put_gap_s = math.inf
        #: When the confirm timer fires (inf: not armed), and its scope while it waits.
        self._confirm_due_s = math.inf
        self._confirm_timer: trio.CancelScope | None = None

    def forget_reads(self) -> None:
        """The log may be cut: no batch read before comes from the cache."""
        self._last_read = None

    def put_seen(self, now_s: float) -> None:
        """A put came at ``now_s`` (before its confirm move: the gap sets the linger)."""
        self._put_gap_s, self._last_put_s = now_s - self._last_put_s, now_s

    def put_done(self, now_s: float) -> None:
        """After a put's actions: send it to the idle slaves, wake the other streamers."""
        # An empty lot's unpark_all still costs a few µs on every send.
        if self._lot and not self._send_now(now_s):
            self._lot.unpark_all()

    def _send_now(self, now_s: float) -> bool:
        """Write the new data to each idle slave (streamer parked, all sent acked) from
        here, saving the streamer's wake-up per slave and sync write; while a transfer is
        unacked the streamer sends a pass's puts as one. True: no streamer to wake."""
        done = True
        slaves = self._core.slaves
        max_offset = self._store.max_physical_offset
        for conn in self._conns.values():
            if conn.park_scope is None:
                continue  # busy: it sees the new data when its send returns
            progress = slaves.get(conn.broker_id)
            if (
                conn.direct is None
                or conn.unsent
                or progress is None
                or progress.ack_offset < conn.position
            ):
                done = False
                continue
            try:
                data = self._next_batch(conn, now_s)
                sent = write_now(conn.direct, data, what=conn.what)
            except (RocketError, ValueError) as exc:
                conn.reason = f"streaming stopped: {exc}"
                conn.scope.cancel()
                continue
            conn.meter.record(now_s, len(data) - _TRANSFER_HEAD_BYTES)
            conn.unsent = data[sent:]  # what the socket did not take, or more data:
            done = done and not conn.unsent and conn.position >= max_offset
        return done  # ... the streamer sends it

    async def run(self, stream: trio.abc.Stream, conn: SlaveConn, scope: trio.CancelScope) -> None:
        """Stream to ``conn`` until it fails (then cancel ``scope``, its reader too)."""
        cfg = self._config
        store = self._store
        what = conn.what
        try:
            while True:
                now = trio.current_time()
                if conn.unsent:
                    data, conn.unsent = conn.unsent, b""
                    await send_all(stream, data, timeout_s=cfg.send_timeout_s, what=what)
                    continue
                if conn.position < store.max_physical_offset:
                    data = self._next_batch(conn, now)  # carries the confirm offset
                    await send_all(stream, data, timeout_s=cfg.send_timeout_s, what=what)
                    conn.meter.record(now, len(data) - _TRANSFER_HEAD_BYTES)
                    if conn.position < store.max_physical_offset:
                        await trio.lowlevel.checkpoint()  # a backlog: the send did not yield
                    continue
                due = conn.last_send_s + cfg.heartbeat_interval_s
                if conn.sent_confirm != self._core.confirm_offset:
                    # The confirm moved past what this slave was told: it rides the next
                    # batch if one comes within confirm_linger_s, else an empty transfer.
                    if conn.confirm_moved_s is None:
                        conn.confirm_moved_s = now
                    due = min(due, conn.confirm_moved_s + self.linger_s())
                if now >= due:
                    await self._send_heartbeat(stream, conn, now)
                else:
                    # A later confirm move does not touch this deadline: the confirm timer
                    # wakes this streamer if no batch carried the move within its linger.
                    try:
                        with trio.move_on_at(due) as conn.park_scope:
                            await self._lot.park()
                    finally:
                        conn.park_scope = None  # a dead streamer is never written for
        except (RocketError, ValueError) as exc:
            conn.reason = f"streaming stopped: {exc}"
            scope.cancel()  # ends the reader too

    def _next_batch(self, conn: SlaveConn, now_s: float) -> bytes:
        """The next transfer to ``conn`` (header and data), counted as sent at ``now_s``."""
        position = conn.position
        entry = self._epochs.cache.entry_at(position)
        if entry is None:
            raise StorageError(f"no epoch holds offset {position}")
        limit = self._config.batch_bytes
        end = entry.end_offset
        if end is not None:
            limit = min(limit, end - position)
        data = self._read(position, limit, at_boundary=conn.at_boundary)
        if not data or (end is not None and position + len(data) > end):
            raise StorageError(f"cannot read a batch at {position} within epoch {entry.epoch}")
        confirm = self._core.confirm_offset
        head = encode_transfer_parts(
            offset=position,
            epoch=entry.epoch,
            epoch_start_offset=entry.start_offset,
            confirm_offset=confirm,
            data_len=len(data),
        )
        conn.sent_master_max, conn.sent_at_s = self._store.max_physical_offset, now_s
        conn.position, conn.at_boundary = position + len(data), True
        conn.sent_confirm, conn.confirm_moved_s = confirm, None
        conn.last_send_s = now_s
        return head + data

    def _read(self, position: int, limit: int, *, at_boundary: bool) -> bytes:
        last = self._last_read
        if last is not None and last[0] == position and last[1] == limit:
            return last[2]
        data = self._store.read_raw(position, limit, at_boundary=at_boundary)
        self._last_read = (position, limit, data)
        return data

    async def _send_heartbeat(self, stream: trio.abc.Stream, conn: SlaveConn, now_s: float) -> None:
        cache = self._epochs.cache
        entry = cache.entry_at(conn.position) or cache.last
        assert entry is not None
        confirm = self._core.confirm_offset
        head = encode_transfer_parts(
            offset=conn.position,
            epoch=entry.epoch,
            epoch_start_offset=entry.start_offset,
            confirm_offset=confirm,
            data_len=0,
        )
        conn.sent_confirm, conn.confirm_moved_s = confirm, None
        conn.last_send_s = now_s
        await send_all(stream, head, timeout_s=self._config.send_timeout_s, what=conn.what)

    # --- the confirm linger ------------------------------------------------------------

    def confirm_moved(self, confirm: int) -> None:
        """The confirm offset moved to ``confirm``: each slave told less hears of it within
        its linger, from a batch or else an empty transfer."""
        now: float | None = None
        for conn in self._conns.values():
            if conn.confirm_moved_s is None and conn.sent_confirm != confirm:
                if now is None:
                    now = trio.current_time()
                conn.confirm_moved_s = now
        if now is None:
            return  # every slave told less waits for an earlier move's linger already
        due = now + self.linger_s()
        if due <= now:
            self._lot.unpark_all()  # no linger: the parked streamers send it now
        elif due < self._confirm_due_s:
            self._confirm_due_s = due
            if self._confirm_timer is not None:
                self._confirm_timer.deadline = due

    def linger_s(self) -> float:
        """``confirm_linger_s``, or 0 while puts come further apart than that: the next
        batch would come too late to carry the confirm, and a heartbeat sent later costs
        the master a wake-up of its own."""
        linger = self._config.confirm_linger_s
        return linger if self._put_gap_s <= linger else 0.0

    async def run_confirm_timer(self) -> None:
        """Until cancelled (the mastership's nursery): at the earliest linger's end, wake
        the streamers of slaves still told less, and arm again for the later ones."""
        try:
            while True:
                with trio.CancelScope(deadline=self._confirm_due_s) as self._confirm_timer:
                    await trio.sleep_forever()
                now = trio.current_time()
                linger = self.linger_s()
                confirm = self._core.confirm_offset
                due, wake = math.inf, False
                for conn in self._conns.values():
                    moved = conn.confirm_moved_s
                    if moved is None or conn.sent_confirm == confirm:
                        continue
                    if moved + linger <= now:
                        wake = True
                    elif moved + linger < due:
                        due = moved + linger
                self._confirm_due_s = due
                if wake:
                    self._lot.unpark_all()
        finally:
            self._confirm_timer = None
            self._confirm_due_s = math.inf
