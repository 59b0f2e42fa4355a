"""Consumer offsets of clustering consumer groups (ConsumerOffsetManager.java, wire.md §4.6).

Rules:
- Pure machine: ``(topic, group)`` → queue id → offset, where an offset is the next message
  to consume. RocketMQ's key ``topic@group`` is used on the wire and in admin output; topic
  and group names cannot contain ``@``, so the two forms map one to one.
- A negative commit is ignored (ali-ons commits -1 for queues it never consumed, wire.md
  §5.3 #8); a commit below the stored offset is accepted, as Java does (a consumer that
  restarts from an older offset re-consumes). A negative queue id is illegal
  (``InvalidParameter``) and changes nothing.
- ``clamp_to_queue_ends`` lowers every offset past the end of its queue to that end: a
  store that came back shorter (power loss of unsynced data, a slave's truncation, a new
  master after failover) must not keep offsets that skip the next messages stored there.
  Only raised offsets are wrong; lower ones only re-deliver, so nothing is raised.
- ``dirty`` is set by every change and cleared by ``save``: the periodic persist task saves
  only when it is set.
- File I/O only in ``load`` / ``save`` (versioned CBOR via ``broker.store.metadata``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from broker.store import metadata
from protocol.errors import InvalidParameter, MalformedBody, StorageError

#: ConsumerOffsetManager.TOPIC_GROUP_SEPARATOR.
TOPIC_GROUP_SEPARATOR = "@"

FILE_KIND = "broker.consumer-offsets"
FILE_VERSION = 1


def offset_key(topic: str, group: str) -> str:
    """RocketMQ's ``topic@group`` key."""
    return f"{topic}{TOPIC_GROUP_SEPARATOR}{group}"


def _check_queue_id(queue_id: int) -> None:
    if queue_id < 0:
        raise InvalidParameter(f"queueId must be >= 0, got {queue_id}")


@attrs.frozen(kw_only=True)
class ClampedOffset:
    """One committed offset lowered to its queue's end."""

    topic: str
    group: str
    queue_id: int
    old: int
    new: int


@attrs.define
class ConsumerOffsetManager:
    """Committed offsets per (topic, group, queue id), with a dirty flag for persistence."""

    dirty: bool = False
    _table: dict[tuple[str, str], dict[int, int]] = attrs.field(init=False, factory=dict)

    # --- queries ------------------------------------------------------------------------

    def query(self, topic: str, group: str, queue_id: int) -> int | None:
        """The committed offset, or ``None`` when the group never committed one."""
        return self._table.get((topic, group), {}).get(queue_id)

    def offsets(self, topic: str, group: str) -> dict[int, int]:
        """Queue id → offset of ``group`` on ``topic`` (a copy; empty when none)."""
        return dict(self._table.get((topic, group), {}))

    def offsets_of_group(self, group: str) -> dict[str, dict[int, int]]:
        """Topic → queue id → offset for every topic ``group`` committed on."""
        return {t: dict(q) for (t, g), q in sorted(self._table.items()) if g == group}

    def topics_of_group(self, group: str) -> list[str]:
        """Topics ``group`` has offsets on, sorted (whichTopicByConsumer)."""
        return sorted(t for (t, g) in self._table if g == group)

    def groups_of_topic(self, topic: str) -> list[str]:
        """Groups with offsets on ``topic``, sorted (whichGroupByTopic)."""
        return sorted(g for (t, g) in self._table if t == topic)

    def offset_table(self) -> dict[str, dict[int, int]]:
        """The whole table keyed ``topic@group`` (GET_ALL_CONSUMER_OFFSET, admin)."""
        return {offset_key(t, g): dict(q) for (t, g), q in sorted(self._table.items())}

    def offset_table_json(self) -> dict[str, Any]:
        """``{"offsetTable": {"topic@group": {"0": 15}}}``: standard JSON, string keys."""
        return {
            "offsetTable": {
                key: {str(qid): off for qid, off in sorted(queues.items())}
                for key, queues in self.offset_table().items()
            }
        }

    # --- changes ------------------------------------------------------------------------

    def commit(self, topic: str, group: str, queue_id: int, offset: int) -> bool:
        """UPDATE_CONSUMER_OFFSET / PULL commitOffset; False when ignored (negative offset)."""
        _check_queue_id(queue_id)
        if offset < 0:
            return False
        queues = self._table.setdefault((topic, group), {})
        if queues.get(queue_id) != offset:
            queues[queue_id] = offset
            self.dirty = True
        return True

    def reset_to(self, topic: str, group: str, offsets: Mapping[int, int]) -> None:
        """Overwrite the given queues' offsets (admin reset); other queues keep theirs.

        Unlike ``commit``, a negative offset is an error: every entry is checked before any
        is applied (``InvalidParameter``).
        """
        for queue_id, offset in offsets.items():
            _check_queue_id(queue_id)
            if offset < 0:
                raise InvalidParameter(f"offset of queue {queue_id} must be >= 0, got {offset}")
        if not offsets:
            return
        self._table.setdefault((topic, group), {}).update(offsets)
        self.dirty = True

    def remove_group(self, group: str) -> bool:
        """Drop every offset of ``group`` (DELETE_SUBSCRIPTIONGROUP with cleanOffset)."""
        return self._remove([key for key in self._table if key[1] == group])

    def remove_topic(self, topic: str) -> bool:
        """Drop every group's offsets on ``topic`` (topic deleted)."""
        return self._remove([key for key in self._table if key[0] == topic])

    def remove(self, topic: str, group: str) -> bool:
        """Drop ``group``'s offsets on ``topic``."""
        return self._remove([(topic, group)] if (topic, group) in self._table else [])

    def retain_queues_below(self, limit: int) -> int:
        """Drop offsets of queue ids ``>= limit`` (no topic has them: a file written before
        queue ids were checked); returns how many were dropped."""
        dropped = 0
        for key in list(self._table):
            queues = self._table[key]
            bad = [q for q in queues if q >= limit]
            for q in bad:
                del queues[q]
            dropped += len(bad)
            if not queues:
                del self._table[key]
        if dropped:
            self.dirty = True
        return dropped

    def clamp_to_queue_ends(
        self, queue_end: Callable[[str, int], int | None]
    ) -> list[ClampedOffset]:
        """Lower each offset above ``queue_end(topic, queue_id)`` (the next offset the queue
        will store; None: a queue the store does not know, left alone) to that end.

        Without it, offset N committed past a queue that came back ending at M < N skips
        messages M..N-1 stored after the restart: acknowledged, never delivered (docs/CHAOS.md
        "Power loss", finding 1). RocketMQ corrects a pull that overflows badly; a committed
        offset is only clamped here. Returns what was lowered, in table order.
        """
        clamped: list[ClampedOffset] = []
        for (topic, group), queues in sorted(self._table.items()):
            for queue_id, offset in sorted(queues.items()):
                end = queue_end(topic, queue_id)
                if end is not None and offset > end:
                    queues[queue_id] = end
                    clamped.append(
                        ClampedOffset(
                            topic=topic, group=group, queue_id=queue_id, old=offset, new=end
                        )
                    )
        if clamped:
            self.dirty = True
        return clamped

    def _remove(self, keys: list[tuple[str, str]]) -> bool:
        for key in keys:
            del self._table[key]
        if keys:
            self.dirty = True
        return bool(keys)

    # --- persistence --------------------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """The CBOR payload: ``{"offsets": [[topic, group, {queueId: offset}], ...]}``."""
        return self.payload_snapshot()()

    def payload_snapshot(self) -> Callable[[], dict[str, Any]]:
        """The table as it is now, as a function that builds ``to_payload``'s value later
        (in a worker thread)."""
        table = {key: dict(queues) for key, queues in self._table.items()}

        def payload() -> dict[str, Any]:
            return {
                "offsets": [[t, g, dict(sorted(q.items()))] for (t, g), q in sorted(table.items())]
            }

        return payload

    def restore(self, payload: Any) -> None:
        """Replace the table with a payload from ``to_payload``; checked whole first."""
        self._table = _parse_payload(payload)

    def save(self, path: Path) -> None:
        """Write the table atomically; clears ``dirty``."""
        metadata.save_document(
            path, kind=FILE_KIND, version=FILE_VERSION, payload=self.to_payload()
        )
        self.dirty = False

    def load(self, path: Path) -> bool:
        """Replace the table with the one saved at ``path``; False when there is no file.

        A file that cannot be decoded raises ``StorageError`` naming it, table unchanged.
        """
        try:
            document = metadata.load_document(path, kind=FILE_KIND, max_version=FILE_VERSION)
            if document is None:
                return False
            self.restore(document[1])
        except MalformedBody as exc:
            raise StorageError(f"cannot load consumer offsets from {path}: {exc}") from exc
        self.dirty = False
        return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_payload(payload: Any) -> dict[tuple[str, str], dict[int, int]]:
    if not isinstance(payload, dict) or not isinstance(payload.get("offsets"), list):
        raise MalformedBody("offsets payload: expected {offsets: [[topic, group, {...}], ...]}")
    table: dict[tuple[str, str], dict[int, int]] = {}
    for entry in payload["offsets"]:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], str)
            and isinstance(entry[2], dict)
        ):
            raise MalformedBody(f"offsets payload: bad entry {entry!r}")
        queues = entry[2]
        if not all(_is_int(k) and k >= 0 and _is_int(v) and v >= 0 for k, v in queues.items()):
            raise MalformedBody(f"offsets payload: bad offsets of {entry[0]}@{entry[1]}")
        table[(entry[0], entry[1])] = dict(queues)
    return table
