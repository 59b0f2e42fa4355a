"""The SQL92 filter parser: RocketMQ's SelectorParser.jj as a recursive descent over tokens.

Grammar (lowest precedence first; every loop is left-associative):

    selector   := or EOF
    or         := and (OR and)*
    and        := equality (AND equality)*
    equality   := comparison ( (= | <>) comparison | IS NULL | IS NOT NULL )*
    comparison := unary ( (> | >= | < | <=) unary
                        | [NOT] (CONTAINS | STARTSWITH | ENDSWITH) 'string'
                        | [NOT] BETWEEN unary AND unary
                        | [NOT] IN ( 'string' (, 'string')* ) )*
    unary      := + unary | - unary | NOT unary | primary
    primary    := literal | identifier | ( or )

So NOT binds tighter than any comparison, as in RocketMQ: ``NOT a = 1`` is ``(NOT a) = 1``.

Rules: what RocketMQ refuses when it builds the expression is refused here, with the
method that refuses it named at each check (filter/.../expression/ComparisonExpression.java
unless said otherwise):
- an operand of AND / OR / NOT, or the whole expression, must be a boolean expression or a
  bare property (SelectorParser.asBooleanExpression: ``a AND b`` reads each property as a
  Boolean, ``5 AND a`` is refused);
- >, >=, <, <= and BETWEEN take no string, boolean or NULL literal and no boolean
  expression (checkLessThanOperand); = and <> take no NULL literal (checkEqualOperand)
  and no ``TRUE = 1`` (checkEqualOperandCompatability: a boolean literal on the left of a
  non-boolean literal);
- IN needs a property on its left (createInFilter); BETWEEN of two literals needs them
  non-NULL and in order (createBetween: ``a BETWEEN 10 AND 0`` is refused, NOT BETWEEN is
  not checked);
- a decimal literal must fit a Java long; a floating literal must be finite and at least
  Double.MIN_VALUE (ConstantExpression.createFloat compares with Double.MIN_VALUE, the
  smallest *positive* double, so RocketMQ refuses ``0.0`` and ``0e5``; write ``0``).
One deliberate difference: RocketMQ's JmsSelector() does not require the end of input
after the expression, so it silently ignores trailing tokens (``a = 1 b = 2`` filters on
``a = 1``; ``a NOT = 1`` on ``a``). A typo there changes what a consumer receives without
a word, so we refuse anything after a complete expression.

Limits (``FilterLimits``): text length, nesting of parentheses / NOT / signs and height of
the tree, IN list length; each is a ``FilterParseError`` naming the position. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from broker.filter.java import (
    DOUBLE_MAX_VALUE,
    DOUBLE_MIN_VALUE,
    LONG_MAX,
    JavaType,
    comparator,
    integer_type,
)
from broker.filter.lexer import Kind, Token, tokenize
from broker.filter.syntax import (
    BOOLEAN_NODES,
    DEFAULT_LIMITS,
    And,
    Between,
    BoolLiteral,
    Compare,
    CompareOp,
    Expr,
    FilterLimits,
    FilterParseError,
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
    to_text,
)

_RELATIONAL = {Kind.GT: CompareOp.GT, Kind.GE: CompareOp.GE, Kind.LT: CompareOp.LT}
_RELATIONAL[Kind.LE] = CompareOp.LE
_MATCHES = {Kind.CONTAINS: MatchOp.CONTAINS, Kind.STARTSWITH: MatchOp.STARTSWITH}
_MATCHES[Kind.ENDSWITH] = MatchOp.ENDSWITH
#: What may follow NOT inside a comparison (the grammar's LOOKAHEAD(2) alternatives).
_AFTER_NOT = frozenset({*_MATCHES, Kind.BETWEEN, Kind.IN})
_LITERALS = (IntLiteral, FloatLiteral, StringLiteral, BoolLiteral, NullLiteral)

#: A parsed node and its height (levels under and including it).
_Parsed = tuple[Expr, int]
_Rule = Callable[[], _Parsed]


def parse(text: str, limits: FilterLimits = DEFAULT_LIMITS) -> Expr:
    """The tree of one SQL92 filter expression; raises ``FilterParseError``."""
    if len(text) > limits.max_chars:
        raise FilterParseError(
            f"expression longer than {limits.max_chars} characters", text, limits.max_chars
        )
    return _Parser(text, tokenize(text), limits).selector()


class _Parser:
    """One parse: tokens in, a tree out. Each grammar method returns (node, height)."""

    def __init__(self, text: str, tokens: list[Token], limits: FilterLimits) -> None:
        self._text = text
        self._tokens = tokens
        self._index = 0
        self._limits = limits
        self._nesting = 0

    # --- tokens -----------------------------------------------------------------------

    def _peek(self, ahead: int = 0) -> Token:
        return self._tokens[min(self._index + ahead, len(self._tokens) - 1)]

    def _take(self) -> Token:
        token = self._tokens[self._index]
        self._index = min(self._index + 1, len(self._tokens) - 1)
        return token

    def _expect(self, kind: Kind, what: str) -> Token:
        if self._peek().kind is not kind:
            self._fail_expected(what)
        return self._take()

    def _fail_expected(self, what: str) -> NoReturn:
        token = self._peek()
        found = "end of input" if token.kind is Kind.EOF else repr(token.text)
        raise FilterParseError(f"expected {what}, found {found}", self._text, token.position)

    def _error(self, detail: str, position: int) -> FilterParseError:
        return FilterParseError(detail, self._text, position)

    def _check_height(self, parsed: _Parsed, position: int) -> _Parsed:
        if parsed[1] > self._limits.max_depth:
            raise self._error(f"expression nested deeper than {self._limits.max_depth}", position)
        return parsed

    # --- grammar ----------------------------------------------------------------------

    def selector(self) -> Expr:
        start = self._peek().position
        node, _ = self._or()
        if self._peek().kind is not Kind.EOF:
            self._fail_expected("AND, OR or the end of the expression")
        return self._as_boolean(node, start)

    def _or(self) -> _Parsed:
        return self._chain(Kind.OR, self._and, Or)

    def _and(self) -> _Parsed:
        return self._chain(Kind.AND, self._equality, And)

    def _chain(self, kind: Kind, operand: _Rule, node: type[And] | type[Or]) -> _Parsed:
        start = self._peek().position
        first = operand()
        if self._peek().kind is not kind:
            return first
        operands, heights = [self._as_boolean(first[0], start)], [first[1]]
        while self._peek().kind is kind:
            self._take()
            start = self._peek().position
            item, item_height = operand()
            operands.append(self._as_boolean(item, start))
            heights.append(item_height)
        return self._check_height((node(operands=tuple(operands)), 1 + max(heights)), start)

    def _equality(self) -> _Parsed:
        left = self._comparison()
        while True:
            token = self._peek()
            if token.kind in (Kind.EQ, Kind.NE):
                self._take()
                right = self._comparison()
                op = CompareOp.EQ if token.kind is Kind.EQ else CompareOp.NE
                self._check_equal_operands(left[0], right[0], token)
                node: Expr = Compare(op=op, left=left[0], right=right[0])
                left = self._check_height((node, 1 + max(left[1], right[1])), token.position)
            elif token.kind is Kind.IS:
                self._take()
                negated = self._peek().kind is Kind.NOT
                if negated:
                    self._take()
                self._expect(Kind.NULL, "NULL or NOT NULL after IS")
                node = IsNull(operand=left[0], negated=negated)
                left = self._check_height((node, 1 + left[1]), token.position)
            else:
                return left

    def _comparison(self) -> _Parsed:
        left = self._unary()
        while True:
            token = self._peek()
            negated = token.kind is Kind.NOT and self._peek(1).kind in _AFTER_NOT
            if negated:
                self._take()
            op = self._peek()
            kind = op.kind
            if kind in _RELATIONAL:
                self._take()
                right = self._unary()
                self._check_relational(left[0], op)
                self._check_relational(right[0], op)
                node: Expr = Compare(op=_RELATIONAL[kind], left=left[0], right=right[0])
                left = (node, 1 + max(left[1], right[1]))
            elif kind in _MATCHES:
                self._take()
                pattern = _unquote(self._expect(Kind.STRING, "a quoted string").text)
                node = Match(op=_MATCHES[kind], operand=left[0], pattern=pattern, negated=negated)
                left = (node, 1 + left[1])
            elif kind is Kind.BETWEEN:
                left = self._between(left, op, negated)
            elif kind is Kind.IN:
                node = self._in(left[0], op, negated)
                left = (node, 1 + left[1])
            else:
                return left
            left = self._check_height(left, token.position)

    def _between(self, operand: _Parsed, token: Token, negated: bool) -> _Parsed:
        self._take()
        low = self._unary()
        self._expect(Kind.AND, "AND in BETWEEN ... AND ...")
        high = self._unary()
        if not negated:
            self._check_between_bounds(low[0], high[0], token)
        for node in (operand[0], low[0], high[0]):
            self._check_relational(node, token)
        node = Between(operand=operand[0], low=low[0], high=high[0], negated=negated)
        return node, 1 + max(operand[1], low[1], high[1])

    def _in(self, operand: Expr, token: Token, negated: bool) -> In:
        self._take()
        self._expect(Kind.LPAREN, "'(' after IN")
        values = [_unquote(self._expect(Kind.STRING, "a quoted string").text)]
        while self._peek().kind is Kind.COMMA:
            comma = self._take()
            if len(values) == self._limits.max_in_values:
                raise self._error(
                    f"IN list longer than {self._limits.max_in_values} values", comma.position
                )
            values.append(_unquote(self._expect(Kind.STRING, "a quoted string").text))
        self._expect(Kind.RPAREN, "',' or ')' in the IN list")
        if not isinstance(operand, Property):
            # createInFilter: "Expected a property for In expression".
            raise self._error(
                f"IN needs a property on its left, not {to_text(operand)}", token.position
            )
        return In(operand=operand, values=tuple(values), negated=negated)

    def _unary(self) -> _Parsed:
        token = self._peek()
        if token.kind not in (Kind.PLUS, Kind.MINUS, Kind.NOT):
            return self._primary()
        self._take()
        self._enter(token)
        start = self._peek().position
        operand, operand_height = self._unary()
        self._nesting -= 1
        if token.kind is Kind.PLUS:
            return operand, operand_height  # "+" x is x (SelectorParser.unaryExpr)
        if token.kind is Kind.MINUS:
            node: Expr = Negate(operand=operand)
        else:
            node = Not(operand=self._as_boolean(operand, start))
        return self._check_height((node, 1 + operand_height), token.position)

    def _primary(self) -> _Parsed:
        token = self._peek()
        if token.kind is Kind.LPAREN:
            self._take()
            self._enter(token)
            inner = self._or()
            self._expect(Kind.RPAREN, "')'")
            self._nesting -= 1
            return inner
        if token.kind is Kind.ID:
            self._take()
            return Property(name=token.text), 1
        literal = self._literal(token)
        if literal is None:
            self._fail_expected("a property, a literal, '(', NOT or a sign")
        self._take()
        return literal, 1

    def _enter(self, token: Token) -> None:
        self._nesting += 1
        if self._nesting > self._limits.max_depth:
            raise self._error(
                f"expression nested deeper than {self._limits.max_depth}", token.position
            )

    def _literal(self, token: Token) -> Expr | None:
        match token.kind:
            case Kind.STRING:
                return StringLiteral(value=_unquote(token.text))
            case Kind.INT:
                digits = token.text.rstrip("lL")
                if len(digits) > 19 or int(digits) > LONG_MAX:  # new Long(text) throws
                    raise self._error(f"{token.text} does not fit a long", token.position)
                return IntLiteral(value=int(digits))
            case Kind.FLOAT:
                number = float(token.text)
                # ConstantExpression.createFloat: refused above Double.MAX_VALUE and below
                # Double.MIN_VALUE (the smallest positive double, so zero too).
                if number > DOUBLE_MAX_VALUE or number < DOUBLE_MIN_VALUE:
                    raise self._error(
                        f"{token.text} is out of range: RocketMQ takes floating literals from "
                        f"{DOUBLE_MIN_VALUE} to {DOUBLE_MAX_VALUE} (write 0 for zero)",
                        token.position,
                    )
                return FloatLiteral(value=number)
            case Kind.TRUE | Kind.FALSE:
                return BoolLiteral(value=token.kind is Kind.TRUE)
            case Kind.NULL:
                return NullLiteral()
            case _:
                return None

    # --- RocketMQ's construction-time checks ------------------------------------------

    def _as_boolean(self, node: Expr, position: int) -> Expr:
        # SelectorParser.asBooleanExpression: BooleanExpressions pass, a property is cast
        # (UnaryExpression.createBooleanCast, done by the evaluator), the rest is refused.
        if isinstance(node, (*BOOLEAN_NODES, Property)):
            return node
        raise self._error(f"{to_text(node)} is not a boolean expression", position)

    def _check_relational(self, node: Expr, token: Token) -> None:
        # checkLessThanOperand: only numbers among literals, no boolean expressions.
        if isinstance(node, (IntLiteral, FloatLiteral)):
            return
        if isinstance(node, (*_LITERALS, *BOOLEAN_NODES)):
            detail = f"{to_text(node)} cannot be compared with {token.text}"
            if isinstance(node, Not):
                detail += " (NOT binds tighter than a comparison: write NOT (x > y))"
            raise self._error(detail, token.position)

    def _check_equal_operands(self, left: Expr, right: Expr, token: Token) -> None:
        # checkEqualOperand: no NULL literal; checkEqualOperandCompatability: a boolean
        # literal on the left of another kind of literal.
        if isinstance(left, NullLiteral) or isinstance(right, NullLiteral):
            raise self._error(
                f"NULL cannot be compared with {token.text}; use IS NULL", token.position
            )
        if isinstance(left, BoolLiteral) and isinstance(
            right, (IntLiteral, FloatLiteral, StringLiteral)
        ):
            raise self._error(
                f"{to_text(left)} cannot be compared with {to_text(right)}", token.position
            )

    def _check_between_bounds(self, low: Expr, high: Expr, token: Token) -> None:
        # createBetween checks two literal bounds (a negative number is Negate, not a
        # literal, so it is not checked). Non-numeric literals are refused just after by
        # checkLessThanOperand, whichever check RocketMQ trips first.
        if not (isinstance(low, _LITERALS) and isinstance(high, _LITERALS)):
            return
        if isinstance(low, NullLiteral) or isinstance(high, NullLiteral):
            raise self._error("the bounds of BETWEEN cannot be NULL", token.position)
        if isinstance(low, (IntLiteral, FloatLiteral)) and isinstance(
            high, (IntLiteral, FloatLiteral)
        ):
            low_type, high_type = _number_type(low), _number_type(high)
            if comparator(high_type, low_type, relational=True)(high.value, low.value) < 0:
                raise self._error(
                    f"BETWEEN {to_text(low)} AND {to_text(high)}: the low bound must not "
                    "exceed the high bound",
                    token.position,
                )


def _number_type(node: IntLiteral | FloatLiteral) -> JavaType:
    return integer_type(node.value) if isinstance(node, IntLiteral) else JavaType.DOUBLE


def _unquote(text: str) -> str:
    """The value of a STRING token (SelectorParser.stringLitteral)."""
    return text[1:-1].replace("''", "'")
