"""RocketMQ's SQL92 message filter: a pure parser and evaluator (no I/O, no clock).

The broker compiles a subscription's expression once and asks each message:

    selector = compile_filter("a > 5 AND b IN ('x', 'y')")   # FilterParseError if bad
    selector.matches(record.properties)                       # True: deliver it

Files:
- ``syntax.py``: the tree (frozen nodes), ``FilterLimits``, ``FilterParseError``, the
  printer ``to_text``;
- ``lexer.py``: tokens, as SelectorParser.jj's token rules;
- ``sql92.py``: the parser, with RocketMQ's construction-time checks;
- ``java.py``: Java's parsing and comparison rules (Integer.valueOf, Double.valueOf,
  ComparisonExpression.__compare);
- ``evaluate.py``: the tree compiled to closures, ``Sql92Filter`` and ``compile_filter``.
"""

from broker.filter.evaluate import Sql92Filter, compile_filter
from broker.filter.java import FilterEvaluationError
from broker.filter.sql92 import parse
from broker.filter.syntax import DEFAULT_LIMITS, FilterLimits, FilterParseError, to_text

__all__ = [
    "DEFAULT_LIMITS",
    "FilterEvaluationError",
    "FilterLimits",
    "FilterParseError",
    "Sql92Filter",
    "compile_filter",
    "parse",
    "to_text",
]
