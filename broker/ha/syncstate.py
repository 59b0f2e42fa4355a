"""The master's replication bookkeeping: slave progress, the SyncStateSet, confirmOffset.

Rules (reference/rocketmq-controller.md §4.6–4.7, DESIGN.md §5):
- Pure: no trio, sockets, files or clocks. Time comes in as ``now_s``, the master's max
  offset as ``master_max``; every event returns a list of actions for the I/O shell.
- The SyncStateSet always holds the master. A slave joins when its ack reaches both the
  confirm offset and the start of the master's current epoch; it leaves at once when its
  connection drops, and at the periodic ``check`` when it has not been caught up for
  ``max_time_slave_not_catchup_s``. A member that never reported is judged from ``since_s``
  (when this mastership began), so a new master gives its members that long to connect.
- Static mode applies a change at once (and bumps the set's epoch). Controller mode emits
  a proposal and applies only what ``apply_confirmed`` brings (a newer epoch). Until then
  every member of every proposal sent since the last confirmation counts as in the set
  (``in_flight``): an expansion the controller committed but we never heard of must not
  let a write be acknowledged without the new member (apache/rocketmq#5663).
- confirm_offset = min ack over the (union) set, capped by the master's max; master-only
  set, or count mode → master max. Not recomputed while a member (≠ master) has no live
  connection or no ack yet (apache/rocketmq#6662). It never goes down.
- ``replicated_offset``: the highest end offset a sync write may be acknowledged at. All-ack
  mode: every (union) member acked it. Count mode: ``in_sync_replicas - 1`` live slaves
  acked it. In static mode a write always needs at least one slave (SYNC_MASTER); in
  controller mode a master-only set needs none (the controller agreed it is alone).
- An illegal event (unknown slave, ack going back or past the master) raises ValueError
  and leaves the state unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from protocol.slots import slot_builder

#: ``replicated_offset`` when no slave ack is needed.
UNBOUNDED = 2**63 - 1


@attrs.frozen(kw_only=True)
class ConfirmOffsetChanged:
    """The confirm offset moved up; push it to the store."""

    offset: int


@attrs.frozen(kw_only=True)
class SyncStateSetChanged:
    """A new SyncStateSet took effect."""

    members: frozenset[int]
    epoch: int


@attrs.frozen(kw_only=True)
class SyncStateSetProposed:
    """Controller mode: send AlterSyncStateSet(``members``) against the set's ``epoch``."""

    members: frozenset[int]
    epoch: int


Action = ConfirmOffsetChanged | SyncStateSetChanged | SyncStateSetProposed


@attrs.frozen(kw_only=True)
class SlaveProgress:
    broker_id: int
    live: bool
    #: Highest ack on the live connection; -1 before its first ack or when not live.
    ack_offset: int = -1
    #: Last time the slave had everything the master had (kept across reconnects).
    caught_up_s: float | None = None
    learner: bool = False
    #: The connection dropped (not merely reset by a new epoch): out of the set at once.
    disconnected: bool = False


#: ``SlaveProgress(...)`` with every field positional, without the keyword ``__init__``.
_make_progress = slot_builder(SlaveProgress)


@attrs.define
class SyncState:
    """One mastership's view of its slaves. Build it with ``SyncState.create``."""

    master_id: int
    controller_mode: bool
    all_ack: bool
    in_sync_replicas: int
    max_time_slave_not_catchup_s: float
    members: frozenset[int]
    epoch: int
    confirm_offset: int
    #: Start offset of the master's current (last) epoch.
    epoch_start_offset: int
    #: When this mastership began; the caught-up time of members that never reported.
    since_s: float
    #: Controller mode: the set we want and asked for, until confirmed.
    proposal: frozenset[int] | None = None
    #: Controller mode: members of every proposal sent since the last confirmation.
    in_flight: frozenset[int] = frozenset()
    slaves: dict[int, SlaveProgress] = attrs.field(factory=dict)

    @classmethod
    def create(
        cls,
        *,
        master_id: int,
        now_s: float,
        controller_mode: bool = False,
        all_ack: bool = True,
        in_sync_replicas: int = 2,
        max_time_slave_not_catchup_s: float = 15.0,
        members: Iterable[int] = (),
        epoch: int = 0,
        confirm_offset: int = 0,
        epoch_start_offset: int = 0,
    ) -> SyncState:
        return cls(
            master_id=master_id,
            controller_mode=controller_mode,
            all_ack=all_ack,
            in_sync_replicas=in_sync_replicas,
            max_time_slave_not_catchup_s=max_time_slave_not_catchup_s,
            members=frozenset(members) | {master_id},
            epoch=epoch,
            confirm_offset=confirm_offset,
            epoch_start_offset=epoch_start_offset,
            since_s=now_s,
        )

    # --- queries ---------------------------------------------------------------------

    @property
    def effective(self) -> frozenset[int]:
        """The set acks are counted over: confirmed ∪ everything in flight (#5663)."""
        return self.members | self.in_flight

    @property
    def synchronizing(self) -> bool:
        return self.proposal is not None

    def in_sync_count(self) -> int:
        """RocketMQ ``inSyncReplicasNums``: the larger of the confirmed and proposed sets."""
        if self.proposal is None:
            return len(self.members)
        return max(len(self.members), len(self.proposal))

    def can_accept_write(self, min_in_sync_replicas: int) -> bool:
        """False → refuse the write before storing it (IN_SYNC_REPLICAS_NOT_ENOUGH)."""
        return self.in_sync_count() >= min_in_sync_replicas

    def needed_acks(self, all_ack: bool, in_sync_replicas: int) -> int:
        """Replicas (master included) that must hold a write before it is acknowledged."""
        return len(self.effective) if all_ack else in_sync_replicas

    def has_live_slave(self) -> bool:
        return any([s.live for s in self.slaves.values()])  # a list: no generator frame

    def live_acks(self) -> list[int]:
        return [s.ack_offset for s in self.slaves.values() if s.live and s.ack_offset >= 0]

    def replicated_offset(self) -> int:
        """Writes ending at or below this are replicated as the policy requires; -1: none."""
        if self.all_ack:
            low = self._lowest_member_ack()
            if low is None:
                return -1
            if low >= 0:
                return low
            required = 0 if self.controller_mode else 1
        else:
            required = self.in_sync_replicas - 1
            if not self.controller_mode:
                required = max(required, 1)
        if required <= 0:
            return UNBOUNDED
        acks = sorted(self.live_acks(), reverse=True)
        return acks[required - 1] if len(acks) >= required else -1

    def satisfied(self, end_offset: int) -> bool:
        return end_offset <= self.replicated_offset()

    def _lowest_member_ack(self) -> int | None:
        """The lowest live ack of the (union) members other than the master; None when one
        of them has none, -1 when there is none. Runs per ack and per sync write: a loop,
        not the set algebra of ``effective`` (µs a call)."""
        members = self.members if not self.in_flight else self.members | self.in_flight
        master_id, slaves = self.master_id, self.slaves
        low = -1
        for broker_id in members:
            if broker_id == master_id:
                continue
            s = slaves.get(broker_id)
            if s is None or not s.live or s.ack_offset < 0:
                return None
            if low < 0 or s.ack_offset < low:
                low = s.ack_offset
        return low

    # --- events ----------------------------------------------------------------------

    def slave_connected(self, broker_id: int, *, learner: bool = False) -> list[Action]:
        """A slave handshook. Its caught-up time survives from an earlier connection."""
        if broker_id == self.master_id:
            raise ValueError(f"slave {broker_id} has the master's broker id")
        old = self.slaves.get(broker_id)
        if old is not None and old.live:
            raise ValueError(f"slave {broker_id} is connected already")
        self.slaves[broker_id] = SlaveProgress(
            broker_id=broker_id,
            live=True,
            caught_up_s=None if old is None else old.caught_up_s,
            learner=learner,
        )
        return []

    def slave_acked(
        self,
        broker_id: int,
        ack_offset: int,
        now_s: float,
        *,
        master_max: int,
        sent_master_max: int = -1,
        sent_at_s: float | None = None,
    ) -> list[Action]:
        """A slave reported its max offset. ``sent_master_max``/``sent_at_s``: the master's
        max offset when the last data batch was sent to it, and when (RocketMQ's
        lastMasterMaxOffset / lastTransferTime): acking that much means it was caught up
        then, even if more was written since."""
        s = self.slaves.get(broker_id)
        if s is None or not s.live:
            raise ValueError(f"ack from slave {broker_id}, which is not connected")
        if ack_offset < s.ack_offset:
            raise ValueError(f"slave {broker_id} ack went back from {s.ack_offset} to {ack_offset}")
        if ack_offset > master_max:
            raise ValueError(
                f"slave {broker_id} acked {ack_offset}, past the master's {master_max}"
            )
        caught = s.caught_up_s
        if not s.learner:
            t: float | None = None
            if ack_offset >= master_max:
                t = now_s
            elif sent_at_s is not None and ack_offset >= sent_master_max:
                t = sent_at_s
            if t is not None:
                caught = t if caught is None else max(caught, t)
        # Built slot by slot: attrs.evolve costs µs, the keyword __init__ ~1, per ack.
        self.slaves[broker_id] = _make_progress(
            broker_id, s.live, ack_offset, caught, s.learner, s.disconnected
        )
        desired = self.proposal if self.proposal is not None else self.members
        if (
            not s.learner
            and broker_id not in desired
            and ack_offset >= self.confirm_offset
            and ack_offset >= self.epoch_start_offset
        ):
            return [*self._change(desired | {broker_id}, master_max), *self._recompute(master_max)]
        return self._recompute(master_max)

    def slave_disconnected(self, broker_id: int, *, master_max: int) -> list[Action]:
        """A slave's connection dropped: out of the set at once."""
        s = self.slaves.get(broker_id)
        if s is None or not s.live:
            raise ValueError(f"slave {broker_id} is not connected")
        self.slaves[broker_id] = attrs.evolve(s, live=False, ack_offset=-1, disconnected=True)
        actions: list[Action] = []
        desired = self._desired()
        if broker_id in desired:
            actions += self._change(desired - {broker_id}, master_max)
        actions += self._recompute(master_max)
        return actions

    def connections_reset(self, *, epoch_start_offset: int, now_s: float) -> list[Action]:
        """The master began a new epoch and dropped every connection to re-handshake
        (apache/rocketmq#9689). Members stay; their acks are gone until they reconnect, so
        the confirm offset holds still meanwhile (#6662)."""
        if epoch_start_offset < self.epoch_start_offset:
            raise ValueError(
                f"new epoch starts at {epoch_start_offset}, before {self.epoch_start_offset}"
            )
        for broker_id, s in self.slaves.items():
            self.slaves[broker_id] = attrs.evolve(s, live=False, ack_offset=-1, disconnected=False)
        self.epoch_start_offset = epoch_start_offset
        self.since_s = now_s
        return []

    def master_advanced(self, master_max: int) -> list[Action]:
        """New data on the master (matters when the confirm offset follows the master)."""
        return self._recompute(master_max)

    def check(self, now_s: float, *, master_max: int) -> list[Action]:
        """Periodic: drop members not caught up lately; re-send a pending proposal."""
        limit = now_s - self.max_time_slave_not_catchup_s
        desired = self._desired()
        keep = frozenset(m for m in desired if m == self.master_id or self._caught_up(m) >= limit)
        actions: list[Action] = []
        if keep != desired:
            actions += self._change(keep, master_max)
        elif self.proposal is not None:
            actions.append(SyncStateSetProposed(members=self.proposal, epoch=self.epoch))
        actions += self._recompute(master_max)
        return actions

    def apply_confirmed(
        self, members: Iterable[int], epoch: int, *, master_max: int
    ) -> list[Action]:
        """Controller mode: the controller holds ``members`` at ``epoch``. Older or equal
        epochs are ignored. Proposals made against an older epoch are dead (the controller
        checks the epoch), so nothing stays in flight; members whose connection dropped
        meanwhile are proposed out at once."""
        new = frozenset(members)
        if not self.controller_mode:
            raise ValueError("static mode applies its own SyncStateSet changes")
        if self.master_id not in new:
            raise ValueError(f"SyncStateSet {sorted(new)} lacks the master {self.master_id}")
        if epoch <= self.epoch:
            return []
        self.members, self.epoch = new, epoch
        self.proposal, self.in_flight = None, frozenset()
        actions: list[Action] = [SyncStateSetChanged(members=new, epoch=epoch)]
        gone = frozenset(m for m in new if (s := self.slaves.get(m)) is not None and s.disconnected)
        if gone:
            actions += self._change(new - gone, master_max)
        return [*actions, *self._recompute(master_max)]

    def proposal_rejected(self, *, master_max: int) -> list[Action]:
        """Controller mode: the controller definitely refused what we sent (not a timeout:
        then the outcome is unknown). Only the proposal we still want stays counted; it is
        re-sent at the next ``check``."""
        if not self.controller_mode:
            raise ValueError("static mode has no proposals")
        self.in_flight = self.proposal if self.proposal is not None else frozenset()
        return self._recompute(master_max)

    # --- internals -------------------------------------------------------------------

    def _desired(self) -> frozenset[int]:
        return self.proposal if self.proposal is not None else self.members

    def _caught_up(self, broker_id: int) -> float:
        # Since this mastership began, every member had the full grace period to connect.
        s = self.slaves.get(broker_id)
        if s is None or s.caught_up_s is None:
            return self.since_s
        return max(s.caught_up_s, self.since_s)

    def _change(self, desired: frozenset[int], master_max: int) -> list[Action]:
        assert self.master_id in desired, desired
        if not self.controller_mode:
            if desired == self.members:
                return []
            self.members = desired
            self.epoch += 1
            change = SyncStateSetChanged(members=desired, epoch=self.epoch)
            return [change, *self._recompute(master_max)]
        if desired == self._desired():
            return []
        # Proposing the confirmed set again still needs an answer: an earlier proposal may
        # have been committed, and only a confirmation clears the in-flight union.
        self.proposal = desired
        self.in_flight |= desired
        proposal = SyncStateSetProposed(members=desired, epoch=self.epoch)
        return [proposal, *self._recompute(master_max)]

    def master_advanced_to(self, master_max: int) -> int | None:
        """``master_advanced`` as the new confirm offset (None: it holds still), without
        an action list: the put path's form, once per send on a master alone."""
        # A master alone (the common single-master case) and an unchanged offset return
        # before any set is built.
        if master_max <= self.confirm_offset:
            return None
        value = master_max
        if self.all_ack:
            low = self._lowest_member_ack()
            if low is None:
                return None  # a member has no live connection: hold still (#6662)
            if 0 <= low < master_max:
                value = low
        if value <= self.confirm_offset:
            return None
        self.confirm_offset = value
        return value

    def _recompute(self, master_max: int) -> list[Action]:
        value = self.master_advanced_to(master_max)
        return [] if value is None else [ConfirmOffsetChanged(offset=value)]
