"""HAMaster.when_replicated: sync writes as callbacks (no task each), ended by the ack
that replicates them, by one timer at their deadlines, or by the mastership's end."""

from __future__ import annotations

from pathlib import Path

import trio

from broker.ha.waiters import ANSWERS_PER_STEP, ReplicaOutcome
from broker.store.dispatch import DISPATCH_STEP_BYTES
from tests.component.ha_fixtures import FakeSlave, cluster, nodes, until
from tests.component.test_ha_sync import _master_and_fake_slave

OK, TIMEOUT = ReplicaOutcome.OK, ReplicaOutcome.TIMEOUT


async def test_an_ack_calls_back_lowest_first_before_the_confirmed_dispatch(
    tmp_path: Path,
) -> None:
    """Each waiter the ack covers is called once, lowest end first; when it is called the
    store has not been told the new confirm offset yet (its answer leaves before the
    ConsumeQueue dispatch), and right after that same step it has."""
    async with _master_and_fake_slave(tmp_path, confirm_linger_s=0.0) as (c, fake, _ha):
        (warm,) = c.append(1)
        await fake.transfers_until(warm)
        await fake.ack(warm)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        ends = c.append(3, start=1)
        called: list[tuple[int, ReplicaOutcome, int]] = []
        store = c.master_node.store
        for end in ends:
            then = lambda outcome, end=end: called.append((end, outcome, store.confirm_offset))  # noqa: E731
            assert c.master.when_replicated(end, 10.0, then) is None
        assert c.master.status().waiters == 3
        await fake.transfers_until(ends[-1])
        await fake.ack(ends[1])
        await until(lambda: len(called) == 2)
        assert called == [(ends[0], OK, warm), (ends[1], OK, warm)]
        assert store.confirm_offset == ends[1]
        await fake.ack(ends[2])
        await until(lambda: len(called) == 3)
        assert called[2] == (ends[2], OK, ends[1])
        assert c.master.status().waiters == 0


async def test_one_timer_times_out_every_waiter_at_its_own_deadline(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m") as (m,), cluster(m) as c, FakeSlave.connect(c.port) as fake:
        await fake.handshake(1, ack=0)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        (end,) = c.append(1)  # never acked
        ended: dict[str, float] = {}
        start = trio.current_time()

        def then(name: str) -> object:
            def record(outcome: ReplicaOutcome) -> None:
                assert outcome is TIMEOUT
                ended[name] = trio.current_time() - start

            return record

        for name, timeout_s in (("late", 0.6), ("early", 0.2), ("middle", 0.4)):
            assert c.master.when_replicated(end, timeout_s, then(name)) is None  # type: ignore[arg-type]
        await until(lambda: len(ended) == 3, 3.0)
        assert sorted(ended, key=ended.__getitem__) == ["early", "middle", "late"]
        assert 0.2 <= ended["early"] < ended["middle"] < ended["late"] < 2.0, ended
        assert ended["late"] >= 0.6
        assert c.master.status().waiters == 0
        await fake.aclose()


async def test_waiters_left_when_the_mastership_ends_get_timeout(tmp_path: Path) -> None:
    outcomes: list[ReplicaOutcome] = []
    async with nodes(tmp_path, "m") as (m,):
        async with cluster(m) as c, FakeSlave.connect(c.port) as fake:
            await fake.handshake(1, ack=0)
            await until(lambda: c.master.status().sync_state_set == (0, 1))
            ends = c.append(2)
            for end in ends:
                assert c.master.when_replicated(end, 30.0, outcomes.append) is None
        assert outcomes == [TIMEOUT, TIMEOUT]  # at once, not after 30 s
        assert c.master.status().waiters == 0


async def test_a_cancelled_wait_is_never_called_and_frees_its_place(tmp_path: Path) -> None:
    async with nodes(tmp_path, "m") as (m,), cluster(m) as c, FakeSlave.connect(c.port) as fake:
        await fake.handshake(1, ack=0)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        (end,) = c.append(1)
        with trio.move_on_after(0.1):
            await c.master.wait_replicated(end, 10.0)
        assert c.master.status().waiters == 0
        outcomes: list[ReplicaOutcome] = []
        assert c.master.when_replicated(end, 10.0, outcomes.append) is None
        await fake.transfers_until(end)
        await fake.ack(end)
        await until(lambda: outcomes == [OK])
        assert c.master.when_replicated(end, 10.0, outcomes.append) is OK  # at once now
        await fake.aclose()


async def test_an_ack_releasing_thousands_answers_them_in_slices_other_tasks_between(
    tmp_path: Path,
) -> None:
    """One ack covering 2,000 waiters (a stalled slave catching up): the first slice is
    called in the ack's step, before the confirmed dispatch; the rest a slice per step,
    lowest first, with the broker's other tasks (its controller heartbeats) run between."""
    async with _master_and_fake_slave(tmp_path, confirm_linger_s=0.0) as (c, fake, _ha):
        (warm,) = c.append(1)
        await fake.transfers_until(warm)
        await fake.ack(warm)
        await until(lambda: c.master.status().sync_state_set == (0, 1))
        (end,) = c.append(1, start=1)
        store = c.master_node.store
        called: list[tuple[int, ReplicaOutcome, int]] = []
        for i in range(2_000):
            then = lambda outcome, i=i: called.append((i, outcome, store.confirm_offset))  # noqa: E731
            assert c.master.when_replicated(end, 30.0, then) is None
        seen: list[int] = []

        async def ticker() -> None:
            while True:
                seen.append(len(called))
                await trio.lowlevel.checkpoint()

        await fake.transfers_until(end)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await fake.ack(end)
            await until(lambda: len(called) == 2_000)
            nursery.cancel_scope.cancel()
        assert [(i, outcome) for i, outcome, _ in called] == [(i, OK) for i in range(2_000)]
        assert {confirm for _, _, confirm in called[:ANSWERS_PER_STEP]} == {warm}
        assert {confirm for _, _, confirm in called[ANSWERS_PER_STEP:]} == {end}
        assert len({n for n in seen if 0 < n < 2_000}) >= 2, sorted(set(seen))
        assert c.master.status().waiters == 0
        await fake.aclose()


async def test_a_confirm_jump_is_dispatched_in_slices_each_answer_after_its_record(
    tmp_path: Path,
) -> None:
    """An ack that confirms 4.8 MB at once (a stalled slave's catch-up, a shrink): with the
    store running, its records are dispatched a slice (``DISPATCH_STEP_BYTES``) per step,
    other tasks run between, and no other task ever runs between a sync write's answer and
    its record's dispatch (a client holding the SEND_OK finds the message)."""
    async with _master_and_fake_slave(tmp_path, confirm_linger_s=0.0) as (c, fake, _ha):
        store = c.master_node.store
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            (warm,) = c.append(1)
            await fake.transfers_until(warm)
            await fake.ack(warm)
            await until(lambda: c.master.status().sync_state_set == (0, 1))
            ends = c.append(600, start=1, size=8_000)  # fewer per dispatch slice than answers
            assert ends[-1] - warm > 2 * DISPATCH_STEP_BYTES
            answered: list[tuple[int, ReplicaOutcome]] = []
            for end in ends:
                then = lambda outcome, end=end: answered.append((end, outcome))  # noqa: E731
                assert c.master.when_replicated(end, 30.0, then) is None
            seen: list[tuple[int, int]] = []  # (answers given, dispatched offset) per turn

            async def ticker() -> None:
                while True:
                    seen.append((len(answered), store.dispatched_offset))
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(ticker)
            await fake.transfers_until(ends[-1])
            await fake.ack(ends[-1])
            await until(lambda: len(answered) == len(ends))
            nursery.cancel_scope.cancel()
        assert answered == [(end, OK) for end in ends]
        early = [(n, d) for n, d in seen if n and answered[n - 1][0] > d]
        assert not early, f"answered before dispatched, seen from another task: {early[:3]}"
        assert store.dispatched_offset == ends[-1]
        assert {d for _, d in seen if warm < d < ends[-1]}, "dispatched in one step"
        assert c.master.status().waiters == 0
