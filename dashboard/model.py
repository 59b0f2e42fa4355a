"""What the dashboard shows: one JSON-ready view per poll, a timeline, throughput points.

Rules:
- Pure: every input is a value read by ``sources.py`` (brokers' runtime tables, the
  controller leader's replica info, the controllers' metric samples); time comes in as
  ``now_ms``. Nothing here performs I/O.
- ``Dashboard.update`` takes one poll's ``Observation`` and keeps: the latest view, a
  timeline of what changed between polls (a new controller leader, a new master and its
  epoch, a SyncStateSet change, a broker going silent or coming back), and throughput
  points (messages in and out per second, from the brokers' put / get totals).
- Bounded: ``MAX_TIMELINE`` events and ``MAX_POINTS`` throughput points are kept.
- Each event says what happened in plain words, naming a replica by its broker set, its
  controller-assigned broker id and its address ("broker-a-2 (127.0.0.1:10911) became
  master of broker-a at epoch 3"): the address tells which process it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

MAX_TIMELINE = 200
MAX_POINTS = 300
#: A sample: (metric name, labels) → value, as prometheus' parser yields them.
Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


@attrs.frozen(kw_only=True)
class BrokerRow:
    cluster: str
    broker_name: str
    broker_id: int
    addr: str
    table: Mapping[str, str] | None
    error: str | None = None


@attrs.frozen(kw_only=True)
class ReplicaRow:
    broker_id: int
    address: str
    alive: bool
    in_sync: bool


@attrs.frozen(kw_only=True)
class GroupRow:
    """One broker set as the controller leader describes it."""

    broker_name: str
    master_id: int | None
    master_address: str | None
    master_epoch: int
    sync_state_set_epoch: int
    replicas: tuple[ReplicaRow, ...]


@attrs.frozen(kw_only=True)
class ControllerRow:
    address: str
    node_id: str | None
    is_leader: bool | None
    metrics_address: str | None
    samples: Samples | None
    error: str | None = None


@attrs.frozen(kw_only=True)
class Observation:
    """Everything one poll read."""

    now_ms: int
    namesrv: tuple[str, ...]
    brokers: tuple[BrokerRow, ...] = ()
    groups: tuple[GroupRow, ...] = ()
    controllers: tuple[ControllerRow, ...] = ()
    topics: tuple[str, ...] = ()
    #: group → (messages behind, consume TPS)
    consumer_groups: Mapping[str, tuple[int, float]] = attrs.field(factory=dict)
    errors: tuple[str, ...] = ()


def sample(samples: Samples | None, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (None: absent)."""
    if samples is None:
        return None
    want = set(labels.items())
    for (n, ls), value in samples.items():
        if n == name and want <= ls:
            return value
    return None


def _int(table: Mapping[str, str] | None, key: str) -> int | None:
    value = None if table is None else table.get(key)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _broker_json(row: BrokerRow) -> dict[str, Any]:
    t = row.table
    return {
        "cluster": row.cluster,
        "brokerName": row.broker_name,
        "brokerId": row.broker_id,
        "address": row.addr,
        "role": None if t is None else t.get("brokerRole"),
        "acceptsWrites": None if t is None else t.get("acceptsWrites") == "true",
        "leaseValid": None
        if t is None or "controllerLeaseValid" not in t
        else t["controllerLeaseValid"] == "true",
        "putTotal": _int(t, "msgPutTotalTodayNow"),
        "getTotal": _int(t, "msgGetTotalTodayNow"),
        "version": None if t is None else t.get("brokerVersionDesc"),
        "error": row.error,
    }


def _group_json(group: GroupRow) -> dict[str, Any]:
    return {
        "brokerName": group.broker_name,
        "masterId": group.master_id,
        "masterAddress": group.master_address,
        "masterEpoch": group.master_epoch,
        "syncStateSet": sorted(r.broker_id for r in group.replicas if r.in_sync),
        "syncStateSetEpoch": group.sync_state_set_epoch,
        "replicas": [attrs.asdict(r) for r in group.replicas],
    }


def _controller_json(row: ControllerRow) -> dict[str, Any]:
    elections = {
        result: sample(row.samples, "rocketmq_election_total", election_result=result)
        for result in ("new_master_elected", "keep_current_master", "no_master_elected")
    }
    return {
        "address": row.address,
        "nodeId": row.node_id,
        "isLeader": row.is_leader,
        "metricsAddress": row.metrics_address,
        "elections": elections,
        "failoverCount": sample(row.samples, "rocketmq_failover_unavailable_seconds_count"),
        "failoverSumS": sample(row.samples, "rocketmq_failover_unavailable_seconds_sum"),
        "error": row.error,
    }


@attrs.define
class Dashboard:
    """The latest view, the timeline of changes and the throughput points."""

    view: dict[str, Any] = attrs.field(factory=dict)
    timeline: deque[dict[str, Any]] = attrs.field(factory=lambda: deque(maxlen=MAX_TIMELINE))
    points: deque[dict[str, Any]] = attrs.field(factory=lambda: deque(maxlen=MAX_POINTS))
    _last: Observation | None = None
    #: Timeline events recorded since the start (the bounded timeline drops old ones).
    events: int = 0

    def update(self, obs: Observation) -> None:
        last, self._last = self._last, obs
        if last is not None:
            for text in changes(last, obs):
                self.timeline.append({"t": obs.now_ms, "text": text})
                self.events += 1
            point = throughput(last, obs)
            if point is not None:
                self.points.append(point)
        self.view = {
            "updatedMs": obs.now_ms,
            "namesrv": list(obs.namesrv),
            "brokers": [_broker_json(b) for b in obs.brokers],
            "groups": [_group_json(g) for g in obs.groups],
            "controllers": [_controller_json(c) for c in obs.controllers],
            "leader": next((c.node_id for c in obs.controllers if c.is_leader), None),
            "topics": list(obs.topics),
            "consumerGroups": [
                {"group": g, "diff": diff, "tps": tps}
                for g, (diff, tps) in sorted(obs.consumer_groups.items())
            ],
            "errors": list(obs.errors),
        }

    def state(self) -> dict[str, Any]:
        return {**self.view, "timeline": list(self.timeline), "throughput": list(self.points)}


def _by_name(groups: Sequence[GroupRow]) -> dict[str, GroupRow]:
    return {g.broker_name: g for g in groups}


def changes(before: Observation, after: Observation) -> list[str]:
    """What changed between two polls, in plain words."""
    out: list[str] = []
    old_leader = next((c for c in before.controllers if c.is_leader), None)
    new_leader = next((c for c in after.controllers if c.is_leader), None)
    if new_leader is not None and (old_leader is None or old_leader.address != new_leader.address):
        out.append(f"controller {new_leader.node_id} ({new_leader.address}) became the leader")
    old_groups = _by_name(before.groups)
    for name, group in sorted(_by_name(after.groups).items()):
        old = old_groups.get(name)
        if old is None:
            continue
        if (old.master_id, old.master_epoch) != (group.master_id, group.master_epoch):
            who = (
                "nobody"
                if group.master_id is None
                else f"{name}-{group.master_id} ({group.master_address})"
            )
            out.append(f"{who} became master of {name} at epoch {group.master_epoch}")
        old_sss = {r.broker_id for r in old.replicas if r.in_sync}
        new_sss = {r.broker_id for r in group.replicas if r.in_sync}
        if old_sss != new_sss:
            out.append(
                f"{name} SyncStateSet is now {sorted(new_sss)} (epoch {group.sync_state_set_epoch})"
            )
        old_alive = {r.broker_id: r.alive for r in old.replicas}
        for replica in group.replicas:
            was = old_alive.get(replica.broker_id)
            if was is not None and was != replica.alive:
                state = "is alive again" if replica.alive else "stopped heartbeating"
                out.append(f"{name}-{replica.broker_id} ({replica.address}) {state}")
    return out


def _totals(obs: Observation) -> tuple[int, int]:
    put = get = 0
    for b in obs.brokers:
        put += _int(b.table, "msgPutTotalTodayNow") or 0
        get += _int(b.table, "msgGetTotalTodayNow") or 0
    return put, get


def throughput(before: Observation, after: Observation) -> dict[str, Any] | None:
    """Messages in and out per second between two polls (a restarted broker's drop in its
    totals counts as 0, not negative)."""
    elapsed_s = (after.now_ms - before.now_ms) / 1000
    if elapsed_s <= 0:
        return None
    (put0, get0), (put1, get1) = _totals(before), _totals(after)
    return {
        "t": after.now_ms,
        "in": max(0, put1 - put0) / elapsed_s,
        "out": max(0, get1 - get0) / elapsed_s,
    }
