"""proxy/convert.py: gRPC messages <-> SDK values, receipt handles, error codes (pure)."""

from __future__ import annotations

import zlib

import pytest

pytest.importorskip("rocketmq.grpc_protocol")

from rocketmq.grpc_protocol import definition_pb2 as pb

from client.consumer.simple import PoppedMessage
from client.message import ReceivedMessage, SendStatus
from protocol.errors import (
    MessageIllegal,
    NetworkError,
    ServerError,
    SubscriptionGroupNotExist,
    SystemBusy,
    TopicNotExist,
)
from protocol.pop import MalformedHandle, ReceiptHandle
from protocol.route import MessageQueue
from proxy.convert import (
    BadMessage,
    Code,
    gzip_body,
    parse_receipt_handle,
    receipt_handle,
    send_status_code,
    status_for,
    to_pb_message,
    to_sdk_message,
)
from proxy.service import _failed


def grpc_message(body: bytes = b"hello", **system: object) -> pb.Message:
    out = pb.Message(body=body)
    out.topic.name = "T"
    out.system_properties.message_id = "01AA"
    out.system_properties.tag = "TagA"
    out.system_properties.keys.extend(["k1", "k2"])
    out.user_properties["color"] = "red"
    for key, value in system.items():
        setattr(out.system_properties, key, value)
    return out


def test_a_sent_message_keeps_id_tag_keys_and_properties() -> None:
    sdk, group = to_sdk_message(grpc_message(), max_body_bytes=100)
    assert group is None
    assert (sdk.topic, sdk.body, sdk.tags, sdk.keys, sdk.msg_id) == (
        "T",
        b"hello",
        "TagA",
        ("k1", "k2"),
        "01AA",
    )
    assert dict(sdk.properties) == {"color": "red"}


def test_fifo_group_gzip_body_and_delivery_time() -> None:
    m = grpc_message(gzip_body(b"z" * 50), message_group="g1", body_encoding=pb.GZIP)
    m.system_properties.delivery_timestamp.FromMilliseconds(1_700_000_000_123)
    sdk, group = to_sdk_message(m, max_body_bytes=100)
    assert group == "g1" and sdk.body == b"z" * 50
    assert sdk.properties["__SHARDINGKEY"] == "g1"
    assert sdk.deliver_at_ms == 1_700_000_000_123


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (grpc_message(b""), Code.MESSAGE_BODY_EMPTY),
        (grpc_message(b"x" * 101), Code.MESSAGE_BODY_TOO_LARGE),
        # A gzip bomb is refused past the limit, not inflated whole.
        (
            grpc_message(gzip_body(b"0" * 10_000), body_encoding=pb.GZIP),
            Code.MESSAGE_BODY_TOO_LARGE,
        ),
        (grpc_message(b"not gzip", body_encoding=pb.GZIP), Code.BAD_REQUEST),
    ],
)
def test_bad_messages_are_refused_with_their_code(message: pb.Message, code: int) -> None:
    with pytest.raises(BadMessage) as caught:
        to_sdk_message(message, max_body_bytes=100)
    assert caught.value.api_code == code


def test_reserved_user_properties_are_refused() -> None:
    m = grpc_message()
    m.user_properties["UNIQ_KEY"] = "x"
    with pytest.raises(BadMessage) as caught:
        to_sdk_message(m, max_body_bytes=100)
    assert caught.value.api_code == Code.ILLEGAL_MESSAGE_PROPERTY_KEY


def popped(reconsume: int = 2) -> PoppedMessage:
    handle = ReceiptHandle(
        ck_offset=4,
        pop_time_ms=1000,
        invisible_time_ms=30000,
        revive_qid=1,
        retry="1",
        broker_name="broker-a",
        queue_id=0,
        queue_offset=4,
    )
    message = ReceivedMessage(
        topic="%RETRY%G_T",
        body=b"payload",
        tags="TagA",
        keys=("k",),
        properties={"TAGS": "TagA", "UNIQ_KEY": "01AA", "RETRY_TOPIC": "T", "color": "red"},
        msg_id="01AA",
        offset_msg_id="",
        queue=MessageQueue(topic="%RETRY%G_T", broker_name="broker-a", queue_id=0),
        queue_offset=4,
        commit_log_offset=777,
        born_timestamp_ms=10,
        store_timestamp_ms=20,
        born_host=("10.0.0.1", 1),
        store_host=("10.0.0.2", 10911),
        reconsume_times=reconsume,
        sys_flag=0,
        flag=0,
    )
    return PoppedMessage(message=message, topic="T", handle=handle)


def test_a_received_message_as_the_client_reads_it() -> None:
    out = to_pb_message(popped(), namespace="ns", invisible_s=30.0)
    sp = out.system_properties
    assert out.topic.name == "T" and out.topic.resource_namespace == "ns"
    assert dict(out.user_properties) == {"color": "red"}
    assert (sp.tag, list(sp.keys), sp.message_id) == ("TagA", ["k"], "01AA")
    assert sp.body_digest.type == pb.CRC32
    assert sp.body_digest.checksum == format(zlib.crc32(b"payload"), "08X")
    assert sp.delivery_attempt == 3 and sp.queue_offset == 4
    assert sp.store_host == "10.0.0.2:10911"
    assert sp.receipt_handle == "4 1000 30000 1 1 broker-a 0 4|777"
    assert parse_receipt_handle(sp.receipt_handle) == (popped().handle, 777)
    assert receipt_handle(popped()) == sp.receipt_handle


@pytest.mark.parametrize(
    "text", ["", "x", "4 1000 30000 1 1 broker-a 0 4", "a|1", "4 1 2 3 0 b 0 4|-1"]
)
def test_foreign_receipt_handles_are_malformed(text: str) -> None:
    with pytest.raises(MalformedHandle):
        parse_receipt_handle(text)


def test_errors_map_to_the_apis_codes() -> None:
    assert status_for(TopicNotExist("t"))[0] == Code.TOPIC_NOT_FOUND
    assert status_for(SubscriptionGroupNotExist("g"))[0] == Code.CONSUMER_GROUP_NOT_FOUND
    assert status_for(SystemBusy("b"))[0] == Code.TOO_MANY_REQUESTS
    assert status_for(MessageIllegal("m"))[0] == Code.BAD_REQUEST
    assert status_for(MalformedHandle("h"))[0] == Code.INVALID_RECEIPT_HANDLE
    assert status_for(NetworkError("n"))[0] == Code.INTERNAL_SERVER_ERROR
    assert status_for(ServerError("x", code=23))[0] == Code.ILLEGAL_FILTER_EXPRESSION
    assert status_for(ValueError("v")) == (Code.INTERNAL_SERVER_ERROR, "v")
    assert send_status_code(SendStatus.SEND_OK) == Code.OK
    assert send_status_code(SendStatus.FLUSH_SLAVE_TIMEOUT) == Code.SLAVE_PERSISTENCE_TIMEOUT


def test_an_unexpected_error_is_logged_and_worded_as_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It was answered with its bare text and logged nowhere: a bug looked like a refusal.
    with caplog.at_level("ERROR", logger="proxy.service"):
        status = _failed(ValueError("boom"))
    assert status.code == pb.Code.INTERNAL_SERVER_ERROR
    assert status.message == "internal error: ValueError: boom"
    assert "failed unexpectedly" in caplog.text and "ValueError: boom" in caplog.text
    caplog.clear()
    refused = _failed(TopicNotExist("topic[T] not exist"))  # our clear errors: as they are
    assert refused.code == pb.Code.TOPIC_NOT_FOUND and "internal" not in refused.message
    assert not caplog.text
