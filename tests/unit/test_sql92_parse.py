"""The SQL92 filter's lexer and parser: what RocketMQ accepts, what it refuses, and where.

Accepted expressions are compared through ``to_text`` (fully parenthesised), so each row
shows how the parser grouped the text. Refusals name a fragment of the message and the
1-based column, as RocketMQ's ParseException does. Cases marked "ParserTest" come from
apache/rocketmq filter/src/test/java/org/apache/rocketmq/filter/ParserTest.java.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.filter import FilterLimits, FilterParseError, compile_filter, parse, to_text
from broker.filter.lexer import Kind, tokenize
from broker.filter.syntax import Compare, CompareOp, In, IntLiteral, Or, Property, height

ACCEPTED = [
    # ParserTest's valid expressions.
    (
        "a=3 and b<>4 And c>5 AND d<=4",
        "((a) = (3)) AND ((b) <> (4)) AND ((c) > (5)) AND ((d) <= (4))",
    ),
    (
        "a=3  and    b<>4 And c>5 AND d<=4",
        "((a) = (3)) AND ((b) <> (4)) AND ((c) > (5)) AND ((d) <= (4))",
    ),
    ("a=3 or b<>4 Or c>5 OR d<=4", "((a) = (3)) OR ((b) <> (4)) OR ((c) > (5)) OR ((d) <= (4))"),
    ("a in ('3', '4', '5')", "a IN ('3', '4', '5')"),
    (
        "(a not in ('6', '4', '5')) or (b in ('3', '4', '5'))",
        "(a NOT IN ('6', '4', '5')) OR (b IN ('3', '4', '5'))",
    ),
    (
        "(a between 2 and 10) AND (b not between 6 and 9)",
        "((a) BETWEEN (2) AND (10)) AND ((b) NOT BETWEEN (6) AND (9))",
    ),
    ("a is null", "(a) IS NULL"),
    ("a is not null", "(a) IS NOT NULL"),
    ("a <= now", "(a) <= (now)"),  # "now" is a property name
    (
        "a=3 and b contains 'xxx' and c not contains 'xxx'",
        "((a) = (3)) AND ((b) CONTAINS 'xxx') AND ((c) NOT CONTAINS 'xxx')",
    ),
    # Precedence: OR < AND < = <> IS < > >= < <= BETWEEN IN CONTAINS < NOT, sign.
    ("a = 1 OR b = 2 AND c = 3", "((a) = (1)) OR (((b) = (2)) AND ((c) = (3)))"),
    ("(a = 1 OR b = 2) AND c = 3", "(((a) = (1)) OR ((b) = (2))) AND ((c) = (3))"),
    ("(a AND b) AND c", "((a) AND (b)) AND (c)"),
    ("NOT a = 1", "(NOT (a)) = (1)"),
    ("NOT (a = 1)", "NOT ((a) = (1))"),
    ("a > 1 = TRUE", "((a) > (1)) = (TRUE)"),
    ("a = 1 IS NULL", "((a) = (1)) IS NULL"),
    ("a IS NULL IS NULL", "((a) IS NULL) IS NULL"),
    ("a CONTAINS 'x' CONTAINS 'y'", "((a) CONTAINS 'x') CONTAINS 'y'"),
    # Bare properties read as booleans; TRUE, FALSE, NULL are boolean expressions.
    ("a", "a"),
    ("NOT NOT a", "NOT (NOT (a))"),
    ("a OR b", "(a) OR (b)"),
    ("TRUE", "TRUE"),
    ("null", "NULL"),
    ("((((a = 1))))", "(a) = (1)"),
    # Signs: "+" leaves nothing, "-" is a node, never folded into the literal.
    ("+5 < a", "(5) < (a)"),
    ("a > -5", "(a) > (-(5))"),
    ("- - 5 > a", "(-(-(5))) > (a)"),
    ("a > -'x'", "(a) > (-('x'))"),  # checkLessThanOperand sees a negation, not a string
    ("-(a > 1) > 5", "(-((a) > (1))) > (5)"),
    # BETWEEN checks two literal bounds only; NOT BETWEEN checks none.
    ("a BETWEEN 1 AND 1", "(a) BETWEEN (1) AND (1)"),
    ("a BETWEEN 1 AND 1.5", "(a) BETWEEN (1) AND (1.5)"),
    ("a BETWEEN -5 AND -10", "(a) BETWEEN (-(5)) AND (-(10))"),
    ("a NOT BETWEEN 10 AND 0", "(a) NOT BETWEEN (10) AND (0)"),
    ("a between b and c", "(a) BETWEEN (b) AND (c)"),
    # = and <> take any operands but NULL, and no boolean literal left of another literal.
    ("(a > 1) = (b > 2)", "((a) > (1)) = ((b) > (2))"),
    ("'x' = a", "('x') = (a)"),
    ("1 = TRUE", "(1) = (TRUE)"),
    ("TRUE = FALSE", "(TRUE) = (FALSE)"),
    ("a = TRUE", "(a) = (TRUE)"),
    ("(a) IN ('x')", "a IN ('x')"),
    ("'axb' contains 'x'", "('axb') CONTAINS 'x'"),
    ("5 ENDSWITH 'x'", "(5) ENDSWITH 'x'"),
    ("(a > 1) NOT STARTSWITH 'x'", "((a) > (1)) NOT STARTSWITH 'x'"),
    # Literals.
    ("a = 'it''s'", "(a) = ('it''s')"),
    (
        "TAGS is not null and TAGS='''''tag'''''",
        "((TAGS) IS NOT NULL) AND ((TAGS) = ('''''tag'''''))",
    ),
    ("a = ''", "(a) = ('')"),
    ("a = 'x\ny'", "(a) = ('x\ny')"),
    ("5L < a", "(5) < (a)"),
    ("a > 2147483648", "(a) > (2147483648)"),
    ("a > 9223372036854775807l", "(a) > (9223372036854775807)"),
    ("a > 4.9E-324", "(a) > (5e-324)"),
    ("a > .5", "(a) > (0.5)"),
    ("a > 5.", "(a) > (5.0)"),
    ("a > 5e3", "(a) > (5000.0)"),
    ("a > 1.5E+3", "(a) > (1500.0)"),
    ("a > 00.5", "(a) > (0.5)"),
    # Identifiers and keywords.
    ("$a_1 = 1", "($a_1) = (1)"),
    (
        "notx = 1 AND nullable IS NULL AND inx = 2",
        "((notx) = (1)) AND ((nullable) IS NULL) AND ((inx) = (2))",
    ),
    ("a is NOT null And b Between 1 aNd 2", "((a) IS NOT NULL) AND ((b) BETWEEN (1) AND (2))"),
    # Blanks and comments.
    ("\ta\n=\r1\f", "(a) = (1)"),
    ("a = 1 -- comment\n", "(a) = (1)"),
    ("-- first\r\na = 1", "(a) = (1)"),
    ("a /* x */ = /**/ 1 /* * / ** */", "(a) = (1)"),
]


@pytest.mark.parametrize(("text", "printed"), ACCEPTED)
def test_accepted(text: str, printed: str) -> None:
    tree = parse(text)
    assert to_text(tree) == printed
    assert parse(printed) == tree


REFUSED = [
    # (text, fragment of the message, column)
    ("", "found end of input", 1),
    ("   ", "found end of input", 4),
    ("a and between 2 and 10", "found 'between'", 7),  # ParserTest invalidExpression
    (" a between 10 and 0", "low bound must not exceed", 4),  # ParserTest illegalBetween
    ("a > 100000000000000000000000", "does not fit a long", 5),  # ParserTest decimalOverFlow
    ("a > 9223372036854775808", "does not fit a long", 5),
    ("a > 1e400", "out of range", 5),
    ("a > 1e-400", "out of range", 5),
    ("a > 0.0", "write 0 for zero", 5),  # createFloat: below Double.MIN_VALUE
    ("a > 0e5", "out of range", 5),
    # Anything after a complete expression (RocketMQ ignores it; see sql92.py).
    ("a = 1 b = 2", "found 'b'", 7),
    ("a NOT = 1", "found 'NOT'", 3),
    ("a = 1 )", "found ')'", 7),
    ("a = 1 --", "found '-'", 7),  # "--" without a line end is two minus signs
    ("007 = a", "found '0'", 2),
    ("0L = a", "found 'L'", 2),
    ("1a = 1", "found 'a'", 2),
    # Not a boolean where one is needed (asBooleanExpression).
    ("5", "5 is not a boolean expression", 1),
    ("'x'", "'x' is not a boolean expression", 1),
    ("-a", "-(a) is not a boolean expression", 1),
    ("5 AND a = 1", "5 is not a boolean expression", 1),
    ("a = 1 OR 'x'", "'x' is not a boolean expression", 10),
    ("NOT 5", "5 is not a boolean expression", 5),
    ("NOT -a", "is not a boolean expression", 5),
    ("(5)", "5 is not a boolean expression", 1),
    # checkLessThanOperand.
    ("a > TRUE", "TRUE cannot be compared with >", 3),
    ("a >= 'x'", "'x' cannot be compared with >=", 3),
    ("a < NULL", "NULL cannot be compared with <", 3),
    ("'x' <= a", "'x' cannot be compared with <=", 5),
    ("a > (b > 1)", "cannot be compared with >", 3),
    ("NOT a > 5", "NOT binds tighter", 7),
    ("a > 1 > 2", "cannot be compared with >", 7),
    ("a BETWEEN 'x' AND 'y'", "cannot be compared with BETWEEN", 3),
    ("a BETWEEN NULL AND 5", "cannot be NULL", 3),
    ("a BETWEEN 1 AND NULL", "cannot be NULL", 3),
    ("a NOT BETWEEN 1 AND NULL", "NULL cannot be compared with BETWEEN", 7),
    ("a BETWEEN TRUE AND FALSE", "cannot be compared with BETWEEN", 3),
    ("(a > 1) BETWEEN 1 AND 2", "cannot be compared with BETWEEN", 9),
    ("a BETWEEN 2.5 AND 2", "low bound must not exceed", 3),
    # checkEqualOperand, checkEqualOperandCompatability.
    ("a = NULL", "use IS NULL", 3),
    ("NULL = a", "use IS NULL", 6),
    ("a <> NULL", "use IS NULL", 3),
    ("TRUE = 1", "TRUE cannot be compared with 1", 6),
    ("FALSE <> 'x'", "FALSE cannot be compared with 'x'", 7),
    ("TRUE = 1.5", "cannot be compared", 6),
    # IN.
    ("'a' IN ('a')", "IN needs a property", 5),
    ("5 NOT IN ('a')", "IN needs a property", 7),
    ("a IN ()", "expected a quoted string, found ')'", 7),
    ("a IN ('x',)", "expected a quoted string, found ')'", 11),
    ("a IN (1)", "expected a quoted string, found '1'", 7),
    ("a IN 'x'", "expected '(' after IN", 6),
    ("a IN ('x'", "expected ',' or ')'", 10),
    # CONTAINS & co. take a quoted string (ExpressionTest *_has_not_string_*).
    ("value contains x", "expected a quoted string, found 'x'", 16),
    ("value not contains 123", "expected a quoted string, found '123'", 20),
    ("'axb' contains ", "found end of input", 16),
    # IS.
    ("a IS 5", "NULL or NOT NULL after IS", 6),
    ("a IS NOT 5", "NULL or NOT NULL after IS", 10),
    ("a IS", "found end of input", 5),
    # Lexical errors and syntax.
    ("a == 1", "found '='", 4),
    ("a != 1", "unexpected character '!'", 3),
    ("a = 1;", "unexpected character ';'", 6),
    ('a = "x"', "unexpected character '\"'", 5),
    ("a = 'x", "unterminated string", 5),
    ("a /* x", "unterminated comment", 3),
    ("a = é", "unexpected character 'é'", 5),
    ("a\u00a0= 1", "unexpected character", 2),
    ("a\v= 1", "unexpected character", 2),
    ("a.b = 1", "unexpected character '.'", 2),
    ("(a = 1", "expected ')', found end of input", 7),
    ("a = (1", "expected ')'", 7),
    ("+", "found end of input", 2),
    ("a =\n  b >", "found end of input", 6),
]


@pytest.mark.parametrize(("text", "fragment", "column"), REFUSED)
def test_refused(text: str, fragment: str, column: int) -> None:
    with pytest.raises(FilterParseError) as caught:
        parse(text)
    assert fragment in str(caught.value)
    assert caught.value.column == column, str(caught.value)
    assert str(caught.value).startswith("Invalid SQL92 expression: ")


def test_error_names_line_and_column_on_later_lines() -> None:
    with pytest.raises(FilterParseError) as caught:
        parse("a = 1\nAND b >\n  'x'")
    error = caught.value
    assert (error.line, error.column, error.position) == (2, 7, 12)  # the ">"
    assert str(error).endswith("'x' cannot be compared with > at line 2, column 7")


def test_tokens_take_the_longest_match() -> None:
    kinds = [t.kind for t in tokenize("a<>b>=c<=5.5e3 1e 007 notx NOT $")]
    assert kinds == [
        Kind.ID, Kind.NE, Kind.ID, Kind.GE, Kind.ID, Kind.LE, Kind.FLOAT,
        Kind.INT, Kind.ID, Kind.INT, Kind.INT, Kind.INT, Kind.ID, Kind.NOT, Kind.ID, Kind.EOF,
    ]  # fmt: skip


# --- limits ---------------------------------------------------------------------------------


def test_text_length_is_capped() -> None:
    limits = FilterLimits(max_chars=11)
    assert to_text(parse("a = 'xxxxx'", limits)) == "(a) = ('xxxxx')"
    with pytest.raises(FilterParseError, match="longer than 11 characters"):
        parse("a = 'xxxxxx'", limits)
    with pytest.raises(FilterParseError, match="longer than 4096 characters"):
        parse("a = '" + "x" * 4092 + "'")


def test_nesting_is_capped() -> None:
    deepest = "(" * 64 + "a = 1" + ")" * 64
    assert to_text(parse(deepest)) == "(a) = (1)"
    with pytest.raises(FilterParseError, match="nested deeper than 64") as caught:
        parse("(" + deepest + ")")
    assert caught.value.column == 65
    assert height(parse("NOT " * 63 + "a")) == 64
    with pytest.raises(FilterParseError, match="nested deeper than 64"):
        parse("NOT " * 64 + "a")


@pytest.mark.parametrize(
    "text",
    [
        "(" * 200_000,
        "NOT " * 200_000 + "a",
        "- " * 200_000 + "1 > a",
        "+" * 200_000 + "1 > a",
        "a = TRUE" + " = TRUE" * 50_000,
        "a IS NULL" * 1 + " IS NULL" * 50_000,
        "a CONTAINS 'x'" + " CONTAINS 'x'" * 50_000,
        "(a AND " * 50_000 + "a" + ")" * 50_000,
    ],
)
def test_no_recursion_error_whatever_the_depth(text: str) -> None:
    with pytest.raises(FilterParseError, match="nested deeper than 64"):
        parse(text, FilterLimits(max_chars=10**7))


def test_long_flat_chains_are_not_deep() -> None:
    text = " OR ".join(f"a={i}" for i in range(400))
    assert len(text) < 4096
    tree = parse(text)
    assert isinstance(tree, Or) and len(tree.operands) == 400 and height(tree) == 3
    assert compile_filter(text).matches({"a": "399"})
    assert not compile_filter(text).matches({"a": "400"})


def test_in_list_is_capped() -> None:
    limits = FilterLimits(max_in_values=3)
    assert parse("a IN ('1', '2', '3')", limits) == In(
        operand=Property(name="a"), values=("1", "2", "3")
    )
    with pytest.raises(FilterParseError, match="IN list longer than 3 values") as caught:
        parse("a IN ('1', '2', '3', '4')", limits)
    assert caught.value.column == 20


def test_parser_test_float_overflow_is_refused() -> None:
    # ParserTest.testParse_floatOverFlow: 1 + 104448 digits "." 104448 digits.
    digits = "1" + "1" * 51 * 2048
    text = f"a > {digits}.{digits}"
    with pytest.raises(FilterParseError, match="longer than 4096"):
        parse(text)
    with pytest.raises(FilterParseError, match="out of range"):
        parse(text, FilterLimits(max_chars=len(text)))


def test_equal_text_equal_tree() -> None:
    # ParserTest.testEquals: blanks do not matter, operators do.
    assert parse("a=3 and b<>4 And c>5 AND d<=4") == parse("a=3  and    b<>4 And c>5 AND d<=4")
    assert parse("a=3 and b<>4") != parse("a=3 or b<>4")
    assert parse("a = 5") == Compare(
        op=CompareOp.EQ, left=Property(name="a"), right=IntLiteral(value=5)
    )


# --- garbage in, FilterParseError out ---------------------------------------------------------

_WORDS = [
    "a", "b", "NOT", "AND", "OR", "IN", "IS", "NULL", "TRUE", "FALSE", "BETWEEN", "CONTAINS",
    "STARTSWITH", "ENDSWITH", "=", "<>", ">", ">=", "<", "<=", "(", ")", ",", "+", "-", "--",
    "/*", "*/", "'x'", "''", "'", "0", "5", "5L", "2.5", ".5", "1e3", "0.0", "\n", "99999999999999999999",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=40), st.lists(st.sampled_from(_WORDS), max_size=12).map(" ".join))
)
def test_garbage_raises_only_parse_errors(text: str) -> None:
    try:
        tree = parse(text)
    except FilterParseError as error:
        assert 0 <= error.position <= len(text)
        return
    assert parse(to_text(tree)) == tree
    selector = compile_filter(text)
    for props in ({}, {"a": "5", "b": "x"}, {"a": "x", "b": "2.5"}):
        assert selector.matches(props) in (True, False)
