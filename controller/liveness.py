"""Which brokers a controller node hears from: the per-node broker liveness table.

Rules (reference/rocketmq-controller.md §2.3 "Heartbeat", §2.4; DESIGN §6):
- Not replicated: brokers heartbeat every controller each second and every node keeps its
  own table, so a newly elected leader already knows who is alive. What the leader reads
  from it is stamped into the commands it replicates; apply never reads this table.
- Keyed by (cluster, broker name, broker id). A heartbeat inserts or refreshes an entry:
  last heartbeat time, timeout (10 s unless the heartbeat says otherwise), election
  priority, address and the connection it came on are replaced every time; epoch, max
  offset and confirm offset only move forward: they are replaced iff the epoch is greater,
  or the epoch is equal and the max offset greater (so a broker that truncated keeps
  advertising its old high offset until its epoch changes, as RocketMQ does).
- A broker is inactive once its connection closes (``channel_closed``, at once) or when
  ``now - last > timeout`` at a ``scan``; both remove the entry and return its key, for the
  caller to act on (elect when it was a master). Only the connection an entry was last
  refreshed on counts: a late close of an older connection removes nothing.
- ``alive_ids``/``live_info`` see only entries not yet expired at ``now_s`` (when given),
  so a silent broker stops counting as alive before the next scan removes it.
- A poll (GetReplicaInfo naming the broker's id) proves the broker alive as well as a
  heartbeat does: ``touch`` refreshes the time of an entry the table has, nothing else
  (its offsets come only with heartbeats). The broker's lease argument needs it (README,
  "the lease"): the leader that answered a poll sent at ``s`` takes that broker for dead
  no earlier than ``s`` + its timeout, whatever happened to its heartbeats.
- Expiry is event-driven: ``next_expiry_s`` is the earliest moment an entry can expire,
  so the caller sleeps until then rather than scanning on a fixed 5 s period.
- ``StallGuard``: a controller whose own event loop did not run for a while (CPU
  starvation, a pause) has unread heartbeats in its sockets; it must not take that
  silence for the brokers'. After a wake-up later than ``tolerance_s`` past its target,
  silence-based decisions wait ``settle_s`` (the readers drain the backlog meanwhile).
- A broker's HA address (``host:haPort``, DESIGN §6 "beyond RocketMQ": a slave learns its
  new master's from the controller, never from a 30 s NameServer round) is heartbeat data
  like the offsets: kept on the entry (a heartbeat without one keeps the last one) and
  gone with it. Only a live master's HA address is worth handing out.
- Pure: time comes in as ``now_s``.
"""

from __future__ import annotations

import attrs

from controller.election import DEFAULT_ELECTION_PRIORITY, LiveInfo

#: RocketMQ's default broker heartbeat timeout (controllerHeartBeatTimeoutMills).
DEFAULT_HEARTBEAT_TIMEOUT_S = 10.0


@attrs.frozen(order=True)
class BrokerKey:
    cluster: str
    broker_name: str
    broker_id: int

    def __str__(self) -> str:
        return f"{self.broker_name}-{self.broker_id} ({self.cluster})"


@attrs.frozen(kw_only=True)
class BrokerLive:
    """One alive broker, as its last heartbeat described it."""

    key: BrokerKey
    address: str
    last_heartbeat_s: float
    timeout_s: float
    epoch: int = -1
    max_offset: int = -1
    confirm_offset: int = -1
    election_priority: int = DEFAULT_ELECTION_PRIORITY
    #: The connection the last heartbeat came on (None: not over a connection).
    channel_id: int | None = None
    ha_address: str | None = None

    def expired(self, now_s: float) -> bool:
        return now_s - self.last_heartbeat_s > self.timeout_s

    def live_info(self) -> LiveInfo:
        return LiveInfo(
            epoch=self.epoch,
            max_offset=self.max_offset,
            confirm_offset=self.confirm_offset,
            election_priority=self.election_priority,
        )


@attrs.define
class LivenessTable:
    """The brokers this controller node hears from."""

    _entries: dict[BrokerKey, BrokerLive] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self._entries)

    def heartbeat(
        self,
        key: BrokerKey,
        *,
        address: str,
        now_s: float,
        timeout_s: float | None = None,
        epoch: int | None = None,
        max_offset: int | None = None,
        confirm_offset: int | None = None,
        election_priority: int | None = None,
        channel_id: int | None = None,
        ha_address: str | None = None,
    ) -> bool:
        """Record a heartbeat; True when the broker was not in the table before."""
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"heartbeat timeout must be positive, got {timeout_s}")
        prev = self._entries.get(key)
        new_epoch = -1 if epoch is None else epoch
        new_max = -1 if max_offset is None else max_offset
        new_confirm = -1 if confirm_offset is None else confirm_offset
        if prev is not None and not (
            new_epoch > prev.epoch or (new_epoch == prev.epoch and new_max > prev.max_offset)
        ):
            new_epoch, new_max, new_confirm = prev.epoch, prev.max_offset, prev.confirm_offset
        self._entries[key] = BrokerLive(
            key=key,
            address=address,
            last_heartbeat_s=now_s,
            timeout_s=DEFAULT_HEARTBEAT_TIMEOUT_S if timeout_s is None else timeout_s,
            epoch=new_epoch,
            max_offset=new_max,
            confirm_offset=new_confirm,
            election_priority=(
                DEFAULT_ELECTION_PRIORITY if election_priority is None else election_priority
            ),
            channel_id=channel_id,
            ha_address=ha_address or (prev.ha_address if prev is not None else None),
        )
        return prev is None

    def set_ha_address(self, broker_name: str, broker_id: int, ha_address: str) -> bool:
        """Record an HA address advertised outside a heartbeat (RegisterBroker); False
        when the broker is not in the table (its next heartbeat brings it anyway)."""
        found = False
        for key, entry in self._entries.items():
            if key.broker_name == broker_name and key.broker_id == broker_id and ha_address:
                self._entries[key] = attrs.evolve(entry, ha_address=ha_address)
                found = True
        return found

    def ha_address(
        self, broker_name: str, broker_id: int | None, *, now_s: float | None = None
    ) -> str | None:
        """The HA address alive broker ``broker_id`` of ``broker_name`` advertised."""
        for entry in self.members(broker_name, now_s=now_s):
            if entry.key.broker_id == broker_id:
                return entry.ha_address
        return None

    def touch(self, broker_name: str, broker_id: int, now_s: float) -> bool:
        """Refresh the heartbeat time of a broker the table holds (a poll from it);
        False when it holds none (its next heartbeat brings it)."""
        found = False
        for key, entry in self._entries.items():
            if key.broker_name == broker_name and key.broker_id == broker_id:
                if now_s > entry.last_heartbeat_s:
                    self._entries[key] = attrs.evolve(entry, last_heartbeat_s=now_s)
                found = True
        return found

    def next_expiry_s(self) -> float | None:
        """The earliest moment an entry can expire (None: the table is empty)."""
        return min((e.last_heartbeat_s + e.timeout_s for e in self._entries.values()), default=None)

    def max_timeout_s(self, default_s: float) -> float:
        """The longest heartbeat timeout any broker advertised (``default_s`` if none)."""
        return max((e.timeout_s for e in self._entries.values()), default=default_s)

    def channel_closed(self, channel_id: int) -> list[BrokerKey]:
        """The connection ``channel_id`` closed: remove (and return) the brokers on it."""
        gone = sorted(k for k, e in self._entries.items() if e.channel_id == channel_id)
        for key in gone:
            del self._entries[key]
        return gone

    def scan(self, now_s: float) -> list[BrokerKey]:
        """Remove (and return) every broker silent for longer than its timeout."""
        gone = sorted(k for k, e in self._entries.items() if e.expired(now_s))
        for key in gone:
            del self._entries[key]
        return gone

    def get(self, key: BrokerKey) -> BrokerLive | None:
        return self._entries.get(key)

    def members(self, broker_name: str, *, now_s: float | None = None) -> list[BrokerLive]:
        """The alive brokers of ``broker_name`` by id (not expired at ``now_s`` when given)."""
        return sorted(
            (
                e
                for k, e in self._entries.items()
                if k.broker_name == broker_name and (now_s is None or not e.expired(now_s))
            ),
            key=lambda e: e.key.broker_id,
        )

    def alive_ids(self, broker_name: str, *, now_s: float | None = None) -> frozenset[int]:
        return frozenset(e.key.broker_id for e in self.members(broker_name, now_s=now_s))

    def live_info(self, broker_name: str, *, now_s: float | None = None) -> dict[int, LiveInfo]:
        """Alive broker id → what its heartbeat said: what ElectMaster is stamped with."""
        return {e.key.broker_id: e.live_info() for e in self.members(broker_name, now_s=now_s)}

    def entries(self) -> list[BrokerLive]:
        return sorted(self._entries.values(), key=lambda e: e.key)


@attrs.define
class StallGuard:
    """Whether silence-based decisions may be taken now, given this node's own stalls."""

    tolerance_s: float
    settle_s: float
    _settle_until_s: float = -1.0

    def woke(self, target_s: float, now_s: float) -> None:
        """A timer meant for ``target_s`` fired at ``now_s``."""
        if now_s - target_s > self.tolerance_s:
            self._settle_until_s = max(self._settle_until_s, now_s + self.settle_s)

    def allows(self, now_s: float) -> bool:
        return now_s >= self._settle_until_s

    def settled_at_s(self) -> float:
        """When the last stall's settling ends (in the past when none is pending)."""
        return self._settle_until_s
