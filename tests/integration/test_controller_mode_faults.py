"""Controller mode under faults, with real processes (issue #7, "Done when").

Each test starts a controller-mode cluster in ``tmp_path`` — ``rmq cluster up --mode
controller``: 3 controllers, a NameServer and broker group broker-a of 3 replicas with
allAckInSyncStateSet on — injects one fault with a signal (kill -9, SIGSTOP/SIGCONT)
while a sender streams messages, and checks one rule of DESIGN.md §6:

- kill -9 of the master: a SyncStateSet member takes over; the old master, restarted,
  comes back as a slave with its broker id, cuts its unreplicated tail and ends with the
  new master's log and epoch entries.
- kill -9 of the controller leader: a new leader serves the same state, no send fails, and
  a master can be elected again.
- the whole quorum killed: sends and pulls go on well past the master's lease; restarted,
  the quorum still knows one master and elects again.
- a master paused past its lease, and deposed meanwhile, acknowledges nothing once it
  resumes: with allAckInSyncStateSet, and (in a cluster this module starts itself, as
  ``rmq cluster up`` cannot set broker keys) with the lease alone; also isolated — the
  quorum killed before it resumes, a stale slave still following it.
- a slave restarted on a new port keeps its broker id and rejoins the SyncStateSet.

No SEND_OK may be lost: everything a sender saw acknowledged is pulled back at the end.

Every process is stopped on the way out: ``cluster_dir`` runs ``rmq cluster down``, and
anything a test (re)starts itself lives in ``managed_process``. Deadlines are generous (a
slow, busy 2-core machine); timings are asserted only as loose sanity bounds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import attrs
import pytest
import trio

from broker.agent import IDENTITY_FILE, read_identity
from broker.config import BrokerConfig
from cli.controller_cmds import CONFIG_NAME, quorum_configs
from client.admin import Admin, HAStatus
from client.controller_admin import find_controller_leader, get_controller_metadata
from controller.config import write_toml
from launcher.pids import proc_start_ticks
from launcher.ready import BROKER_READY, CONTROLLER_READY
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import EpochEntryCache, ReplicasInfo
from protocol.errors import RocketError
from protocol.headers import SendMessageRequestHeaderV2
from protocol.rpc import RemotingClient, check_success, open_client
from tests.component.broker_fixtures import message_properties, send_header
from tests.integration.test_cluster_cli import assert_ok, cluster_dir, read_record, rmq
from tests.integration.test_controller_mode import CALL_TIMEOUT_S, TOPIC, _pull_bodies, _send
from tests.support.processes import (
    ManagedProcess,
    managed_process,
    namesrv_process,
    rmq_argv,
)

pytestmark = pytest.mark.integration

GROUP = "broker-a"
REPLICAS = 3
#: A master's controller lease, as the brokers under test have it (the default).
LEASE_S = BrokerConfig().lease_s
#: Deadline of one controller-mode step: an election, a catch-up, a SyncStateSet change.
STEP_TIMEOUT_S = 60.0
#: Deadline of a whole test.
TEST_TIMEOUT_S = 240.0
POLL_S = 0.2
#: A divergent tail: more than a stopped slave's socket buffers take in (a few MiB).
DIVERGENT_MESSAGES = 24
DIVERGENT_FILL = b"x" * (1024 * 1024)
#: How long a resumed, deposed master is sent to, and how long each such send may wait
#: for its answer (longer than the broker's slaveTimeout, 3 s).
PROBE_S = 5.0
PROBE_TIMEOUT_S = 10.0
#: How much earlier than the master the stale slave is paused (heartbeats: every 1 s).
STALE_HEAD_START_S = 3.0
#: Breath between two sends of a sender, so it does not starve the cluster of CPU.
SEND_GAP_S = 0.01


# --- the cluster ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ControllerCluster:
    """Where the processes of one controller-mode cluster are, and how they were started."""

    namesrv: str
    controllers: tuple[str, ...]
    brokers: tuple[str, ...]
    #: address → pid, for every controller and broker.
    pids: Mapping[str, int]
    #: address → argv it was started with.
    argvs: Mapping[str, list[str]]
    #: broker address → store directory.
    store_dirs: Mapping[str, Path]


def cluster_from_record(root: Path) -> ControllerCluster:
    """The cluster ``rmq cluster up`` recorded in ``root/cluster.json``."""
    nodes = [n for n in read_record(root)["nodes"] if n["address"]]
    return ControllerCluster(
        namesrv=next(n["address"] for n in nodes if n["kind"] == "namesrv"),
        controllers=tuple(n["address"] for n in nodes if n["kind"] == "controller"),
        brokers=tuple(n["address"] for n in nodes if n["kind"] == "broker"),
        pids={n["address"]: int(n["pid"]) for n in nodes},
        argvs={n["address"]: list(n["argv"]) for n in nodes},
        store_dirs={n["address"]: Path(n["store_dir"]) for n in nodes if n["kind"] == "broker"},
    )


async def cluster_up(root: Path) -> ControllerCluster:
    """``rmq cluster up --mode controller`` (allAckInSyncStateSet on, the default)."""
    done = await rmq(
        "cluster", "up", "--mode", "controller", "--dir", str(root), "--namesrv-port", "0"
    )
    assert_ok(done)
    cluster = cluster_from_record(root)
    assert len(cluster.controllers) == 3 and len(cluster.brokers) == REPLICAS, done.describe()
    return cluster


def _toml_value(value: bool | int | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else f'"{value}"'


@contextlib.asynccontextmanager
async def started_cluster(
    root: Path, broker_keys: Mapping[str, bool | int | str]
) -> AsyncIterator[ControllerCluster]:
    """The cluster ``rmq cluster up --mode controller`` runs, started here as managed
    processes, with ``broker_keys`` (broker.conf names) in every broker's TOML config."""
    configs = quorum_configs(root, nodes=3, host="127.0.0.1", base_port=None)
    broker_toml = root / "broker.toml"
    broker_toml.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in broker_keys.items()))
    procs: list[ManagedProcess] = []
    async with contextlib.AsyncExitStack() as stack:
        for config in configs:
            path = root / config.node_id / CONFIG_NAME
            write_toml(path, config)
            argv = rmq_argv("controller", "--config", str(path))
            procs.append(
                await stack.enter_async_context(
                    managed_process(argv, name=config.node_id, ready=CONTROLLER_READY)
                )
            )
        namesrv = await stack.enter_async_context(namesrv_process())
        controllers = ";".join(c.remoting_address for c in configs)
        store_dirs: dict[str, Path] = {}
        for i in range(REPLICAS):
            store = root / f"{GROUP}-{i}" / "store"
            argv = rmq_argv(
                "broker", "--config", str(broker_toml), "--name", GROUP,
                "--controller-addrs", controllers, "--port", "0", "-n", namesrv.address,
                "--dir", str(store),
            )  # fmt: skip
            proc = await stack.enter_async_context(
                managed_process(argv, name=f"{GROUP}-{i}", ready=BROKER_READY)
            )
            procs.append(proc)
            store_dirs[proc.address] = store
        yield ControllerCluster(
            namesrv=namesrv.address,
            controllers=tuple(c.remoting_address for c in configs),
            brokers=tuple(store_dirs),
            pids={p.address: p.pid for p in procs},
            argvs={p.address: p.argv for p in procs},
            store_dirs=store_dirs,
        )


def restarted(
    argv: Sequence[str], ready: re.Pattern[str] = BROKER_READY, **pinned: str
) -> contextlib.AbstractAsyncContextManager[ManagedProcess]:
    """Start a stopped node again with its argv, ``--flag value`` replaced or added for
    each ``flag=value`` of ``pinned`` (``ha_port="0"`` → ``--ha-port 0``); ready once it
    printed ``ready`` (a broker's ready line by default)."""
    out = list(argv)
    for flag, value in pinned.items():
        option = "--" + flag.replace("_", "-")
        if option in out:
            out[out.index(option) + 1] = value
        else:
            out += [option, value]
    return managed_process(out, name=f"restarted {out[1]}", ready=ready)


# --- processes -----------------------------------------------------------------------------


async def kill_and_wait(pid: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to ``pid`` and wait until it is gone (its ports are free again)."""
    os.kill(pid, signum)
    with trio.fail_after(STEP_TIMEOUT_S):
        while proc_start_ticks(pid) is not None:  # noqa: ASYNC110 - seen only through /proc
            await trio.sleep(0.02)


@contextlib.contextmanager
def paused(*pids: int) -> Iterator[None]:
    """SIGSTOP ``pids`` for the block; SIGCONT on the way out, whatever happened."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# --- what the controller and the brokers say ----------------------------------------------


@attrs.frozen(kw_only=True)
class GroupView:
    """broker-a as the controller leader sees it (getSyncStateSet)."""

    master_id: int | None
    master_address: str | None
    master_epoch: int
    sync_state_set: frozenset[int]
    sync_state_set_epoch: int
    #: broker id → address, every replica the controller knows.
    addresses: Mapping[int, str]
    alive: frozenset[int]

    @classmethod
    def of(cls, info: ReplicasInfo) -> GroupView:
        replicas = info.in_sync_replicas + info.not_in_sync_replicas
        return cls(
            master_id=info.master_broker_id,
            master_address=info.master_address,
            master_epoch=info.master_epoch,
            sync_state_set=frozenset(r.broker_id for r in info.in_sync_replicas),
            sync_state_set_epoch=info.sync_state_set_epoch,
            addresses={r.broker_id: r.broker_address for r in replicas},
            alive=frozenset(r.broker_id for r in replicas if r.alive),
        )

    @property
    def state(self) -> tuple[int | None, str | None, int, frozenset[int], int]:
        """What the controller's replicated state holds (liveness is per node, not in it)."""
        return (
            self.master_id,
            self.master_address,
            self.master_epoch,
            self.sync_state_set,
            self.sync_state_set_epoch,
        )

    @property
    def whole(self) -> bool:
        """A master, and every replica alive and in its SyncStateSet."""
        return (
            self.master_id is not None
            and len(self.sync_state_set) == REPLICAS
            and len(self.alive) == REPLICAS
        )

    def other_master_than(self, broker_id: int | None) -> bool:
        return self.master_id is not None and self.master_id != broker_id


async def group_view(client: RemotingClient, cluster: ControllerCluster) -> GroupView | None:
    """broker-a from the controller leader (getSyncStateSet); None: not known there."""
    admin = Admin(client, [cluster.namesrv], timeout_s=CALL_TIMEOUT_S)
    info = await admin.sync_state_set(cluster.controllers, broker_name=GROUP)
    replicas = info.replicas_info_table.get(GROUP)
    return None if replicas is None else GroupView.of(replicas)


async def wait_for_group(
    client: RemotingClient,
    cluster: ControllerCluster,
    what: str,
    ok: Callable[[GroupView], bool],
    *,
    timeout_s: float = STEP_TIMEOUT_S,
) -> GroupView:
    """Poll getSyncStateSet until ``ok``; fail naming ``what`` and the last answer."""
    last: object = "no answer"
    with trio.move_on_after(timeout_s):
        while True:
            try:
                view = await group_view(client, cluster)
            except RocketError as exc:
                last = exc
            else:
                if view is not None and ok(view):
                    return view
                last = view
            await trio.sleep(POLL_S)
    raise AssertionError(f"{GROUP}: not {what} within {timeout_s} s; last answer: {last!r}")


async def wait_for_controller_leader(
    client: RemotingClient, controllers: Sequence[str], *, timeout_s: float = STEP_TIMEOUT_S
) -> str:
    """The leader's address, once it says it leads and a majority of ``controllers`` that
    answer name it."""
    with trio.move_on_after(timeout_s):
        while True:
            metas = []
            for addr in controllers:
                with contextlib.suppress(RocketError):
                    metas.append(await get_controller_metadata(client, addr, timeout_s=2.0))
            for meta in metas:
                named = sum(1 for m in metas if m.leader_address == meta.address)
                if meta.is_leader and named > len(metas) // 2:
                    return meta.address
            await trio.sleep(POLL_S)
    raise AssertionError(f"no controller leader among {controllers} within {timeout_s} s")


async def epoch_cache(client: RemotingClient, broker: str) -> EpochEntryCache:
    """GET_BROKER_EPOCH_CACHE: the broker's epoch entries and CommitLog max offset."""
    request = RemotingCommand.request(RequestCode.GET_BROKER_EPOCH_CACHE)
    response = await client.call(broker, request, timeout_s=CALL_TIMEOUT_S)
    return EpochEntryCache.from_bytes(check_success(response).body)


async def ha_status(client: RemotingClient, cluster: ControllerCluster, broker: str) -> HAStatus:
    return await Admin(client, [cluster.namesrv], timeout_s=CALL_TIMEOUT_S).ha_status(broker)


async def wait_for_send_ok(client: RemotingClient, broker: str, body: bytes) -> None:
    """Send ``body`` to ``broker`` until it answers SEND_OK."""
    with trio.fail_after(STEP_TIMEOUT_S):
        while True:
            if await _send(client, broker, body) == ResponseCode.SUCCESS:
                return
            await trio.sleep(POLL_S)


# --- traffic ---------------------------------------------------------------------------------


@attrs.frozen
class Ack:
    body: bytes
    broker: str
    at_s: float


@attrs.frozen
class Failure:
    body: bytes
    broker: str
    #: The response code, or -1 for no answer (timeout, connection refused or closed).
    code: int


class Sender:
    """Sends numbered messages one at a time until stopped: the broker that acked last
    first, then the other ``brokers`` in order; remembers every ack and every refusal."""

    def __init__(self, client: RemotingClient, brokers: Sequence[str], label: bytes) -> None:
        self.client = client
        self.brokers = list(brokers)
        self.label = label
        self.acks: list[Ack] = []
        self.failures: list[Failure] = []
        self._next = 0
        self._last_ok: str | None = None
        self._stopped = False
        self._acked = trio.Event()

    @property
    def acked(self) -> list[bytes]:
        return [a.body for a in self.acks]

    def acks_by(self, broker: str) -> int:
        return sum(1 for a in self.acks if a.broker == broker)

    async def send_one(self) -> bool:
        body = b"%s %d" % (self.label, self._next)
        self._next += 1
        last = self._last_ok if self._last_ok in self.brokers else None
        for broker in ([last] if last else []) + [b for b in self.brokers if b != last]:
            code = await _send(self.client, broker, body)
            if code == ResponseCode.SUCCESS:
                self.acks.append(Ack(body, broker, trio.current_time()))
                self._last_ok = broker
                self._acked.set()
                self._acked = trio.Event()
                return True
            self.failures.append(Failure(body, broker, code))
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send until ``stop`` (again, after an earlier run was stopped)."""
        self._stopped = False
        task_status.started()
        while not self._stopped:
            acked = await self.send_one()
            await trio.sleep(SEND_GAP_S if acked else POLL_S)

    def stop(self) -> None:
        self._stopped = True

    async def wait_for_acks(self, more: int, *, by: str | None = None) -> None:
        """Wait until ``more`` further sends were acked (by ``by`` when given)."""

        def count() -> int:
            return len(self.acks) if by is None else self.acks_by(by)

        target = count() + more
        with trio.move_on_after(STEP_TIMEOUT_S):
            while count() < target:
                await self._acked.wait()
            return
        where = f" by {by}" if by else ""
        raise AssertionError(
            f"{self.label!r}: {more} more SEND_OK{where} did not come in {STEP_TIMEOUT_S} s "
            f"({len(self.acks)} acked, last failures {self.failures[-3:]})"
        )


@contextlib.asynccontextmanager
async def streaming(sender: Sender) -> AsyncIterator[Sender]:
    """``sender`` runs for the block; its last send completes before the block is left."""
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        try:
            yield sender
        except BaseException as exc:  # re-raised below, outside the nursery
            body_error = exc
        finally:
            sender.stop()
    if body_error is not None:
        raise body_error


def assert_none_lost(acked: Sequence[bytes], stored: Sequence[bytes]) -> None:
    present = set(stored)
    missing = [b for b in acked if b not in present]
    assert not missing, f"{len(missing)} of {len(acked)} SEND_OK messages lost: {missing[:5]}"


# --- the tests ---------------------------------------------------------------------------------


async def test_kill_9_master_restarted_comes_back_as_slave_with_new_masters_log(
    tmp_path: Path,
) -> None:
    """A master killed with an unreplicated tail is replaced by a SyncStateSet member; run
    again on its old port it is a slave with its old broker id, its tail is cut at the
    last common epoch, and it ends with the new master's CommitLog and epoch entries."""
    with trio.fail_after(TEST_TIMEOUT_S):
        async with (
            cluster_dir(tmp_path / "c") as root,
            open_client(name="faults-test", default_timeout_s=CALL_TIMEOUT_S) as client,
        ):
            cluster = await cluster_up(root)
            before = await wait_for_group(client, cluster, "whole", lambda v: v.whole)
            old_id, old_master = before.master_id, before.master_address
            assert old_id is not None and old_master is not None
            slaves = [a for i, a in before.addresses.items() if i != old_id]
            sender = Sender(client, cluster.brokers, b"stream")

            async with streaming(sender):
                await sender.wait_for_acks(50)
                # An unreplicated tail: with the slaves stopped nothing sent now is acked,
                # and far more than their sockets can buffer stays on the master.
                replicated_end = (await epoch_cache(client, old_master)).max_offset
                with paused(*(cluster.pids[s] for s in slaves)):
                    async with trio.open_nursery() as nursery:
                        for i in range(DIVERGENT_MESSAGES):
                            body = b"unreplicated %d " % i + DIVERGENT_FILL
                            nursery.start_soon(_send, client, old_master, body)
                        tail = await _wait_for_growth(
                            client,
                            old_master,
                            replicated_end + DIVERGENT_MESSAGES * len(DIVERGENT_FILL),
                        )
                        await kill_and_wait(cluster.pids[old_master])
                after = await wait_for_group(
                    client, cluster, "with a new master", lambda v: v.other_master_than(old_id)
                )
                new_master = after.master_address
                assert new_master in slaves, after
                await sender.wait_for_acks(50, by=new_master)

            # Its old port; --port 0 picked the HA port too: pick a free one again.
            port = old_master.rpartition(":")[2]
            async with restarted(cluster.argvs[old_master], port=port, ha_port="0") as proc:
                assert proc.address == old_master
                async with streaming(sender):
                    back = await wait_for_group(
                        client,
                        cluster,
                        f"with {old_master} back in the SyncStateSet",
                        lambda v: old_id in v.sync_state_set and v.addresses[old_id] == old_master,
                    )
                    await sender.wait_for_acks(50, by=new_master)
                assert back.master_id == after.master_id, (after, back)
                await _check_same_log(client, cluster, old_master, new_master, old_id, tail)
                stored = await _pull_bodies(client, new_master)
                on_old = await _pull_bodies(client, old_master)
            assert_none_lost(sender.acked, stored)
            assert on_old == stored


async def _wait_for_growth(client: RemotingClient, broker: str, offset: int) -> EpochEntryCache:
    """``broker``'s epoch cache once its CommitLog reached ``offset``."""
    with trio.fail_after(STEP_TIMEOUT_S):
        while True:
            cache = await epoch_cache(client, broker)
            if cache.max_offset >= offset:
                return cache
            await trio.sleep(0.05)


async def _check_same_log(
    client: RemotingClient,
    cluster: ControllerCluster,
    replica: str,
    master: str,
    replica_id: int,
    tail: EpochEntryCache | None = None,
) -> None:
    """``replica`` is a slave with id ``replica_id`` whose CommitLog end and epoch entries
    are ``master``'s (and, given its ``tail`` before, it held bytes past the master's
    last epoch start: it did diverge)."""
    status = await ha_status(client, cluster, replica)
    assert (status.master, status.broker_id) == (False, replica_id), status.raw
    with trio.move_on_after(STEP_TIMEOUT_S):
        while True:
            mine, theirs = await epoch_cache(client, replica), await epoch_cache(client, master)
            if mine.max_offset == theirs.max_offset:
                break
            await trio.sleep(POLL_S)
    assert mine.max_offset == theirs.max_offset, (mine, theirs)
    assert mine.epoch_list == theirs.epoch_list, (mine, theirs)
    assert mine.broker_id == replica_id, mine
    if tail is not None:
        cut_bytes = tail.max_offset - theirs.epoch_list[-1].start_offset
        print(f"{replica} cut an unreplicated tail of {cut_bytes} bytes")
        assert cut_bytes > 0, (tail, theirs)


async def test_kill_9_controller_leader_state_intact_and_sends_never_fail(tmp_path: Path) -> None:
    """The data path does not need the controller: while the leader dies and another is
    elected, every send to the master succeeds; the new leader (named by
    getControllerMetaData) serves the same master, epochs and SyncStateSet, and a master
    kill afterwards still elects a new master."""
    with trio.fail_after(TEST_TIMEOUT_S):
        async with (
            cluster_dir(tmp_path / "c") as root,
            open_client(name="faults-test", default_timeout_s=CALL_TIMEOUT_S) as client,
        ):
            cluster = await cluster_up(root)
            before = await wait_for_group(client, cluster, "whole", lambda v: v.whole)
            master = before.master_address
            assert master is not None
            leader = await find_controller_leader(client, cluster.controllers)
            survivors = [c for c in cluster.controllers if c != leader]

            async with streaming(Sender(client, [master], b"steady")) as sender:
                await sender.wait_for_acks(20)
                await kill_and_wait(cluster.pids[leader])
                new_leader = await wait_for_controller_leader(client, survivors)
                assert new_leader != leader
                after = await wait_for_group(client, cluster, "served", lambda _: True)
                await sender.wait_for_acks(20)
                controllers = ";".join(survivors)
                meta = assert_ok(
                    await rmq("admin", "getControllerMetaData", "-a", controllers, "--json")
                )
                sss = assert_ok(
                    await rmq(
                        "admin", "getSyncStateSet", "-a", controllers, "-b", GROUP,
                        "-n", cluster.namesrv, "--json",
                    )
                )  # fmt: skip
                await sender.wait_for_acks(20)
            assert not sender.failures, sender.failures[:5]
            assert json.loads(meta)["controllerLeaderAddress"] == new_leader, meta
            assert after.state == before.state, (before, after)
            shown = json.loads(sss)[GROUP]
            assert (shown["masterAddress"], shown["masterEpoch"]) == (master, before.master_epoch)
            assert shown["syncStateSetEpoch"] == before.sync_state_set_epoch, shown

            # Elections work again under the new leader.
            await kill_and_wait(cluster.pids[master])
            elected = await wait_for_group(
                client,
                cluster,
                "with a new master",
                lambda v: v.other_master_than(before.master_id),
            )
            assert elected.master_epoch > before.master_epoch, (before, elected)
            assert elected.master_address is not None
            await wait_for_send_ok(client, elected.master_address, b"after the elections")
            stored = await _pull_bodies(client, elected.master_address)
            assert_none_lost(sender.acked, stored)


async def test_whole_quorum_down_data_path_works_past_the_lease_then_elections_resume(
    tmp_path: Path,
) -> None:
    """With every controller killed, the master (allAckInSyncStateSet, all replicas up)
    keeps acknowledging sends and serving pulls well past its lease; the quorum, restarted
    with the same command lines, still has the one master and elects again."""
    headless_s = LEASE_S + 6.0
    with trio.fail_after(TEST_TIMEOUT_S):
        async with (
            cluster_dir(tmp_path / "c") as root,
            open_client(name="faults-test", default_timeout_s=CALL_TIMEOUT_S) as client,
        ):
            cluster = await cluster_up(root)
            before = await wait_for_group(client, cluster, "whole", lambda v: v.whole)
            master = before.master_address
            assert master is not None

            async with streaming(Sender(client, [master], b"headless")) as sender:
                await sender.wait_for_acks(20)
                for controller in cluster.controllers:
                    await kill_and_wait(cluster.pids[controller])
                quorum_down_at = trio.current_time()
                pulled = 0
                while trio.current_time() - quorum_down_at < headless_s:
                    await trio.sleep(2.0)
                    acked = sender.acked
                    stored = await _pull_bodies(client, master)
                    assert_none_lost(acked, stored)
                    pulled += 1
            assert not sender.failures, sender.failures[:5]
            past_lease = [a for a in sender.acks if a.at_s > quorum_down_at + LEASE_S + 2.0]
            assert len(past_lease) >= 10, f"{len(past_lease)} sends acked past the lease"
            assert pulled >= 3

            async with contextlib.AsyncExitStack() as stack:
                for controller in cluster.controllers:
                    await stack.enter_async_context(
                        restarted(cluster.argvs[controller], CONTROLLER_READY)
                    )
                await wait_for_controller_leader(client, cluster.controllers)
                again = await wait_for_group(client, cluster, "whole again", lambda v: v.whole)
                assert again.state == before.state, (before, again)
                masters = [
                    b for b in cluster.brokers if (await ha_status(client, cluster, b)).master
                ]
                assert masters == [master], masters

                await kill_and_wait(cluster.pids[master])
                elected = await wait_for_group(
                    client,
                    cluster,
                    "with a new master",
                    lambda v: v.other_master_than(before.master_id),
                )
                assert elected.master_epoch > before.master_epoch, (before, elected)
                assert elected.master_address is not None
                await wait_for_send_ok(client, elected.master_address, b"after the restart")
                stored = await _pull_bodies(client, elected.master_address)
            assert_none_lost(sender.acked, stored)


async def probe_sends(client: RemotingClient, broker: str, duration_s: float) -> list[int]:
    """Start a send to ``broker`` every quarter second for ``duration_s``, each waiting
    long enough for the broker's own verdict; their codes (-1: no answer)."""
    header = send_header(TOPIC, properties=message_properties(), queue_id=0)
    fields = SendMessageRequestHeaderV2.from_v1(header).to_ext_fields()
    codes: list[int] = []

    async def one(body: bytes) -> None:
        request = RemotingCommand.request(RequestCode.SEND_MESSAGE_V2, fields, body)
        try:
            codes.append((await client.call(broker, request, timeout_s=PROBE_TIMEOUT_S)).code)
        except RocketError:
            codes.append(-1)

    async with trio.open_nursery() as nursery:
        for i in range(int(duration_s / 0.25)):
            nursery.start_soon(one, b"probe %d" % i)
            await trio.sleep(0.25)
    return codes


@pytest.mark.parametrize(
    ("all_ack", "isolated"),
    [
        pytest.param(True, False, id="allAckInSyncStateSet"),
        pytest.param(True, True, id="allAckInSyncStateSet-isolated-with-a-stale-slave"),
        pytest.param(False, True, id="lease-only-isolated-with-a-stale-slave"),
        # With the quorum up, the resumed master and its slaves hear of the new master at
        # once: the lease adds little over the three cases above (each costs ~25 s).
        pytest.param(False, False, id="lease-only", marks=pytest.mark.slow),
    ],
)
async def test_master_paused_past_its_lease_and_deposed_acks_nothing_when_resumed(
    tmp_path: Path, all_ack: bool, isolated: bool
) -> None:
    """apache/rocketmq#7017: a master paused (SIGSTOP) past its lease while the controller
    elects another one acknowledges no send once it resumes.

    ``isolated``: the hole itself. One slave is paused just before the master (so the
    controller elects the other one) and every controller is killed before both resume:
    the old master cannot learn it was deposed, and a stale slave still follows it and
    would ack. With allAckInSyncStateSet its acks still wait for the member that now leads;
    without it, only its expired lease refuses them. The quorum is then restarted.

    Either way the old master ends as a slave with the new master's log, and nothing any
    master acknowledged is lost."""
    root = tmp_path / "c"
    with trio.fail_after(TEST_TIMEOUT_S):
        async with contextlib.AsyncExitStack() as stack:
            if all_ack:
                await stack.enter_async_context(cluster_dir(root))
                cluster = await cluster_up(root)
            else:
                root.mkdir()
                cluster = await stack.enter_async_context(
                    started_cluster(root, {"allAckInSyncStateSet": False})
                )
            client = await stack.enter_async_context(
                open_client(name="faults-test", default_timeout_s=CALL_TIMEOUT_S)
            )
            before = await wait_for_group(client, cluster, "whole", lambda v: v.whole)
            old_id, old_master = before.master_id, before.master_address
            assert old_id is not None and old_master is not None
            stale_id = max(i for i in before.addresses if i != old_id)
            stale_slave = before.addresses[stale_id]
            sender = Sender(client, cluster.brokers, b"stream")

            async with streaming(sender):
                await sender.wait_for_acks(20)
                with contextlib.ExitStack() as pauses:
                    if isolated:
                        pauses.enter_context(paused(cluster.pids[stale_slave]))
                        # Its heartbeats end first: it is not alive when the master's time
                        # out, so the controller elects the other slave and tells it nothing.
                        await trio.sleep(STALE_HEAD_START_S)
                    pauses.enter_context(paused(cluster.pids[old_master]))
                    paused_at = trio.current_time()
                    after = await wait_for_group(
                        client,
                        cluster,
                        "with a new master",
                        lambda v: v.other_master_than(old_id),
                    )
                    paused_s = trio.current_time() - paused_at
                    new_master = after.master_address
                    assert new_master is not None
                    if not isolated:
                        await sender.wait_for_acks(20, by=new_master)
                    else:
                        # No acks awaited: without allAck the new master has no slave to
                        # ack with, both others are paused.
                        assert after.master_id != stale_id, after
                        for controller in cluster.controllers:
                            await kill_and_wait(cluster.pids[controller])
                resumed_at = trio.current_time()
                codes = await probe_sends(client, old_master, PROBE_S)
                deposed = await ha_status(client, cluster, old_master)
            print(f"paused {paused_s:.1f} s; answers of the resumed master: {codes}")
            assert paused_s > LEASE_S
            assert ResponseCode.SUCCESS not in codes, codes
            assert any(code != -1 for code in codes), f"the resumed master never answered: {codes}"
            late = [a for a in sender.acks if a.broker == old_master and a.at_s > resumed_at]
            assert not late, late[:5]
            if isolated:
                # The hole was there: it still takes itself for the master, followed by
                # the stale slave.
                followers = [c.broker_id for c in deposed.connections if c.status == "TRANSFER"]
                assert deposed.master and stale_id in followers, deposed.raw
                for controller in cluster.controllers:
                    argv = cluster.argvs[controller]
                    await stack.enter_async_context(restarted(argv, CONTROLLER_READY))

            healed = await wait_for_group(
                client,
                cluster,
                "whole again under the new master",
                lambda v: v.whole and v.other_master_than(old_id),
            )
            assert healed.master_address is not None
            async with streaming(sender):
                await sender.wait_for_acks(20, by=healed.master_address)
            for broker_id, address in healed.addresses.items():
                if broker_id != healed.master_id:
                    await _check_same_log(
                        client, cluster, address, healed.master_address, broker_id
                    )
            stored = await _pull_bodies(client, healed.master_address)
            assert_none_lost(sender.acked, stored)
            assert not [b for b in stored if b.startswith(b"probe")]
            assert await _pull_bodies(client, old_master) == stored


async def test_slave_restarted_on_a_new_port_keeps_its_id_and_rejoins(tmp_path: Path) -> None:
    """A broker's id lives in its store (brokerIdentity), not in its address: a slave
    stopped and started again on another port registers with the same id, the controller
    maps that id to the new address, and it rejoins the SyncStateSet."""
    with trio.fail_after(TEST_TIMEOUT_S):
        async with (
            cluster_dir(tmp_path / "c") as root,
            open_client(name="faults-test", default_timeout_s=CALL_TIMEOUT_S) as client,
        ):
            cluster = await cluster_up(root)
            before = await wait_for_group(client, cluster, "whole", lambda v: v.whole)
            slave_id = min(i for i in before.addresses if i != before.master_id)
            slave = before.addresses[slave_id]
            identity = read_identity(cluster.store_dirs[slave] / IDENTITY_FILE)
            assert identity is not None and identity.broker_id == slave_id

            await kill_and_wait(cluster.pids[slave], signal.SIGTERM)
            await wait_for_group(
                client, cluster, f"without {slave}", lambda v: slave_id not in v.sync_state_set
            )
            async with restarted(cluster.argvs[slave]) as proc:
                moved = proc.address
                assert moved != slave
                back = await wait_for_group(
                    client,
                    cluster,
                    f"with {slave_id} back in the SyncStateSet at {moved}",
                    lambda v: v.whole and v.addresses.get(slave_id) == moved,
                )
                status = await ha_status(client, cluster, moved)
                assert before.master_address is not None
                await wait_for_send_ok(client, before.master_address, b"all three ack this")
            assert sorted(back.addresses) == sorted(before.addresses), (before, back)
            assert (back.master_id, back.master_epoch) == (before.master_id, before.master_epoch)
            assert (status.master, status.broker_id) == (False, slave_id), status.raw
