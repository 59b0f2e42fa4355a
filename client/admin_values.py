"""What admin calls return: HA status, broker runtime, topic offsets, consumer progress,
offset resets, deleted topics and pull pages; and the readers of the JSON bodies they
are built from.

Rules:
- Pure: frozen attrs values and parsers, no I/O. A body of the wrong shape raises
  ``MalformedBody`` naming what was being read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from client.message import ReceivedMessage
from protocol.errors import MalformedBody
from protocol.message import int_property
from protocol.route import MessageQueue, loads_fastjson

# --- values ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class HAConnection:
    """One slave connection of a master (a row of ``mqadmin haStatus``)."""

    addr: str
    broker_id: int
    #: The HA connection's state: HANDSHAKE, TRANSFER.
    status: str
    ack_offset: int
    #: The master's max CommitLog offset minus the ack.
    diff: int
    transfer_bytes_per_s: int
    in_sync: bool


@attrs.frozen(kw_only=True)
class HAStatus:
    """GET_BROKER_HA_STATUS of one broker: a master's slaves, or a slave's master link."""

    broker_addr: str
    broker_name: str
    broker_id: int
    master: bool
    #: The master's max CommitLog offset (a slave: as its master last said).
    max_offset: int
    in_sync_slave_nums: int
    connections: tuple[HAConnection, ...]
    #: A slave's view of its master link (RocketMQ's haClientRuntimeInfo), else None.
    client: Mapping[str, Any] | None
    #: The whole body, for ``--json``.
    raw: Mapping[str, Any]

    @classmethod
    def from_body(cls, addr: str, body: bytes) -> HAStatus:
        what = f"HA status of {addr}"
        doc = _json_body(body, what)
        rows = doc.get("haConnectionInfo") or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MalformedBody(f"{what}: haConnectionInfo must be a list of objects")
        client = doc.get("haClientRuntimeInfo")
        return cls(
            broker_addr=addr,
            broker_name=str(doc.get("brokerName", "")),
            broker_id=_int_of(doc, "brokerId", what),
            master=bool(doc.get("master")),
            max_offset=_int_of(doc, "masterCommitLogMaxOffset", what),
            in_sync_slave_nums=int(doc.get("inSyncSlaveNums") or 0),
            connections=tuple(
                HAConnection(
                    addr=str(r.get("addr", "")),
                    broker_id=_int_of(r, "brokerId", what),
                    status=str(r.get("status", "")),
                    ack_offset=_int_of(r, "slaveAckOffset", what),
                    diff=_int_of(r, "diff", what),
                    transfer_bytes_per_s=_int_of(r, "transferredByteInSecond", what),
                    in_sync=bool(r.get("inSync")),
                )
                for r in rows
            ),
            client=dict(client) if isinstance(client, dict) else None,
            raw=doc,
        )


@attrs.frozen(kw_only=True)
class BrokerRuntime:
    """One broker of a cluster and its GET_BROKER_RUNTIME_INFO table (None if it did not
    answer; ``error`` then says why)."""

    cluster: str
    broker_name: str
    broker_id: int
    addr: str
    table: Mapping[str, str] | None
    error: str | None = None

    def _get(self, key: str) -> str | None:
        return None if self.table is None else self.table.get(key)

    @property
    def version(self) -> str | None:
        return self._get("brokerVersionDesc")

    @property
    def role(self) -> str | None:
        return self._get("brokerRole")

    @property
    def active(self) -> bool:
        return self._get("brokerActive") == "true"

    def _int(self, key: str) -> int | None:
        return int_property(self._get(key))

    @property
    def in_total_today(self) -> int | None:
        """Messages put today (``msgPutTotalTodayNow``; our broker counts since boot)."""
        return self._int("msgPutTotalTodayNow")

    @property
    def out_total_today(self) -> int | None:
        """Messages read today (``msgGetTotalTodayNow``); None when the broker omits it."""
        return self._int("msgGetTotalTodayNow")


@attrs.frozen(kw_only=True)
class TopicOffset:
    """One queue of a topic: offsets held and the store time of its newest message."""

    queue: MessageQueue
    min_offset: int
    max_offset: int
    #: 0 when the queue never held a message.
    last_update_ms: int


@attrs.frozen(kw_only=True)
class QueueProgress:
    """How far a consumer group got in one queue."""

    queue: MessageQueue
    broker_offset: int
    consumer_offset: int
    #: Store time of the last consumed message (0 = none).
    last_timestamp_ms: int
    #: The client that owns the queue under average allocation, when known.
    client_id: str | None = None

    @property
    def diff(self) -> int:
        """Messages not consumed yet (mqadmin's #Diff)."""
        return self.broker_offset - self.consumer_offset


@attrs.frozen(kw_only=True)
class ConsumerProgress:
    group: str
    queues: tuple[QueueProgress, ...]
    consume_tps: float = 0.0

    @property
    def diff_total(self) -> int:
        return sum(q.diff for q in self.queues)


@attrs.frozen(kw_only=True)
class OffsetReset:
    """One queue's committed offset before (None = none stored) and after a reset."""

    queue: MessageQueue
    old_offset: int | None
    new_offset: int


@attrs.frozen(kw_only=True)
class TopicDeleted:
    """Where a topic was deleted: broker addresses, then NameServers."""

    brokers: tuple[str, ...]
    namesrvs: tuple[str, ...]


@attrs.frozen(kw_only=True)
class PullPage:
    """One PULL answer: Java's PullStatus name, the messages, the queue's offsets."""

    queue: MessageQueue
    status: str
    messages: tuple[ReceivedMessage, ...]
    next_begin_offset: int
    min_offset: int
    max_offset: int


# --- body readers ----------------------------------------------------------------------------


def _json_body(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = loads_fastjson(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedBody(f"{what}: body is not UTF-8") from None
    if not isinstance(obj, dict):
        raise MalformedBody(f"{what}: expected a JSON object")
    return obj


def _int_of(entry: Mapping[str, Any], key: str, what: str) -> int:
    value = entry.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedBody(f"{what}: {key!r} must be an integer, got {value!r}")
    return value


def _offset_entries(body: bytes, what: str) -> list[tuple[MessageQueue, Mapping[str, Any]]]:
    """Our TopicStatsTable / ConsumeStats form: ``{"offsetTable": [{"messageQueue": ...}]}``."""
    table = _json_body(body, what).get("offsetTable") or []
    if not isinstance(table, list):
        raise MalformedBody(
            f"{what}: offsetTable is not a list (a Java broker's MessageQueue-keyed map "
            "is not supported)"
        )
    out: list[tuple[MessageQueue, Mapping[str, Any]]] = []
    for entry in table:
        if not isinstance(entry, dict):
            raise MalformedBody(f"{what}: offsetTable entries must be objects")
        out.append((MessageQueue.from_json(entry.get("messageQueue")), entry))
    return out


def _runtime_table(body: bytes) -> dict[str, str]:
    table = _json_body(body, "broker runtime info").get("table")
    if not isinstance(table, dict):
        raise MalformedBody("broker runtime info: missing 'table' object")
    return {str(k): str(v) for k, v in table.items()}
