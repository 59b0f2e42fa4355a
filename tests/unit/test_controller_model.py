"""The controller state machine against a naive model of its invariants (Hypothesis).

A RuleBasedStateMachine sends random commands (biased towards ones that can succeed) and
checks, after every command: epochs never decrease; a master is a registered broker in the
SSS; the SSS holds only registered brokers; a rejected command returns the same state object;
each command changes exactly what its rule says. A second replica is restored from a CBOR
snapshot before every command and must answer and end identically; at the end the whole
log replayed from the empty state must give equal states and results (what keeps the Raft
replicas identical); every command also crosses the Raft log's CBOR codec unchanged.
Rules: reference/rocketmq-controller.md §2.3, §3.
"""

from __future__ import annotations

from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from controller.election import DEFAULT_ELECTION_PRIORITY, LiveInfo
from controller.state import (
    READ_ONLY,
    AlterSyncStateSet,
    ApplyBrokerId,
    BrokerGroup,
    CleanBrokerData,
    Command,
    ControllerState,
    ElectMaster,
    GetNextBrokerId,
    GetReplicaInfo,
    RegisterBroker,
    Result,
    apply,
    command_from_payload,
    command_to_payload,
    from_payload,
    to_payload,
)
from protocol import cbor
from protocol.codes import ResponseCode as RC

CLUSTER = "c"
NAMES = ("a", "b")
ADDRS = ("10.0.0.1:10911", "10.0.0.2:10911", "10.0.0.3:10911")
KIND = "controller-state"

# Mostly the first set; the second shows that a command never touches another set.
names = st.sampled_from(NAMES[:1] * 3 + NAMES[1:])
broker_ids = st.integers(1, 5)
id_sets = st.frozensets(broker_ids, max_size=5)
check_codes = st.builds(lambda a, t: f"{a};{t}", st.sampled_from(ADDRS), st.integers(0, 2))
live_infos = st.builds(
    LiveInfo,
    epoch=st.integers(-1, 3),
    max_offset=st.sampled_from([-1, 0, 100, 2**31 + 1, 2**33]),
    election_priority=st.integers(0, 2) | st.just(DEFAULT_ELECTION_PRIORITY),
)
live_maps = st.dictionaries(broker_ids, live_infos, max_size=5)
small = st.integers(0, 4)

commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(GetNextBrokerId, cluster_name=st.just(CLUSTER), broker_name=names),
    st.builds(
        ApplyBrokerId,
        cluster_name=st.just(CLUSTER),
        broker_name=names,
        broker_id=broker_ids,
        register_check_code=check_codes,
    ),
    st.builds(
        RegisterBroker,
        cluster_name=st.just(CLUSTER),
        broker_name=names,
        broker_id=broker_ids,
        address=st.sampled_from(ADDRS),
        alive=id_sets,
    ),
    st.builds(
        ElectMaster,
        cluster_name=st.just(CLUSTER),
        broker_name=names,
        broker_id=st.none() | broker_ids,
        designate=st.booleans(),
        live=live_maps,
        unclean=st.booleans(),
    ),
    st.builds(
        AlterSyncStateSet,
        broker_name=names,
        master_broker_id=broker_ids,
        master_epoch=small,
        new_sync_state_set=id_sets,
        sync_state_set_epoch=small,
        alive=id_sets,
    ),
    st.builds(GetReplicaInfo, broker_name=names),
    st.builds(
        CleanBrokerData,
        cluster_name=st.none() | st.just(CLUSTER),
        broker_name=names,
        broker_ids=st.none() | id_sets,
        clean_living_broker=st.booleans(),
        alive=id_sets,
    ),
)


def through_cbor(state: ControllerState) -> ControllerState:
    """What a replica installs from a snapshot taken of ``state``."""
    version, payload = cbor.loads(cbor.dumps(KIND, 1, to_payload(state)), kind=KIND, max_version=1)
    assert version == 1
    return from_payload(payload)


def via_log(command: Command) -> Command:
    """What a follower decodes from the Raft log entry for ``command``."""
    data = cbor.dumps("controller-command", 1, command_to_payload(command))
    _, payload = cbor.loads(data, kind="controller-command", max_version=1)
    decoded = command_from_payload(payload)
    assert decoded == command
    return decoded


def run(commands_: list[Command]) -> tuple[ControllerState, list[Result]]:
    state, results = ControllerState(), []
    for command in commands_:
        state, result = apply(state, command)
        results.append(result)
    return state, results


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=60))
def test_snapshot_round_trip_after_random_commands(log: list[Command]) -> None:
    state, _ = run(log)
    assert from_payload(to_payload(state)) == state
    assert through_cbor(state) == state
    # Two replicas that took snapshots of equal states write identical bytes.
    again, _ = run(log)
    assert cbor.dumps(KIND, 1, to_payload(again)) == cbor.dumps(KIND, 1, to_payload(state))


# --- the naive model -----------------------------------------------------------------------


def check_group(g: BrokerGroup) -> None:
    """What must hold for every broker set at every moment."""
    assert g.brokers, "a broker set with no brokers must not exist"
    assert g.sync_state_set <= g.brokers.keys()
    if g.master_broker_id is not None:
        assert g.master_broker_id in g.brokers
        assert g.master_broker_id in g.sync_state_set
    assert g.next_assign_broker_id > max(g.brokers)
    assert g.master_epoch >= 0 and g.sync_state_set_epoch >= 0
    if g.master_epoch == 0:  # never elected: nothing else can have happened
        assert g.master_broker_id is None and not g.sync_state_set
        assert g.sync_state_set_epoch == 0


def check_epochs_never_decrease(before: BrokerGroup, after: BrokerGroup) -> None:
    assert after.master_epoch >= before.master_epoch
    assert after.sync_state_set_epoch >= before.sync_state_set_epoch
    assert after.next_assign_broker_id >= before.next_assign_broker_id


def may_change_state(command: Command, result: Result) -> bool:
    if isinstance(command, READ_ONLY):
        return False
    # A failed controller-triggered election still commits "no master" (§2.3 ElectMaster 6).
    return result.ok or result.code == RC.CONTROLLER_MASTER_NOT_AVAILABLE


def check_apply_broker_id(
    before: BrokerGroup | None, c: ApplyBrokerId, after: BrokerGroup | None, r: Result
) -> None:
    held = before.brokers.get(c.broker_id) if before is not None else None
    taken = held is not None
    same_code = held is not None and held.register_check_code == c.register_check_code
    if before is None:
        assert r.ok == (c.broker_id == 1)
    else:
        assert r.ok == (c.broker_id >= 1 and (not taken or same_code))
    if not r.ok:
        assert r.code == RC.CONTROLLER_BROKER_ID_INVALID
        return
    assert after is not None and r.broker_id == c.broker_id
    member = after.brokers[c.broker_id]
    assert member.register_check_code == c.register_check_code
    if not taken:  # a retry keeps the address a later RegisterBroker may have updated
        assert member.address == c.register_check_code.split(";")[0]
    if before is None:
        assert after.brokers.keys() == {1} and after.next_assign_broker_id == 2
        assert (after.master_broker_id, after.master_epoch, after.sync_state_set_epoch) == (
            None,
            0,
            0,
        )
    elif not taken:
        assert dict(after.brokers) == {**before.brokers, c.broker_id: member}
        assert after.next_assign_broker_id == max(before.next_assign_broker_id, c.broker_id + 1)


def check_register(
    before: BrokerGroup | None, c: RegisterBroker, after: BrokerGroup | None, r: Result
) -> None:
    if before is None or c.broker_id not in before.brokers:
        assert r.code == RC.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED
        return
    assert r.ok and after is not None
    assert after.brokers[c.broker_id].address == c.address
    assert after.brokers[c.broker_id].register_check_code == (
        before.brokers[c.broker_id].register_check_code
    )
    assert {i: m for i, m in after.brokers.items() if i != c.broker_id} == {
        i: m for i, m in before.brokers.items() if i != c.broker_id
    }
    master_alive = before.master_broker_id is not None and before.master_broker_id in c.alive
    assert r.master_broker_id == (before.master_broker_id if master_alive else None)
    assert (r.sync_state_set, r.sync_state_set_epoch) == (
        before.sync_state_set,
        before.sync_state_set_epoch,
    )


def check_elect(
    before: BrokerGroup | None, c: ElectMaster, after: BrokerGroup | None, r: Result
) -> None:
    if before is None:
        assert r.code == RC.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED
        return
    assert after is not None
    first = before.master_epoch == 0 and c.broker_id is not None and c.broker_id in before.brokers
    live_sss = before.sync_state_set & c.live.keys()
    live_all = before.brokers.keys() & c.live.keys()
    designated = c.broker_id if c.designate else None
    if before.master_broker_id in c.live and designated in (None, before.master_broker_id):
        # A live master is only ever replaced on an admin's explicit order (§3 step 2): a
        # stale "master inactive" event must not cause a failover.
        assert r.code == RC.CONTROLLER_MASTER_STILL_EXIST
    if r.code == RC.CONTROLLER_MASTER_STILL_EXIST:
        assert before.master_broker_id in c.live
        assert r.master_broker_id == before.master_broker_id
    elif r.ok:
        m = after.master_broker_id
        assert m is not None and m != before.master_broker_id
        assert (after.master_epoch, after.sync_state_set, after.sync_state_set_epoch) == (
            before.master_epoch + 1,
            frozenset({m}),
            before.sync_state_set_epoch + 1,
        )
        assert r.master_broker_id == m and r.broker_addrs == {
            i: b.address for i, b in before.brokers.items()
        }
        if first:
            assert m == c.broker_id
        else:
            assert m in c.live, "only a live broker wins a non-first election"
            assert m in before.sync_state_set or c.unclean
            if c.designate and c.broker_id is not None:
                assert m == c.broker_id
    elif r.code == RC.CONTROLLER_MASTER_NOT_AVAILABLE:
        assert c.broker_id is None
        assert not live_sss and not (c.unclean and live_all)
        assert (after.master_broker_id, after.master_epoch) == (None, before.master_epoch + 1)
        assert (after.sync_state_set, after.sync_state_set_epoch) == (
            before.sync_state_set,
            before.sync_state_set_epoch,
        )
    else:
        assert r.code == RC.CONTROLLER_ELECT_MASTER_FAILED
        assert c.broker_id is not None
        if not (c.designate and c.broker_id is not None):
            assert not live_sss and not (c.unclean and live_all)


def alter_verdict(g: BrokerGroup | None, c: AlterSyncStateSet) -> int:
    """§2.3 AlterSyncStateSet, checks 1–7 in order."""
    if g is None:
        return RC.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED
    if c.new_sync_state_set == g.sync_state_set:
        return RC.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED
    if g.master_broker_id is None or c.master_broker_id != g.master_broker_id:
        return RC.CONTROLLER_INVALID_MASTER
    if c.master_epoch != g.master_epoch:
        return RC.CONTROLLER_FENCED_MASTER_EPOCH
    if c.sync_state_set_epoch != g.sync_state_set_epoch:
        return RC.CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH
    if not c.new_sync_state_set <= g.brokers.keys():
        return RC.CONTROLLER_INVALID_REPLICAS
    if not c.new_sync_state_set <= c.alive:
        return RC.CONTROLLER_BROKER_NOT_ALIVE
    if g.master_broker_id not in c.new_sync_state_set:
        return RC.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED
    return RC.SUCCESS


def check_alter(
    before: BrokerGroup | None, c: AlterSyncStateSet, after: BrokerGroup | None, r: Result
) -> None:
    assert r.code == alter_verdict(before, c)
    if not r.ok:
        return
    assert before is not None and after is not None
    assert after == BrokerGroup(
        cluster_name=before.cluster_name,
        broker_name=before.broker_name,
        next_assign_broker_id=before.next_assign_broker_id,
        brokers=before.brokers,
        master_broker_id=before.master_broker_id,
        master_epoch=before.master_epoch,
        sync_state_set=c.new_sync_state_set,
        sync_state_set_epoch=before.sync_state_set_epoch + 1,
    )


def check_clean(
    before: BrokerGroup | None, c: CleanBrokerData, after: BrokerGroup | None, r: Result
) -> None:
    refused = before is None or (
        not c.clean_living_broker
        and (
            (not c.broker_ids and before.master_broker_id is not None)
            or bool((c.broker_ids or frozenset()) & c.alive)
        )
    )
    assert r.ok == (not refused)
    if refused:
        assert r.code == RC.CONTROLLER_INVALID_CLEAN_BROKER_METADATA
        return
    assert before is not None
    ids = c.broker_ids or frozenset(before.brokers)  # no list: the whole set
    left = {i: m for i, m in before.brokers.items() if i not in ids}
    if not left:
        assert after is None
        return
    assert after is not None and dict(after.brokers) == left
    assert after.sync_state_set == before.sync_state_set - ids
    # The master is always a registered SSS member, so cleaning it clears the master.
    kept = before.master_broker_id if before.master_broker_id not in ids else None
    assert after.master_broker_id == kept
    # Beyond RocketMQ: cleaning the master bumps the master epoch (a living master fences).
    bumped = before.master_broker_id is not None and kept is None
    assert (after.master_epoch, after.sync_state_set_epoch, after.next_assign_broker_id) == (
        before.master_epoch + bumped,
        before.sync_state_set_epoch,
        before.next_assign_broker_id,
    )


def check_transition(
    before: ControllerState, c: Command, after: ControllerState, r: Result
) -> None:
    if not may_change_state(c, r):
        assert after is before, f"{c!r} answered {r.code} but changed the state"
    name = c.broker_name
    for other in before.groups.keys() | after.groups.keys():
        if other != name:
            assert after.groups.get(other) == before.groups.get(other)
    g0, g1 = before.groups.get(name), after.groups.get(name)
    if g0 is not None and g1 is not None:
        check_epochs_never_decrease(g0, g1)
    match c:
        case GetNextBrokerId():
            assert r.ok and r.broker_id == (g0.next_assign_broker_id if g0 else 1)
        case GetReplicaInfo():
            assert r.ok == (g0 is not None)
        case ApplyBrokerId():
            check_apply_broker_id(g0, c, g1, r)
        case RegisterBroker():
            check_register(g0, c, g1, r)
        case ElectMaster():
            check_elect(g0, c, g1, r)
        case AlterSyncStateSet():
            check_alter(g0, c, g1, r)
        case CleanBrokerData():
            check_clean(g0, c, g1, r)


# --- the state machine ---------------------------------------------------------------------


class ControllerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = ControllerState()
        self.log: list[Command] = []
        self.results: list[Result] = []

    def run(self, command: Command) -> None:
        before = self.state
        after, result = apply(before, command)
        check_transition(before, command, after, result)
        if currently_in_test_context():
            event(f"{type(command).__name__} -> {result.code}")
        # A follower that restarted from a snapshot of `before` and received the command
        # through the Raft log (CBOR) answers and ends the same.
        restored_after, restored_result = apply(through_cbor(before), via_log(command))
        assert (restored_after, restored_result) == (after, result)
        self.state = after
        self.log.append(command)
        self.results.append(result)

    @initialize(count=st.integers(0, 4), first=st.none() | broker_ids)
    def start_with_registered_brokers(self, count: int, first: int | None) -> None:
        """Most runs start from a set with a few brokers (and maybe a first master), where
        the interesting rules apply."""
        for broker_id in range(1, count + 1):
            self.run(
                ApplyBrokerId(
                    cluster_name=CLUSTER,
                    broker_name=NAMES[0],
                    broker_id=broker_id,
                    register_check_code=f"{ADDRS[0]};9",
                )
            )
        if first is not None:
            self.run(ElectMaster(cluster_name=CLUSTER, broker_name=NAMES[0], broker_id=first))

    def group(self, name: str) -> BrokerGroup | None:
        return self.state.groups.get(name)

    @rule(name=names)
    def get_next_broker_id(self, name: str) -> None:
        self.run(GetNextBrokerId(cluster_name=CLUSTER, broker_name=name))

    @rule(data=st.data(), name=names, code=check_codes)
    def apply_broker_id(self, data: st.DataObject, name: str, code: str) -> None:
        g = self.group(name)
        next_id = g.next_assign_broker_id if g else 1
        broker_id = data.draw(st.just(next_id) | broker_ids, label="broker_id")
        if g is not None and broker_id in g.brokers and data.draw(st.booleans(), label="retry"):
            code = g.brokers[broker_id].register_check_code
        self.run(
            ApplyBrokerId(
                cluster_name=CLUSTER,
                broker_name=name,
                broker_id=broker_id,
                register_check_code=code,
            )
        )

    @rule(name=names, broker_id=broker_ids, address=st.sampled_from(ADDRS), alive=id_sets)
    def register_broker(
        self, name: str, broker_id: int, address: str, alive: frozenset[int]
    ) -> None:
        self.run(
            RegisterBroker(
                cluster_name=CLUSTER,
                broker_name=name,
                broker_id=broker_id,
                address=address,
                alive=alive,
            )
        )

    @rule(
        data=st.data(),
        name=names,
        broker_id=st.none() | broker_ids,
        designate=st.booleans(),
        unclean=st.booleans(),
    )
    def elect_master(
        self, data: st.DataObject, name: str, broker_id: int | None, designate: bool, unclean: bool
    ) -> None:
        g = self.group(name)
        # Mostly heartbeats from (some of) the set's own brokers, sometimes from anyone.
        ids = sorted(g.brokers) if g else [1]
        live = data.draw(
            st.dictionaries(st.sampled_from(ids), live_infos) | live_maps, label="live"
        )
        self.run(
            ElectMaster(
                cluster_name=CLUSTER,
                broker_name=name,
                broker_id=broker_id,
                designate=designate,
                live=live,
                unclean=unclean,
            )
        )

    @rule(data=st.data(), name=names)
    def alter_sync_state_set(self, data: st.DataObject, name: str) -> None:
        """A request the master could send, with at most one field made wrong."""
        g = self.group(name)
        registered = sorted(g.brokers) if g else [1]
        master = g.master_broker_id if g and g.master_broker_id is not None else registered[0]
        fields: dict[str, Any] = {
            "broker_name": name,
            "master_broker_id": master,
            "master_epoch": g.master_epoch if g else 0,
            "new_sync_state_set": data.draw(st.frozensets(st.sampled_from(registered), min_size=1))
            | {master},
            "sync_state_set_epoch": g.sync_state_set_epoch if g else 0,
            "alive": frozenset(registered),
        }
        wrong = data.draw(
            st.sampled_from(
                [
                    None,
                    None,
                    None,
                    "master_broker_id",
                    "master_epoch",
                    "sync_state_set_epoch",
                    "new_sync_state_set",
                    "alive",
                ]
            ),
            label="wrong",
        )
        if wrong in ("master_broker_id", "master_epoch", "sync_state_set_epoch"):
            right = fields[wrong]
            fields[wrong] = data.draw(small.map(lambda v: v if v != right else v + 5), label=wrong)
        elif wrong is not None:
            fields[wrong] = data.draw(id_sets, label=wrong)
        self.run(AlterSyncStateSet(**fields))

    @rule(name=names)
    def get_replica_info(self, name: str) -> None:
        self.run(GetReplicaInfo(broker_name=name))

    @rule(
        data=st.data(),
        name=names,
        living=st.booleans(),
        cluster=st.none() | st.just(CLUSTER),
    )
    def clean_broker_data(
        self, data: st.DataObject, name: str, living: bool, cluster: str | None
    ) -> None:
        g = self.group(name)
        registered = sorted(g.brokers) if g else [1]
        ids = data.draw(
            st.none() | st.frozensets(st.sampled_from(registered), min_size=1) | id_sets,
            label="ids",
        )
        alive = data.draw(st.just(frozenset()) | id_sets, label="alive")
        self.run(
            CleanBrokerData(
                cluster_name=cluster,
                broker_name=name,
                broker_ids=ids,
                clean_living_broker=living,
                alive=alive,
            )
        )

    @invariant()
    def every_group_is_consistent(self) -> None:
        for name, g in self.state.groups.items():
            assert g.broker_name == name
            check_group(g)

    def teardown(self) -> None:
        # Determinism: the same committed log, replayed from empty, gives the same answers
        # and the same state, down to the snapshot bytes.
        state, results = run(self.log)
        assert results == self.results
        assert state == self.state
        assert cbor.dumps(KIND, 1, to_payload(state)) == cbor.dumps(KIND, 1, to_payload(self.state))


TestControllerMachine = ControllerMachine.TestCase
TestControllerMachine.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)


def test_the_machine_reaches_interesting_states() -> None:
    """Guard against a model that only ever sees rejections: a short honest run elects,
    expands the SSS, fails over and cleans, and the checks above accept every step."""
    m = ControllerMachine()
    alive = frozenset({1, 2, 3})
    for i in (1, 2, 3):
        m.run(
            ApplyBrokerId(
                cluster_name=CLUSTER,
                broker_name="a",
                broker_id=i,
                register_check_code=f"{ADDRS[i - 1]};0",
            )
        )
    m.run(ElectMaster(cluster_name=CLUSTER, broker_name="a", broker_id=2))
    m.run(
        AlterSyncStateSet(
            broker_name="a",
            master_broker_id=2,
            master_epoch=1,
            new_sync_state_set=alive,
            sync_state_set_epoch=1,
            alive=alive,
        )
    )
    m.run(ElectMaster(cluster_name=CLUSTER, broker_name="a", live={3: LiveInfo()}))
    m.run(CleanBrokerData(cluster_name=CLUSTER, broker_name="a", broker_ids=frozenset({1})))
    m.every_group_is_consistent()
    g = m.state.groups["a"]
    summary: dict[str, Any] = {
        "brokers": sorted(g.brokers),
        "master": g.master_broker_id,
        "epochs": (g.master_epoch, g.sync_state_set_epoch),
        "sss": sorted(g.sync_state_set),
    }
    assert summary == {"brokers": [2, 3], "master": 3, "epochs": (2, 3), "sss": [3]}
    assert [r.code for r in m.results] == [RC.SUCCESS] * 7
    m.teardown()
