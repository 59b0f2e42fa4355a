"""Paths the store derives from names (a topic, a queue id): each stays under its root.

Rules (issue 13 row 2: a replicated topic ``../../x`` wrote ConsumeQueue files outside the
store):
- A name becomes exactly one path component: never empty, ``.`` or ``..``, no ``/``, ``\\``
  or NUL, at most 255 bytes once encoded (the file-name limit of common filesystems). An
  absolute path contains ``/`` and is refused with the rest.
- The joined path is resolved (symlinks followed) and must lie under the resolved root,
  so a planted symlink cannot lead out either.
- Refusal is ``UnsafeName``, a ``StorageError``: the caller writes nothing for that name.
- ``name_problem`` is pure; ``child_path`` touches the filesystem only to resolve.
"""

from __future__ import annotations

import os
from pathlib import Path

from protocol.errors import StorageError

#: NAME_MAX of ext4, xfs, btrfs and tmpfs.
MAX_NAME_BYTES = 255
_FORBIDDEN = ("/", "\\", "\0")


class UnsafeName(StorageError):
    """A name that would not make one plain path component under the store."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one path component, or None when it can."""
    if not name:
        return "an empty name"
    if name in (".", ".."):
        return f"{name!r} names a directory, not a file"
    for ch in _FORBIDDEN:
        if ch in name:
            return f"{name!r} contains {ch!r}"
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        return f"{name!r} cannot be encoded as a file name"
    if len(encoded) > MAX_NAME_BYTES:
        return f"a name of {len(encoded)} bytes exceeds {MAX_NAME_BYTES}"
    return None


def child_path(root: Path, *names: str) -> Path:
    """``root/name/...``, each name one plain component that stays under ``root``."""
    for name in names:
        problem = name_problem(name)
        if problem is not None:
            raise UnsafeName(f"refusing a path under {root}: {problem}")
    path = root.joinpath(*names)
    if not path.resolve().is_relative_to(root.resolve()):
        raise UnsafeName(f"refusing {path}: it resolves outside {root}")
    return path


def queue_path(root: Path, topic: str, queue_id: int) -> Path:
    """The directory of one ConsumeQueue: ``root/<topic>/<queue id>``."""
    if queue_id < 0:
        raise UnsafeName(f"refusing queue id {queue_id} of topic {topic!r}: negative")
    return child_path(root, topic, str(queue_id))
