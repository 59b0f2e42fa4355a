"""SQL92 subscriptions on the broker: compile once, match stored records by their properties.

Rules (ExpressionMessageFilter, ConsumerFilterManager, ClientManageProcessor.checkClientConfig):
- A subscription whose expressionType is not TAG is served only with
  ``enablePropertyFilter`` (on by default); otherwise it is refused with RocketMQ's remark
  "The broker does not support consumer to filter message by SQL92".
- A bad expression is SUBSCRIPTION_PARSE_FAILED with the parser's message.
- A record matches when the expression is True for its properties (TAGS, KEYS and the
  user's properties, as Java's MessageEvaluationContext sees them); a record that cannot be
  decoded does not match.
- Compiled filters are cached by expression text, at most ``max_entries`` (oldest out), so
  every pull of a subscription shares one compilation and hostile clients cannot grow it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from broker.filter import FilterParseError, Sql92Filter, compile_filter
from protocol.bodies import EXPRESSION_SQL92, EXPRESSION_TAG
from protocol.codes import ResponseCode
from protocol.errors import MalformedRecord, ServerError, SystemError_
from protocol.message import decode_record

#: ``record_filter(raw_record) -> bool``: what the store's filtered read asks of each record.
RecordFilter = Callable[[bytes], bool]


class FilterCache:
    """Compiled SQL92 expressions by text (bounded, least recently used out)."""

    def __init__(self, *, max_entries: int = 1024) -> None:
        assert max_entries > 0
        self.max_entries = max_entries
        self._filters: OrderedDict[str, Sql92Filter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._filters)

    def compile(
        self, expression_type: str | None, expression: str, *, enabled: bool
    ) -> Sql92Filter:
        """The compiled filter of a non-TAG subscription; ServerError when refused."""
        kind = (expression_type or EXPRESSION_TAG).upper()
        assert kind != EXPRESSION_TAG
        if not enabled or kind != EXPRESSION_SQL92:
            raise SystemError_(
                f"The broker does not support consumer to filter message by {expression_type}"
            )
        cached = self._filters.get(expression)
        if cached is not None:
            self._filters.move_to_end(expression)
            return cached
        try:
            compiled = compile_filter(expression)
        except FilterParseError as exc:
            raise ServerError(
                f"parse the consumer's subscription[{expression}] failed: {exc}",
                code=ResponseCode.SUBSCRIPTION_PARSE_FAILED,
            ) from None
        self._filters[expression] = compiled
        if len(self._filters) > self.max_entries:
            self._filters.popitem(last=False)
        return compiled


def record_filter(selector: Sql92Filter) -> RecordFilter:
    """``raw record -> matches`` for the store's filtered read."""

    def matches(raw: bytes) -> bool:
        try:
            record, _ = decode_record(raw, check_crc=False)
        except MalformedRecord:
            return False
        return selector.matches(record.properties)

    return matches
