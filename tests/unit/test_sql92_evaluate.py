"""Evaluating SQL92 filters: RocketMQ's ExpressionTest, its semantics corner by corner, and
the Java parsing rules the comparisons rely on.

Expected results are what RocketMQ's evaluate() returns: True, False, None (NULL), or
``ERR`` when it throws (the broker then treats the message as not matching). Properties are
strings, as a message's are (MessageEvaluationContext); where ExpressionTest puts numbers
in its context we use their string form, which the test itself also checks ("use string").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from broker.filter import FilterEvaluationError, compile_filter
from broker.filter.java import (
    double_compare,
    parse_boolean,
    parse_double,
    parse_int,
    parse_long,
)

ERR = "throws"
Result = bool | None | str


def evaluate(text: str, props: dict[str, str]) -> Result:
    selector = compile_filter(text)
    try:
        result = selector.evaluate(props)
    except FilterEvaluationError:
        assert selector.matches(props) is False
        return ERR
    assert selector.matches(props) is (result is True)
    return result


# apache/rocketmq filter/src/test/java/org/apache/rocketmq/filter/ExpressionTest.java
AND_EXPRESSION = "a=3 and b<>4 And c>5 AND d<=4"
OR_EXPRESSION = "a=3 or b<>4 Or c>5 OR d<=4"
EXPRESSION_TEST = [
    ("value contains 'x'", {"value": "axb"}, True),
    ("value startswith 'ax'", {"value": "axb"}, True),
    ("value endswith 'xb'", {"value": "axb"}, True),
    ("value not contains 'x'", {"value": "axb"}, False),
    ("value not startswith 'ax'", {"value": "axb"}, False),
    ("value not endswith 'xb'", {"value": "axb"}, False),
    ("value contains 'x'", {"value": "abb"}, False),
    ("value startswith 'x'", {"value": "abb"}, False),
    ("value endswith 'x'", {"value": "abb"}, False),
    ("value not contains 'x'", {"value": "abb"}, True),
    ("value not startswith 'x'", {"value": "abb"}, True),
    ("value not endswith 'x'", {"value": "abb"}, True),
    ("value contains ''", {"value": "axb"}, False),
    ("value startswith ''", {"value": "axb"}, False),
    ("value endswith ''", {"value": "axb"}, False),
    ("value not contains ''", {"value": "axb"}, False),
    ("value not startswith ''", {"value": "axb"}, False),
    ("value not endswith ''", {"value": "axb"}, False),
    ("value contains 'x'", {}, False),
    ("value startswith 'x'", {}, False),
    ("value endswith 'x'", {}, False),
    ("value not contains 'x'", {}, False),
    ("value not startswith 'x'", {}, False),
    ("value not endswith 'x'", {}, False),
    # *_number_has / *_boolean_has: a value that is not a String; a property never is, a
    # boolean expression is.
    ("(value > 1.0) contains 'x'", {"value": "1.23"}, False),
    ("(value > 1.0) not contains 'x'", {"value": "1.23"}, False),
    ("(value > 1.0) not endswith 'e'", {"value": "1.23"}, False),
    ("'axb' contains 'x'", {"whatever": "whatever"}, True),
    ("'axb' startswith 'ax'", {}, True),
    ("'axb' endswith 'xb'", {}, True),
    ("'axb' not contains 'x'", {}, False),
    ("'axb' not startswith 'ax'", {}, False),
    ("'axb' not endswith 'xb'", {}, False),
    ("'axb' contains 'u'", {}, False),
    ("'axb' not startswith 'u'", {}, True),
    ("'axb' contains ''", {}, False),
    ("'axb' not endswith ''", {}, False),
    ("' ' contains ' '", {}, True),
    ("' ' startswith ' '", {}, True),
    ("' ' not endswith ' '", {}, False),
    ("'axb' contains '.'", {}, False),
    ("'axb' not startswith '.'", {}, True),
    ("'s' contains '\\'", {}, False),
    ("'s' endswith '\\'", {}, False),
    (
        "a not in ('4', '4', '5') and b between 3 and 10 and c not contains 'axbc'",
        {"a": "3", "b": "3", "c": "axbdc"},
        True,
    ),
    (
        "a not in ('4', '4', '5') and b between 3 and 10 and c not startswith 'axbc'",
        {"a": "3", "b": "3", "c": "axbdc"},
        True,
    ),
    ("TAGS is not null and TAGS='''''tag'''''", {"TAGS": "''tag''"}, True),
    ("a between up and low", {"a": "3.14"}, None),
    ("a between up and low", {"a": "3.14", "up": "up", "low": "low"}, ERR),
    ("key is not null and key between 0 and 100", {"key": "con"}, ERR),
    ("a between 0 and 100", {"a": "abc"}, ERR),
    ("a=b", {"a": "3.14", "b": "3.14"}, True),
    ("a<>b", {"a": "3.14", "b": "3.14"}, False),
    ("a<>b", {"a": "3.14", "b": "3.141"}, True),
    ("a > 3.1E10", {"a": str(3.1415 * 10**10)}, True),
    ("a > 3.14", {"a": "3.1415"}, True),
    ("a > b", {"a": "10", "b": "20"}, False),
    ("a > b", {"a": "20", "b": "10"}, True),
    ("a is null OR a='hello'", {}, True),
    ("a is null OR a='hello'", {"a": "hello"}, True),
    ("a is null OR a='hello'", {"a": "abc"}, False),
    ("a=TRUE OR b=FALSE", {"a": "true", "b": "false"}, True),
    ("a=TRUE OR b=FALSE", {"a": "false", "b": "true"}, False),
    ("a is not null and a='hello'", {"a": "hello"}, True),
    ("a is not null and a='hello'", {}, False),
    (AND_EXPRESSION, {"a": "3", "b": "5", "c": "6", "d": "1"}, True),
    (AND_EXPRESSION, {"a": "4", "b": "5", "c": "6", "d": "1"}, False),
    (OR_EXPRESSION, {"a": "3"}, True),
    (OR_EXPRESSION, {"a": "4", "b": "5"}, True),
    (OR_EXPRESSION, {"a": "4", "b": "4", "c": "6"}, True),
    (OR_EXPRESSION, {"a": "4", "b": "4", "c": "3", "d": "2"}, True),
    (OR_EXPRESSION, {"a": "4", "b": "4", "c": "3", "d": "10"}, False),
    ("a in ('3', '4', '5')", {"a": "3"}, True),
    ("a in ('3', '4', '5')", {"a": "5"}, True),
    ("a in ('3', '4', '5')", {"a": "8"}, False),
    ("a not in ('3', '4', '5')", {"a": "8"}, True),
    ("a not in ('3', '4', '5')", {"a": "4"}, False),
    ("a between 2 and 10", {"a": "2"}, True),
    ("a between 2 and 10", {"a": "10"}, True),
    ("a between 2 and 10", {"a": "3"}, True),
    ("a between 2 and 10", {"a": "1"}, False),
    ("a between 2 and 10", {"a": "11"}, False),
    ("a not between 2 and 10", {"a": "1"}, True),
    ("a not between 2 and 10", {"a": "11"}, True),
    ("a not between 2 and 10", {"a": "2"}, False),
    ("a not between 2 and 10", {"a": "10"}, False),
    ("a is null", {"abc": "2"}, True),
    ("a is null", {"a": "2"}, False),
    ("a is not null", {"a": "2"}, True),
    ("a is not null", {"abc": "2"}, False),
]


@pytest.mark.parametrize(("text", "props", "expected"), EXPRESSION_TEST)
def test_rocketmq_expression_test(text: str, props: dict[str, str], expected: Result) -> None:
    assert evaluate(text, props) == expected


SEMANTICS = [
    # A property against an Integer literal goes through Integer.valueOf.
    ("a > 5", {"a": "7"}, True),
    ("a > 5", {}, None),
    ("a > 5", {"a": "5.5"}, ERR),
    ("a > 5.0", {"a": "5.5"}, True),
    ("a > 5", {"a": " 7"}, ERR),
    ("a > 5.0", {"a": " 7"}, True),  # Double.valueOf trims
    ("a > 5", {"a": "abc"}, ERR),
    ("a > 5", {"a": "3000000000"}, ERR),  # not an int
    ("a > 2147483648", {"a": "3000000000"}, True),  # a Long literal: Long.valueOf
    ("a > -2147483648", {"a": "3000000000"}, True),  # negated Long stays Long
    ("a > -2147483647", {"a": "3000000000"}, ERR),  # negated Integer stays Integer
    ("a = 3", {"a": "3.0"}, ERR),
    ("a = 3.0", {"a": "3"}, True),
    ("a = 3", {"a": "+3"}, True),
    ("a = 3", {"a": "003"}, True),
    ("a = 3", {"a": "\u0663"}, True),  # ARABIC-INDIC DIGIT THREE: Character.digit takes it
    ("a = 3.0", {"a": "\u0663"}, ERR),  # Double.valueOf does not
    ("3 = a", {"a": "x"}, ERR),
    ("a = '3'", {"a": "3.0"}, False),
    # Two properties: Doubles for > and co., strings for = and <>.
    ("a > b", {"a": "10", "b": "9.5"}, True),
    ("a > b", {"a": "x", "b": "1"}, ERR),
    ("a > b", {"a": "1"}, None),
    ("a < b", {"a": "-0", "b": "0"}, True),  # Double.compare(-0.0, 0.0) < 0
    ("a = b", {"a": "-0", "b": "0"}, False),
    ("a > 1.0", {"a": "NaN"}, True),  # NaN sorts above everything
    ("a < 1.0", {"a": "NaN"}, False),
    ("a >= 1.0", {"a": "Infinity"}, True),
    ("a > 1.0", {"a": "0x1p1"}, True),
    ("a > 1.0", {"a": "2d"}, True),
    ("a > 1.0", {"a": "1_5"}, ERR),
    ("a > 1.0", {"a": "inf"}, ERR),
    # = with NULLs (doCreateEqual) and <> as NOT of it.
    ("a = b", {}, True),
    ("a = b", {"b": "1"}, None),
    ("a = b", {"a": "1"}, False),
    ("a <> b", {"a": "1"}, True),
    ("a <> b", {"b": "1"}, None),
    ("'x' <> a", {}, True),
    ("a <> 'x'", {}, None),
    # Booleans.
    ("a = TRUE", {"a": "TRUE"}, True),
    ("a = TRUE", {"a": "yes"}, False),
    ("a = FALSE", {"a": "yes"}, True),  # Boolean.valueOf("yes") is false
    ("TRUE = a", {"a": "true"}, ERR),  # (String) of a Boolean: ClassCastException
    ("TRUE = a", {}, False),
    ("(a > 1) = 'true'", {"a": "2"}, ERR),
    ("'true' = (a > 1)", {"a": "2"}, True),
    ("(a > 1) = 1", {"a": "2"}, False),  # Boolean against Integer: -1
    ("(a > 1) <> 1", {"a": "2"}, True),
    ("(a > 1) = (b > 1)", {"a": "2", "b": "3"}, True),
    ("(a > 1) = (b > 1)", {"a": "2"}, False),
    ("(a > 1) = (b > 1)", {}, True),
    ("TRUE = FALSE", {}, False),
    ("1 = TRUE", {}, False),
    # Numbers widen as Java does.
    ("1 = 1.0", {}, True),
    ("2147483648 = 2147483648.0", {}, True),
    ("9007199254740993 = 9007199254740992.0", {}, True),  # the long rounds to the double
    ("2147483648 > 5", {}, True),
    # Bare properties are cast to Boolean: a String never is one.
    ("a", {"a": "true"}, False),
    ("a", {}, None),
    ("NOT a", {"a": "x"}, True),
    ("NOT a", {}, None),
    ("NOT a = 1", {"a": "x"}, False),  # (NOT a) = 1: Boolean against Integer
    ("a OR b OR c", {"c": "1"}, None),
    # IS [NOT] NULL.
    ("a IS NULL", {"a": ""}, False),
    ("a IS NOT NULL", {"a": ""}, True),
    ("5 IS NULL", {}, False),
    ("(a > 1) IS NULL", {}, True),
    ("(a > 1) IS NULL", {"a": "x"}, ERR),
    ("a IS NULL IS NULL", {}, False),
    # IN.
    ("a IN ('x', 'y')", {"a": "y"}, True),
    ("a IN ('x', 'y')", {}, None),
    ("a NOT IN ('x')", {}, None),
    ("a NOT IN ('x')", {"a": "z"}, True),
    ("a IN ('1')", {"a": "01"}, False),
    # CONTAINS & co.
    ("NOT (a CONTAINS 'x')", {}, True),
    ("(a > 1) CONTAINS 'x'", {"a": "x"}, ERR),  # the operand is evaluated ...
    ("(a > 1) CONTAINS ''", {"a": "x"}, False),  # ... unless the pattern is empty
    ("5 CONTAINS '5'", {}, False),
    ("a CONTAINS 'b' CONTAINS 'x'", {"a": "abc"}, False),
    # BETWEEN.
    ("a BETWEEN 2 AND 10", {}, None),
    ("a BETWEEN b AND c", {"a": "5"}, None),
    ("a BETWEEN b AND c", {"a": "5", "b": "9"}, False),
    ("a BETWEEN -5 AND -10", {"a": "-7"}, False),
    ("a NOT BETWEEN 10 AND 0", {"a": "5"}, True),
    ("a BETWEEN 1 AND 2.5", {"a": "2"}, True),
    # Unary minus: numbers negate, anything else is NULL (after being evaluated).
    ("-a > 5", {"a": "-10"}, None),
    ("-(a > 1) > 5", {"a": "x"}, ERR),
    ("-(a > 1) > 5", {"a": "2"}, None),
    ("a > -(b > 1)", {"b": "x"}, None),  # the left side is NULL: the right is not evaluated
    ("a > - -5", {"a": "6"}, True),
    ("a > -5.5", {"a": "-5"}, True),
    ("a = -'x'", {}, True),  # NULL = NULL
    # Three-valued AND / OR, left to right; a throw aborts what is still evaluated.
    ("TRUE", {}, True),
    ("NULL", {}, None),
    ("FALSE OR NULL", {}, None),
    ("TRUE OR NULL", {}, True),
    ("NULL OR TRUE", {}, True),
    ("FALSE AND NULL", {}, False),
    ("NULL AND FALSE", {}, False),
    ("NULL AND TRUE", {}, None),
    ("a > 5 OR b = 'y'", {"a": "abc", "b": "y"}, ERR),
    ("b = 'y' OR a > 5", {"a": "abc", "b": "y"}, True),
    ("a > 5 AND FALSE", {"a": "x"}, ERR),
    ("FALSE AND a > 5", {"a": "x"}, False),
    ("NULL AND a > 5 AND FALSE", {"a": "x"}, ERR),
    ("NULL AND FALSE AND a > 5", {"a": "x"}, False),
    ("NULL OR TRUE OR a > 5", {"a": "x"}, True),
    ("(NULL OR a > 5) OR TRUE", {"a": "x"}, ERR),
]


@pytest.mark.parametrize(("text", "props", "expected"), SEMANTICS)
def test_semantics(text: str, props: dict[str, str], expected: Result) -> None:
    assert evaluate(text, props) == expected


# --- Java's parsers -------------------------------------------------------------------------

_NFE = None  # NumberFormatException


@pytest.mark.parametrize(
    ("parser", "text", "expected"),
    [
        (parse_int, "5", 5),
        (parse_int, "+5", 5),
        (parse_int, "-5", -5),
        (parse_int, "007", 7),
        (parse_int, "\u0663", 3),
        (parse_int, "2147483647", 2**31 - 1),
        (parse_int, "-2147483648", -(2**31)),
        (parse_int, "0" * 5000 + "5", 5),
        (parse_int, "\u0660" * 30 + "5", 5),
        (parse_int, "2147483648", _NFE),
        (parse_int, "1" * 5000, _NFE),
        (parse_int, "", _NFE),
        (parse_int, "+", _NFE),
        (parse_int, "-", _NFE),
        (parse_int, "+-5", _NFE),
        (parse_int, " 5", _NFE),
        (parse_int, "5 ", _NFE),
        (parse_int, "5.0", _NFE),
        (parse_int, "1_0", _NFE),
        (parse_int, "0x10", _NFE),
        (parse_int, "\u00b2", _NFE),  # SUPERSCRIPT TWO is No, not Nd
        (parse_int, "\U0001d7d3", _NFE),  # MATHEMATICAL BOLD DIGIT FIVE: two UTF-16 units
        (parse_long, "3000000000", 3000000000),
        (parse_long, "9223372036854775807", 2**63 - 1),
        (parse_long, "-9223372036854775808", -(2**63)),
        (parse_long, "9223372036854775808", _NFE),
        (parse_long, "5L", _NFE),
    ],
)
def test_integer_and_long_value_of(
    parser: Callable[[str], int], text: str, expected: int | None
) -> None:
    if expected is None:
        with pytest.raises(FilterEvaluationError):
            parser(text)
    else:
        assert parser(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5.0),
        ("5.", 5.0),
        (".5", 0.5),
        ("5e3", 5000.0),
        ("5E-3", 0.005),
        ("+5", 5.0),
        ("-0", -0.0),
        (" 5 ", 5.0),
        ("\t5\n", 5.0),
        ("\x005\x1f", 5.0),
        ("5f", 5.0),
        ("5D", 5.0),
        ("NaN", math.nan),
        ("-NaN", math.nan),
        ("+Infinity", math.inf),
        ("-Infinity", -math.inf),
        ("0x1p3", 8.0),
        ("0X.8P1", 1.0),
        ("-0x1.8p1d", -3.0),
        ("0x1p99999999999", math.inf),
        ("-0x1p99999999999", -math.inf),
        ("0x1p-99999999999", 0.0),
        ("1e400", math.inf),
        ("1e-400", 0.0),
        ("4.9e-324", 5e-324),
        ("1" * 5000, math.inf),
        ("\u00a05", _NFE),
        ("5ff", _NFE),
        ("nan", _NFE),
        ("inf", _NFE),
        ("Infinityd", _NFE),
        ("0x1", _NFE),
        ("1e", _NFE),
        ("e5", _NFE),
        (".", _NFE),
        ("", _NFE),
        ("  ", _NFE),
        ("1_0", _NFE),
        ("\u0663", _NFE),
        ("1.2.3", _NFE),
    ],
)
def test_double_value_of(text: str, expected: float | None) -> None:
    if expected is None:
        with pytest.raises(FilterEvaluationError):
            parse_double(text)
        return
    value = parse_double(text)
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == expected
        assert math.copysign(1, value) == math.copysign(1, expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("TrUe", True),
        ("yes", False),
        ("1", False),
        ("true ", False),
        ("", False),
    ],
)
def test_boolean_value_of(text: str, expected: bool) -> None:
    assert parse_boolean(text) is expected


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (-0.0, 0.0, -1),
        (0.0, -0.0, 1),
        (0.0, 0.0, 0),
        (math.nan, math.inf, 1),
        (math.inf, math.nan, -1),
        (math.nan, math.nan, 0),
        (1.0, 2.0, -1),
        (-math.inf, -1e308, -1),
    ],
)
def test_double_compare(left: float, right: float, expected: int) -> None:
    assert double_compare(left, right) == expected
