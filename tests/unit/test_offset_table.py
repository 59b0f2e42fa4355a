"""Consumer offsets: step the manager, assert the whole table and dirty flag after each event."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from broker.offsetbounds import StaleOffsetGuard
from broker.offsets import ConsumerOffsetManager, offset_key
from broker.store import metadata
from protocol.errors import InvalidParameter, StorageError


def state(m: ConsumerOffsetManager) -> tuple[dict[str, dict[int, int]], bool]:
    return m.offset_table(), m.dirty


RAISES = object()
SAME = object()


@attrs.frozen
class Step:
    label: str
    event: Callable[[ConsumerOffsetManager], Any]
    result: Any
    state: Any = SAME


def run(steps: list[Step]) -> ConsumerOffsetManager:
    m = ConsumerOffsetManager()
    before = state(m)
    assert before == ({}, False)
    for step in steps:
        if isinstance(step.result, tuple) and step.result and step.result[0] is RAISES:
            with pytest.raises(InvalidParameter, match=step.result[1]):
                step.event(m)
        else:
            assert step.event(m) == step.result, step.label
        after = state(m)
        assert after == (before if step.state is SAME else step.state), step.label
        before = after
    return m


def commit(topic: str, group: str, qid: int, offset: int) -> Callable[[Any], Any]:
    return lambda m: m.commit(topic, group, qid, offset)


def clean(m: ConsumerOffsetManager) -> None:
    """What the periodic persist does, minus the file."""
    m.dirty = False


LIFECYCLE = [
    Step("query before any commit", lambda m: m.query("T", "g1", 0), None),
    Step("commit T@g1 q0=5", commit("T", "g1", 0, 5), True, ({"T@g1": {0: 5}}, True)),
    Step("persisted", clean, None, ({"T@g1": {0: 5}}, False)),
    Step("same offset again: nothing to persist", commit("T", "g1", 0, 5), True),
    Step("ali-ons commits -1: ignored", commit("T", "g1", 1, -1), False),
    Step("negative queue id", commit("T", "g1", -1, 3), (RAISES, "queueId must be >= 0")),
    Step("query q0", lambda m: m.query("T", "g1", 0), 5),
    Step("query unknown queue", lambda m: m.query("T", "g1", 1), None),
    Step(
        "commit q1 and another group and topic",
        lambda m: [
            commit(*a)(m) for a in [("T", "g1", 1, 9), ("T", "g2", 0, 1), ("U", "g1", 3, 0)]
        ],
        [True, True, True],
        ({"T@g1": {0: 5, 1: 9}, "T@g2": {0: 1}, "U@g1": {3: 0}}, True),
    ),
    Step(
        "commit below the stored offset is accepted (consumer restarted)",
        commit("T", "g1", 1, 4),
        True,
        ({"T@g1": {0: 5, 1: 4}, "T@g2": {0: 1}, "U@g1": {3: 0}}, True),
    ),
    Step("persisted", clean, None, ({"T@g1": {0: 5, 1: 4}, "T@g2": {0: 1}, "U@g1": {3: 0}}, False)),
    Step("offsets of T@g1", lambda m: m.offsets("T", "g1"), {0: 5, 1: 4}),
    Step("offsets of unknown", lambda m: m.offsets("V", "g1"), {}),
    Step("all of g1", lambda m: m.offsets_of_group("g1"), {"T": {0: 5, 1: 4}, "U": {3: 0}}),
    Step("topics of g1", lambda m: m.topics_of_group("g1"), ["T", "U"]),
    Step("groups of T", lambda m: m.groups_of_topic("T"), ["g1", "g2"]),
    Step(
        "reset T@g2 queues 0 and 2",
        lambda m: m.reset_to("T", "g2", {0: 0, 2: 7}),
        None,
        ({"T@g1": {0: 5, 1: 4}, "T@g2": {0: 0, 2: 7}, "U@g1": {3: 0}}, True),
    ),
    Step(
        "persisted",
        clean,
        None,
        ({"T@g1": {0: 5, 1: 4}, "T@g2": {0: 0, 2: 7}, "U@g1": {3: 0}}, False),
    ),
    Step(
        "reset with one negative offset changes nothing",
        lambda m: m.reset_to("T", "g2", {0: 3, 1: -1}),
        (RAISES, "offset of queue 1 must be >= 0"),
    ),
    Step(
        "reset with a negative queue id changes nothing",
        lambda m: m.reset_to("T", "g2", {0: 3, -2: 1}),
        (RAISES, "queueId"),
    ),
    Step("empty reset", lambda m: m.reset_to("T", "g2", {}), None),
    Step(
        "remove topic T",
        lambda m: m.remove_topic("T"),
        True,
        ({"U@g1": {3: 0}}, True),
    ),
    Step("remove unknown topic", lambda m: m.remove_topic("T"), False),
    Step("persisted", clean, None, ({"U@g1": {3: 0}}, False)),
    Step("remove unknown group", lambda m: m.remove_group("g2"), False),
    Step("remove g1", lambda m: m.remove_group("g1"), True, ({}, True)),
]


def test_lifecycle() -> None:
    run(LIFECYCLE)


def test_remove_one_pair_and_similar_names() -> None:
    m = ConsumerOffsetManager()
    for topic, group in [("T", "g"), ("T", "gg"), ("TT", "g")]:
        m.commit(topic, group, 0, 1)
    assert m.remove("T", "g") is True
    assert m.remove("T", "g") is False
    # Java's cleanOffset matched substrings before splitting; names only match whole.
    assert m.remove_group("g") is True
    assert m.offset_table() == {"T@gg": {0: 1}}


def test_offset_table_json() -> None:
    m = ConsumerOffsetManager()
    m.commit("T", "g", 1, 9)
    m.commit("T", "g", 0, 15)
    assert offset_key("T", "g") == "T@g"
    body = m.offset_table_json()
    assert body == {"offsetTable": {"T@g": {"0": 15, "1": 9}}}
    assert json.loads(json.dumps(body)) == body


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "offsets.cbor"
    m = ConsumerOffsetManager()
    m.commit("T", "g1", 0, 5)
    m.commit("%RETRY%g1", "g1", 0, 2**40)
    m.save(path)
    assert m.dirty is False
    loaded = ConsumerOffsetManager()
    loaded.commit("stale", "g", 0, 1)
    assert loaded.load(path) is True
    assert state(loaded) == ({"T@g1": {0: 5}, "%RETRY%g1@g1": {0: 2**40}}, False)
    assert ConsumerOffsetManager().load(tmp_path / "missing.cbor") is False


def test_corrupt_file_raises_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.cbor"
    m = ConsumerOffsetManager()
    m.commit("T", "g1", 0, 5)
    m.save(good)
    truncated = tmp_path / "truncated.cbor"
    truncated.write_bytes(good.read_bytes()[:-1])
    cases = [(truncated, "not valid CBOR")]
    for name, payload, message in [
        ("shape.cbor", {"offsets": {}}, "expected {offsets"),
        ("entry.cbor", {"offsets": [["T", "g"]]}, "bad entry"),
        ("negative.cbor", {"offsets": [["T", "g", {0: -1}]]}, "bad offsets of T@g"),
        ("keys.cbor", {"offsets": [["T", "g", {"0": 1}]]}, "bad offsets of T@g"),
    ]:
        path = tmp_path / name
        metadata.save_document(path, kind="broker.consumer-offsets", version=1, payload=payload)
        cases.append((path, message))
    for path, message in cases:
        target = ConsumerOffsetManager()
        target.commit("U", "g", 1, 1)
        with pytest.raises(StorageError, match=message) as info:
            target.load(path)
        assert str(path) in str(info.value)
        assert state(target) == ({"U@g": {1: 1}}, True)


def test_offsets_of_impossible_queue_ids_are_dropped_at_load(tmp_path: Path) -> None:
    """Issue 13 row 11: a file holding commits for queue ids up to 10^20 is cleaned."""
    m = ConsumerOffsetManager()
    for qid in (0, 1, 1023, 1024, 10**20):
        m.commit("T", "g", qid, 5)
    m.commit("U", "g", 10**20, 5)
    path = tmp_path / "offsets.cbor"
    m.save(path)
    loaded = ConsumerOffsetManager()
    loaded.load(path)
    assert loaded.retain_queues_below(1024) == 3
    assert state(loaded) == ({"T@g": {0: 5, 1: 5, 1023: 5}}, True)
    assert loaded.retain_queues_below(1024) == 0


def test_offsets_past_a_queue_end_are_lowered_to_it() -> None:
    """Issue 19 finding 1: a store that came back shorter keeps no offset past its queues.

    Lower offsets stay (they only re-deliver); a queue the store does not know is left
    alone; the revive group's offsets are consumer offsets like any other.
    """
    m = ConsumerOffsetManager()
    m.commit("T", "g1", 0, 200)  # past the end 199: lowered
    m.commit("T", "g1", 1, 50)  # below its end: kept
    m.commit("T", "g2", 0, 199)  # at the end: kept
    m.commit("U", "g1", 0, 7)  # unknown queue: kept
    m.commit("rmq_sys_REVIVE_LOG_c", "CID_RMQ_SYS_REVIVE_GROUP", 0, 12)
    m.dirty = False
    ends = {("T", 0): 199, ("T", 1): 60, ("rmq_sys_REVIVE_LOG_c", 0): 10}
    clamped = m.clamp_to_queue_ends(lambda t, q: ends.get((t, q)))
    assert [(c.topic, c.group, c.queue_id, c.old, c.new) for c in clamped] == [
        ("T", "g1", 0, 200, 199),
        ("rmq_sys_REVIVE_LOG_c", "CID_RMQ_SYS_REVIVE_GROUP", 0, 12, 10),
    ]
    assert state(m) == (
        {
            "T@g1": {0: 199, 1: 50},
            "T@g2": {0: 199},
            "U@g1": {0: 7},
            "rmq_sys_REVIVE_LOG_c@CID_RMQ_SYS_REVIVE_GROUP": {0: 10},
        },
        True,
    )
    m.dirty = False
    assert m.clamp_to_queue_ends(lambda t, q: ends.get((t, q))) == []
    assert m.dirty is False  # nothing changed: nothing to write


def test_the_first_pull_past_a_serving_queue_end_is_moved_back() -> None:
    """A consumer that read messages a power loss took keeps its next offset in memory:
    its first pull past the end the broker started with is moved back to that end; later
    pulls of the same (group, topic, queue), and queues the store did not know, are not."""
    guard = StaleOffsetGuard()
    assert guard.check("g", "T", 0, 10**9) is None  # not armed: nothing known
    guard.arm({("T", 0): 199, ("T", 1): 50})
    assert guard.check("g", "T", 0, 200) == 199
    assert guard.check("g", "T", 0, 200) is None  # already checked: it reads from here now
    assert guard.check("g", "T", 1, 50) is None  # at the end: fine, and checked
    assert guard.check("g", "T", 1, 51) is None
    assert guard.check("g2", "T", 0, 205) == 199  # each group on its own
    assert guard.check("g", "U", 0, 5) is None  # unknown queue
    assert guard.moved == 2
    guard.arm({("T", 0): 150})  # promoted again later: every key afresh
    assert guard.check("g", "T", 0, 199) == 150
