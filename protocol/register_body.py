"""REGISTER_BROKER bodies decoded in bounded steps, within limits checked up front.

Rules (body forms: reference/rocketmq-wire.md §2.16; ``RegisterBrokerBody`` in route.py):
- ``decode_steps`` is a ``Steps`` generator (protocol/steps.py): it inflates at most
  ``INFLATE_STEP_BYTES`` and decodes at most ``STEP_ITEMS`` topic configs between two
  yields, so a NameServer can answer route lookups while a broker's 150,000 topics are
  being read (issue 13 row 10: each such registration used to stall every lookup 1.1-1.6 s).
- ``decode_summary_steps`` keeps of each topic only what a NameServer needs, as a tuple
  of atomic values (``TopicQueues``): 150,000 ``TopicConfig`` objects alive at once made
  every full pass of Python's cyclic GC take ~100 ms, a stall of its own; tuples of ints
  and strings are not tracked by the GC. Each ``TopicConfig`` is still built (and dropped
  at once), so both decoders apply exactly the same checks.
- Limits are checked before the work they bound: the JSON form's size before it is
  parsed (``json.loads`` is one C call, so its size is the bound on that stall), the
  inflated size while inflating, the topic count before any topic is decoded. Exceeding
  one raises ``LimitExceeded`` naming the limit; bad bytes raise ``MalformedBody``.
- Pure.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from protocol.errors import LimitExceeded, MalformedBody
from protocol.jsonbody import as_object, field, load_json_body, str_list
from protocol.route import DataVersion, RegisterBrokerBody, TopicConfig
from protocol.steps import STEP_ITEMS, Steps, finish

#: Default cap on the inflated size of a compressed body (zip-bomb guard).
MAX_INFLATED_BYTES = 64 * 1024 * 1024
#: Inflated bytes per step.
INFLATE_STEP_BYTES = 1024 * 1024

_WHAT = "RegisterBrokerBody"

#: A topic as a NameServer keeps it: name, read and write queue nums, perm, topic sys flag.
TopicQueues = tuple[str, int, int, int, int]

_Kept = TypeVar("_Kept")
#: What a decoder keeps of each topic config.
_Keep = Callable[[TopicConfig], _Kept]


def topic_queues(config: TopicConfig) -> TopicQueues:
    """The ``TopicQueues`` of a topic config."""
    return (
        config.topic_name,
        config.read_queue_nums,
        config.write_queue_nums,
        config.perm,
        config.topic_sys_flag,
    )


@attrs.frozen(kw_only=True)
class RegisterSummary:
    """What a NameServer keeps of a REGISTER_BROKER body (see the module rules)."""

    data_version: DataVersion
    topic_queues: dict[str, TopicQueues]
    filter_server_list: list[str]


def _keep_config(config: TopicConfig) -> TopicConfig:
    return config


def decode_steps(
    body: bytes,
    compressed: bool,
    *,
    max_topics: int | None = None,
    max_inflated_bytes: int = MAX_INFLATED_BYTES,
    max_json_bytes: int | None = None,
) -> Steps[RegisterBrokerBody]:
    """Decode either body form in steps; ``compressed`` is the request header's flag."""
    version, table, filters = yield from _decode(
        body, compressed, _keep_config, max_topics, max_inflated_bytes, max_json_bytes
    )
    return RegisterBrokerBody(
        topic_config_table=table, data_version=version, filter_server_list=filters
    )


def decode_summary_steps(
    body: bytes,
    compressed: bool,
    *,
    max_topics: int | None = None,
    max_inflated_bytes: int = MAX_INFLATED_BYTES,
    max_json_bytes: int | None = None,
) -> Steps[RegisterSummary]:
    """``decode_steps``, keeping only each topic's ``TopicQueues``."""
    version, table, filters = yield from _decode(
        body, compressed, topic_queues, max_topics, max_inflated_bytes, max_json_bytes
    )
    return RegisterSummary(data_version=version, topic_queues=table, filter_server_list=filters)


def decode(
    body: bytes, compressed: bool, *, max_inflated_bytes: int = MAX_INFLATED_BYTES
) -> RegisterBrokerBody:
    """``decode_steps`` run to the end at once (clients, tests)."""
    return finish(decode_steps(body, compressed, max_inflated_bytes=max_inflated_bytes))


def from_json_steps(obj: Any) -> Steps[RegisterBrokerBody]:
    """Read the parsed JSON form ``{"topicConfigSerializeWrapper":{...}, ...}``."""
    version, table, filters = yield from _from_json(obj, _keep_config, None)
    return RegisterBrokerBody(
        topic_config_table=table, data_version=version, filter_server_list=filters
    )


_Decoded = tuple[DataVersion, dict[str, _Kept], list[str]]


def _decode(
    body: bytes,
    compressed: bool,
    keep: _Keep[_Kept],
    max_topics: int | None,
    max_inflated_bytes: int,
    max_json_bytes: int | None,
) -> Steps[_Decoded[_Kept]]:
    if compressed:
        data = yield from _inflate_steps(body, max_inflated_bytes)
        return (yield from _compressed_steps(data, keep, max_topics))
    if max_json_bytes is not None and len(body) > max_json_bytes:
        raise LimitExceeded(
            f"{_WHAT}: JSON body of {len(body)} bytes exceeds {max_json_bytes} bytes; "
            "register compressed (compressedRegister=true) for many topics"
        )
    return (yield from _from_json(load_json_body(body, _WHAT), keep, max_topics))


def _from_json(obj: Any, keep: _Keep[_Kept], max_topics: int | None) -> Steps[_Decoded[_Kept]]:
    o = as_object(obj, _WHAT)
    wrapper = as_object(field(o, "topicConfigSerializeWrapper", {}), _WHAT + ".wrapper")
    raw_table = as_object(field(wrapper, "topicConfigTable", {}), _WHAT + ".topicConfigTable")
    _check_topic_count(len(raw_table), max_topics)
    table: dict[str, _Kept] = {}
    for i, (name, raw) in enumerate(raw_table.items()):
        if i and not i % STEP_ITEMS:
            yield
        fields = dict(as_object(raw, "TopicConfig"))
        fields.setdefault("topicName", name)
        table[name] = keep(TopicConfig.from_json(fields))
    version = wrapper.get("dataVersion")
    return (
        DataVersion() if version is None else DataVersion.from_json(version),
        table,
        str_list(field(o, "filterServerList", []), _WHAT),
    )


def _check_topic_count(count: int, max_topics: int | None) -> None:
    if max_topics is not None and count > max_topics:
        raise LimitExceeded(
            f"{_WHAT}: {count} topics exceed the limit of {max_topics} topics per broker"
        )


def _inflate_steps(body: bytes, max_bytes: int) -> Steps[bytes]:
    inflater = zlib.decompressobj()
    chunks: list[bytes] = []
    total = 0
    pending = body
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, INFLATE_STEP_BYTES)
            if not chunk and inflater.unconsumed_tail == pending:
                raise MalformedBody(f"compressed {_WHAT}: truncated zlib stream")
            pending = inflater.unconsumed_tail
            total += len(chunk)
            if total > max_bytes:
                raise LimitExceeded(f"compressed {_WHAT} inflates past {max_bytes} bytes")
            chunks.append(chunk)
            yield
    except zlib.error as exc:
        raise MalformedBody(f"compressed {_WHAT}: {exc}") from None
    return b"".join(chunks)


class _Reader:
    """Big-endian int32-length-prefixed chunks out of an inflated body."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def int32(self, what: str) -> int:
        if self.remaining() < 4:
            raise MalformedBody(f"compressed {_WHAT}: truncated at {what}")
        (value,) = struct.unpack_from(">i", self._data, self._pos)
        self._pos += 4
        if value < 0:
            raise MalformedBody(f"compressed {_WHAT}: negative {what} {value}")
        return int(value)

    def chunk(self, what: str) -> bytes:
        size = self.int32(what + " length")
        if self.remaining() < size:
            raise MalformedBody(f"compressed {_WHAT}: truncated {what}")
        data = self._data[self._pos : self._pos + size]
        self._pos += size
        return data


def _compressed_steps(
    data: bytes, keep: _Keep[_Kept], max_topics: int | None
) -> Steps[_Decoded[_Kept]]:
    reader = _Reader(data)
    version = DataVersion.from_json(load_json_body(reader.chunk("dataVersion"), "DataVersion"))
    count = reader.int32("topic count")
    _check_topic_count(count, max_topics)
    table: dict[str, _Kept] = {}
    for i in range(count):
        if i and not i % STEP_ITEMS:
            yield
        raw = reader.chunk("topic config")
        try:
            config = TopicConfig.from_text(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise MalformedBody(f"compressed {_WHAT}: topic config not UTF-8") from None
        table[config.topic_name] = keep(config)
    filter_servers = load_json_body(reader.chunk("filter server list"), "filterServerList")
    # Brokers >= 5.0 append static-topic mappings; 4.x brokers end here. We skip them.
    if reader.remaining():
        for i in range(reader.int32("mapping count")):
            if i and not i % STEP_ITEMS:
                yield
            reader.chunk("topic queue mapping")
    if reader.remaining():
        raise MalformedBody(f"compressed {_WHAT}: {reader.remaining()} extra bytes")
    filters = str_list([] if filter_servers is None else filter_servers, "filterServerList")
    return version, table, filters
