"""The compiled codec (protocol/_speedups.c) against its Python twins, on generated input.

Each compiled function must give what the Python code gives, or None where the Python code
then runs (and words any error). Hypothesis drives inputs at the edges: separators in odd
places, digits that overflow, near-spellings of booleans, non-string values, control
characters, non-ASCII text and lone surrogates, numbers outside int32.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol.command as command_module
from protocol import headers, speedups
from protocol.command import RemotingCommand
from protocol.errors import ProtocolError
from protocol.frame import encode_frame
from protocol.record_wire import split_canonical
from tests.support.speedups import with_and_without

_speedups = pytest.importorskip(
    "protocol._speedups", reason="the C extension is not built (no compiler on this machine)"
)

EXAMPLES = settings(max_examples=400, deadline=None)

# Text with the characters that matter to each codec, and some that matter to none.
_CHARS = st.sampled_from(
    ["\x01", "\x02", "a", "K", "0", "9", " ", '"', "\\", "\n", "\x00", "\x1f", "\x7f", "é",
     "\u2028", "\ud800", "\udfff", "\U0001f600", "-", "+"]
)  # fmt: skip
_TEXT = st.text(_CHARS, max_size=24) | st.text(max_size=12)


def _typed(value: Any) -> Any:
    """A value with the type of every part, so 1 != True and 0 != False."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return (type(value), value)


# --- split_properties -------------------------------------------------------------------


def _properties_text() -> st.SearchStrategy[str]:
    pair = st.tuples(_TEXT, _TEXT).map(lambda kv: f"{kv[0]}\x01{kv[1]}\x02")
    return st.lists(pair, max_size=6).map("".join) | _TEXT


@EXAMPLES
@given(_properties_text())
def test_split_properties_is_split_canonical(text: str) -> None:
    assert _typed(_speedups.split_properties(text)) == _typed(split_canonical(text))


@EXAMPLES
@given(_properties_text())
def test_parse_properties_is_properties_from_string(text: str) -> None:
    from protocol.message import properties_from_string_python

    assert _typed(_speedups.parse_properties(text)) == _typed(properties_from_string_python(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("UNIQ_KEY\x01abc\x02WAIT\x01true\x02", {"UNIQ_KEY": "abc", "WAIT": "true"}),
        ("a\x01b", None),  # no last separator
        ("a\x01b\x02a\x01c\x02", None),  # a key twice
        ("a\x01b\x01c\x02", None),  # two 0x01 in a pair
        ("\x01b\x02", None),  # empty key
        ("a\x01\x02", None),  # empty value
        ("\x02", None),  # an empty piece
        ("é\x01\U0001f600\x02", {"é": "\U0001f600"}),
    ],
)
def test_split_properties_cases(text: str, expected: dict[str, str] | None) -> None:
    assert _speedups.split_properties(text) == expected == split_canonical(text)


# --- record_properties ------------------------------------------------------------------


def _encoded_both_ways(
    text: str, cluster: str, uniq: str
) -> tuple[tuple[object, int], tuple[object, int]]:
    """record_properties_encoded compiled and pure: (result or the error's type and
    words, UNIQ_KEYs drawn)."""
    from protocol import record_wire

    def run() -> tuple[object, int]:
        drawn: list[str] = []

        def new_uniq_key() -> str:
            drawn.append(uniq)
            return uniq

        try:
            got: object = record_wire.record_properties_encoded(
                text, cluster=cluster, new_uniq_key=new_uniq_key
            )
        except ValueError as exc:
            got = (type(exc), str(exc))
        return got, len(drawn)

    return with_and_without(record_wire, "_c_record_properties", run)


@EXAMPLES
@given(
    _properties_text()
    | st.lists(st.sampled_from(["UNIQ_KEY\x01u1\x02", "CLUSTER\x01c\x02", "CLUSTER\x01d\x02",
                                "TAGS\x01t\x02", "WAIT\x01true\x02", "é\x01\ud800\x02"]),
               max_size=4).map("".join),
    st.sampled_from(["c", "", "d\x01", "\ud800", "é"]) | _TEXT,
    st.sampled_from(["AC110001", "", "x\x02", "\udfff"]) | _TEXT,
)  # fmt: skip
def test_record_properties_is_record_properties_encoded(text: str, cluster: str, uniq: str) -> None:
    (compiled, compiled_draws), (pure, pure_draws) = _encoded_both_ways(text, cluster, uniq)
    assert _typed(compiled) == _typed(pure)
    if isinstance(pure, tuple) and isinstance(pure[0], bytes):  # stored: one key drawn at most
        assert compiled_draws == pure_draws


@pytest.mark.parametrize(
    ("text", "cluster", "uniq", "expected"),
    [
        ("", "c", "U", (b"UNIQ_KEY\x01U\x02CLUSTER\x01c\x02", {"UNIQ_KEY": "U", "CLUSTER": "c"})),
        ("UNIQ_KEY\x01u\x02", "c", "U", (b"UNIQ_KEY\x01u\x02CLUSTER\x01c\x02",
                                          {"UNIQ_KEY": "u", "CLUSTER": "c"})),
        ("CLUSTER\x01c\x02", "c", "", (b"CLUSTER\x01c\x02", {"CLUSTER": "c"})),
        ("CLUSTER\x01d\x02", "c", "U", None),  # another cluster's name: the dict path
        ("a\x01b", "c", "U", None),  # not canonical
        ("é\x01ü\x02", "", "U", ("é\x01ü\x02UNIQ_KEY\x01U\x02".encode(),
                                    {"é": "ü", "UNIQ_KEY": "U"})),
    ],
)  # fmt: skip
def test_record_properties_cases(text: str, cluster: str, uniq: str, expected: object) -> None:
    (compiled, _), (pure, _) = _encoded_both_ways(text, cluster, uniq)
    assert compiled == pure == expected


def test_record_properties_refusals_are_the_python_codes() -> None:
    (compiled, _), (pure, _) = _encoded_both_ways("", "c\x01", "U")
    assert compiled == pure and pure[0] is ValueError  # type: ignore[index]
    (compiled, _), (pure, _) = _encoded_both_ways("a\x01\ud800\x02", "c", "U")
    assert compiled == pure and pure[0] is UnicodeEncodeError  # type: ignore[index]


# --- parse_header -----------------------------------------------------------------------

_HEADER_CLASSES = [
    cls
    for cls in vars(headers).values()
    if isinstance(cls, type) and issubclass(cls, headers.Header) and cls is not headers.Header
]
_INT_TEXT = st.sampled_from(
    ["0", "7", "007", "1023", "1024", "-1", " 5", "5 ", "+5", "", "x", "٣", "2147483647",
     "2147483648", "999999999", "9999999999", "999999999999999999", "9223372036854775807",
     "9223372036854775808", "1" * 19, "1.0"]
)  # fmt: skip
_BOOL_TEXT = st.sampled_from(["true", "false", "True", "FALSE", " true", "yes", "", "1"])


@st.composite
def _ext_for(draw: st.DrawFn, cls: type[headers.Header]) -> dict[str, Any]:
    ext: dict[str, Any] = {}
    for spec in cls._field_specs():
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        if draw(st.integers(0, 19)) == 0:
            ext[spec.wire] = draw(st.sampled_from([None, 5, True, 1.5]))  # not a string
        elif spec.kind is int:
            ext[spec.wire] = draw(_INT_TEXT | st.integers(0, 10**20).map(str))
        elif spec.kind is bool:
            ext[spec.wire] = draw(_BOOL_TEXT)
        else:
            ext[spec.wire] = draw(_TEXT)
    return ext


def _outcome(parse: Any, ext: dict[str, Any]) -> Any:
    try:
        header = parse(ext)
    except Exception as exc:  # the pure parse's own errors, compared by type and words
        return (type(exc), str(exc))
    return (type(header), _typed(attrs.asdict(header)))


@EXAMPLES
@given(st.data())
def test_compiled_header_parse_is_the_generated_parse(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(_HEADER_CLASSES))
    ext = data.draw(_ext_for(cls))
    compiled = headers._compile_codec(cls).parse
    pure = headers._compile_codec(cls, use_speedups=False).parse
    assert _outcome(compiled, ext) == _outcome(pure, ext)


@EXAMPLES
@given(_ext_for(headers.SendMessageRequestHeaderV2))
def test_compiled_v2_to_v1_is_the_generated_one(ext: dict[str, Any]) -> None:
    compiled = headers._compile_v2_to_v1()
    pure = headers._compile_v2_to_v1(use_speedups=False)
    assert _outcome(compiled, ext) == _outcome(pure, ext)


def test_the_codecs_use_the_compiled_parse() -> None:
    ext = {"a": "g", "b": "t", "c": "TBW102", "d": "4", "e": "1", "f": "0", "g": "17"}
    ext["h"] = "0"
    assert headers.SendMessageRequestHeaderV2.parse_v1(ext).queue_id == 1
    assert "c_parse" in headers._compile_v2_to_v1().__globals__


def test_parse_header_refuses_a_bad_spec() -> None:
    with pytest.raises(TypeError):
        _speedups.parse_header(headers.SendMessageRequestHeader, ((1,),), object(), {})
    with pytest.raises(TypeError):
        _speedups.parse_header(headers.SendMessageRequestHeader, ())


# --- command_from_json ------------------------------------------------------------------

_NUMBER = st.sampled_from([0, 1, -1, 310, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**70])
_ANY_JSON = st.one_of(_NUMBER, st.booleans(), st.none(), st.floats(allow_nan=False), _TEXT)


@st.composite
def _json_header(draw: st.DrawFn) -> dict[str, Any]:
    header: dict[str, Any] = {}
    for name in ("code", "version", "opaque", "flag"):
        if draw(st.integers(0, 5)):
            header[name] = draw(_NUMBER if draw(st.integers(0, 5)) else _ANY_JSON)
    if draw(st.integers(0, 5)):
        ext = draw(st.dictionaries(_TEXT, _TEXT, max_size=5))
        if draw(st.integers(0, 5)) == 0:
            ext[draw(_TEXT)] = draw(_ANY_JSON)
        header["extFields"] = ext if draw(st.integers(0, 9)) else draw(_ANY_JSON)
    for name in ("language", "remark"):
        if draw(st.integers(0, 2)) == 0:
            header[name] = draw(_TEXT | _ANY_JSON)
    return header


def _decoded(raw: bytes) -> Any:
    try:
        command = RemotingCommand.from_frame(_frame_of(raw))
    except ProtocolError as exc:
        return (type(exc), str(exc))
    return (type(command), _typed(attrs.asdict(command)))


def _frame_of(header: bytes) -> Any:
    from protocol.frame import FrameDecoder

    return FrameDecoder().feed(encode_frame(header, b"body"))[0]


@EXAMPLES
@given(_json_header())
def test_compiled_command_decode_is_the_python_decode(header: dict[str, Any]) -> None:
    try:
        raw = orjson.dumps(header)
    except TypeError:  # a lone surrogate: the stdlib writes it (escaped), as a peer may
        raw = json.dumps(header).encode()
    compiled, pure = with_and_without(command_module, "_command_from_json", lambda: _decoded(raw))
    assert compiled == pure


def test_the_decoder_uses_the_compiled_path() -> None:
    assert command_module._command_from_json is _speedups.command_from_json
    raw = b'{"code":310,"extFields":{"a":"b"},"opaque":7}'
    command = RemotingCommand.from_frame(_frame_of(raw))
    assert (command.code, command.opaque, command.flag, command.version) == (310, 7, 0, 0)
    assert (command.language, command.remark, dict(command.ext_fields)) == (
        "JAVA",
        None,
        {"a": "b"},
    )
    assert isinstance(command, RemotingCommand)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        command.code = 1  # type: ignore[misc]


# --- java_frame -------------------------------------------------------------------------


@st.composite
def _commands(draw: st.DrawFn) -> RemotingCommand:
    ext = draw(st.dictionaries(_TEXT, _TEXT, max_size=6))
    return RemotingCommand(
        code=draw(_NUMBER),
        language=draw(st.sampled_from(["JAVA", "JAVA", "PYTHON"])),
        version=draw(_NUMBER),
        opaque=draw(_NUMBER),
        flag=draw(_NUMBER),
        remark=draw(st.none() | st.none() | _TEXT),
        ext_fields=ext,
        body=draw(st.binary(max_size=16)),
    )


def _encoded(command: RemotingCommand, opaque: int, flag: int) -> Any:
    try:
        return command.encode_as(opaque, flag)
    except Exception as exc:  # the Python encoder's own errors
        return (type(exc), str(exc))


@EXAMPLES
@given(_commands(), _NUMBER, _NUMBER)
def test_compiled_frame_encode_is_the_python_encode(
    command: RemotingCommand, opaque: int, flag: int
) -> None:
    compiled, pure = with_and_without(
        command_module, "_java_frame", lambda: _encoded(command, opaque, flag)
    )
    assert compiled == pure
    if command.remark is None and command.language == "JAVA" and isinstance(compiled, bytes):
        # The JSON header is json.dumps's compact ASCII, whichever encoder wrote it.
        header = json.loads(compiled[8 : 8 + int.from_bytes(compiled[4:8], "big")])
        # (A lone surrogate pair reads back as one character: compare what json reads.)
        assert header["extFields"] == json.loads(json.dumps(dict(command.ext_fields)))


def test_java_frame_declines_what_it_does_not_cover() -> None:
    assert _speedups.java_frame(1, {"a": 1}, 0, 0, 0, b"") is None  # not a string
    assert _speedups.java_frame(2**31, {}, 0, 0, 0, b"") is None  # beyond int32
    assert _speedups.java_frame(1, {}, 0, 0, 0, bytearray()) is None  # not bytes
    assert _speedups.java_frame(True, {}, 0, 0, 0, b"") == encode_frame(
        b'{"code":1,"extFields":{},"flag":0,"language":"JAVA","opaque":0,'
        b'"serializeTypeCurrentRPC":"JSON","version":0}'
    )


def test_the_switch_names_what_is_compiled() -> None:
    assert speedups.COMPILED
    assert speedups.java_frame is _speedups.java_frame


# --- cut_frames -------------------------------------------------------------------------


@st.composite
def _wire_chunks(draw: st.DrawFn) -> list[bytes]:
    """Frames (some with broken prefixes) cut into reads at arbitrary points."""
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        header = draw(st.binary(max_size=20))
        body = draw(st.binary(max_size=40))
        serialize_type = draw(st.sampled_from([0, 1, 7, 255]))
        frame = bytearray(encode_frame(header, body, serialize_type=serialize_type))
        if draw(st.integers(0, 5)) == 0:  # a broken length or header length
            frame[draw(st.integers(0, 7))] = draw(st.integers(0, 255))
        parts.append(bytes(frame))
    wire = b"".join(parts) + draw(st.binary(max_size=10))
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=4)))
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]


def _fed(chunks: list[bytes], max_frame: int) -> list[Any]:
    from protocol.frame import FrameDecoder

    decoder = FrameDecoder(max_frame_bytes=max_frame)
    out: list[Any] = []
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except ProtocolError as exc:
            out.append((type(exc), str(exc)))
        else:
            out.append([(type(f), f.serialize_type, f.header, f.body) for f in frames])
        out.append(decoder.buffered_bytes)
    return out


@EXAMPLES
@given(_wire_chunks(), st.sampled_from([16, 64, 1 << 24]))
def test_compiled_frame_cutting_is_the_python_decoder(chunks: list[bytes], max_frame: int) -> None:
    import protocol.frame as frame_module

    compiled, pure = with_and_without(frame_module, "_cut_frames", lambda: _fed(chunks, max_frame))
    assert compiled == pure


def test_cut_frames_stops_at_what_it_leaves_to_python() -> None:
    import protocol.frame as frame_module

    good = encode_frame(b"{}", b"body")
    slots = frame_module._FRAME_SLOTS
    frames, pos = _speedups.cut_frames(slots, good + good[:5], 1 << 20)
    assert [(f.header, f.body) for f in frames] == [(b"{}", b"body")] and pos == len(good)
    bad = b"\x00\x00\x00\x03" + bytes(8)  # a length below 4
    assert _speedups.cut_frames(slots, good + bad, 1 << 20)[1] == len(good)
    assert _speedups.cut_frames(slots, bytearray(good), 8) == ([], 0)  # over the cap
    with pytest.raises(TypeError):
        _speedups.cut_frames(slots, "text", 8)


# --- encode_record ----------------------------------------------------------------------

_I32_EDGES = [0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1]
_I64_EDGES = [0, 1, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 1_796_593_759_704]


@st.composite
def _record_fields(draw: st.DrawFn) -> dict[str, Any]:
    i32 = st.sampled_from(_I32_EDGES) | st.integers(-5, 5)
    i64 = st.sampled_from(_I64_EDGES) | st.integers(-5, 5)
    topic = draw(
        st.sampled_from(["T", "TopicTest", "é", "a" * 127, "a" * 128, "a" * 32767, "a" * 32768])
        | _TEXT
    )
    host = st.sampled_from(
        [("127.0.0.1", 5000), ("10.0.0.2", 0), ("10.0.0.2", 65535), ("10.0.0.2", 65536),
         ("10.0.0.2", -1), ("::1", 80), ("not an ip", 1), ("1.2.3.4", 2**40)]
    )  # fmt: skip
    return {
        "topic": topic,
        "body": draw(st.binary(max_size=64)),
        "queue_id": draw(i32),
        "flag": draw(i32),
        "queue_offset": draw(i64),
        "physical_offset": draw(i64),
        "sys_flag": draw(st.sampled_from([0, 0x10, 0x20, 0x30, 0x4, 2**31]) | i32),
        "born_timestamp_ms": draw(i64),
        "born_host": draw(host),
        "store_timestamp_ms": draw(i64),
        "store_host": draw(host),
        "reconsume_times": draw(i32),
        "prepared_transaction_offset": draw(i64),
        "properties": draw(
            st.binary(max_size=40)
            | st.sampled_from([b"x" * 32767, b"x" * 32768])
            | st.dictionaries(st.text("ab", min_size=1), st.text("cd", min_size=1), max_size=2)
        ),
    }


def _encoded_record(fields: dict[str, Any]) -> Any:
    from protocol.message import encode_record_fields

    try:
        return encode_record_fields(**fields)
    except Exception as exc:  # the Python encoder's own errors, by type and words
        return (type(exc), str(exc))


@settings(max_examples=600, deadline=None)
@given(_record_fields())
def test_compiled_record_encode_is_the_python_encode(fields: dict[str, Any]) -> None:
    import protocol.message as message_module

    compiled, pure = with_and_without(
        message_module, "_c_encode_record", lambda: _encoded_record(fields)
    )
    assert compiled == pure


def test_encode_record_declines_what_python_refuses() -> None:
    host = b"\x7f\x00\x00\x01\x00\x00\x13\x88"
    numbers = [0] * 9
    ok = _speedups.encode_record("T", b"b", b"", host, host, *numbers)
    assert ok is not None and len(ok) == 88 + 1 + 1 + 1 + 2  # fixed, body, topic, properties
    assert _speedups.encode_record("", b"b", b"", host, host, *numbers) is None  # empty topic
    assert _speedups.encode_record("T", b"b", b"", host[:4], host, *numbers) is None
    v6 = [0, 0, 0, 0, 0x10, 0, 0, 0, 0]  # the born host IPv6 flag
    assert _speedups.encode_record("T", b"b", b"", host, host, *v6) is None
    assert _speedups.encode_record("\ud800", b"b", b"", host, host, *numbers) is None
    with pytest.raises(TypeError):
        _speedups.encode_record("T")


# --- quick_messages (the consumer's pull-body walk) -----------------------------------------

_PULL_QUEUE_TOPIC = "TopicTest"
_PROPERTY_VALUES = ["12", "0", "007", "999999999", "1234567890", "²", "٣", "abc", "", " k1  k2 ",
                    "k", "é", "\ud800"]  # fmt: skip


@st.composite
def _pulled_record(draw: st.DrawFn) -> bytes:
    """A stored record as a broker sends it, mostly of the pulled queue, sometimes not."""
    from protocol.message import SYSFLAG_COMPRESSED, encode_record_fields

    names = st.sampled_from(["RECONSUME_TIME", "KEYS", "TAGS", "UNIQ_KEY", "a", "é"])
    value = st.sampled_from(_PROPERTY_VALUES) | st.text("k 1", max_size=6)
    props = draw(
        st.dictionaries(names, value, max_size=4).map(
            lambda d: "".join(f"{k}\x01{v}\x02" for k, v in d.items()).encode(
                "utf-8", "surrogatepass"
            )
        )
        | st.binary(max_size=12)
    )
    host = st.sampled_from([("127.0.0.1", 10911), ("10.0.0.2", 0), ("10.1.2.3", 65535)])
    fields: dict[str, Any] = {
        "topic": draw(st.sampled_from([_PULL_QUEUE_TOPIC] * 4 + ["Other", "é", "t" * 130])),
        "body": draw(st.binary(max_size=40)),
        "queue_id": draw(st.sampled_from([3, 3, 3, 4])),
        "flag": draw(st.sampled_from(_I32_EDGES)),
        "queue_offset": draw(st.integers(-2, 12)),
        "physical_offset": draw(st.sampled_from([0, 5, 2**40, -1])),
        "sys_flag": draw(st.sampled_from([0, 0, 0x2, 0x4, SYSFLAG_COMPRESSED])),
        "born_timestamp_ms": draw(st.sampled_from(_I64_EDGES)),
        "born_host": draw(host),
        "store_timestamp_ms": 1_700_000_000_000,
        "store_host": draw(host),
        "reconsume_times": draw(st.integers(-1, 20)),
        "prepared_transaction_offset": 0,
        "properties": props,
    }
    try:
        record: bytes = encode_record_fields(**fields)
    except (ValueError, OverflowError):
        return b""
    if draw(st.integers(0, 9)) == 0:  # damage: a byte changed
        at = draw(st.integers(0, len(record) - 1))
        record = record[:at] + bytes([record[at] ^ draw(st.integers(1, 255))]) + record[at + 1 :]
    return record


@settings(max_examples=500, deadline=None)
@given(
    st.lists(_pulled_record(), max_size=8),
    st.binary(max_size=6),
    st.integers(-1, 6),
    st.integers(0, 14),
)
def test_compiled_pull_walk_is_the_python_walk(
    records: list[bytes], tail: bytes, requested: int, next_begin: int
) -> None:
    from client.consumer import decode_pull_body
    from protocol.bodies import parse_subscription
    from protocol.route import MessageQueue

    queue = MessageQueue(topic=_PULL_QUEUE_TOPIC, broker_name="broker-a", queue_id=3)
    body = b"".join(records) + tail
    everything = parse_subscription("*", topic=_PULL_QUEUE_TOPIC)

    def decoded() -> Any:
        try:
            return decode_pull_body(
                body,
                queue,
                everything,
                requested=requested,
                next_begin_offset=next_begin,
                max_nums=32,
            )
        except Exception as exc:  # equal failures count as equal (there should be none)
            return (type(exc), str(exc))

    compiled, pure = with_and_without(speedups, "quick_messages", decoded)
    assert compiled == pure


def test_the_pull_walk_is_compiled_and_stops_where_python_must_judge() -> None:
    from client.consumer.records import compiled_walk
    from protocol.message import encode_record_fields
    from protocol.route import MessageQueue

    queue = MessageQueue(topic="T", broker_name="broker-a", queue_id=1)
    walk = compiled_walk(queue)
    assert walk is not None

    def record(topic: str, queue_offset: int) -> bytes:
        return encode_record_fields(
            topic=topic, body=b"b", queue_id=1, flag=0, queue_offset=queue_offset,
            physical_offset=queue_offset, sys_flag=0, born_timestamp_ms=0,
            born_host=("127.0.0.1", 1), store_timestamp_ms=0, store_host=("127.0.0.1", 2),
            reconsume_times=0, prepared_transaction_offset=0, properties=b"",
        )  # fmt: skip

    first, second, other = record("T", 5), record("T", 6), record("U", 7)
    out: list[Any] = []
    assert walk(first + second + other, 0, out, 4, 8) == (len(first) + len(second), 6)
    assert [m.queue_offset for m in out] == [5, 6]
    assert walk(other, 0, out, 4, 8) == (0, 4), "another topic: the Python loop's"


@pytest.mark.parametrize("name", ["RECONSUME_TIME", "KEYS", "TAGS", "UNIQ_KEY"])
@pytest.mark.parametrize("value", [v for v in _PROPERTY_VALUES if v] + ["1 2", "  ", "9" * 5000])
def test_compiled_pull_walk_reads_each_property_as_python_does(name: str, value: str) -> None:
    from client.consumer import decode_pull_body
    from protocol.bodies import parse_subscription
    from protocol.message import encode_record_fields
    from protocol.route import MessageQueue

    queue = MessageQueue(topic="T", broker_name="broker-a", queue_id=1)
    body = encode_record_fields(
        topic="T", body=b"b", queue_id=1, flag=0, queue_offset=0, physical_offset=0,
        sys_flag=0, born_timestamp_ms=0, born_host=("127.0.0.1", 1), store_timestamp_ms=0,
        store_host=("127.0.0.1", 2), reconsume_times=3, prepared_transaction_offset=0,
        properties=f"{name}\x01{value}\x02".encode("utf-8", "surrogatepass"),
    )  # fmt: skip
    everything = parse_subscription("*", topic="T")

    def decoded() -> Any:
        pulled = decode_pull_body(body, queue, everything, requested=0, next_begin_offset=1,
                                  max_nums=32)  # fmt: skip
        return pulled.messages, pulled.skipped

    compiled, pure = with_and_without(speedups, "quick_messages", decoded)
    assert compiled == pure
