"""Versioned CBOR envelopes for our internal data (controller RPC, Raft entries, metadata).

Rules:
- Pure: bytes in, values out.
- Every payload travels as the map ``{"kind": str, "version": int, "payload": any}``, encoded
  canonically (sorted keys, shortest forms) so equal values give equal bytes.
- ``loads`` refuses, with ``MalformedBody``: bytes that are not exactly one CBOR item, an
  envelope of the wrong shape, a different ``kind``, and a ``version`` newer than the reader
  knows. Older versions are returned as they are; upgrading them is the caller's job.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from protocol.errors import MalformedBody

#: Nesting limit for decoded containers (cbor2's default is 400).
MAX_DEPTH = 64


def dumps(kind: str, version: int, payload: Any) -> bytes:
    """Encode ``payload`` in an envelope naming its ``kind`` and schema ``version`` (>= 1)."""
    assert kind, "kind must be non-empty"
    assert version >= 1, f"version must be >= 1, got {version}"
    return cbor2.dumps({"kind": kind, "version": version, "payload": payload}, canonical=True)


def loads(data: bytes, *, kind: str, max_version: int) -> tuple[int, Any]:
    """Decode an envelope of ``kind`` and return ``(version, payload)``."""
    stream = io.BytesIO(data)
    try:
        envelope = cbor2.CBORDecoder(stream, max_depth=MAX_DEPTH).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise MalformedBody(f"{kind}: not valid CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise MalformedBody(f"{kind}: {len(data) - stream.tell()} bytes after the CBOR item")
    if not isinstance(envelope, dict) or set(envelope) != {"kind", "version", "payload"}:
        raise MalformedBody(f"{kind}: expected a {{kind, version, payload}} map")
    if envelope["kind"] != kind:
        raise MalformedBody(f"expected kind {kind!r}, got {envelope['kind']!r}")
    version = envelope["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise MalformedBody(f"{kind}: bad version {version!r}")
    if version > max_version:
        raise MalformedBody(f"{kind}: version {version} is newer than supported {max_version}")
    return version, envelope["payload"]
