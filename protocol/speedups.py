"""The compiled fast paths of the codec (``protocol/_speedups.c``), where they are built.

Each is None when the extension is not built (pip installs the project without it where
there is no C compiler) or when ``RMQ_PURE_PYTHON=1`` is set; the callers then run their
Python code, which stays the definition. Each compiled function does its Python twin's
common case and answers None for anything else (a caller then runs the Python code, errors
and their wording included); ``tests/unit/test_speedups.py`` holds each one equal to its
twin on generated input.

- ``split_properties(text)``: ``properties_from_string(text)`` when ``text`` is canonical
  (``protocol/record_wire.py``), else None.
- ``parse_properties(text)``: ``properties_from_string(text)``, for any text (no None).
- ``record_properties(text, cluster, new_uniq_key)``: ``record_properties_encoded``
  (``protocol/record_wire.py``): the record's properties bytes and pairs, or None (not
  canonical, another cluster, or what the Python code refuses).
- ``parse_header(cls, spec, required, ext)``: a generated header parse's plain branch
  (``protocol/headers.py``).
- ``command_from_json(slots, header, body, "JAVA", "OTHER")``: ``RemotingCommand.from_frame``'s
  common case, from the parsed JSON header (``protocol/command.py``).
- ``cut_frames(slots, data, max_frame)``: the complete, valid frames ``FrameDecoder.feed``
  cuts from ``data``, and where the rest starts (``protocol/frame.py`` goes on from there).
- ``encode_record(topic, body, properties, born_host8, store_host8, ...)``:
  ``encode_record_fields`` of a record with its properties as bytes (``protocol/message.py``).
- ``read_stored_fields(buf, pos, check_crc, max_size)``: ``read_stored_fields``'s fast path
  (``protocol/record_fields.py``), None for what ``decode_record`` must decode.
- ``topic_key_hash(topic, key)``: the index hash of ``topic#key`` (``broker/store/index.py``),
  for every string (no None: it has no uncommon case).
- ``index_put(f, key_hash, physical_offset, store_ms)``: ``IndexFile.put`` on ``f``
  (``broker/store/index.py``): the same bytes in its map and the same attributes; True,
  or None (nothing changed) for what the Python ``put`` must do or refuse.
- ``take_all(data, offset, max_count, max_bytes, min_physical)``: ``StoreReads._take_all``'s
  walk (``broker/store/reads.py``) as ``(status 0/1/2, next_begin, picked)``, or None for
  what the Python walk must do.
- ``cut_records(span, start, picked, i, j, records, offsets)``: ``StoreReads._result``'s
  loop over a whole span's records with no damage about; the index it stopped at (the
  Python loop goes on from there), or None.
- ``quick_messages(buf, pos, out, last, next_begin_offset, ctx)``: ``decode_pull_body``'s
  loop over the records ``quick_message`` takes (``client/consumer/records.py``
  ``compiled_walk``).
- ``build_slots(slots, *values)``: ``slot_builder(cls)``'s ``make(*values)``, ``slots``
  being ``(cls, *slot_descriptors(cls))`` (``protocol/slots.py``), for every input (no None:
  a wrong count raises its TypeError).
- ``java_frame(code, ext, flag, opaque, version, body)``: ``RemotingCommand.encode()`` of a
  JAVA command without a remark (``protocol/command.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

parse_properties: Callable[[str], dict[str, str]] | None = None
split_properties: Callable[[str], dict[str, str] | None] | None = None
parse_header: Callable[[type, tuple[Any, ...], object, Mapping[str, str]], Any] | None = None
command_from_json: Callable[[tuple[Any, ...], Any, bytes, str, str], Any] | None = None
cut_frames: Callable[[tuple[Any, ...], bytes | bytearray, int], tuple[list[Any], int]] | None = None
encode_record: Callable[..., bytes | None] | None = None
read_stored_fields: Callable[[Any, int, bool, int], Any] | None = None
topic_key_hash: Callable[[str, str], int] | None = None
index_put: Callable[[Any, int, int, int], bool | None] | None = None
cut_records: Callable[..., int | None] | None = None
take_all: (
    Callable[[bytes, int, int, int, int], tuple[int, int, list[tuple[int, int, int]]] | None] | None
) = None
java_frame: Callable[[int, Mapping[str, str], int, int, int, bytes], bytes | None] | None = None
build_slots: Callable[..., Any] | None = None
record_properties: (
    Callable[[str, str, Callable[[], str]], tuple[bytes, dict[str, str]] | None] | None
) = None
quick_messages: (
    Callable[[bytes, int, list[Any], int, int, tuple[Any, ...]], tuple[int, int]] | None
) = None

#: True when the compiled paths are in use.
COMPILED = False

if os.environ.get("RMQ_PURE_PYTHON") != "1":
    try:
        from protocol import _speedups
    except ImportError:
        pass
    else:
        split_properties = _speedups.split_properties
        parse_properties = _speedups.parse_properties
        parse_header = _speedups.parse_header
        command_from_json = _speedups.command_from_json
        java_frame = _speedups.java_frame
        build_slots = _speedups.build_slots
        record_properties = _speedups.record_properties
        topic_key_hash = _speedups.topic_key_hash
        index_put = _speedups.index_put
        take_all = _speedups.take_all
        cut_records = _speedups.cut_records
        cut_frames = _speedups.cut_frames
        encode_record = _speedups.encode_record
        read_stored_fields = _speedups.read_stored_fields
        quick_messages = _speedups.quick_messages
        COMPILED = True
