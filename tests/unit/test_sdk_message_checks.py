"""``client.message.Message`` refuses what it cannot send, whatever path its checks take."""

from __future__ import annotations

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
