"""Typed ext-field headers: round trips for every class, required fields, Java names."""

from __future__ import annotations

import re
import typing
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import headers as h
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import InvalidHeaderField, MissingHeaderField
from protocol.frame import FrameDecoder

_BASE_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    str: st.text(),
    bool: st.booleans(),
}


def _int_range(cls: type[h.Header], name: str) -> tuple[int, int]:
    """The Java range of an int field: Integer unless the header declares it ``Long``."""
    (spec,) = [s for s in cls._field_specs() if s.attr == name]
    assert spec.int_range is not None
    return spec.int_range


def _base_and_optional(annotation: Any) -> tuple[type, bool]:
    args = typing.get_args(annotation)
    if not args:
        return annotation, False
    (base,) = [a for a in args if a is not type(None)]
    return base, type(None) in args


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _wire_name(field: attrs.Attribute[Any]) -> str:
    return str(field.metadata.get("wire", _camel(field.name)))


def _fields(cls: type) -> list[tuple[attrs.Attribute[Any], type, bool]]:
    """(attribute, base type, optional) for each field, from the attrs fields and hints."""
    hints = typing.get_type_hints(cls)
    return [(f, *_base_and_optional(hints[f.name])) for f in attrs.fields(cls)]


def header_strategy(cls: type[h.Header]) -> st.SearchStrategy[h.Header]:
    kwargs = {}
    for field, base, optional in _fields(cls):
        if base is int:
            strategy = st.integers(*_int_range(cls, field.name))
        else:
            strategy = _BASE_STRATEGIES[base]  # KeyError: a new field type this test ignores
        kwargs[field.name] = st.none() | strategy if optional else strategy
    return st.builds(cls, **kwargs)


def _example(cls: type[h.Header]) -> h.Header:
    """An instance with every field set."""
    values: dict[type, Any] = {str: "x", int: 7, bool: True}
    return cls(**{f.name: values[base] for f, base, _ in _fields(cls)})


def _code_name(cls: type[h.Header]) -> str | None:
    return None if cls.CODE is None else RequestCode(cls.CODE).name


def _header_id(cls: type) -> str:
    return cls.__name__


# Field names of the Java header classes at apache/rocketmq 5.3.x
# (remoting/.../protocol/header/**). Our wire names must be among them.
JAVA_FIELDS: dict[str, set[str]] = {
    "GetRouteInfoRequestHeader": {"topic", "acceptStandardJsonOnly"},
    "RegisterBrokerRequestHeader": {
        "brokerName", "brokerAddr", "clusterName", "haServerAddr", "brokerId",
        "heartbeatTimeoutMillis", "enableActingMaster", "compressed", "bodyCrc32",
    },
    "RegisterBrokerResponseHeader": {"haServerAddr", "masterAddr"},
    "UnregisterBrokerRequestHeader": {"brokerName", "brokerAddr", "clusterName", "brokerId"},
    "BrokerHeartbeatRequestHeader": {
        "clusterName", "brokerAddr", "brokerName", "brokerId", "epoch", "maxOffset",
        "confirmOffset", "heartbeatTimeoutMills", "electionPriority",
    },
    "DeleteTopicFromNamesrvRequestHeader": {"topic", "clusterName"},
    "WipeWritePermOfBrokerRequestHeader": {"brokerName"},
    "WipeWritePermOfBrokerResponseHeader": {"wipeTopicCount"},
    "AddWritePermOfBrokerRequestHeader": {"brokerName"},
    "AddWritePermOfBrokerResponseHeader": {"addTopicCount"},
    "GetTopicsByClusterRequestHeader": {"cluster"},
    "SendMessageRequestHeader": {
        "producerGroup", "topic", "defaultTopic", "defaultTopicQueueNums", "queueId",
        "sysFlag", "bornTimestamp", "flag", "properties", "reconsumeTimes", "unitMode",
        "batch", "maxReconsumeTimes", "bname",  # bname: inherited from RpcRequestHeader
    },
    "SendMessageRequestHeaderV2": set("abcdefghijklmn"),
    "SendMessageResponseHeader": {
        "msgId", "queueId", "queueOffset", "transactionId", "batchUniqId", "recallHandle",
    },
    "PullMessageRequestHeader": {
        "consumerGroup", "topic", "queueId", "queueOffset", "maxMsgNums", "sysFlag",
        "commitOffset", "suspendTimeoutMillis", "subscription", "subVersion",
        "expressionType", "maxMsgBytes", "requestSource", "proxyFrowardClientId",
    },
    "PullMessageResponseHeader": {
        "suggestWhichBrokerId", "nextBeginOffset", "minOffset", "maxOffset", "offsetDelta",
        "topicSysFlag", "groupSysFlag", "forbiddenType",
    },
    "QueryMessageRequestHeader": {"topic", "key", "maxNum", "beginTimestamp", "endTimestamp"},
    "QueryMessageResponseHeader": {"indexLastUpdateTimestamp", "indexLastUpdatePhyoffset"},
    "ViewMessageRequestHeader": {"topic", "offset"},
    "QueryConsumerOffsetRequestHeader": {
        "consumerGroup", "topic", "queueId", "setZeroIfNotFound",
    },
    "UpdateConsumerOffsetRequestHeader": {"consumerGroup", "topic", "queueId", "commitOffset"},
    "OffsetResponseHeader": {"offset"},
    "GetMaxOffsetRequestHeader": {"topic", "queueId", "committed"},
    "GetMinOffsetRequestHeader": {"topic", "queueId"},
    "SearchOffsetRequestHeader": {"topic", "queueId", "timestamp", "boundaryType"},
    "GetEarliestMsgStoretimeRequestHeader": {"topic", "queueId"},
    "GetEarliestMsgStoretimeResponseHeader": {"timestamp"},
    "UnregisterClientRequestHeader": {"clientID", "producerGroup", "consumerGroup"},
    "GetConsumerListByGroupRequestHeader": {"consumerGroup"},
    "NotifyConsumerIdsChangedRequestHeader": {"consumerGroup"},
    "ConsumerSendMsgBackRequestHeader": {
        "offset", "group", "delayLevel", "originMsgId", "originTopic", "unitMode",
        "maxReconsumeTimes",
    },
    "CreateTopicRequestHeader": {
        "topic", "defaultTopic", "readQueueNums", "writeQueueNums", "perm",
        "topicFilterType", "topicSysFlag", "order", "attributes", "force",
    },
    "DeleteTopicRequestHeader": {"topic"},
    "GetTopicStatsInfoRequestHeader": {"topic"},
    "GetConsumeStatsRequestHeader": {"consumerGroup", "topic", "topicList"},
    "DeleteSubscriptionGroupRequestHeader": {"groupName", "cleanOffset"},
    "ResetOffsetRequestHeader": {"group", "topic", "queueId", "offset", "timestamp", "isForce"},
    # controller (remoting/.../protocol/header/controller/**, NotifyBrokerRoleChanged...)
    "AlterSyncStateSetRequestHeader": {"brokerName", "masterBrokerId", "masterEpoch", "invokeTime"},
    "AlterSyncStateSetResponseHeader": {"newSyncStateSetEpoch"},
    "ElectMasterRequestHeader": {
        "clusterName", "brokerName", "brokerId", "designateElect", "invokeTime",
    },
    "ElectMasterResponseHeader": {
        "masterBrokerId", "masterAddress", "masterEpoch", "syncStateSetEpoch",
    },
    "RegisterBrokerToControllerRequestHeader": {
        "clusterName", "brokerName", "brokerId", "brokerAddress", "invokeTime",
    },
    "RegisterBrokerToControllerResponseHeader": {
        "clusterName", "brokerName", "masterBrokerId", "masterAddress", "masterEpoch",
        "syncStateSetEpoch",
    },
    "GetReplicaInfoRequestHeader": {"brokerName"},
    "GetReplicaInfoResponseHeader": {"masterBrokerId", "masterAddress", "masterEpoch"},
    "GetMetaDataResponseHeader": {
        "group", "controllerLeaderId", "controllerLeaderAddress", "isLeader", "peers",
    },
    "CleanControllerBrokerDataRequestHeader": {
        "clusterName", "brokerName", "brokerControllerIdsToClean", "isCleanLivingBroker",
        "invokeTime",
    },
    "GetNextBrokerIdRequestHeader": {"clusterName", "brokerName"},
    "GetNextBrokerIdResponseHeader": {"clusterName", "brokerName", "nextBrokerId"},
    "ApplyBrokerIdRequestHeader": {
        "clusterName", "brokerName", "appliedBrokerId", "registerCheckCode",
    },
    "ApplyBrokerIdResponseHeader": {"clusterName", "brokerName"},
    "NotifyBrokerRoleChangedRequestHeader": {
        "masterAddress", "masterEpoch", "syncStateSetEpoch", "masterBrokerId",
    },
}  # fmt: skip


def test_all_headers_is_complete() -> None:
    assert {cls.__name__ for cls in h.ALL_HEADERS} == set(JAVA_FIELDS)
    for value in vars(h).values():
        if isinstance(value, type) and issubclass(value, h.Header) and value is not h.Header:
            assert value in h.ALL_HEADERS


@pytest.mark.parametrize("cls", h.ALL_HEADERS, ids=_header_id)
def test_wire_names_are_rocketmq_field_names(cls: type[h.Header]) -> None:
    ext = _example(cls).to_ext_fields()
    assert set(ext) == {_wire_name(f) for f, _, _ in _fields(cls)}
    assert set(ext) <= JAVA_FIELDS[cls.__name__]


@settings(deadline=None, max_examples=60)
@pytest.mark.parametrize("cls", h.ALL_HEADERS, ids=_header_id)
@given(data=st.data())
def test_round_trip(cls: type[h.Header], data: st.DataObject) -> None:
    header = data.draw(header_strategy(cls), label="header")
    ext = header.to_ext_fields()
    assert all(isinstance(v, str) for v in ext.values())
    present = {_wire_name(f) for f, _, _ in _fields(cls) if getattr(header, f.name) is not None}
    assert set(ext) == present  # None is omitted, everything else is sent
    assert cls.from_ext_fields(ext) == header
    # ... and the same through a real JSON frame.
    request = RemotingCommand.request(cls.CODE or 0, ext)
    (frame,) = FrameDecoder().feed(request.encode())
    assert cls.from_ext_fields(RemotingCommand.from_frame(frame).ext_fields) == header


REQUIRED = [
    (cls, field.name)
    for cls in h.ALL_HEADERS
    for field, _, _ in _fields(cls)
    if field.default is attrs.NOTHING
]


@pytest.mark.parametrize(("cls", "name"), REQUIRED, ids=[f"{c.__name__}.{n}" for c, n in REQUIRED])
def test_missing_required_field(cls: type[h.Header], name: str) -> None:
    field = attrs.fields_dict(cls)[name]
    ext = _example(cls).to_ext_fields()
    del ext[_wire_name(field)]
    with pytest.raises(MissingHeaderField) as info:
        cls.from_ext_fields(ext)
    assert repr(_wire_name(field)) in str(info.value)
    code_name = _code_name(cls)
    if code_name is not None:
        assert code_name in str(info.value)


def test_missing_field_message_example() -> None:
    with pytest.raises(MissingHeaderField, match="'topic' is missing for GET_ROUTEINFO_BY_TOPIC"):
        h.GetRouteInfoRequestHeader.from_ext_fields({"acceptStandardJsonOnly": "true"})


def test_optional_fields_may_be_absent() -> None:
    for cls in h.ALL_HEADERS:
        full = _example(cls).to_ext_fields()
        required = {_wire_name(attrs.fields_dict(c)[n]) for c, n in REQUIRED if c is cls}
        header = cls.from_ext_fields({k: v for k, v in full.items() if k in required})
        for field in attrs.fields(cls):
            if field.default is not attrs.NOTHING:
                assert getattr(header, field.name) == field.default


INT_FIELDS = [
    (cls, field.name) for cls in h.ALL_HEADERS for field, base, _ in _fields(cls) if base is int
]


@pytest.mark.parametrize(
    ("cls", "name"), INT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in INT_FIELDS]
)
def test_non_integer_is_invalid(cls: type[h.Header], name: str) -> None:
    wire = _wire_name(attrs.fields_dict(cls)[name])
    ext = {**_example(cls).to_ext_fields(), wire: "12abc"}
    with pytest.raises(InvalidHeaderField) as info:
        cls.from_ext_fields(ext)
    assert repr(wire) in str(info.value)
    assert "12abc" in str(info.value)


@pytest.mark.parametrize(
    "raw",
    # Python's int() takes "1_000", non-ASCII digits and 4,300-digit strings (ValueError);
    # Java's parseInt takes none of them.
    ["", " ", "1.5", "abc", "0x10", "true", "1e3", "1_000", "\u0661", "--1", "+-1", "9" * 5000],
)
def test_integer_parsing_refuses(raw: str) -> None:
    with pytest.raises(
        InvalidHeaderField, match=r"'queueId' must be an integer fitting a Java int.*GET_MIN_OFFSET"
    ):
        h.GetMinOffsetRequestHeader.from_ext_fields({"topic": "T", "queueId": raw})


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("0", 0),
        ("-1", -1),
        ("+7", 7),
        (" 12 ", 12),
        ("0" * 5000 + "3", 3),
        ("-2147483648", -(2**31)),
    ],
)
def test_integer_parsing_accepts(raw: str, value: int) -> None:
    header = h.GetMinOffsetRequestHeader.from_ext_fields({"topic": "T", "queueId": raw})
    assert header.queue_id == value


@pytest.mark.parametrize(
    ("cls", "name"), INT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in INT_FIELDS]
)
def test_integer_fields_are_range_checked_by_their_java_type(
    cls: type[h.Header], name: str
) -> None:
    """Every int field takes exactly its Java type's range: int32, or int64 for ``Long``."""
    wire = _wire_name(attrs.fields_dict(cls)[name])
    low, high = _int_range(cls, name)
    assert (low, high) in (h.INT32_RANGE, h.INT64_RANGE)
    for edge in (low, high):
        header = cls.from_ext_fields({**_example(cls).to_ext_fields(), wire: str(edge)})
        assert getattr(header, name) == edge
    for beyond in (low - 1, high + 1, 10**20, -(10**20)):
        with pytest.raises(InvalidHeaderField, match=f"'{wire}' must be an integer fitting a Java"):
            cls.from_ext_fields({**_example(cls).to_ext_fields(), wire: str(beyond)})


def test_long_fields_are_the_java_longs() -> None:
    """Spot checks against the Java header classes: offsets and timestamps are Long."""
    assert _int_range(h.PullMessageRequestHeader, "queue_offset") == h.INT64_RANGE
    assert _int_range(h.PullMessageRequestHeader, "queue_id") == h.INT32_RANGE
    assert _int_range(h.SendMessageRequestHeaderV2, "g") == h.INT64_RANGE  # bornTimestamp
    assert _int_range(h.CreateTopicRequestHeader, "write_queue_nums") == h.INT32_RANGE
    assert _int_range(h.RegisterBrokerRequestHeader, "broker_id") == h.INT64_RANGE


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("TRUE", True), ("false", False), ("1", False), ("", False)]
)
def test_booleans_parse_like_java(raw: str, value: bool) -> None:
    header = h.GetRouteInfoRequestHeader.from_ext_fields(
        {"topic": "T", "acceptStandardJsonOnly": raw}
    )
    assert header.accept_standard_json_only is value


@pytest.mark.parametrize("cls", h.ALL_HEADERS, ids=_header_id)
def test_unknown_ext_fields_are_ignored(cls: type[h.Header]) -> None:
    example = _example(cls)
    noise = {"ns": "n", "nsd": "true", "oway": "false", "lo": "true", "zzUnknown": "?"}
    assert cls.from_ext_fields({**noise, **example.to_ext_fields()}) == example


# --- SEND_MESSAGE_V2 <-> SEND_MESSAGE ----------------------------------------------------

#: SendMessageRequestHeaderV2.createSendMessageRequestHeaderV1 in the Java source.
V2_TO_V1_WIRE = {
    "a": "producerGroup",
    "b": "topic",
    "c": "defaultTopic",
    "d": "defaultTopicQueueNums",
    "e": "queueId",
    "f": "sysFlag",
    "g": "bornTimestamp",
    "h": "flag",
    "i": "properties",
    "j": "reconsumeTimes",
    "k": "unitMode",
    "l": "maxReconsumeTimes",
    "m": "batch",
    "n": "bname",
}


def test_v2_to_v1_known_example() -> None:
    v2 = h.SendMessageRequestHeaderV2(
        a="PG", b="T", c="TBW102", d=4, e=-1, f=0, g=1_700_000_000_000, h=0,
        i="UNIQ_KEY\x01abc\x02", j=2, k=False, l=16, m=True, n="broker-a",
    )  # fmt: skip
    assert v2.to_v1() == h.SendMessageRequestHeader(
        producer_group="PG",
        topic="T",
        default_topic="TBW102",
        default_topic_queue_nums=4,
        queue_id=-1,
        sys_flag=0,
        born_timestamp=1_700_000_000_000,
        flag=0,
        properties="UNIQ_KEY\x01abc\x02",
        reconsume_times=2,
        unit_mode=False,
        max_reconsume_times=16,
        batch=True,
        broker_name="broker-a",
    )


@given(v2=header_strategy(h.SendMessageRequestHeaderV2))
def test_v2_v1_conversion(v2: h.SendMessageRequestHeaderV2) -> None:
    v1 = v2.to_v1()
    assert h.SendMessageRequestHeaderV2.from_v1(v1) == v2
    v1_ext = v1.to_ext_fields()
    v2_ext = v2.to_ext_fields()
    assert {V2_TO_V1_WIRE[k]: v for k, v in v2_ext.items()} == v1_ext


@given(v1=header_strategy(h.SendMessageRequestHeader))
def test_v1_v2_conversion(v1: h.SendMessageRequestHeader) -> None:
    assert h.SendMessageRequestHeaderV2.from_v1(v1).to_v1() == v1


# --- the generated codecs against the general loop they replace -------------------------------


def _reference_from_ext(cls: type[h.Header], ext: dict[str, str]) -> h.Header:
    """The plain loop over the field specs: the general parser decides every field."""
    values: dict[str, Any] = {}
    for spec in cls._field_specs():
        raw = ext.get(spec.wire)
        if raw is None:
            if spec.required:
                raise MissingHeaderField(
                    f"required header field {spec.wire!r} is missing{h._for_code(cls.CODE)}"
                )
            continue
        values[spec.attr] = h._parse(raw, spec, cls.CODE)
    return cls(**values)


def _reference_to_ext(header: h.Header) -> dict[str, str]:
    ext: dict[str, str] = {}
    for spec in header._field_specs():
        value = getattr(header, spec.attr)
        if value is not None:
            ext[spec.wire] = (
                ("true" if value else "false") if isinstance(value, bool) else str(value)
            )
    return ext


def _outcome(parse: Any, *args: Any) -> object:
    try:
        return parse(*args)
    except (MissingHeaderField, InvalidHeaderField) as exc:
        return f"{type(exc).__name__}: {exc}"


# Text a peer may put in a numeric field: around every digit-count limit of the fast path.
NUMBER_TEXT = (
    st.integers(-(10**20), 10**20).map(str)
    | st.integers(0, 25).map(lambda n: "9" * n)
    | st.integers(0, 25).map(lambda n: "0" * n + "1")
    | st.sampled_from(["2147483647", "2147483648", "-2147483648", "-2147483649", "+5", " 5 "])
    | st.sampled_from(["9223372036854775807", "9223372036854775808", "-9223372036854775808"])
    | st.sampled_from(["1_000", "٣", "²", "0x10", "", " ", "true", "TRUE ", "1e3"])
    | st.text(max_size=5)
)


@settings(deadline=None, max_examples=40)
@pytest.mark.parametrize("cls", h.ALL_HEADERS, ids=_header_id)
@given(data=st.data())
def test_generated_codec_is_the_general_loop(cls: type[h.Header], data: st.DataObject) -> None:
    ext: dict[str, str] = {}
    for spec in cls._field_specs():
        if data.draw(st.integers(0, 9)) == 0:
            continue  # absent: missing when required
        ext[spec.wire] = data.draw(NUMBER_TEXT | st.sampled_from(["x", "true", "False"]))
    if data.draw(st.booleans()):
        ext["unknownField"] = "1"
    expected = _outcome(_reference_from_ext, cls, ext)
    assert _outcome(cls.from_ext_fields, ext) == expected
    if isinstance(expected, h.Header):
        assert expected.to_ext_fields() == _reference_to_ext(expected)


@settings(deadline=None, max_examples=200)
@given(data=st.data())
def test_v2_parse_v1_is_from_ext_fields_then_to_v1(data: st.DataObject) -> None:
    v2 = h.SendMessageRequestHeaderV2
    ext: dict[str, str] = {}
    for spec in v2._field_specs():
        if data.draw(st.integers(0, 9)) == 0:
            continue  # absent: missing when required
        ext[spec.wire] = data.draw(NUMBER_TEXT | st.sampled_from(["x", "true", "False"]))
    expected = _outcome(lambda e: v2.from_ext_fields(e).to_v1(), ext)
    assert _outcome(v2.parse_v1, ext) == expected


_SEND_V2_EXT = {
    "a": "PG",
    "b": "T",
    "c": "TBW102",
    "d": "4",
    "e": "0",
    "f": "0",
    "g": "1",
    "h": "0",
}


@given(
    raw=st.one_of(
        st.integers(-3, 1100).map(str),
        st.text(alphabet="0123456789 +-_\u0661", max_size=6),
        st.sampled_from(["true", "false", "TRUE", " true ", "False", ""]),
    )
)
def test_generated_fast_paths_parse_as_the_general_parse(raw: str) -> None:
    """The generated parsers' small-int table and exact boolean spellings give what
    ``_parse`` (the general path, which words every error) gives, for any text."""
    int_spec, bool_spec = (
        s for s in h.SendMessageRequestHeaderV2._field_specs() if s.attr in ("e", "k")
    )
    code = RequestCode.SEND_MESSAGE_V2
    try:
        expected: object = h._parse(raw, int_spec, code)
    except InvalidHeaderField as exc:
        with pytest.raises(InvalidHeaderField, match=re.escape(str(exc))):
            h.SendMessageRequestHeaderV2.parse_v1({**_SEND_V2_EXT, "e": raw})
    else:
        assert h.SendMessageRequestHeaderV2.parse_v1({**_SEND_V2_EXT, "e": raw}).queue_id == (
            expected
        )
    parsed = h.SendMessageRequestHeaderV2.parse_v1({**_SEND_V2_EXT, "k": raw})
    assert parsed.unit_mode is h._parse(raw, bool_spec, code)
