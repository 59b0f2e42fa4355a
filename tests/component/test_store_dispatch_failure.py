"""A ConsumeQueue file that cannot be opened mid-put (out of descriptors, EMFILE).

The record is in the CommitLog, so the put succeeds; its ConsumeQueue and index entries
follow once the file can be opened: at the next put or at the store's flush tick. Nothing
is skipped and no queue offset is used twice.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import attrs
import pytest

import broker.store.dispatch as dispatch_module
from broker.store.consumequeue import ConsumeQueue
from broker.store.results import PutStatus
from broker.store.store import MessageStore
from protocol.message import iter_records
from tests.component.test_store_put_get import CFG, msg, ticking_clock


class FailingOpens:
    """ConsumeQueue's constructor, failing with EMFILE while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = True
        self.refused = 0

    def __call__(self, *args: Any, **kwargs: Any) -> ConsumeQueue:
        if self.failing:
            self.refused += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return ConsumeQueue(*args, **kwargs)


def bodies(store: MessageStore, topic: str) -> list[bytes]:
    res = store.get_messages("g", topic, 0, 0, max_count=32, max_bytes=10**6)
    return [r.body for r in iter_records(res.body)] if res.records else []


@pytest.mark.parametrize("batch", [False, True])
async def test_a_put_whose_queue_file_cannot_open_is_dispatched_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: bool
) -> None:
    opens = FailingOpens()
    monkeypatch.setattr(dispatch_module, "ConsumeQueue", opens)
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    try:
        first = [msg(0, topic="New"), msg(1, topic="New")]
        if batch:
            result = store.put_messages(first)
        else:
            result = store.put_message(first[0])
            assert store.put_message(first[1]).status is PutStatus.PUT_OK
        assert result.status is PutStatus.PUT_OK
        assert opens.refused >= 1
        assert bodies(store, "New") == []  # stored, not yet visible
        assert store.catch_up_dispatch() is False  # still failing: left for later
        opens.failing = False
        assert store.put_message(msg(2, topic="New")).queue_offset == 2
        assert bodies(store, "New") == [m.body for m in first] + [msg(2).body]
        assert store.max_offset("New", 0) == 3
    finally:
        await store.close()


async def test_the_catch_up_alone_makes_a_stored_record_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opens = FailingOpens()
    monkeypatch.setattr(dispatch_module, "ConsumeQueue", opens)
    store = MessageStore.open(tmp_path, CFG, clock=ticking_clock())
    try:
        assert store.put_message(msg(0, topic="New")).status is PutStatus.PUT_OK
        opens.failing = False
        assert store.catch_up_dispatch() is True  # what the flush tick calls
        assert bodies(store, "New") == [msg(0).body]
    finally:
        await store.close()


async def test_a_confirm_run_stops_at_the_record_whose_queue_cannot_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A confirm move dispatches the kept records as one run: the records before the one
    that fails get their ConsumeQueue entries and index keys, dispatch stops at it, and the
    catch-up finishes the rest with every key indexed once."""
    opens = FailingOpens()
    monkeypatch.setattr(dispatch_module, "ConsumeQueue", opens)
    config = attrs.evolve(CFG, dispatch_confirmed_only=True)
    store = MessageStore.open(tmp_path, config, clock=ticking_clock())
    try:
        opens.failing = False
        first = store.put_message(msg(0, topic="Old"))
        store.set_confirm_offset(first.end_offset)  # Old's queue exists from here on
        opens.failing = True
        before = [store.put_message(msg(i, topic="Old")) for i in (1, 2)]
        failing = store.put_message(msg(3, topic="New"))
        after = store.put_message(msg(4, topic="Old"))
        with pytest.raises(OSError):
            store.set_confirm_offset(after.end_offset)
        assert store.dispatched_offset == failing.physical_offset
        assert bodies(store, "Old") == [msg(i).body for i in (0, 1, 2)]
        assert store.query_index("Old", "k2", 10, 0, 2**62) == [before[1].physical_offset]
        assert store.query_index("New", "k3", 10, 0, 2**62) == []
        opens.failing = False
        assert store.catch_up_dispatch() is True
        assert bodies(store, "New") == [msg(3).body]
        assert bodies(store, "Old") == [msg(i).body for i in (0, 1, 2, 4)]
        assert store.query_index("New", "k3", 10, 0, 2**62) == [failing.physical_offset]
        shared = store.query_index("Old", "shared", 10, 0, 2**62)
        assert sorted(shared) == sorted(
            [first.physical_offset, after.physical_offset] + [r.physical_offset for r in before]
        )
    finally:
        await store.close()
