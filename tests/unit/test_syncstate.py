"""The SyncStateSet / confirmOffset core: tables of events, the whole state after each one."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.ha.syncstate import (
    UNBOUNDED,
    Action,
    ConfirmOffsetChanged,
    SyncState,
    SyncStateSetChanged,
    SyncStateSetProposed,
)

M = 0  # the master's broker id


def snap(s: SyncState) -> dict[str, Any]:
    """The whole observable state, in a form a table can spell out."""
    return {
        "members": tuple(sorted(s.members)),
        "epoch": s.epoch,
        "proposal": None if s.proposal is None else tuple(sorted(s.proposal)),
        "in_flight": tuple(sorted(s.in_flight)),
        "confirm": s.confirm_offset,
        "replicated": s.replicated_offset(),
        "slaves": {
            i: (p.live, p.ack_offset, p.caught_up_s, p.disconnected)
            for i, p in sorted(s.slaves.items())
        },
    }


def changed(members: set[int], epoch: int) -> SyncStateSetChanged:
    return SyncStateSetChanged(members=frozenset(members), epoch=epoch)


def proposed(members: set[int], epoch: int) -> SyncStateSetProposed:
    return SyncStateSetProposed(members=frozenset(members), epoch=epoch)


def confirm(offset: int) -> ConfirmOffsetChanged:
    return ConfirmOffsetChanged(offset=offset)


Step = tuple[str, Callable[[SyncState], list[Action]], list[Action], dict[str, Any]]


def run_table(state: SyncState, steps: list[Step]) -> None:
    for label, event, actions, expected in steps:
        assert event(state) == actions, label
        assert snap(state) == expected, label


def static(**kw: Any) -> SyncState:
    return SyncState.create(master_id=M, now_s=0.0, **kw)


def controller(**kw: Any) -> SyncState:
    return SyncState.create(master_id=M, now_s=0.0, controller_mode=True, **kw)


# --- static mode -------------------------------------------------------------------------


def test_static_expand_on_catch_up_then_shrink_on_lag() -> None:
    base = {"members": (0,), "epoch": 0, "proposal": None, "in_flight": ()}
    run_table(
        static(),
        [
            (
                "the master alone: confirm follows its max",
                lambda s: s.master_advanced(1000),
                [confirm(1000)],
                {**base, "confirm": 1000, "replicated": -1, "slaves": {}},
            ),
            (
                "slave 1 handshakes",
                lambda s: s.slave_connected(1),
                [],
                {**base, "confirm": 1000, "replicated": -1, "slaves": {1: (True, -1, None, False)}},
            ),
            (
                "an ack below the confirm offset does not join",
                lambda s: s.slave_acked(1, 500, 1.0, master_max=1000),
                [],
                {
                    **base,
                    "confirm": 1000,
                    "replicated": 500,
                    "slaves": {1: (True, 500, None, False)},
                },
            ),
            (
                "acking the master's max: caught up now, joins at once (static)",
                lambda s: s.slave_acked(1, 1000, 2.0, master_max=1000),
                [changed({0, 1}, 1)],
                {
                    **base,
                    "members": (0, 1),
                    "epoch": 1,
                    "confirm": 1000,
                    "replicated": 1000,
                    "slaves": {1: (True, 1000, 2.0, False)},
                },
            ),
            (
                "new data: the confirm offset now waits for slave 1",
                lambda s: s.master_advanced(1500),
                [],
                {
                    **base,
                    "members": (0, 1),
                    "epoch": 1,
                    "confirm": 1000,
                    "replicated": 1000,
                    "slaves": {1: (True, 1000, 2.0, False)},
                },
            ),
            (
                "acking what the master had at the last send: caught up at that send",
                lambda s: s.slave_acked(
                    1, 1200, 3.0, master_max=1500, sent_master_max=1200, sent_at_s=2.5
                ),
                [confirm(1200)],
                {
                    **base,
                    "members": (0, 1),
                    "epoch": 1,
                    "confirm": 1200,
                    "replicated": 1200,
                    "slaves": {1: (True, 1200, 2.5, False)},
                },
            ),
            (
                "an ack that does not reach the last send's max is no catch-up",
                lambda s: s.slave_acked(
                    1, 1300, 9.0, master_max=1500, sent_master_max=1500, sent_at_s=8.0
                ),
                [confirm(1300)],
                {
                    **base,
                    "members": (0, 1),
                    "epoch": 1,
                    "confirm": 1300,
                    "replicated": 1300,
                    "slaves": {1: (True, 1300, 2.5, False)},
                },
            ),
            (
                "the check just inside 15 s keeps it",
                lambda s: s.check(17.5, master_max=1500),
                [],
                {
                    **base,
                    "members": (0, 1),
                    "epoch": 1,
                    "confirm": 1300,
                    "replicated": 1300,
                    "slaves": {1: (True, 1300, 2.5, False)},
                },
            ),
            (
                "past 15 s without catching up: out; confirm follows the master again",
                lambda s: s.check(17.6, master_max=1500),
                [changed({0}, 2), confirm(1500)],
                {
                    **base,
                    "epoch": 2,
                    "confirm": 1500,
                    "replicated": 1300,  # static: any live slave's ack
                    "slaves": {1: (True, 1300, 2.5, False)},
                },
            ),
        ],
    )


def test_static_disconnect_shrinks_at_once() -> None:
    s = static(members={1, 2}, epoch=4, confirm_offset=100)
    s.slave_connected(1)
    s.slave_connected(2)
    assert s.slave_acked(1, 300, 1.0, master_max=400) == []  # 2 has not acked: hold (#6662)
    assert s.slave_acked(2, 200, 1.0, master_max=400) == [confirm(200)]
    assert s.replicated_offset() == 200
    run_table(
        s,
        [
            (
                "slave 2 drops: out at once, confirm = slave 1's ack",
                lambda s: s.slave_disconnected(2, master_max=400),
                [changed({0, 1}, 5), confirm(300)],
                {
                    "members": (0, 1),
                    "epoch": 5,
                    "proposal": None,
                    "in_flight": (),
                    "confirm": 300,
                    "replicated": 300,
                    "slaves": {1: (True, 300, None, False), 2: (False, -1, None, True)},
                },
            ),
            (
                "slave 1 drops: the master alone; a static master still needs a slave",
                lambda s: s.slave_disconnected(1, master_max=400),
                [changed({0}, 6), confirm(400)],
                {
                    "members": (0,),
                    "epoch": 6,
                    "proposal": None,
                    "in_flight": (),
                    "confirm": 400,
                    "replicated": -1,
                    "slaves": {1: (False, -1, None, True), 2: (False, -1, None, True)},
                },
            ),
            (
                "slave 2 is back; its caught-up time survived",
                lambda s: s.slave_connected(2),
                [],
                {
                    "members": (0,),
                    "epoch": 6,
                    "proposal": None,
                    "in_flight": (),
                    "confirm": 400,
                    "replicated": -1,
                    "slaves": {1: (False, -1, None, True), 2: (True, -1, None, False)},
                },
            ),
        ],
    )


def test_no_expansion_before_the_current_epoch_start() -> None:
    # Slave 1 holds the confirm offset down at 4000; the master's epoch began at 5000.
    s = static(members={1}, epoch=1, epoch_start_offset=5000)
    s.slave_connected(1)
    s.slave_connected(2)
    assert s.slave_acked(1, 4000, 1.0, master_max=6000) == [confirm(4000)]
    # Slave 2 reached the confirm offset, but not into the master's own epoch.
    assert s.slave_acked(2, 4000, 1.0, master_max=6000) == []
    assert s.members == {0, 1}
    assert s.slave_acked(2, 5000, 2.0, master_max=6000) == [changed({0, 1, 2}, 2)]


def test_learners_never_join_but_count_in_count_mode() -> None:
    s = static(all_ack=False, in_sync_replicas=2)
    s.slave_connected(7, learner=True)
    assert s.slave_acked(7, 100, 1.0, master_max=100) == [confirm(100)]
    assert s.members == {M}
    assert s.slaves[7].caught_up_s is None  # learners are not tracked for the set
    assert s.replicated_offset() == 100


def test_count_mode_needs_the_kth_best_ack() -> None:
    s = static(all_ack=False, in_sync_replicas=3)
    assert s.replicated_offset() == -1
    for i, ack in ((1, 300), (2, 100), (3, 200)):
        s.slave_connected(i)
        s.slave_acked(i, ack, 1.0, master_max=300)
    assert s.replicated_offset() == 200  # two slaves hold 200
    assert s.needed_acks(False, 3) == 3
    s.in_sync_replicas = 1
    assert s.replicated_offset() == 300  # static: still one slave
    c = controller(all_ack=False, in_sync_replicas=1)
    assert c.replicated_offset() == UNBOUNDED  # controller mode: master alone is enough


def test_master_only_set_needs_a_slave_only_in_static_mode() -> None:
    assert static().replicated_offset() == -1
    assert controller().replicated_offset() == UNBOUNDED
    s = static()
    s.slave_connected(1)
    s.slave_acked(1, 50, 1.0, master_max=100)
    assert s.replicated_offset() == 50 and s.satisfied(50) and not s.satisfied(51)


# --- controller mode -----------------------------------------------------------------------


def test_controller_expansion_is_a_proposal_and_acks_count_over_the_union() -> None:
    """apache/rocketmq#5663: until the controller's answer arrives, the proposed member's
    ack is required too — the controller may already have committed the new set."""
    s = controller(members={1}, epoch=3)
    s.slave_connected(1)
    s.slave_connected(2)
    assert s.slave_acked(1, 1000, 1.0, master_max=1000) == [confirm(1000)]
    before = {
        "members": (0, 1),
        "epoch": 3,
        "proposal": None,
        "in_flight": (),
        "confirm": 1000,
        "replicated": 1000,
        "slaves": {1: (True, 1000, 1.0, False), 2: (True, -1, None, False)},
    }
    assert snap(s) == before
    run_table(
        s,
        [
            (
                "slave 2 caught up: proposed, not applied",
                lambda s: s.slave_acked(2, 1000, 2.0, master_max=1000),
                [proposed({0, 1, 2}, 3)],
                {
                    **before,
                    "proposal": (0, 1, 2),
                    "in_flight": (0, 1, 2),
                    "slaves": {1: (True, 1000, 1.0, False), 2: (True, 1000, 2.0, False)},
                },
            ),
            (
                "slave 1 runs ahead; writes still wait for slave 2 (union)",
                lambda s: s.slave_acked(1, 1800, 3.0, master_max=2000),
                [],
                {
                    **before,
                    "proposal": (0, 1, 2),
                    "in_flight": (0, 1, 2),
                    "replicated": 1000,
                    "slaves": {1: (True, 1800, 1.0, False), 2: (True, 1000, 2.0, False)},
                },
            ),
            (
                "slave 2 acks: confirm = min over the union",
                lambda s: s.slave_acked(2, 1500, 3.0, master_max=2000),
                [confirm(1500)],
                {
                    **before,
                    "proposal": (0, 1, 2),
                    "in_flight": (0, 1, 2),
                    "confirm": 1500,
                    "replicated": 1500,
                    "slaves": {1: (True, 1800, 1.0, False), 2: (True, 1500, 2.0, False)},
                },
            ),
            (
                "a stale answer changes nothing",
                lambda s: s.apply_confirmed({0, 1}, 3, master_max=2000),
                [],
                {
                    **before,
                    "proposal": (0, 1, 2),
                    "in_flight": (0, 1, 2),
                    "confirm": 1500,
                    "replicated": 1500,
                    "slaves": {1: (True, 1800, 1.0, False), 2: (True, 1500, 2.0, False)},
                },
            ),
            (
                "the controller confirms",
                lambda s: s.apply_confirmed({0, 1, 2}, 4, master_max=2000),
                [changed({0, 1, 2}, 4)],
                {
                    **before,
                    "members": (0, 1, 2),
                    "epoch": 4,
                    "confirm": 1500,
                    "replicated": 1500,
                    "slaves": {1: (True, 1800, 1.0, False), 2: (True, 1500, 2.0, False)},
                },
            ),
        ],
    )


def test_a_withdrawn_expansion_still_counts_until_confirmed() -> None:
    """#5663 again: proposing {0,1,2} then {0,1} does not drop 2 from the ack count — the
    first proposal may have been committed."""
    s = controller(members={1}, epoch=3)
    s.slave_connected(1)
    s.slave_connected(2)
    s.slave_acked(1, 1000, 1.0, master_max=1000)
    assert s.slave_acked(2, 1000, 1.0, master_max=1000) == [proposed({0, 1, 2}, 3)]
    assert s.slave_disconnected(2, master_max=1200) == [proposed({0, 1}, 3)]
    assert s.in_flight == {0, 1, 2} and s.proposal == {0, 1}
    assert s.replicated_offset() == -1  # slave 2 has no live ack
    s.slave_acked(1, 1200, 2.0, master_max=1200)
    assert s.confirm_offset == 1000  # #6662: a union member has no connection
    # The first proposal was committed after all; slave 2 is gone, so out at once.
    assert s.apply_confirmed({0, 1, 2}, 4, master_max=1200) == [
        changed({0, 1, 2}, 4),
        proposed({0, 1}, 4),
    ]
    assert s.replicated_offset() == -1
    assert s.apply_confirmed({0, 1}, 5, master_max=1200) == [changed({0, 1}, 5), confirm(1200)]
    assert s.replicated_offset() == 1200 and s.in_flight == frozenset()


def test_confirm_offset_holds_while_a_member_is_disconnected() -> None:
    """apache/rocketmq#6662: a master that lost a member must not advance confirmOffset on
    the acks of the others until the controller agrees the member is out."""
    s = controller(members={1, 2}, epoch=1)
    s.slave_connected(1)
    s.slave_connected(2)
    s.slave_acked(1, 500, 1.0, master_max=1000)
    assert s.slave_acked(2, 600, 1.0, master_max=1000) == [confirm(500)]
    assert s.slave_disconnected(2, master_max=1000) == [proposed({0, 1}, 1)]
    assert s.members == {0, 1, 2}
    assert s.slave_acked(1, 800, 2.0, master_max=1000) == []
    assert s.confirm_offset == 500
    assert s.master_advanced(1100) == []
    assert s.apply_confirmed({0, 1}, 2, master_max=1100) == [changed({0, 1}, 2), confirm(800)]


def test_rejected_proposal_is_resent_at_the_check_and_unions_shrink() -> None:
    s = controller(members={1}, epoch=2)
    s.slave_connected(1)
    s.slave_connected(2)
    s.slave_acked(1, 100, 1.0, master_max=100)
    s.slave_acked(2, 100, 1.0, master_max=100)
    assert s.proposal == {0, 1, 2}
    assert s.slave_disconnected(2, master_max=100) == [proposed({0, 1}, 2)]
    assert s.in_flight == {0, 1, 2}
    # The controller said no to our last proposal: only what we still want stays counted.
    assert s.proposal_rejected(master_max=100) == []
    assert s.in_flight == {0, 1} and s.proposal == {0, 1}
    assert s.replicated_offset() == 100
    assert s.check(2.0, master_max=100) == [proposed({0, 1}, 2)]
    assert s.in_sync_count() == 2


def test_members_that_never_connect_get_the_grace_period_from_mastership_start() -> None:
    s = SyncState.create(master_id=M, now_s=100.0, controller_mode=True, members={1}, epoch=7)
    assert s.check(114.9, master_max=0) == []
    assert s.check(115.1, master_max=0) == [proposed({0}, 7)]
    assert s.in_sync_count() == 2  # max of confirmed and proposed while synchronizing
    assert s.can_accept_write(2) and not s.can_accept_write(3)


def test_connections_reset_keeps_members_and_freezes_confirm() -> None:
    s = static(members={1}, epoch=1)
    s.slave_connected(1)
    s.slave_acked(1, 100, 1.0, master_max=100)
    assert s.confirm_offset == 100
    assert s.connections_reset(epoch_start_offset=100, now_s=5.0) == []
    assert snap(s) == {
        "members": (0, 1),
        "epoch": 1,
        "proposal": None,
        "in_flight": (),
        "confirm": 100,
        "replicated": -1,
        "slaves": {1: (False, -1, 1.0, False)},
    }
    assert s.master_advanced(200) == []  # member 1 has no connection yet
    s.slave_connected(1)
    assert s.slave_acked(1, 200, 6.0, master_max=200) == [confirm(200)]
    # The grace period restarted with the new epoch: caught-up 1.0 counts as 5.0.
    assert s.check(19.9, master_max=200) == []


# --- needed acks, writability ----------------------------------------------------------------


def test_needed_acks_and_can_accept_write() -> None:
    s = controller(members={1, 2}, epoch=1)
    assert s.needed_acks(True, 1) == 3
    assert s.needed_acks(False, 2) == 2
    assert s.can_accept_write(3) and not s.can_accept_write(4)


# --- illegal events -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        lambda s: s.slave_acked(9, 10, 1.0, master_max=100),  # unknown slave
        lambda s: s.slave_acked(1, 40, 1.0, master_max=100),  # ack goes back
        lambda s: s.slave_acked(1, 101, 1.0, master_max=100),  # past the master (#3015)
        lambda s: s.slave_connected(M),  # the master's id
        lambda s: s.slave_connected(1),  # already connected
        lambda s: s.slave_disconnected(9, master_max=100),
        lambda s: s.apply_confirmed({1}, 9, master_max=100),  # lacks the master
        lambda s: s.connections_reset(epoch_start_offset=-1, now_s=1.0),
    ],
)
def test_illegal_events_raise_and_change_nothing(event: Callable[[SyncState], object]) -> None:
    s = controller(members={1}, epoch=1)
    s.slave_connected(1)
    s.slave_acked(1, 50, 1.0, master_max=100)
    before = copy.deepcopy(snap(s))
    with pytest.raises(ValueError):
        event(s)
    assert snap(s) == before


def test_static_mode_refuses_controller_answers() -> None:
    s = static()
    with pytest.raises(ValueError):
        s.apply_confirmed({0}, 1, master_max=0)
    with pytest.raises(ValueError):
        s.proposal_rejected(master_max=0)
    assert snap(s)["epoch"] == 0


# --- invariants over random histories ---------------------------------------------------------

_events = st.lists(
    st.tuples(
        st.sampled_from(["connect", "ack", "drop", "check", "write", "confirm", "reject"]),
        st.integers(1, 3),
        st.integers(0, 400),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_events, st.booleans())
def test_invariants_over_random_histories(
    events: list[tuple[str, int, int]], controller_mode: bool
) -> None:
    """The master is always a member; confirm never goes down or past the master; a
    released write is held by every live member of the union; in controller mode the set
    only changes through the controller."""
    s = SyncState.create(master_id=M, now_s=0.0, controller_mode=controller_mode)
    master_max, now, sss_epoch = 0, 0.0, 0
    for kind, who, n in events:
        now += 1.0
        before_members, before_confirm = s.members, s.confirm_offset
        p = s.slaves.get(who)
        live = p is not None and p.live
        if kind == "connect" and not live:
            s.slave_connected(who)
        elif kind == "ack" and live:
            assert p is not None
            ack = min(master_max, max(p.ack_offset, 0) + n)
            s.slave_acked(who, ack, now, master_max=master_max)
        elif kind == "drop" and live:
            s.slave_disconnected(who, master_max=master_max)
        elif kind == "check":
            s.check(now, master_max=master_max)
        elif kind == "write":
            master_max += n
            s.master_advanced(master_max)
        elif kind == "confirm" and controller_mode and s.proposal is not None:
            sss_epoch = max(sss_epoch, s.epoch) + 1
            s.apply_confirmed(s.proposal, sss_epoch, master_max=master_max)
        elif kind == "reject" and controller_mode:
            s.proposal_rejected(master_max=master_max)
        assert M in s.members
        assert before_confirm <= s.confirm_offset <= max(master_max, before_confirm)
        if controller_mode and kind != "confirm":
            assert s.members == before_members
        released = s.replicated_offset()
        if released != UNBOUNDED and released >= 0:
            for member in s.effective - {M}:
                assert s.slaves[member].live and s.slaves[member].ack_offset >= released
