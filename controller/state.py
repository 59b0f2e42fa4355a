"""The controller's replicated state machine: broker groups, masters, SyncStateSets.

Rules (reference/rocketmq-controller.md §2–§3):
- State per broker group (``broker_name``): registered broker ids → address and register
  check code, the next id to hand out, the master id, ``master_epoch``, the SyncStateSet
  and ``sync_state_set_epoch``. Epochs only grow.
- ``apply(state, command)`` validates *and* applies in one step (the jRaft shape) and
  returns the new state and the result the caller gets. Every replica applies the same
  committed commands in the same order and reaches the same state and results, so apply
  reads no clock and no local table: the leader stamps each command with what it needs
  (invoke time, the alive broker ids and their last heartbeat info).
- A rejected command returns the unchanged state and a result whose ``code`` says why,
  with RocketMQ's response codes. Nothing here raises for bad input.
- Snapshots are plain data (``to_payload``/``from_payload``) for CBOR.
- Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from controller.election import LiveInfo, elect
from protocol.codes import ResponseCode

#: The first id handed to a broker of a new group (MixAll.FIRST_BROKER_CONTROLLER_ID).
FIRST_BROKER_ID = 1


def _frozen_map(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return dict(value)


@attrs.frozen(kw_only=True)
class BrokerMember:
    address: str
    register_check_code: str


@attrs.frozen(kw_only=True)
class BrokerGroup:
    """One broker set (all replicas of one ``broker_name``)."""

    cluster_name: str
    broker_name: str
    next_assign_broker_id: int = FIRST_BROKER_ID
    brokers: Mapping[int, BrokerMember] = attrs.field(factory=dict, converter=_frozen_map)
    master_broker_id: int | None = None
    master_epoch: int = 0
    sync_state_set: frozenset[int] = frozenset()
    sync_state_set_epoch: int = 0

    @property
    def master_address(self) -> str | None:
        if self.master_broker_id is None:
            return None
        member = self.brokers.get(self.master_broker_id)
        return member.address if member else None


@attrs.frozen
class ControllerState:
    groups: Mapping[str, BrokerGroup] = attrs.field(factory=dict, converter=_frozen_map)

    def with_group(self, group: BrokerGroup) -> ControllerState:
        return ControllerState({**self.groups, group.broker_name: group})

    def without_group(self, broker_name: str) -> ControllerState:
        return ControllerState({k: v for k, v in self.groups.items() if k != broker_name})


# --- commands ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class GetNextBrokerId:
    cluster_name: str
    broker_name: str


@attrs.frozen(kw_only=True)
class ApplyBrokerId:
    cluster_name: str
    broker_name: str
    broker_id: int
    register_check_code: str


@attrs.frozen(kw_only=True)
class RegisterBroker:
    cluster_name: str
    broker_name: str
    broker_id: int
    address: str
    alive: frozenset[int] = frozenset()


@attrs.frozen(kw_only=True)
class ElectMaster:
    """Controller-triggered: ``broker_id`` None; broker-triggered: own id; admin: designate."""

    cluster_name: str
    broker_name: str
    broker_id: int | None = None
    designate: bool = False
    live: Mapping[int, LiveInfo] = attrs.field(factory=dict, converter=_frozen_map)
    unclean: bool = False


@attrs.frozen(kw_only=True)
class AlterSyncStateSet:
    broker_name: str
    master_broker_id: int
    master_epoch: int
    new_sync_state_set: frozenset[int]
    sync_state_set_epoch: int
    alive: frozenset[int] = frozenset()


@attrs.frozen(kw_only=True)
class GetReplicaInfo:
    broker_name: str


@attrs.frozen(kw_only=True)
class CleanBrokerData:
    cluster_name: str | None
    broker_name: str
    broker_ids: frozenset[int] | None = None
    clean_living_broker: bool = False
    alive: frozenset[int] = frozenset()


Command = (
    GetNextBrokerId
    | ApplyBrokerId
    | RegisterBroker
    | ElectMaster
    | AlterSyncStateSet
    | GetReplicaInfo
    | CleanBrokerData
)

#: Commands that never change state (a leader may answer them from its applied state).
READ_ONLY = (GetNextBrokerId, GetReplicaInfo)


@attrs.frozen(kw_only=True)
class Result:
    """What the caller of a command gets back."""

    code: int = ResponseCode.SUCCESS
    remark: str | None = None
    broker_name: str | None = None
    broker_id: int | None = None
    master_broker_id: int | None = None
    master_address: str | None = None
    master_epoch: int | None = None
    sync_state_set: frozenset[int] | None = None
    sync_state_set_epoch: int | None = None
    #: ElectMaster: every registered id → address of the group.
    broker_addrs: Mapping[int, str] | None = None

    @property
    def ok(self) -> bool:
        return self.code == ResponseCode.SUCCESS


def _fail(code: int, remark: str) -> Result:
    return Result(code=code, remark=remark)


def _replica_result(group: BrokerGroup, *, code: int = ResponseCode.SUCCESS) -> Result:
    return Result(
        code=code,
        broker_name=group.broker_name,
        master_broker_id=group.master_broker_id,
        master_address=group.master_address,
        master_epoch=group.master_epoch,
        sync_state_set=group.sync_state_set,
        sync_state_set_epoch=group.sync_state_set_epoch,
    )


# --- apply ---------------------------------------------------------------------------------


def apply(state: ControllerState, command: Command) -> tuple[ControllerState, Result]:
    """Validate and apply one command; a rejected command leaves ``state`` unchanged."""
    match command:
        case GetNextBrokerId():
            group = state.groups.get(command.broker_name)
            next_id = group.next_assign_broker_id if group else FIRST_BROKER_ID
            return state, Result(broker_name=command.broker_name, broker_id=next_id)
        case ApplyBrokerId():
            return _apply_broker_id(state, command)
        case RegisterBroker():
            return _register_broker(state, command)
        case ElectMaster():
            return _elect_master(state, command)
        case AlterSyncStateSet():
            return _alter_sync_state_set(state, command)
        case GetReplicaInfo():
            group = state.groups.get(command.broker_name)
            if group is None:
                return state, _fail(
                    ResponseCode.CONTROLLER_BROKER_METADATA_NOT_EXIST,
                    f"broker set {command.broker_name} is not registered",
                )
            return state, _replica_result(group)
        case CleanBrokerData():
            return _clean_broker_data(state, command)
    raise AssertionError(f"unknown command {command!r}")  # pragma: no cover


def _address_of(check_code: str) -> str:
    return check_code.split(";", 1)[0]


def _apply_broker_id(state: ControllerState, c: ApplyBrokerId) -> tuple[ControllerState, Result]:
    group = state.groups.get(c.broker_name)
    member = BrokerMember(
        address=_address_of(c.register_check_code), register_check_code=c.register_check_code
    )
    if c.broker_id < FIRST_BROKER_ID:
        # Beyond RocketMQ (which stores any long): id 0 means "master" on the NameServer
        # and negative ids are nobody's; such a broker could never be told apart.
        return state, _fail(
            ResponseCode.CONTROLLER_BROKER_ID_INVALID,
            f"broker id {c.broker_id} is invalid: controller-assigned ids start at "
            f"{FIRST_BROKER_ID}",
        )
    if group is None:
        if c.broker_id != FIRST_BROKER_ID:
            return state, _fail(
                ResponseCode.CONTROLLER_BROKER_ID_INVALID,
                f"broker set {c.broker_name} is new: the first id is {FIRST_BROKER_ID}, "
                f"not {c.broker_id}",
            )
        group = BrokerGroup(
            cluster_name=c.cluster_name,
            broker_name=c.broker_name,
            next_assign_broker_id=FIRST_BROKER_ID + 1,
            brokers={c.broker_id: member},
        )
        return state.with_group(group), Result(broker_name=c.broker_name, broker_id=c.broker_id)
    existing = group.brokers.get(c.broker_id)
    if existing is not None:
        if existing.register_check_code == c.register_check_code:
            return state, Result(broker_name=c.broker_name, broker_id=c.broker_id)
        return state, _fail(
            ResponseCode.CONTROLLER_BROKER_ID_INVALID,
            f"broker id {c.broker_id} of {c.broker_name} is taken by {existing.address}",
        )
    # RocketMQ adds one to nextAssignBrokerId per added broker, so an id applied out of
    # order (above the next one, e.g. from a leftover temp identity file) later makes
    # GetNextBrokerId hand out a taken id and that broker's register loop gets 2014
    # forever. max() keeps the next id above every id ever added.
    group = attrs.evolve(
        group,
        brokers={**group.brokers, c.broker_id: member},
        next_assign_broker_id=max(group.next_assign_broker_id, c.broker_id + 1),
    )
    return state.with_group(group), Result(broker_name=c.broker_name, broker_id=c.broker_id)


def _register_broker(state: ControllerState, c: RegisterBroker) -> tuple[ControllerState, Result]:
    group = state.groups.get(c.broker_name)
    if group is None or c.broker_id not in group.brokers:
        return state, _fail(
            ResponseCode.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
            f"broker {c.broker_name}-{c.broker_id} must apply for its id first",
        )
    member = group.brokers[c.broker_id]
    if member.address != c.address:
        group = attrs.evolve(
            group, brokers={**group.brokers, c.broker_id: attrs.evolve(member, address=c.address)}
        )
        state = state.with_group(group)
    result = _replica_result(group)
    if group.master_broker_id is None or group.master_broker_id not in c.alive:
        result = attrs.evolve(result, master_broker_id=None, master_address=None, master_epoch=None)
    return state, attrs.evolve(result, broker_id=c.broker_id)


def _elect_master(state: ControllerState, c: ElectMaster) -> tuple[ControllerState, Result]:
    group = state.groups.get(c.broker_name)
    if group is None:
        return state, _fail(
            ResponseCode.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
            f"broker set {c.broker_name} is not registered",
        )
    requested = c.broker_id if c.broker_id is not None and c.broker_id >= 0 else None
    if group.master_epoch == 0 and requested is not None and requested in group.brokers:
        candidate: int | None = requested  # the first broker that asks wins
    else:
        candidate = elect(
            sync_state_set=group.sync_state_set,
            all_replicas=group.brokers,
            old_master=group.master_broker_id,
            preferred=requested if c.designate else None,
            live=c.live,
            unclean=c.unclean,
        )
    if candidate is not None and candidate == group.master_broker_id:
        return state, _replica_result(group, code=ResponseCode.CONTROLLER_MASTER_STILL_EXIST)
    if candidate is not None:
        group = attrs.evolve(
            group,
            master_broker_id=candidate,
            master_epoch=group.master_epoch + 1,
            sync_state_set=frozenset({candidate}),
            sync_state_set_epoch=group.sync_state_set_epoch + 1,
        )
        result = attrs.evolve(
            _replica_result(group),
            broker_addrs={i: m.address for i, m in group.brokers.items()},
        )
        return state.with_group(group), result
    if requested is None:  # controller-triggered: record that the group has no master
        group = attrs.evolve(group, master_broker_id=None, master_epoch=group.master_epoch + 1)
        state = state.with_group(group)
        result = _replica_result(group, code=ResponseCode.CONTROLLER_MASTER_NOT_AVAILABLE)
        return state, attrs.evolve(
            result, remark=f"no replica of {c.broker_name} can become master now"
        )
    return state, _fail(
        ResponseCode.CONTROLLER_ELECT_MASTER_FAILED,
        f"broker {requested} of {c.broker_name} cannot be elected now",
    )


def _alter_sync_state_set(
    state: ControllerState, c: AlterSyncStateSet
) -> tuple[ControllerState, Result]:
    failed = ResponseCode.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED
    group = state.groups.get(c.broker_name)
    if group is None:
        return state, _fail(failed, f"broker set {c.broker_name} is not registered")
    if c.new_sync_state_set == group.sync_state_set:
        return state, _fail(failed, "the SyncStateSet is already that; no need to update")
    if group.master_broker_id is None or c.master_broker_id != group.master_broker_id:
        return state, _fail(
            ResponseCode.CONTROLLER_INVALID_MASTER,
            f"broker {c.master_broker_id} is not the master of {c.broker_name} "
            f"(the master is {group.master_broker_id})",
        )
    if c.master_epoch != group.master_epoch:
        return state, _fail(
            ResponseCode.CONTROLLER_FENCED_MASTER_EPOCH,
            f"master epoch {c.master_epoch} is stale; current is {group.master_epoch}",
        )
    if c.sync_state_set_epoch != group.sync_state_set_epoch:
        return state, _fail(
            ResponseCode.CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
            f"SyncStateSet epoch {c.sync_state_set_epoch} is stale; "
            f"current is {group.sync_state_set_epoch}",
        )
    unknown = sorted(c.new_sync_state_set - set(group.brokers))
    if unknown:
        return state, _fail(
            ResponseCode.CONTROLLER_INVALID_REPLICAS, f"brokers {unknown} are not registered"
        )
    dead = sorted(c.new_sync_state_set - c.alive)
    if dead:
        return state, _fail(
            ResponseCode.CONTROLLER_BROKER_NOT_ALIVE, f"brokers {dead} are not alive"
        )
    if group.master_broker_id not in c.new_sync_state_set:
        return state, _fail(failed, "the new SyncStateSet must contain the master")
    group = attrs.evolve(
        group,
        sync_state_set=c.new_sync_state_set,
        sync_state_set_epoch=group.sync_state_set_epoch + 1,
    )
    return state.with_group(group), _replica_result(group)


def _clean_broker_data(
    state: ControllerState, c: CleanBrokerData
) -> tuple[ControllerState, Result]:
    invalid = ResponseCode.CONTROLLER_INVALID_CLEAN_BROKER_METADATA
    group = state.groups.get(c.broker_name)
    if group is None:
        return state, _fail(invalid, f"broker set {c.broker_name} is not registered")
    if not c.clean_living_broker:
        if not c.broker_ids and group.master_broker_id is not None:
            return state, _fail(invalid, f"broker set {c.broker_name} still has a master")
        living = sorted((c.broker_ids or frozenset()) & c.alive)
        if living:
            return state, _fail(invalid, f"brokers {living} are still alive")
    if not c.broker_ids:
        return state.without_group(c.broker_name), Result(broker_name=c.broker_name)
    brokers = {i: m for i, m in group.brokers.items() if i not in c.broker_ids}
    if not brokers:
        return state.without_group(c.broker_name), Result(broker_name=c.broker_name)
    master_cleaned = group.master_broker_id in c.broker_ids
    group = attrs.evolve(
        group,
        brokers=brokers,
        sync_state_set=group.sync_state_set - c.broker_ids,
        master_broker_id=None if master_cleaned else group.master_broker_id,
        # Beyond RocketMQ: a master cleaned while alive (isCleanLivingBroker) sees a newer
        # epoch without itself as master at its next poll and fences, instead of acking on
        # at an epoch the controller no longer backs.
        master_epoch=group.master_epoch + 1 if master_cleaned else group.master_epoch,
    )
    return state.with_group(group), Result(broker_name=c.broker_name)


# --- snapshots -----------------------------------------------------------------------------


def to_payload(state: ControllerState) -> dict[str, Any]:
    """Plain data (CBOR-ready) holding the whole state."""
    return {
        name: {
            "cluster": g.cluster_name,
            "next_id": g.next_assign_broker_id,
            "brokers": {i: [m.address, m.register_check_code] for i, m in g.brokers.items()},
            "master": g.master_broker_id,
            "master_epoch": g.master_epoch,
            "sss": sorted(g.sync_state_set),
            "sss_epoch": g.sync_state_set_epoch,
        }
        for name, g in state.groups.items()
    }


def from_payload(payload: Any) -> ControllerState:
    """The inverse of ``to_payload``; raises ValueError (with the group name) if malformed.

    Strict on purpose: a snapshot is only ever written by ``to_payload``, so a value of the
    wrong type (or a master/SyncStateSet member that is not a registered broker) means the
    snapshot is corrupt, and coercing it (``str(None)``, ``int(True)``, a 2-letter string
    unpacked as an address and a check code) would install wrong state on this replica only.
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"controller snapshot: expected a map of groups, got {payload!r}")
    groups: dict[str, BrokerGroup] = {}
    for name, raw in payload.items():
        try:
            key = _text(name, "broker name")
            groups[key] = _group_from_payload(key, raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"controller snapshot: group {name!r} is malformed: {exc}") from None
    return ControllerState(groups)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {value!r}")
    return value


def _group_from_payload(name: str, raw: Any) -> BrokerGroup:
    if not isinstance(raw, Mapping):
        raise TypeError(f"expected a map, got {raw!r}")
    raw_brokers = raw["brokers"]
    if not isinstance(raw_brokers, Mapping):
        raise TypeError(f"brokers must be a map, got {raw_brokers!r}")
    brokers: dict[int, BrokerMember] = {}
    for i, member in raw_brokers.items():
        if not isinstance(member, list | tuple) or len(member) != 2:
            raise TypeError(f"broker {i!r} must be [address, check code], got {member!r}")
        brokers[_int(i, "broker id")] = BrokerMember(
            address=_text(member[0], "address"),
            register_check_code=_text(member[1], "register check code"),
        )
    raw_sss = raw["sss"]
    if not isinstance(raw_sss, list | tuple):
        raise TypeError(f"sss must be a list, got {raw_sss!r}")
    sync_state_set = frozenset(_int(i, "SyncStateSet member") for i in raw_sss)
    master = None if raw["master"] is None else _int(raw["master"], "master")
    if not sync_state_set <= brokers.keys():
        raise ValueError(f"SyncStateSet {sorted(sync_state_set)} has unregistered brokers")
    if master is not None and master not in sync_state_set:
        raise ValueError(f"master {master} is not in the SyncStateSet")
    return BrokerGroup(
        cluster_name=_text(raw["cluster"], "cluster"),
        broker_name=name,
        next_assign_broker_id=_int(raw["next_id"], "next_id"),
        brokers=brokers,
        master_broker_id=master,
        master_epoch=_int(raw["master_epoch"], "master_epoch"),
        sync_state_set=sync_state_set,
        sync_state_set_epoch=_int(raw["sss_epoch"], "sss_epoch"),
    )


# --- command codec (for the Raft log) ------------------------------------------------------

_COMMANDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        GetNextBrokerId,
        ApplyBrokerId,
        RegisterBroker,
        ElectMaster,
        AlterSyncStateSet,
        GetReplicaInfo,
        CleanBrokerData,
    )
}
_SET_FIELDS = frozenset({"alive", "new_sync_state_set", "broker_ids"})


def command_to_payload(command: Command) -> dict[str, Any]:
    """Plain data for CBOR: ``{"type": name, field: value...}`` (sets as sorted lists)."""
    payload: dict[str, Any] = {"type": type(command).__name__}
    for field in attrs.fields(type(command)):
        value = getattr(command, field.name)
        if field.name in _SET_FIELDS and value is not None:
            value = sorted(value)
        elif field.name == "live":
            value = {
                int(i): [info.epoch, info.max_offset, info.confirm_offset, info.election_priority]
                for i, info in value.items()
            }
        payload[field.name] = value
    return payload


def command_from_payload(payload: Mapping[str, Any]) -> Command:
    """The inverse of ``command_to_payload``; raises ValueError for anything else."""
    try:
        cls = _COMMANDS[payload["type"]]
        kwargs: dict[str, Any] = {}
        for field in attrs.fields(cls):
            if field.name not in payload:
                continue
            value = payload[field.name]
            if field.name in _SET_FIELDS and value is not None:
                value = frozenset(int(i) for i in value)
            elif field.name == "live":
                value = {
                    int(i): LiveInfo(
                        epoch=int(v[0]),
                        max_offset=int(v[1]),
                        confirm_offset=int(v[2]),
                        election_priority=int(v[3]),
                    )
                    for i, v in value.items()
                }
            kwargs[field.name] = value
        command: Command = cls(**kwargs)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"not a controller command: {exc!r}") from None
    return command
