"""Election policy: which replica becomes master (RocketMQ's DefaultElectPolicy).

Rules (reference/rocketmq-controller.md §3):
- Try the SyncStateSet first; only if nothing there is electable, and only when unclean
  election is enabled, try every registered replica.
- In a pool, only alive replicas count. A live old master wins unless another replica is
  designated (so a stale "master inactive" event never causes a spurious failover).
- A designated replica is taken only if it is in the pool; there is no fallback.
- Otherwise rank by (epoch desc, max offset desc, election priority asc, broker id asc).
  Offsets are compared as Python ints (RocketMQ casts a long difference to int and can
  invert the order for gaps over 2 GiB); the id breaks ties so the choice is deterministic
  on every replica of the controller.
- After a group-wide outage (power loss of every replica) the members come back one by
  one, each with what it fsynced: electing the first one back can cut what a later one
  holds. ``members_to_await`` names the SyncStateSet members (the lost master aside) that are
  not alive; ``OutageHold`` keeps an election for a group waiting until none is away or
  ``wait_s`` passed since it first waited (bounded: availability over the longer log).
  A plain master failure (its slaves alive) never waits.
- Pure: time comes in as ``now_s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

#: RocketMQ's default ``brokerElectionPriority`` (Integer.MAX_VALUE; lower is preferred).
DEFAULT_ELECTION_PRIORITY = 2**31 - 1


@attrs.frozen(kw_only=True)
class LiveInfo:
    """What a broker's last heartbeat said (only alive brokers have one)."""

    epoch: int = -1
    max_offset: int = -1
    confirm_offset: int = -1
    election_priority: int = DEFAULT_ELECTION_PRIORITY


def _rank(broker_id: int, live: Mapping[int, LiveInfo]) -> tuple[int, int, int, int]:
    info = live[broker_id]
    return (-info.epoch, -info.max_offset, info.election_priority, broker_id)


def _elect_in(
    pool: Iterable[int],
    *,
    old_master: int | None,
    preferred: int | None,
    live: Mapping[int, LiveInfo],
) -> int | None:
    alive = sorted(b for b in pool if b in live)
    if not alive:
        return None
    if old_master is not None and old_master in alive and preferred in (None, old_master):
        return old_master
    if preferred is not None:
        return preferred if preferred in alive else None
    return min(alive, key=lambda b: _rank(b, live))


def members_to_await(
    *,
    sync_state_set: Iterable[int],
    all_replicas: Iterable[int],
    master: int | None,
    live: Mapping[int, LiveInfo],
    unclean: bool,
) -> frozenset[int]:
    """SyncStateSet members, the current (lost) master aside, that are not alive: what an
    election may wait for. None when the master is alive (it stays) or when nobody alive
    could win anyway (the election fails at once and records that)."""
    if master is not None and master in live:
        return frozenset()
    pool = list(sync_state_set)
    if (
        elect(
            sync_state_set=pool,
            all_replicas=all_replicas,
            old_master=None,
            preferred=None,
            live=live,
            unclean=unclean,
        )
        is None
    ):
        return frozenset()
    return frozenset(b for b in pool if b != master and b not in live)


@attrs.define
class OutageHold:
    """When each group began waiting for SyncStateSet members to come back."""

    wait_s: float
    _since_s: dict[str, float] = attrs.field(init=False, factory=dict)

    def holds(self, group: str, away: frozenset[int], now_s: float) -> bool:
        """True while ``group`` should not elect yet: members are ``away`` and the wait
        that began the first time this was asked has not run out."""
        if not away or self.wait_s <= 0:
            self._since_s.pop(group, None)
            return False
        since = self._since_s.setdefault(group, now_s)
        return now_s < since + self.wait_s

    def waited_s(self, group: str, now_s: float) -> float:
        """How long ``group`` has waited so far (0 when it is not waiting)."""
        since = self._since_s.get(group)
        return 0.0 if since is None else now_s - since

    def release(self, group: str) -> None:
        """The group elected (or needs no election): the next outage waits afresh."""
        self._since_s.pop(group, None)


def elect(
    *,
    sync_state_set: Iterable[int],
    all_replicas: Iterable[int],
    old_master: int | None,
    preferred: int | None,
    live: Mapping[int, LiveInfo],
    unclean: bool,
) -> int | None:
    """The new master's broker id, or None when no replica may take over."""
    chosen = _elect_in(sync_state_set, old_master=old_master, preferred=preferred, live=live)
    if chosen is None and unclean:
        chosen = _elect_in(all_replicas, old_master=old_master, preferred=preferred, live=live)
    return chosen
