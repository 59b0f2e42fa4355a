"""Chaos fault kinds and harness pieces in one Trio process: the #5663 fault sequence and
the probing kinds against a recording stand-in for the harness; probe writes and metadata
reads against a real broker; proxies switched together; a free controller port range."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.headers import UpdateConsumerOffsetRequestHeader
from scenarios.faults import (
    BrokerMetadata,
    Cut,
    ExpandThenKill,
    FaultProxy,
    KillRestart,
    Partition,
    Pause,
    ProxyGroup,
    Toxics,
)
from scenarios.history import ENQUEUE, PROBE_CLIENT, Outcome, Request, Response, iter_history
from scenarios.local_cluster import read_broker_metadata
from scenarios.workload import Recorder, Workload, WorkloadConfig
from tests.component.broker_fixtures import broker_env, expect


class FakeControl:
    """Records what a fault asks of the harness; the controller's view is scripted."""

    def __init__(self, views: list[tuple[str, list[str]] | None], *, log_says: bool = True):
        self.calls: list[tuple[Any, ...]] = []
        self._views = views
        self._log_says = log_says
        self.rng = random.Random(3)

    async def kill(self, node: str) -> None:
        self.calls.append(("kill", node))

    async def restart(self, node: str) -> None:
        self.calls.append(("restart", node))

    def pause(self, node: str) -> None:
        self.calls.append(("pause", node))

    def resume(self, node: str) -> None:
        self.calls.append(("resume", node))

    def store_dir(self, node: str) -> Path:
        raise AssertionError("not used")

    def proxy(self, node: str) -> ProxyGroup:
        raise AssertionError("not used")

    async def resolve(self, target: str) -> str:
        assert target == "controller-leader"
        return "n1"

    async def in_sync_nodes(self, group: str) -> tuple[str, list[str]] | None:
        view = self._views.pop(0) if len(self._views) > 1 else self._views[0]
        self.calls.append(("ask", group))
        return view

    def log_size(self, node: str) -> int:
        return 123

    async def wait_for_log(self, node: str, pattern: str, since: int, timeout_s: float) -> bool:
        self.calls.append(("wait_log", node, pattern, since))
        return self._log_says

    def note(self, step: str, **extra: object) -> None:
        self.calls.append(("note", step))

    async def probe_writes(self, node: str, count: int) -> None:
        self.calls.append(("probe_writes", node, count))

    async def metadata_of(self, node: str) -> BrokerMetadata | None:
        self.calls.append(("metadata_of", node))
        return BrokerMetadata(address="127.0.0.1:1", write_queues=6, offsets={0: 1})

    async def probe_new_master(self, old_master: str, before: BrokerMetadata | None) -> None:
        self.calls.append(("probe_new_master", old_master, before is not None))

    async def heal_all(self) -> None:
        self.calls.append(("heal_all",))


def _actions(ctl: FakeControl) -> list[tuple[Any, ...]]:
    return [c for c in ctl.calls if c[0] not in ("ask", "note")]


async def test_expand_then_kill_pauses_the_leader_as_the_slave_rejoins_then_kills_the_master(
    autojump_clock: trio.testing.MockClock,
) -> None:
    member, shrunk = ("broker-a-0", ["broker-a-1", "broker-a-2"]), ("broker-a-0", ["broker-a-2"])
    ctl = FakeControl([member, member, member, shrunk])
    kind = ExpandThenKill(kill_after_s=1.0)
    start = trio.current_time()
    await kind.inject(ctl, "broker-a")
    slave = "broker-a-1"  # the seeded choice among the in-sync slaves
    assert _actions(ctl) == [
        ("kill", slave),
        ("restart", slave),
        ("wait_log", slave, "became slave of", 123),
        ("pause", "n1"),
        ("kill", "broker-a-0"),
    ]
    # It waited for the shrink (polling), then 1 s between the pause and the master kill.
    assert trio.current_time() - start >= 1.0 + 2 * 0.2
    assert [c[1] for c in ctl.calls if c[0] == "note"] == [
        "killed slave",
        "SyncStateSet shrank",
        "paused controller leader",
        "killed master",
    ]
    await kind.heal(ctl, "broker-a")
    assert ctl.calls[-1] == ("heal_all",)


async def test_expand_then_kill_does_nothing_without_an_in_sync_slave() -> None:
    for view in (None, ("broker-a-0", [])):
        ctl = FakeControl([view])
        await ExpandThenKill().inject(ctl, "broker-a")
        assert _actions(ctl) == []
        assert ctl.calls[-1][0] == "note"


async def test_kill_with_a_probe_reads_the_old_master_first_then_probes_the_new_one() -> None:
    ctl = FakeControl([None])
    await KillRestart(probe_new_master=True).inject(ctl, "broker-a-0")
    assert ctl.calls == [
        ("metadata_of", "broker-a-0"),
        ("kill", "broker-a-0"),
        ("probe_new_master", "broker-a-0", True),
    ]
    plain = FakeControl([None])
    await KillRestart().inject(plain, "broker-a-0")
    assert plain.calls == [("kill", "broker-a-0")]


async def test_pause_with_probe_writes_probes_right_after_sigcont() -> None:
    ctl = FakeControl([None])
    kind = Pause(probe_writes=20)
    await kind.inject(ctl, "broker-a-0")
    await kind.heal(ctl, "broker-a-0")
    assert ctl.calls == [
        ("pause", "broker-a-0"),
        ("resume", "broker-a-0"),
        ("probe_writes", "broker-a-0", 20),
    ]


# --- against real servers ------------------------------------------------------------------


async def test_probe_writes_go_straight_to_the_broker_and_are_recorded(tmp_path: Path) -> None:
    async with broker_env(tmp_path) as env:
        await env.create_topic("ChaosTopic", queues=6)
        recorder = Recorder(tmp_path / "history.log")
        workload = Workload(WorkloadConfig(), env.namesrv_addr, recorder, random.Random(1))
        with trio.fail_after(10):
            answers = await workload.probe_writes(env.addr, "broker-a", count=3, every_s=0.01)
            # Nobody listens there: a definite refusal.
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                dead = f"127.0.0.1:{sock.getsockname()[1]}"
            refused = await workload.probe_writes(dead, "broker-a", count=1)
        recorder.close()
        assert answers == ["SEND_OK"] * 3
        assert refused == ["NetworkError"]
        with recorder.path.open() as f:
            entries = list(iter_history(f))
        requests = [e for e in entries if isinstance(e, Request)]
        responses = [e for e in entries if isinstance(e, Response)]
        assert [e.client_id for e in entries] == [PROBE_CLIENT] * 8
        assert {e.op for e in entries} == {ENQUEUE}
        assert [r.value for r in requests] == [r.value for r in responses] == ["1", "2", "3", "4"]
        assert [r.outcome for r in responses] == [Outcome.SUCCESS] * 3 + [Outcome.FAILURE]
        for r in responses[:3]:
            assert r.extra is not None and f"store={env.addr}" in r.extra
            assert "status=SEND_OK" in r.extra and "queue=broker-a:0" in r.extra
        acked = workload.progress.acked
        assert len(acked) == 3 and all(v in acked for v in ("1", "2", "3"))
        assert len(await env.pull_all("ChaosTopic", 0)) == 3


async def test_metadata_of_a_broker_is_its_topic_and_the_groups_offsets(tmp_path: Path) -> None:
    async with broker_env(tmp_path) as env:
        await env.create_topic("ChaosTopic", queues=6)
        with trio.fail_after(10):
            before = await read_broker_metadata(env.addr, "ChaosTopic", "chaos-consumer")
            await env.heartbeat("c1", group="chaos-consumer", topics={"ChaosTopic": "*"})
            for queue_id, offset in ((0, 17), (3, 5)):
                header = UpdateConsumerOffsetRequestHeader(
                    consumer_group="chaos-consumer",
                    topic="ChaosTopic",
                    queue_id=queue_id,
                    commit_offset=offset,
                )
                expect(
                    await env.call(RequestCode.UPDATE_CONSUMER_OFFSET, header),
                    ResponseCode.SUCCESS,
                )
            after = await read_broker_metadata(env.addr, "ChaosTopic", "chaos-consumer")
            missing = await read_broker_metadata(env.addr, "NoSuchTopic", "chaos-consumer")
        assert (before.write_queues, dict(before.offsets)) == (6, {})
        assert (after.write_queues, dict(after.offsets)) == (6, {0: 17, 3: 5})
        assert (missing.write_queues, dict(missing.offsets)) == (None, {})


async def _echo(stream: trio.SocketStream) -> None:
    try:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def test_a_proxy_group_cuts_and_heals_every_link_of_a_node() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, _echo, listeners)
        proxies = [FaultProxy(f"p{i}", f"127.0.0.1:{port}", random.Random(i)) for i in range(3)]
        for proxy in proxies:
            await nursery.start(proxy.serve)
        group = ProxyGroup(proxies)
        await Partition(cut=Cut.REFUSE).inject(_Proxied(group), "broker-a-0")
        assert [p.toxics for p in proxies] == [Toxics(cut=Cut.REFUSE)] * 3
        for proxy in proxies:  # a refused link resets a new connection at once
            with trio.fail_after(5):
                stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
                with pytest.raises(trio.BrokenResourceError):
                    await stream.send_all(b"x")
                    await stream.receive_some(10)
                    await stream.send_all(b"x")
                await stream.aclose()
        await Partition(cut=Cut.REFUSE).heal(_Proxied(group), "broker-a-0")
        assert [p.toxics for p in proxies] == [Toxics()] * 3
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", proxies[2].port)
            await stream.send_all(b"back")
            assert await stream.receive_some(10) == b"back"
            await stream.aclose()
        nursery.cancel_scope.cancel()


class _Proxied(FakeControl):
    def __init__(self, group: ProxyGroup) -> None:
        super().__init__([None])
        self.group = group

    def proxy(self, node: str) -> ProxyGroup:
        return self.group
