"""SEND_BATCH_MESSAGE bodies, byte-compatible with RocketMQ's ``MessageDecoder.encodeMessages``.

Rules (reference/rocketmq-wire.md §2.3): as ``protocol/message.py``'s. Pure; all integers
big-endian and signed; bad bytes raise ``MalformedRecord`` naming the offset, a value that
cannot be encoded raises ``ValueError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

import attrs

from protocol.errors import LimitExceeded, MalformedRecord
from protocol.message import MAX_PROPERTIES_BYTES, decode_properties, encode_properties

_INT16 = struct.Struct(">h")
_BATCH_ITEM_HEAD = struct.Struct(">iiiii")  # total size, magic (0), body CRC (0), flag, body len


@attrs.frozen(kw_only=True)
class BatchItem:
    """One message inside a SEND_BATCH_MESSAGE body: only flag, body and properties travel.

    ``properties`` follows the same read-only convention as ``MessageRecord.properties``.
    """

    body: bytes
    flag: int = 0
    properties: Mapping[str, str] = attrs.field(factory=dict, hash=False)


def encode_batch_body(items: Iterable[BatchItem]) -> bytes:
    """Encode items like Java's ``MessageDecoder.encodeMessages`` (§2.3).

    Each item is ``int32 totalSize | int32 magic (0) | int32 bodyCRC (0) | int32 flag |
    int32 bodyLen | body | int16 propsLen | props``; the broker computes the real CRCs.

    Raises:
        ValueError: properties over 32767 bytes or with bad characters, flag out of range.
    """
    return encode_batch_items((i.body, i.flag, encode_properties(i.properties)) for i in items)


def encode_batch_items(items: Iterable[tuple[bytes, int, bytes]]) -> bytes:
    """``encode_batch_body`` of ``(body, flag, properties bytes)`` items whose properties
    are encoded already (a producer has them from its single-send path); same errors."""
    parts: list[bytes] = []
    head = _BATCH_ITEM_HEAD.pack
    for body, flag, props in items:
        if len(props) > MAX_PROPERTIES_BYTES:
            raise ValueError(f"properties of {len(props)} bytes exceed {MAX_PROPERTIES_BYTES}")
        body_len = len(body)
        try:
            parts += (
                head(_BATCH_ITEM_HEAD.size + body_len + 2 + len(props), 0, 0, flag, body_len),
                body,
                len(props).to_bytes(2, "big"),
                props,
            )
        except struct.error as exc:
            raise ValueError(f"batch item field out of range: {exc}") from None
    return b"".join(parts)


#: One item of a SEND_BATCH_MESSAGE body as it came: its offset in the body, its flag, its
#: body and its properties bytes (not decoded).
RawBatchItem = tuple[int, int, bytes, bytes]


def split_batch_body(
    body: bytes | bytearray | memoryview, *, max_items: int | None = None
) -> list[RawBatchItem]:
    """Cut a SEND_BATCH_MESSAGE body into its items, their properties left as bytes (the
    broker's straight path stores them as they came). Every check of ``decode_batch_body``
    but the properties' own; same errors.

    Raises:
        MalformedRecord: naming the offset of the bad item and what is wrong.
        LimitExceeded: the body holds more than ``max_items`` items.
    """
    items: list[RawBatchItem] = []
    pos = 0
    end = len(body)
    head_size = _BATCH_ITEM_HEAD.size
    unpack_head = _BATCH_ITEM_HEAD.unpack_from
    while pos < end:
        if max_items is not None and len(items) >= max_items:
            raise LimitExceeded(f"batch holds more than {max_items} messages")
        if end - pos < head_size + 2:
            raise MalformedRecord(f"{_at(pos)}: only {end - pos} bytes left, need {head_size + 2}")
        total, _, _, flag, body_len = unpack_head(body, pos)
        p = pos + head_size
        if body_len < 0 or p + body_len + 2 > end:
            raise MalformedRecord(f"{_at(pos)}: body length {body_len} overruns the batch")
        item_body = bytes(body[p : p + body_len])
        p += body_len
        (props_len,) = _INT16.unpack_from(body, p)
        p += 2
        if props_len < 0 or p + props_len > end:
            raise MalformedRecord(f"{_at(pos)}: properties length {props_len} overruns the batch")
        if total != p + props_len - pos:
            raise MalformedRecord(
                f"{_at(pos)}: size says {total} bytes but its fields take {p + props_len - pos}"
            )
        items.append((pos, flag, item_body, bytes(body[p : p + props_len])))
        pos = p + props_len
    return items


def decode_batch_body(
    body: bytes | bytearray | memoryview, *, max_items: int | None = None
) -> list[BatchItem]:
    """Decode a SEND_BATCH_MESSAGE body into its items (an empty body gives no items).

    The magic and CRC fields are ignored, as the Java broker ignores them; totalSize must
    match the item's fields exactly (Java clients always write it so). ``max_items``
    stops the decoding at the first item past it (11 MB of empty items are 520,000 of them).

    Raises:
        MalformedRecord: naming the offset of the bad item and what is wrong.
        LimitExceeded: the body holds more than ``max_items`` items.
    """
    items: list[BatchItem] = []
    for pos, flag, item_body, props in split_batch_body(body, max_items=max_items):
        try:
            properties = decode_properties(props) if props else {}
        except MalformedRecord as exc:
            raise MalformedRecord(f"{_at(pos)}: {exc}") from None
        items.append(BatchItem(body=item_body, flag=flag, properties=properties))
    return items


def _at(pos: int) -> str:
    """How an error names the item at ``pos`` (built only when there is an error)."""
    return f"batch item at offset {pos}"
