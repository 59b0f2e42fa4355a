"""The producer writes a send's ext fields out instead of building the header: the same
fields, in the same order, with the same texts as ``SendMessageRequestHeaderV2`` gives, so
the request's header bytes are the same too."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from client.producer import send_ext_fields
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.headers import SendMessageRequestHeaderV2
from protocol.route import MessageQueue

_INT32 = st.integers(-(2**31), 2**31 - 1)
_TEXT = st.text(max_size=30)


@given(
    group=_TEXT,
    topic=_TEXT,
    broker=_TEXT,
    queue_id=_INT32,
    sys_flag=_INT32,
    born_ms=st.integers(0, 2**63 - 1),
    flag=_INT32,
    properties=_TEXT,
    batch=st.booleans(),
)
def test_the_written_out_fields_are_the_headers(
    group: str,
    topic: str,
    broker: str,
    queue_id: int,
    sys_flag: int,
    born_ms: int,
    flag: int,
    properties: str,
    batch: bool,
) -> None:
    queue = MessageQueue(topic=topic, broker_name=broker, queue_id=queue_id)
    ours = send_ext_fields(
        group,
        queue,
        sys_flag=sys_flag,
        born_ms=born_ms,
        flag=flag,
        properties=properties,
        batch=batch,
    )
    header = SendMessageRequestHeaderV2(
        a=group,
        b=topic,
        c="TBW102",
        d=4,
        e=queue_id,
        f=sys_flag,
        g=born_ms,
        h=flag,
        i=properties,
        j=0,
        k=False,
        m=batch,
        n=broker,
    )
    theirs = header.to_ext_fields()
    assert list(ours.items()) == list(theirs.items())
    code = RequestCode.SEND_MESSAGE_V2
    assert (
        RemotingCommand.request(code, ours, b"x").encode_as(7, 0)
        == RemotingCommand.request(code, theirs, b"x").with_opaque(7, 0).encode()
    )
    assert SendMessageRequestHeaderV2.from_ext_fields(ours) == header
