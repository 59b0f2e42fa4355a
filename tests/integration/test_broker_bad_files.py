"""Issue 13 row 13: a file a broker (or controller) reads at start that cannot be parsed
stops the process with one line, ``error: <file>: <what is wrong>``, and no traceback.

A real store is made by a real ``rmq broker`` run; then each file gets garbage in turn and
the broker is started again on it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from protocol.rpc import open_client
from tests.integration.broker_wire import broker_argv, broker_process, create_topic
from tests.support.processes import namesrv_process, rmq_argv, run_command

pytestmark = pytest.mark.integration

#: Files of a broker's store directory, and the flags that make the broker read them.
FILES = [
    ("epochFileCheckpoint", ()),
    ("config/topics.cbor", ()),
    ("config/subscriptionGroup.cbor", ()),
    ("config/consumerOffset.cbor", ()),
    ("config/delayOffset.cbor", ()),
    ("brokerIdentity", ("--controller-addrs", "127.0.0.1:1")),
]


def garbage(seed: int) -> bytes:
    return random.Random(seed).randbytes(300)


def assert_one_line_error(stderr: str, path: Path) -> str:
    assert "Traceback" not in stderr and "│" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"error: {path}: "), errors[0]
    return errors[0]


async def test_each_damaged_file_is_named_in_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with trio.fail_after(120):
        async with namesrv_process() as ns, open_client(default_timeout_s=10.0) as client:
            async with broker_process(ns.address, store) as broker:
                await create_topic(client, broker.address, "Files", 2)
                assert await broker.stop() == 0
            assert (store / "epochFileCheckpoint").exists()
            for seed, (name, flags) in enumerate(FILES):
                path = store / name
                kept = path.read_bytes() if path.exists() else None
                path.write_bytes(garbage(seed))
                done = await run_command(broker_argv(ns.address, store, *flags), timeout_s=30)
                assert done.returncode != 0, done.describe()
                assert_one_line_error(done.stderr, path)
                if kept is None:
                    path.unlink()
                else:
                    path.write_bytes(kept)
            # Everything restored: it starts again.
            async with broker_process(ns.address, store) as broker:
                assert await broker.stop() == 0


async def test_a_damaged_broker_config_file_is_named_in_one_line(tmp_path: Path) -> None:
    for seed, content in enumerate((garbage(7), b"listenPort = 'x'\n", b"noSuchKey = 1\n")):
        path = tmp_path / f"broker-{seed}.toml"
        path.write_bytes(content)
        done = await run_command(rmq_argv("broker", "--config", str(path)), timeout_s=30)
        assert done.returncode != 0, done.describe()
        assert_one_line_error(done.stderr, path)


async def test_a_damaged_raft_journal_is_named_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "controller"
    argv = rmq_argv("controller", "--dir", str(data), "--port", "0", "--raft-port", "0")
    with trio.fail_after(60):
        done = await run_command([*argv, "--help"], timeout_s=30)
        assert done.returncode == 0, done.describe()
        journal = data / "raft" / "raft.journal"
        journal.parent.mkdir(parents=True)
        journal.write_bytes(garbage(9))
        done = await run_command(argv, timeout_s=30)
    assert done.returncode != 0, done.describe()
    assert "Traceback" not in done.stderr and "│" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"Raft journal {journal} is corrupt" in errors[0], done.stderr
