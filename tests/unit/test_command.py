"""RemotingCommand: JSON and ROCKETMQ binary headers, ext-field coercion, responses."""

from __future__ import annotations

import json
import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import command as command_module
from protocol.codes import (
    FLAG_ONEWAY,
    FLAG_RESPONSE,
    VERSION_CURRENT,
    LanguageCode,
    RequestCode,
    ResponseCode,
)
from protocol.command import RemotingCommand, coerce_ext_value, dumps_ascii
from protocol.errors import MalformedHeader
from protocol.frame import Frame, FrameDecoder

INT32 = st.integers(-(2**31), 2**31 - 1)
INT16 = st.integers(-(2**15), 2**15 - 1)
LANGUAGES = st.sampled_from([lang.name for lang in LanguageCode])


def _decode(wire: bytes) -> RemotingCommand:
    (frame,) = FrameDecoder().feed(wire)
    return RemotingCommand.from_frame(frame)


def _json_frame(header: bytes | str, body: bytes = b"") -> Frame:
    raw = header.encode() if isinstance(header, str) else header
    return Frame(serialize_type=0, header=raw, body=body)


def _binary_frame(header: bytes, body: bytes = b"") -> Frame:
    return Frame(serialize_type=1, header=header, body=body)


# --- RocketMQSerializable by hand ---------------------------------------------------------


def _rmq_str16(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _rmq_str32(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">i", len(raw)) + raw


def _rmq_header(
    *,
    code: int,
    language: int,
    version: int,
    opaque: int,
    flag: int,
    remark: str,
    ext: list[tuple[str, str]],
) -> bytes:
    """``RocketMQSerializable.rocketMQProtocolEncode`` written out field by field."""
    ext_bytes = b"".join(_rmq_str16(k) + _rmq_str32(v) for k, v in ext)
    return (
        struct.pack(">h", code)
        + struct.pack(">b", language)
        + struct.pack(">h", version)
        + struct.pack(">i", opaque)
        + struct.pack(">i", flag)
        + _rmq_str32(remark)
        + struct.pack(">i", len(ext_bytes))
        + ext_bytes
    )


SEND_V2_HEADER = _rmq_header(
    code=310,
    language=0,
    version=479,
    opaque=42,
    flag=0,
    remark="",
    ext=[("a", "pg"), ("b", "TopicA"), ("d", "4")],
)


def test_binary_header_from_known_bytes() -> None:
    # Spelled out once completely, so a wrong field order or width cannot hide.
    assert SEND_V2_HEADER == (
        b"\x01\x36"  # code 310
        b"\x00"  # JAVA
        b"\x01\xdf"  # version 479
        b"\x00\x00\x00\x2a"  # opaque 42
        b"\x00\x00\x00\x00"  # flag
        b"\x00\x00\x00\x00"  # remark: length 0 = null
        b"\x00\x00\x00\x1e"  # ext: 30 bytes
        b"\x00\x01a\x00\x00\x00\x02pg"
        b"\x00\x01b\x00\x00\x00\x06TopicA"
        b"\x00\x01d\x00\x00\x00\x014"
    )
    cmd = RemotingCommand.from_frame(_binary_frame(SEND_V2_HEADER, b"payload"))
    assert cmd == RemotingCommand(
        code=RequestCode.SEND_MESSAGE_V2,
        language="JAVA",
        version=479,
        opaque=42,
        flag=0,
        remark=None,
        ext_fields={"a": "pg", "b": "TopicA", "d": "4"},
        body=b"payload",
    )


def test_binary_response_with_remark_and_negative_fields() -> None:
    header = _rmq_header(
        code=ResponseCode.RPC_UNKNOWN,
        language=LanguageCode.NODE_JS,
        version=-2,
        opaque=-7,
        flag=FLAG_RESPONSE,
        remark="主题不存在",
        ext=[("MSG_REGION", "DefaultRegion"), ("TRACE_ON", "true")],
    )
    cmd = RemotingCommand.from_frame(_binary_frame(header))
    assert cmd == RemotingCommand(
        code=-1000,
        language="NODE_JS",
        version=-2,
        opaque=-7,
        flag=FLAG_RESPONSE,
        remark="主题不存在",
        ext_fields={"MSG_REGION": "DefaultRegion", "TRACE_ON": "true"},
    )
    assert cmd.is_response


def test_binary_zero_length_strings_are_null() -> None:
    # Java's readStr returns null for length 0: such ext entries vanish.
    header = _rmq_header(
        code=1,
        language=0,
        version=0,
        opaque=0,
        flag=0,
        remark="",
        ext=[("empty", ""), ("", "orphan"), ("k", "v")],
    )
    cmd = RemotingCommand.from_frame(_binary_frame(header))
    assert cmd.remark is None
    assert cmd.ext_fields == {"k": "v"}


def test_binary_unknown_language_is_other() -> None:
    header = _rmq_header(code=1, language=99, version=0, opaque=0, flag=0, remark="", ext=[])
    assert RemotingCommand.from_frame(_binary_frame(header)).language == "OTHER"


def test_binary_trailing_bytes_after_ext_are_ignored() -> None:
    # Java reads exactly the declared fields and ignores what follows.
    cmd = RemotingCommand.from_frame(_binary_frame(SEND_V2_HEADER + b"\x00junk"))
    assert cmd.ext_fields["b"] == "TopicA"


def test_header_binary_matches_known_bytes() -> None:
    cmd = RemotingCommand(
        code=310,
        language="JAVA",
        version=479,
        opaque=42,
        flag=0,
        ext_fields={"a": "pg", "b": "TopicA", "d": "4"},
    )
    assert cmd.header_binary() == SEND_V2_HEADER
    wire = cmd.encode_binary()
    assert wire[4] == 1  # serialize type ROCKETMQ in the high byte
    assert wire[8:] == SEND_V2_HEADER


binary_commands = st.builds(
    RemotingCommand,
    code=INT16,
    language=LANGUAGES,
    version=INT16,
    opaque=INT32,
    flag=INT32,
    remark=st.none() | st.text(min_size=1),
    ext_fields=st.dictionaries(st.text(min_size=1, max_size=50), st.text(min_size=1)),
    body=st.binary(max_size=100),
)


@settings(deadline=None)
@given(cmd=binary_commands)
def test_binary_round_trip(cmd: RemotingCommand) -> None:
    assert _decode(cmd.encode_binary()) == cmd


json_commands = st.builds(
    RemotingCommand,
    code=INT32,
    language=LANGUAGES,
    version=INT32,
    opaque=INT32,
    flag=INT32,
    remark=st.none() | st.text(),
    ext_fields=st.dictionaries(st.text(), st.text()),
    body=st.binary(max_size=100),
)


@settings(deadline=None)
@given(cmd=json_commands)
def test_json_round_trip(cmd: RemotingCommand) -> None:
    wire = cmd.encode()
    assert wire[4] == 0  # serialize type JSON
    assert _decode(wire) == cmd


@settings(deadline=None, max_examples=300)
@given(cmd=json_commands, java=st.booleans())
def test_json_header_is_the_stdlib_encoding_of_its_fields(cmd: RemotingCommand, java: bool) -> None:
    if java:  # the shortcut's case: no remark, a JAVA peer
        cmd = attrs.evolve(cmd, remark=None, language="JAVA")
    header: dict[str, object] = {
        "code": cmd.code,
        "extFields": dict(cmd.ext_fields),
        "flag": cmd.flag,
        "language": cmd.language,
        "opaque": cmd.opaque,
        "serializeTypeCurrentRPC": "JSON",
        "version": cmd.version,
    }
    if cmd.remark is not None:
        header["remark"] = cmd.remark
    expected = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    assert cmd.header_json() == expected


def test_json_header_shape() -> None:
    cmd = RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"}, b"", opaque=7)
    header = json.loads(cmd.header_json())
    assert header == {
        "code": 105,
        "extFields": {"topic": "T"},
        "flag": 0,
        "language": "JAVA",
        "opaque": 7,
        "serializeTypeCurrentRPC": "JSON",
        "version": VERSION_CURRENT,
    }


def test_json_header_is_ascii_and_survives_lone_surrogates() -> None:
    # A peer may legally send "\ud800" in JSON; echoing it in a remark must still encode.
    cmd = _decode_json(b'{"code":1,"remark":"\\ud800 caf\\u00e9"}')
    assert cmd.remark == "\ud800 café"
    answer = cmd.respond(ResponseCode.SYSTEM_ERROR, remark=cmd.remark)
    assert answer.header_json().isascii()
    assert _decode(answer.encode()).remark == "\ud800 café"


def _decode_json(raw: bytes | str) -> RemotingCommand:
    return RemotingCommand.from_frame(_json_frame(raw))


def test_ali_ons_style_ext_fields_are_coerced() -> None:
    raw = json.dumps(
        {
            "code": 11,
            "language": "JAVA",
            "version": 121,
            "opaque": 1,
            "flag": 0,
            "remark": None,
            "extFields": {
                "consumerGroup": "G",
                "queueId": 3,
                "queueOffset": 1234567890123,
                "commitOffset": -1,
                "unitMode": False,
                "batch": True,
                "subscription": None,
                "ratio": 1.5,
                "whole": 2.0,
            },
        }
    )
    cmd = _decode_json(raw)
    assert cmd.ext_fields == {
        "consumerGroup": "G",
        "queueId": "3",
        "queueOffset": "1234567890123",
        "commitOffset": "-1",
        "unitMode": "false",
        "batch": "true",
        "ratio": "1.5",
        "whole": "2",
    }
    assert (cmd.code, cmd.version, cmd.opaque, cmd.remark) == (11, 121, 1, None)
    # ... and every value goes back out as a JSON string.
    out = json.loads(cmd.respond(ext_fields=cmd.ext_fields).header_json())["extFields"]
    assert all(isinstance(v, str) for v in out.values())


def test_json_defaults_and_tolerated_fields() -> None:
    cmd = _decode_json(b'{"code":"105","extFields":null,"serializeTypeCurrentRPC":"JSON"}')
    assert cmd == RemotingCommand(code=105, language="JAVA", version=0, opaque=0, flag=0)
    assert _decode_json(b'{"code":1,"language":7,"remark":5}').language == "OTHER"
    assert _decode_json(b'{"code":1,"remark":5}').remark is None
    assert _decode_json(b'{"code":-1000,"opaque":"-3"}').opaque == -3


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("s", "s"),
        ("", ""),
        (0, "0"),
        (-5, "-5"),
        (True, "true"),
        (False, "false"),
        (3.0, "3"),
        (0.25, "0.25"),
        (None, None),
    ],
)
def test_coerce_ext_value(value: object, text: str | None) -> None:
    assert coerce_ext_value(value) == text


@pytest.mark.parametrize("value", [[1], {"a": 1}, b"x"])
def test_coerce_ext_value_refuses_non_scalars(value: object) -> None:
    with pytest.raises(MalformedHeader):
        coerce_ext_value(value)


MALFORMED_JSON = {
    "not json": b"hello",
    "empty": b"",
    "truncated": b'{"code":1',
    "array": b"[1,2]",
    "string": b'"code"',
    "number": b"5",
    "null": b"null",
    "ext list": b'{"code":1,"extFields":[]}',
    "ext empty string": b'{"code":1,"extFields":""}',
    "ext string": b'{"code":1,"extFields":"x"}',
    "ext number": b'{"code":1,"extFields":0}',
    "ext false": b'{"code":1,"extFields":false}',
    "ext nested": b'{"code":1,"extFields":{"k":{"n":1}}}',
    "ext list value": b'{"code":1,"extFields":{"k":[1]}}',
    "no code": b'{"flag":0}',
    "code null": b'{"code":null}',
    "code text": b'{"code":"abc"}',
    "code double minus": b'{"code":"--5"}',
    "code superscript": '{"code":"²"}'.encode(),
    "code arabic digits": '{"code":"١٢"}'.encode(),
    "code float": b'{"code":1.5}',
    "code bool": b'{"code":true}',
    "code over int32": b'{"code":2147483648}',
    "opaque under int32": b'{"code":1,"opaque":-2147483649}',
    "code 5000 digits": b'{"code":' + b"1" * 5000 + b"}",
    "ext value 5000 digits": b'{"code":1,"extFields":{"k":' + b"9" * 5000 + b"}}",
    "deep nesting": b'{"code":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "not utf-8": b'{"code":1,"remark":"\xff\xfe"}',
    "utf-16": '{"code":1}'.encode("utf-16"),
}


@pytest.mark.parametrize("raw", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_json_header(raw: bytes) -> None:
    with pytest.raises(MalformedHeader):
        _decode_json(raw)


def _fixed(code: int = 1) -> bytes:
    return struct.pack(">hbhii", code, 0, 0, 0, 0)


MALFORMED_BINARY = {
    "empty": b"",
    "truncated fixed part": _fixed()[:7],
    "no remark length": _fixed(),
    "remark length beyond header": _fixed() + struct.pack(">i", 10) + b"abc",
    "negative remark length": _fixed() + struct.pack(">i", -1) + struct.pack(">i", 0),
    "no ext length": _fixed() + struct.pack(">i", 0),
    "ext length beyond header": _fixed() + struct.pack(">ii", 0, 100) + b"\x00\x01k",
    "negative ext length": _fixed() + struct.pack(">ii", 0, -4),
    "ext key beyond ext": _fixed() + struct.pack(">ii", 0, 5) + b"\x00\x0aabc",
    "ext value length missing": _fixed() + struct.pack(">ii", 0, 4) + b"\x00\x01k\x00",
    "ext value beyond ext": (
        _fixed() + struct.pack(">ii", 0, 9) + b"\x00\x01k" + struct.pack(">i", 50) + b"vv"
    ),
    "ext negative value length": (
        _fixed() + struct.pack(">ii", 0, 7) + b"\x00\x01k" + struct.pack(">i", -1)
    ),
    "remark not utf-8": _fixed() + struct.pack(">i", 2) + b"\xff\xfe" + struct.pack(">i", 0),
    "key not utf-8": (
        _fixed() + struct.pack(">ii", 0, 9) + b"\x00\x01\xff" + struct.pack(">i", 2) + b"vv"
    ),
    "value not utf-8": (
        _fixed() + struct.pack(">ii", 0, 9) + b"\x00\x01k" + struct.pack(">i", 2) + b"\xc3\x28"
    ),
}


@pytest.mark.parametrize("raw", MALFORMED_BINARY.values(), ids=MALFORMED_BINARY.keys())
def test_malformed_binary_header(raw: bytes) -> None:
    with pytest.raises(MalformedHeader):
        RemotingCommand.from_frame(_binary_frame(raw))


def test_unknown_serialize_type() -> None:
    with pytest.raises(MalformedHeader, match="serialize type 2"):
        RemotingCommand.from_frame(Frame(serialize_type=2, header=b"{}", body=b""))


def test_request_and_flags() -> None:
    req = RemotingCommand.request(RequestCode.HEART_BEAT, body=b"{}")
    assert (req.flag, req.is_response, req.is_oneway) == (0, False, False)
    oneway = RemotingCommand.request(RequestCode.UPDATE_CONSUMER_OFFSET, {"k": "v"}, oneway=True)
    assert oneway.flag == FLAG_ONEWAY
    assert oneway.is_oneway and not oneway.is_response
    assert oneway.ext_fields == {"k": "v"}


def test_respond_sets_response_bit_and_echoes_opaque() -> None:
    req = RemotingCommand(
        code=RequestCode.SEND_MESSAGE_V2,
        language="NODE_JS",
        version=121,
        opaque=123456,
        flag=FLAG_ONEWAY | 0x100,
        remark="req",
        ext_fields={"a": "pg"},
        body=b"body",
    )
    resp = req.respond(ResponseCode.TOPIC_NOT_EXIST, "no route", {"x": "1"}, b"r")
    assert resp == RemotingCommand(
        code=ResponseCode.TOPIC_NOT_EXIST,
        language="JAVA",
        version=VERSION_CURRENT,
        opaque=123456,
        flag=FLAG_RESPONSE,
        remark="no route",
        ext_fields={"x": "1"},
        body=b"r",
    )
    assert resp.is_response and not resp.is_oneway and not resp.is_success
    ok = req.respond()
    assert ok.is_success and ok.flag & FLAG_RESPONSE and ok.opaque == 123456
    assert ok.remark is None and ok.ext_fields == {} and ok.body == b""


def test_respond_to_binary_request_answers_in_json() -> None:
    req = RemotingCommand.from_frame(_binary_frame(SEND_V2_HEADER))
    wire = req.respond().encode()
    assert wire[4] == 0
    decoded = _decode(wire)
    assert decoded.opaque == 42
    assert decoded.is_response


# --- the orjson fast paths give the stdlib codec's results -----------------------------------

# Every code point, lone surrogates included (a peer's "\ud800" escape decodes to one).
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None))
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(min_value=-(2**63) - 2, max_value=-(2**63) + 2)
    | ANY_TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _stdlib_header(raw: bytes) -> object:
    """What the stdlib decoder alone makes of ``raw``: the fields, or the error text."""
    try:
        # The general, field-by-field path: the fast path for string extFields and int32
        # numbers must give what it gives.
        return command_module._header_fields_checked(
            command_module._stdlib_loads(raw), float_reparse=False
        )
    except MalformedHeader as exc:
        return f"MalformedHeader: {exc}"


def _fast_header(raw: bytes) -> object:
    """What ``from_frame`` (orjson and its fast path first) makes of ``raw``."""
    try:
        command = RemotingCommand.from_frame(Frame(serialize_type=0, header=raw, body=b""))
    except MalformedHeader as exc:
        return f"MalformedHeader: {exc}"
    return (
        command.code,
        command.language,
        command.version,
        command.opaque,
        command.flag,
        command.remark,
        command.ext_fields,
    )


@settings(deadline=None, max_examples=500)
@given(value=JSON_VALUES)
def test_dumps_ascii_is_the_stdlib_encoding(value: object) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()
    assert dumps_ascii(value) == expected


HEADER_NUMBERS = (
    INT32
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["7", " 7", "x", "1_0", "٣"])
    | st.booleans()
    | st.none()
)
EXT_VALUES = (
    ANY_TEXT
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
    | st.lists(st.integers(), max_size=2)
)


@st.composite
def raw_headers(draw: st.DrawFn) -> bytes:
    header: dict[str, object] = {}
    for name in ("code", "language", "version", "opaque", "flag", "remark"):
        if draw(st.booleans()):
            header[name] = draw(
                HEADER_NUMBERS if name not in ("language", "remark") else JSON_VALUES
            )
    if draw(st.booleans()):
        header["extFields"] = draw(st.dictionaries(ANY_TEXT, EXT_VALUES, max_size=6))
    raw = json.dumps(header, ensure_ascii=draw(st.booleans()), allow_nan=True)
    data = raw.encode("utf-8", "surrogatepass")
    if draw(st.booleans()) and data:  # and the header some bytes away from valid
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + draw(st.binary(max_size=3)) + data[pos + 1 :]
    return data


@settings(deadline=None, max_examples=1000)
@given(raw=raw_headers())
def test_json_header_decoding_is_the_stdlib_decoding(raw: bytes) -> None:
    assert _fast_header(raw) == _stdlib_header(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"code":1,"opaque":18446744073709551616}',  # orjson: a float; the stdlib: an int
        b'{"code":1,"extFields":{"a":123456789012345678901234567890}}',
        b'{"code":1,"extFields":{"a":NaN,"b":Infinity}}',  # only the stdlib reads these
        b'{"code":1,"remark":"\\ud800"}',
        b'{"code":1.0}',
        b'{"code":1,"extFields":{"a":1.5,"b":true,"c":null,"d":7}}',
    ],
)
def test_json_headers_orjson_reads_differently_get_the_stdlib_reading(raw: bytes) -> None:
    assert _fast_header(raw) == _stdlib_header(raw)


def test_fast_construction_equals_attrs_construction() -> None:
    request = RemotingCommand.request(RequestCode.SEND_MESSAGE_V2, {"a": "b"}, b"x", opaque=3)
    assert request == RemotingCommand(
        code=RequestCode.SEND_MESSAGE_V2, opaque=3, ext_fields={"a": "b"}, body=b"x"
    )
    ext = {"k": "v"}
    answer = request.respond(ResponseCode.SUCCESS, "r", ext_fields=ext)
    ext["k"] = "changed"  # the command holds its own copy, as attrs' converter made it
    assert answer.ext_fields == {"k": "v"}
    assert answer.with_opaque(9, FLAG_RESPONSE) == attrs.evolve(answer, opaque=9)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        answer.code = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    ["plain", "tab\t nl\n \x00 \x1f", "del \x7f", "café", "\u2028", "😀", "\ud800", "\udfff x"],
)
def test_dumps_ascii_escapes_what_the_stdlib_escapes(text: str) -> None:
    value = {"remark": text, "extFields": {text: text}}
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()
    assert dumps_ascii(value) == expected


def test_the_command_builders_agree_with_the_constructor() -> None:
    """``_new_command`` (compiled where the extension is built) and its Python twin build
    the command the class's constructor builds, frozen as it is."""
    values = (105, "JAVA", 317, 7, 1, "a remark", {"k": "v"}, b"body")
    expected = RemotingCommand(
        code=105, language="JAVA", version=317, opaque=7, flag=1, remark="a remark",
        ext_fields={"k": "v"}, body=b"body",
    )  # fmt: skip
    for build in (command_module._new_command, command_module._python_new_command):
        built = build(*values[:6], dict(values[6]), values[7])
        assert built == expected and type(built) is RemotingCommand
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            built.code = 1  # type: ignore[misc]
