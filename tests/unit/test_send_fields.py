"""The send path's written-out pieces equal what the classes they stand for produce."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.processors.send import send_response_fields
from protocol.headers import SendMessageResponseHeader
from protocol.message import properties_from_string
from protocol.record_wire import WireProperties

_TEXT = st.text(alphabet=st.sampled_from("ab\x01\x02KEYSTAG"), max_size=30)


@pytest.mark.parametrize("transaction_id", [None, "AC110001000018B4AAC2A9F1F1F40000"])
def test_send_response_fields_are_the_header_class_fields(transaction_id: str | None) -> None:
    fields = send_response_fields("0A0B0C0D00002A9F0000000000001234", 3, 77, transaction_id)
    expected = SendMessageResponseHeader(
        msg_id="0A0B0C0D00002A9F0000000000001234",
        queue_id=3,
        queue_offset=77,
        transaction_id=transaction_id,
    ).to_ext_fields()
    assert fields == {**expected, "MSG_REGION": "DefaultRegion", "TRACE_ON": "true"}


@given(_TEXT, st.sampled_from(["KEYS", "TAGS", "a", "b", "ab", "\x01", ""]))
def test_wire_properties_read_as_the_parsed_dict(text: str, key: str) -> None:
    parsed = properties_from_string(text)
    view = WireProperties(text)
    assert view.get(key) == parsed.get(key)
    assert view.get(key, "d") == parsed.get(key, "d")
    assert (key in view) == (key in parsed)
    assert dict(view) == parsed
    assert len(view) == len(parsed)
    if key in parsed:
        assert view[key] == parsed[key]
    else:
        with pytest.raises(KeyError):
            view[key]
