"""Transactional messages on the wire: END_TRANSACTION (37) and CHECK_TRANSACTION_STATE (39).

Rules (reference/rocketmq-wire.md §2.11; EndTransactionRequestHeader.java,
CheckTransactionStateRequestHeader.java):
- A half message is a send with property ``TRAN_MSG=true``, ``PGROUP=<producer group>`` and
  sysFlag transaction type PREPARED (0x4). The broker parks it in RMQ_SYS_TRANS_HALF_TOPIC
  queue 0; the send result's ``queueOffset`` is its offset there and the offset id names
  its CommitLog offset.
- END_TRANSACTION (producer → broker, oneway in RocketMQ's clients) names the half message
  by ``tranStateTableOffset`` (half queue offset) and ``commitLogOffset``;
  ``commitOrRollback`` is 8 (commit), 12 (rollback) or 0 (unknown: nothing happens, the
  broker checks later). ``fromTransactionCheck`` marks an answer to a check.
- CHECK_TRANSACTION_STATE (broker → producer, oneway): the header names the half message,
  the body is the half record re-encoded with its real topic and queue.
- Pure.
"""

from __future__ import annotations

import enum

import attrs

from protocol.codes import RequestCode
from protocol.headers import Header, Long
from protocol.message import (
    SYSFLAG_TRANSACTION_COMMIT_TYPE,
    SYSFLAG_TRANSACTION_NOT_TYPE,
    SYSFLAG_TRANSACTION_ROLLBACK_TYPE,
)


class LocalTransactionState(enum.Enum):
    """What a local transaction (or a check of it) decided (LocalTransactionState.java)."""

    COMMIT_MESSAGE = "COMMIT_MESSAGE"
    ROLLBACK_MESSAGE = "ROLLBACK_MESSAGE"
    UNKNOW = "UNKNOW"

    @property
    def wire_value(self) -> int:
        """END_TRANSACTION's ``commitOrRollback`` for this state."""
        return _WIRE[self]


_WIRE = {
    LocalTransactionState.COMMIT_MESSAGE: SYSFLAG_TRANSACTION_COMMIT_TYPE,
    LocalTransactionState.ROLLBACK_MESSAGE: SYSFLAG_TRANSACTION_ROLLBACK_TYPE,
    LocalTransactionState.UNKNOW: SYSFLAG_TRANSACTION_NOT_TYPE,
}

#: ``commitOrRollback`` values a broker accepts.
END_TRANSACTION_VALUES = frozenset(_WIRE.values())


@attrs.frozen(kw_only=True)
class EndTransactionRequestHeader(Header):
    CODE = RequestCode.END_TRANSACTION

    producer_group: str
    tran_state_table_offset: Long
    commit_log_offset: Long
    commit_or_rollback: int
    msg_id: str
    from_transaction_check: bool | None = None
    transaction_id: str | None = None
    topic: str | None = None
    broker_name: str | None = attrs.field(default=None, metadata={"wire": "bname"})


@attrs.frozen(kw_only=True)
class CheckTransactionStateRequestHeader(Header):
    CODE = RequestCode.CHECK_TRANSACTION_STATE

    tran_state_table_offset: Long
    commit_log_offset: Long
    msg_id: str | None = None
    transaction_id: str | None = None
    offset_msg_id: str | None = None
    topic: str | None = None
    broker_name: str | None = attrs.field(default=None, metadata={"wire": "bname"})
