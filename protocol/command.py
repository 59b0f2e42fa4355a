"""``RemotingCommand``: the header + body carried by every remoting frame.

Rules (reference/rocketmq-wire.md §1.2–§1.4):
- We decode both header encodings: JSON (serialize type 0) and the compact ROCKETMQ binary
  header (type 1). We always *answer* in JSON: ali-ons cannot parse a type byte of 1.
- ``ext_fields`` is a string → string map. Clients such as ali-ons put JSON numbers and
  booleans there; we coerce them on input (booleans to ``"true"``/``"false"``, ``null``
  dropped) and always emit strings.
- ``flag`` bit 0 marks a response, bit 1 a oneway request. A response echoes ``opaque``.
- Pure: no I/O. Decoding errors are ``MalformedHeader``.
- JSON goes through orjson (every request pays for its header twice: measured 6 µs of
  stdlib decode and 11 µs of encode per SEND_MESSAGE_V2 against 2 and 1.3). The stdlib
  codec stays the definition: orjson accepts a subset of what ``json`` accepts and gives
  the same values for it except integers beyond 64 bits (floats there), so a header it
  refuses or that yields a float is decoded again by ``json``; an encoded header that is
  not plain printable ASCII (non-ASCII text, DEL, a lone surrogate orjson refuses) is
  encoded again by ``json`` with ``ensure_ascii``. The bytes on the wire are those of the
  stdlib codec in every case.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import orjson

from protocol.codes import (
    FLAG_ONEWAY,
    FLAG_RESPONSE,
    VERSION_CURRENT,
    LanguageCode,
    ResponseCode,
    SerializeType,
)
from protocol.errors import MalformedHeader
from protocol.frame import Frame, encode_frame
from protocol.javanum import INT32_RANGE, in_range, parse_java_int
from protocol.slots import slot_descriptors
from protocol.speedups import build_slots as _build_slots
from protocol.speedups import command_from_json as _command_from_json
from protocol.speedups import java_frame as _java_frame

_BIN_FIXED = struct.Struct(">hbhii")  # code, language, version, opaque, flag
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_UINT16 = struct.Struct(">H")
_INT32_MIN, _INT32_MAX = INT32_RANGE
_JSON = int(SerializeType.JSON)
#: ``header_json`` of a command without remark from a JAVA peer, keys in its order.
_JAVA_HEADER = (
    b'{"code":%d,"extFields":%b,"flag":%d,"language":"JAVA","opaque":%d,'
    b'"serializeTypeCurrentRPC":"JSON","version":%d}'
)
#: ``set(map(type, ext.values()))`` of an extFields object whose values are all strings.
_STRINGS_ONLY = {str}

#: The decoded fields of a header, in ``RemotingCommand`` order without the body.
_HeaderFields = tuple[int, str, int, int, int, str | None, dict[str, str]]


def _freeze_ext(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


@attrs.frozen(kw_only=True, weakref_slot=False)
class RemotingCommand:
    """One request or response. Build requests with ``request`` and answers with ``respond``."""

    code: int
    language: str = "JAVA"
    version: int = VERSION_CURRENT
    opaque: int = 0
    flag: int = 0
    remark: str | None = None
    ext_fields: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_ext)
    body: bytes = b""

    # --- construction ----------------------------------------------------------------

    @classmethod
    def request(
        cls,
        code: int,
        ext_fields: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        oneway: bool = False,
        opaque: int = 0,
    ) -> RemotingCommand:
        """A request; the transport assigns ``opaque`` when it sends it."""
        return _new_command(
            code,
            "JAVA",
            VERSION_CURRENT,
            opaque,
            FLAG_ONEWAY if oneway else 0,
            None,
            dict(ext_fields) if ext_fields else {},
            body,
        )

    def respond(
        self,
        code: int = ResponseCode.SUCCESS,
        remark: str | None = None,
        ext_fields: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> RemotingCommand:
        """The response to this request: same opaque, response bit set, JSON header."""
        return _new_command(
            code,
            "JAVA",
            VERSION_CURRENT,
            self.opaque,
            FLAG_RESPONSE,
            remark,
            dict(ext_fields) if ext_fields else {},
            body,
        )

    def with_opaque(self, opaque: int, flag: int) -> RemotingCommand:
        """A copy with ``opaque`` and ``flag`` replaced (``attrs.evolve``, minus its cost)."""
        return _new_command(
            self.code,
            self.language,
            self.version,
            opaque,
            flag,
            self.remark,
            self.ext_fields,  # already the copy this one owns
            self.body,
        )

    # --- flags -----------------------------------------------------------------------

    @property
    def is_response(self) -> bool:
        return bool(self.flag & FLAG_RESPONSE)

    @property
    def is_oneway(self) -> bool:
        return bool(self.flag & FLAG_ONEWAY)

    @property
    def is_success(self) -> bool:
        return self.code == ResponseCode.SUCCESS

    # --- wire ------------------------------------------------------------------------

    def header_json(self) -> bytes:
        return self._header_json(self.opaque, self.flag)

    def _header_json(self, opaque: int, flag: int) -> bytes:
        """``header_json`` with ``opaque`` and ``flag`` in place of this command's own."""
        ext = self.ext_fields
        if self.remark is None and self.language == "JAVA":
            # What the dict below encodes to, with only extFields through the encoder (the
            # rest is integers and fixed ASCII text, which both encoders write as %d and
            # as is): 1.6 -> 1.1 µs for a SEND_OK.
            return _JAVA_HEADER % (
                self.code,
                dumps_ascii(ext if type(ext) is dict else dict(ext)),
                flag,
                opaque,
                self.version,
            )
        header: dict[str, Any] = {
            "code": self.code,
            "extFields": ext if type(ext) is dict else dict(ext),
            "flag": flag,
            "language": self.language,
            "opaque": opaque,
            "serializeTypeCurrentRPC": "JSON",
            "version": self.version,
        }
        if self.remark is not None:
            header["remark"] = self.remark
        return dumps_ascii(header)

    def encode(self) -> bytes:
        """The whole frame, JSON header."""
        return self.encode_as(self.opaque, self.flag)

    def encode_as(self, opaque: int, flag: int) -> bytes:
        """``with_opaque(opaque, flag).encode()`` without building the copy: the frame a
        call sends (the transport numbers each request as it sends it)."""
        if _java_frame is not None and self.remark is None and self.language == "JAVA":
            # The compiled encoder of this common case (every answer that succeeds), the
            # same bytes; None for what it leaves to the code below.
            frame = _java_frame(self.code, self.ext_fields, flag, opaque, self.version, self.body)
            if frame is not None:
                return frame
        return encode_frame(self._header_json(opaque, flag), self.body)

    def header_binary(self) -> bytes:
        """The ROCKETMQ binary header (we only send it in tests and to Java peers that ask)."""
        try:
            language = LanguageCode[self.language].value
        except KeyError:
            language = LanguageCode.OTHER.value
        parts = [_BIN_FIXED.pack(self.code, language, self.version, self.opaque, self.flag)]
        remark = (self.remark or "").encode()
        parts += [_INT32.pack(len(remark)), remark]
        ext = bytearray()
        for key, value in self.ext_fields.items():
            k, v = key.encode(), value.encode()
            ext += _INT16.pack(len(k)) + k + _INT32.pack(len(v)) + v
        parts += [_INT32.pack(len(ext)), bytes(ext)]
        return b"".join(parts)

    def encode_binary(self) -> bytes:
        return encode_frame(self.header_binary(), self.body, serialize_type=SerializeType.ROCKETMQ)

    @classmethod
    def from_frame(cls, frame: Frame) -> RemotingCommand:
        """Decode a frame's header (JSON or binary) and attach its body."""
        serialize_type = frame.serialize_type
        if serialize_type == _JSON:
            raw = frame.header
            try:
                header = _orjson_loads(raw)
            except orjson.JSONDecodeError:
                # Maybe JSON only the stdlib reads (NaN, a lone surrogate escape): its verdict.
                fields = _header_fields_checked(_stdlib_loads(raw), float_reparse=False)
                return _new_command(*fields, frame.body)
            if _command_from_json is not None:
                # The common case below, compiled (protocol/_speedups.c); None for the rest.
                command = _command_from_json(_COMMAND_SLOTS, header, frame.body, "JAVA", "OTHER")
                if command is not None:
                    return command  # type: ignore[no-any-return]
            elif type(header) is dict:
                # What every client sends, checked in one look, here rather than in a
                # helper (a call and a tuple less per request): string extFields (the
                # parsed dict is fresh, so the command takes it as it is) and four int32
                # numbers. Anything else (numbers or booleans in extFields, numeric strings,
                # floats) takes the general path, which words every error. Measured 3.5 ->
                # 0.9 µs per SEND_MESSAGE_V2 against the general path alone.
                ext = header.get("extFields")
                code = header.get("code")
                version = header.get("version", 0)
                opaque = header.get("opaque", 0)
                flag = header.get("flag", 0)
                if (
                    type(ext) is dict
                    and (not ext or set(map(type, ext.values())) == _STRINGS_ONLY)
                    and type(code) is int
                    and type(version) is int
                    and type(opaque) is int
                    and type(flag) is int
                    and _INT32_MIN <= code <= _INT32_MAX
                    and _INT32_MIN <= version <= _INT32_MAX
                    and _INT32_MIN <= opaque <= _INT32_MAX
                    and _INT32_MIN <= flag <= _INT32_MAX
                ):
                    language = header.get("language", "JAVA")
                    remark = header.get("remark")
                    return _new_command(
                        code,
                        language if type(language) is str else "OTHER",
                        version,
                        opaque,
                        flag,
                        remark if type(remark) is str else None,
                        ext,
                        frame.body,
                    )
            try:
                fields = _header_fields_checked(header, float_reparse=True)
            except _Reparse:
                fields = _header_fields_checked(_stdlib_loads(raw), float_reparse=False)
        elif serialize_type == SerializeType.ROCKETMQ:
            fields = _decode_binary_header(frame.header)
        else:
            raise MalformedHeader(f"unknown serialize type {frame.serialize_type}")
        return _new_command(*fields, frame.body)


# attrs' __init__ runs a converter and one bound setattr per field, and a frozen class's
# slots can otherwise only be set through their descriptors' ``__set__`` (a C call with an
# argument tuple each: 8 of them were ~0.8 µs per command). The decoder, the transport and
# ``respond`` build a command per frame, so they fill a plain twin with the same slots
# (plain attribute stores) and turn it into a ``RemotingCommand`` by ``__class__``
# assignment, which CPython allows between classes of one layout (hence no weakref slot:
# 3.11 refuses the assignment for classes that have one). The ext dict they pass is a
# fresh one the command owns, as the converter would have made.
class _Unfrozen:
    __slots__ = RemotingCommand.__slots__  # type: ignore[attr-defined]  # attrs made them


_new_object = object.__new__
_orjson_loads = orjson.loads
#: ``RemotingCommand`` and its slots' descriptors in field order, for the compiled decoder.
_COMMAND_SLOTS = (RemotingCommand, *slot_descriptors(RemotingCommand))


def _python_new_command(
    code: int,
    language: str,
    version: int,
    opaque: int,
    flag: int,
    remark: str | None,
    ext_fields: dict[str, str],
    body: bytes,
) -> RemotingCommand:
    command: Any = _new_object(_Unfrozen)
    command.code = code
    command.language = language
    command.version = version
    command.opaque = opaque
    command.flag = flag
    command.remark = remark
    command.ext_fields = ext_fields
    command.body = body
    command.__class__ = RemotingCommand
    return command  # type: ignore[no-any-return]


#: ``_python_new_command``, compiled where the extension is built: a C call that sets the
#: slots through their descriptors (every answer and request is built here).
_new_command: Callable[..., RemotingCommand] = (
    functools.partial(_build_slots, _COMMAND_SLOTS)
    if _build_slots is not None
    else _python_new_command
)


def dumps_ascii(value: Any) -> bytes:
    """Compact JSON, byte for byte what ``json.dumps(value, separators=(",", ":"),
    ensure_ascii=True)`` gives, for values made of dicts, lists, str, int, bool and None.

    ASCII-only output: a lone surrogate decoded from a peer's "\\ud800" escape (legal JSON,
    which JS and Java strings can hold) must not make our answer unencodable.
    """
    try:
        out = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int over 64 bits, ...
        pass
    else:
        # orjson writes non-ASCII text as UTF-8 and DEL unescaped; json escapes both.
        if out.isascii() and b"\x7f" not in out:
            return out
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()


def coerce_ext_value(value: object) -> str | None:
    """The string form of an ext field value as Java would parse it; None drops the field."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    raise MalformedHeader(f"ext field value of type {type(value).__name__} is not a scalar")


def _int_field(
    header: Mapping[str, Any], name: str, default: int | None = None, *, float_reparse: bool
) -> int:
    # Java reads these as ``int``; a numeric string is what fastjson would accept too.
    value = header.get(name, default)
    if type(value) is int and _INT32_MIN <= value <= _INT32_MAX:
        return value
    if float_reparse and type(value) is float:
        raise _Reparse
    if isinstance(value, str) and (parsed := parse_java_int(value, INT32_RANGE)) is not None:
        value = parsed
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise MalformedHeader(f"header field {name!r} must be an integer, got {shown}")
    if not in_range(value, INT32_RANGE):
        raise MalformedHeader(f"header field {name!r} = {value} does not fit in an int32")
    return value


class _Reparse(Exception):
    """orjson's reading may differ from the stdlib's here: decode with ``json`` instead."""


def _stdlib_loads(raw: bytes) -> Any:
    try:
        # Decode UTF-8 ourselves: json.loads(bytes) would also guess UTF-16/32.
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and integers over Python's digit limit;
        # RecursionError a deeply nested value. Either must close only this connection.
        raise MalformedHeader(f"header is not valid JSON: {exc}") from None


def _header_fields_checked(header: Any, *, float_reparse: bool) -> _HeaderFields:
    """The command's fields from any parsed header, field by field; with
    ``float_reparse``, raises ``_Reparse`` on a float where the stdlib might have read an
    integer."""
    if not isinstance(header, dict):
        raise MalformedHeader("header JSON is not an object")
    ext_raw = header.get("extFields")
    if ext_raw is None:
        ext_raw = {}
    if not isinstance(ext_raw, dict):
        raise MalformedHeader("extFields is not an object")
    ext: dict[str, str] = {}
    for key, value in ext_raw.items():
        if type(value) is str:
            ext[key] = value
            continue
        if float_reparse and type(value) is float:
            raise _Reparse
        text = coerce_ext_value(value)
        if text is not None:
            ext[str(key)] = text
    remark = header.get("remark")
    language = header.get("language", "JAVA")
    return (
        _int_field(header, "code", float_reparse=float_reparse),
        language if isinstance(language, str) else "OTHER",
        _int_field(header, "version", 0, float_reparse=float_reparse),
        _int_field(header, "opaque", 0, float_reparse=float_reparse),
        _int_field(header, "flag", 0, float_reparse=float_reparse),
        remark if isinstance(remark, str) else None,
        ext,
    )


def _decode_binary_header(raw: bytes) -> _HeaderFields:
    try:
        code, language, version, opaque, flag = _BIN_FIXED.unpack_from(raw, 0)
        pos = _BIN_FIXED.size
        (remark_len,) = _INT32.unpack_from(raw, pos)
        pos += 4
        remark = _take_text(raw, pos, remark_len, "remark")
        pos += remark_len
        (ext_len,) = _INT32.unpack_from(raw, pos)
        pos += 4
        if ext_len < 0 or pos + ext_len > len(raw):
            raise MalformedHeader(f"binary header extFields length {ext_len} is out of range")
        ext = _decode_binary_ext(raw[pos : pos + ext_len])
    except struct.error as exc:
        raise MalformedHeader(f"binary header is truncated: {exc}") from None
    try:
        language_name = LanguageCode(language).name
    except ValueError:
        language_name = "OTHER"
    return (code, language_name, version, opaque, flag, remark or None, ext)


def _take_text(raw: bytes, pos: int, length: int, what: str) -> str:
    if length < 0 or pos + length > len(raw):
        raise MalformedHeader(f"binary header {what} length {length} is out of range")
    try:
        return raw[pos : pos + length].decode()
    except UnicodeDecodeError:
        raise MalformedHeader(f"binary header {what} is not UTF-8") from None


def _decode_binary_ext(raw: bytes) -> dict[str, str]:
    ext: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        (key_len,) = _UINT16.unpack_from(raw, pos)
        pos += 2
        key = _take_text(raw, pos, key_len, "ext key")
        pos += key_len
        (value_len,) = _INT32.unpack_from(raw, pos)
        pos += 4
        value = _take_text(raw, pos, value_len, "ext value")
        pos += value_len
        if key and value:  # Java decodes a zero-length string as null
            ext[key] = value
    return ext
