"""The election policy (DefaultElectPolicy): a table of pools, old master, preferred id and
liveness → the chosen id; offsets far apart; and the choice never depends on input order.

Rules: reference/rocketmq-controller.md §3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.election import (
    DEFAULT_ELECTION_PRIORITY,
    LiveInfo,
    OutageHold,
    elect,
    members_to_await,
)


def info(
    epoch: int = -1, max_offset: int = -1, priority: int = DEFAULT_ELECTION_PRIORITY
) -> LiveInfo:
    return LiveInfo(epoch=epoch, max_offset=max_offset, election_priority=priority)


def alive(*ids: int) -> dict[int, LiveInfo]:
    return {i: info() for i in ids}


def choose(
    sss: Iterable[int],
    live: Mapping[int, LiveInfo],
    *,
    all_replicas: Iterable[int] = (1, 2, 3, 4),
    old_master: int | None = None,
    preferred: int | None = None,
    unclean: bool = False,
) -> int | None:
    return elect(
        sync_state_set=sss,
        all_replicas=all_replicas,
        old_master=old_master,
        preferred=preferred,
        live=live,
        unclean=unclean,
    )


# (label, sss, live, old_master, preferred, unclean, expected)
TABLE: list[tuple[str, set[int], dict[int, LiveInfo], int | None, int | None, bool, int | None]] = [
    ("nobody alive", {1, 2, 3}, {}, 1, None, False, None),
    ("nobody alive, unclean", {1, 2, 3}, {}, 1, None, True, None),
    ("empty SSS", set(), alive(1, 2), None, None, False, None),
    ("only the live SSS member", {1, 2, 3}, alive(3), 1, None, False, 3),
    ("live old master stays, whatever the others report",
     {1, 2, 3}, {1: info(0, 0), 2: info(9, 9), 3: info(9, 99)}, 1, None, False, 1),
    ("live old master designated: stays", {1, 2, 3}, alive(1, 2, 3), 1, 1, False, 1),
    ("another live member designated beats a live old master",
     {1, 2, 3}, alive(1, 2, 3), 1, 3, False, 3),
    ("designated but dead: no fallback", {1, 2, 3}, alive(1, 2), 1, 3, False, None),
    ("designated but dead, unclean: still no fallback", {1, 2, 3}, alive(1, 2), 1, 3, True, None),
    ("designated outside the SSS", {1, 2}, alive(1, 2, 4), 1, 4, False, None),
    ("designated outside the SSS, unclean", {1, 2}, alive(1, 2, 4), 1, 4, True, 4),
    ("dead old master designated", {1, 2, 3}, alive(2, 3), 1, 1, False, None),
    ("old master dead: best epoch", {1, 2, 3}, {2: info(1, 2), 3: info(0, 3)}, 1, None, False, 2),
    ("epoch tie: best offset", {1, 2, 3}, {2: info(1, 2), 3: info(1, 3)}, 1, None, False, 3),
    ("epoch and offset tie: lower priority",
     {1, 2, 3}, {2: info(1, 3, 2), 3: info(1, 3, 1)}, 1, None, False, 3),
    ("all tie: lower id", {1, 2, 3}, {3: info(1, 3, 1), 2: info(1, 3, 1)}, 1, None, False, 2),
    ("a live SSS member beats a better replica outside the SSS",
     {1, 2}, {2: info(0, 0), 4: info(9, 9)}, 1, None, True, 2),
    ("SSS dead, unclean: best of all replicas",
     {1}, {2: info(1, 5), 3: info(1, 9), 4: info(0, 99)}, 1, None, True, 3),
    ("SSS dead, not unclean", {1}, alive(2, 3, 4), 1, None, False, None),
    ("live old master outside a dead SSS, unclean", {1, 2}, alive(3, 4), 3, None, True, 3),
    ("heartbeats from ids in no pool are ignored",
     {1, 2}, {2: info(0, 0), 9: info(9, 9, 0)}, 1, None, True, 2),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "sss", "live", "old_master", "preferred", "unclean", "expected"),
    TABLE,
    ids=[row[0] for row in TABLE],
)
def test_election_table(
    label: str,
    sss: set[int],
    live: dict[int, LiveInfo],
    old_master: int | None,
    preferred: int | None,
    unclean: bool,
    expected: int | None,
) -> None:
    assert (
        choose(sss, live, old_master=old_master, preferred=preferred, unclean=unclean) == expected
    )


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (0, 2**31 + 5),  # Java's (int) of the difference is negative: the order flips
        (0, 2**32),  # (int) of the difference is 0: Java would fall through to the priority
        (5, 2**32 + 4),
        (2**40, 2**40 + 2**33),
        (-1, 2**63 - 1),
    ],
)
def test_offsets_far_apart_rank_correctly(low: int, high: int) -> None:
    # The laggard has the better priority, so a collapsed or inverted offset compare shows.
    for low_id, high_id in ((2, 3), (3, 2)):
        live = {low_id: info(1, low, 0), high_id: info(1, high, 5)}
        assert choose({1, 2, 3}, live, old_master=1) == high_id


def test_epoch_outranks_any_offset() -> None:
    live = {2: info(2, 0), 3: info(1, 2**62)}
    assert choose({2, 3}, live) == 2


ids = st.integers(1, 6)
live_infos = st.builds(
    LiveInfo,
    epoch=st.integers(-1, 3),
    max_offset=st.sampled_from([-1, 0, 7, 2**31, 2**32 + 7, 2**62]),
    election_priority=st.integers(0, 3) | st.just(DEFAULT_ELECTION_PRIORITY),
)


def naive(
    sss: set[int],
    replicas: set[int],
    live: dict[int, LiveInfo],
    old_master: int | None,
    preferred: int | None,
    unclean: bool,
) -> int | None:
    """§3 spelled out step by step, one pool after the other."""
    pools = [sss, replicas] if unclean else [sss]
    for pool in pools:
        candidates = {b for b in pool if b in live}
        if not candidates:
            continue
        if old_master in candidates and preferred in (None, old_master):
            return old_master
        if preferred is not None:
            if preferred in candidates:
                return preferred
            continue
        best = sorted(candidates)
        best.sort(key=lambda b: live[b].election_priority)
        best.sort(key=lambda b: live[b].max_offset, reverse=True)
        best.sort(key=lambda b: live[b].epoch, reverse=True)
        return best[0]
    return None


@given(
    sss=st.sets(ids),
    replicas=st.sets(ids),
    live=st.dictionaries(ids, live_infos),
    old_master=st.none() | ids,
    preferred=st.none() | ids,
    unclean=st.booleans(),
)
def test_choice_matches_the_naive_policy_in_any_input_order(
    sss: set[int],
    replicas: set[int],
    live: dict[int, LiveInfo],
    old_master: int | None,
    preferred: int | None,
    unclean: bool,
) -> None:
    """Same inputs in any order give the same choice (every controller replica agrees),
    and it is the one the step-by-step policy picks: alive, from the SSS while a live SSS
    member exists, a designated id or nothing, else the best ranked."""
    forward = elect(
        sync_state_set=sorted(sss),
        all_replicas=sorted(replicas),
        old_master=old_master,
        preferred=preferred,
        live=dict(sorted(live.items())),
        unclean=unclean,
    )
    backward = elect(
        sync_state_set=sorted(sss, reverse=True),
        all_replicas=sorted(replicas, reverse=True),
        old_master=old_master,
        preferred=preferred,
        live=dict(sorted(live.items(), reverse=True)),
        unclean=unclean,
    )
    assert forward == backward == naive(sss, replicas, live, old_master, preferred, unclean)
    if forward is not None:
        assert forward in live
        if sss & live.keys() and preferred is None:
            assert forward in sss


# (label, sss, master, live, unclean, expected members to await)
AWAIT_TABLE: list[tuple[str, set[int], int | None, dict[int, LiveInfo], bool, set[int]]] = [
    ("master dead, every slave alive: elect now", {1, 2, 3}, 1, alive(2, 3), False, set()),
    ("master alive: it stays, nothing to await", {1, 2, 3}, 1, alive(1), False, set()),
    ("master dead with a slave: await the slave", {1, 2, 3}, 1, alive(2), False, {3}),
    ("no master (group outage): await all away", {1, 2, 3}, None, alive(2), False, {1, 3}),
    ("nobody alive: the election fails at once", {1, 2, 3}, None, {}, False, set()),
    ("only a non-member alive: fails at once", {1, 2}, None, alive(4), False, set()),
    ("only a non-member alive, unclean: await the SSS", {1, 2}, None, alive(4), True, {1, 2}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "sss", "master", "live", "unclean", "expected"),
    AWAIT_TABLE,
    ids=[row[0] for row in AWAIT_TABLE],
)
def test_members_to_await(
    label: str,
    sss: set[int],
    master: int | None,
    live: dict[int, LiveInfo],
    unclean: bool,
    expected: set[int],
) -> None:
    away = members_to_await(
        sync_state_set=sss, all_replicas=(1, 2, 3, 4), master=master, live=live, unclean=unclean
    )
    assert away == expected, label


def test_outage_hold_is_bounded_and_starts_afresh() -> None:
    """Issue 19 finding 2: the wait runs from the first time a group waited, ends when
    nobody is away or ``wait_s`` passed, and a later outage waits its own full time."""
    hold = OutageHold(wait_s=6.0)
    assert hold.holds("a", frozenset({1, 3}), now_s=100.0)
    assert hold.holds("b", frozenset({2}), now_s=103.0)  # its own clock
    assert hold.holds("a", frozenset({3}), now_s=105.9)
    assert hold.waited_s("a", now_s=105.9) == pytest.approx(5.9)
    assert not hold.holds("a", frozenset({3}), now_s=106.0)  # the wait ran out
    assert hold.holds("b", frozenset({2}), now_s=108.9)
    assert not hold.holds("b", frozenset(), now_s=109.0)  # everybody back: at once
    assert hold.waited_s("b", now_s=109.0) == 0.0
    hold.release("a")  # elected
    assert hold.holds("a", frozenset({1}), now_s=200.0)  # the next outage waits afresh
    assert not OutageHold(wait_s=0.0).holds("a", frozenset({1}), now_s=0.0)


def test_after_an_outage_the_longest_log_of_the_highest_epoch_wins() -> None:
    """What the held election then picks (DefaultElectPolicy's comparator): the highest
    epoch, then the highest max offset, whoever heartbeated first."""
    live = {2: info(1, 138_034), 1: info(1, 141_858), 3: info(0, 200_000)}
    assert choose({1, 2, 3}, live) == 1
