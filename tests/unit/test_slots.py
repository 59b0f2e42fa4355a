"""slot_builder: the objects it builds are the ones the class's __init__ builds."""

from __future__ import annotations

import attrs
import pytest

from broker.store.results import AppendResult, PutStatus
from client.message import ReceivedMessage
from protocol import speedups
from protocol.message import MessageRecord, decode_record, encode_record
from protocol.route import MessageQueue
from protocol.slots import python_slot_builder, slot_builder


@pytest.mark.parametrize("builder", [slot_builder, python_slot_builder])
def test_built_record_equals_the_constructed_one(builder: object) -> None:
    values = {
        "topic": "T",
        "body": b"b",
        "queue_id": 1,
        "born_timestamp_ms": 2,
        "born_host": ("127.0.0.1", 3),
        "store_timestamp_ms": 4,
        "store_host": ("10.0.0.1", 5),
        "flag": 6,
        "queue_offset": 7,
        "physical_offset": 8,
        "sys_flag": 0,
        "reconsume_times": 9,
        "prepared_transaction_offset": 10,
        "properties": {"a": "b"},
    }
    built = builder(MessageRecord)(*values.values())  # type: ignore[operator]
    assert built == MessageRecord(**values)  # type: ignore[arg-type]
    assert hash(built) == hash(MessageRecord(**values))  # type: ignore[arg-type]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.topic = "U"  # type: ignore[misc]
    decoded, _ = decode_record(encode_record(built))
    assert decoded == built


def test_received_message_from_record_with_and_without_the_queue() -> None:
    record = MessageRecord(
        topic="T",
        body=b"x",
        queue_id=2,
        born_timestamp_ms=1,
        born_host=("127.0.0.1", 1),
        store_timestamp_ms=1,
        store_host=("127.0.0.1", 10911),
        physical_offset=4096,
        properties={"TAGS": "a", "KEYS": "k1  k2", "UNIQ_KEY": "U"},
    )
    own = ReceivedMessage.from_record(record, "broker-a")
    queue = MessageQueue(topic="T", broker_name="broker-a", queue_id=2)
    assert ReceivedMessage.from_record(record, "broker-a", queue=queue) == own
    other = MessageQueue(topic="T", broker_name="broker-a", queue_id=3)
    assert ReceivedMessage.from_record(record, "broker-a", queue=other).queue == queue
    assert own.keys == ("k1", "k2") and own.tags == "a" and own.msg_id == "U"
    assert own.offset_msg_id == "7F00000100002A9F0000000000001000"


def test_classes_with_validators_are_refused() -> None:
    @attrs.frozen
    class Checked:
        n: int = attrs.field(validator=attrs.validators.ge(0))

    with pytest.raises(TypeError, match="validator"):
        slot_builder(Checked)


@pytest.mark.parametrize("builder", [slot_builder, python_slot_builder])
def test_each_builder_takes_exactly_one_value_per_field(builder: object) -> None:
    make = builder(AppendResult)  # type: ignore[operator]
    values = (PutStatus.PUT_OK, 1, 2, 3, "id", 4, 1, "")
    assert make(*values) == AppendResult(
        status=PutStatus.PUT_OK, physical_offset=1, wrote_bytes=2, queue_offset=3,
        msg_id="id", store_timestamp_ms=4, message_count=1, remark="",
    )  # fmt: skip
    with pytest.raises(TypeError, match="positional argument"):
        make(*values[:-1])
    with pytest.raises(TypeError, match="positional argument"):
        make(*values, "one too many")


def test_the_compiled_builder_is_used_where_the_extension_is_built() -> None:
    if speedups.build_slots is None:
        pytest.skip("protocol._speedups is not built (or RMQ_PURE_PYTHON=1)")
    make = slot_builder(AppendResult)
    assert getattr(make, "func", None) is speedups.build_slots
    with pytest.raises(TypeError, match="slots is"):
        speedups.build_slots(())
    with pytest.raises(TypeError, match="slots is"):
        speedups.build_slots(("not a class",))
