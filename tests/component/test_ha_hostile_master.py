"""Issue 13 row 2: a fake HA master cannot make a slave write outside its store or throw
its CommitLog away.

The master here is written by hand with ``broker/ha/wire.py``'s codec over loopback, and
a real ``HASlave`` on a real store follows it, as a slave steered to a hostile address
would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from broker.ha.slave import HASlave
from broker.ha.wire import Ack, MasterHandshake, MasterSideDecoder, SlaveHandshake, Transfer
from protocol.message import MessageRecord, encode_record
from tests.component.ha_fixtures import HA_CFG, STORE_CFG, WAIT_S, Node, nodes, until


def records(start: int, specs: Sequence[tuple[str, int]], *, body: bytes = b"x" * 100) -> bytes:
    """CommitLog bytes of one record per (topic, queue id), laid out from ``start``."""
    out = bytearray()
    offsets: dict[tuple[str, int], int] = {}
    for topic, queue_id in specs:
        key = (topic, queue_id)
        rec = MessageRecord(
            topic=topic,
            body=body,
            queue_id=queue_id,
            queue_offset=offsets.get(key, 0),
            physical_offset=start + len(out),
            born_timestamp_ms=1,
            born_host=("1.2.3.4", 1),
            store_timestamp_ms=2,
            store_host=("1.2.3.4", 2),
        )
        offsets[key] = offsets.get(key, 0) + 1
        out += encode_record(rec)
    return bytes(out)


@attrs.define
class FakeMaster:
    """Serves one scripted session per accepted connection."""

    listener: trio.SocketListener
    #: What each session sends: (handshake, transfers after the slave's first ack).
    sessions: list[tuple[MasterHandshake, list[Transfer]]]
    #: The slave's first ack of each session (its start offset).
    first_acks: list[int] = attrs.field(factory=list)
    #: Sessions that ended because the slave closed the connection.
    closed_by_slave: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listener.socket.getsockname()[1]}"

    async def serve(self) -> None:
        while self.sessions:
            stream = await self.listener.accept()
            greeting, transfers = self.sessions.pop(0)
            async with stream:
                await self._session(stream, greeting, transfers)

    async def _session(
        self, stream: trio.SocketStream, greeting: MasterHandshake, transfers: list[Transfer]
    ) -> None:
        decoder = MasterSideDecoder()
        events: list[SlaveHandshake | Ack] = []
        while not events:
            events += decoder.feed(await stream.receive_some(4096))
        assert isinstance(events.pop(0), SlaveHandshake)
        await stream.send_all(greeting.encode())
        while not events:
            try:
                data = await stream.receive_some(4096)
            except trio.BrokenResourceError:
                data = b""  # a reset: the slave closed with our bytes unread, also a close
            if not data:
                self.closed_by_slave += 1
                return
            events += decoder.feed(data)
        first = events[0]
        assert isinstance(first, Ack)
        self.first_acks.append(first.max_offset)
        for transfer in transfers:
            await stream.send_all(transfer.encode())
        # Hold the connection until the slave drops it (or the test ends).
        try:
            while await stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass
        self.closed_by_slave += 1


@asynccontextmanager
async def fake_master(
    sessions: list[tuple[MasterHandshake, list[Transfer]]],
) -> AsyncIterator[FakeMaster]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    master = FakeMaster(listeners[0], sessions)
    async with listeners[0], trio.open_nursery() as nursery:
        nursery.start_soon(master.serve)
        yield master
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def following(node: Node, address: str, **config: object) -> AsyncIterator[HASlave]:
    slave = HASlave(
        node.store,
        node.epochs,
        attrs.evolve(HA_CFG, **config),
        broker_id=1,
        node_name=node.name,
        master_address=address,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(slave.run)
        yield slave
        nursery.cancel_scope.cancel()


def outside(tmp_path: Path, store_dir: Path) -> list[Path]:
    """Every file under ``tmp_path`` that is not inside ``store_dir``."""
    return [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(store_dir)]


@pytest.mark.parametrize("topic", ["../../escaped", "/ABSOLUTE", "a/../../b", ".."])
async def test_records_naming_a_path_are_refused(
    tmp_path: Path, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    if topic.startswith("/"):
        topic = str(tmp_path / "abs")
    async with nodes(tmp_path / "nodes", "s") as (s,):
        good = records(0, [("T", 0), ("T", 1)])
        bad = records(len(good), [(topic, 0)])
        greeting = MasterHandshake(max_offset=len(good) + len(bad), last_epoch=1, epochs=((1, 0),))
        session = [
            Transfer(offset=0, epoch=1, epoch_start_offset=0, confirm_offset=0, data=good),
            Transfer(offset=len(good), epoch=1, epoch_start_offset=0, confirm_offset=0, data=bad),
        ]
        with caplog.at_level(logging.WARNING):
            async with fake_master([(greeting, session)]) as m, following(s, m.address) as sl:
                # The close reaches the fake master before the slave's task notes why.
                await until(lambda: m.closed_by_slave == 1 and sl.status().last_error != "")
                assert "not a legal topic" in sl.status().last_error, sl.status()
        assert s.store.max_physical_offset == len(good)  # the good batch, nothing of the bad
        assert s.store.max_offset("T", 0) == 1 and s.store.max_offset("T", 1) == 1
        assert outside(tmp_path, s.path) == []
        assert not (tmp_path / "abs").exists()
        assert [r.message for r in caplog.records if "not a legal topic" in r.message]


@pytest.mark.parametrize(
    ("what", "spec", "body"),
    [
        ("queue id", ("T", -1), b"x"),
        ("queue id", ("T", 1 << 20), b"x"),
        ("body", ("T", 0), b"x" * (40 * 1024)),
    ],
)
async def test_records_out_of_range_are_refused(
    tmp_path: Path, what: str, spec: tuple[str, int], body: bytes
) -> None:
    s = Node.open(tmp_path / "s", "s", attrs.evolve(STORE_CFG, max_message_bytes=32 * 1024))
    try:
        bad = records(0, [spec], body=body)
        greeting = MasterHandshake(max_offset=len(bad), last_epoch=1, epochs=((1, 0),))
        session = [Transfer(offset=0, epoch=1, epoch_start_offset=0, confirm_offset=0, data=bad)]
        async with fake_master([(greeting, session)]) as m, following(s, m.address) as sl:
            await until(lambda: m.closed_by_slave == 1 and sl.status().last_error != "")
            assert what in sl.status().last_error, sl.status()
        assert s.store.max_physical_offset == 0
        assert s.store.topics() == {}
    finally:
        await s.store.close()


@pytest.mark.parametrize(
    ("what", "spec", "body"),
    [("queue id", ("T", 1 << 20), b"x"), ("body", ("T", 0), b"x" * (40 * 1024))],
)
async def test_a_queue_accepted_before_does_not_pass_a_bad_record(
    tmp_path: Path, what: str, spec: tuple[str, int], body: bytes
) -> None:
    """The slave remembers (topic, queue id) pairs it accepted; a later record of the
    same topic or queue is still checked whole."""
    s = Node.open(tmp_path / "s", "s", attrs.evolve(STORE_CFG, max_message_bytes=32 * 1024))
    try:
        good = records(0, [("T", 0), ("T", 0)])
        bad = records(len(good), [spec], body=body)
        greeting = MasterHandshake(max_offset=len(good) + len(bad), last_epoch=1, epochs=((1, 0),))
        session = [
            Transfer(offset=0, epoch=1, epoch_start_offset=0, confirm_offset=0, data=good),
            Transfer(offset=len(good), epoch=1, epoch_start_offset=0, confirm_offset=0, data=bad),
        ]
        async with fake_master([(greeting, session)]) as m, following(s, m.address) as sl:
            await until(lambda: m.closed_by_slave == 1 and sl.status().last_error != "")
            assert what in sl.status().last_error, sl.status()
        assert s.store.max_physical_offset == len(good)
    finally:
        await s.store.close()


async def test_a_master_cannot_cut_more_than_the_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second session claims max offset 0 with the same epoch: the consistent point is 0,
    a cut of the whole log. Over ``max_truncate_bytes`` it is refused, logged, retried."""
    async with nodes(tmp_path, "s") as (s,):
        data = records(0, [("T", i % 4) for i in range(40)])
        end = len(data)
        first = MasterHandshake(max_offset=end, last_epoch=1, epochs=((1, 0),))
        stream = [Transfer(offset=0, epoch=1, epoch_start_offset=0, confirm_offset=end, data=data)]
        liar = MasterHandshake(max_offset=0, last_epoch=1, epochs=((1, 0),))
        sessions = [(first, stream), (liar, []), (liar, [])]
        with caplog.at_level(logging.WARNING):
            async with (
                fake_master(sessions) as m,
                following(s, m.address, max_truncate_bytes=end // 2) as sl,
            ):
                await until(lambda: s.store.max_physical_offset == end)
                await until(lambda: m.closed_by_slave >= 1)
                await until(lambda: "refusing" in sl.status().last_error)
                await until(lambda: not m.sessions, WAIT_S)  # it came back and was refused again
        assert s.store.max_physical_offset == end
        assert s.epochs.cache.pairs() == [(1, 0)]
        assert m.first_acks == [0]  # never acked from a truncated log
        refusals = [r for r in caplog.records if "max_truncate_bytes" in r.getMessage()]
        assert refusals and all(r.levelno == logging.ERROR for r in refusals)


async def test_a_cut_within_the_bound_is_obeyed(tmp_path: Path) -> None:
    """A legitimate consistent point below our end (an unreplicated tail) still cuts."""
    async with nodes(tmp_path, "s") as (s,):
        data = records(0, [("T", 0)] * 10)
        end = len(data)
        size = end // 10
        first = MasterHandshake(max_offset=end, last_epoch=1, epochs=((1, 0),))
        stream = [Transfer(offset=0, epoch=1, epoch_start_offset=0, confirm_offset=0, data=data)]
        # The new master holds 8 of our 10 records, then its own epoch 2.
        second = MasterHandshake(max_offset=8 * size, last_epoch=2, epochs=((1, 0), (2, 8 * size)))
        sessions = [(first, stream), (second, [])]
        async with (
            fake_master(sessions) as m,
            following(s, m.address, max_truncate_bytes=2 * size) as sl,
        ):
            await until(lambda: s.store.max_physical_offset == end)
            await until(lambda: m.first_acks == [0, 8 * size])
            del sl
        assert s.store.max_physical_offset == 8 * size
        assert s.store.max_offset("T", 0) == 8
