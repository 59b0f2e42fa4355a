"""The send path's written-out pieces equal what the classes they stand for produce."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.processors.send import send_response_fields
from protocol.headers import SendMessageResponseHeader
from protocol.message import properties_from_string
from protocol.record_wire import record_properties_from_wire, record_properties_parsed

_TEXT = st.text(alphabet=st.sampled_from("ab\x01\x02KEYSTAGCLUSTER"), max_size=40)


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


@given(_TEXT, st.sampled_from(["DefaultCluster", "other"]), st.booleans())
def test_parsed_wire_properties_are_the_string_path_and_its_dict(
    text: str, cluster: str, has_uniq: bool
) -> None:
    if has_uniq:
        text += "UNIQ_KEY\x01U1\x02"
    calls: list[str] = []

    def new_key() -> str:
        calls.append("K")
        return "K"

    expected = record_properties_from_wire(text, cluster=cluster, new_uniq_key=lambda: "K")
    got = record_properties_parsed(text, cluster=cluster, new_uniq_key=new_key)
    if expected is None:
        assert got is None
        return
    assert got is not None
    record_text, pairs = got
    assert record_text == expected
    assert pairs == properties_from_string(expected)
    assert len(calls) == (0 if "UNIQ_KEY" in properties_from_string(text) else 1)
