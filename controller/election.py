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
- Pure.
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
