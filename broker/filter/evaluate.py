"""Evaluating a SQL92 filter against a message's properties, as RocketMQ's broker does.

``compile_filter(text)`` parses once and turns the tree into nested closures; each call of
``Sql92Filter.matches(properties)`` then costs a few microseconds and no parsing.

Rules (RocketMQ's filter/.../expression classes, with MessageEvaluationContext giving a
property's value as the String the message carries, or null when it is missing):
- Three-valued: a boolean expression is True, False or None (NULL, SQL's unknown). A
  message matches only when the whole expression is True (``matches()``); None does not
  match, and neither does an expression that throws (ExpressionMessageFilter catches it).
- AND / OR (LogicExpression.createAND / createOR) evaluate left to right: AND stops at the
  first False, OR at the first True; otherwise None if any operand was None. A throw in an
  operand that is evaluated aborts the whole expression (``FilterEvaluationError``): a
  message with ``a = 'x'`` does not match ``a > 5 OR b = 'y'`` even when b is 'y', but does
  match ``b = 'y' OR a > 5``. n-ary chains evaluate exactly as RocketMQ's nested pairs.
- NOT: None stays None. A bare property where a boolean is expected
  (UnaryExpression.createBooleanCast) is None when missing and False when present (a
  property is a String, never a Boolean).
- = (doCreateEqual): both sides NULL is True (so ``a = b`` holds when both are missing);
  left NULL only is None; right NULL only is False. <> is NOT of =, so ``'x' <> a`` is True
  when a is missing but ``a <> 'x'`` is None. IS NULL is ``x = NULL`` by the same rule;
  IS NOT NULL its NOT.
- >, >=, <, <= (ComparisonExpression.evaluate): None if either side is NULL (left first);
  two Strings are both parsed as Doubles; otherwise ``java.comparator`` (a String against
  an Integer literal is parsed with Integer.valueOf, so ``a > 5`` throws for a = '5.5'
  and ``a > 5.0`` does not).
- BETWEEN is ``x >= low AND x <= high``; NOT BETWEEN is ``x < low OR x > high``.
- IN / NOT IN: None when the property is missing, else membership (XOR NOT).
- CONTAINS / STARTSWITH / ENDSWITH and their NOT forms: False (for both forms) when the
  pattern is empty (the operand is then not evaluated), or when the value is missing or not
  a String; otherwise the string test, inverted by NOT.
- Unary minus (createNegate): a number is negated keeping its class; anything else
  (a property's String, a boolean) gives NULL, after evaluating it.
- Pure: no I/O, no clock; the closures hold no state.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from broker.filter.java import (
    NUMERIC,
    FilterEvaluationError,
    JavaType,
    JavaValue,
    comparator,
    integer_type,
)
from broker.filter.sql92 import parse
from broker.filter.syntax import (
    DEFAULT_LIMITS,
    And,
    Between,
    BoolLiteral,
    Compare,
    CompareOp,
    Expr,
    FilterLimits,
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

Properties = Mapping[str, str]
#: A compiled boolean expression: True, False or None; may raise FilterEvaluationError.
Predicate = Callable[[Properties], bool | None]
#: A compiled operand: its Java value (or None for NULL).
Getter = Callable[[Properties], JavaValue | None]


@attrs.frozen(kw_only=True)
class Sql92Filter:
    """One compiled SQL92 expression; share it between every pull of a subscription."""

    expression: str
    tree: Expr
    predicate: Predicate = attrs.field(eq=False, repr=False)

    def evaluate(self, properties: Properties) -> bool | None:
        """RocketMQ's ``evaluate()``: True, False or None; raises FilterEvaluationError."""
        return self.predicate(properties)

    def matches(self, properties: Properties) -> bool:
        """Whether a message with ``properties`` passes (ExpressionMessageFilter)."""
        try:
            return self.predicate(properties) is True
        except FilterEvaluationError:
            return False


def compile_filter(expression: str, limits: FilterLimits = DEFAULT_LIMITS) -> Sql92Filter:
    """Parse and compile ``expression``; raises ``FilterParseError``."""
    tree = parse(expression, limits)
    return Sql92Filter(expression=expression, tree=tree, predicate=compile_tree(tree))


def compile_tree(tree: Expr) -> Predicate:
    """The predicate of a parsed tree (a bare property reads as a Boolean)."""
    return _boolean(tree)


# --- operands (values) ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Operand:
    """A compiled operand and what is known of it before any message is seen."""

    get: Getter
    #: Java class of its non-NULL values; None when it is always NULL.
    java_type: JavaType | None
    #: ``get`` ignores the properties and never throws; its result is ``value``.
    constant: bool = False
    value: JavaValue | None = None
    #: Set when the operand is a bare property (the fast paths read it directly).
    property_name: str | None = None


def _constant(java_type: JavaType | None, value: JavaValue | None) -> _Operand:
    return _Operand(get=lambda _: value, java_type=java_type, constant=True, value=value)


_NULL = _constant(None, None)


def _operand(node: Expr) -> _Operand:
    match node:
        case Property(name=name):
            return _Operand(
                get=lambda props: props.get(name), java_type=JavaType.STRING, property_name=name
            )
        case IntLiteral(value=value):
            return _constant(integer_type(value), value)
        case FloatLiteral(value=value):
            return _constant(JavaType.DOUBLE, value)
        case StringLiteral(value=value):
            return _constant(JavaType.STRING, value)
        case BoolLiteral(value=value):
            return _constant(JavaType.BOOLEAN, value)
        case NullLiteral():
            return _NULL
        case Negate(operand=inner):
            return _negate(_operand(inner))
        case _:
            return _Operand(get=_boolean(node), java_type=JavaType.BOOLEAN)


def _negate(inner: _Operand) -> _Operand:
    if inner.java_type in NUMERIC:
        # Numbers come only from literals, so a number is a constant here. An Integer
        # literal is at most 2**31 - 1, so Java's int negation cannot overflow.
        assert inner.constant and inner.value is not None, inner
        return _constant(inner.java_type, -inner.value)
    if inner.constant or inner.property_name is not None:
        return _NULL  # not a Number: createNegate answers null
    evaluate_inner = inner.get

    def negate_boolean(props: Properties) -> None:
        evaluate_inner(props)  # evaluated for its throws; a Boolean negates to null

    return _Operand(get=negate_boolean, java_type=None)


# --- boolean expressions --------------------------------------------------------------------


def _boolean(node: Expr) -> Predicate:
    match node:
        case Property(name=name):
            return lambda props: None if props.get(name) is None else False
        case BoolLiteral(value=value):
            return lambda _: value
        case NullLiteral():
            return lambda _: None
        case Not(operand=inner):
            return _not(_boolean(inner))
        case And(operands=operands):
            return _and([_boolean(x) for x in operands])
        case Or(operands=operands):
            return _or([_boolean(x) for x in operands])
        case Compare(op=CompareOp.EQ, left=left, right=right):
            return _equal(_operand(left), _operand(right))
        case Compare(op=CompareOp.NE, left=left, right=right):
            return _not(_equal(_operand(left), _operand(right)))
        case Compare(op=op, left=left, right=right):
            return _relational(op, _operand(left), _operand(right))
        case IsNull(operand=inner, negated=negated):
            is_null = _equal(_operand(inner), _NULL)
            return _not(is_null) if negated else is_null
        case Between(operand=x, low=low, high=high, negated=False):
            return _boolean(
                And(operands=(Compare(op=CompareOp.GE, left=x, right=low), _le(x, high)))
            )
        case Between(operand=x, low=low, high=high, negated=True):
            return _boolean(
                Or(operands=(_lt(x, low), Compare(op=CompareOp.GT, left=x, right=high)))
            )
        case In(operand=Property(name=name), values=values, negated=negated):
            return _in(name, frozenset(values), negated)
        case Match(op=op, operand=inner, pattern=pattern, negated=negated):
            return _match(op, _operand(inner).get, pattern, negated)
    raise AssertionError(f"not a boolean expression: {node!r}")


def _le(left: Expr, right: Expr) -> Compare:
    return Compare(op=CompareOp.LE, left=left, right=right)


def _lt(left: Expr, right: Expr) -> Compare:
    return Compare(op=CompareOp.LT, left=left, right=right)


def _not(inner: Predicate) -> Predicate:
    def negation(props: Properties) -> bool | None:
        value = inner(props)
        return None if value is None else not value

    return negation


def _and(operands: list[Predicate]) -> Predicate:
    return _logic(operands, stop=False)


def _or(operands: list[Predicate]) -> Predicate:
    return _logic(operands, stop=True)


def _logic(operands: list[Predicate], *, stop: bool) -> Predicate:
    """AND (``stop`` False) or OR (``stop`` True): the first operand equal to ``stop``
    decides; else None if any was None, else ``not stop``."""
    if len(operands) == 2:  # the common case, without the loop
        first, second = operands

        def pair(props: Properties) -> bool | None:
            left = first(props)
            if left is stop:
                return stop
            right = second(props)
            if right is stop:
                return stop
            return None if left is None or right is None else not stop

        return pair

    def chain(props: Properties) -> bool | None:
        unknown = False
        for predicate in operands:
            value = predicate(props)
            if value is stop:
                return stop
            unknown = unknown or value is None
        return None if unknown else not stop

    return chain


def _comparator(left: _Operand, right: _Operand, *, relational: bool) -> Callable[..., int]:
    if left.java_type is None or right.java_type is None:
        return _never  # a side that is always NULL never reaches the comparison
    return comparator(left.java_type, right.java_type, relational=relational)


def _never(left: Any, right: Any) -> int:
    raise AssertionError("compared a NULL")


def _equal(left: _Operand, right: _Operand) -> Predicate:
    compare = _comparator(left, right, relational=False)
    name, value = left.property_name, right.value
    if name is not None and right.constant and value is not None:
        if right.java_type is JavaType.STRING:
            return lambda props: None if (v := props.get(name)) is None else v == value
        return lambda props: None if (v := props.get(name)) is None else compare(v, value) == 0
    get_left, get_right = left.get, right.get

    def equal(props: Properties) -> bool | None:
        left_value, right_value = get_left(props), get_right(props)
        if left_value is None:
            return True if right_value is None else None
        if right_value is None:
            return False
        return compare(left_value, right_value) == 0

    return equal


_RELATIONS: dict[CompareOp, Callable[[int, int], bool]] = {
    CompareOp.GT: operator.gt,
    CompareOp.GE: operator.ge,
    CompareOp.LT: operator.lt,
    CompareOp.LE: operator.le,
}


def _relational(op: CompareOp, left: _Operand, right: _Operand) -> Predicate:
    compare = _comparator(left, right, relational=True)
    holds = _RELATIONS[op]
    name, value = left.property_name, right.value
    if name is not None and right.constant and value is not None:

        def property_vs_constant(props: Properties) -> bool | None:
            left_value = props.get(name)
            return None if left_value is None else holds(compare(left_value, value), 0)

        return property_vs_constant
    get_left, get_right = left.get, right.get

    def relation(props: Properties) -> bool | None:
        left_value = get_left(props)
        if left_value is None:
            return None
        right_value = get_right(props)
        if right_value is None:
            return None
        return holds(compare(left_value, right_value), 0)

    return relation


def _in(name: str, values: frozenset[str], negated: bool) -> Predicate:
    def membership(props: Properties) -> bool | None:
        value = props.get(name)
        return None if value is None else (value in values) is not negated

    return membership


_STRING_TESTS: dict[MatchOp, Callable[[str, str], bool]] = {
    MatchOp.CONTAINS: lambda value, pattern: pattern in value,
    MatchOp.STARTSWITH: str.startswith,
    MatchOp.ENDSWITH: str.endswith,
}


def _match(op: MatchOp, get: Getter, pattern: str, negated: bool) -> Predicate:
    if not pattern:
        return lambda _: False  # both forms: False, operand not evaluated
    test = _STRING_TESTS[op]

    def string_test(props: Properties) -> bool:
        value = get(props)
        if not isinstance(value, str):
            return False  # NULL, or a Boolean: False for both forms
        return test(value, pattern) is not negated

    return string_test
