"""The controller state machine: every command's rules in order, and RocketMQ's scenarios.

Each test steps ``apply`` and asserts the *whole* state after every command. A rejected
command must return its RocketMQ response code and the very same state object (``is``), so
a replica that rejects changes nothing. Rules: reference/rocketmq-controller.md §2.3 and §3;
scenarios: §8 (ReplicasInfoManagerTest, DLedgerControllerTest, ControllerManagerTest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import pytest

from controller.election import LiveInfo
from controller.state import (
    AlterSyncStateSet,
    ApplyBrokerId,
    BrokerGroup,
    BrokerMember,
    CleanBrokerData,
    Command,
    ControllerState,
    ElectMaster,
    GetNextBrokerId,
    GetReplicaInfo,
    RegisterBroker,
    Result,
    apply,
    from_payload,
    to_payload,
)
from protocol import cbor
from protocol.codes import ResponseCode as RC

CLUSTER = "DefaultCluster"
NAME = "broker-set-a"
OTHER = "broker-set-b"
ADDR = {i: f"127.0.0.1:{9000 + i - 1}" for i in range(1, 8)}
CODE = {i: f"{a};{1_700_000_000_000 + i}" for i, a in ADDR.items()}
ALL = (1, 2, 3)

# --- builders ------------------------------------------------------------------------------


def group(
    *ids: int,
    master: int | None = None,
    master_epoch: int = 0,
    sss: Iterable[int] = (),
    sss_epoch: int = 0,
    next_id: int | None = None,
    moved: Mapping[int, str] | None = None,
    name: str = NAME,
) -> BrokerGroup:
    """A broker set whose broker ``i`` applied with ``CODE[i]`` (address ``ADDR[i]``)."""
    moved = moved or {}
    return BrokerGroup(
        cluster_name=CLUSTER,
        broker_name=name,
        next_assign_broker_id=next_id if next_id is not None else max(ids, default=0) + 1,
        brokers={
            i: BrokerMember(address=moved.get(i, ADDR[i]), register_check_code=CODE[i]) for i in ids
        },
        master_broker_id=master,
        master_epoch=master_epoch,
        sync_state_set=frozenset(sss),
        sync_state_set_epoch=sss_epoch,
    )


def only(*groups: BrokerGroup) -> ControllerState:
    return ControllerState({g.broker_name: g for g in groups})


def live_map(live: Iterable[int] | Mapping[int, LiveInfo]) -> dict[int, LiveInfo]:
    if isinstance(live, Mapping):
        return dict(live)
    return {i: LiveInfo() for i in live}


def next_id(name: str = NAME) -> GetNextBrokerId:
    return GetNextBrokerId(cluster_name=CLUSTER, broker_name=name)


def apply_id(i: int, *, code: str | None = None, name: str = NAME) -> ApplyBrokerId:
    return ApplyBrokerId(
        cluster_name=CLUSTER,
        broker_name=name,
        broker_id=i,
        register_check_code=CODE[i] if code is None else code,
    )


def register(
    i: int, *, address: str | None = None, alive: Iterable[int] = (), name: str = NAME
) -> RegisterBroker:
    return RegisterBroker(
        cluster_name=CLUSTER,
        broker_name=name,
        broker_id=i,
        address=ADDR[i] if address is None else address,
        alive=frozenset(alive),
    )


def elect(
    broker_id: int | None = None,
    *,
    live: Iterable[int] | Mapping[int, LiveInfo] = (),
    designate: bool = False,
    unclean: bool = False,
    name: str = NAME,
) -> ElectMaster:
    return ElectMaster(
        cluster_name=CLUSTER,
        broker_name=name,
        broker_id=broker_id,
        designate=designate,
        live=live_map(live),
        unclean=unclean,
    )


def alter(
    sss: Iterable[int],
    *,
    master: int = 1,
    master_epoch: int = 1,
    sss_epoch: int = 1,
    alive: Iterable[int] = ALL,
    name: str = NAME,
) -> AlterSyncStateSet:
    return AlterSyncStateSet(
        broker_name=name,
        master_broker_id=master,
        master_epoch=master_epoch,
        new_sync_state_set=frozenset(sss),
        sync_state_set_epoch=sss_epoch,
        alive=frozenset(alive),
    )


def clean(
    ids: Iterable[int] | None = None,
    *,
    alive: Iterable[int] = (),
    living: bool = False,
    name: str = NAME,
    cluster: str | None = CLUSTER,
) -> CleanBrokerData:
    return CleanBrokerData(
        cluster_name=cluster,
        broker_name=name,
        broker_ids=None if ids is None else frozenset(ids),
        clean_living_broker=living,
        alive=frozenset(alive),
    )


def info(epoch: int, max_offset: int, priority: int = 2**31 - 1) -> LiveInfo:
    return LiveInfo(epoch=epoch, max_offset=max_offset, election_priority=priority)


# --- steppers ------------------------------------------------------------------------------


def step(
    state: ControllerState, command: Command, expected: ControllerState, code: int = RC.SUCCESS
) -> tuple[ControllerState, Result]:
    """Apply ``command``; the code and the whole new state must be as expected."""
    new, result = apply(state, command)
    assert result.code == code, result.remark
    assert new == expected
    return new, result


def rejected(state: ControllerState, command: Command, code: int) -> Result:
    """Apply ``command``; it must answer ``code`` and return the very same state object."""
    new, result = apply(state, command)
    assert result.code == code, result.remark
    assert new is state
    return result


def unchanged(state: ControllerState, command: Command) -> Result:
    """A command that succeeds without changing anything (reads, idempotent retries)."""
    return rejected(state, command, RC.SUCCESS)


def plain(result: Result) -> Result:
    """The result without its free-text remark, for whole-result comparisons."""
    return attrs.evolve(result, remark=None)


def replica(g: BrokerGroup, code: int = RC.SUCCESS, **extra: Any) -> Result:
    """The replica-info result a group answers with."""
    return Result(
        code=code,
        broker_name=g.broker_name,
        master_broker_id=g.master_broker_id,
        master_address=g.master_address,
        master_epoch=g.master_epoch,
        sync_state_set=g.sync_state_set,
        sync_state_set_epoch=g.sync_state_set_epoch,
        **extra,
    )


def elected(g: BrokerGroup) -> Result:
    """What a successful ElectMaster answers: the new replica info and every address."""
    return replica(g, broker_addrs={i: m.address for i, m in g.brokers.items()})


# --- GetNextBrokerId + ApplyBrokerId ---------------------------------------------------------


def test_next_broker_id_is_one_for_a_new_set_and_reads_nothing() -> None:
    s0 = ControllerState()
    assert plain(unchanged(s0, next_id())) == Result(broker_name=NAME, broker_id=1)
    s1 = only(group(1, 2))
    assert plain(unchanged(s1, next_id())) == Result(broker_name=NAME, broker_id=3)
    assert plain(unchanged(s1, next_id(OTHER))) == Result(broker_name=OTHER, broker_id=1)


def test_apply_broker_id_on_a_new_set_accepts_only_id_one() -> None:
    s0 = ControllerState()
    for wrong in (0, 2, 3, -1):
        rejected(s0, apply_id(wrong, code=CODE[1]), RC.CONTROLLER_BROKER_ID_INVALID)
    s1, r = step(s0, apply_id(1), only(group(1)))
    assert plain(r) == Result(broker_name=NAME, broker_id=1)
    assert s1.groups[NAME].next_assign_broker_id == 2
    assert plain(unchanged(s1, next_id())) == Result(broker_name=NAME, broker_id=2)


@pytest.mark.parametrize(
    ("check_code", "address"),
    [
        ("10.0.0.7:10911;1700000000123", "10.0.0.7:10911"),
        ("10.0.0.7:10911", "10.0.0.7:10911"),  # no ';': the whole code is the address
        ("10.0.0.7:10911;17;extra", "10.0.0.7:10911"),  # text before the first ';'
    ],
)
def test_apply_broker_id_takes_the_address_from_the_check_code(
    check_code: str, address: str
) -> None:
    new, _ = apply(ControllerState(), apply_id(1, code=check_code))
    member = BrokerMember(address=address, register_check_code=check_code)
    assert new == ControllerState(
        {
            NAME: BrokerGroup(
                cluster_name=CLUSTER, broker_name=NAME, next_assign_broker_id=2, brokers={1: member}
            )
        }
    )


def test_apply_broker_id_retry_with_the_same_code_is_idempotent_another_code_is_refused() -> None:
    s = only(group(1, 2))
    # The broker crashed between ApplyBrokerId and writing its final identity file: the
    # restart resends the id and the code from its temp file and must be accepted.
    assert plain(unchanged(s, apply_id(2))) == Result(broker_name=NAME, broker_id=2)
    assert plain(unchanged(s, apply_id(1))) == Result(broker_name=NAME, broker_id=1)
    # Another broker racing for the same id carries another code: 2014, nothing changes.
    rejected(s, apply_id(2, code=f"{ADDR[5]};1"), RC.CONTROLLER_BROKER_ID_INVALID)
    rejected(s, apply_id(2, code=f"{ADDR[2]};1"), RC.CONTROLLER_BROKER_ID_INVALID)


def test_apply_broker_id_adds_a_free_id_and_the_next_id_stays_above_every_id() -> None:
    s1, _ = step(only(group(1)), apply_id(2), only(group(1, 2)))
    assert plain(unchanged(s1, next_id())).broker_id == 3
    # Out of order (a leftover temp identity file): RocketMQ would bump next to 4, later
    # hand out the taken id 5, and that broker would get 2014 forever. We jump past it.
    s2, _ = step(s1, apply_id(5), only(group(1, 2, 5, next_id=6)))
    # A gap below next is still free; next does not move.
    s3, _ = step(s2, apply_id(4), only(group(1, 2, 4, 5, next_id=6)))
    assert plain(unchanged(s3, next_id())).broker_id == 6
    # Another set is untouched and still starts at 1.
    assert plain(unchanged(s3, next_id(OTHER))).broker_id == 1


def test_a_cleaned_id_is_not_handed_out_again() -> None:
    s0 = only(group(1, 2, 3, master=1, master_epoch=1, sss=[1, 2], sss_epoch=2))
    s1, _ = step(
        s0,
        clean([3]),
        only(group(1, 2, master=1, master_epoch=1, sss=[1, 2], sss_epoch=2, next_id=4)),
    )
    assert plain(unchanged(s1, next_id())).broker_id == 4


# --- RegisterBroker ------------------------------------------------------------------------


def test_register_needs_the_set_and_the_id_to_be_applied_first() -> None:
    rejected(ControllerState(), register(1), RC.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED)
    rejected(only(group(1)), register(2), RC.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED)
    rejected(only(group(1)), register(1, name=OTHER), RC.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED)


def test_register_with_the_same_address_changes_nothing() -> None:
    s = only(group(1, 2))
    r = unchanged(s, register(2, alive=[1, 2]))
    assert plain(r) == Result(
        broker_name=NAME, broker_id=2, sync_state_set=frozenset(), sync_state_set_epoch=0
    )


def test_register_absorbs_an_address_change_and_keeps_the_check_code() -> None:
    s0 = only(group(1, 2, master=1, master_epoch=1, sss=[1], sss_epoch=1))
    moved = "10.9.9.9:9001"
    s1, r = step(
        s0,
        register(2, address=moved, alive=[1, 2]),
        only(group(1, 2, master=1, master_epoch=1, sss=[1], sss_epoch=1, moved={2: moved})),
    )
    assert s1.groups[NAME].brokers[2] == BrokerMember(address=moved, register_check_code=CODE[2])
    assert plain(r) == replica(s1.groups[NAME], broker_id=2)
    # The master itself moved: the answer already carries its new address.
    _, r2 = step(
        s1,
        register(1, address="10.9.9.9:9000", alive=[1, 2]),
        only(
            group(
                1,
                2,
                master=1,
                master_epoch=1,
                sss=[1],
                sss_epoch=1,
                moved={1: "10.9.9.9:9000", 2: moved},
            )
        ),
    )
    assert r2.master_address == "10.9.9.9:9000"


def test_register_reports_the_master_only_when_it_is_alive() -> None:
    s = only(group(1, 2, 3, master=1, master_epoch=1, sss=[1, 2], sss_epoch=2))
    r = unchanged(s, register(3, alive=[1, 3]))
    assert plain(r) == Result(
        broker_name=NAME,
        broker_id=3,
        master_broker_id=1,
        master_address=ADDR[1],
        master_epoch=1,
        sync_state_set=frozenset({1, 2}),
        sync_state_set_epoch=2,
    )
    r = unchanged(s, register(3, alive=[2, 3]))  # the master is dead
    assert plain(r) == Result(
        broker_name=NAME, broker_id=3, sync_state_set=frozenset({1, 2}), sync_state_set_epoch=2
    )
    s_no_master = only(group(1, 2, 3, master_epoch=2, sss=[1], sss_epoch=2))
    r = unchanged(s_no_master, register(3, alive=ALL))
    assert plain(r) == Result(
        broker_name=NAME, broker_id=3, sync_state_set=frozenset({1}), sync_state_set_epoch=2
    )


# --- ElectMaster ---------------------------------------------------------------------------


def test_elect_in_an_unknown_set_needs_registration() -> None:
    s = only(group(1, name=OTHER))
    for command in (elect(), elect(1, live=[1]), elect(1, designate=True, live=[1])):
        rejected(s, command, RC.CONTROLLER_BROKER_NEED_TO_BE_REGISTERED)


def test_first_election_the_first_broker_that_asks_wins() -> None:
    s0 = only(group(1, 2, 3))
    # Broker 2 asks first; no liveness is needed for the very first election.
    s1, r = step(s0, elect(2), only(group(1, 2, 3, master=2, master_epoch=1, sss=[2], sss_epoch=1)))
    assert plain(r) == elected(s1.groups[NAME])
    assert r.broker_addrs == {1: ADDR[1], 2: ADDR[2], 3: ADDR[3]}
    # Broker 1 asks next: the live master stays.
    r = rejected(s1, elect(1, live=ALL), RC.CONTROLLER_MASTER_STILL_EXIST)
    assert plain(r) == replica(s1.groups[NAME], RC.CONTROLLER_MASTER_STILL_EXIST)


def test_first_election_by_an_unregistered_id_is_refused() -> None:
    # RocketMQ would make broker 7 master of a set it never joined; we keep the invariant
    # "the master is a registered broker" and fall through to the policy (nothing to pick).
    rejected(only(group(1)), elect(7, live=[7]), RC.CONTROLLER_ELECT_MASTER_FAILED)


def test_controller_triggered_election_on_a_new_set_spends_the_first_election() -> None:
    # §2.3 step 3/6 applied literally: no broker id, so the policy runs on an empty SSS;
    # the failure is still committed (masterEpoch 1), and from then on nobody is "first".
    s0 = only(group(1, 2))
    s1, r = step(
        s0,
        elect(live=[1, 2]),
        only(group(1, 2, master_epoch=1)),
        RC.CONTROLLER_MASTER_NOT_AVAILABLE,
    )
    assert plain(r) == replica(s1.groups[NAME], RC.CONTROLLER_MASTER_NOT_AVAILABLE)
    rejected(s1, elect(1, live=[1, 2]), RC.CONTROLLER_ELECT_MASTER_FAILED)


def test_elect_master_still_exist_changes_nothing() -> None:
    s = only(group(1, 2, 3, master=1, master_epoch=1, sss=ALL, sss_epoch=2))
    for command in (elect(live=ALL), elect(2, live=ALL), elect(3, live=ALL, unclean=True)):
        r = rejected(s, command, RC.CONTROLLER_MASTER_STILL_EXIST)
        assert plain(r) == replica(s.groups[NAME], RC.CONTROLLER_MASTER_STILL_EXIST)


def test_elect_by_policy_when_the_master_is_dead() -> None:
    s0 = only(group(1, 2, 3, master=1, master_epoch=1, sss=ALL, sss_epoch=2))
    live = {2: info(1, 10), 3: info(1, 20)}
    s1, r = step(
        s0, elect(live=live), only(group(1, 2, 3, master=3, master_epoch=2, sss=[3], sss_epoch=3))
    )
    assert plain(r) == elected(s1.groups[NAME])


def test_controller_triggered_election_with_no_candidate_clears_the_master() -> None:
    s0 = only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=2))
    s1, r = step(
        s0,
        elect(live=[2, 3]),
        only(group(1, 2, 3, master_epoch=2, sss=[1], sss_epoch=2)),
        RC.CONTROLLER_MASTER_NOT_AVAILABLE,
    )
    assert plain(r) == replica(s1.groups[NAME], RC.CONTROLLER_MASTER_NOT_AVAILABLE)
    # Every retry commits another "no master" (§2.4: one failover often bumps by 3).
    step(
        s1,
        elect(live=[2, 3]),
        only(group(1, 2, 3, master_epoch=3, sss=[1], sss_epoch=2)),
        RC.CONTROLLER_MASTER_NOT_AVAILABLE,
    )


def test_broker_or_admin_triggered_election_failure_changes_nothing() -> None:
    s = only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=2))
    rejected(s, elect(2, live=[2, 3]), RC.CONTROLLER_ELECT_MASTER_FAILED)
    rejected(s, elect(2, live=[2, 3], designate=True), RC.CONTROLLER_ELECT_MASTER_FAILED)
    no_master = only(group(1, 2, 3, master_epoch=2, sss=[1], sss_epoch=2))
    rejected(no_master, elect(3, live=[2, 3]), RC.CONTROLLER_ELECT_MASTER_FAILED)


def test_designated_election() -> None:
    s0 = only(group(1, 2, 3, master=1, master_epoch=1, sss=ALL, sss_epoch=2))
    # The target is dead: no fallback to another candidate.
    rejected(s0, elect(3, designate=True, live=[1, 2]), RC.CONTROLLER_ELECT_MASTER_FAILED)
    # The target is the live master.
    rejected(s0, elect(1, designate=True, live=ALL), RC.CONTROLLER_MASTER_STILL_EXIST)
    # The target is alive: it wins even over a live master (mqadmin electMaster).
    s1, r = step(
        s0,
        elect(3, designate=True, live=ALL),
        only(group(1, 2, 3, master=3, master_epoch=2, sss=[3], sss_epoch=3)),
    )
    assert plain(r) == elected(s1.groups[NAME])
    # Designated outside the SSS: only with unclean election.
    rejected(s1, elect(2, designate=True, live=ALL), RC.CONTROLLER_ELECT_MASTER_FAILED)
    step(
        s1,
        elect(2, designate=True, live=ALL, unclean=True),
        only(group(1, 2, 3, master=2, master_epoch=3, sss=[2], sss_epoch=4)),
    )


def test_unclean_election_only_when_enabled() -> None:
    s0 = only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=2))
    live = {2: info(1, 5), 3: info(1, 9)}
    rejected(s0, elect(2, live=live), RC.CONTROLLER_ELECT_MASTER_FAILED)
    s1, r = step(
        s0,
        elect(2, live=live, unclean=True),
        only(group(1, 2, 3, master=3, master_epoch=2, sss=[3], sss_epoch=3)),
    )
    assert plain(r) == elected(s1.groups[NAME])


# --- AlterSyncStateSet ---------------------------------------------------------------------

ALTER_BASE = only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=1))


@pytest.mark.parametrize(
    ("label", "command", "code"),
    [
        # Each request breaks its check and (where it can) every later one, so only the
        # order of the checks decides which code comes back.
        (
            "1 set unknown",
            alter([2, 4], master=2, master_epoch=9, sss_epoch=9, alive=(), name="nope"),
            RC.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
        ),
        (
            "2 same set",
            alter([1], master=2, master_epoch=9, sss_epoch=9, alive=()),
            RC.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
        ),
        (
            "3 not the master",
            alter([2, 4], master=2, master_epoch=9, sss_epoch=9, alive=()),
            RC.CONTROLLER_INVALID_MASTER,
        ),
        (
            "4 stale master epoch",
            alter([2, 4], master_epoch=0, sss_epoch=9, alive=()),
            RC.CONTROLLER_FENCED_MASTER_EPOCH,
        ),
        ("4 newer master epoch", alter([1, 2], master_epoch=2), RC.CONTROLLER_FENCED_MASTER_EPOCH),
        (
            "5 stale SSS epoch",
            alter([2, 4], sss_epoch=0, alive=()),
            RC.CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
        ),
        ("6 unregistered", alter([4], alive=()), RC.CONTROLLER_INVALID_REPLICAS),
        # Upstream checks id by id in HashSet order; we check all ids for registration first,
        # so the answer never depends on iteration order.
        ("6 unregistered before dead", alter([2, 4], alive=()), RC.CONTROLLER_INVALID_REPLICAS),
        ("6 dead", alter([2], alive=[1]), RC.CONTROLLER_BROKER_NOT_ALIVE),
        (
            "6 the master must be alive too",
            alter([1, 2], alive=[2, 3]),
            RC.CONTROLLER_BROKER_NOT_ALIVE,
        ),
        ("7 master missing", alter([2, 3]), RC.CONTROLLER_ALTER_SYNC_STATE_SET_FAILED),
    ],
)
def test_alter_sync_state_set_checks_in_order(label: str, command: Command, code: int) -> None:
    rejected(ALTER_BASE, command, code)


def test_alter_sync_state_set_without_a_master_is_invalid_master() -> None:
    s = only(group(1, 2, 3, master_epoch=2, sss=[1], sss_epoch=1))
    rejected(s, alter([1, 2], master_epoch=2), RC.CONTROLLER_INVALID_MASTER)


def test_alter_sync_state_set_success_bumps_the_sss_epoch() -> None:
    s1, r = step(
        ALTER_BASE,
        alter([1, 2]),
        only(group(1, 2, 3, master=1, master_epoch=1, sss=[1, 2], sss_epoch=2)),
    )
    assert plain(r) == replica(s1.groups[NAME])
    assert (r.sync_state_set, r.sync_state_set_epoch) == (frozenset({1, 2}), 2)
    # The request that was just accepted is now stale.
    rejected(s1, alter([1, 3]), RC.CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH)
    # No rule limits the delta: add 3 and drop 2 in one request.
    s2, _ = step(
        s1,
        alter([1, 3], sss_epoch=2),
        only(group(1, 2, 3, master=1, master_epoch=1, sss=[1, 3], sss_epoch=3)),
    )
    step(
        s2,
        alter([1], sss_epoch=3, alive=[1]),
        only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=4)),
    )


# --- GetReplicaInfo ------------------------------------------------------------------------


def test_get_replica_info() -> None:
    rejected(
        only(group(1)), GetReplicaInfo(broker_name=OTHER), RC.CONTROLLER_BROKER_METADATA_NOT_EXIST
    )
    s = only(group(1, 2, master=2, master_epoch=3, sss=[1, 2], sss_epoch=5))
    r = unchanged(s, GetReplicaInfo(broker_name=NAME))
    assert plain(r) == Result(
        broker_name=NAME,
        master_broker_id=2,
        master_address=ADDR[2],
        master_epoch=3,
        sync_state_set=frozenset({1, 2}),
        sync_state_set_epoch=5,
    )
    no_master = only(group(1, 2, master_epoch=4, sss=[2], sss_epoch=5))
    r = unchanged(no_master, GetReplicaInfo(broker_name=NAME))
    assert (r.master_broker_id, r.master_address, r.master_epoch) == (None, None, 4)


# --- CleanBrokerData -----------------------------------------------------------------------

B = group(4, 5, master=4, master_epoch=1, sss=[4], sss_epoch=1, name=OTHER)
CLEAN_BASE = only(group(1, 2, 3, master=1, master_epoch=1, sss=ALL, sss_epoch=2), B)


def test_clean_broker_data_refusals() -> None:
    invalid = RC.CONTROLLER_INVALID_CLEAN_BROKER_METADATA
    for command in (clean(name="nope"), clean([1], name="nope"), clean(name="nope", living=True)):
        rejected(CLEAN_BASE, command, invalid)
    # The whole set while it still has a master (alive or not: the master id decides).
    rejected(CLEAN_BASE, clean(), invalid)
    rejected(CLEAN_BASE, clean([], alive=()), invalid)  # an empty list means the whole set
    # A listed id is alive.
    rejected(CLEAN_BASE, clean([2, 3], alive=[3]), invalid)
    rejected(CLEAN_BASE, clean([1], alive=[1]), invalid)


def test_clean_broker_data_id_lists() -> None:
    # A dead slave: gone from the ids and the SSS; no epoch moves, next id stays.
    step(
        CLEAN_BASE,
        clean([3], alive=[1, 2]),
        only(group(1, 2, master=1, master_epoch=1, sss=[1, 2], sss_epoch=2, next_id=4), B),
    )
    # The dead master: the master goes too (the master is always a registered SSS member),
    # and (beyond RocketMQ) the master epoch moves on.
    step(
        CLEAN_BASE,
        clean([1], alive=[2, 3]),
        only(group(2, 3, master_epoch=2, sss=[2, 3], sss_epoch=2, next_id=4), B),
    )
    # Ids that were never registered: nothing to remove.
    step(CLEAN_BASE, clean([6]), CLEAN_BASE)
    # Every id: the set is gone; the other set is untouched.
    step(CLEAN_BASE, clean([1, 2, 3]), only(B))


def test_clean_broker_data_whole_set_without_a_master() -> None:
    s = only(group(1, 2, master_epoch=2, sss=[1], sss_epoch=1), B)
    step(s, clean(alive=[1, 2]), only(B))
    step(s, clean([]), only(B))


def test_clean_broker_data_clean_living_forces() -> None:
    step(CLEAN_BASE, clean(alive=ALL, living=True), only(B))
    step(
        CLEAN_BASE,
        clean([1], alive=ALL, living=True),
        # Beyond RocketMQ: cleaning the master bumps the master epoch (1 -> 2).
        only(group(2, 3, master_epoch=2, sss=[2, 3], sss_epoch=2, next_id=4), B),
    )
    step(CLEAN_BASE, clean([1, 2, 3], alive=ALL, living=True, cluster=None), only(B))


def test_clean_broker_data_keeps_a_set_whose_sss_became_empty() -> None:
    # Upstream drops the SyncStateInfo once its set is empty (so the set stops "existing"
    # while its other brokers stay in the replica table and can no longer register). We
    # keep the set with the remaining brokers. Here: never elected, so the SSS was empty.
    s = only(group(1, 2, 3))
    step(s, clean([3]), only(group(1, 2, next_id=4)))


# --- upstream scenarios (§8) ---------------------------------------------------------------


def register_flow(
    state: ControllerState, i: int, *, alive: Iterable[int], master: int | None
) -> ControllerState:
    """GetNextBrokerId → ApplyBrokerId → RegisterBroker, as ReplicasManager.register does."""
    assert plain(unchanged(state, next_id())).broker_id == i
    s1, _ = apply(state, apply_id(i))
    before = state.groups.get(NAME)
    expected = (
        group(i)
        if before is None
        else attrs.evolve(
            before,
            brokers={
                **before.brokers,
                i: BrokerMember(address=ADDR[i], register_check_code=CODE[i]),
            },
            next_assign_broker_id=i + 1,
        )
    )
    assert s1 == only(expected)
    r = unchanged(s1, register(i, alive=alive))
    assert r.master_broker_id == master
    return s1


def mock_meta_data() -> ControllerState:
    """ReplicasInfoManagerTest.mockMetaData: 3 brokers, 1 elected first, SSS {1, 2, 3}."""
    s = ControllerState()
    for i in ALL:
        s = register_flow(s, i, alive=ALL, master=None)
    assert s == only(group(1, 2, 3))
    s, r = step(
        s, elect(1, live=ALL), only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=1))
    )
    assert (r.master_broker_id, r.master_address, r.master_epoch, r.sync_state_set_epoch) == (
        1,
        ADDR[1],
        1,
        1,
    )
    rejected(s, elect(2, live=ALL), RC.CONTROLLER_MASTER_STILL_EXIST)
    rejected(s, elect(3, live=ALL), RC.CONTROLLER_MASTER_STILL_EXIST)
    s, _ = step(s, alter(ALL), only(group(1, 2, 3, master=1, master_epoch=1, sss=ALL, sss_epoch=2)))
    return s


def test_register_three_brokers_elect_and_expand_the_sss() -> None:
    s = mock_meta_data()
    r = unchanged(s, GetReplicaInfo(broker_name=NAME))
    assert plain(r) == replica(
        only(group(1, 2, 3, master=1, master_epoch=1, sss=ALL, sss_epoch=2)).groups[NAME]
    )


def test_registering_while_a_master_exists_returns_it() -> None:
    s = ControllerState()
    s = register_flow(s, 1, alive=[1], master=None)
    s = register_flow(s, 2, alive=[1, 2], master=None)
    s, _ = step(
        s, elect(1, live=[1, 2]), only(group(1, 2, master=1, master_epoch=1, sss=[1], sss_epoch=1))
    )
    rejected(s, elect(2, live=[1, 2]), RC.CONTROLLER_MASTER_STILL_EXIST)
    s = register_flow(s, 3, alive=ALL, master=1)
    rejected(s, elect(3, live=ALL), RC.CONTROLLER_MASTER_STILL_EXIST)
    assert s == only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=1))


def test_old_master_dead_and_only_broker_3_alive_makes_3_master() -> None:
    s = mock_meta_data()
    s, r = step(
        s, elect(3, live=[3]), only(group(1, 2, 3, master=3, master_epoch=2, sss=[3], sss_epoch=3))
    )
    assert plain(r) == elected(s.groups[NAME])


def test_controller_triggered_election_with_the_old_master_alive() -> None:
    s = mock_meta_data()
    live = {1: info(1, 1), 2: info(1, 2), 3: info(1, 3)}
    rejected(s, elect(live=live), RC.CONTROLLER_MASTER_STILL_EXIST)


@pytest.mark.parametrize(
    ("label", "live", "winner"),
    [
        ("higher epoch", {2: info(1, 2), 3: info(0, 3)}, 2),
        ("equal epoch, higher offset", {2: info(1, 2), 3: info(1, 3)}, 3),
        ("equal epoch and offset, lower priority", {2: info(1, 3, 2), 3: info(1, 3, 1)}, 3),
        (
            "all equal: lower id (ours; upstream takes an arbitrary one)",
            {3: info(1, 3, 1), 2: info(1, 3, 1)},
            2,
        ),
    ],
)
def test_election_ranking(label: str, live: dict[int, LiveInfo], winner: int) -> None:
    s = mock_meta_data()  # the master (1) has stopped heartbeating
    _, r = step(
        s,
        elect(live=live),
        only(group(1, 2, 3, master=winner, master_epoch=2, sss=[winner], sss_epoch=3)),
    )
    assert (r.master_broker_id, r.master_address, r.master_epoch) == (winner, ADDR[winner], 2)


def test_admin_designated_elections() -> None:
    """ReplicasInfoManagerTest.testElectMaster."""
    s = mock_meta_data()
    s, r = step(
        s, elect(live=[2, 3]), only(group(1, 2, 3, master=2, master_epoch=2, sss=[2], sss_epoch=3))
    )
    assert r.master_broker_id != 1
    s, _ = step(
        s,
        alter(ALL, master=2, master_epoch=2, sss_epoch=3),
        only(group(1, 2, 3, master=2, master_epoch=2, sss=ALL, sss_epoch=4)),
    )
    rejected(s, elect(1, designate=True, live=[2, 3]), RC.CONTROLLER_ELECT_MASTER_FAILED)
    rejected(s, elect(2, designate=True, live=ALL), RC.CONTROLLER_MASTER_STILL_EXIST)
    s, r = step(
        s,
        elect(1, designate=True, live=[1, 3]),
        only(group(1, 2, 3, master=1, master_epoch=3, sss=[1], sss_epoch=5)),
    )
    assert (r.master_broker_id, r.master_address, r.master_epoch) == (1, ADDR[1], 3)


def test_full_shutdown_with_unclean_disabled() -> None:
    """ReplicasInfoManagerTest.testAllReplicasShutdownAndRestart + the DLedger variant."""
    s = mock_meta_data()
    s, _ = step(
        s,
        alter([1], sss_epoch=2, alive=[1]),
        only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=3)),
    )
    # Everything is down; the controller's election finds nobody: master cleared, SSS kept.
    s, _ = step(
        s,
        elect(live=[]),
        only(group(1, 2, 3, master_epoch=2, sss=[1], sss_epoch=3)),
        RC.CONTROLLER_MASTER_NOT_AVAILABLE,
    )
    # Broker 2 comes back first: not in the SSS, so it cannot win (and nothing is committed).
    r = rejected(s, elect(2, live=[2]), RC.CONTROLLER_ELECT_MASTER_FAILED)
    assert (r.master_broker_id, r.master_address) == (None, None)
    # Registering meanwhile reports no master.
    assert unchanged(s, register(2, alive=[2])).master_broker_id is None
    # Broker 1 (the only SSS member) returns and asks: elected at epoch 3.
    s, r = step(
        s,
        elect(1, live=[1, 2]),
        only(group(1, 2, 3, master=1, master_epoch=3, sss=[1], sss_epoch=4)),
    )
    assert (r.master_broker_id, r.master_address, r.master_epoch) == (1, ADDR[1], 3)


def test_full_shutdown_with_unclean_enabled_elects_outside_the_sss() -> None:
    """DLedgerControllerTest.testEnableElectUnCleanMaster."""
    s = mock_meta_data()
    s, _ = step(
        s,
        alter([1], sss_epoch=2, alive=[1]),
        only(group(1, 2, 3, master=1, master_epoch=1, sss=[1], sss_epoch=3)),
    )
    s, r = step(
        s,
        elect(live=[2, 3], unclean=True),
        only(group(1, 2, 3, master=2, master_epoch=2, sss=[2], sss_epoch=4)),
    )
    assert r.master_broker_id not in (None, 1)
    assert r.sync_state_set == frozenset({r.master_broker_id})


def test_two_brokers_race_then_the_master_stops() -> None:
    """ControllerManagerTest: both ask, the first wins; the master stops, unclean on."""
    s = ControllerState()
    s = register_flow(s, 1, alive=[1], master=None)
    s = register_flow(s, 2, alive=[1, 2], master=None)
    s, _ = step(
        s,
        elect(1, live=[1, 2], unclean=True),
        only(group(1, 2, master=1, master_epoch=1, sss=[1], sss_epoch=1)),
    )
    rejected(s, elect(2, live=[1, 2], unclean=True), RC.CONTROLLER_MASTER_STILL_EXIST)
    step(
        s,
        elect(live=[2], unclean=True),
        only(group(1, 2, master=2, master_epoch=2, sss=[2], sss_epoch=2)),
    )


def test_clean_broker_data_scenario() -> None:
    """ReplicasInfoManagerTest.testCleanBrokerData (each request against the same state)."""
    s = mock_meta_data()
    invalid = RC.CONTROLLER_INVALID_CLEAN_BROKER_METADATA
    rejected(s, clean([1], alive=ALL), invalid)
    rejected(s, clean(alive=ALL), invalid)
    # Upstream keeps master epoch 1 here; we bump it when the master is cleaned.
    step(s, clean([1]), only(group(2, 3, master_epoch=2, sss=[2, 3], sss_epoch=2, next_id=4)))
    step(s, clean([1, 2, 3]), ControllerState())
    rejected(s, clean([1, 2, 3], living=True, name="broker12"), invalid)
    rejected(s, clean([1, 2, 3], living=True, name="broker12", cluster=None), invalid)
    step(s, clean([1, 2, 3], living=True, cluster=None), ControllerState())


# --- snapshots -----------------------------------------------------------------------------


def test_snapshot_round_trip_of_a_concrete_state() -> None:
    s = only(
        group(1, 2, 3, master=1, master_epoch=4, sss=ALL, sss_epoch=7, moved={2: "10.0.0.2:1"}),
        group(4, 5, master_epoch=2, sss=[4], sss_epoch=1, next_id=9, name=OTHER),
    )
    assert from_payload(to_payload(s)) == s
    version, payload = cbor.loads(
        cbor.dumps("controller-state", 1, to_payload(s)), kind="controller-state", max_version=1
    )
    assert (version, from_payload(payload)) == (1, s)
    assert from_payload(to_payload(ControllerState())) == ControllerState()


def _good_group() -> dict[str, Any]:
    raw: dict[str, Any] = to_payload(
        only(group(1, 2, master=1, master_epoch=1, sss=[1, 2], sss_epoch=2))
    )[NAME]
    return raw


def _with(**changes: Any) -> dict[str, Any]:
    raw = _good_group()
    for key, value in changes.items():
        if value is KeyError:
            del raw[key]
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_with(cluster=KeyError), id="missing key"),
        pytest.param(_with(sss_epoch=KeyError), id="missing sss_epoch"),
        pytest.param("not a map", id="group is a string"),
        pytest.param([1, 2], id="group is a list"),
        pytest.param(_with(cluster=None), id="cluster None"),
        pytest.param(_with(next_id="3"), id="next_id a string"),
        pytest.param(_with(master_epoch=True), id="epoch a bool"),
        pytest.param(_with(master_epoch=1.5), id="epoch a float"),
        pytest.param(_with(brokers=[]), id="brokers a list"),
        pytest.param(_with(brokers={"1": [ADDR[1], CODE[1]]}), id="broker id a string"),
        pytest.param(_with(brokers={1: "ab"}), id="member a 2-letter string"),
        pytest.param(_with(brokers={1: [ADDR[1]]}), id="member too short"),
        pytest.param(_with(brokers={1: [ADDR[1], None]}), id="check code None"),
        pytest.param(_with(sss=1), id="sss an int"),
        pytest.param(_with(sss=["1"]), id="sss member a string"),
        pytest.param(_with(sss=[1, 2, 3]), id="sss member unregistered"),
        pytest.param(_with(master="1"), id="master a string"),
        pytest.param(_with(master=2, sss=[1]), id="master outside the sss"),
    ],
)
def test_malformed_snapshot_raises_value_error_naming_the_group(raw: Any) -> None:
    good = to_payload(only(group(4, name=OTHER)))
    with pytest.raises(ValueError, match=f"group '{NAME}'"):
        from_payload({**good, NAME: raw})


@pytest.mark.parametrize("payload", [[], "x", None, 5])
def test_snapshot_that_is_not_a_map_raises_value_error(payload: Any) -> None:
    with pytest.raises(ValueError, match="map of groups"):
        from_payload(payload)


def test_snapshot_group_name_must_be_text() -> None:
    with pytest.raises(ValueError, match="group 7"):
        from_payload({7: _good_group()})


def test_apply_broker_id_below_the_first_id_is_invalid() -> None:
    """Beyond RocketMQ: id 0 means "master" to the NameServer; ids start at 1."""
    s, _ = apply(ControllerState(), apply_id(1))
    for bad in (0, -1):
        rejected(s, apply_id(bad, code="127.0.0.1:9999;1"), RC.CONTROLLER_BROKER_ID_INVALID)
