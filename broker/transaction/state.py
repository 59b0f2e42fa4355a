"""Transaction check state: which half messages are open, what the ops say, when to check.

Rules (TransactionalMessageServiceImpl.java, TransactionalMessageBridge.java; wire §2.11):
- A half message lives in RMQ_SYS_TRANS_HALF_TOPIC queue 0 (its transaction type reset
  to NOT, so it is queued there and nowhere else); its real topic and queue are in
  ``REAL_TOPIC`` / ``REAL_QID``. It is named by its half queue offset.
- Every decision is an op record in RMQ_SYS_TRANS_OP_HALF_TOPIC queue 0, as RocketMQ
  writes it: tag ``d``, body the half queue offsets ("5" or "5,6,"). Ours also carry the
  decision (``TRAN_OP`` = COMMIT / ROLLBACK / DISCARD) so a repeated END_TRANSACTION can be
  told whether it agrees. A check is recorded too, as an op with tag ``c`` (ours; RocketMQ
  re-puts the half message instead, which gives the same transaction a second offset), so
  check counts survive a restart and a failover. Both topics replicate like any topic:
  this state is rebuilt from them alone (``TransactionState`` fed by ``apply_op`` and
  ``add_half``), on any broker that becomes master.
- Offsets below ``half_done`` are all resolved; ``pending`` holds halves read and not
  resolved; ``resolved`` holds decisions for offsets at or above ``half_done`` (ops may
  arrive before their half is read). ``half_done`` advances over every resolved offset,
  so memory holds only the window between the oldest open half and the newest op, and
  ``max_pending`` caps the halves read ahead. The last ``keep_decisions`` decisions
  below ``half_done`` are remembered for repeated END_TRANSACTIONs.
- The first check of a half comes ``timeout_ms`` (transactionTimeOut, or the message's
  CHECK_IMMUNITY_TIME_IN_SECONDS when longer) after it was stored; each next one
  ``check_interval_ms`` (transactionCheckInterval) after the last. After ``check_max``
  checks (transactionCheckMax) the next due time discards it (TRANS_CHECK_MAX_TIME_TOPIC).
- Applying an op or a half twice changes nothing: ops are applied in op offset order,
  whether the shell just wrote one or read it from the op queue; the shell serves
  decisions only once it has read every op the queue holds (``op_read`` at the queue's
  end), so no older op can arrive after a newer one was applied.
- Pure: no clock, no I/O; time comes in as ``now_ms``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from protocol.message import (
    PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS,
    PROPERTY_PGROUP,
    PROPERTY_REAL_QID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_TAGS,
    PROPERTY_TRAN_MSG,
    PROPERTY_TRANSACTION_CHECK_TIMES,
    PROPERTY_TRANSACTION_ID,
    PROPERTY_UNIQ_KEY,
    SYSFLAG_TRANSACTION_COMMIT_TYPE,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_NOT_TYPE,
    SYSFLAG_TRANSACTION_PREPARED_TYPE,
    MessageRecord,
)

HALF_TOPIC = "RMQ_SYS_TRANS_HALF_TOPIC"
OP_TOPIC = "RMQ_SYS_TRANS_OP_HALF_TOPIC"
CHECK_MAX_TIME_TOPIC = "TRANS_CHECK_MAX_TIME_TOPIC"
#: RocketMQ's op tag for "resolved" (TransactionalMessageUtil.REMOVE_TAG).
REMOVE_TAG = "d"
#: Our op tag for "checked once more".
CHECK_TAG = "c"
#: Our op property: the decision of a ``d`` op.
PROPERTY_OP_DECISION = "TRAN_OP"
#: MixAll.CID_SYS_RMQ_TRANS: the group whose offsets mark the check progress.
CHECK_GROUP = "CID_RMQ_SYS_TRANS"


class Decision(enum.Enum):
    """How a transaction ended."""

    COMMIT = "COMMIT"
    ROLLBACK = "ROLLBACK"
    #: Checked ``check_max`` times without an answer: moved to TRANS_CHECK_MAX_TIME_TOPIC.
    DISCARD = "DISCARD"
    #: Resolved, decision unknown (an op without ``TRAN_OP``, or forgotten).
    RESOLVED = "RESOLVED"


@attrs.frozen(kw_only=True)
class TransactionConfig:
    """The check schedule (BrokerConfig's transaction keys, in milliseconds)."""

    timeout_ms: int = 6_000
    check_interval_ms: int = 30_000
    check_max: int = 15
    #: Open halves held in memory at most; reading further halves waits below it.
    max_pending: int = 100_000
    #: Decisions remembered below ``half_done`` (for repeated END_TRANSACTIONs).
    keep_decisions: int = 65_536


def is_half_request(sys_flag: int, properties: Mapping[str, str]) -> bool:
    """Whether a send is a half message: ``TRAN_MSG=true`` (what RocketMQ's broker reads),
    or the PREPARED transaction type alone (ali-ons sets only the sysFlag)."""
    if properties.get(PROPERTY_TRAN_MSG, "").lower() == "true":
        return True
    return sys_flag & SYSFLAG_TRANSACTION_MASK == SYSFLAG_TRANSACTION_PREPARED_TYPE


def half_record(record: MessageRecord, producer_group: str) -> MessageRecord:
    """The record a half send stores (parseHalfMessageInner): real topic and queue in
    properties, transaction id = UNIQ_KEY, type NOT, in the half topic's queue 0."""
    props = dict(record.properties)
    uniq = props.get(PROPERTY_UNIQ_KEY)
    if uniq:
        props[PROPERTY_TRANSACTION_ID] = uniq
    props[PROPERTY_TRAN_MSG] = "true"
    props.setdefault(PROPERTY_PGROUP, producer_group)
    props[PROPERTY_REAL_TOPIC] = record.topic
    props[PROPERTY_REAL_QID] = str(record.queue_id)
    return attrs.evolve(
        record,
        topic=HALF_TOPIC,
        queue_id=0,
        sys_flag=_with_type(record.sys_flag, SYSFLAG_TRANSACTION_NOT_TYPE),
        properties=props,
    )


def real_destination(half: MessageRecord) -> tuple[str, int] | None:
    """The real topic and queue of a half record; None when its properties lack them."""
    topic = half.properties.get(PROPERTY_REAL_TOPIC)
    qid = half.properties.get(PROPERTY_REAL_QID, "")
    if not topic or not (qid.isascii() and qid.isdigit()) or len(qid) > 9:
        return None
    return topic, int(qid)


def commit_record(half: MessageRecord) -> MessageRecord:
    """The message a commit writes (endMessageTransaction): real topic and queue, the
    half's properties without REAL_TOPIC/REAL_QID/TRAN_MSG (transaction id kept), type
    COMMIT, and the half's CommitLog offset as the prepared transaction offset."""
    destination = real_destination(half)
    assert destination is not None, "checked by the caller"
    props = dict(half.properties)
    for name in (PROPERTY_REAL_TOPIC, PROPERTY_REAL_QID, PROPERTY_TRAN_MSG):
        props.pop(name, None)
    props.pop(PROPERTY_TRANSACTION_CHECK_TIMES, None)
    return attrs.evolve(
        half,
        topic=destination[0],
        queue_id=destination[1],
        sys_flag=_with_type(half.sys_flag, SYSFLAG_TRANSACTION_COMMIT_TYPE),
        prepared_transaction_offset=half.physical_offset,
        properties=props,
    )


def discard_record(half: MessageRecord) -> MessageRecord:
    """A half checked too often, as RocketMQ keeps it: TRANS_CHECK_MAX_TIME_TOPIC queue 0."""
    return attrs.evolve(half, topic=CHECK_MAX_TIME_TOPIC, queue_id=0)


def check_body_record(half: MessageRecord, checks: int) -> MessageRecord:
    """The body of CHECK_TRANSACTION_STATE: the half with its real topic and queue and
    the check count (sendCheckMessage)."""
    destination = real_destination(half)
    topic, qid = destination if destination is not None else (half.topic, half.queue_id)
    props = dict(half.properties)
    props[PROPERTY_TRANSACTION_CHECK_TIMES] = str(checks)
    return attrs.evolve(half, topic=topic, queue_id=qid, properties=props)


def op_record(
    template: MessageRecord, half_offset: int, *, tag: str, decision: Decision | None
) -> MessageRecord:
    """An op (RocketMQ's layout: tag, body = the half offset) built on ``template``'s hosts."""
    props = {PROPERTY_TAGS: tag}
    if decision is not None:
        props[PROPERTY_OP_DECISION] = decision.value
    return attrs.evolve(
        template,
        topic=OP_TOPIC,
        queue_id=0,
        flag=0,
        sys_flag=0,
        reconsume_times=0,
        prepared_transaction_offset=0,
        body=str(half_offset).encode(),
        properties=props,
    )


def _with_type(sys_flag: int, tran_type: int) -> int:
    return (sys_flag & ~SYSFLAG_TRANSACTION_MASK) | tran_type


@attrs.frozen(kw_only=True)
class HalfInfo:
    """What the state keeps of one half message."""

    queue_offset: int
    physical_offset: int
    store_ms: int
    producer_group: str
    #: Delay of its first check.
    immunity_ms: int

    @classmethod
    def from_record(cls, record: MessageRecord, timeout_ms: int) -> HalfInfo:
        immunity_ms = timeout_ms
        raw = record.properties.get(PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS, "")
        if raw.isascii() and raw.isdigit() and len(raw) <= 9:
            # getImmunityTime: the custom first check time, never below transactionTimeOut.
            immunity_ms = max(timeout_ms, int(raw) * 1000)
        return cls(
            queue_offset=record.queue_offset,
            physical_offset=record.physical_offset,
            store_ms=record.store_timestamp_ms,
            producer_group=record.properties.get(PROPERTY_PGROUP, ""),
            immunity_ms=immunity_ms,
        )


@attrs.frozen(kw_only=True)
class Op:
    """One op record, parsed."""

    op_offset: int
    half_offsets: tuple[int, ...]
    tag: str
    decision: Decision
    store_ms: int

    @classmethod
    def from_record(cls, record: MessageRecord) -> Op | None:
        """The op, or None when it is not one we understand (logged by the shell)."""
        tag = record.properties.get(PROPERTY_TAGS, "")
        if tag not in (REMOVE_TAG, CHECK_TAG):
            return None
        try:
            text = record.body.decode("ascii")
        except UnicodeDecodeError:
            return None
        # RocketMQ 5 batches offsets: "5,6,7," (OFFSET_SEPARATOR).
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts or not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts):
            return None
        raw = record.properties.get(PROPERTY_OP_DECISION, Decision.RESOLVED.value)
        try:
            decision = Decision(raw)
        except ValueError:
            decision = Decision.RESOLVED
        return cls(
            op_offset=record.queue_offset,
            half_offsets=tuple(int(p) for p in parts),
            tag=tag,
            decision=decision,
            store_ms=record.store_timestamp_ms,
        )


@attrs.define(kw_only=True)
class Pending:
    """An open half message and its checks so far."""

    half: HalfInfo
    checks: int = 0
    last_check_ms: int | None = None

    def next_check_ms(self, config: TransactionConfig) -> int:
        if self.last_check_ms is None:
            return self.half.store_ms + self.half.immunity_ms
        return self.last_check_ms + config.check_interval_ms


@attrs.frozen(kw_only=True)
class CheckDue:
    """Ask the producer group about ``half``; this is check number ``checks``."""

    half: HalfInfo
    checks: int


@attrs.frozen(kw_only=True)
class DiscardDue:
    """``half`` was checked ``checks`` times (the maximum): discard it."""

    half: HalfInfo
    checks: int


class TransactionState:
    """The open halves and the decisions of one half queue (see the module rules)."""

    def __init__(self, config: TransactionConfig, *, half_start: int, op_start: int) -> None:
        self.config = config
        #: Every half offset below this is resolved.
        self.half_done = half_start
        #: Every half offset below this was read (or skipped as resolved or absent).
        self.half_read = half_start
        #: Op queue offsets below this were applied.
        self.op_read = op_start
        self.pending: dict[int, Pending] = {}
        self.resolved: dict[int, Decision] = {}
        #: Half offset → (checks, last check ms) from ``c`` ops, for halves not resolved.
        self.checks: dict[int, tuple[int, int]] = {}
        #: Half offset → the first op offset naming it, for ``op_progress``.
        self._first_op: dict[int, int] = {}
        self._history: dict[int, Decision] = {}

    # --- queries ------------------------------------------------------------------------

    def decision_of(self, half_offset: int) -> Decision | None:
        """How the transaction at ``half_offset`` ended; None while it is open."""
        found = self.resolved.get(half_offset) or self._history.get(half_offset)
        if found is not None:
            return found
        return Decision.RESOLVED if half_offset < self.half_done else None

    def open_count(self, half_max_offset: int) -> int:
        """Half messages below ``half_max_offset`` (the queue's end) not resolved yet."""
        if half_max_offset <= self.half_done:
            return 0
        done_above = sum(1 for h in self.resolved if self.half_done <= h < half_max_offset)
        return half_max_offset - self.half_done - done_above

    def wants_halves(self) -> bool:
        """Whether reading further halves stays within ``max_pending``."""
        return len(self.pending) < self.config.max_pending

    def next_half_to_read(self) -> int:
        """The next half offset worth reading (resolved ones are skipped unread)."""
        while self.half_read in self.resolved:
            self.half_read += 1
        self._advance()
        return self.half_read

    def due(self, now_ms: int) -> list[CheckDue | DiscardDue]:
        """What is due at ``now_ms``, oldest half first."""
        config = self.config
        out: list[CheckDue | DiscardDue] = []
        for offset in sorted(self.pending):
            p = self.pending[offset]
            if p.next_check_ms(config) > now_ms:
                continue
            if p.checks >= config.check_max:
                out.append(DiscardDue(half=p.half, checks=p.checks))
            else:
                out.append(CheckDue(half=p.half, checks=p.checks + 1))
        return out

    def op_progress(self) -> int:
        """Op queue offset below which no op is needed again to rebuild this state."""
        return min(self._first_op.values(), default=self.op_read)

    # --- events -------------------------------------------------------------------------

    def apply_op(self, op: Op) -> None:
        """An op record, read from the op queue or just written, in op offset order (an
        op below ``op_read`` was applied already and changes nothing)."""
        if op.op_offset < self.op_read:
            return
        self.op_read = op.op_offset + 1
        for h in op.half_offsets:
            if h < self.half_done or h in self.resolved:
                continue
            self._first_op.setdefault(h, op.op_offset)
            if op.tag == REMOVE_TAG:
                self.resolved[h] = op.decision
                self.pending.pop(h, None)
                self.checks.pop(h, None)
                continue
            count, _ = self.checks.get(h, (0, op.store_ms))
            self.checks[h] = (count + 1, op.store_ms)
            pending = self.pending.get(h)
            if pending is not None:
                pending.checks, pending.last_check_ms = count + 1, op.store_ms
        self._advance()

    def add_half(self, half: HalfInfo) -> None:
        """A half record read from the half queue (offsets between the last one read and
        this one hold nothing, and count as resolved)."""
        h = half.queue_offset
        if h < self.half_read:
            return
        self.half_read = h + 1
        if h not in self.resolved:
            count, last = self.checks.get(h, (0, None))
            self.pending[h] = Pending(half=half, checks=count, last_check_ms=last)
        self._advance()

    def mark_absent(self, half_offset: int) -> None:
        """Nothing checkable lies at ``half_offset`` (an unreadable record)."""
        if half_offset >= self.half_read:
            self.half_read = half_offset + 1
            self._advance()

    def skip_to(self, half_offset: int) -> None:
        """The half queue holds nothing below ``half_offset`` any more (retention)."""
        for h in [h for h in self.pending if h < half_offset]:
            del self.pending[h]
        self.half_read = max(self.half_read, half_offset)
        self._advance()

    def _advance(self) -> None:
        while self.half_done < self.half_read and self.half_done not in self.pending:
            h = self.half_done
            decision = self.resolved.pop(h, None)
            if decision is not None:
                self._remember(h, decision)
            self.checks.pop(h, None)
            self._first_op.pop(h, None)
            self.half_done += 1

    def _remember(self, half_offset: int, decision: Decision) -> None:
        history = self._history
        history[half_offset] = decision
        while len(history) > self.config.keep_decisions:
            del history[next(iter(history))]
