"""Queue locks of orderly consumers (RebalanceLockManager.java, wire.md §2.12).

Rules:
- Pure machine: group → message queue → (client id, last renewal ms); time is ``now_ms``.
- A lock is held by one client id. It expires when it has not been renewed for more than
  ``lock_max_live_ms`` (60 s, rocketmq.broker.rebalance.lockMaxLiveTime); clients renew every
  20 s by locking again.
- ``lock_batch`` gives the caller every queue that is free, expired, or already its own
  (renewing those); a queue held by another live client stays with that client.
- ``unlock_batch`` releases only the caller's own locks; others' locks are left alone.
- ``is_locked`` is a query: it does not renew (Java's private isLocked does, as part of
  tryLock; renewal here happens only through ``lock_batch`` / ``try_lock``).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from protocol.route import MessageQueue

#: REBALANCE_LOCK_MAX_LIVE_TIME.
LOCK_MAX_LIVE_MS = 60_000


@attrs.frozen(kw_only=True)
class LockEntry:
    """Who holds a queue, and when they last renewed."""

    client_id: str
    last_update_ms: int

    def is_expired(self, now_ms: int, max_live_ms: int) -> bool:
        """True when not renewed for more than ``max_live_ms``."""
        return now_ms - self.last_update_ms > max_live_ms


@attrs.define
class RebalanceLockManager:
    """Locks on message queues per consumer group."""

    lock_max_live_ms: int = LOCK_MAX_LIVE_MS
    _table: dict[str, dict[MessageQueue, LockEntry]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        assert self.lock_max_live_ms > 0, "lock_max_live_ms must be positive"

    # --- queries ------------------------------------------------------------------------

    def is_locked(self, group: str, mq: MessageQueue, client_id: str, now_ms: int) -> bool:
        """True when ``client_id`` holds a live lock on ``mq`` in ``group``."""
        entry = self._table.get(group, {}).get(mq)
        return (
            entry is not None
            and entry.client_id == client_id
            and not entry.is_expired(now_ms, self.lock_max_live_ms)
        )

    def owner(self, group: str, mq: MessageQueue, now_ms: int) -> str | None:
        """The client holding a live lock on ``mq``, or ``None``."""
        entry = self._table.get(group, {}).get(mq)
        if entry is None or entry.is_expired(now_ms, self.lock_max_live_ms):
            return None
        return entry.client_id

    def is_lock_all_expired(self, group: str, now_ms: int) -> bool:
        """True when no lock of ``group`` is live (isLockAllExpired)."""
        entries = self._table.get(group, {}).values()
        return all(e.is_expired(now_ms, self.lock_max_live_ms) for e in entries)

    def entries(self, group: str) -> dict[MessageQueue, LockEntry]:
        """Every lock entry of ``group``, live or expired (a copy)."""
        return dict(self._table.get(group, {}))

    def groups(self) -> list[str]:
        """Groups with lock entries, sorted."""
        return sorted(self._table)

    # --- changes ------------------------------------------------------------------------

    def try_lock(self, group: str, mq: MessageQueue, client_id: str, now_ms: int) -> bool:
        """Lock or renew one queue; False when another client holds it."""
        return bool(self.lock_batch(group, [mq], client_id, now_ms))

    def lock_batch(
        self, group: str, mqs: Iterable[MessageQueue], client_id: str, now_ms: int
    ) -> frozenset[MessageQueue]:
        """LOCK_BATCH_MQ: the queues of ``mqs`` now locked by ``client_id`` (tryLockBatch)."""
        assert client_id, "client_id must be non-empty"
        locked: set[MessageQueue] = set()
        entries = self._table.get(group, {})
        for mq in mqs:
            entry = entries.get(mq)
            if (
                entry is None
                or entry.client_id == client_id
                or entry.is_expired(now_ms, self.lock_max_live_ms)
            ):
                entries[mq] = LockEntry(client_id=client_id, last_update_ms=now_ms)
                locked.add(mq)
        if entries:
            self._table[group] = entries
        return frozenset(locked)

    def unlock_batch(
        self, group: str, mqs: Iterable[MessageQueue], client_id: str
    ) -> frozenset[MessageQueue]:
        """UNLOCK_BATCH_MQ: release ``client_id``'s locks among ``mqs``; returns those released.

        An expired lock of the caller is released too; locks of others are left alone.
        """
        entries = self._table.get(group)
        if entries is None:
            return frozenset()
        released = {mq for mq in mqs if mq in entries and entries[mq].client_id == client_id}
        for mq in released:
            del entries[mq]
        if not entries:
            del self._table[group]
        return frozenset(released)

    def remove_expired(self, now_ms: int) -> int:
        """Forget expired entries (housekeeping; Java keeps them); returns how many."""
        count = 0
        for group in sorted(self._table):
            entries = self._table[group]
            for mq in [
                q for q, e in entries.items() if e.is_expired(now_ms, self.lock_max_live_ms)
            ]:
                del entries[mq]
                count += 1
            if not entries:
                del self._table[group]
        return count
