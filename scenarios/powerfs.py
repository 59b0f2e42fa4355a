"""powerfs: a FUSE passthrough store that can lose power — what was not fsynced is lost.

``python -m scenarios.powerfs BACKING MOUNTPOINT`` (root) mounts MOUNTPOINT as a view of
the directory BACKING, prints ``powerfs ready`` and serves until a signal:
- SIGTERM: unmount and exit, keeping every byte (a clean shutdown);
- SIGUSR1: **power off**: every write not covered by a later fsync of its file is undone
  (bytes put back as they were, sizes restored), then unmount and exit; what was undone
  is written to BACKING/../powerfs-<name>.json (files, bytes) and printed.

Rules:
- The broker cannot be trusted to say what it fsynced; the file system sees it: a FUSE
  FSYNC of a file makes every write to it before that durable (fsync is per file, so per
  inode: a rename keeps a file's pending writes with it). Every WRITE, truncation and
  fallocate first records how to undo it (the old bytes of what it overwrites, the old
  size), per inode, until an fsync drops the record.
- Directory operations (create, mkdir, rename, unlink) are kept at once, as a journaling
  file system commits them within seconds; data is what a power loss takes. So a file
  created and never fsynced survives empty, with its old size.
- Writes reach powerfs as they are made (FUSE without writeback caching is write-through;
  a memory map's dirty pages arrive at writeback or fsync, before the FSYNC itself).
  Attributes are valid for 0 s and a power-on is a new mount: nothing stale is served.
- One thread serves requests in order; undo records live in memory (a sparse file's holes
  are not copied: SEEK_DATA finds what a truncation cuts).
- The loop waits in poll(2) on /dev/fuse and a signal wake-up pipe, never in a blocking
  read: a signal that lands after Python's last check but before the read(2) would
  otherwise wait for the next FUSE request, which after the broker's SIGKILL never comes
  (the power-off that once hung past the harness's 10 s, docs/CHAOS.md).
- Linux only, root only (mount(2) of a FUSE device; no fusermount, no libfuse).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import signal
import stat
import struct
import sys
from pathlib import Path

import attrs

from scenarios import fuse_wire as fw
from scenarios.fuse_wire import Op

#: Broker settings of scenarios on powerfs: small CommitLog segments, since powerfs
#: serves every read from Python and recovery reads a whole segment (a 1 GiB default one
#: takes half a minute through it).
POWERFS_BROKER_SETTINGS: tuple[tuple[str, object], ...] = (
    ("mappedFileSizeCommitLog", 64 * 1024 * 1024),
)
MNT_DETACH = 2
GETATTR_FH = 1
#: A truncation that cuts more data than this is not undone (and said so).
MAX_UNDO_BYTES = 256 * 1024 * 1024


class PowerOff(Exception):
    """SIGUSR1: lose what was not fsynced, then stop."""


class Shutdown(Exception):
    """SIGTERM: stop, keeping everything."""


@attrs.define
class Undo:
    """How to put one inode back as its last fsync left it: records, newest last."""

    path: str
    #: (offset, old bytes or None for zeros, length) of overwritten ranges.
    ranges: list[tuple[int, bytes | None, int]] = attrs.field(factory=list)
    #: The size before the first unsynced change.
    size: int = 0
    written: int = 0


def _data_extents(fd: int, start: int, end: int) -> list[tuple[int, bytes]]:
    """The non-hole bytes of ``[start, end)`` of ``fd``."""
    out = []
    pos = start
    while pos < end:
        try:
            data_at = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole left
                break
            raise
        if data_at >= end:
            break
        hole_at = min(os.lseek(fd, data_at, os.SEEK_HOLE), end)
        out.append((data_at, os.pread(fd, hole_at - data_at, data_at)))
        pos = hole_at
    return out


class PowerFS:
    """The file system: node ids to paths under ``backing``, open files, undo records."""

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self.paths: dict[int, str] = {fw.ROOT_ID: ""}
        self.ids: dict[str, int] = {"": fw.ROOT_ID}
        self.files: dict[int, int] = {}  # fh -> fd
        self.dirs: dict[int, list[tuple[str, int]]] = {}
        self.undo: dict[int, Undo] = {}  # backing inode -> undo record
        self._next_id = fw.ROOT_ID + 1
        self._next_fh = 1

    # --- paths ---------------------------------------------------------------------------

    def real(self, rel: str) -> str:
        return str(self.backing / rel) if rel else str(self.backing)

    def child(self, parent: int, name: str) -> str:
        base = self.paths[parent]
        return f"{base}/{name}" if base else name

    def node_of(self, rel: str) -> int:
        nodeid = self.ids.get(rel)
        if nodeid is None:
            nodeid = self._next_id
            self._next_id += 1
            self.ids[rel] = nodeid
            self.paths[nodeid] = rel
        return nodeid

    def moved(self, old: str, new: str) -> None:
        for rel, nodeid in list(self.ids.items()):
            if rel == old or rel.startswith(old + "/"):
                moved = new + rel[len(old) :]
                del self.ids[rel]
                self.ids[moved] = nodeid
                self.paths[nodeid] = moved

    def gone(self, rel: str) -> None:
        nodeid = self.ids.pop(rel, None)
        if nodeid is not None:
            self.paths.pop(nodeid, None)

    # --- undo records ----------------------------------------------------------------------

    def _record(self, fd: int) -> Undo:
        st = os.fstat(fd)
        undo = self.undo.get(st.st_ino)
        if undo is None:
            undo = Undo(path=os.readlink(f"/proc/self/fd/{fd}"), size=st.st_size)
            self.undo[st.st_ino] = undo
        return undo

    def before_write(self, fd: int, offset: int, length: int) -> None:
        undo = self._record(fd)
        size = os.fstat(fd).st_size
        end = min(offset + length, size)
        if offset < end:
            old = os.pread(fd, end - offset, offset)
            undo.ranges.append((offset, None if not any(old) else old, end - offset))
        undo.written += length

    def before_resize(self, fd: int, new_size: int) -> None:
        undo = self._record(fd)
        size = os.fstat(fd).st_size
        if new_size < size:
            cut = _data_extents(fd, new_size, size)
            if sum(len(b) for _, b in cut) > MAX_UNDO_BYTES:
                print(f"powerfs: truncation of {undo.path} too large to undo", file=sys.stderr)
                return
            undo.ranges += [(off, data, len(data)) for off, data in cut]

    def synced(self, fd: int) -> None:
        self.undo.pop(os.fstat(fd).st_ino, None)

    def power_off(self) -> dict[str, int]:
        """Undo every unsynced change; bytes written since the last fsync, per file."""
        lost = {}
        for undo in self.undo.values():
            try:
                fd = os.open(undo.path, os.O_WRONLY)
            except FileNotFoundError:
                continue  # unlinked meanwhile: nothing of it to lose
            try:
                for offset, data, length in reversed(undo.ranges):
                    os.pwrite(fd, data if data is not None else bytes(length), offset)
                os.ftruncate(fd, undo.size)
            finally:
                os.close(fd)
            lost[os.path.relpath(undo.path, self.backing)] = undo.written
        self.undo.clear()
        return lost

    # --- requests --------------------------------------------------------------------------

    def handle(self, req: fw.Request) -> bytes | None:
        try:
            op = Op(req.opcode)
        except ValueError:
            return fw.reply(req.unique, error=errno.ENOSYS)
        if op in fw.NO_REPLY:
            return None
        method = getattr(self, f"op_{op.name.lower()}", None)
        if method is None:
            return fw.reply(req.unique, error=errno.ENOSYS)
        try:
            return fw.reply(req.unique, method(req))
        except OSError as exc:
            return fw.reply(req.unique, error=exc.errno or errno.EIO)
        except KeyError:
            return fw.reply(req.unique, error=errno.ENOENT)

    def op_init(self, req: fw.Request) -> bytes:
        major, minor, _, _ = fw.INIT_IN.unpack_from(req.body)
        return fw.init_out(major, minor)

    def op_destroy(self, req: fw.Request) -> bytes:
        return b""

    def op_lookup(self, req: fw.Request) -> bytes:
        (name,) = fw.names(req.body, 1)
        rel = self.child(req.nodeid, name)
        st = os.lstat(self.real(rel))
        return fw.entry_out(self.node_of(rel), st)

    def op_getattr(self, req: fw.Request) -> bytes:
        flags = int.from_bytes(req.body[:4], "little")
        fh = int.from_bytes(req.body[8:16], "little")
        if flags & GETATTR_FH and fh in self.files:  # an open file, maybe unlinked
            return fw.attr_out(req.nodeid, os.fstat(self.files[fh]))
        return fw.attr_out(req.nodeid, os.lstat(self.real(self.paths[req.nodeid])))

    def op_setattr(self, req: fw.Request) -> bytes:
        valid, _, fh, size, _, atime, mtime, _, _, _, _, mode, _, uid, gid, _ = struct_setattr(
            req.body
        )
        path = self.real(self.paths[req.nodeid])
        if valid & fw.FATTR_SIZE:
            fd = self.files[fh] if valid & fw.FATTR_FH else os.open(path, os.O_RDWR)
            try:
                self.before_resize(fd, size)
                os.ftruncate(fd, size)
            finally:
                if not valid & fw.FATTR_FH:
                    os.close(fd)
        if valid & fw.FATTR_MODE:
            os.chmod(path, stat.S_IMODE(mode))
        if valid & (fw.FATTR_UID | fw.FATTR_GID):
            os.chown(path, uid if valid & fw.FATTR_UID else -1, gid if valid & fw.FATTR_GID else -1)
        if valid & (fw.FATTR_ATIME | fw.FATTR_MTIME | fw.FATTR_ATIME_NOW | fw.FATTR_MTIME_NOW):
            st = os.lstat(path)
            times = (
                st.st_atime if not valid & fw.FATTR_ATIME else atime,
                st.st_mtime if not valid & fw.FATTR_MTIME else mtime,
            )
            os.utime(path, None if valid & (fw.FATTR_ATIME_NOW | fw.FATTR_MTIME_NOW) else times)
        return fw.attr_out(req.nodeid, os.lstat(path))

    def op_access(self, req: fw.Request) -> bytes:
        return b""

    def op_statfs(self, req: fw.Request) -> bytes:
        return fw.statfs_out(os.statvfs(self.backing))

    def op_mkdir(self, req: fw.Request) -> bytes:
        mode, umask = struct_pair(req.body)
        (name,) = fw.names(req.body[8:], 1)
        rel = self.child(req.nodeid, name)
        os.mkdir(self.real(rel), mode & ~umask & 0o7777)
        return fw.entry_out(self.node_of(rel), os.lstat(self.real(rel)))

    def op_unlink(self, req: fw.Request) -> bytes:
        (name,) = fw.names(req.body, 1)
        rel = self.child(req.nodeid, name)
        os.unlink(self.real(rel))
        self.gone(rel)
        return b""

    def op_rmdir(self, req: fw.Request) -> bytes:
        (name,) = fw.names(req.body, 1)
        rel = self.child(req.nodeid, name)
        os.rmdir(self.real(rel))
        self.gone(rel)
        return b""

    def op_rename(self, req: fw.Request) -> bytes:
        return self._rename(req, req.body[8:])

    def op_rename2(self, req: fw.Request) -> bytes:
        flags = int.from_bytes(req.body[8:12], "little")
        if flags:
            raise OSError(errno.EINVAL, "rename flags are not supported")
        return self._rename(req, req.body[16:])

    def _rename(self, req: fw.Request, rest: bytes) -> bytes:
        newdir = int.from_bytes(req.body[:8], "little")
        old_name, new_name = fw.names(rest, 2)
        old, new = self.child(req.nodeid, old_name), self.child(newdir, new_name)
        os.replace(self.real(old), self.real(new))
        self.gone(new)
        self.moved(old, new)
        return b""

    def _open(self, path: str, flags: int, mode: int = 0) -> int:
        flags &= ~(os.O_APPEND | getattr(os, "O_DIRECT", 0))  # offsets come from the kernel
        if flags & os.O_ACCMODE == os.O_WRONLY:  # undo records read what a write replaces
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        fd = os.open(path, flags | os.O_CLOEXEC, mode)
        fh = self._next_fh
        self._next_fh += 1
        self.files[fh] = fd
        return fh

    def op_open(self, req: fw.Request) -> bytes:
        flags, _ = struct_pair(req.body)
        path = self.real(self.paths[req.nodeid])
        fh = self._open(path, flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))
        if flags & os.O_TRUNC:  # recorded before it happens, like any truncation
            fd = self.files[fh]
            self.before_resize(fd, 0)
            os.ftruncate(fd, 0)
        return fw.open_out(fh)

    def op_create(self, req: fw.Request) -> bytes:
        flags, mode, umask, _ = struct_quad(req.body)
        (name,) = fw.names(req.body[16:], 1)
        rel = self.child(req.nodeid, name)
        path = self.real(rel)
        fh = self._open(path, (flags | os.O_CREAT) & ~os.O_TRUNC, mode & ~umask & 0o7777)
        if flags & os.O_TRUNC:
            self.before_resize(self.files[fh], 0)
            os.ftruncate(self.files[fh], 0)
        st = os.fstat(self.files[fh])
        return fw.entry_out(self.node_of(rel), st) + fw.open_out(fh)

    def op_read(self, req: fw.Request) -> bytes:
        fh, offset, size = struct_io(req.body)
        return os.pread(self.files[fh], size, offset)

    def op_write(self, req: fw.Request) -> bytes:
        fh, offset, size = struct_io(req.body)
        data = req.body[40 : 40 + size]
        fd = self.files[fh]
        self.before_write(fd, offset, len(data))
        written = os.pwrite(fd, data, offset)
        return fw.WRITE_OUT.pack(written, 0)

    def op_fallocate(self, req: fw.Request) -> bytes:
        fh = int.from_bytes(req.body[:8], "little")
        offset = int.from_bytes(req.body[8:16], "little")
        length = int.from_bytes(req.body[16:24], "little")
        mode = int.from_bytes(req.body[24:28], "little")
        if mode:
            raise OSError(errno.EOPNOTSUPP, "fallocate modes are not supported")
        fd = self.files[fh]
        self._record(fd)  # the old size is all there is to undo
        os.posix_fallocate(fd, offset, length)
        return b""

    def op_flush(self, req: fw.Request) -> bytes:
        return b""

    def op_fsync(self, req: fw.Request) -> bytes:
        fh = int.from_bytes(req.body[:8], "little")
        self.synced(self.files[fh])
        return b""

    def op_release(self, req: fw.Request) -> bytes:
        fh = int.from_bytes(req.body[:8], "little")
        fd = self.files.pop(fh, None)
        if fd is not None:
            os.close(fd)
        return b""

    def op_opendir(self, req: fw.Request) -> bytes:
        path = self.real(self.paths[req.nodeid])
        entries = [(".", req.nodeid), ("..", fw.ROOT_ID)]
        entries += [(name, 0) for name in sorted(os.listdir(path))]
        fh = self._next_fh
        self._next_fh += 1
        self.dirs[fh] = entries
        return fw.open_out(fh)

    def op_readdir(self, req: fw.Request) -> bytes:
        fh, offset, size = struct_io(req.body)
        entries = self.dirs.get(fh, [])
        base = self.paths[req.nodeid]
        out = b""
        for index in range(offset, len(entries)):
            name, _ = entries[index]
            rel = f"{base}/{name}" if base and name not in (".", "..") else name
            try:
                mode = os.lstat(self.real(rel) if name not in (".", "..") else self.real(base))
            except FileNotFoundError:
                continue
            chunk = fw.dirent(mode.st_ino, index + 1, name, mode.st_mode)
            if len(out) + len(chunk) > size:
                break
            out += chunk
        return out

    def op_releasedir(self, req: fw.Request) -> bytes:
        self.dirs.pop(int.from_bytes(req.body[:8], "little"), None)
        return b""

    def op_fsyncdir(self, req: fw.Request) -> bytes:
        return b""


def struct_pair(body: bytes) -> tuple[int, int]:
    return int.from_bytes(body[:4], "little"), int.from_bytes(body[4:8], "little")


def struct_quad(body: bytes) -> tuple[int, int, int, int]:
    return tuple(int.from_bytes(body[i : i + 4], "little") for i in range(0, 16, 4))  # type: ignore[return-value]


def struct_io(body: bytes) -> tuple[int, int, int]:
    """(fh, offset, size) of a read or write request."""
    return (
        int.from_bytes(body[:8], "little"),
        int.from_bytes(body[8:16], "little"),
        int.from_bytes(body[16:20], "little"),
    )


SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")


def struct_setattr(body: bytes) -> tuple[int, ...]:
    return SETATTR_IN.unpack_from(body)


# --- the daemon --------------------------------------------------------------------------


def powerfs_unavailable() -> str | None:
    """Why powerfs cannot mount here (None: it can)."""
    if sys.platform != "linux":
        return "FUSE mounts need Linux"
    if os.geteuid() != 0:
        return f"mounting a FUSE device needs root; running as uid {os.geteuid()}"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is missing or not usable"
    return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount(mountpoint: Path, fd: int) -> None:
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if _libc().mount(b"powerfs", os.fsencode(mountpoint), b"fuse.powerfs", 0, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {mountpoint}: {os.strerror(err)}")


def unmount(mountpoint: Path) -> None:
    _libc().umount2(os.fsencode(mountpoint), MNT_DETACH)


def _raise(exc: type[Exception]) -> signal.Handlers:
    def handler(_signum: int, _frame: object) -> None:
        raise exc()

    return handler  # type: ignore[return-value]


def _next_request(fd: int, poller: select.poll, wakeup: int) -> bytes | None:
    """The next request on /dev/fuse (non-blocking), None when there is none (yet).

    A signal writes to ``wakeup`` (``signal.set_wakeup_fd``), so poll returns at once and
    its Python handler runs before the next call instead of after the next request."""
    poller.poll()  # EINTR: the handler runs (and raises) as poll returns
    with contextlib.suppress(BlockingIOError):
        while os.read(wakeup, 512):
            pass
    try:
        return os.read(fd, fw.READ_BUFFER)
    except BlockingIOError:  # woken by the signal pipe, or a request taken back
        return None
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # an interrupted request: go on
            return None
        raise


def serve(backing: Path, mountpoint: Path) -> dict[str, int] | None:
    """Mount, serve until a signal; the bytes lost per file after a power-off."""
    fs = PowerFS(backing)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(wakeup_r, select.POLLIN)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGUSR1, _raise(PowerOff))
    signal.signal(signal.SIGTERM, _raise(Shutdown))
    mount(mountpoint, fd)
    print("powerfs ready", flush=True)
    lost: dict[str, int] | None = None
    try:
        while True:
            try:
                data = _next_request(fd, poller, wakeup_r)
            except OSError as exc:
                if exc.errno == errno.ENODEV:  # unmounted under us
                    break
                raise
            if data is None:
                continue
            answer = fs.handle(fw.parse_request(data))
            if answer is not None:
                with contextlib.suppress(FileNotFoundError):  # the request was interrupted
                    os.write(fd, answer)
    except PowerOff:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        lost = fs.power_off()
    except Shutdown:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        unmount(mountpoint)
        for handle in fs.files.values():
            with contextlib.suppress(OSError):
                os.close(handle)
        os.close(fd)
        signal.set_wakeup_fd(-1)
        os.close(wakeup_r)
        os.close(wakeup_w)
    return lost


def report_path(backing: Path) -> Path:
    return backing.parent / f"powerfs-{backing.name}.json"


def main() -> None:
    backing, mountpoint = Path(sys.argv[1]).absolute(), Path(sys.argv[2]).absolute()
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    lost = serve(backing, mountpoint)
    if lost is not None:
        summary = {"files": len(lost), "bytes": sum(lost.values()), "per_file": lost}
        report_path(backing).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"powerfs power-off: {summary['bytes']} unsynced bytes lost in {len(lost)} files")


if __name__ == "__main__":
    main()
