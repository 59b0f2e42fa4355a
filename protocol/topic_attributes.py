"""Topic attributes (RocketMQ 5): ``+key=value,-key`` on UPDATE_AND_CREATE_TOPIC.

Rules (apache/rocketmq AttributeParser, TopicAttributes, TopicMessageType):
- The ``attributes`` header lists changes separated by commas: ``+key=value`` sets a key,
  ``-key`` removes it. A key twice, a malformed entry or an unknown key is refused.
- ``message.type`` is the one key served here: NORMAL, FIFO, DELAY, TRANSACTION or MIXED
  (any); a topic without it is NORMAL, as in RocketMQ 5. The proxy accepts only messages
  of the topic's type (MESSAGE_PROPERTY_CONFLICT_WITH_TYPE otherwise).
- Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

MESSAGE_TYPE = "message.type"
MESSAGE_TYPES = frozenset({"NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED"})
DEFAULT_MESSAGE_TYPE = "NORMAL"
#: Longest ``attributes`` header taken (a handful of keys).
MAX_ATTRIBUTES_CHARS = 4096


class AttributeError_(ValueError):
    """An ``attributes`` header that cannot be applied (the message says why)."""


def parse_changes(text: str | None) -> tuple[dict[str, str], frozenset[str]]:
    """(keys to set, keys to remove) of an ``attributes`` header."""
    if not text:
        return {}, frozenset()
    if len(text) > MAX_ATTRIBUTES_CHARS:
        raise AttributeError_(f"attributes of {len(text)} characters (max {MAX_ATTRIBUTES_CHARS})")
    sets: dict[str, str] = {}
    removes: set[str] = set()
    for entry in text.split(","):
        if entry.startswith("+") and "=" in entry:
            key, _, value = entry[1:].partition("=")
            if not key or key in sets or key in removes:
                raise AttributeError_(f"attribute entry {entry[:80]!r} is empty or repeated")
            sets[key] = value
        elif entry.startswith("-") and len(entry) > 1 and "=" not in entry:
            key = entry[1:]
            if key in sets or key in removes:
                raise AttributeError_(f"attribute {key[:80]!r} is repeated")
            removes.add(key)
        else:
            raise AttributeError_(f"attribute entry {entry[:80]!r} is not +key=value or -key")
    for key in (*sets, *removes):
        if key != MESSAGE_TYPE:
            raise AttributeError_(f"unsupported attribute key {key[:80]!r}")
    kind = sets.get(MESSAGE_TYPE)
    if kind is not None and kind not in MESSAGE_TYPES:
        raise AttributeError_(
            f"message.type {kind[:40]!r} is not one of {', '.join(sorted(MESSAGE_TYPES))}"
        )
    return sets, frozenset(removes)


def apply_changes(current: Mapping[str, str], text: str | None) -> dict[str, str]:
    """``current`` with an ``attributes`` header applied."""
    sets, removes = parse_changes(text)
    out = {k: v for k, v in current.items() if k not in removes}
    out.update(sets)
    return out


def message_type(attributes: Mapping[str, str]) -> str:
    return attributes.get(MESSAGE_TYPE, DEFAULT_MESSAGE_TYPE)
