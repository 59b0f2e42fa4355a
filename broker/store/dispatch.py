"""The dispatcher: ConsumeQueue entries and index keys built from CommitLog records.

Rules:
- ``dispatched_offset`` <= dispatch limit (the write offset, lowered to ``confirm_offset``
  with ``dispatch_confirmed_only`` and to the flushed offset with ``dispatch_flushed_only``
  under SYNC_FLUSH) <= write offset. Data past the limit is dispatched when the limit
  moves (``set_confirm_offset``, ``append_raw``, an fsync): from the values its append kept
  (``_pending_dispatch``, bounded, emptied when the log is cut), else by reading it back,
  which stays the definition; the put path dispatches a record at once from the values in
  hand when nothing is pending before it.
- The queue-offset table covers every record in the CommitLog, dispatched or not, so an
  offset is never handed out twice (apache/rocketmq#7689: reused ConsumeQueue offsets after a
  restart in controller mode).
- Prepared and rolled-back transaction records get no ConsumeQueue entry; a SCHEDULE_TOPIC
  record's tag code is its delivery time, a timer-topic record's its TIMER_OUT_MS.
- Arrival listeners are called synchronously after each ConsumeQueue append (in a run of
  kept records, once the run's entries are in their queues, per record in order); they must
  not block (they only wake waiters).
- Index keys are hashed by ``topic_key_hash`` (the hash of ``topic#key`` without building
  it); a run of kept records writes its keys with one ``IndexService.put_hashed``.
- ConsumeQueue entries are held in memory by their queue (``ConsumeQueue.write_pending``)
  and written with one pwrite per queue: by the queue itself when its held run reaches its
  bound or leaves its file, by ``write_queue_entries`` from the flush tick (every
  ``flush_interval_s``), and before anything reads, cuts or fsyncs the queue. Not per
  send, nor per read of sends: at one send in flight that was a pwrite per message on the
  master's request run (a slave always wrote them this way). Readers never see around
  them, a checkpoint's fsync writes them first, and a kill -9 loses what was held like
  any unsynced tail (recovery rebuilds it from the CommitLog).
- Reading back is chunked (``_DISPATCH_CHUNK_BYTES``), so memory stays bounded however far
  behind dispatch is.
- Confirmed-only dispatch (controller mode) takes at most ``DISPATCH_STEP_BYTES`` of log
  in one Trio step while the store runs: a confirm offset that jumps (a SyncStateSet
  shrink after a slave stalled releases every record it held back, up to GBs) leaves the
  rest to the slice task, a slice per step, so the broker's loop (its controller
  heartbeats) is never held for the whole jump (docs/CHAOS.md, finding 1).
  ``dispatch_reach`` says how far a step gets, so a sync write is answered only once its
  record is visible; watchers hear of each slice.
- A record whose topic or queue id cannot name a directory under the store
  (``paths.UnsafeName``) gets no ConsumeQueue entry: it stays in the CommitLog, unreachable
  by queue, and is logged. The put path refuses such names before writing; only a log
  written by an older version can hold them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Container, Iterator, Mapping, Sequence

import trio

from broker.store.consumequeue import RUN_MAX_ENTRIES, ConsumeQueue
from broker.store.index import HashedKey, add_index_keys, topic_key_hash
from broker.store.paths import UnsafeName, queue_path
from broker.store.results import (
    SCHEDULE_TOPIC,
    TIMER_TOPIC,
    ArrivalListener,
)
from broker.store.state import (
    MAX_PENDING_RECORDS,
    NO_DISPATCH,
    PendingRecord,
    StoreState,
)
from protocol.errors import CorruptRecord
from protocol.message import (
    BLANK_MAGIC,
    BLANK_MARKER_BYTES,
    MIN_RECORD_BYTES,
    PROPERTY_DELAY,
    PROPERTY_KEYS,
    PROPERTY_TAGS,
    PROPERTY_TIMER_OUT_MS,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_ROLLBACK_TYPE,
    MessageRecord,
    decode_record,
    int_property,
    peek_record_header,
    tags_code,
)

log = logging.getLogger(__name__)

_DISPATCH_CHUNK_BYTES = 4 * 1024 * 1024
#: Log dispatched in one Trio step at most while the slice task runs (module rules): about
#: 1,000 records of 1 KiB, 5-15 ms.
DISPATCH_STEP_BYTES = 1024 * 1024
#: ``dispatch_reach`` when appends are dispatched as they come (nothing waits).
NOTHING_DEFERRED = 2**63 - 1
#: ``tags_code`` by TAGS string: pure, and a busy queue sees a handful of tags (a Java
#: string hash per record before). Bounded: many distinct tags only evict.
_tags_hash = functools.lru_cache(maxsize=4096)(tags_code)
#: Records skipped for an unsafe name that are logged one by one (then only counted).
_UNSAFE_LOGGED = 10
_ROLLBACK = SYSFLAG_TRANSACTION_ROLLBACK_TYPE
#: Topics whose tag code is a due time (``_tags_code``), not the tag's hash.
_TIMED_TOPICS = frozenset({SCHEDULE_TOPIC, TIMER_TOPIC})


def _delivery_tags_code(
    properties: Mapping[str, str], store_ms: int, levels_ms: Sequence[int]
) -> int | None:
    """Tag code of a SCHEDULE_TOPIC record: its delivery time (None: no valid DELAY)."""
    raw = properties.get(PROPERTY_DELAY)
    if not raw:
        return None
    try:
        level = int(raw)
    except ValueError:
        return None
    if level <= 0 or not levels_ms:
        return None
    level = min(level, len(levels_ms))
    return store_ms + levels_ms[level - 1]


class StoreDispatch(StoreState):
    """The store's dispatch layer (ConsumeQueues, index, arrival listeners)."""

    def add_arrival_listener(
        self,
        listener: ArrivalListener,
        *,
        topic: str | None = None,
        waiting_on: Container[str] | None = None,
    ) -> None:
        """Call ``listener(topic, queue_id, queue_offset_end, tags_code)`` after every
        ConsumeQueue append (synchronously: it must not block); with ``topic``, after
        that topic's only (a send to any other topic then pays no call). With
        ``waiting_on``, only for a topic in it at that moment: the listener's own live
        container of the topics it has waiters on (a long poll's), so that a send to a
        topic nobody waits on pays no call either."""
        self._listeners.setdefault(topic, []).append((listener, waiting_on))
        self._index_listeners()

    def remove_arrival_listener(
        self, listener: ArrivalListener, *, topic: str | None = None
    ) -> None:
        """Stop calling ``listener`` (added with this ``topic``)."""
        entries = self._listeners.get(topic, [])
        for entry in entries:
            if entry[0] == listener:
                entries.remove(entry)
                break
        else:
            raise ValueError(f"{listener!r} does not listen to arrivals on {topic!r}")
        self._index_listeners()

    def _index_listeners(self) -> None:
        """The listeners each topic's arrivals call, read once per dispatched record:
        ``_topic_listeners.get(topic, _any_topic_listeners)``."""
        anywhere = tuple(self._listeners[None])
        self._any_topic_listeners = anywhere
        self._topic_listeners = {
            topic: anywhere + tuple(scoped)
            for topic, scoped in self._listeners.items()
            if topic is not None and scoped
        }

    def add_new_queue_listener(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener(topic, queue_id)`` when a dispatched record names a queue this
        store has no ConsumeQueue for yet (synchronously: it must not block)."""
        self._new_queue_listeners.append(listener)

    def add_dispatch_watcher(self, watcher: Callable[[], None]) -> None:
        """Call ``watcher()`` after each dispatch slice of the background task."""
        self._dispatch_watchers.append(watcher)

    def dispatch_reach(self, confirm: int | None = None) -> int:
        """Records ending at or below this are dispatched by the end of the current step if
        the confirm offset moves to ``confirm`` in it (None: it does not move). Below a
        slice backlog (module rules) the step's slice; ``NOTHING_DEFERRED`` when no
        backlog is or will be left (a record is then dispatched with its confirm move, or
        with the fsync its sender waits for anyway)."""
        if not (self._slicing and self.config.dispatch_confirmed_only):
            return NOTHING_DEFERRED
        step_end = self._dispatched + DISPATCH_STEP_BYTES
        if confirm is not None and min(confirm, self._clog.write_offset) > step_end:
            return step_end  # this move leaves a backlog
        if self._dispatch_left:
            return step_end if confirm is not None else self._dispatched
        return NOTHING_DEFERRED

    def _dispatch_some(self) -> None:
        """Dispatch up to the limit; while the slice task runs, one step's worth (module
        rules) and the rest left to it."""
        if not (self._slicing and self.config.dispatch_confirmed_only):
            self._dispatch_pending(self._dispatch_limit())
        elif self._dispatch_step() and not self._dispatch_left:
            self._dispatch_left = True
            self._slice_lot.unpark_all()

    def _dispatch_step(self) -> bool:
        """Dispatch at most ``DISPATCH_STEP_BYTES`` towards the limit; True if some is left."""
        limit = self._dispatch_limit()
        self._dispatch_pending(min(limit, self._dispatched + DISPATCH_STEP_BYTES))
        return self._dispatched < limit

    async def _run_dispatch_slices(self) -> None:
        """Until cancelled: dispatch what a step left, a slice per Trio step; after each,
        call the watchers. A failure (out of descriptors) leaves the rest to the flush
        loop's catch-up, as any failed dispatch."""
        self._slicing = True
        try:
            while True:
                if not self._dispatch_left or self._closed:
                    self._dispatch_left = False
                    await self._slice_lot.park()
                    continue
                try:
                    self._dispatch_left = self._dispatch_step()
                except OSError as exc:
                    self._dispatch_failed(exc)
                    self._dispatch_left = False
                for watcher in self._dispatch_watchers:
                    watcher()
                await trio.lowlevel.checkpoint()
        finally:
            self._slicing = False
            self._dispatch_left = False  # the next limit move, or the flush tick, takes it

    def _consume_queue(self, topic: str, queue_id: int) -> ConsumeQueue | None:
        """The queue's ConsumeQueue, created on first use; None for an unsafe name."""
        cq = self._cqs.get((topic, queue_id))
        if cq is None:
            try:
                cq = ConsumeQueue(
                    self.store_dir / "consumequeue",
                    topic,
                    queue_id,
                    self.config.cq_entries_per_file,
                )
            except UnsafeName as exc:
                self._unsafe_skipped += 1
                if self._unsafe_skipped <= _UNSAFE_LOGGED:
                    log.warning("%s: record not dispatched: %s", self.node, exc)
                return None
            self._cqs[(topic, queue_id)] = cq
            for listener in self._new_queue_listeners:
                listener(topic, queue_id)
        return cq

    def _queue_name_problem(self, topic: str, queue_id: int) -> str | None:
        """Why ``topic``/``queue_id`` cannot name a ConsumeQueue directory, or None."""
        if (topic, queue_id) in self._cqs:
            return None
        try:
            queue_path(self.store_dir / "consumequeue", topic, queue_id)
        except UnsafeName as exc:
            return str(exc)
        return None

    def _tags_code(self, topic: str, properties: Mapping[str, str], store_ms: int) -> int:
        if topic == SCHEDULE_TOPIC:
            due = _delivery_tags_code(properties, store_ms, self._levels_ms)
            if due is not None:
                return due
        elif topic == TIMER_TOPIC:
            due_ms = int_property(properties.get(PROPERTY_TIMER_OUT_MS))
            if due_ms is not None and due_ms >= 0:  # the timer log's due time (timers.py)
                return due_ms
        return _tags_hash(properties.get(PROPERTY_TAGS))

    def _dispatch_one(
        self,
        topic: str,
        queue_id: int,
        queue_offset: int,
        phys: int,
        size: int,
        *,
        sys_flag: int,
        properties: Mapping[str, str],
        store_ms: int,
        recovering: bool,
    ) -> bool:
        """Write the ConsumeQueue entry and index keys of one record; True if anything new."""
        wrote = False
        txn = sys_flag & SYSFLAG_TRANSACTION_MASK
        counted = txn not in NO_DISPATCH
        cq = (
            (self._cqs.get((topic, queue_id)) or self._consume_queue(topic, queue_id))
            if counted
            else None
        )
        if cq is not None:
            code = (
                self._tags_code(topic, properties, store_ms)
                if topic in _TIMED_TOPICS
                else _tags_hash(properties.get(PROPERTY_TAGS))  # _tags_code's common case
            )
            if recovering and queue_offset < cq.max_offset:
                wrote = cq.repair(queue_offset, phys, size, code)
            else:
                if cq.min_offset < cq.max_offset < queue_offset:
                    self._fill_lost(cq, queue_offset, phys)
                if cq.append(queue_offset, phys, size, code):
                    self._unwritten_cqs[cq] = None
                wrote = True
                for listener, waiting_on in self._topic_listeners.get(
                    topic, self._any_topic_listeners
                ):
                    if waiting_on is None or topic in waiting_on:
                        listener(topic, queue_id, queue_offset + 1, code)
        if phys >= self._index_skip_below and txn != _ROLLBACK:
            keys_value = properties.get(PROPERTY_KEYS)
            uniq_key = properties.get(PROPERTY_UNIQ_KEY)
            if not keys_value and uniq_key:
                # A record with a UNIQ_KEY and no KEYS (most): that one key.
                self._index.put_one(topic_key_hash(topic, uniq_key), phys, store_ms)
                wrote = True
            else:
                hashed: list[HashedKey] = []
                if add_index_keys(hashed, topic, uniq_key, keys_value, phys, store_ms):
                    self._index.put_hashed(hashed)
                    wrote = True
        self._last_dispatch_ms = store_ms
        return wrote

    def _fill_lost(self, cq: ConsumeQueue, queue_offset: int, phys: int) -> None:
        """Queue offsets skipped before ``phys`` belong to records lost in a damaged range
        skipped at open: give them entries pointing there (never served). Without such a
        range the gap is left for ``ConsumeQueue.append`` to refuse."""
        damage = self._damage.last_before(phys) if self._damage else None
        if damage is None or damage.offset < cq.last_physical_end:
            return
        self._unwritten_cqs[cq] = None  # the entries ``fill`` holds
        log.warning(
            "%s: consume queue %s/%d: offsets %d..%d lost in %s",
            self.node,
            cq.topic,
            cq.queue_id,
            cq.max_offset,
            queue_offset - 1,
            damage.describe(),
        )
        cq.fill(queue_offset, damage.offset, damage.end_offset - damage.offset)

    def _dispatch_limit(self) -> int:
        end = self._clog.write_offset
        if self.config.dispatch_confirmed_only:
            end = min(self._confirm, end)
        if self._flushed_only:
            end = min(self._flushed, end)
        return max(end, self._dispatched)

    def _iter_log(self, begin: int, end: int) -> Iterator[tuple[MessageRecord | None, int, int]]:
        """Yield ``(record, size, offset)`` for the units in [begin, end): records, and blank
        padding or a skipped damaged range as ``(None, size, offset)``. ``begin`` is a unit
        boundary; stops before a record crossing ``end``. Reads in chunks, so memory stays
        bounded."""
        pos = begin
        clog = self._clog
        while pos < end:
            damage = self._damage.next_at_or_after(pos) if self._damage else None
            if damage is not None and damage.offset <= pos:
                yield None, damage.end_offset - pos, pos
                pos = damage.end_offset
                continue
            seg = clog.segment_for(pos)
            if seg is None:
                return
            stop = min(end, seg.end, damage.offset if damage is not None else end)
            buf = clog.read(pos, min(_DISPATCH_CHUNK_BYTES, stop - pos)) or b""
            i = 0
            while len(buf) - i >= BLANK_MARKER_BYTES:
                size, magic = peek_record_header(buf, i)
                if magic == BLANK_MAGIC:
                    assert size == seg.end - (pos + i), "blank marker must reach the segment end"
                    yield None, size, pos + i
                    i = seg.end - pos
                    break
                if size < MIN_RECORD_BYTES:
                    raise CorruptRecord(f"{seg.path}: no record at offset {pos + i}")
                if i + size > len(buf):
                    if i == 0 and pos + size <= stop:
                        buf = clog.read(pos, size) or b""
                        continue
                    break
                rec, _ = decode_record(buf, i, check_crc=False, max_size=seg.size)
                yield rec, size, pos + i
                i += size
            if i == 0:
                return
            pos += i

    def _dispatch_pending(self, limit: int, *, recovering: bool = False) -> int:
        """Dispatch records from ``dispatched_offset`` up to ``limit``; return how many had
        entries (re)written. Records kept from their append (``_pending_dispatch``) are
        dispatched from those values; the rest is read back from the log."""
        count = 0
        pending = self._pending_dispatch
        while self._dispatched < limit:
            while pending and pending[0][0] < self._dispatched:
                pending.popleft()  # dispatched already, or below a deletion
            if pending and pending[0][0] == self._dispatched:
                if pending[0][0] + pending[0][1] > limit:
                    break
                if recovering or len(pending) == 1 or sum(pending[1][:2]) > limit:
                    # One record (a confirm at 1 in flight): no run to batch.
                    count += self._dispatch_kept(pending.popleft(), recovering=recovering)
                else:
                    count += self._dispatch_kept_run(limit)
                continue
            stop = min(pending[0][0], limit) if pending else limit
            before = self._dispatched
            count += self._dispatch_read_back(stop, recovering=recovering)
            if self._dispatched == before:
                if stop < limit:  # a kept record where none starts: a bug; read it all
                    pending.clear()
                    continue
                break  # nothing whole before ``limit``
        return count

    def _dispatch_kept(self, record: PendingRecord, *, recovering: bool) -> bool:
        """Dispatch one record from its kept values (it starts at ``_dispatched``)."""
        phys, size, topic, queue_id, queue_offset, sys_flag, props, store_ms = record
        wrote = self._dispatch_one(
            topic,
            queue_id,
            queue_offset,
            phys,
            size,
            sys_flag=sys_flag,
            properties=props,
            store_ms=store_ms,
            recovering=recovering,
        )
        self._dispatched = phys + size
        return wrote

    def _dispatch_kept_run(self, limit: int) -> int:
        """Dispatch the kept records at the head of ``_pending_dispatch`` that follow on
        from ``_dispatched`` and end by ``limit``, in one pass: what ``_dispatch_kept`` does
        per record, batched. A confirm move on a slave, or on a controller-mode master,
        releases a whole transfer's records at once. Return how many had entries written.

        - A queue's first record of the run is appended as one record at a time is (gap
          checks, a new file, writing what the queue held); the ones that follow on in its
          file wait in a run, packed with one struct call (``ConsumeQueue.append_run``).
        - The index keys of the run are hashed as they come and written together.
        - Arrival listeners are called per record, in order, once the run's entries are
          in their queues (they only wake waiters, none of which runs before).

        On an error the records before the failing one are dispatched whole (queue runs and
        index keys too) and ``_dispatched`` stops at it, as with one record at a time."""
        pending = self._pending_dispatch
        cqs = self._cqs
        index_from = self._index_skip_below
        hashed: list[HashedKey] = []
        #: By queue: [next queue offset, last offset of the run's file + 1, values...].
        runs: dict[ConsumeQueue, list[int]] = {}
        arrived: list[tuple[str, int, int, int]] = []
        at = self._dispatched
        count = 0
        store_ms = self._last_dispatch_ms
        try:
            while pending:
                phys, size, topic, queue_id, queue_offset, sys_flag, props, store_ms = pending[0]
                if phys != at or phys + size > limit:
                    break
                wrote = False
                txn = sys_flag & SYSFLAG_TRANSACTION_MASK
                if txn not in NO_DISPATCH:
                    cq = cqs.get((topic, queue_id)) or self._consume_queue(topic, queue_id)
                    if cq is not None:
                        code = (
                            self._tags_code(topic, props, store_ms)
                            if topic in _TIMED_TOPICS
                            else _tags_hash(props.get(PROPERTY_TAGS))  # the common case
                        )
                        run = runs.get(cq)
                        if run is not None and run[0] == queue_offset < run[1]:
                            run[0] = queue_offset + 1
                            run += (phys, size, code)
                        else:
                            if run is not None:
                                self._end_queue_run(cq, run)
                            if cq.min_offset < cq.max_offset < queue_offset:
                                self._fill_lost(cq, queue_offset, phys)
                            if cq.append(queue_offset, phys, size, code):
                                self._unwritten_cqs[cq] = None
                            room = min(cq.room_after_append(), RUN_MAX_ENTRIES)
                            runs[cq] = [queue_offset + 1, queue_offset + 1 + room]
                        arrived.append((topic, queue_id, queue_offset + 1, code))
                        wrote = True
                if phys >= index_from and txn != _ROLLBACK:
                    uniq_key = props.get(PROPERTY_UNIQ_KEY)
                    keys_value = props.get(PROPERTY_KEYS)
                    if uniq_key and not keys_value:  # most records: that one key
                        hashed.append((topic_key_hash(topic, uniq_key), phys, store_ms))
                        wrote = True
                    elif add_index_keys(hashed, topic, uniq_key, keys_value, phys, store_ms):
                        wrote = True
                pending.popleft()
                count += wrote
                at = phys + size
                self._last_dispatch_ms = store_ms
        finally:
            for cq, run in runs.items():
                self._end_queue_run(cq, run)
            if hashed:
                self._index.put_hashed(hashed)
            self._dispatched = at
            anywhere, scoped = self._any_topic_listeners, self._topic_listeners
            for topic, queue_id, end, code in arrived:
                for listener, waiting_on in scoped.get(topic, anywhere):
                    if waiting_on is None or topic in waiting_on:
                        listener(topic, queue_id, end, code)
        return count

    def _end_queue_run(self, cq: ConsumeQueue, run: list[int]) -> None:
        """Append a queue's run (``_dispatch_kept_run``), if it holds entries; never raises
        ``OSError``."""
        if len(run) > 2 and cq.append_run(run[2:]):
            self._unwritten_cqs[cq] = None
        del run[2:]

    def _keep_pending(self, record: PendingRecord) -> None:
        """Keep an appended record's dispatch values until it is dispatched (bounded)."""
        if len(self._pending_dispatch) < MAX_PENDING_RECORDS:
            self._pending_dispatch.append(record)

    def _dispatch_read_back(self, limit: int, *, recovering: bool) -> int:
        count = 0
        for rec, size, at in self._iter_log(self._dispatched, limit):
            assert at == self._dispatched, (at, self._dispatched)
            if rec is not None and self._dispatch_one(
                rec.topic,
                rec.queue_id,
                rec.queue_offset,
                at,
                size,
                sys_flag=rec.sys_flag,
                properties=rec.properties,
                store_ms=rec.store_timestamp_ms,
                recovering=recovering,
            ):
                count += 1
            self._dispatched = at + size
        return count

    def catch_up_dispatch(self) -> bool:
        """Dispatch what an earlier failure left behind; True when nothing is left.

        A ConsumeQueue or index file that could not be opened (EMFILE) leaves its record
        stored but not yet visible; this runs before the next put and from the store's
        flush loop, so it becomes visible once descriptors are free again. Entries already
        written are repaired in place, never appended twice.
        """
        try:
            self._dispatch_pending(self._dispatch_limit(), recovering=True)
        except OSError as exc:
            self._dispatch_failed(exc)
            return False
        return self._dispatched >= self._dispatch_limit()

    def _on_flush_tick(self) -> None:
        if not self._dispatch_left and self._dispatched < self._dispatch_limit():
            self.catch_up_dispatch()
        self.write_queue_entries()

    def write_queue_entries(self) -> None:
        """Write the ConsumeQueue entries appended since the last call, one pwrite per
        queue. A queue whose write fails keeps them (the next call, or its next reader,
        writes them); the failure is counted and logged as a dispatch failure."""
        unwritten = self._unwritten_cqs
        if not unwritten or self._closed:
            return
        self._unwritten_cqs = {}
        for cq in unwritten:
            try:
                cq.write_pending()
            except OSError as exc:
                self._unwritten_cqs[cq] = None
                self._dispatch_failed(exc)

    def _dispatch_failed(self, exc: OSError) -> None:
        self._dispatch_failures += 1
        n = self._dispatch_failures
        if n == 1 or n % 1000 == 0:
            log.warning(
                "%s: ConsumeQueue/index update failed at CommitLog offset %d (%s; %d so far); "
                "the message is stored and becomes visible when it succeeds",
                self.node,
                self._dispatched,
                exc.strerror or exc,
                n,
            )

    def set_confirm_offset(self, offset: int) -> None:
        """Record the replicated offset; with ``dispatch_confirmed_only`` dispatch up to it."""
        self._confirm = max(0, offset)
        if self.config.dispatch_confirmed_only and not self._closed:
            self._dispatch_some()

    def _dispatch_flushed(self) -> None:
        """After an fsync under ``dispatch_flushed_only``: dispatch what it covered."""
        if self._closed:
            return
        try:
            self._dispatch_some()
        except OSError as exc:
            self._dispatch_failed(exc)

    @property
    def confirm_offset(self) -> int:
        """The replicated offset (the write offset when not dispatching confirmed data only)."""
        if self.config.dispatch_confirmed_only:
            return self._confirm
        return self._clog.write_offset

    def set_master_flushed_offset(self, offset: int) -> None:
        """On a slave: the master's flushed offset, kept in the checkpoint."""
        self._master_flushed = max(0, offset)

    # ======================================================================================
    def _rebuild_queue_offsets(self) -> None:
        """Next queue offset per queue: ConsumeQueue maxima, then undispatched records."""
        self._queue_offsets = {key: cq.max_offset for key, cq in self._cqs.items()}
        pos = self._dispatched
        end = self._clog.write_offset
        for rec, _size, _at in self._iter_log(pos, end):
            if rec is None or rec.sys_flag & SYSFLAG_TRANSACTION_MASK in NO_DISPATCH:
                continue
            key = (rec.topic, rec.queue_id)
            self._queue_offsets[key] = max(self._queue_offsets.get(key, 0), rec.queue_offset + 1)

    # ======================================================================================
