"""Numbers off the wire are range-checked where they are parsed (issue 13, rows 1 and 12).

Every JSON body reader answers an integer beyond its field's Java type, or one of 4,300+
digits (past Python's int/str conversion limit), with ``MalformedBody``: never a
``ValueError`` escaping as SYSTEM_ERROR with a traceback on a server, or raw out of the
SDK's route parser. Headers are covered in test_headers.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from protocol import bodies, controller_bodies, jsonbody, route
from protocol.errors import MalformedBody
from protocol.javanum import INT32_RANGE, INT64_RANGE, parse_java_int
from tests.fuzz.targets import body_classes

HUGE = "9" * 5000  # a JSON integer Python refuses to convert (sys.get_int_max_str_digits)

#: Every parser of a JSON body, by name.
BODY_PARSERS: dict[str, Callable[[bytes], object]] = {
    "HeartbeatData": bodies.HeartbeatData.from_bytes,
    "ConsumerListBody": bodies.ConsumerListBody.from_bytes,
    "LockBatchRequestBody": bodies.LockBatchRequestBody.from_bytes,
    "UnlockBatchRequestBody": bodies.UnlockBatchRequestBody.from_bytes,
    "LockBatchResponseBody": bodies.LockBatchResponseBody.from_bytes,
    "TopicList": bodies.TopicList.from_bytes,
    "TopicConfigSerializeWrapper": bodies.TopicConfigSerializeWrapper.from_bytes,
    "SubscriptionGroupConfig": bodies.SubscriptionGroupConfig.from_bytes,
    "SubscriptionGroupWrapper": bodies.SubscriptionGroupWrapper.from_bytes,
    "ConsumerConnection": bodies.ConsumerConnection.from_bytes,
    "ProducerConnection": bodies.ProducerConnection.from_bytes,
    "CheckClientRequestBody": bodies.CheckClientRequestBody.from_bytes,
    "TopicRouteData": route.TopicRouteData.from_bytes,
    "ClusterInfo": route.ClusterInfo.from_bytes,
    "RegisterBrokerBody": lambda data: route.RegisterBrokerBody.decode(data, compressed=False),
    "SyncStateSet": controller_bodies.SyncStateSet.from_bytes,
    "ElectMasterResponseBody": controller_bodies.ElectMasterResponseBody.from_bytes,
    "BrokerReplicasInfo": controller_bodies.BrokerReplicasInfo.from_bytes,
    "EpochEntryCache": controller_bodies.EpochEntryCache.from_bytes,
    "GetSyncStateData names": controller_bodies.parse_broker_names,
}


def test_every_body_class_has_a_parser_here() -> None:
    """A new body class with ``from_bytes`` must join BODY_PARSERS (and the fuzz targets)."""
    assert body_classes() <= set(BODY_PARSERS)


@pytest.mark.parametrize("name", sorted(BODY_PARSERS))
@pytest.mark.parametrize(
    "text",
    [
        HUGE,
        "-" + HUGE,
        "[" + HUGE + "]",
        '{"a":' + HUGE + "}",
        "{0:" + HUGE + "}",  # through the fastjson path too
        '{"brokerAddrs":{"' + HUGE + '":"x"}}',
    ],
    ids=["bare", "negative", "in-array", "in-object", "fastjson", "as-key"],
)
def test_a_4300_digit_integer_is_a_malformed_body(name: str, text: str) -> None:
    # The body's shape may be refused first; what matters is that nothing but a
    # MalformedBody leaves the parser (this used to be a ValueError).
    with contextlib.suppress(MalformedBody):
        BODY_PARSERS[name](text.encode())


def _route_with(queue_data: dict[str, Any], broker_addrs: dict[str, str]) -> bytes:
    return json.dumps(
        {
            "queueDatas": [{"brokerName": "b", "perm": 6, **queue_data}],
            "brokerDatas": [{"cluster": "c", "brokerName": "b", "brokerAddrs": broker_addrs}],
        }
    ).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_route_with({"readQueueNums": 2**31}, {}), "does not fit a Java int"),
        (_route_with({"writeQueueNums": 10**20}, {}), "does not fit a Java int"),
        (_route_with({"writeQueueNums": 1_000_000}, {}), "exceeds 65536 queues"),
        (_route_with({"perm": -(2**31) - 1}, {}), "does not fit a Java int"),
        (_route_with({}, {HUGE: "a:1"}), "is not a Java long"),
        (_route_with({}, {str(2**63): "a:1"}), "is not a Java long"),
        (_route_with({}, {"1_0": "a:1"}), "is not a Java long"),
    ],
)
def test_route_numbers_out_of_range(body: bytes, message: str) -> None:
    """The SDK's route parser: a clear MalformedBody, never a ValueError or a huge route."""
    with pytest.raises(MalformedBody, match=message):
        route.TopicRouteData.from_bytes(body)


def test_route_at_the_limits_parses() -> None:
    parsed = route.TopicRouteData.from_bytes(
        _route_with({"writeQueueNums": route.MAX_QUEUE_NUMS}, {str(2**63 - 1): "a:1"})
    )
    assert parsed.queue_datas[0].write_queue_nums == route.MAX_QUEUE_NUMS
    assert parsed.broker_datas[0].broker_addrs == {2**63 - 1: "a:1"}


@pytest.mark.parametrize("conf", ["b:99999999999", "b:-1", "b:1_0", "b:\u0663", "b:65537"])
def test_order_topic_conf_counts_are_checked(conf: str) -> None:
    with pytest.raises(MalformedBody, match="orderTopicConf"):
        route.publish_queues("T", route.TopicRouteData(order_topic_conf=conf))


@pytest.mark.parametrize(
    ("parse", "obj", "message"),
    [
        (route.DataVersion.from_json, {"counter": 2**63}, "does not fit a Java long"),
        (route.DataVersion.from_json, {"stateVersion": -(2**63) - 1}, "Java long"),
        (route.TopicConfig.from_json, {"topicName": "t", "perm": 2**31}, "Java int"),
        (route.MessageQueue.from_json, {"topic": "t", "brokerName": "b", "queueId": 2**31}, "int"),
        (bodies.SubscriptionData.from_json, {"topic": "t", "codeSet": [2**31]}, "Java int"),
        (bodies.SubscriptionData.from_json, {"topic": "t", "subVersion": 2**64}, "Java long"),
        (bodies.SubscriptionGroupConfig.from_json, {"groupName": "g", "retryQueueNums": 2**31}, "int"),
        (controller_bodies.EpochEntry.from_json, {"epoch": 2**31, "startOffset": 0}, "Java int"),
        (controller_bodies.EpochEntry.from_json, {"epoch": 1, "startOffset": 2**63}, "Java long"),
        (controller_bodies.SyncStateSet.from_json, {"syncStateSet": [2**63], "syncStateSetEpoch": 1}, "long"),
        (controller_bodies.BrokerMemberGroup.from_json, {"brokerAddrs": {HUGE: "a"}}, "Java long"),
    ],
)  # fmt: skip
def test_body_fields_are_checked_against_their_java_type(
    parse: Callable[[Any], object], obj: dict[str, Any], message: str
) -> None:
    with pytest.raises(MalformedBody, match=message):
        parse(obj)


@pytest.mark.parametrize("number", ["1_0", "\u0663", " 4", "4 ", "2147483648", "0x10", HUGE])
def test_topic_config_text_numbers_parse_like_java(number: str) -> None:
    with pytest.raises(MalformedBody, match="bad number"):
        route.TopicConfig.from_text(f"T {number} 4 6 SINGLE_TAG")


def test_error_messages_quote_at_most_a_prefix_of_peer_input() -> None:
    with pytest.raises(MalformedBody) as info:
        route.TopicConfig.from_json({"topicName": ["x" * 1_000_000]})
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("text", "int_range", "value"),
    [
        ("0", INT32_RANGE, 0),
        ("-0", INT32_RANGE, 0),
        ("+12", INT32_RANGE, 12),
        ("2147483647", INT32_RANGE, 2**31 - 1),
        ("2147483648", INT32_RANGE, None),
        ("-9223372036854775808", INT64_RANGE, -(2**63)),
        ("9223372036854775808", INT64_RANGE, None),
        ("000000000000000000000000000001", INT64_RANGE, 1),
        ("", INT32_RANGE, None),
        ("-", INT32_RANGE, None),
        ("1 ", INT32_RANGE, None),
        ("1_000", INT32_RANGE, None),
        ("\u0661", INT32_RANGE, None),
        (HUGE, INT64_RANGE, None),
    ],
)
def test_parse_java_int(text: str, int_range: tuple[int, int], value: int | None) -> None:
    assert parse_java_int(text, int_range) == value


def test_invalid_json_without_a_bare_key_costs_no_fastjson_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fastjson pre-pass (a Python call per string) runs only for a bare key error."""
    calls: list[object] = []
    original = jsonbody._quote_bare_key
    monkeypatch.setattr(jsonbody, "_quote_bare_key", lambda m: calls.append(m) or original(m))
    with pytest.raises(MalformedBody):
        jsonbody.loads_fastjson("[" + '"",' * 100_000 + "}")
    assert calls == []
    big_fastjson = "{0:" + '"x",' * (jsonbody.MAX_FASTJSON_BODY_CHARS // 4) + "}"
    with pytest.raises(MalformedBody):
        jsonbody.loads_fastjson(big_fastjson)
    assert calls == []
    assert jsonbody.loads_fastjson('{0:"a",1:{"2":[3]}}') == {"0": "a", "1": {"2": [3]}}
    assert calls
