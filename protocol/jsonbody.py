"""Standard JSON bodies: tolerant parsing (fastjson's bare integer keys), strict emitting.

Rules (reference/rocketmq-wire.md §1.6):
- We always emit standard JSON (sorted keys, compact, ASCII).
- We parse standard JSON and fastjson's ``{0:"..."}`` integer keys, without eval.
- The field readers turn every shape error into ``MalformedBody`` naming the body and key;
  a missing optional field takes its default, extra fields are ignored.
- Every integer is range-checked against its field's Java type where it is read (``long``
  unless the reader says ``int``); an integer of 4,300+ digits (beyond Python's int/str
  conversion limit) is a ``MalformedBody`` too, never a ``ValueError``.
- Cost: a body that is not standard JSON costs one C parse. The fastjson fallback (a
  pre-pass with a Python call per string literal) runs only when the parse failed exactly
  at a bare integer key, and only on bodies up to ``MAX_FASTJSON_BODY_CHARS``: everything
  RocketMQ >= 4.9.4 sends to a client that announces version >= 401 is standard JSON.
- Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from protocol.errors import MalformedBody
from protocol.javanum import INT64_RANGE, in_range, java_type_name

#: Largest body (in characters) we try to read as fastjson's bare-integer-key variant.
MAX_FASTJSON_BODY_CHARS = 1024 * 1024

# Where json.loads failed on fastjson text: a bare integer key, then its colon.
_BARE_KEY_AHEAD = re.compile(r"\s*-?[0-9]+\s*:")

# A string literal (consumed whole, so nothing inside a string is ever rewritten), or a bare
# integer object key right after "{" or ",": fastjson's form of Map<Long, ...> keys.
_STRING_OR_BARE_KEY = re.compile(
    # The string branch also swallows an unterminated string up to the end of the text, so a
    # malformed body costs one linear scan, never one scan per quote.
    r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|([{,]\s*)(-?[0-9]+)(\s*:)',
    re.DOTALL,
)


def _quote_bare_key(match: re.Match[str]) -> str:
    if match.group(2) is None:
        return match.group(0)
    return f'{match.group(1)}"{match.group(2)}"{match.group(3)}'


def _reject_constant(name: str) -> Any:
    raise MalformedBody(f"JSON constant {name} is not allowed")


def _loads(text: str) -> Any:
    """``json.loads`` with every failure but a syntax error as ``MalformedBody``."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. an integer of 4,300+ digits
        raise MalformedBody(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise MalformedBody("JSON nested too deeply") from None


def loads_fastjson(text: str) -> Any:
    """Parse standard JSON, or fastjson's variant with bare integer keys (``{0:"a"}``).

    Bare keys are quoted by a pre-pass that skips string literals, so text such as
    ``"{0:x}"`` inside a string is left alone. Raises ``MalformedBody`` on anything else.
    """
    try:
        return _loads(text)
    except json.JSONDecodeError as exc:
        error = exc
    if len(text) > MAX_FASTJSON_BODY_CHARS or not _BARE_KEY_AHEAD.match(text, error.pos):
        raise MalformedBody(f"invalid JSON: {error}") from None
    fixed = _STRING_OR_BARE_KEY.sub(_quote_bare_key, text)
    try:
        return _loads(fixed)
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"invalid JSON: {exc}") from None


def dumps_json(obj: Any) -> bytes:
    """Render ``obj`` as we emit JSON bodies: standard, sorted keys, compact, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii")


def load_json_body(data: bytes, what: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"{what}: body is not UTF-8") from exc
    return loads_fastjson(text)


# --- tolerant field readers ----------------------------------------------------------------


def field(obj: Mapping[str, Any], key: str, default: Any) -> Any:
    value = obj.get(key)
    return default if value is None else value


def as_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedBody(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def as_array(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedBody(f"{what}: expected a JSON array, got {type(value).__name__}")
    return value


#: Past this many bits (39 digits, longer than ``shown`` prints) an integer shows its size.
_SHOWN_BITS = 128


def shown(value: Any) -> str:
    """``repr(value)`` cut to 40 characters, for error messages about peer input; an
    integer too long to show as digits (repr refuses past 4300) by its size."""
    if isinstance(value, int) and value.bit_length() > _SHOWN_BITS:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} chars)"


def check_int(value: Any, what: str, int_range: tuple[int, int] = INT64_RANGE) -> int:
    """``value`` if it is a JSON integer within ``int_range``; ``what`` names it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedBody(f"{what} must be an integer, got {shown(value)}")
    if not in_range(value, int_range):
        raise MalformedBody(
            f"{what} = {shown(value)} does not fit a Java {java_type_name(int_range)}"
        )
    return value


def int_field(
    obj: Mapping[str, Any],
    key: str,
    default: int | None,
    what: str,
    int_range: tuple[int, int] = INT64_RANGE,
) -> int:
    """An integer field of Java type ``int_range`` (``long`` unless told ``INT32_RANGE``)."""
    value = obj.get(key)
    if value is None:
        if default is None:
            raise MalformedBody(f"{what}: missing {key!r}")
        return default
    return check_int(value, f"{what}: {key!r}", int_range)


def opt_int_field(
    obj: Mapping[str, Any], key: str, what: str, int_range: tuple[int, int] = INT64_RANGE
) -> int | None:
    return None if obj.get(key) is None else int_field(obj, key, None, what, int_range)


def str_field(obj: Mapping[str, Any], key: str, default: str | None, what: str) -> str:
    value = obj.get(key)
    if value is None:
        if default is None:
            raise MalformedBody(f"{what}: missing {key!r}")
        return default
    if not isinstance(value, str):
        raise MalformedBody(f"{what}: {key!r} must be a string, got {shown(value)}")
    return value


def opt_str_field(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    if obj.get(key) is None:
        return None
    return str_field(obj, key, None, what)


def bool_field(obj: Mapping[str, Any], key: str, default: bool, what: str) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise MalformedBody(f"{what}: {key!r} must be a boolean, got {shown(value)}")
    return value


def str_map(value: Any, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in as_object(value, what).items():
        if not isinstance(item, str):
            raise MalformedBody(f"{what}: value of {key!r} must be a string, got {shown(item)}")
        out[key] = item
    return out


def str_list(value: Any, what: str) -> list[str]:
    items = as_array(value, what)
    for item in items:
        if not isinstance(item, str):
            raise MalformedBody(f"{what}: items must be strings, got {shown(item)}")
    return list(items)
