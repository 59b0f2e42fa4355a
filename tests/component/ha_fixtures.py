"""Shared pieces of the HA component tests: stores, a cluster in one process, a fake slave.

Rules:
- Real loopback sockets, real clock, small timers (HA_CFG); every wait runs under
  ``trio.fail_after`` and polls a condition, never a bare sleep standing in for a sync.
- ``FakeSlave`` speaks the HA wire by hand, so a test decides exactly when acks go out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from broker.ha.config import HAConfig
from broker.ha.epochfile import EpochFile
from broker.ha.master import HAMaster
from broker.ha.slave import HASlave
from broker.ha.wire import (
    Ack,
    MasterHandshake,
    SlaveHandshake,
    SlaveSideDecoder,
    Transfer,
)
from broker.store.config import StoreConfig
from broker.store.store import MessageStore
from protocol.message import MessageRecord

SEG = 64 * 1024
STORE_CFG = StoreConfig(
    segment_bytes=SEG,
    cq_entries_per_file=200,
    index_slots=64,
    index_entries=2000,
    min_free_disk_bytes=0,
    checkpoint_interval_s=60.0,
    retention_check_interval_s=600.0,
)
HA_CFG = HAConfig(
    heartbeat_interval_s=0.1,
    housekeeping_timeout_s=1.0,
    max_time_slave_not_catchup_s=30.0,
    check_interval_s=0.1,
    batch_bytes=4096,
    send_timeout_s=2.0,
    connect_timeout_s=1.0,
    ack_interval_s=0.2,
    reconnect_backoff_min_s=0.02,
    reconnect_backoff_max_s=0.2,
    inconsistent_retry_s=0.2,
)
WAIT_S = 10.0


def msg(i: int, *, size: int = 700, queue_id: int = 0) -> MessageRecord:
    return MessageRecord(
        topic="T",
        body=bytes([i % 251]) * size,
        queue_id=queue_id,
        born_timestamp_ms=1,
        born_host=("1.2.3.4", 1),
        store_timestamp_ms=0,
        store_host=("0.0.0.0", 0),
        properties={"KEYS": f"k{i}", "TAGS": "A"},
    )


@attrs.define
class Node:
    path: Path
    name: str
    store: MessageStore
    epochs: EpochFile

    @classmethod
    def open(cls, path: Path, name: str, config: StoreConfig = STORE_CFG) -> Node:
        store = MessageStore.open(path, attrs.evolve(config, node_name=name))
        return cls(path, name, store, EpochFile.load(path, node_name=name))

    async def reopen(self) -> None:
        await self.store.close()
        self.store = MessageStore.open(self.path, self.store.config)
        self.epochs = EpochFile.load(self.path, node_name=self.name)

    def put(self, count: int, *, start: int = 0, size: int = 700) -> list[int]:
        """Append ``count`` messages; return their end offsets."""
        return [self.store.put_message(msg(start + i, size=size)).end_offset for i in range(count)]

    def log_bytes(self, end: int | None = None) -> bytes:
        """The CommitLog from the min offset to ``end`` (default: max), unit by unit."""
        store = self.store
        stop = store.max_physical_offset if end is None else end
        out, at = bytearray(), store.min_physical_offset
        while at < stop:
            piece = store.read_raw(at, 1 << 20)
            assert piece, at
            out += piece
            at += len(piece)
        return bytes(out[: stop - store.min_physical_offset])


async def until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Poll ``predicate`` every 10 ms until it holds; fail after ``timeout_s``."""
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - state owned by other tasks and sockets
            await trio.sleep(0.01)


async def follow_scripted_master(
    nursery: trio.Nursery,
    node: Node,
    master: Callable[[trio.SocketStream], Awaitable[None]],
) -> HASlave:
    """Serve ``master`` (a hand-written HA master) on a loopback port of ``nursery`` and
    start a real ``HASlave`` of ``node`` following it; return the slave."""
    listeners = await nursery.start(trio.serve_tcp, master, 0)
    port = listeners[0].socket.getsockname()[1]
    slave = HASlave(
        node.store,
        node.epochs,
        HA_CFG,
        broker_id=1,
        node_name=node.name,
        master_address=f"127.0.0.1:{port}",
    )
    await nursery.start(slave.run)
    return slave


def caught_up(master: Node, slave: Node) -> Callable[[], bool]:
    return lambda: slave.store.max_physical_offset == master.store.max_physical_offset


@attrs.define
class Cluster:
    """One master and its slaves, each slave's ``run`` in its own cancellable scope."""

    nursery: trio.Nursery
    master_node: Node
    master: HAMaster
    port: int
    slaves: dict[str, HASlave] = attrs.field(factory=dict)
    scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def add_slave(
        self, node: Node, broker_id: int, config: HAConfig = HA_CFG, **kw: object
    ) -> HASlave:
        slave = HASlave(
            node.store,
            node.epochs,
            config,
            broker_id=broker_id,
            node_name=node.name,
            master_address=self.address,
            **kw,  # type: ignore[arg-type]
        )
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await slave.run(task_status=task_status)

        await self.nursery.start(run)
        self.slaves[node.name] = slave
        self.scopes[node.name] = scope
        return slave

    def stop_slave(self, name: str) -> None:
        self.scopes.pop(name).cancel()
        self.slaves.pop(name)

    def append(self, count: int, *, start: int = 0, size: int = 700) -> list[int]:
        ends = self.master_node.put(count, start=start, size=size)
        self.master.notify_appended()
        return ends


@asynccontextmanager
async def cluster(
    master_node: Node, config: HAConfig = HA_CFG, *, epoch: int | None = None, **kw: object
) -> AsyncIterator[Cluster]:
    """Serve ``master_node`` as HA master (controller mode: at ``epoch``, set first)."""
    master = HAMaster(
        master_node.store,
        master_node.epochs,
        config,
        broker_id=0,
        node_name=master_node.name,
        **kw,  # type: ignore[arg-type]
    )
    if epoch is not None:
        await master.new_epoch(epoch)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(master.serve)
        yield Cluster(nursery, master_node, master, port)
        nursery.cancel_scope.cancel()


class FakeSlave:
    """A slave spoken by hand: handshake, then acks exactly when the test says."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = SlaveSideDecoder()
        self.pending: list[MasterHandshake | Transfer] = []

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[FakeSlave]:
        with trio.fail_after(WAIT_S):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            yield cls(stream)

    async def handshake(self, broker_id: int, *, ack: int | None = 0) -> MasterHandshake:
        await self.send(SlaveHandshake(slave_broker_id=broker_id).encode())
        greeting = await self.next()
        assert isinstance(greeting, MasterHandshake)
        if ack is not None:
            await self.ack(ack)
        return greeting

    async def send(self, data: bytes) -> None:
        with trio.fail_after(WAIT_S):
            await self.stream.send_all(data)

    async def ack(self, offset: int) -> None:
        await self.send(Ack(max_offset=offset).encode())

    async def next(self) -> MasterHandshake | Transfer:
        with trio.fail_after(WAIT_S):
            while not self.pending:
                data = await self.stream.receive_some(1 << 16)
                assert data, "the master closed the connection"
                self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    async def transfers_until(self, offset: int) -> list[Transfer]:
        """Data transfers (heartbeats skipped) until one ends at ``offset``."""
        out: list[Transfer] = []
        at = -1
        while at < offset:
            t = await self.next()
            assert isinstance(t, Transfer)
            if t.data:
                out.append(t)
                at = t.offset + len(t.data)
        assert at == offset
        return out

    async def closed_by_peer(self, timeout_s: float = WAIT_S) -> bool:
        """Read until the master closes; True if it did within ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    data = await self.stream.receive_some(1 << 16)
                except trio.BrokenResourceError:
                    return True
                if not data:
                    return True
        return False

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def nodes(tmp_path: Path, *names: str) -> AsyncIterator[list[Node]]:
    """Open one store (and epoch file) per name under ``tmp_path``; close them after."""
    opened = [Node.open(tmp_path / name, name) for name in names]
    try:
        yield opened
    finally:
        with trio.CancelScope(shield=True):
            for node in opened:
                await node.store.close()
