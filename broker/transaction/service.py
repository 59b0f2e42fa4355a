"""Transactions on a broker: END_TRANSACTION (37) and the check service (39 to producers).

Rules (EndTransactionProcessor.java, TransactionalMessageCheckService.java; the decisions
and their bookkeeping are ``broker/transaction/state.py``'s):
- Only a master that accepts writes ends transactions and checks them. The state is built
  from the half and op queues whenever this broker becomes master (a new HA master
  object), so a new master after a failover resumes where the old one was, and a
  restarted broker where it stopped; a broker that is not master holds no state.
- END_TRANSACTION is served once every op the op queue holds was read (it waits up to
  ``request_timeout_s``, then SYSTEM_BUSY): a decision is never taken on a half whose op
  is still unread. It is refused with SYSTEM_ERROR and a remark saying why when no record
  lies at ``commitLogOffset``, the record is not a half message, it belongs to another
  producer group, or its half queue offset is not ``tranStateTableOffset``; nothing is
  written then. A repeated decision is answered SUCCESS and writes nothing; a contrary
  one is refused.
- A commit writes the message to its real topic, then the op, in one step (no await
  between): a crash or failover between them leaves a commit without its op, never an
  op without its commit. Such a half is checked again; before committing a half stored
  before this mastership, the real topic's index is searched for its commit (UNIQ_KEY,
  COMMIT type, prepared offset = the half's), and only the op is written when found.
  The answer waits until both are as durable as a send would be.
- The check loop runs every ``_TICK_S``: reads new ops, reads halves whose first check
  is due, and for each due half writes a check op (the count survives restarts and
  failovers) and sends CHECK_TRANSACTION_STATE (oneway) on the freshest connection of its
  producer group, if any; past ``transactionCheckMax`` checks the half is copied to
  TRANS_CHECK_MAX_TIME_TOPIC, resolved with a DISCARD op and logged. At most
  ``_CHECKS_PER_TICK`` checks per tick.
- The progress (every half below ``half_done`` resolved; ops below ``op_progress`` not
  needed) is shown as group CID_RMQ_SYS_TRANS's consumer offsets of the two topics, as
  RocketMQ keeps it (``rmq admin consumerProgress -g CID_RMQ_SYS_TRANS``). A rebuild does
  not start there but at the queues' beginning: offsets copied from a deposed master may
  count ops this log never received. Resolved halves are skipped unread, so a rebuild
  reads every retained op and only the open halves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import trio

from broker.clients import ClientManager
from broker.clock import Clock
from broker.config import BrokerConfig
from broker.ha import HAMaster
from broker.offsets import ConsumerOffsetManager
from broker.store.pull import GetMessageStatus
from broker.store.results import AppendResult
from broker.store.store import MessageStore
from broker.topics import TopicConfigManager
from broker.transaction.state import (
    CHECK_GROUP,
    CHECK_MAX_TIME_TOPIC,
    CHECK_TAG,
    HALF_TOPIC,
    OP_TOPIC,
    REMOVE_TAG,
    CheckDue,
    Decision,
    DiscardDue,
    HalfInfo,
    Op,
    TransactionConfig,
    TransactionState,
    check_body_record,
    commit_record,
    discard_record,
    op_record,
    real_destination,
)
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    InvalidParameter,
    MalformedRecord,
    RocketError,
    ServiceNotAvailable,
    SystemBusy,
    SystemError_,
)
from protocol.message import (
    PROPERTY_PGROUP,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_TRANSACTION_COMMIT_TYPE,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_NOT_TYPE,
    MessageRecord,
    decode_record,
    encode_record,
)
from protocol.rpc import Connection, Handler
from protocol.transaction import (
    END_TRANSACTION_VALUES,
    CheckTransactionStateRequestHeader,
    EndTransactionRequestHeader,
)

log = logging.getLogger(__name__)

_TICK_S = 1.0
_CHECKS_PER_TICK = 2_000
_READ_BATCH = 256
_READ_BYTES = 4 << 20
#: Codes of a stored final message that END_TRANSACTION still answers SUCCESS
#: (sendFinalMessage: stored, not as durable as configured).
_STORED_CODES = frozenset(
    {
        ResponseCode.SUCCESS,
        ResponseCode.FLUSH_DISK_TIMEOUT,
        ResponseCode.FLUSH_SLAVE_TIMEOUT,
        ResponseCode.SLAVE_NOT_AVAILABLE,
    }
)


class BrokerForTransactions(Protocol):
    """What ``TransactionService`` uses of its broker (``Broker`` satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> BrokerConfig: ...
    @property
    def accepts_writes(self) -> bool: ...
    @property
    def role_description(self) -> str: ...
    @property
    def store(self) -> MessageStore: ...
    @property
    def ha_master(self) -> HAMaster | None: ...
    @property
    def clients(self) -> ClientManager: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    def topic_changed(self) -> None: ...
    def store_put(self, records: Sequence[MessageRecord]) -> AppendResult: ...
    async def wait_durable(self, result: AppendResult, *, wait_store: bool) -> int: ...
    def oneway_to_channel(self, channel_id: int, request: RemotingCommand) -> bool: ...


def transaction_config(config: BrokerConfig) -> TransactionConfig:
    return TransactionConfig(
        timeout_ms=int(config.transaction_timeout_s * 1000),
        check_interval_ms=int(config.transaction_check_interval_s * 1000),
        check_max=config.transaction_check_max,
    )


def _decoded(raw: bytes) -> MessageRecord | None:
    try:
        return decode_record(raw)[0]
    except MalformedRecord:
        return None


def transaction_stats(service: TransactionService) -> dict[str, str]:
    """GET_BROKER_RUNTIME_INFO entries (ours): open halves ("-1" where no state is kept,
    a slave or a master still rebuilding), checks sent, halves discarded."""
    open_halves = service.open_halves()
    return {
        "transactionHalfOpenNums": str(-1 if open_halves is None else open_halves),
        "transactionChecksSent": str(service.checks_sent),
        "transactionHalfDiscarded": str(service.discarded),
    }


class TransactionService:
    """END_TRANSACTION and the check loop of one broker."""

    def __init__(self, broker: BrokerForTransactions, *, clock: Clock) -> None:
        self.broker = broker
        self._clock = clock
        self.state: TransactionState | None = None
        #: The HA master object the state was built under (a new one: rebuild).
        self._built_for: HAMaster | None = None
        self._ready = trio.Event()
        #: The CommitLog's end when the state was built (``_committed_before``).
        self._built_at_offset = 0
        #: Halves whose commit was stored and whose op could not be (a refused put).
        self._unsure: set[int] = set()
        self.checks_sent = 0
        self.discarded = 0

    def handlers(self) -> dict[int, Handler]:
        return {RequestCode.END_TRANSACTION: self.end_transaction}

    # --- queries ------------------------------------------------------------------------

    def open_halves(self) -> int | None:
        """Half messages not resolved yet; None when this broker keeps no state (a slave)."""
        state = self.state
        if state is None or not self._ready.is_set():
            return None
        return state.open_count(self.broker.store.next_queue_offset(HALF_TOPIC, 0))

    # --- END_TRANSACTION ----------------------------------------------------------------

    async def end_transaction(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        header = EndTransactionRequestHeader.from_ext_fields(request.ext_fields)
        broker = self.broker
        value = header.commit_or_rollback
        if value not in END_TRANSACTION_VALUES:
            raise InvalidParameter(
                f"commitOrRollback must be 0 (unknown), 8 (commit) or 12 (rollback), not {value}"
            )
        self._check_master()
        if value == SYSFLAG_TRANSACTION_NOT_TYPE:
            log.info(
                "%s: producer %s left transaction %s open (commitLogOffset %d); it is checked later",
                broker.name,
                conn.peer,
                header.transaction_id or header.msg_id,
                header.commit_log_offset,
            )
            return request.respond(remark="transaction state unknown: it will be checked")
        state = await self._ready_state()
        self._check_master()  # again: the role may have changed while we waited
        half = self._half_named_by(header)
        decision = (
            Decision.COMMIT if value == SYSFLAG_TRANSACTION_COMMIT_TYPE else Decision.ROLLBACK
        )
        prior = state.decision_of(half.queue_offset)
        if prior is not None:
            if prior is decision:
                done = "committed" if decision is Decision.COMMIT else "rolled back"
                return request.respond(remark=f"transaction already {done}; nothing written")
            raise SystemError_(
                f"transaction of half message {half.queue_offset} was already resolved "
                f"({prior.value}); {decision.value} refused"
            )
        if decision is Decision.COMMIT and not self._committed_before(half):
            self._put(commit_record(half))
            # Until its op is stored, this half's commit is looked up before another.
            self._unsure.add(half.physical_offset)
        op_result = self._write_op(half, REMOVE_TAG, decision)
        self._unsure.discard(half.physical_offset)
        if header.from_transaction_check:
            log.info(
                "%s: producer %s answered the check of %s: %s",
                broker.name,
                conn.peer,
                header.transaction_id or header.msg_id,
                decision.value,
            )
        code = await broker.wait_durable(op_result, wait_store=True)
        remark = None if code == ResponseCode.SUCCESS else ResponseCode(code).name
        if code not in _STORED_CODES:
            return request.respond(code, remark)
        return request.respond(ResponseCode.SUCCESS, remark)

    def _check_master(self) -> None:
        broker = self.broker
        if not broker.accepts_writes:
            raise ServiceNotAvailable(
                f"broker {broker.config.broker_name} does not end transactions now "
                f"({broker.role_description}); send END_TRANSACTION to the master"
            )

    async def _ready_state(self) -> TransactionState:
        state = self.state
        if state is not None and self._ready.is_set():
            # No checkpoint when ready: a handler that never waits costs no task of its
            # own (protocol/rpc.py), and END_TRANSACTION is on every transaction's path.
            return state
        with trio.move_on_after(self.broker.config.request_timeout_s):
            await self._ready.wait()
        state = self.state
        if state is None or not self._ready.is_set():
            raise SystemBusy(
                "transaction state is being rebuilt from the half and op queues; retry soon"
            )
        return state

    def _half_named_by(self, header: EndTransactionRequestHeader) -> MessageRecord:
        """The half record END_TRANSACTION names, checked (checkPrepareMessage)."""
        offset = header.commit_log_offset
        raw = self.broker.store.read_record(offset) if offset >= 0 else None
        if raw is None:
            raise SystemError_(
                f"Find prepared transaction message failed: no message at commitLogOffset {offset}"
            )
        try:
            half, _ = decode_record(raw)
        except MalformedRecord as exc:
            raise SystemError_(
                f"message at commitLogOffset {offset} is unreadable: {exc}"
            ) from None
        if half.topic != HALF_TOPIC:
            raise SystemError_(
                f"the message at commitLogOffset {offset} is not a half message "
                f"(it is in topic {half.topic})"
            )
        group = half.properties.get(PROPERTY_PGROUP, "")
        if group != header.producer_group:
            raise SystemError_(
                f"The producer group wrong: the half message at commitLogOffset {offset} "
                f"belongs to producer group {group!r}, not {header.producer_group!r}"
            )
        if half.queue_offset != header.tran_state_table_offset:
            raise SystemError_(
                f"The transaction state table offset wrong: the half message at "
                f"commitLogOffset {offset} has offset {half.queue_offset}, not "
                f"{header.tran_state_table_offset}"
            )
        if real_destination(half) is None:
            raise SystemError_(f"the half message at commitLogOffset {offset} names no real topic")
        return half

    def _committed_before(self, half: MessageRecord) -> bool:
        """Whether the real topic already holds this half's commit without its op: a
        crash or failover fell between the two records. Only a half stored before this
        mastership, or one whose op was refused here, can be in that state; its commit is found by UNIQ_KEY in the index."""
        uniq = half.properties.get(PROPERTY_UNIQ_KEY)
        destination = real_destination(half)
        unsure = (
            half.physical_offset < self._built_at_offset or half.physical_offset in self._unsure
        )
        if not unsure or not uniq or destination is None:
            return False
        store = self.broker.store
        end_ms = self._clock.wall_ms() + 60_000
        # From time 0: the index keeps store times in whole seconds past its file start.
        for phys in store.query_index(destination[0], uniq, 64, 0, end_ms):
            record = _decoded(store.read_record(phys) or b"")
            if (
                record is not None
                and record.sys_flag & SYSFLAG_TRANSACTION_MASK == SYSFLAG_TRANSACTION_COMMIT_TYPE
                and record.prepared_transaction_offset == half.physical_offset
            ):
                log.warning(
                    "%s: half message %d was committed before its op was written; "
                    "only the op is written now",
                    self.broker.name,
                    half.queue_offset,
                )
                return True
        return False

    def _put(self, record: MessageRecord) -> AppendResult:
        result = self.broker.store_put([record])
        if not result.ok:
            raise SystemError_(f"store refused {record.topic}: {result.remark or result.status}")
        return result

    def _write_op(self, half: MessageRecord, tag: str, decision: Decision | None) -> AppendResult:
        """Write an op for ``half`` and apply it to the state at once."""
        result = self._put(op_record(half, half.queue_offset, tag=tag, decision=decision))
        if self.state is not None:
            self.state.apply_op(
                Op(
                    op_offset=result.queue_offset,
                    half_offsets=(half.queue_offset,),
                    tag=tag,
                    decision=decision or Decision.RESOLVED,
                    store_ms=result.store_timestamp_ms,
                )
            )
        return result

    # --- the check loop -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Build the state while master, check what is due; until cancelled."""
        task_status.started()
        while True:
            try:
                self._tick()
            except RocketError as exc:  # store refusing writes, a record it cannot read
                log.warning("%s: transaction check paused: %s", self.broker.name, exc)
            await trio.sleep(_TICK_S)

    def _tick(self) -> None:
        broker = self.broker
        if not broker.accepts_writes:
            if self.state is not None:
                log.info("%s: no longer master; transaction checks stop", broker.name)
            self.state, self._built_for = None, None
            self._ready = trio.Event()
            return
        if self.state is None or broker.ha_master is not self._built_for:
            self._rebuild()
        state = self.state
        assert state is not None
        self._read_ops(state)
        if not self._ready.is_set():
            if state.op_read < broker.store.next_queue_offset(OP_TOPIC, 0):
                return  # ops still to read (not dispatched yet, or more than one batch)
            self._ready.set()
            log.info(
                "%s: transaction state ready: halves resolved below %d, ops read to %d",
                broker.name,
                state.half_done,
                state.op_read,
            )
        now_ms = self._clock.wall_ms()
        self._read_halves(state, now_ms)
        for due in state.due(now_ms)[:_CHECKS_PER_TICK]:
            self._act(due)
        self._save_progress(state)

    def _rebuild(self) -> None:
        broker = self.broker
        store = broker.store
        # From the queues' beginning, not from the saved progress: that may come from a
        # deposed master (slave sync) and count ops this log never received.
        half_start = store.min_offset(HALF_TOPIC, 0)
        op_start = store.min_offset(OP_TOPIC, 0)
        self.state = TransactionState(
            transaction_config(broker.config), half_start=half_start, op_start=op_start
        )
        self._built_for = broker.ha_master
        self._built_at_offset = store.max_physical_offset
        self._unsure.clear()  # all below the new start: looked up anyway
        self._ready = trio.Event()
        log.info(
            "%s: rebuilding transaction state from half offset %d, op offset %d",
            broker.name,
            half_start,
            op_start,
        )

    def _read_ops(self, state: TransactionState) -> None:
        store = self.broker.store
        while True:
            result = store.get_messages(
                CHECK_GROUP,
                OP_TOPIC,
                0,
                state.op_read,
                max_count=_READ_BATCH,
                max_bytes=_READ_BYTES,
            )
            if result.status is not GetMessageStatus.FOUND:
                if result.next_begin_offset > state.op_read and result.status in (
                    GetMessageStatus.OFFSET_TOO_SMALL,
                    GetMessageStatus.OFFSET_FOUND_NULL,
                    GetMessageStatus.MESSAGE_WAS_REMOVING,
                ):
                    state.op_read = result.next_begin_offset
                    continue
                return
            for raw, queue_offset in zip(result.records, result.queue_offsets, strict=True):
                record = _decoded(raw)
                op = None if record is None else Op.from_record(record)
                if op is None:
                    log.warning(
                        "%s: op %d is not one we understand; skipped",
                        self.broker.name,
                        queue_offset,
                    )
                    state.op_read = max(state.op_read, queue_offset + 1)
                    continue
                state.apply_op(op)
            state.op_read = max(state.op_read, result.next_begin_offset)
            if len(result.records) < _READ_BATCH:
                return

    def _read_halves(self, state: TransactionState, now_ms: int) -> None:
        """Read halves whose first check is due (they lie in store order)."""
        store = self.broker.store
        config = state.config
        while state.wants_halves():
            offset = state.next_half_to_read()
            result = store.get_messages(
                CHECK_GROUP, HALF_TOPIC, 0, offset, max_count=_READ_BATCH, max_bytes=_READ_BYTES
            )
            if result.status is not GetMessageStatus.FOUND:
                if result.next_begin_offset > offset and result.status in (
                    GetMessageStatus.OFFSET_TOO_SMALL,
                    GetMessageStatus.OFFSET_FOUND_NULL,
                    GetMessageStatus.MESSAGE_WAS_REMOVING,
                ):
                    state.skip_to(result.next_begin_offset)
                    continue
                return
            for raw, queue_offset in zip(result.records, result.queue_offsets, strict=True):
                record = _decoded(raw)
                if record is None:
                    log.warning(
                        "%s: half message %d is unreadable; never checked",
                        self.broker.name,
                        queue_offset,
                    )
                    state.mark_absent(queue_offset)
                    continue
                half = HalfInfo.from_record(record, config.timeout_ms)
                if half.queue_offset in state.resolved:
                    state.add_half(half)
                    continue
                if half.store_ms + half.immunity_ms > now_ms:
                    return  # not due yet, nor anything stored after it
                state.add_half(half)
                if not state.wants_halves():
                    return
            if len(result.records) < _READ_BATCH:
                return

    def _act(self, due: CheckDue | DiscardDue) -> None:
        broker = self.broker
        half_info = due.half
        raw = broker.store.read_record(half_info.physical_offset)
        half = _decoded(raw) if raw is not None else None
        if half is None or half.queue_offset != half_info.queue_offset:
            log.warning(
                "%s: half message %d is gone from the CommitLog; resolved as discarded",
                broker.name,
                half_info.queue_offset,
            )
            self._discard_missing(half_info)
            return
        if isinstance(due, DiscardDue):
            self._create_check_max_topic()
            self._put(discard_record(half))
            self._write_op(half, REMOVE_TAG, Decision.DISCARD)
            self.discarded += 1
            log.error(
                "%s: half message %d (transaction %s, producer group %s) checked %d times "
                "without an answer; moved to TRANS_CHECK_MAX_TIME_TOPIC",
                broker.name,
                half.queue_offset,
                half.properties.get(PROPERTY_UNIQ_KEY),
                half_info.producer_group,
                due.checks,
            )
            return
        if self._committed_before(half):  # its op was lost: resolve it without asking
            self._write_op(half, REMOVE_TAG, Decision.COMMIT)
            return
        self._write_op(half, CHECK_TAG, None)
        self._send_check(half, due.checks)

    def _create_check_max_topic(self) -> None:
        """createTopicOfTranCheckMaxTime: 1 queue, read-write, on first use."""
        broker = self.broker
        if broker.topics.get(CHECK_MAX_TIME_TOPIC) is not None:
            return
        broker.topics.create_check_max_time_topic(now_ms=self._clock.wall_ms())
        broker.topic_changed()

    def _discard_missing(self, half_info: HalfInfo) -> None:
        state = self.state
        assert state is not None
        # No record to build the op on: a minimal one with this broker's hosts.
        template = MessageRecord(
            topic=OP_TOPIC,
            body=b"",
            queue_id=0,
            born_timestamp_ms=self._clock.wall_ms(),
            born_host=self.broker.store.config.store_host,
            store_timestamp_ms=0,
            store_host=self.broker.store.config.store_host,
            queue_offset=half_info.queue_offset,
        )
        self._write_op(template, REMOVE_TAG, Decision.DISCARD)

    def _send_check(self, half: MessageRecord, checks: int) -> None:
        broker = self.broker
        group = half.properties.get(PROPERTY_PGROUP, "")
        channel = broker.clients.producers.available_channel(group)
        uniq = half.properties.get(PROPERTY_UNIQ_KEY)
        if channel is None:
            log.warning(
                "%s: check %d of transaction %s: no producer of group %s is connected",
                broker.name,
                checks,
                uniq,
                group,
            )
            return
        body_record = check_body_record(half, checks)
        header = CheckTransactionStateRequestHeader(
            tran_state_table_offset=half.queue_offset,
            commit_log_offset=half.physical_offset,
            msg_id=uniq,
            transaction_id=uniq,
            offset_msg_id=half.msg_id,
            topic=body_record.topic,
            broker_name=broker.config.broker_name,
        )
        request = RemotingCommand.request(
            RequestCode.CHECK_TRANSACTION_STATE,
            header.to_ext_fields(),
            body=encode_record(body_record),
            oneway=True,
        )
        if broker.oneway_to_channel(channel, request):
            self.checks_sent += 1
            log.info(
                "%s: check %d of transaction %s (half %d) sent to producer group %s",
                broker.name,
                checks,
                uniq,
                half.queue_offset,
                group,
            )

    def _save_progress(self, state: TransactionState) -> None:
        offsets = self.broker.offsets
        progress = state.op_progress()
        if (state.half_done, progress) == (0, 0) and offsets.query(
            HALF_TOPIC, CHECK_GROUP, 0
        ) is None:
            return  # no transaction ever: no CID_RMQ_SYS_TRANS offsets to show
        if offsets.query(HALF_TOPIC, CHECK_GROUP, 0) != state.half_done:
            offsets.commit(HALF_TOPIC, CHECK_GROUP, 0, state.half_done)
        if offsets.query(OP_TOPIC, CHECK_GROUP, 0) != progress:
            offsets.commit(OP_TOPIC, CHECK_GROUP, 0, progress)
