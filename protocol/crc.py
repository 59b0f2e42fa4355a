"""The CRC32 of record bodies: ``java.util.zip.CRC32``'s (zlib's polynomial), which a
record stores masked to 31 bits (``protocol/message.py``).

python-isal's ``crc32`` (Intel ISA-L, carry-less multiply) where it is installed: the same
values as ``zlib.crc32``, 3-4x faster on 1-64 KiB bodies; every send, every record a slave
applies and every record a consumer checks computes one. ``zlib.crc32`` otherwise.
"""

from __future__ import annotations

try:
    from isal.isal_zlib import crc32
except ImportError:  # a platform without python-isal's wheels: the standard library's
    from zlib import crc32

__all__ = ["crc32"]
