"""The SQL92 filter's syntax tree, its limits, its parse error, and the tree printed back.

Rules:
- Nodes are frozen attrs values that mirror what RocketMQ's ``SelectorParser`` builds, one
  node per construct as written: ``a BETWEEN 1 AND 2`` is one ``Between`` (RocketMQ builds
  ``a >= 1 AND a <= 2``; the evaluator does the same), ``a <> 1`` one ``Compare`` with
  ``NE``. Parentheses and a unary ``+`` leave no node, exactly as in RocketMQ.
- ``AND`` / ``OR`` chains written without parentheses are one n-ary node (``a AND b AND c``
  is ``And((a, b, c))``), so a long chain is a flat tuple, not a deep tree; a parenthesised
  chain stays one operand (``(a AND b) AND c`` is ``And((And((a, b)), c))``). Both evaluate
  the same way as RocketMQ's left-nested binary nodes (see ``evaluate.py``).
- Literals keep the type RocketMQ gives them: ``IntLiteral`` is a Java Integer when it fits
  32 bits and a Long otherwise (``ConstantExpression.createFromDecimal``), ``FloatLiteral``
  a Double. Negative numbers are ``Negate`` of a literal, as in RocketMQ's grammar.
- ``to_text`` prints a tree as text that parses back to the same tree: every operand is
  parenthesised, strings quote ``'`` as ``''``.
- Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum

import attrs

from protocol.errors import RocketError

# --- limits and errors ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FilterLimits:
    """Bounds on one expression; RocketMQ has none, a broker must not trust its clients."""

    #: Expression text length (RocketMQ: unbounded).
    max_chars: int = attrs.field(default=4096, validator=attrs.validators.ge(1))
    #: Nesting of parentheses / NOT / sign, and height of the tree (no RecursionError ever).
    max_depth: int = attrs.field(default=64, validator=attrs.validators.ge(2))
    #: Strings in one IN (...) list.
    max_in_values: int = attrs.field(default=1024, validator=attrs.validators.ge(1))


DEFAULT_LIMITS = FilterLimits()


class FilterParseError(RocketError):
    """An expression that RocketMQ's SelectorParser refuses, or one past ``FilterLimits``.

    ``str()`` names what was wrong and where (``line``/``column`` are 1-based, as in
    RocketMQ's ParseException; ``position`` is the 0-based offset into the text). The broker
    answers SUBSCRIPTION_PARSE_FAILED with it as the remark.
    """

    def __init__(self, detail: str, text: str, position: int) -> None:
        self.detail = detail
        self.position = position
        before = text[:position]
        self.line = before.count("\n") + 1
        self.column = position - (before.rfind("\n") + 1) + 1
        where = (
            f"column {self.column}" if self.line == 1 else f"line {self.line}, column {self.column}"
        )
        super().__init__(f"Invalid SQL92 expression: {detail} at {where}")


# --- nodes ----------------------------------------------------------------------------------


class CompareOp(enum.Enum):
    """A comparison operator, valued by its spelling."""

    EQ = "="
    NE = "<>"
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="


class MatchOp(enum.Enum):
    """The 5.x string predicates (ComparisonExpression.ContainsExpression & co.)."""

    CONTAINS = "CONTAINS"
    STARTSWITH = "STARTSWITH"
    ENDSWITH = "ENDSWITH"


@attrs.frozen(kw_only=True)
class Property:
    """A message property by name (PropertyExpression); missing is NULL."""

    name: str


@attrs.frozen(kw_only=True)
class IntLiteral:
    """A decimal literal, 0 .. 2**63 - 1 (an optional ``L`` suffix is not kept)."""

    value: int


@attrs.frozen(kw_only=True)
class FloatLiteral:
    """A floating-point literal: finite and at least Double.MIN_VALUE."""

    value: float


@attrs.frozen(kw_only=True)
class StringLiteral:
    """A quoted string, unquoted (``'it''s'`` is ``it's``)."""

    value: str


@attrs.frozen(kw_only=True)
class BoolLiteral:
    """TRUE or FALSE."""

    value: bool


@attrs.frozen(kw_only=True)
class NullLiteral:
    """NULL."""


@attrs.frozen(kw_only=True)
class Negate:
    """Unary minus (UnaryExpression.createNegate)."""

    operand: Expr


@attrs.frozen(kw_only=True)
class Not:
    """NOT (UnaryExpression.createNOT)."""

    operand: Expr


@attrs.frozen(kw_only=True)
class And:
    """``op1 AND op2 AND ...`` (two or more), evaluated left to right."""

    operands: tuple[Expr, ...]


@attrs.frozen(kw_only=True)
class Or:
    """``op1 OR op2 OR ...`` (two or more), evaluated left to right."""

    operands: tuple[Expr, ...]


@attrs.frozen(kw_only=True)
class Compare:
    """``left op right``."""

    op: CompareOp
    left: Expr
    right: Expr


@attrs.frozen(kw_only=True)
class IsNull:
    """``operand IS NULL`` or, negated, ``operand IS NOT NULL``."""

    operand: Expr
    negated: bool = False


@attrs.frozen(kw_only=True)
class Between:
    """``operand [NOT] BETWEEN low AND high``."""

    operand: Expr
    low: Expr
    high: Expr
    negated: bool = False


@attrs.frozen(kw_only=True)
class In:
    """``property [NOT] IN ('v1', ...)``: RocketMQ allows only a property on the left."""

    operand: Property
    values: tuple[str, ...]
    negated: bool = False


@attrs.frozen(kw_only=True)
class Match:
    """``operand [NOT] CONTAINS|STARTSWITH|ENDSWITH 'pattern'``."""

    op: MatchOp
    operand: Expr
    pattern: str
    negated: bool = False


Literal = IntLiteral | FloatLiteral | StringLiteral | BoolLiteral | NullLiteral
Expr = (
    Property
    | IntLiteral
    | FloatLiteral
    | StringLiteral
    | BoolLiteral
    | NullLiteral
    | Negate
    | Not
    | And
    | Or
    | Compare
    | IsNull
    | Between
    | In
    | Match
)
#: Nodes whose value is a Boolean or NULL: RocketMQ's ``BooleanExpression``s.
BOOLEAN_NODES = (BoolLiteral, NullLiteral, Not, And, Or, Compare, IsNull, Between, In, Match)


def children(node: Expr) -> tuple[Expr, ...]:
    """The direct operands of ``node``, left to right."""
    match node:
        case Negate(operand=x) | Not(operand=x) | IsNull(operand=x) | Match(operand=x):
            return (x,)
        case In(operand=x):
            return (x,)
        case And(operands=xs) | Or(operands=xs):
            return xs
        case Compare(left=x, right=y):
            return (x, y)
        case Between(operand=x, low=y, high=z):
            return (x, y, z)
        case _:
            return ()


def height(node: Expr) -> int:
    """Levels in the tree under and including ``node`` (a leaf is 1); iterative."""
    best = 0
    stack = [(node, 1)]
    while stack:
        current, level = stack.pop()
        best = max(best, level)
        stack.extend((child, level + 1) for child in children(current))
    return best


# --- printing -------------------------------------------------------------------------------


def quote(value: str) -> str:
    """A string literal for ``value`` (ConstantExpression.encodeString)."""
    return "'" + value.replace("'", "''") + "'"


def to_text(node: Expr) -> str:
    """Text that parses back to ``node``; every operand is parenthesised."""
    match node:
        case Property(name=name):
            return name
        case IntLiteral(value=v):
            return str(v)
        case FloatLiteral(value=v):
            return repr(v)  # '1.5', '1e-05', '5e-324': all FLOATING_POINT_LITERAL
        case StringLiteral(value=v):
            return quote(v)
        case BoolLiteral(value=v):
            return "TRUE" if v else "FALSE"
        case NullLiteral():
            return "NULL"
        case Negate(operand=x):
            return f"-({to_text(x)})"  # never "--", which starts a comment
        case Not(operand=x):
            return f"NOT ({to_text(x)})"
        case And(operands=xs):
            return " AND ".join(f"({to_text(x)})" for x in xs)
        case Or(operands=xs):
            return " OR ".join(f"({to_text(x)})" for x in xs)
        case Compare(op=op, left=x, right=y):
            return f"({to_text(x)}) {op.value} ({to_text(y)})"
        case IsNull(operand=x, negated=negated):
            return f"({to_text(x)}) IS {'NOT ' if negated else ''}NULL"
        case Between(operand=x, low=lo, high=hi, negated=negated):
            word = "NOT BETWEEN" if negated else "BETWEEN"
            return f"({to_text(x)}) {word} ({to_text(lo)}) AND ({to_text(hi)})"
        case In(operand=x, values=values, negated=negated):
            listed = ", ".join(quote(v) for v in values)
            return f"{x.name} {'NOT IN' if negated else 'IN'} ({listed})"
        case Match(op=op, operand=x, pattern=pattern, negated=negated):
            word = f"NOT {op.value}" if negated else op.value
            return f"({to_text(x)}) {word} {quote(pattern)}"
    raise AssertionError(f"not a filter node: {node!r}")
