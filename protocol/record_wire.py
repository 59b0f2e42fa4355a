"""Records built from what a producer sent: its properties string carried as it came.

Rules (reference/rocketmq-wire.md §2.3 and §3.1):
- Today's send path parses the client's properties string into a dict
  (``properties_from_string``), adds UNIQ_KEY when missing and CLUSTER, and encodes it
  again for the record. When the string is *canonical* (exactly what
  ``properties_to_string`` writes for the pairs it holds: every pair ``key 0x01 value
  0x02`` with both non-empty and no separator inside, each key once) that round trip gives
  the string back, so it can be stored as it came, with the broker's pairs appended: the
  record's bytes are the same (tests/unit/test_record_wire.py proves it with Hypothesis).
- Anything else (empty pairs, duplicate keys, a missing last separator, a CLUSTER the
  broker would overwrite) returns None here, and the caller takes the dict path, which
  stays the definition.
- Lookups scan the string; none builds a dict. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from protocol.message import (
    NAME_VALUE_SEPARATOR,
    PROPERTY_CLUSTER,
    PROPERTY_SEPARATOR,
    PROPERTY_UNIQ_KEY,
    encode_record_fields,
    properties_from_string,
)
from protocol.speedups import record_properties as _c_record_properties
from protocol.speedups import split_properties

# Every pair well formed and the string ends with a separator (or is empty).
_CANONICAL = re.compile(r"(?:[^\x01\x02]+\x01[^\x01\x02]+\x02)*")


def properties_are_canonical(text: str) -> bool:
    """True when ``properties_to_string(properties_from_string(text)) == text``."""
    if _CANONICAL.fullmatch(text) is None:
        return False
    # Well formed: split on both separators, it is key, value, key, value, ..., "".
    keys = text.replace(PROPERTY_SEPARATOR, NAME_VALUE_SEPARATOR).split(NAME_VALUE_SEPARATOR)[
        0:-1:2
    ]
    return len(set(keys)) == len(keys)


def find_property(text: str, key: str) -> str | None:
    """``properties_from_string(text).get(key)`` for any text, without building the dict.

    The last pair with this key and a non-empty value wins, as in the parser: a pair is
    a piece between 0x02 separators whose text before its first 0x01 is ``key``.
    """
    if not key or NAME_VALUE_SEPARATOR in key or PROPERTY_SEPARATOR in key:
        return None  # the parser never yields such a key
    needle = key + NAME_VALUE_SEPARATOR
    end = len(text)
    while (pos := text.rfind(needle, 0, end)) >= 0:
        if pos == 0 or text[pos - 1] == PROPERTY_SEPARATOR:
            stop = text.find(PROPERTY_SEPARATOR, pos)
            value = text[pos + len(needle) : stop if stop >= 0 else len(text)]
            if value:
                return value
        end = pos + len(needle) - 1
    return None


def append_property(text: str, key: str, value: str) -> str:
    """``text`` (canonical, without ``key``) with the pair appended, as the dict path would.

    An empty value appends nothing (``properties_to_string`` skips it).

    Raises:
        ValueError: ``key`` is empty, or ``key`` or ``value`` holds 0x01 or 0x02.
    """
    if not value:
        return text
    if not key:
        raise ValueError(f"property with an empty key (value {value!r})")
    pair = key + value
    if NAME_VALUE_SEPARATOR in pair or PROPERTY_SEPARATOR in pair:
        raise ValueError(f"property {key!r}: keys and values may not contain 0x01 or 0x02")
    return f"{text}{key}{NAME_VALUE_SEPARATOR}{value}{PROPERTY_SEPARATOR}"


def record_properties_from_wire(
    text: str, *, cluster: str, new_uniq_key: Callable[[], str]
) -> str | None:
    """The record's properties string for a producer's ``text``, or None for the dict path.

    Equal to ``properties_to_string`` of the dict path's result: UNIQ_KEY appended when
    missing (``new_uniq_key`` is called only then), CLUSTER appended when missing. None
    when ``text`` is not canonical or names another cluster (the dict path overwrites
    it in place). Delayed or retried messages rewrite more pairs: callers check those
    (``find_property``) before taking this path.

    Raises:
        ValueError: the appended UNIQ_KEY or cluster name holds 0x01 or 0x02.
    """
    if not properties_are_canonical(text):
        return None
    stated_cluster = find_property(text, PROPERTY_CLUSTER)
    if stated_cluster is not None and stated_cluster != cluster:
        return None
    if find_property(text, PROPERTY_UNIQ_KEY) is None:
        text = append_property(text, PROPERTY_UNIQ_KEY, new_uniq_key())
    if stated_cluster is None:
        text = append_property(text, PROPERTY_CLUSTER, cluster)
    return text


def split_canonical(text: str) -> dict[str, str] | None:
    """``properties_from_string(text)`` when ``text`` is canonical, else None: one parse
    serves as the check."""
    pairs = properties_from_string(text)
    count = len(pairs)
    # Canonical: every 0x02-ended piece kept as a pair (pieces == pairs), each with exactly
    # one 0x01 (separators == pairs), and no duplicate key (the dict kept them all).
    if (
        text.count(PROPERTY_SEPARATOR) != count
        or text.count(NAME_VALUE_SEPARATOR) != count
        or (text and text[-1] != PROPERTY_SEPARATOR)
    ):
        return None
    return pairs


#: ``split_canonical``, compiled where it is built (protocol/_speedups.c).
_split = split_properties or split_canonical


def record_properties_parsed(
    text: str, *, cluster: str, new_uniq_key: Callable[[], str]
) -> tuple[str, dict[str, str]] | None:
    """``record_properties_from_wire`` for the send path, with the pairs as a dict.

    Returns the record's properties string and ``properties_from_string`` of it (UNIQ_KEY
    and CLUSTER included), or None when ``text`` is not canonical or names another
    cluster. One parse serves both the canonical check and every later look-up (TAGS,
    KEYS, WAIT, UNIQ_KEY): cheaper than the regex and a scan per look-up.

    Raises:
        ValueError: the appended UNIQ_KEY or cluster name holds 0x01 or 0x02.
    """
    pairs = canonical_pairs(text, cluster=cluster)
    if pairs is None:
        return None
    return completed_properties(text, pairs, cluster=cluster, new_uniq_key=new_uniq_key)


def record_properties_encoded(
    text: str, *, cluster: str, new_uniq_key: Callable[[], str]
) -> tuple[bytes, dict[str, str]] | None:
    """``record_properties_parsed`` with the string as the record stores it: (its UTF-8,
    the pairs), or None. The single send's path.

    Raises:
        ValueError: as ``record_properties_parsed``; UnicodeEncodeError for a lone
            surrogate in the text (its ``encode()``).
    """
    if _c_record_properties is not None:
        # The code below, compiled (protocol/_speedups_records.c). Its None also covers what
        # the code below refuses (it then draws the UNIQ_KEY, and words the error, itself).
        compiled = _c_record_properties(text, cluster, new_uniq_key)
        if compiled is not None:
            return compiled
    wire = record_properties_parsed(text, cluster=cluster, new_uniq_key=new_uniq_key)
    if wire is None:
        return None
    stored, pairs = wire
    return stored.encode(), pairs


def canonical_pairs(text: str, *, cluster: str) -> dict[str, str] | None:
    """The first half of ``record_properties_parsed``: ``text``'s pairs, or None when it
    is not canonical or names another cluster. Draws no UNIQ_KEY (a batch checks all its
    messages before any is drawn)."""
    pairs = _split(text)
    if pairs is None:
        return None
    stated_cluster = pairs.get(PROPERTY_CLUSTER)
    if stated_cluster is not None and stated_cluster != cluster:
        return None
    return pairs


def completed_properties(
    text: str, pairs: dict[str, str], *, cluster: str, new_uniq_key: Callable[[], str]
) -> tuple[str, dict[str, str]]:
    """The second half of ``record_properties_parsed``: ``text`` and its ``pairs`` (from
    ``canonical_pairs``) with UNIQ_KEY and CLUSTER appended when missing.

    Raises:
        ValueError: the appended UNIQ_KEY or cluster name holds 0x01 or 0x02.
    """
    if PROPERTY_UNIQ_KEY not in pairs:
        uniq = new_uniq_key()
        text = append_property(text, PROPERTY_UNIQ_KEY, uniq)
        if uniq:
            pairs[PROPERTY_UNIQ_KEY] = uniq
    if PROPERTY_CLUSTER not in pairs:
        text = append_property(text, PROPERTY_CLUSTER, cluster)
        if cluster:
            pairs[PROPERTY_CLUSTER] = cluster
    return text, pairs


def encode_record_from_wire(
    *,
    topic: str,
    body: bytes,
    queue_id: int,
    born_timestamp_ms: int,
    born_host: tuple[str, int],
    store_host: tuple[str, int],
    properties: str,
    flag: int = 0,
    sys_flag: int = 0,
    reconsume_times: int = 0,
) -> bytes:
    """The CommitLog bytes of a new message whose properties string is ``properties``
    (from ``record_properties_from_wire``), stored as it is.

    Offsets and the store timestamp are 0, as the put path expects them (it patches
    them in). Equal to ``encode_record`` of the MessageRecord the dict path builds.

    Raises:
        ValueError: as ``encode_record`` (the string must also encode as UTF-8).
    """
    return encode_record_fields(
        topic=topic,
        body=body,
        queue_id=queue_id,
        flag=flag,
        sys_flag=sys_flag,
        born_timestamp_ms=born_timestamp_ms,
        born_host=born_host,
        store_timestamp_ms=0,
        store_host=store_host,
        reconsume_times=reconsume_times,
        properties=properties.encode(),
    )
