"""Small durable files: atomic replacement and versioned CBOR documents.

Rules:
- A file is replaced by writing a temporary sibling, fsyncing it, renaming it over the
  target and fsyncing the directory, so a crash leaves either the old or the new bytes,
  never a mixture (DESIGN.md §4 "Metadata").
- Documents are framed by ``protocol.cbor`` (kind + version); this module adds no framing.
- Everything here blocks; callers on the event loop wrap it in ``trio.to_thread.run_sync``
  when it sits on a latency-sensitive path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from protocol import cbor

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make the directory entry changes (create, rename, unlink) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save_document(path: Path, *, kind: str, version: int, payload: Any) -> None:
    """Write ``payload`` as a versioned CBOR document of ``kind``, atomically."""
    atomic_write_bytes(path, cbor.dumps(kind, version, payload))


def load_document(path: Path, *, kind: str, max_version: int) -> tuple[int, Any] | None:
    """Read a document written by ``save_document``; ``None`` if the file does not exist.

    Raises whatever ``protocol.cbor.loads`` raises for a wrong kind, a newer version or
    undecodable bytes: metadata that cannot be read is not silently replaced.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    version, payload = cbor.loads(data, kind=kind, max_version=max_version)
    return version, payload
