"""The FUSE protocol codec behind powerfs (scenarios/fuse_wire.py): headers, answers,
directory entries and the INIT answer, against the kernel's layouts."""

from __future__ import annotations

import errno
import os
import stat
import struct

import pytest

from scenarios import fuse_wire as fw
from scenarios.faults import PowerLoss


def request(opcode: int, body: bytes, *, unique: int = 7, nodeid: int = 1) -> bytes:
    return fw.IN_HEADER.pack(40 + len(body), opcode, unique, nodeid, 0, 0, 0, 0, 0) + body


def test_layout_sizes_are_the_kernels() -> None:
    assert fw.IN_HEADER.size == 40 and fw.OUT_HEADER.size == 16
    assert fw.ATTR.size == 88 and fw.ENTRY_HEAD.size + fw.ATTR.size == 128
    assert fw.INIT_OUT.size == 64 and fw.STATFS_OUT.size == 80 and fw.OPEN_OUT.size == 16


def test_a_request_is_parsed_and_a_short_read_refused() -> None:
    req = fw.parse_request(request(fw.Op.LOOKUP, b"name\0", nodeid=5))
    assert (req.opcode, req.unique, req.nodeid, req.body) == (fw.Op.LOOKUP, 7, 5, b"name\0")
    assert fw.names(b"old\0new\0", 2) == ["old", "new"]
    with pytest.raises(ValueError, match="says"):
        fw.parse_request(request(fw.Op.LOOKUP, b"name\0")[:-1])
    with pytest.raises(ValueError, match="expected 2 names"):
        fw.names(b"only", 2)


def test_answers_carry_a_negated_errno_or_the_body() -> None:
    assert fw.reply(9, error=errno.ENOENT) == struct.pack("<IiQ", 16, -errno.ENOENT, 9)
    assert fw.reply(9, b"abc") == struct.pack("<IiQ", 19, 0, 9) + b"abc"


def test_init_answers_7_31_with_big_writes_and_refuses_an_old_kernel() -> None:
    major, minor, readahead, flags, _, _, max_write, _, max_pages, _, _ = fw.INIT_OUT.unpack(
        fw.init_out(7, 41)
    )
    assert (major, minor, max_write) == (7, 31, fw.MAX_WRITE)
    assert readahead == fw.MAX_WRITE and max_pages * 4096 == fw.MAX_WRITE
    assert flags & fw.FUSE_BIG_WRITES and flags & fw.FUSE_MAX_PAGES
    assert fw.READ_BUFFER >= fw.MAX_WRITE + 40 + 40
    with pytest.raises(ValueError, match=r"older than 7\.31"):
        fw.init_out(7, 26)


def test_directory_entries_are_padded_to_eight_bytes() -> None:
    entry = fw.dirent(42, 3, "abc", stat.S_IFREG | 0o644)
    assert len(entry) % 8 == 0
    ino, off, namelen, kind = fw.DIRENT_HEAD.unpack_from(entry)
    assert (ino, off, namelen, kind) == (42, 3, 3, stat.S_IFREG >> 12)
    assert entry[fw.DIRENT_HEAD.size : fw.DIRENT_HEAD.size + 3] == b"abc"


def test_attributes_are_never_cached_by_the_kernel() -> None:
    st = os.stat(".")
    nodeid, _, entry_valid, attr_valid, *_ = fw.ENTRY_HEAD.unpack_from(fw.entry_out(5, st))
    assert (nodeid, entry_valid, attr_valid) == (5, 0, 0)
    assert fw.ATTR_OUT_HEAD.unpack_from(fw.attr_out(5, st))[0] == 0


def test_power_loss_names() -> None:
    assert PowerLoss().name == "power-loss"
    assert PowerLoss(scope="group").name == "group-power-loss"
    with pytest.raises(ValueError, match="scope"):
        PowerLoss(scope="rack")
