"""The message store's shared state: the fields every layer of ``MessageStore`` uses.

Rules:
- ``MessageStore`` is one object built from layers, one file each, each layer calling only
  what lies below it:
  ``StoreState`` (here: fields, offsets, the checkpoint value)
  <- ``StoreDispatch`` (dispatch.py) <- ``StorePut`` (put.py) <- ``StoreReplica`` (replica.py);
  ``StoreDispatch`` <- ``StoreRepair`` (repair.py: ConsumeQueue checks at open);
  ``StoreState`` <- ``StoreReads`` (reads.py) <- ``StoreDurability`` (durability.py);
  ``MessageStore`` (store.py: opening, recovery, statistics) stacks them all. Only
  ``MessageStore`` is ever built (``MessageStore.open``).
- Single Trio thread. Every mutation (put, append_raw, dispatch, truncation, retention) is a
  synchronous section, so queue offsets are assigned without a lock (the Trio equivalent of
  RocketMQ's put lock). Only fsyncs and the checkpoint write go to worker threads, on
  duplicated descriptors.
- The byte positions below are those of a record with IPv4 hosts (wire §3.2), the only
  kind ``encode_record`` writes; the put path patches them, readers peek at them.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from broker.clock import Clock, SystemClock
from broker.store.checkpoint import Checkpoint
from broker.store.commitlog import CommitLog
from broker.store.config import FlushMode, StoreConfig
from broker.store.consumequeue import ConsumeQueue
from broker.store.damage import DamageMap
from broker.store.flush import GroupCommit, collect_fds
from broker.store.index import IndexService
from broker.store.recovery import RecoveryReport
from broker.store.results import ListenerEntry
from protocol.message import SYSFLAG_TRANSACTION_PREPARED_TYPE, SYSFLAG_TRANSACTION_ROLLBACK_TYPE

QUEUE_AND_PHYS = struct.Struct(">qq")
QUEUE_OFFSET_POS = 20
PHYS_OFFSET_POS = 28
SYSFLAG_POS = 36
STORE_TS = struct.Struct(">q")
STORE_TS_POS = 56
STORE_HOST_POS = 64
#: A record's store timestamp and store host (IPv4, port), adjacent: one pack for both.
STORE_TS_AND_HOST = struct.Struct(">q8s")
#: Transaction types that get no ConsumeQueue entry (and no queue offset).
NO_DISPATCH = frozenset((SYSFLAG_TRANSACTION_PREPARED_TYPE, SYSFLAG_TRANSACTION_ROLLBACK_TYPE))
#: What dispatching a record needs, kept for records appended but not yet dispatched:
#: (physical offset, size, topic, queue id, queue offset, sys flag, properties, store ms).
PendingRecord = tuple[int, int, str, int, int, int, Mapping[str, str], int]
#: At most this many are kept (the rest is read back from the log when dispatched).
MAX_PENDING_RECORDS = 8192


class StoreState:
    """Fields and the offsets every layer reads (see the module docstring for the layers)."""

    def __init__(self, store_dir: Path, config: StoreConfig, *, clock: Clock | None = None) -> None:
        self.store_dir = Path(store_dir)
        #: Wall time for store timestamps and retention, Trio's clock for deadlines.
        self._clock: Clock = clock or SystemClock()
        self.config = config
        self.node = config.node_name
        self._clog = CommitLog(self.store_dir / "commitlog", config.segment_bytes)
        self._index = IndexService(
            self.store_dir / "index",
            config.index_slots,
            config.index_entries,
            preallocate=config.index_preallocate,
        )
        self._cqs: dict[tuple[str, int], ConsumeQueue] = {}
        #: Queues appended to since ``write_queue_entries`` last ran (their entries are
        #: held in memory until then: ``ConsumeQueue.write_pending``); a dict as an
        #: ordered set, so it holds each queue once however long the flush tick takes.
        self._unwritten_cqs: dict[ConsumeQueue, None] = {}
        self._queue_offsets: dict[tuple[str, int], int] = {}
        #: Arrival listeners by the topic they follow (None: every topic), and that
        #: indexed for the dispatch (``StoreDispatch._index_listeners``).
        self._listeners: dict[str | None, list[ListenerEntry]] = {None: []}
        self._any_topic_listeners: tuple[ListenerEntry, ...] = ()
        self._topic_listeners: dict[str, tuple[ListenerEntry, ...]] = {}
        #: Called after ``truncate_to`` cut the log (consumer offsets are clamped then).
        self._truncate_listeners: list[Callable[[], None]] = []
        #: Called with (topic, queue id) when a record names a queue first.
        self._new_queue_listeners: list[Callable[[str, int], None]] = []
        self._group = GroupCommit(config.max_flush_waiters)
        self._flush_lock = trio.Lock()
        self._levels_ms = [int(s * 1000) for s in config.delay_levels_s]
        store_ip, store_port = config.store_host
        self._store_host_bytes = bytes(int(p) for p in store_ip.split(".")) + store_port.to_bytes(
            4, "big"
        )
        assert len(self._store_host_bytes) == 8, "store_host must be IPv4"
        self._store_ip = store_ip
        self._store_port = store_port
        #: ``offset_msg_id``'s host part for this store (upper hex of its 8 host bytes),
        #: so the put path formats an id with one f-string.
        self._msg_id_prefix = self._store_host_bytes.hex().upper()
        self._flushed = 0
        #: Highest write offset held since the store opened (truncation lowers the other).
        self._high_water = 0
        self._dispatched = 0
        #: Records past ``_dispatched`` as appended, in log order: dispatched from these
        #: values instead of read back and decoded (controller mode dispatches only
        #: confirmed data, so every put waits here; a slave appends decoded records).
        #: Emptied whenever the log is cut; a gap or overflow falls back to reading back.
        self._pending_dispatch: deque[PendingRecord] = deque()
        self._confirm = 0
        self._master_flushed = 0
        #: Dispatch waits for the fsync (``dispatch_flushed_only`` under SYNC_FLUSH).
        self._flushed_only = (
            config.dispatch_flushed_only and config.flush_mode is FlushMode.SYNC_FLUSH
        )
        #: Appends are not dispatched at once: they wait for the confirm offset or the fsync.
        self._defer_dispatch = config.dispatch_confirmed_only or self._flushed_only
        #: The dispatch slice task runs (``run``): a limit move dispatches one step's worth
        #: and leaves the rest to it (``_dispatch_left``), a slice per Trio step.
        self._slicing = False
        self._dispatch_left = False
        self._slice_lot = trio.lowlevel.ParkingLot()
        #: Called after each background dispatch slice (the HA master answers the sync
        #: writes whose records it made visible).
        self._dispatch_watchers: list[Callable[[], None]] = []
        self._generation = 0
        self._last_put_ms = 0
        self._last_dispatch_ms = 0
        self._index_skip_below = -1
        #: Records whose topic/queue id could not name a ConsumeQueue directory.
        self._unsafe_skipped = 0
        #: Damaged CommitLog ranges skipped at open (``skip_damaged_segments``).
        self._damage = DamageMap()
        #: Reads refused because the entry did not lead to a record (damage).
        self._unservable_reads = 0
        self._dispatch_failures = 0
        self._closed = False
        self._truncating = False
        self._closing = False
        self._lock_fd = -1
        self._run_scope: trio.CancelScope | None = None
        self._disk_full = False
        self._free_bytes = 0
        self._next_disk_check_s = 0.0
        self._flush_rounds = 0
        self._fsync_calls = 0
        self._waiters_refused = 0
        self._put_messages = 0
        self._put_bytes = 0
        #: ``CommitLog.commit_failures`` as ``commit_held`` last reported it.
        self._failures_reported = 0
        self.recovery_report: RecoveryReport | None = None

    @property
    def max_physical_offset(self) -> int:
        """CommitLog write offset."""
        return self._clog.write_offset

    @property
    def min_physical_offset(self) -> int:
        """Lowest CommitLog offset still stored."""
        return self._clog.min_offset

    @property
    def high_water_offset(self) -> int:
        """The highest CommitLog write offset this store held since it opened."""
        return max(self._high_water, self._clog.write_offset)

    @property
    def flushed_offset(self) -> int:
        """CommitLog bytes below this are fsynced."""
        return self._flushed

    @property
    def dispatched_offset(self) -> int:
        """Records below this are in ConsumeQueues and the index."""
        return self._dispatched

    @property
    def master_flushed_offset(self) -> int:
        """On a slave: the master's flushed offset last reported."""
        return self._master_flushed

    def commit_held(self) -> bool:
        """Write the CommitLog's held appends (``put_encoded(hold=True)``) before answers
        leave. False the first time it is called after a commit failed, here or in any
        other CommitLog operation: answers built since the last good commit may promise
        records that are gone, so the caller must drop them all (puts are refused until
        the flush loop cut the store back)."""
        clog = self._clog
        clog.commit()  # nothing held: returns at once
        if clog.commit_failures != self._failures_reported:
            self._failures_reported = clog.commit_failures
            return False
        return True

    async def _cut_back_failed(self) -> None:
        """After a failed commit: the store's state cut back to the log (replica layer's)."""

    def _on_flush_tick(self) -> None:
        """Work of the flush loop before each flush (the dispatch layer's catch-up)."""

    def _dispatch_flushed(self) -> None:
        """Work after each fsync under ``dispatch_flushed_only`` (the dispatch layer's)."""

    async def _run_dispatch_slices(self) -> None:
        """The dispatch layer's slice task (``run`` starts it)."""

    def _checkpoint_value(self) -> Checkpoint:
        return Checkpoint(
            physic_msg_timestamp_ms=self._last_put_ms,
            logics_msg_timestamp_ms=self._last_dispatch_ms,
            index_msg_timestamp_ms=self._index.last_update_timestamp_ms,
            master_flushed_offset=self._master_flushed,
            confirm_offset=self._confirm,
            flushed_offset=self._flushed,
            dispatched_offset=min(self._dispatched, self._flushed),
            min_physical_offset=self._clog.min_offset,
        )

    def _take_all_dirty_fds(self) -> list[int]:
        """Duplicated fds of every written ConsumeQueue and index file, all or none: out of
        descriptors, no file loses its dirty mark (a checkpoint never outruns an fsync)."""
        holders: list[ConsumeQueue | IndexService] = [*self._cqs.values(), self._index]
        fds = collect_fds(fd for holder in holders for fd in holder.dirty_fds())
        for holder in holders:
            holder.clear_dirty()
        return fds
