"""``client.message.Message`` refuses what it cannot send, whatever path its checks take."""

from __future__ import annotations

import attrs
import pytest

from client.message import Message


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"properties": {"TAGS": "x"}}, "set by the SDK"),
        ({"properties": {"a": "1", "UNIQ_KEY": "u"}}, "set by the SDK"),
        ({"delay_level": 19}, "delay_level must be 0..18"),
        ({"delay_level": -1}, "delay_level must be 0..18"),
        ({"delay_level": 2, "delay_s": 1.0}, "set one of"),
        ({"deliver_at_ms": 5, "delay_s": 1.0}, "set one of"),
        ({"delay_s": -0.5}, "delay_s must be >= 0"),
        ({"deliver_at_ms": -1}, "deliver_at_ms must be an epoch time"),
    ],
)
def test_bad_messages_are_refused(fields: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Message(topic="T", body=b"x", **fields)  # type: ignore[arg-type]


def test_good_messages_are_built() -> None:
    plain = Message(topic="T", body=b"x")
    assert not plain.is_delayed and plain.properties == {} and plain.keys == ()
    timed = Message(topic="T", body=b"x", delay_s=0.0, properties={"a": "1"}, keys="k1 k2")
    assert timed.is_delayed and timed.keys == ("k1", "k2")
    assert Message(topic="T", body=b"x", delay_level=18).is_delayed


def test_the_written_out_init_converts_as_attrs_did() -> None:
    props = {"a": "1"}
    message = Message(topic="T", body=b"x", keys=["k1", "k2"], properties=props)
    assert message.keys == ("k1", "k2") and type(message.keys) is tuple
    assert Message(topic="T", body=b"x", keys=" k1  k2 ").keys == ("k1", "k2")
    assert Message(topic="T", body=b"x", keys=("k",)).keys == ("k",)
    assert message.properties == props and message.properties is not props  # a copy
    assert Message(topic="T", body=b"x").properties == {}
    assert Message(topic="T", body=b"x") == Message(topic="T", body=b"x")
    # attrs.evolve goes through the same init (and its checks).
    evolved = attrs.evolve(message, tags="t", delay_level=3)
    assert evolved.tags == "t" and evolved.delay_level == 3 and evolved.keys == ("k1", "k2")
    with pytest.raises(ValueError, match="set by the SDK"):
        attrs.evolve(message, properties={"UNIQ_KEY": "u"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.topic = "U"  # type: ignore[misc]
