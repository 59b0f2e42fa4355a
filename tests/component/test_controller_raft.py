"""controller/raft.py under the controller server: the truncate-only-on-conflict fix,
replica agreement under a burst, a full restart (journal + snapshot), commit latency."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from controller import state as sm
from controller.raft import (
    MAX_UNKNOWN_RAFT_CONNECTIONS,
    SNAPSHOT_FILE,
    GuardedTransport,
    skip_known_entries,
)
from controller.server import ControllerServer
from tests.component.controller_fixtures import (
    Quorum,
    controller_quorum,
    quorum_configs,
    wait_until,
)
from tests.component.test_rpc import raw_connect, seconds_until_closed

TEST_DEADLINE_S = 90.0

# --- skip_known_entries (pure) ---------------------------------------------------------------

#: A follower's log: index → term (index 1 is the compaction base entry).
LOG = {1: 1, 2: 1, 3: 2, 4: 2, 5: 2}


def _term(index: int) -> int | None:
    return LOG.get(index)


def _msg(
    prev: int, prev_term: int, entries: list[tuple[int, int]], term: int = 2
) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": term,
        "commit_index": 3,
        "prevLogIdx": prev,
        "prevLogTerm": prev_term,
        "entries": [(b"cmd", i, t) for i, t in entries],
    }


def _rewritten(message: dict[str, Any]) -> tuple[int, int | None, list[int]]:
    out = skip_known_entries(message, _term, max(LOG))
    assert out["commit_index"] == message["commit_index"]
    return out["prevLogIdx"], out["prevLogTerm"], [e[1] for e in out["entries"]]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # A re-sent range we hold entirely, shorter than our log: keep everything.
        (_msg(2, 1, [(3, 2), (4, 2)]), (5, 2, [])),
        # A heartbeat pointing below our end: keep our entries of the leader's term.
        (_msg(3, 2, []), (5, 2, [])),
        # Overlap then new entries: append only the new ones after our last.
        (_msg(3, 2, [(4, 2), (5, 2), (6, 2), (7, 2)]), (5, 2, [6, 7])),
        # A real conflict at 4 (term 3 there): pysyncobj truncates from 4, as Raft says.
        (_msg(3, 2, [(4, 3), (5, 3)], term=3), (3, 2, [4, 5])),
        # A newer leader's heartbeat: our term-2 tail is not its own, so not claimed.
        (_msg(3, 2, [], term=3), (3, 2, [])),
    ],
)
def test_skip_known_entries(message: dict[str, Any], expected: tuple[int, int, list[int]]) -> None:
    assert _rewritten(message) == expected


def test_skip_known_entries_leaves_other_messages_alone() -> None:
    mismatch = _msg(4, 1, [(5, 1)])  # our entry 4 has term 2: pysyncobj rejects it
    assert skip_known_entries(mismatch, _term, 5) is mismatch
    transmission = {**_msg(2, 1, []), "transmission": "start", "data": b""}
    assert skip_known_entries(transmission, _term, 5) is transmission
    snapshot = {"type": "append_entries", "term": 2, "commit_index": 3, "serialized": b"x"}
    assert skip_known_entries(snapshot, _term, 5) is snapshot
    at_end = _msg(5, 2, [(6, 2)])  # the ordinary case: nothing to rewrite
    assert skip_known_entries(at_end, _term, 5) is at_end


# --- a real quorum ---------------------------------------------------------------------------


def _apply(i: int) -> sm.ApplyBrokerId:
    """The first broker of group ``g<i>``: commands that commute, so order does not matter."""
    return sm.ApplyBrokerId(
        cluster_name="c", broker_name=f"g{i}", broker_id=1, register_check_code=f"a{i};0"
    )


async def _burst(leader: ControllerServer, count: int, concurrency: int) -> list[sm.Result]:
    results: list[sm.Result] = []
    limiter = trio.CapacityLimiter(concurrency)

    async def one(i: int) -> None:
        async with limiter:
            results.append(await leader.raft.submit(_apply(i)))

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return results


async def test_burst_replicas_agree_and_nothing_applied_is_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pysyncobj")
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum:
            leader = await quorum.leader()
            results = await _burst(leader, 300, concurrency=32)
            assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
            await wait_until(lambda: _agree(quorum), what="every replica applied the burst")
            assert len(leader.raft.state.groups) == 300
    truncations = [r for r in caplog.records if "truncating already-applied" in r.getMessage()]
    assert truncations == []


def _agree(quorum: Quorum) -> bool:
    states = [s.raft.state for s in quorum.running]
    return all(state == states[0] for state in states)


async def test_full_restart_keeps_the_state(tmp_path: Path) -> None:
    """Stop every node (journal + snapshot on disk), start them again: same state."""
    configs = quorum_configs(tmp_path, log_compaction_min_entries=50)
    with trio.fail_after(TEST_DEADLINE_S):
        async with trio.open_nursery() as nursery:
            quorum = Quorum(nursery, configs)
            for config in configs:
                await quorum.start(config)
            leader = await quorum.leader()
            results = await _burst(leader, 140, concurrency=1)  # past two compactions
            assert all(r.ok for r in results)
            await wait_until(lambda: _agree(quorum))
            await wait_until(
                lambda: all((c.data_dir / "raft" / SNAPSHOT_FILE).exists() for c in configs),
                what="every node compacted its log into a snapshot",
            )
            before = leader.raft.state
            for config in configs:
                await quorum.kill(config.node_id)
            for config in configs:
                await quorum.start(config)
            again = await quorum.leader()
            await wait_until(lambda: _agree(quorum) and again.raft.state == before)
            # And it still commits.
            more = await again.raft.submit(
                sm.ApplyBrokerId(
                    cluster_name="c", broker_name="new", broker_id=1, register_check_code="x;0"
                )
            )
            assert more.ok
            nursery.cancel_scope.cancel()


async def test_commit_latency_is_milliseconds(tmp_path: Path) -> None:
    """One command in flight at a time (appendEntriesUseBatch off, fsync on every append):
    the figure the report quotes; the bound only catches a return of pysyncobj's 100 ms
    batching."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum:
            leader = await quorum.leader()
            latencies = []
            for i in range(50):
                start = time.monotonic()
                result = await leader.raft.submit(
                    sm.GetNextBrokerId(cluster_name="c", broker_name=f"{i}")
                )
                latencies.append(time.monotonic() - start)
                assert result.ok
            p50 = statistics.median(latencies)
            print(
                f"controller commit latency over 50 sequential commands: p50 {p50 * 1000:.1f} ms, "
                f"max {max(latencies) * 1000:.1f} ms"
            )
            assert p50 < 0.08


async def test_a_lagging_follower_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    configs = quorum_configs(tmp_path, log_compaction_min_entries=50)
    with trio.fail_after(TEST_DEADLINE_S):
        async with trio.open_nursery() as nursery:
            quorum = Quorum(nursery, configs)
            for config in configs:
                await quorum.start(config)
            leader = await quorum.leader()
            behind = quorum.followers(leader)[0].config
            await quorum.kill(behind.node_id)
            results = await _burst(leader, 150, concurrency=8)  # the leader compacts meanwhile
            assert all(r.ok for r in results)
            await wait_until((leader.config.data_dir / "raft" / SNAPSHOT_FILE).exists)
            server = await quorum.start(behind)
            await wait_until(
                lambda: server.raft.state == leader.raft.state,
                what="the restarted follower caught up",
            )
            nursery.cancel_scope.cancel()


# --- the Raft port against connections that are no peer's ------------------------------------


async def test_the_raft_port_closes_connections_that_name_no_peer(tmp_path: Path) -> None:
    """Idle connections to a node's Raft port are closed after ``connectionTimeout`` (1 s
    here), the oldest at once past the cap; before, pysyncobj held them forever, so
    enough of them took every descriptor of the process. The quorum commits throughout.
    The connections are paced: pysyncobj listens with a backlog of 5, and a connection
    the kernel could not queue is never accepted (nor held) at all."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum:
            leader = await quorum.leader()
            config = quorum.configs[0]
            obj = quorum.servers[config.node_id].raft._obj
            assert obj is not None
            transport = obj._SyncObj__transport
            flood = MAX_UNKNOWN_RAFT_CONNECTIONS + 16
            closed: list[float | None] = []
            most_held = 0

            async def idle() -> None:  # a connection that sends nothing
                async with await raw_connect(config.raft_address) as stream:
                    closed.append(await seconds_until_closed(stream, 10.0))

            async with trio.open_nursery() as nursery:
                for _ in range(flood):
                    nursery.start_soon(idle)
                    await trio.sleep(0.01)
                    most_held = max(most_held, len(transport._unknownConnections))
                results = await _burst(leader, 20, concurrency=4)
            assert all(r.ok for r in results)
            assert len(closed) == flood and None not in closed, closed.count(None)
            assert max(w for w in closed if w is not None) < 5.0, closed
            assert most_held <= MAX_UNKNOWN_RAFT_CONNECTIONS
            # A peer's reconnection passes through the unknown set too (a loaded machine can
            # time out a peer link): the set empties within connectionTimeout, not at once.
            await wait_until(
                lambda: not transport._unknownConnections, what="no connection of no peer held"
            )
            await wait_until(lambda: _agree(quorum), what="every replica applied the burst")


async def test_a_raft_listener_closed_by_a_failed_accept_listens_again(tmp_path: Path) -> None:
    """pysyncobj's TcpServer closes its listening socket when accept fails (EMFILE) and
    never binds again; GuardedTransport binds it again within bindRetryTime."""
    with trio.fail_after(TEST_DEADLINE_S):
        async with controller_quorum(tmp_path) as quorum:
            await quorum.leader()
            config = quorum.configs[0]
            obj = quorum.servers[config.node_id].raft._obj
            assert obj is not None
            transport = obj._SyncObj__transport
            assert isinstance(transport, GuardedTransport)
            closed = trio.Event()
            token = trio.lowlevel.current_trio_token()

            def close_listener() -> None:  # in the tick thread, as an accept failure
                if not done:  # (the tick holds its callbacks' lock: no removing here)
                    done.append(True)
                    transport._server.unbind()
                    token.run_sync_soon(closed.set)

            done: list[bool] = []
            obj.addOnTickCallback(close_listener)
            await closed.wait()
            obj.removeOnTickCallback(close_listener)

            async def listening() -> bool:
                try:
                    stream = await raw_connect(config.raft_address)
                except OSError:
                    return False
                await stream.aclose()
                return True

            await wait_until(listening, what="the Raft port listens again")
