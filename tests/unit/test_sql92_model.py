"""Property tests of the SQL92 filter: random trees print and parse back to themselves, and
the compiled evaluator agrees with a naive model of RocketMQ on random expressions.

The model below is written straight from RocketMQ's Java (filter/.../expression/
LogicExpression, ComparisonExpression, UnaryExpression, ConstantExpression): values carry
their Java class, AND/OR are RocketMQ's nested binary nodes, BETWEEN and <> are rewritten
as RocketMQ's factory methods rewrite them, and __compare is its if-chain. Conversions of
strings to numbers are not computed at all: property values and string literals come from
``JAVA_FACTS``, a table of what Integer.valueOf, Long.valueOf, Double.valueOf and
Boolean.valueOf return for each, worked out by hand from the JDK's documentation.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.filter import FilterLimits, compile_filter, parse, to_text
from broker.filter.evaluate import compile_tree
from broker.filter.java import FilterEvaluationError
from broker.filter.lexer import KEYWORDS
from broker.filter.syntax import (
    And,
    Between,
    BoolLiteral,
    Compare,
    CompareOp,
    Expr,
    FloatLiteral,
    In,
    IntLiteral,
    IsNull,
    Match,
    MatchOp,
    Negate,
    Not,
    NullLiteral,
    Or,
    Property,
    StringLiteral,
)

# --- a naive model of RocketMQ's evaluation ---------------------------------------------------

#: text -> (Integer.valueOf, Long.valueOf, Double.valueOf, Boolean.valueOf); None: throws.
JAVA_FACTS: dict[str, tuple[int | None, int | None, float | None, bool]] = {
    "0": (0, 0, 0.0, False),
    "5": (5, 5, 5.0, False),
    "-3": (-3, -3, -3.0, False),
    "+7": (7, 7, 7.0, False),
    "007": (7, 7, 7.0, False),
    "2.5": (None, None, 2.5, False),
    "5.": (None, None, 5.0, False),
    ".5": (None, None, 0.5, False),
    "1e3": (None, None, 1000.0, False),
    "-0": (0, 0, -0.0, False),
    "NaN": (None, None, math.nan, False),
    "-Infinity": (None, None, -math.inf, False),
    " 5 ": (None, None, 5.0, False),
    "5d": (None, None, 5.0, False),
    "0x1.8p1": (None, None, 3.0, False),
    "2147483648": (None, 2147483648, 2147483648.0, False),
    "9223372036854775808": (None, None, 9.223372036854775808e18, False),
    "\u0661\u0662": (12, 12, None, False),  # ARABIC-INDIC ONE TWO
    "1_000": (None, None, None, False),
    "": (None, None, None, False),
    "abc": (None, None, None, False),
    "true": (None, None, None, True),
    "TRUE": (None, None, None, True),
    "x'y": (None, None, None, False),
}
POOL = sorted(JAVA_FACTS)
INTS = [0, 3, 5, 7, 12, 2147483647, 2147483648, 3000000000, 9223372036854775807]
FLOATS = [0.5, 2.5, 5.0, 1000.0, 3e9, 9.223372036854776e18, 5e-324, 1.7976931348623157e308]

Value = tuple[str, object] | None  # (Java class name, value) or null


class Thrown(Exception):
    """RocketMQ's evaluate() threw."""


TRUE: Value = ("Boolean", True)
FALSE: Value = ("Boolean", False)


def _fact(text: object, column: int) -> object:
    assert isinstance(text, str)
    result = JAVA_FACTS[text][column]
    if result is None:
        raise Thrown(f"NumberFormatException: {text!r}")
    return result


def _double_compare(a: float, b: float) -> int:
    # Double.compare: <, > first, then doubleToLongBits (NaN canonical).
    if a < b:
        return -1
    if a > b:
        return 1

    def bits(x: float) -> int:
        return 0x7FF8000000000000 if math.isnan(x) else struct.unpack(">q", struct.pack(">d", x))[0]

    return 0 if bits(a) == bits(b) else (-1 if bits(a) < bits(b) else 1)


def _compare_to(lv: Value, rv: Value) -> int:
    assert lv is not None and rv is not None and lv[0] == rv[0]
    kind, a, b = lv[0], lv[1], rv[1]
    if kind == "Double":
        return _double_compare(a, b)  # type: ignore[arg-type]
    if kind == "String":  # String.compareTo: UTF-16 code units
        ua, ub = a.encode("utf-16-be"), b.encode("utf-16-be")  # type: ignore[attr-defined]
        return int(ua > ub) - int(ua < ub)
    if kind == "Boolean":
        return 0 if a == b else (1 if a else -1)
    return int(a > b) - int(a < b)  # type: ignore[operator]


def java_compare(lv: Value, rv: Value) -> int:
    """ComparisonExpression.__compare(lv, rv, convertStringExpressions=true)."""
    assert lv is not None and rv is not None
    lc, rc = lv[0], rv[0]
    if lc != rc:
        if lc == "Boolean":
            if rc == "String":
                raise Thrown("ClassCastException")
            return -1
        elif lc == "Integer":
            if rc == "Long":
                lv = ("Long", lv[1])
            elif rc == "Double":
                lv = ("Double", float(lv[1]))  # type: ignore[arg-type]
            elif rc == "String":
                rv = ("Integer", _fact(rv[1], 0))
            else:
                return -1
        elif lc == "Long":
            if rc == "Integer":
                rv = ("Long", rv[1])
            elif rc == "Double":
                lv = ("Double", float(lv[1]))  # type: ignore[arg-type]
            elif rc == "String":
                rv = ("Long", _fact(rv[1], 1))
            else:
                return -1
        elif lc == "Double":
            if rc in ("Integer", "Long"):
                rv = ("Double", float(rv[1]))  # type: ignore[arg-type]
            elif rc == "String":
                rv = ("Double", _fact(rv[1], 2))
            else:
                return -1
        elif lc == "String":
            if rc == "Boolean":
                lv = ("Boolean", JAVA_FACTS[lv[1]][3])  # type: ignore[index]
            elif rc == "Integer":
                lv = ("Integer", _fact(lv[1], 0))
            elif rc == "Long":
                lv = ("Long", _fact(lv[1], 1))
            elif rc == "Double":
                lv = ("Double", _fact(lv[1], 2))
            else:
                return -1
        else:
            return -1
    return _compare_to(lv, rv)


def _java_equals(lv: Value, rv: Value) -> bool:
    assert lv is not None and rv is not None
    if lv[0] != rv[0]:
        return False
    if lv[0] == "Double":
        return _double_compare(lv[1], rv[1]) == 0  # type: ignore[arg-type]
    return lv[1] == rv[1]


def _equal(lv: Value, rv: Value) -> Value:
    """doCreateEqual's evaluate()."""
    if (lv is None) != (rv is None):
        return None if lv is None else FALSE
    if lv is None or _java_equals(lv, rv):
        return TRUE
    return TRUE if java_compare(lv, rv) == 0 else FALSE


def _relation(op: CompareOp, lv: Value, right: Callable[[], Value]) -> Value:
    """ComparisonExpression.evaluate() for >, >=, <, <=."""
    if lv is None:
        return None
    rv = right()
    if rv is None:
        return None
    if lv[0] == rv[0] == "String":
        lv, rv = ("Double", _fact(lv[1], 2)), ("Double", _fact(rv[1], 2))
    answer = java_compare(lv, rv)
    holds = {"<": answer < 0, "<=": answer <= 0, ">": answer > 0, ">=": answer >= 0}
    return TRUE if holds[op.value] else FALSE


def _not(value: Value) -> Value:
    return None if value is None else ("Boolean", not value[1])


def _and(left: Callable[[], Value], right: Callable[[], Value]) -> Value:
    lv = left()
    if lv is not None and not lv[1]:
        return FALSE
    rv = right()
    if rv is not None and not rv[1]:
        return FALSE
    return None if lv is None or rv is None else TRUE


def _or(left: Callable[[], Value], right: Callable[[], Value]) -> Value:
    lv = left()
    if lv is not None and lv[1]:
        return TRUE
    rv = right()
    if rv is not None and rv[1]:
        return TRUE
    return None if lv is None or rv is None else FALSE


def _nested(
    binary: Callable[[Callable[[], Value], Callable[[], Value]], Value],
    operands: tuple[Expr, ...],
    props: dict[str, str],
) -> Value:
    """RocketMQ's left-nested binary nodes: ((x1 op x2) op x3) ..."""

    def nest(left: Callable[[], Value], operand: Expr) -> Callable[[], Value]:
        return lambda: binary(left, lambda: model_boolean(operand, props))

    thunk: Callable[[], Value] = lambda: model_boolean(operands[0], props)  # noqa: E731
    for operand in operands[1:]:
        thunk = nest(thunk, operand)
    return thunk()


def model_boolean(node: Expr, props: dict[str, str]) -> Value:
    """SelectorParser.asBooleanExpression, then evaluate(): a property is cast."""
    if isinstance(node, Property):
        value = model_value(node, props)
        return None if value is None else (value if value[0] == "Boolean" else FALSE)
    return model_value(node, props)


def model_value(node: Expr, props: dict[str, str]) -> Value:
    """Expression.evaluate(MessageEvaluationContext(props))."""
    match node:
        case Property(name=name):
            return None if name not in props else ("String", props[name])
        case IntLiteral(value=v):
            return ("Integer" if v <= 2**31 - 1 else "Long", v)
        case FloatLiteral(value=v):
            return ("Double", v)
        case StringLiteral(value=v):
            return ("String", v)
        case BoolLiteral(value=v):
            return ("Boolean", v)
        case NullLiteral():
            return None
        case Negate(operand=x):
            inner = model_value(x, props)
            if inner is None or inner[0] not in ("Integer", "Long", "Double"):
                return None
            return (inner[0], -inner[1])  # type: ignore[operator]
        case Not(operand=x):
            return _not(model_boolean(x, props))
        case And(operands=xs):
            return _nested(_and, xs, props)
        case Or(operands=xs):
            return _nested(_or, xs, props)
        case Compare(op=CompareOp.EQ, left=x, right=y):
            return _equal(model_value(x, props), model_value(y, props))
        case Compare(op=CompareOp.NE, left=x, right=y):
            return _not(_equal(model_value(x, props), model_value(y, props)))
        case Compare(op=op, left=x, right=y):
            return _relation(op, model_value(x, props), lambda: model_value(y, props))
        case IsNull(operand=x, negated=negated):
            is_null = _equal(model_value(x, props), None)
            return _not(is_null) if negated else is_null
        case Between(operand=x, low=lo, high=hi, negated=False):
            return _and(
                lambda: _relation(
                    CompareOp.GE, model_value(x, props), lambda: model_value(lo, props)
                ),
                lambda: _relation(
                    CompareOp.LE, model_value(x, props), lambda: model_value(hi, props)
                ),
            )
        case Between(operand=x, low=lo, high=hi, negated=True):
            return _or(
                lambda: _relation(
                    CompareOp.LT, model_value(x, props), lambda: model_value(lo, props)
                ),
                lambda: _relation(
                    CompareOp.GT, model_value(x, props), lambda: model_value(hi, props)
                ),
            )
        case In(operand=prop, values=values, negated=negated):
            value = model_value(prop, props)
            if value is None or value[0] != "String":
                return None
            return TRUE if (value[1] in values) != negated else FALSE
        case Match(op=op, operand=x, pattern=pattern, negated=negated):
            if pattern == "":
                return FALSE
            value = model_value(x, props)
            if value is None or value[0] != "String":
                return FALSE
            text = value[1]
            assert isinstance(text, str)
            found = {
                MatchOp.CONTAINS: pattern in text,
                MatchOp.STARTSWITH: text.startswith(pattern),
                MatchOp.ENDSWITH: text.endswith(pattern),
            }[op]
            return TRUE if found != negated else FALSE
    raise AssertionError(node)


def model(tree: Expr, props: dict[str, str]) -> bool | str | None:
    try:
        value = model_boolean(tree, props)
    except Thrown:
        return "throws"
    return None if value is None else bool(value[1])


# --- random valid trees -------------------------------------------------------------------


def _typed(node: IntLiteral | FloatLiteral) -> Value:
    return model_value(node, {})


def _ordered_bounds(between: Between) -> Between:
    # createBetween refuses two literal bounds out of order: swap them.
    low, high = between.low, between.high
    numbers = (IntLiteral, FloatLiteral)
    if (
        isinstance(low, numbers)
        and isinstance(high, numbers)
        and java_compare(_typed(high), _typed(low)) < 0
    ):
        return Between(operand=between.operand, low=high, high=low, negated=between.negated)
    return between


def _legal_equality(node: Compare) -> Expr:
    # checkEqualOperand refuses a NULL literal: x = NULL becomes x IS NULL.
    # checkEqualOperandCompatability refuses TRUE = 1 but not 1 = TRUE: swap the sides.
    if isinstance(node.right, NullLiteral):
        return IsNull(operand=node.left, negated=node.op is CompareOp.NE)
    if isinstance(node.left, NullLiteral):
        return IsNull(operand=node.right, negated=node.op is CompareOp.NE)
    if isinstance(node.left, BoolLiteral) and isinstance(
        node.right, (IntLiteral, FloatLiteral, StringLiteral)
    ):
        return Compare(op=node.op, left=node.right, right=node.left)
    return node


def trees(
    names: st.SearchStrategy[str],
    strings: st.SearchStrategy[str],
    ints: st.SearchStrategy[int],
    floats: st.SearchStrategy[float],
    depth: int,
) -> st.SearchStrategy[Expr]:
    """Boolean expressions that RocketMQ's parser accepts, ``depth`` levels of operators."""
    prop = st.builds(Property, name=names)
    number = st.one_of(st.builds(IntLiteral, value=ints), st.builds(FloatLiteral, value=floats))
    literal = st.one_of(
        number,
        st.builds(StringLiteral, value=strings),
        st.builds(BoolLiteral, value=st.booleans()),
        st.just(NullLiteral()),
    )
    values: st.SearchStrategy[Expr] = st.one_of(prop, literal)
    relational_side: st.SearchStrategy[Expr] = st.one_of(prop, number)
    booleans: st.SearchStrategy[Expr] = st.one_of(
        prop,
        st.builds(BoolLiteral, value=st.booleans()),
        st.just(NullLiteral()),
        st.builds(
            In,
            operand=prop,
            values=st.lists(strings, min_size=1, max_size=3).map(tuple),
            negated=st.booleans(),
        ),
    )
    for _ in range(depth):
        negate = st.builds(Negate, operand=st.one_of(values, booleans))
        values = st.one_of(values, negate, booleans)
        relational_side = st.one_of(relational_side, negate)
        relational_ops = st.sampled_from([CompareOp.GT, CompareOp.GE, CompareOp.LT, CompareOp.LE])
        equality_ops = st.sampled_from([CompareOp.EQ, CompareOp.NE])
        booleans = st.one_of(
            booleans,
            st.builds(Not, operand=booleans),
            st.builds(And, operands=st.lists(booleans, min_size=2, max_size=3).map(tuple)),
            st.builds(Or, operands=st.lists(booleans, min_size=2, max_size=3).map(tuple)),
            st.builds(Compare, op=equality_ops, left=values, right=values).map(_legal_equality),
            st.builds(Compare, op=relational_ops, left=relational_side, right=relational_side),
            st.builds(IsNull, operand=values, negated=st.booleans()),
            st.builds(
                Between,
                operand=relational_side,
                low=relational_side,
                high=relational_side,
                negated=st.booleans(),
            ).map(_ordered_bounds),
            st.builds(
                Match,
                op=st.sampled_from(MatchOp),
                operand=values,
                pattern=strings,
                negated=st.booleans(),
            ),
        )
    return booleans


NAMES = st.from_regex(r"[A-Za-z_$][A-Za-z0-9_$]{0,5}", fullmatch=True).filter(
    lambda name: name.upper() not in KEYWORDS
)
# deferred: the strategy's own repr (which Hypothesis prints on a failure) is then short.
ANY_TREE = st.deferred(
    lambda: trees(
        NAMES,
        st.text(max_size=6),
        st.integers(0, 2**63 - 1),
        st.floats(min_value=5e-324, max_value=1.7976931348623157e308),
        depth=3,
    )
)
MODEL_TREE = st.deferred(
    lambda: trees(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(POOL),
        st.sampled_from(INTS),
        st.sampled_from(FLOATS),
        depth=3,
    )
)
PROPERTIES = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(POOL))
WIDE = FilterLimits(max_chars=10**6)


@settings(max_examples=300, deadline=None)
@given(ANY_TREE)
def test_printed_tree_parses_back_to_itself(tree: Expr) -> None:
    assert parse(to_text(tree), WIDE) == tree


@settings(max_examples=400, deadline=None)
@given(MODEL_TREE, st.lists(PROPERTIES, min_size=1, max_size=4))
def test_evaluator_agrees_with_the_model(tree: Expr, cases: list[dict[str, str]]) -> None:
    compiled = compile_tree(tree)
    from_text = compile_filter(to_text(tree), WIDE)
    for props in cases:
        expected = model(tree, props)
        try:
            got: bool | str | None = compiled(props)
        except FilterEvaluationError:
            got = "throws"
        assert got == expected, (to_text(tree), props)
        assert from_text.matches(props) is (expected is True)
