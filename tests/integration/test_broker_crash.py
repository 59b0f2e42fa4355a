"""A real broker process with SYNC_FLUSH: kill -9, a torn CommitLog tail, a corrupt record.

Everything goes through the wire (SEND_MESSAGE_V2, PULL_MESSAGE) except the damage, which
is done to the files on disk while the broker is down, as a crash or a bad disk would.
"""

from __future__ import annotations

import itertools
import random
import signal
import time
from pathlib import Path

import attrs
import pytest
import trio

from launcher.ready import BROKER_READY
from protocol.codes import ResponseCode
from protocol.errors import NetworkError, RemotingTimeout
from protocol.message import PROPERTY_KEYS, MessageRecord, encode_record
from protocol.rpc import RemotingClient, open_client
from tests.integration.broker_wire import (
    broker_argv,
    broker_process,
    create_topic,
    pull_all,
    pwrite,
    scan_commitlog,
    send_message,
)
from tests.support.processes import ManagedProcess, managed_process, namesrv_process

pytestmark = pytest.mark.integration

TOPIC = "CrashTopic"
QUEUES = 4
#: Small segments, so a few hundred messages roll over several files.
SEGMENT_BYTES = 256 * 1024
SYNC = ("--flush", "SYNC_FLUSH", "--segment-bytes", str(SEGMENT_BYTES))
IN_FLIGHT = 16
#: Whole-test deadline: three process starts and a few thousand requests on a slow machine.
TEST_TIMEOUT_S = 180.0


@attrs.frozen
class Sent:
    queue_id: int
    body: bytes


def body_for(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randrange(16, 2048))


def keyed(records: dict[int, list[MessageRecord]]) -> dict[str, MessageRecord]:
    """Records by their KEYS value; also checks each queue's offsets are 0, 1, 2, ..."""
    out: dict[str, MessageRecord] = {}
    for queue_id, recs in records.items():
        assert [r.queue_offset for r in recs] == list(range(len(recs))), queue_id
        for rec in recs:
            assert rec.topic == TOPIC and rec.queue_id == queue_id
            key = rec.properties[PROPERTY_KEYS]
            assert key not in out, f"{key} stored twice"
            out[key] = rec
    return out


def assert_all_present(sent: dict[str, Sent], stored: dict[str, MessageRecord]) -> None:
    missing = sorted(set(sent) - set(stored))
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"
    for key, msg in sent.items():
        rec = stored[key]
        assert (rec.queue_id, rec.body) == (msg.queue_id, msg.body), key


@attrs.define
class SendLoad:
    """``IN_FLIGHT`` senders; every send answered SUCCESS is in ``acked``."""

    client: RemotingClient
    addr: str
    attempted: dict[str, Sent] = attrs.field(factory=dict)
    acked: dict[str, Sent] = attrs.field(factory=dict)
    refused: dict[int, int] = attrs.field(factory=dict)
    in_flight: int = 0
    _numbers: itertools.count[int] = attrs.field(factory=itertools.count)

    async def worker(self, seed: int, enough: trio.Event, want: int) -> None:
        rng = random.Random(seed)
        while True:
            n = next(self._numbers)
            key, queue_id = f"crash-{n:06d}", n % QUEUES
            self.attempted[key] = sent = Sent(queue_id, body_for(rng))
            self.in_flight += 1
            try:
                response = await send_message(
                    self.client, self.addr, TOPIC, queue_id, key, sent.body
                )
            except (NetworkError, RemotingTimeout):
                return  # the broker is gone: this send's outcome is unknown
            finally:
                self.in_flight -= 1
            if response.code == ResponseCode.SUCCESS:
                self.acked[key] = sent
                if len(self.acked) >= want:
                    enough.set()
            else:
                self.refused[response.code] = self.refused.get(response.code, 0) + 1


async def send_then_kill(
    client: RemotingClient, broker: ManagedProcess, want: int
) -> tuple[SendLoad, int]:
    """Send with ``IN_FLIGHT`` in flight until ``want`` acks, SIGKILL the broker mid-stream;
    the load and how many sends were in flight at the kill."""
    load = SendLoad(client, broker.address)
    enough = trio.Event()
    async with trio.open_nursery() as nursery:
        for seed in range(IN_FLIGHT):
            nursery.start_soon(load.worker, seed, enough, want)
        await enough.wait()
        in_flight_at_kill = load.in_flight
        broker.send_signal(signal.SIGKILL)
        assert await broker.wait(10) == -signal.SIGKILL
    return load, in_flight_at_kill


async def test_acked_sends_survive_sigkill(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with trio.fail_after(TEST_TIMEOUT_S):
        async with namesrv_process() as ns, open_client(default_timeout_s=15.0) as client:
            async with broker_process(ns.address, store, *SYNC) as broker:
                await create_topic(client, broker.address, TOPIC, QUEUES)
                load, in_flight_at_kill = await send_then_kill(client, broker, want=600)
            assert in_flight_at_kill > 0, "the kill must hit sends in flight"
            assert len(load.acked) >= 600
            assert len(load.attempted) - len(load.acked) <= IN_FLIGHT + sum(load.refused.values())

            async with broker_process(ns.address, store, *SYNC) as broker:
                stored = keyed(await pull_all(client, broker.address, TOPIC, QUEUES))
                assert_all_present(load.acked, stored)
                # Whatever else is there was really sent, intact (unacked ones may be lost).
                assert set(stored) <= set(load.attempted)
                assert_all_present({k: load.attempted[k] for k in stored}, stored)
                assert "abnormal shutdown" in broker.stderr.text, "the crash path was not taken"
                assert len(list((store / "commitlog").iterdir())) >= 2, "expected rolled segments"

                # The recovered broker takes new writes after what it kept.
                rng = random.Random(99)
                more = {f"after-{i}": Sent(i % QUEUES, body_for(rng)) for i in range(20)}
                for key, msg in more.items():
                    response = await send_message(
                        client, broker.address, TOPIC, msg.queue_id, key, msg.body
                    )
                    assert response.code == ResponseCode.SUCCESS, response
                after = keyed(await pull_all(client, broker.address, TOPIC, QUEUES))
                assert_all_present({**load.acked, **more}, after)


async def send_sequentially(
    client: RemotingClient, addr: str, count: int, prefix: str
) -> dict[str, Sent]:
    rng = random.Random(prefix)
    sent: dict[str, Sent] = {}
    for i in range(count):
        key = f"{prefix}-{i}"
        sent[key] = msg = Sent(i % QUEUES, body_for(rng))
        response = await send_message(client, addr, TOPIC, msg.queue_id, key, msg.body)
        assert response.code == ResponseCode.SUCCESS, response
    return sent


async def stop_cleanly(broker: ManagedProcess) -> None:
    assert await broker.stop() == 0, broker.describe("the broker did not stop cleanly")


def torn_record(offset: int) -> bytes:
    """The first half of a record as the store would have written it at ``offset``."""
    rec = MessageRecord(
        topic=TOPIC,
        body=b"t" * 300,
        queue_id=0,
        queue_offset=10_000,
        physical_offset=offset,
        born_timestamp_ms=int(time.time() * 1000),
        born_host=("127.0.0.1", 40000),
        store_timestamp_ms=int(time.time() * 1000),
        store_host=("127.0.0.1", 10911),
        properties={PROPERTY_KEYS: "torn"},
    )
    data = encode_record(rec)
    return data[: len(data) // 2]


async def test_torn_tail_is_cut_and_kept(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with trio.fail_after(TEST_TIMEOUT_S):
        async with namesrv_process() as ns, open_client(default_timeout_s=15.0) as client:
            async with broker_process(ns.address, store, *SYNC) as broker:
                await create_topic(client, broker.address, TOPIC, QUEUES)
                sent = await send_sequentially(client, broker.address, 40, "before")
                await stop_cleanly(broker)

            places, end = scan_commitlog(store)
            assert len(places) == 40
            seg = places[-1].segment
            file_pos = end - int(seg.name)
            half = torn_record(end)
            pwrite(seg, half, file_pos)

            async with broker_process(ns.address, store, *SYNC) as broker:
                assert "torn CommitLog tail" in broker.stderr.text, broker.describe("no repair")
                broken = seg.with_name(seg.name + ".broken")
                assert broken.read_bytes() == half
                data = seg.read_bytes()
                assert data[file_pos : file_pos + len(half)] == bytes(len(half))
                assert_all_present(
                    sent, keyed(await pull_all(client, broker.address, TOPIC, QUEUES))
                )

                more = await send_sequentially(client, broker.address, 10, "after")
                stored = keyed(await pull_all(client, broker.address, TOPIC, QUEUES))
                assert_all_present({**sent, **more}, stored)
                # The first new record went where the torn one had started.
                places, _ = scan_commitlog(store)
                assert places[40].offset == end
                await stop_cleanly(broker)

            # The repair was durable: a plain restart sees all fifty and nothing else.
            async with broker_process(ns.address, store, *SYNC) as broker:
                stored = keyed(await pull_all(client, broker.address, TOPIC, QUEUES))
                assert set(stored) == set(sent) | set(more)
                assert "torn CommitLog tail" not in broker.stderr.text


async def start_expecting_refusal(argv: list[str]) -> tuple[int, str]:
    """Run a broker that should refuse to start; its exit status and stderr."""
    async with managed_process(argv, name="broker") as proc:
        with trio.fail_after(60):
            try:
                await proc.stdout.wait_for(BROKER_READY)
            except EOFError:
                pass
            else:
                pytest.fail(proc.describe("the broker started on a corrupt CommitLog"))
            status = await proc.wait()
    return status, proc.stderr.text


@pytest.mark.parametrize("checkpoint", ["intact", "torn"])
async def test_corrupt_record_before_durable_point_refuses_start(
    tmp_path: Path, checkpoint: str
) -> None:
    """A CRC mismatch in an early record: the broker refuses to start and names the place.

    ``intact``: the damage lies below the checkpoint; recovery re-verifies the last
    segments (``verify_segments_on_open``) and still finds it.
    ``torn``: the checkpoint file is cut in half too, so recovery walks from the oldest
    segment (the path a crash during a checkpoint write takes).
    """
    store = tmp_path / "store"
    with trio.fail_after(TEST_TIMEOUT_S):
        async with namesrv_process() as ns, open_client(default_timeout_s=15.0) as client:
            async with broker_process(ns.address, store, *SYNC) as broker:
                await create_topic(client, broker.address, TOPIC, QUEUES)
                sent = await send_sequentially(client, broker.address, 40, "early")
                await stop_cleanly(broker)

            places, _ = scan_commitlog(store)
            victim = places[2]
            record = victim.segment.read_bytes()[victim.file_pos : victim.file_pos + victim.size]
            body = sent["early-2"].body
            body_pos = record.find(body)
            assert body_pos > 0
            flip_at = victim.file_pos + body_pos + len(body) // 2
            byte = victim.segment.read_bytes()[flip_at]
            pwrite(victim.segment, bytes([byte ^ 0x5A]), flip_at)
            if checkpoint == "torn":
                ckpt = store / "checkpoint"
                ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])

            status, stderr = await start_expecting_refusal(broker_argv(ns.address, store, *SYNC))
            assert status != 0
            assert "Traceback" not in stderr, stderr
            errors = [line for line in stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, stderr
            assert str(victim.segment) in errors[0], errors[0]
            assert f"offset {victim.offset}" in errors[0], errors[0]
