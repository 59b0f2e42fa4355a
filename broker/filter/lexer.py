"""Tokens of RocketMQ's SQL92 filter grammar (the TOKEN sections of SelectorParser.jj).

Rules, each RocketMQ's (filter/.../parser/SelectorParser.jj and the generated
SelectorParserTokenManager.java):
- Whitespace is `` \\t\\n\\r\\f`` only; any other character outside a string or comment
  (``!``, ``*``, a non-breaking space, a letter outside ASCII) is a lexical error.
- ``-- text`` is a comment only when a line end follows (the token needs its ``\\n`` /
  ``\\r``); at the very end of the text ``--`` is two minus signs, as JavaCC's longest
  match makes it. ``/* ... */`` is a comment; an unclosed one is an error.
- Keywords (NOT AND OR BETWEEN IN TRUE FALSE NULL IS CONTAINS STARTSWITH ENDSWITH) are
  case-insensitive and reserved; identifiers are ``[A-Za-z_$][A-Za-z0-9_$]*``, so ``notx``
  is an identifier and ``now`` is just a property name.
- Numbers: DECIMAL_LITERAL is ``0`` or ``[1-9][0-9]*`` with an optional ``l``/``L`` (so
  ``007`` is three tokens and ``0L`` is ``0`` then the identifier ``L``); no hex, no octal
  (RocketMQ removed ActiveMQ's). FLOATING_POINT_LITERAL is ``5.``, ``5.5``, ``.5`` or
  ``5E10`` forms with an optional exponent. The longer of the two matches wins.
- Strings are ``'...'`` with ``''`` for a quote, and may span lines.
- The whole text is tokenised up front (it is at most ``FilterLimits.max_chars`` long).
- Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import re

import attrs

from broker.filter.syntax import FilterParseError


class Kind(enum.Enum):
    """What a token is; keywords and punctuation are valued by their spelling."""

    ID = "identifier"
    INT = "integer"
    FLOAT = "number"
    STRING = "string"
    EOF = "end of input"
    NOT = "NOT"
    AND = "AND"
    OR = "OR"
    BETWEEN = "BETWEEN"
    IN = "IN"
    TRUE = "TRUE"
    FALSE = "FALSE"
    NULL = "NULL"
    IS = "IS"
    CONTAINS = "CONTAINS"
    STARTSWITH = "STARTSWITH"
    ENDSWITH = "ENDSWITH"
    EQ = "="
    NE = "<>"
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    PLUS = "+"
    MINUS = "-"


KEYWORDS = {
    kind.value: kind
    for kind in (
        Kind.NOT,
        Kind.AND,
        Kind.OR,
        Kind.BETWEEN,
        Kind.IN,
        Kind.TRUE,
        Kind.FALSE,
        Kind.NULL,
        Kind.IS,
        Kind.CONTAINS,
        Kind.STARTSWITH,
        Kind.ENDSWITH,
    )
}
#: Punctuation, two-character spellings first.
_PUNCTUATION: tuple[Kind, ...] = (Kind.NE, Kind.GE, Kind.LE, Kind.EQ, Kind.GT, Kind.LT)
_PUNCTUATION += (Kind.LPAREN, Kind.RPAREN, Kind.COMMA, Kind.PLUS, Kind.MINUS)

_WHITESPACE = re.compile(r"[ \t\n\r\f]+")
_LINE_COMMENT = re.compile(r"--[^\n\r]*(?:\r\n|\n|\r)")
_BLOCK_COMMENT = re.compile(r"/\*[^*]*\*+(?:[^/*][^*]*\*+)*/")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_DECIMAL = re.compile(r"0|[1-9][0-9]*[lL]?")
_EXPONENT = r"[eE][+-]?[0-9]+"
_FLOAT = re.compile(rf"[0-9]+\.[0-9]*(?:{_EXPONENT})?|\.[0-9]+(?:{_EXPONENT})?|[0-9]+{_EXPONENT}")
_STRING = re.compile(r"'(?:''|[^'])*'")


@attrs.frozen(kw_only=True)
class Token:
    """One token: its kind, its text as written, and its 0-based offset."""

    kind: Kind
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    """All tokens of ``text``, ending with one EOF token; raises ``FilterParseError``."""
    tokens: list[Token] = []
    pos = 0
    end = len(text)
    while True:
        pos = _skip_blanks(text, pos)
        if pos >= end:
            tokens.append(Token(kind=Kind.EOF, text="", position=end))
            return tokens
        token = _next_token(text, pos)
        tokens.append(token)
        pos += len(token.text)


def _skip_blanks(text: str, pos: int) -> int:
    while True:
        match = (
            _WHITESPACE.match(text, pos)
            or _LINE_COMMENT.match(text, pos)
            or _BLOCK_COMMENT.match(text, pos)
        )
        if match is None:
            return pos
        pos = match.end()


def _next_token(text: str, pos: int) -> Token:
    char = text[pos]
    if char == "'":
        string = _STRING.match(text, pos)
        if string is None:
            raise FilterParseError("unterminated string literal", text, pos)
        return Token(kind=Kind.STRING, text=string.group(), position=pos)
    if char.isascii() and (char.isdigit() or char == "."):
        return _number(text, pos)
    word = _IDENTIFIER.match(text, pos)
    if word is not None:
        kind = KEYWORDS.get(word.group().upper(), Kind.ID)
        return Token(kind=kind, text=word.group(), position=pos)
    for kind in _PUNCTUATION:
        if text.startswith(kind.value, pos):
            return Token(kind=kind, text=kind.value, position=pos)
    if text.startswith("/*", pos):
        raise FilterParseError("unterminated comment", text, pos)
    raise FilterParseError(f"unexpected character {char!r}", text, pos)


def _number(text: str, pos: int) -> Token:
    decimal = _DECIMAL.match(text, pos)
    floating = _FLOAT.match(text, pos)
    decimal_len = 0 if decimal is None else decimal.end() - pos
    floating_len = 0 if floating is None else floating.end() - pos
    if floating is not None and floating_len > decimal_len:
        return Token(kind=Kind.FLOAT, text=floating.group(), position=pos)
    if decimal is not None:
        return Token(kind=Kind.INT, text=decimal.group(), position=pos)
    raise FilterParseError("unexpected character '.'", text, pos)
