"""Java's integer types as they arrive on the wire: ranges, and parseInt/parseLong on text.

Rules:
- Every integer a peer sends is checked against the Java type of its field where it is
  parsed: ``int`` (int32) or ``long`` (int64). Python's ints are unbounded, so a value
  Java could never hold would otherwise flow on into loops, sizes and files.
- Text parses like Java's ``Integer.parseInt``/``Long.parseLong``: an optional sign and
  ASCII digits, nothing else (Python's ``int()`` also takes ``1_000``, non-ASCII digits and
  surrounding blanks, and raises ``ValueError`` on 4,300+ digits). Leading zeros are
  skipped before any conversion, so the cost is linear in the text and never raises.
- Pure; the callers turn ``None`` / ``False`` into their own error (header, body, record).
"""

from __future__ import annotations

import re

#: Inclusive ranges of Java's ``int`` and ``long``.
INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)

# An optional sign, leading zeros, then at most 19 digits (the width of Long.MAX_VALUE):
# longer digit strings cannot fit any Java integer and are refused unconverted.
_JAVA_DECIMAL = re.compile(r"([+-]?)0*([0-9]{1,19})", re.ASCII)


def in_range(value: int, int_range: tuple[int, int]) -> bool:
    """True when ``value`` fits the inclusive ``int_range``."""
    return int_range[0] <= value <= int_range[1]


def parse_java_int(text: str, int_range: tuple[int, int] = INT32_RANGE) -> int | None:
    """``text`` as Java's parseInt/parseLong reads it, or None when it is not one in range."""
    match = _JAVA_DECIMAL.fullmatch(text)
    if match is None:
        return None
    value = -int(match[2]) if match[1] == "-" else int(match[2])
    return value if in_range(value, int_range) else None


def java_type_name(int_range: tuple[int, int]) -> str:
    """ "int" or "long", for error messages."""
    return "long" if int_range == INT64_RANGE else "int"
