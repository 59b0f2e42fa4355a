"""Java's value rules as RocketMQ's SQL92 filter applies them: parsing and comparing.

A message's properties are strings; literals are Java Integer, Long, Double, String or
Boolean; RocketMQ compares them with ``ComparisonExpression.__compare`` (filter module),
always with ``convertStringExpressions`` on (``SelectorParser.parse`` sets it for every
expression). This module is that method, plus the JDK parsers it calls.

Rules:
- ``parse_int`` / ``parse_long`` are ``Integer.valueOf`` / ``Long.valueOf``: an optional
  ``+`` or ``-``, then decimal digits (any Unicode Nd digit of the BMP, as
  ``Character.digit`` takes them), no blanks, no ``_``, no ``.``, within range.
- ``parse_double`` is ``Double.valueOf``: blanks (chars <= U+0020) trimmed, then
  ``NaN``, ``Infinity``, a decimal (``5``, ``5.``, ``.5``, exponent) or hexadecimal
  (``0x1.8p1``) number with ASCII digits, with an optional ``f``/``F``/``d``/``D`` suffix.
- ``parse_boolean`` is ``Boolean.valueOf``: true for ``true`` in any case, else false.
- A Java exception (NumberFormatException from a parser, ClassCastException from
  ``__compare``) is ``FilterEvaluationError``: RocketMQ's ExpressionMessageFilter
  catches it and the message does not match, whatever the rest of the expression says.
- ``comparator(left, right)`` returns the comparison for two static types, chosen once
  when a filter is compiled; it returns Java's ``compareTo`` sign (-1, 0, 1).
- Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from protocol.errors import RocketError

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
#: Double.MIN_VALUE (the smallest positive double) and Double.MAX_VALUE.
DOUBLE_MIN_VALUE = 5e-324
DOUBLE_MAX_VALUE = 1.7976931348623157e308

#: A Java value as the evaluator carries it (int, float, str or bool); its Java class is
#: known statically, from where it came (see ``JavaType``), not from the Python type.
JavaValue = Any
Comparator = Callable[[JavaValue, JavaValue], int]


class JavaType(enum.Enum):
    """The Java class of a value in a filter."""

    INTEGER = "Integer"
    LONG = "Long"
    DOUBLE = "Double"
    STRING = "String"
    BOOLEAN = "Boolean"


NUMERIC = frozenset({JavaType.INTEGER, JavaType.LONG, JavaType.DOUBLE})


class FilterEvaluationError(RocketError):
    """Evaluating a filter threw in RocketMQ (a string that is not a number where one is
    needed): the message does not match."""


def integer_type(value: int) -> JavaType:
    """Integer when ``value`` fits 32 bits, else Long (ConstantExpression.createFromDecimal)."""
    return JavaType.INTEGER if INT_MIN <= value <= INT_MAX else JavaType.LONG


# --- JDK parsers ----------------------------------------------------------------------------

#: String.trim() removes every char <= U+0020 at either end.
_JAVA_BLANKS = "".join(chr(c) for c in range(0x21))
_DECIMAL_DOUBLE = re.compile(
    r"[+-]?(?:NaN|Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fFdD]?)"
)
# FloatingDecimal.parseHexString's pattern (\p{XDigit}, \p{Digit} are ASCII in Java).
_HEX_DOUBLE = re.compile(
    r"([+-]?0[xX](?:[0-9a-fA-F]+\.?|[0-9a-fA-F]*\.[0-9a-fA-F]+)[pP][+-]?[0-9]+)[fFdD]?"
)


def _parse_integer(text: str, low: int, high: int, what: str) -> int:
    body = text[1:] if text[:1] in ("+", "-") else text
    # isdecimal() is Unicode Nd, what Character.digit(c, 10) takes; Java reads UTF-16 code
    # units, so a digit outside the BMP is two non-digits to it.
    if not body.isdecimal() or not (body.isascii() or max(body) <= "\uffff"):
        raise FilterEvaluationError(f"For input string: {text!r} (not a {what})")
    if len(body) > 19:
        # int() refuses over 4300 digits; leading zeros are fine for Java, so drop them.
        body = "".join(str(unicodedata.decimal(c)) for c in body).lstrip("0") or "0"
        if len(body) > 19:
            raise FilterEvaluationError(f"For input string: {text!r} (out of {what} range)")
    value = int(body)
    if text[:1] == "-":
        value = -value
    if not low <= value <= high:
        raise FilterEvaluationError(f"For input string: {text!r} (out of {what} range)")
    return value


def parse_int(text: str) -> int:
    """Integer.valueOf(text)."""
    return _parse_integer(text, INT_MIN, INT_MAX, "Integer")


def parse_long(text: str) -> int:
    """Long.valueOf(text)."""
    return _parse_integer(text, LONG_MIN, LONG_MAX, "Long")


def parse_double(text: str) -> float:
    """Double.valueOf(text) (FloatingDecimal.readJavaFormatString)."""
    trimmed = text.strip(_JAVA_BLANKS)
    if _DECIMAL_DOUBLE.fullmatch(trimmed) is not None:
        if trimmed[-1] in "fFdD":
            trimmed = trimmed[:-1]
        return float(trimmed)  # the regex admits only what float() reads as Java does
    hexadecimal = _HEX_DOUBLE.fullmatch(trimmed)
    if hexadecimal is not None:
        try:
            return float.fromhex(hexadecimal.group(1))
        except OverflowError:  # Java rounds a too-large exponent to infinity
            return -math.inf if trimmed[0] == "-" else math.inf
    raise FilterEvaluationError(f"For input string: {text!r} (not a Double)")


def parse_boolean(text: str) -> bool:
    """Boolean.valueOf(text): never fails."""
    return text.lower() == "true"


# --- compareTo ------------------------------------------------------------------------------


def double_compare(left: float, right: float) -> int:
    """Double.compare: a total order, -0.0 < 0.0, NaN above +Infinity and equal to NaN."""
    if left < right:
        return -1
    if left > right:
        return 1
    left_nan, right_nan = math.isnan(left), math.isnan(right)
    if left_nan or right_nan:
        return int(left_nan) - int(right_nan)
    if left == 0.0:  # both zero: compare the sign bits
        return int(math.copysign(1, left) > 0) - int(math.copysign(1, right) > 0)
    return 0


def _sign(left: JavaValue, right: JavaValue) -> int:
    # Integer/Long/Boolean compareTo. For two Strings only the zero-ness is ever used: they
    # meet only in = and <> (the relational operators parse both as Doubles), so code-point
    # order serves as well as Java's UTF-16 order.
    return int(left > right) - int(left < right)


def _class_cast(left: JavaValue, right: JavaValue) -> int:
    # __compare with a Boolean on the left and a String on the right casts the Boolean to
    # String (``Boolean.valueOf((String) lv)``): ClassCastException.
    raise FilterEvaluationError("java.lang.Boolean cannot be cast to java.lang.String")


def _incomparable(left: JavaValue, right: JavaValue) -> int:
    return -1  # __compare: "not of the same type" and no conversion applies


def _double_strings(left: JavaValue, right: JavaValue) -> int:
    return double_compare(parse_double(left), parse_double(right))


def _widened_to_double(left: JavaValue, right: JavaValue) -> int:
    return double_compare(float(left), float(right))


#: How __compare turns a String into the other side's class.
_FROM_STRING: dict[JavaType, Callable[[str], JavaValue]] = {
    JavaType.INTEGER: parse_int,
    JavaType.LONG: parse_long,
    JavaType.DOUBLE: parse_double,
    JavaType.BOOLEAN: parse_boolean,
}


def comparator(left: JavaType, right: JavaType, *, relational: bool) -> Comparator:
    """ComparisonExpression's comparison of a ``left`` value with a ``right`` one.

    ``relational`` is True for >, >=, <, <=, whose evaluate() first turns two Strings into
    Doubles; = and <> compare two Strings as strings. Otherwise __compare: equal classes
    compare as they are; Integer/Long/Double widen to the wider one; a String is parsed as
    the other side's class (Integer.valueOf, Long.valueOf, Double.valueOf, Boolean.valueOf);
    a Boolean on the left of a String throws; anything else is -1.
    """
    if left is right:
        if left is JavaType.STRING and relational:
            return _double_strings
        return double_compare if left is JavaType.DOUBLE else _sign
    if left in NUMERIC and right in NUMERIC:
        # Integer is widened to Long (same order as Python ints), either to Double.
        return _widened_to_double if JavaType.DOUBLE in (left, right) else _sign
    if left is JavaType.STRING:
        parse_left = _FROM_STRING[right]
        same_right = comparator(right, right, relational=relational)
        return lambda a, b: same_right(parse_left(a), b)
    if right is JavaType.STRING and left in NUMERIC:
        parse_right = _FROM_STRING[left]
        same_left = comparator(left, left, relational=relational)
        return lambda a, b: same_left(a, parse_right(b))
    if left is JavaType.BOOLEAN and right is JavaType.STRING:
        return _class_cast
    return _incomparable
