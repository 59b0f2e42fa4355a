"""The pure transaction state: pending halves, op bookkeeping, the check schedule."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.config import BrokerConfig, ConfigError, config_from_mapping
from broker.transaction.service import transaction_config
from broker.transaction.state import (
    CHECK_TAG,
    HALF_TOPIC,
    OP_TOPIC,
    PROPERTY_OP_DECISION,
    REMOVE_TAG,
    CheckDue,
    Decision,
    DiscardDue,
    HalfInfo,
    Op,
    TransactionConfig,
    TransactionState,
    check_body_record,
    commit_record,
    half_record,
    is_half_request,
    op_record,
    real_destination,
)
from protocol.message import (
    SYSFLAG_TRANSACTION_COMMIT_TYPE,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_NOT_TYPE,
    SYSFLAG_TRANSACTION_PREPARED_TYPE,
    MessageRecord,
)

CONFIG = TransactionConfig(timeout_ms=6_000, check_interval_ms=30_000, check_max=3)


def half(offset: int, store_ms: int = 1_000, immunity_ms: int = 6_000) -> HalfInfo:
    return HalfInfo(
        queue_offset=offset,
        physical_offset=offset * 100,
        store_ms=store_ms,
        producer_group="PG",
        immunity_ms=immunity_ms,
    )


def op(op_offset: int, *halves: int, tag: str = REMOVE_TAG, decision: Decision = Decision.COMMIT,
       store_ms: int = 2_000) -> Op:  # fmt: skip
    return Op(
        op_offset=op_offset, half_offsets=halves, tag=tag, decision=decision, store_ms=store_ms
    )


def record(**kw: object) -> MessageRecord:
    base: dict[str, object] = dict(
        topic="T",
        body=b"b",
        queue_id=2,
        born_timestamp_ms=1,
        born_host=("127.0.0.1", 1),
        store_timestamp_ms=5,
        store_host=("127.0.0.1", 2),
        properties={"UNIQ_KEY": "U1", "TAGS": "a", "PGROUP": "PG", "TRAN_MSG": "true"},
    )
    base.update(kw)
    return MessageRecord(**base)  # type: ignore[arg-type]


def test_half_request_is_tran_msg_or_the_prepared_type() -> None:
    assert is_half_request(0, {"TRAN_MSG": "true"})
    assert is_half_request(0, {"TRAN_MSG": "TRUE"})
    assert is_half_request(SYSFLAG_TRANSACTION_PREPARED_TYPE, {})
    assert not is_half_request(0, {"TRAN_MSG": "false"})
    assert not is_half_request(SYSFLAG_TRANSACTION_COMMIT_TYPE, {})


def test_half_commit_and_check_records_keep_what_rocketmq_keeps() -> None:
    sent = record(sys_flag=SYSFLAG_TRANSACTION_PREPARED_TYPE | 0x2)
    parked = half_record(sent, "PG")
    assert (parked.topic, parked.queue_id) == (HALF_TOPIC, 0)
    assert parked.sys_flag & SYSFLAG_TRANSACTION_MASK == SYSFLAG_TRANSACTION_NOT_TYPE
    assert parked.sys_flag & 0x2
    assert parked.properties["REAL_TOPIC"] == "T" and parked.properties["REAL_QID"] == "2"
    assert parked.properties["__transactionId__"] == "U1"
    assert real_destination(parked) == ("T", 2)

    stored = attrs.evolve(parked, physical_offset=4096, queue_offset=7)
    final = commit_record(stored)
    assert (final.topic, final.queue_id) == ("T", 2)
    assert final.sys_flag & SYSFLAG_TRANSACTION_MASK == SYSFLAG_TRANSACTION_COMMIT_TYPE
    assert final.prepared_transaction_offset == 4096
    assert "REAL_TOPIC" not in final.properties and "TRAN_MSG" not in final.properties
    assert final.properties["__transactionId__"] == "U1"
    assert final.properties["PGROUP"] == "PG" and final.properties["TAGS"] == "a"

    checked = check_body_record(stored, 2)
    assert checked.topic == "T" and checked.properties["TRANSACTION_CHECK_TIMES"] == "2"

    o = op_record(stored, 7, tag=REMOVE_TAG, decision=Decision.ROLLBACK)
    assert (o.topic, o.queue_id, o.body) == (OP_TOPIC, 0, b"7")
    assert o.properties == {"TAGS": "d", PROPERTY_OP_DECISION: "ROLLBACK"}
    parsed = Op.from_record(o)
    assert parsed is not None and parsed.half_offsets == (7,)
    assert parsed.decision is Decision.ROLLBACK


def test_half_without_real_topic_has_no_destination() -> None:
    assert real_destination(record(properties={"REAL_QID": "1"})) is None
    assert real_destination(record(properties={"REAL_TOPIC": "T", "REAL_QID": "-1"})) is None


@pytest.mark.parametrize(
    ("body", "tag", "expected"),
    [
        (b"5,6,", "d", (5, 6)),  # RocketMQ 5 batches offsets
        (b"x", "d", None),
        (b"", "d", None),
        (b"5", "z", None),
        (b"\xff", "d", None),
    ],
)
def test_op_parsing(body: bytes, tag: str, expected: tuple[int, ...] | None) -> None:
    parsed = Op.from_record(record(topic=OP_TOPIC, body=body, properties={"TAGS": tag}))
    assert (parsed.half_offsets if parsed else None) == expected
    if parsed is not None:
        assert parsed.decision is Decision.RESOLVED  # a Java op names no decision


def test_halves_resolved_in_any_order_advance_half_done() -> None:
    s = TransactionState(CONFIG, half_start=0, op_start=0)
    s.apply_op(op(0, 1, decision=Decision.ROLLBACK))  # op before its half is read
    assert s.next_half_to_read() == 0
    s.add_half(half(0))
    assert s.next_half_to_read() == 2  # 1 resolved: skipped unread
    assert s.half_done == 0 and list(s.pending) == [0]
    assert s.open_count(3) == 2  # 0 and 2
    s.apply_op(op(1, 0))
    assert s.half_done == 2 and s.pending == {} and s.resolved == {}
    assert s.decision_of(0) is Decision.COMMIT
    assert s.decision_of(1) is Decision.ROLLBACK
    assert s.decision_of(2) is None
    assert s.open_count(3) == 1 and s.open_count(2) == 0


def test_ops_apply_once_in_offset_order() -> None:
    s = TransactionState(CONFIG, half_start=0, op_start=0)
    s.add_half(half(0))
    s.apply_op(op(0, 0, tag=CHECK_TAG, store_ms=7_000))
    s.apply_op(op(0, 0, tag=CHECK_TAG, store_ms=7_000))  # read back after writing it
    assert s.pending[0].checks == 1 and s.op_read == 1
    s.apply_op(op(1, 0, decision=Decision.COMMIT))
    s.apply_op(op(2, 0, decision=Decision.ROLLBACK))  # a contrary op: the first one holds
    assert s.decision_of(0) is Decision.COMMIT


def test_check_schedule_then_discard_after_check_max() -> None:
    s = TransactionState(CONFIG, half_start=0, op_start=0)
    s.add_half(half(0, store_ms=1_000))
    s.add_half(half(1, store_ms=1_000, immunity_ms=200_000))  # CHECK_IMMUNITY_TIME
    assert s.due(6_999) == []
    assert s.due(7_000) == [CheckDue(half=half(0), checks=1)]
    now = 7_000
    for n in range(1, 4):
        s.apply_op(op(n - 1, 0, tag=CHECK_TAG, store_ms=now))
        assert s.due(now + 29_999) == []
        now += 30_000
        expected: CheckDue | DiscardDue = (
            CheckDue(half=half(0), checks=n + 1) if n < 3 else DiscardDue(half=half(0), checks=3)
        )
        assert s.due(now)[0] == expected
    assert [d.half.queue_offset for d in s.due(201_000)] == [0, 1]


def test_rebuild_restores_check_counts_from_ops() -> None:
    """Check ops read before their half is read still count (a rebuild reads ops first)."""
    s = TransactionState(CONFIG, half_start=0, op_start=0)
    s.apply_op(op(0, 0, tag=CHECK_TAG, store_ms=7_000))
    s.apply_op(op(1, 0, tag=CHECK_TAG, store_ms=37_000))
    s.add_half(half(0))
    assert (s.pending[0].checks, s.pending[0].last_check_ms) == (2, 37_000)
    assert s.due(67_000) == [CheckDue(half=half(0), checks=3)]
    assert s.op_progress() == 0
    s.apply_op(op(2, 0))
    assert s.op_progress() == 3 and s.half_done == 1


def test_skip_to_drops_halves_retention_removed() -> None:
    s = TransactionState(CONFIG, half_start=0, op_start=0)
    s.add_half(half(0))
    s.add_half(half(3))  # 1 and 2 hold nothing
    assert s.half_done == 0 and s.open_count(4) == 4
    s.skip_to(3)
    assert s.half_done == 3 and list(s.pending) == [3]
    assert s.decision_of(0) is Decision.RESOLVED


def test_an_absent_half_resolves_only_itself() -> None:
    s = TransactionState(CONFIG, half_start=0, op_start=0)
    s.add_half(half(0))
    s.mark_absent(1)
    assert s.half_read == 2 and list(s.pending) == [0] and s.half_done == 0
    s.apply_op(op(0, 0))
    assert s.half_done == 2


def test_max_pending_and_remembered_decisions_are_bounded() -> None:
    config = TransactionConfig(max_pending=2, keep_decisions=2)
    s = TransactionState(config, half_start=0, op_start=0)
    s.add_half(half(0))
    assert s.wants_halves()
    s.add_half(half(1))
    assert not s.wants_halves()
    for n in range(2):
        s.apply_op(op(n, n))
    for h in range(2, 5):
        s.add_half(half(h))
        s.apply_op(op(h, h))
    assert s.half_done == 5
    assert s.decision_of(4) is Decision.COMMIT
    assert s.decision_of(0) is Decision.RESOLVED  # forgotten, still known resolved
    assert len(s._history) == 2


_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.just(0), st.just(Decision.COMMIT)),
        st.tuples(
            st.just("op"),
            st.integers(min_value=0, max_value=19),
            st.sampled_from([Decision.COMMIT, Decision.ROLLBACK, Decision.DISCARD]),
        ),
        st.tuples(
            st.just("check"), st.integers(min_value=0, max_value=19), st.just(Decision.COMMIT)
        ),
    ),
    max_size=80,
)


@given(_EVENTS)
def test_state_agrees_with_a_naive_model(events: list[tuple[str, int, Decision]]) -> None:
    """Against a model that remembers every op: decisions, open counts, pending halves."""
    stored = 20
    s = TransactionState(TransactionConfig(check_max=100), half_start=0, op_start=0)
    decided: dict[int, Decision] = {}
    checks: dict[int, int] = {}
    read: set[int] = set()
    op_offset = 0
    for kind, h, decision in events:
        if kind == "read":
            nxt = s.next_half_to_read()
            if nxt < stored:
                s.add_half(half(nxt))
                read.add(nxt)
            continue
        tag = REMOVE_TAG if kind == "op" else CHECK_TAG
        s.apply_op(op(op_offset, h, tag=tag, decision=decision, store_ms=op_offset))
        op_offset += 1
        if kind == "op":
            decided.setdefault(h, decision)
        elif h not in decided:
            checks[h] = checks.get(h, 0) + 1
        for offset in range(stored):
            got = s.decision_of(offset)
            assert got == decided.get(offset), (offset, got, decided)
        assert s.open_count(stored) == stored - len(decided)
        assert set(s.pending) == read - set(decided)
        for offset, p in s.pending.items():
            assert p.checks == checks.get(offset, 0)
        assert all(h in decided for h in range(s.half_done))


def test_broker_config_takes_rocketmqs_transaction_keys() -> None:
    config = config_from_mapping(
        {"transactionTimeOut": 1500, "transactionCheckInterval": 60_000, "transactionCheckMax": 5}
    )
    assert transaction_config(config) == TransactionConfig(
        timeout_ms=1500, check_interval_ms=60_000, check_max=5
    )
    defaults = transaction_config(BrokerConfig())
    assert (defaults.timeout_ms, defaults.check_interval_ms, defaults.check_max) == (
        6_000,
        30_000,
        15,
    )
    with pytest.raises(ConfigError):
        config_from_mapping({"transactionTimeOut": 0})
    with pytest.raises(ConfigError):
        config_from_mapping({"transactionCheckMax": -1})


@pytest.mark.parametrize("text", ["²", "٣", "-²", "--5", "1_000", " 5", "9" * 10, ""])
def test_a_half_messages_properties_that_are_no_numbers_are_ignored(text: str) -> None:
    """str.isdigit takes "²", which int() refuses: it raised out of the check scan and took
    the broker down (tests/unit/test_wire_digits.py has the other sites)."""
    half = HalfInfo.from_record(record(properties={"CHECK_IMMUNITY_TIME_IN_SECONDS": text}), 6000)
    assert half.immunity_ms == 6000  # the default first check
    assert real_destination(record(properties={"REAL_TOPIC": "T", "REAL_QID": text})) is None
