"""The FUSE kernel protocol, the part a passthrough file system needs (fuse_kernel.h 7.31).

Rules:
- Pure: bytes in, values out, and values in, bytes out; no file, no /dev/fuse here
  (``scenarios/powerfs.py`` reads and writes the device).
- A request is a 40-byte ``fuse_in_header`` and an opcode-specific body; an answer is a
  16-byte ``fuse_out_header`` (a negative errno, or 0 and the body). Layouts below are
  the kernel's, little-endian (this is Linux on x86/ARM).
- Only the requests powerfs serves are decoded; any other opcode is answered ENOSYS, which
  the kernel takes as "not supported" and stops asking for most of them.
"""

from __future__ import annotations

import enum
import os
import stat
import struct

import attrs

KERNEL_MAJOR = 7
#: The minor version we speak: init_out of 64 bytes, 40-byte in_header.
KERNEL_MINOR = 31
MAX_WRITE = 1024 * 1024
#: A read of /dev/fuse must fit the largest request: a write of MAX_WRITE and its headers.
READ_BUFFER = MAX_WRITE + 4096

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
ENTRY_HEAD = struct.Struct("<QQQQII")  # nodeid generation entry_valid attr_valid nsecs
ATTR_OUT_HEAD = struct.Struct("<QII")  # attr_valid attr_valid_nsec dummy
OPEN_OUT = struct.Struct("<QII")  # fh open_flags padding
WRITE_OUT = struct.Struct("<II")
INIT_IN = struct.Struct("<IIII")
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
STATFS_OUT = struct.Struct("<QQQQQIIII24x")
DIRENT_HEAD = struct.Struct("<QQII")  # ino off namelen type

ROOT_ID = 1
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1, 2, 4, 8
FATTR_ATIME, FATTR_MTIME, FATTR_FH = 16, 32, 64
FATTR_ATIME_NOW, FATTR_MTIME_NOW = 128, 256
#: init flags we ask for: big writes, parallel directory ops off, nothing cached long.
FUSE_BIG_WRITES = 1 << 5
FUSE_MAX_PAGES = 1 << 22


class Op(enum.IntEnum):
    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    DESTROY = 38
    BATCH_FORGET = 42
    FALLOCATE = 43
    RENAME2 = 45


#: Requests the kernel sends without wanting an answer.
NO_REPLY = frozenset({Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT})


@attrs.frozen(kw_only=True)
class Request:
    opcode: int
    unique: int
    nodeid: int
    body: bytes


def parse_request(data: bytes) -> Request:
    """One request as read from /dev/fuse (one read returns exactly one)."""
    length, opcode, unique, nodeid, *_ = IN_HEADER.unpack_from(data)
    if length != len(data):
        raise ValueError(f"request says {length} bytes, read {len(data)}")
    return Request(opcode=opcode, unique=unique, nodeid=nodeid, body=data[IN_HEADER.size :])


def reply(unique: int, body: bytes = b"", error: int = 0) -> bytes:
    """An answer: ``error`` is a positive errno (sent negated) or 0 with ``body``."""
    if error:
        return OUT_HEADER.pack(OUT_HEADER.size, -error, unique)
    return OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body


def names(body: bytes, count: int) -> list[str]:
    """``count`` NUL-terminated names at the start of ``body``."""
    parts = body.split(b"\0")
    if len(parts) <= count:
        raise ValueError(f"expected {count} names in {body[:80]!r}")
    return [os.fsdecode(p) for p in parts[:count]]


def pack_attr(st: os.stat_result, ino: int) -> bytes:
    return ATTR.pack(
        ino,
        st.st_size,
        st.st_blocks,
        int(st.st_atime),
        int(st.st_mtime),
        int(st.st_ctime),
        st.st_atime_ns % 1_000_000_000,
        st.st_mtime_ns % 1_000_000_000,
        st.st_ctime_ns % 1_000_000_000,
        st.st_mode,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_rdev,
        st.st_blksize,
        0,
    )


def entry_out(nodeid: int, st: os.stat_result) -> bytes:
    # Nothing is cached by the kernel (valid 0): a power-off changes files behind it.
    return ENTRY_HEAD.pack(nodeid, 0, 0, 0, 0, 0) + pack_attr(st, nodeid)


def attr_out(nodeid: int, st: os.stat_result) -> bytes:
    return ATTR_OUT_HEAD.pack(0, 0, 0) + pack_attr(st, nodeid)


def open_out(fh: int) -> bytes:
    # Through the page cache (memory maps need it); without FOPEN_KEEP_CACHE the kernel
    # drops a file's cached pages at every open, and a power-on is a new mount anyway.
    return OPEN_OUT.pack(fh, 0, 0)


def init_out(kernel_major: int, kernel_minor: int) -> bytes:
    if kernel_major != KERNEL_MAJOR or kernel_minor < KERNEL_MINOR:
        raise ValueError(f"kernel FUSE {kernel_major}.{kernel_minor} is older than 7.31")
    return INIT_OUT.pack(
        KERNEL_MAJOR,
        KERNEL_MINOR,
        MAX_WRITE,  # max_readahead
        FUSE_BIG_WRITES | FUSE_MAX_PAGES,
        16,  # max_background
        12,  # congestion_threshold
        MAX_WRITE,
        1,  # time_gran (ns)
        MAX_WRITE // 4096,  # max_pages
        0,
        0,
    )


def statfs_out(st: os.statvfs_result) -> bytes:
    return STATFS_OUT.pack(
        st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree,
        st.f_bsize, st.f_namemax, st.f_frsize, 0,
    )  # fmt: skip


def dirent(ino: int, offset: int, name: str, mode: int) -> bytes:
    raw = os.fsencode(name)
    kind = stat.S_IFMT(mode) >> 12
    entry = DIRENT_HEAD.pack(ino, offset, len(raw), kind) + raw
    return entry + b"\0" * (-len(entry) % 8)
