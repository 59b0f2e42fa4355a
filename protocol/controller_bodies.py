"""JSON bodies of the controller requests and of GET_BROKER_EPOCH_CACHE.

Rules (reference/rocketmq-controller.md §5; field names from RocketMQ's
``remoting/protocol/body/*.java``):
- ``SyncStateSet`` {syncStateSet: [ids], syncStateSetEpoch}, ``ElectMasterResponseBody``
  {brokerMemberGroup {cluster, brokerName, brokerAddrs {id: addr}}, syncStateSet},
  ``BrokerReplicasInfo`` {replicasInfoTable {name: ReplicasInfo}}, ``EpochEntryCache``.
- We write standard JSON (map keys as strings, sorted) and read fastjson's bare integer
  keys too (``loads_fastjson``). Java ``Set``s are JSON arrays; we keep them as frozensets.
- Unknown fields are ignored; a value of the wrong type raises ``MalformedBody`` naming the
  body and the field. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from protocol.errors import MalformedBody
from protocol.javanum import INT32_RANGE, INT64_RANGE, parse_java_int
from protocol.jsonbody import (
    as_object,
    check_int,
    dumps_json,
    int_field,
    load_json_body,
    opt_int_field,
    opt_str_field,
    shown,
    str_field,
)

#: Java's Long.MAX_VALUE: the end offset of the last (open) epoch entry.
OPEN_END_OFFSET = 2**63 - 1


def _ids(obj: Mapping[str, Any], key: str, what: str) -> frozenset[int]:
    """A Java ``Set<Long>`` of broker ids."""
    value = obj.get(key)
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise MalformedBody(f"{what}: {key!r} must be an array of integers, got {shown(value)}")
    return frozenset(check_int(i, f"{what}: items of {key!r}", INT64_RANGE) for i in value)


def _list(obj: Mapping[str, Any], key: str, what: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedBody(f"{what}: {key!r} must be a JSON array, got {shown(value)}")
    return value


def _id_set(value: Iterable[int]) -> frozenset[int]:
    return frozenset(value)


# --- SyncStateSet ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SyncStateSet:
    """A SyncStateSet and its epoch (request body of 1001; answer of 1001/1003/1004/1008)."""

    sync_state_set: frozenset[int] = attrs.field(converter=_id_set)
    sync_state_set_epoch: int

    def to_json(self) -> dict[str, Any]:
        return {
            "syncStateSet": sorted(self.sync_state_set),
            "syncStateSetEpoch": self.sync_state_set_epoch,
        }

    def to_bytes(self) -> bytes:
        return dumps_json(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> SyncStateSet:
        what = "SyncStateSet"
        obj = as_object(value, what)
        return cls(
            sync_state_set=_ids(obj, "syncStateSet", what),
            sync_state_set_epoch=int_field(obj, "syncStateSetEpoch", None, what, INT32_RANGE),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SyncStateSet:
        return cls.from_json(load_json_body(data, "SyncStateSet"))


# --- ElectMaster -------------------------------------------------------------------------


def _freeze_addrs(value: Mapping[int, str]) -> Mapping[int, str]:
    return dict(value)


@attrs.frozen(kw_only=True)
class BrokerMemberGroup:
    cluster: str
    broker_name: str
    broker_addrs: Mapping[int, str] = attrs.field(factory=dict, converter=_freeze_addrs)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "brokerName": self.broker_name,
            "brokerAddrs": {str(i): a for i, a in sorted(self.broker_addrs.items())},
        }

    @classmethod
    def from_json(cls, value: Any) -> BrokerMemberGroup:
        what = "BrokerMemberGroup"
        obj = as_object(value, what)
        raw = as_object(obj.get("brokerAddrs") or {}, f"{what}.brokerAddrs")
        addrs: dict[int, str] = {}
        for key, addr in raw.items():
            broker_id = parse_java_int(key.strip(), INT64_RANGE)
            if broker_id is None:
                raise MalformedBody(f"{what}: broker id {shown(key)} is not a Java long")
            if not isinstance(addr, str):
                raise MalformedBody(
                    f"{what}: address of {broker_id} must be a string, got {shown(addr)}"
                )
            addrs[broker_id] = addr
        return cls(
            cluster=str_field(obj, "cluster", "", what),
            broker_name=str_field(obj, "brokerName", "", what),
            broker_addrs=addrs,
        )


@attrs.frozen(kw_only=True)
class ElectMasterResponseBody:
    broker_member_group: BrokerMemberGroup | None
    sync_state_set: frozenset[int] = attrs.field(converter=_id_set)

    def to_json(self) -> dict[str, Any]:
        group = self.broker_member_group
        return {
            "brokerMemberGroup": None if group is None else group.to_json(),
            "syncStateSet": sorted(self.sync_state_set),
        }

    def to_bytes(self) -> bytes:
        return dumps_json(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> ElectMasterResponseBody:
        what = "ElectMasterResponseBody"
        obj = as_object(load_json_body(data, what), what)
        group = obj.get("brokerMemberGroup")
        return cls(
            broker_member_group=None if group is None else BrokerMemberGroup.from_json(group),
            sync_state_set=_ids(obj, "syncStateSet", what),
        )


# --- GetSyncStateData ----------------------------------------------------------------------


def broker_names_body(names: Iterable[str]) -> bytes:
    """CONTROLLER_GET_SYNC_STATE_DATA's request body: a JSON array of broker names."""
    return dumps_json(list(names))


def parse_broker_names(data: bytes) -> list[str]:
    what = "GetSyncStateData body"
    value = load_json_body(data, what)
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise MalformedBody(f"{what}: expected a JSON array of broker names, got {shown(value)}")
    return list(dict.fromkeys(value))


@attrs.frozen(kw_only=True)
class ReplicaIdentity:
    broker_name: str
    broker_id: int
    broker_address: str
    alive: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "brokerName": self.broker_name,
            "brokerId": self.broker_id,
            "brokerAddress": self.broker_address,
            "alive": self.alive,
        }

    @classmethod
    def from_json(cls, value: Any) -> ReplicaIdentity:
        what = "ReplicaIdentity"
        obj = as_object(value, what)
        alive = obj.get("alive")
        if not isinstance(alive, bool):
            raise MalformedBody(f"{what}: 'alive' must be true or false, got {shown(alive)}")
        return cls(
            broker_name=str_field(obj, "brokerName", "", what),
            broker_id=int_field(obj, "brokerId", None, what),
            broker_address=str_field(obj, "brokerAddress", "", what),
            alive=alive,
        )

    def __str__(self) -> str:
        # ReplicaIdentity.toString, as mqadmin getSyncStateSet prints it.
        return (
            f"ReplicaIdentity{{brokerName='{self.broker_name}', brokerId={self.broker_id}, "
            f"brokerAddress='{self.broker_address}', alive={str(self.alive).lower()}}}"
        )


@attrs.frozen(kw_only=True)
class ReplicasInfo:
    master_broker_id: int | None
    master_address: str | None
    master_epoch: int
    sync_state_set_epoch: int
    in_sync_replicas: tuple[ReplicaIdentity, ...] = ()
    not_in_sync_replicas: tuple[ReplicaIdentity, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "masterBrokerId": self.master_broker_id,
            "masterAddress": self.master_address,
            "masterEpoch": self.master_epoch,
            "syncStateSetEpoch": self.sync_state_set_epoch,
            "inSyncReplicas": [r.to_json() for r in self.in_sync_replicas],
            "notInSyncReplicas": [r.to_json() for r in self.not_in_sync_replicas],
        }

    @classmethod
    def from_json(cls, value: Any) -> ReplicasInfo:
        what = "ReplicasInfo"
        obj = as_object(value, what)
        return cls(
            master_broker_id=opt_int_field(obj, "masterBrokerId", what),
            master_address=opt_str_field(obj, "masterAddress", what),
            master_epoch=int_field(obj, "masterEpoch", 0, what, INT32_RANGE),
            sync_state_set_epoch=int_field(obj, "syncStateSetEpoch", 0, what, INT32_RANGE),
            in_sync_replicas=tuple(
                ReplicaIdentity.from_json(r) for r in _list(obj, "inSyncReplicas", what)
            ),
            not_in_sync_replicas=tuple(
                ReplicaIdentity.from_json(r) for r in _list(obj, "notInSyncReplicas", what)
            ),
        )


def _freeze_table(value: Mapping[str, ReplicasInfo]) -> Mapping[str, ReplicasInfo]:
    return dict(value)


@attrs.frozen(kw_only=True)
class BrokerReplicasInfo:
    """CONTROLLER_GET_SYNC_STATE_DATA's answer: per broker name, its replicas."""

    replicas_info_table: Mapping[str, ReplicasInfo] = attrs.field(
        factory=dict, converter=_freeze_table
    )

    def to_bytes(self) -> bytes:
        table = {name: info.to_json() for name, info in sorted(self.replicas_info_table.items())}
        return dumps_json({"replicasInfoTable": table})

    @classmethod
    def from_bytes(cls, data: bytes) -> BrokerReplicasInfo:
        what = "BrokerReplicasInfo"
        obj = as_object(load_json_body(data, what), what)
        table = as_object(obj.get("replicasInfoTable") or {}, f"{what}.replicasInfoTable")
        return cls(
            replicas_info_table={name: ReplicasInfo.from_json(v) for name, v in table.items()}
        )


# --- GET_BROKER_EPOCH_CACHE ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class EpochEntry:
    epoch: int
    start_offset: int
    end_offset: int = OPEN_END_OFFSET

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "startOffset": self.start_offset, "endOffset": self.end_offset}

    @classmethod
    def from_json(cls, value: Any) -> EpochEntry:
        what = "EpochEntry"
        obj = as_object(value, what)
        return cls(
            epoch=int_field(obj, "epoch", None, what, INT32_RANGE),
            start_offset=int_field(obj, "startOffset", None, what),
            end_offset=int_field(obj, "endOffset", OPEN_END_OFFSET, what),
        )

    def __str__(self) -> str:
        # EpochEntry.toString, as mqadmin getBrokerEpoch prints it.
        return (
            f"EpochEntry{{epoch={self.epoch}, startOffset={self.start_offset}, "
            f"endOffset={self.end_offset}}}"
        )


@attrs.frozen(kw_only=True)
class EpochEntryCache:
    """GET_BROKER_EPOCH_CACHE's answer: a broker's epoch file and max offset."""

    cluster_name: str
    broker_name: str
    broker_id: int
    epoch_list: tuple[EpochEntry, ...]
    max_offset: int

    def to_bytes(self) -> bytes:
        return dumps_json(
            {
                "clusterName": self.cluster_name,
                "brokerName": self.broker_name,
                "brokerId": self.broker_id,
                "epochList": [e.to_json() for e in self.epoch_list],
                "maxOffset": self.max_offset,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EpochEntryCache:
        what = "EpochEntryCache"
        obj = as_object(load_json_body(data, what), what)
        return cls(
            cluster_name=str_field(obj, "clusterName", "", what),
            broker_name=str_field(obj, "brokerName", "", what),
            broker_id=int_field(obj, "brokerId", 0, what),
            epoch_list=tuple(EpochEntry.from_json(e) for e in _list(obj, "epochList", what)),
            max_offset=int_field(obj, "maxOffset", 0, what),
        )
