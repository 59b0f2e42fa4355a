"""A slave store's dispatch (ConsumeQueue entries, index keys) inside one ``functools.reduce``
call, for callgrind.

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        .venv/bin/python -m bench.micro.dispatch_callgrind [--count 4000] [--per-confirm 27] \\
        [--no-keys]

A master store (dispatching confirmed data only, as in controller mode) takes ``--count``
records of ``bench.micro.common.store_records`` (1 KiB bodies over 8 queues, a tag, a KEYS
key and a UNIQ_KEY; ``--no-keys``: no KEYS, as ``rmq bench produce`` and most producers
send); a slave store takes its log with ``append_raw`` (outside the count), then each
confirm move over ``--per-confirm`` records dispatches them and writes the ConsumeQueue
entries (calling a broker's four arrival listeners, nobody waiting), inside one
``functools.reduce``: callgrind counts only that (instructions per
record = collected / count). 27 records is one 32 KiB HA transfer (x256); 1 is what a
confirm releases at 1 in flight. Instruction counts do not move with the machine's load;
compare two trees by running this with each on ``PYTHONPATH`` from outside the worktree.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import attrs
import trio

from bench.micro.common import store_records
from broker.ha import EpochFile, HASlave
from broker.longpoll import PullHoldService
from broker.pop.service import PopArrivals
from broker.store.config import FlushMode, StoreConfig
from broker.store.store import MessageStore
from protocol.message import PROPERTY_KEYS


def _store(directory: Path, name: str) -> MessageStore:
    config = StoreConfig(
        flush_mode=FlushMode.ASYNC_FLUSH,
        min_free_disk_bytes=0,
        node_name=name,
        dispatch_confirmed_only=True,
    )
    return MessageStore.open(directory / name, config)


async def _run(count: int, per_confirm: int, keys: bool, directory: Path) -> None:
    master = _store(directory, "master")
    msgs = store_records(1024)
    if not keys:
        msgs = [
            attrs.evolve(
                m, properties={k: v for k, v in m.properties.items() if k != PROPERTY_KEYS}
            )
            for m in msgs
        ]
    ends: list[int] = []
    for i in range(count):
        r = master.put_message(msgs[i % len(msgs)])
        if (i + 1) % per_confirm == 0 or i + 1 == count:
            ends.append(r.physical_offset + r.wrote_bytes)
    start, end = master.min_physical_offset, master.max_physical_offset
    data = master.read_raw(start, end - start)
    assert len(data) == end - start, "the records must fit one segment"
    await master.close()
    slave = _store(directory, "slave")
    check = HASlave(slave, EpochFile.load(slave.store_dir), broker_id=1)._check_record
    # A broker's listeners: held pulls, pops, and the schedule and timer services' own.
    for listener in (
        PullHoldService().notify,
        PopArrivals().notify,
        PullHoldService().notify,
        PullHoldService().notify,
    ):
        slave.add_arrival_listener(listener)
    slave.append_raw(data, start, check=check)

    def confirm(done: int, offset: int) -> int:
        slave.set_confirm_offset(offset)
        slave.write_queue_entries()
        return done + 1

    functools.reduce(confirm, ends, 0)
    assert slave.dispatched_offset == end
    await slave.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--per-confirm", type=int, default=27)
    parser.add_argument("--no-keys", action="store_true", help="records without KEYS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dispatch-callgrind-") as tmp:
        trio.run(_run, args.count, args.per_confirm, not args.no_keys, Path(tmp))


if __name__ == "__main__":
    main()
