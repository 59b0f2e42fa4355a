"""Replicating controller commands with pysyncobj, bridged to Trio.

Rules (DESIGN §6, reference/pysyncobj-verified.md):
- The Raft log holds CBOR bytes (``protocol/cbor.py``), never pickled Python objects; one
  ``@replicated`` method decodes a command, runs the pure ``controller.state.apply`` and
  returns its ``Result``. It never raises: a raise would wedge every replica forever.
  Apply reads no clock and no local table: the leader stamps what it needs into the command.
- The peers' port is protected by the shared secret (pysyncobj ``password``) and bound to
  the configured interface only (``bindAddress``): without both, anyone who reaches the port
  can run code through pickle.
- ``journalFile`` and ``fullDumpFile`` are always set together. Snapshots hold only our
  state (CBOR) plus pysyncobj's own bookkeeping, through a custom serializer.
- Durability: pysyncobj never fsyncs. ``DurableFileJournal`` closes that: every journal
  append or truncation is fsynced before pysyncobj goes on to acknowledge or replicate it,
  and term/vote changes are fsynced (temp file, then directory after the rename) before a
  vote is sent (``DurableMetaStorer``, which also refuses a corrupt term/vote file instead
  of forgetting the vote as pysyncobj does). Snapshots are fsynced before they replace
  the old one, and the journal is cut only once the snapshot replacing it (ours, or one
  installed from the leader, which pysyncobj writes without fsync) is durable.
- Truncate only on conflict: pysyncobj's follower deletes every entry after
  ``prevLogIdx`` whenever its log is longer (a heartbeat or a re-sent range is enough, and
  the leader re-sends overlapping ranges all the time), then re-adds the leader's copy;
  a leader crash in that window could shorten a follower's log below what it had
  acknowledged. ``skip_known_entries`` rewrites each append_entries before pysyncobj sees
  it so that entries the follower already holds (same index and term) are skipped, and
  the follower's later entries of the sender's own term are kept (only that leader can
  have written them, so they match its log); pysyncobj then truncates only from a real
  conflict. With fsync on, a simultaneous crash (even a power loss) of every controller
  loses no command whose caller was told it committed.
- pysyncobj runs its own tick thread; this is the only module that touches threads. The
  ``SyncObj`` is built on the Trio thread (its tick thread stops when the constructing
  thread exits), callbacks hop back with ``TrioToken.run_sync_soon``, and nothing
  unpicklable lives on the ``SyncObj`` subclass.
- A new leader serves only after it committed a no-op of its own term (``wait_leader_ready``),
  so it has applied everything committed before it.
- The Raft port holds no connection that does not name a peer within
  ``connectionTimeout``, and at most ``MAX_UNKNOWN_RAFT_CONNECTIONS`` at once; a
  listening socket an accept failure closed is bound again (``GuardedTransport``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj import journal as pysyncobj_journal
from pysyncobj import serializer as pysyncobj_serializer
from pysyncobj import syncobj as pysyncobj_syncobj
from pysyncobj.tcp_server import SERVER_STATE
from pysyncobj.transport import TCPTransport

from controller import state as sm
from protocol import cbor
from protocol.codes import ResponseCode
from protocol.errors import ControllerNotLeader, MalformedBody, RemotingTimeout, ServerError

log = logging.getLogger(__name__)

_COMMAND_KIND = "controller-command"
_SNAPSHOT_KIND = "controller-snapshot"
_VERSION = 1
_NOOP = "noop"
#: File names in ``RaftConfig.data_dir``.
JOURNAL_FILE = "raft.journal"
SNAPSHOT_FILE = "raft.snapshot"


# --- durability: fsync what pysyncobj only writes ---------------------------------------------


def _fsync_path(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_journal_header(path: str) -> None:
    """ValueError unless ``path`` is absent, empty, or starts with pysyncobj's header."""
    try:
        with open(path, "rb") as f:
            head = f.read(pysyncobj_journal.FIRST_RECORD_OFFSET)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return
    if not head:
        return
    name = pysyncobj_journal.APP_NAME.ljust(pysyncobj_journal.NAME_SIZE, b"\0")
    if len(head) < len(name) + 16 or head[: len(name)] != name:
        raise ValueError(f"no pysyncobj journal header (starts {head[:16]!r})")
    form, last = struct.unpack_from("<II", head, pysyncobj_journal.NAME_SIZE + 8)
    if form != pysyncobj_journal.JOURNAL_FORMAT_VERSION:
        raise ValueError(
            f"journal format {form}, expected {pysyncobj_journal.JOURNAL_FORMAT_VERSION}"
        )
    if not pysyncobj_journal.FIRST_RECORD_OFFSET <= last <= size:
        raise ValueError(f"last record offset {last} outside the {size}-byte file")


class DurableFileJournal(pysyncobj_journal.FileJournal):  # type: ignore[misc]
    """pysyncobj's FileJournal with fsync after every change (see the module rules)."""

    def __init__(self, journal_file: str) -> None:
        self._path = journal_file
        try:
            _check_journal_header(journal_file)
            super().__init__(journal_file)  # parses every entry of an existing file
        except (struct.error, ValueError) as exc:
            # pysyncobj would take garbage for an empty journal, or fail on a short read.
            raise OSError(f"Raft journal {journal_file} is corrupt: {exc}") from None

    def _sync(self) -> None:
        self.flush()  # msync of the mmap
        _fsync_path(self._path)

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._sync()

    def clear(self) -> None:
        # pysyncobj clears the journal right after a snapshot replaced it (log compaction,
        # or a snapshot installed from the leader, whose file it wrote without fsync): make
        # that snapshot durable (file, then the rename in the directory) before the entries
        # it replaces are gone.
        snapshot = os.path.join(os.path.dirname(os.path.abspath(self._path)), SNAPSHOT_FILE)
        if os.path.exists(snapshot):
            _fsync_path(snapshot)
        _fsync_path(os.path.dirname(os.path.abspath(self._path)))
        super().clear()
        self._sync()

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        super().deleteEntriesFrom(entryFrom)
        self._sync()


class DurableMetaStorer(pysyncobj_journal.MetaStorer):  # type: ignore[misc]
    """pysyncobj's term/vote file, made durable and strict.

    pysyncobj renames the temp file without syncing it, and reads the file with an
    ``open`` it never closes, swallowing every error: a corrupt file silently forgets the
    vote, so the node could vote twice in one term. Here the temp file is fsynced before
    the rename and the directory after it; an absent file is a fresh node, an unreadable
    one refuses to start.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._path = path

    def getMeta(self) -> Any:
        try:
            with open(self._path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        try:
            return pysyncobj_journal.loads(data)
        except Exception as exc:
            raise OSError(f"Raft term/vote file {self._path} is corrupt: {exc!r}") from None

    def storeMeta(self, meta: Any) -> None:
        tmp = self._path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(pysyncobj_journal.dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        _fsync_path(os.path.dirname(os.path.abspath(self._path)))


class _ClosingSerializer(pysyncobj_serializer.Serializer):  # type: ignore[misc]
    """pysyncobj's Serializer, closing the snapshot file of a transmission to a lagging
    follower once it is finished or cancelled (pysyncobj drops the open file object,
    which leaks a descriptor per snapshot sent and raises ResourceWarning)."""

    def _transmissions(self) -> dict[Any, Any]:
        table: dict[Any, Any] = self._Serializer__transmissions
        return table

    def _close_dropped(self, held: dict[Any, Any]) -> None:
        current = self._transmissions()
        for key, transmission in held.items():
            if current.get(key) is not transmission and "file" in transmission:
                transmission["file"].close()

    def getTransmissionData(self, transmissionID: Any) -> Any:
        held = dict(self._transmissions())
        try:
            return super().getTransmissionData(transmissionID)
        finally:
            self._close_dropped(held)

    def cancelTransmisstion(self, id: Any) -> None:  # pysyncobj spells it so
        held = dict(self._transmissions())
        super().cancelTransmisstion(id)
        self._close_dropped(held)


def _create_journal(journal_file: str | None = None) -> Any:
    if journal_file is None:
        return pysyncobj_journal.MemoryJournal()
    return DurableFileJournal(journal_file)


def install_durable_journal() -> None:
    """Make every SyncObj of this process use ``DurableFileJournal``,
    ``DurableMetaStorer`` and ``_ClosingSerializer`` (idempotent)."""
    pysyncobj_syncobj.createJournal = _create_journal
    pysyncobj_journal.MetaStorer = DurableMetaStorer
    pysyncobj_syncobj.Serializer = _ClosingSerializer


# --- the replicated object ---------------------------------------------------------------------


class _StateBox:
    """Holds the applied state outside the SyncObj's pickled attributes."""

    def __init__(self) -> None:
        self.state = sm.ControllerState()
        self.applied = 0


def skip_known_entries(
    message: dict[str, Any], entry_term: Callable[[int], int | None], last_index: int
) -> dict[str, Any]:
    """Rewrite a regular append_entries so pysyncobj truncates only on a real conflict.

    ``entry_term(i)`` is the term of this log's entry ``i`` (None when absent or
    compacted), ``last_index`` its last index. Pure; returns ``message`` itself when there
    is nothing to change (a snapshot transmission, a ``prevLogIdx`` this log does not
    match: pysyncobj's own reject path handles those).
    """
    if "prevLogIdx" not in message or message.get("transmission") is not None:
        return message
    prev_idx, prev_term = message["prevLogIdx"], message["prevLogTerm"]
    if entry_term(prev_idx) != prev_term:
        return message
    entries = list(message.get("entries") or [])
    k = 0
    while k < len(entries) and entry_term(entries[k][1]) == entries[k][2]:
        prev_idx, prev_term = entries[k][1], entries[k][2]
        k += 1
    if k == 0 and entries:  # the first entry is new or conflicts: nothing to skip
        return message
    if k < len(entries):  # a conflict (truncated from there) or entries past our end
        return {**message, "prevLogIdx": prev_idx, "prevLogTerm": prev_term, "entries": entries[k:]}
    # Everything sent is here already. Our later entries of the sender's term were written
    # by that same leader (one leader per term), so they match its log: keep them.
    term = message["term"]
    while prev_idx < last_index and entry_term(prev_idx + 1) == term:
        prev_idx += 1
    if (prev_idx, entries) == (message["prevLogIdx"], message.get("entries") or []):
        return message
    return {**message, "prevLogIdx": prev_idx, "prevLogTerm": entry_term(prev_idx), "entries": []}


# --- the Raft port against connections that are no peer's ---------------------------------------

#: Incoming Raft connections a node holds before they name a peer (the password handshake
#: and the peer's address take a few milliseconds); peers are few and connect once each.
MAX_UNKNOWN_RAFT_CONNECTIONS = 64


class GuardedTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport with the Raft port's incoming connections bounded.

    pysyncobj checks a connection's read timeout only when the connection has an event,
    so one that never sends a byte was held forever: idle connections piled up until the
    process ran out of descriptors. And an accept that fails (EMFILE) makes its
    ``TcpServer`` close the listening socket while the transport stays ready, so the node
    never listened again and the peers that connect to it could not. Here (in the tick
    thread, ``_onTick``): a connection that has not named a peer within
    ``connectionTimeout`` is closed, at most ``MAX_UNKNOWN_RAFT_CONNECTIONS`` are held (a
    new one closes the oldest), and a closed listener is bound again every
    ``bindRetryTime``.
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        #: Unknown connection → when it was accepted (monotonic s); pruned every tick.
        self._accepted_at: dict[Any, float] = {}
        self._last_rebind_s = 0.0
        super().__init__(syncObj, selfNode, otherNodes)

    def _onNewIncomingConnection(self, conn: Any) -> None:
        super()._onNewIncomingConnection(conn)
        self._accepted_at[conn] = time.monotonic()
        unknown = self._unknownConnections
        if len(unknown) > MAX_UNKNOWN_RAFT_CONNECTIONS:
            oldest = min(unknown, key=lambda c: self._accepted_at.get(c, 0.0))
            oldest.disconnect()  # _onDisconnected drops it from the unknown set

    def _onTick(self) -> None:
        super()._onTick()
        now = time.monotonic()
        too_old = now - self._syncObj.conf.connectionTimeout
        for conn, accepted_s in list(self._accepted_at.items()):
            if conn not in self._unknownConnections:
                del self._accepted_at[conn]  # it named a peer, or is gone
            elif accepted_s < too_old:
                del self._accepted_at[conn]
                conn.disconnect()
        server = self._server
        closed = getattr(server, "_TcpServer__state", None) == SERVER_STATE.UNBINDED
        if self._ready and closed and now >= self._last_rebind_s + self._syncObj.conf.bindRetryTime:
            self._last_rebind_s = now
            try:
                server.bind()
            except OSError as exc:
                log.warning(
                    "the Raft port %s is closed and cannot be bound again: %s", self._selfNode, exc
                )
            else:
                log.warning(
                    "the Raft port %s was closed (a failed accept); listening again", self._selfNode
                )


class _ControllerSyncObj(SyncObj):  # type: ignore[misc]
    def __init__(self, self_addr: str, partners: Sequence[str], conf: Any, box: _StateBox) -> None:
        # Set before super().__init__ so pysyncobj's own snapshot never pickles it.
        self._box = box
        super().__init__(self_addr, list(partners), conf, transportClass=GuardedTransport)

    # pysyncobj registers ``self.__onMessageReceived`` (name-mangled) as its transport
    # callback, so this override sees every peer message first (in the tick thread).
    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        if (
            isinstance(message, dict)
            and message.get("type") == "append_entries"
            and message.get("term", -1) >= self._SyncObj__raftCurrentTerm
        ):
            log_entries = self._SyncObj__raftLog
            first = log_entries[0][1]

            def entry_term(index: int) -> int | None:
                offset = index - first
                return log_entries[offset][2] if 0 <= offset < len(log_entries) else None

            message = skip_known_entries(message, entry_term, log_entries[-1][1])
        super()._SyncObj__onMessageReceived(node, message)

    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, data: bytes) -> Any:
        """Decode, validate and apply one command. Never raises (see module rules)."""
        try:
            _, payload = cbor.loads(data, kind=_COMMAND_KIND, max_version=_VERSION)
            if payload == _NOOP:
                return None
            command = sm.command_from_payload(payload)
            new_state, result = sm.apply(self._box.state, command)
            self._box.state = new_state
            self._box.applied += 1
            return result
        except Exception as exc:  # a raise here would wedge every replica
            log.error("controller: refused a malformed log entry: %r", exc)
            return sm.Result(
                code=ResponseCode.CONTROLLER_INVALID_REQUEST, remark=f"malformed command: {exc}"
            )


def _make_serializers(
    box: _StateBox,
) -> tuple[Callable[[str, Any], None], Callable[[str], Any]]:
    def serialize(path: str, internal: Any) -> None:
        data = cbor.dumps(
            _SNAPSHOT_KIND,
            _VERSION,
            {"state": sm.to_payload(box.state), "internal": pickle.dumps(internal)},
        )
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def deserialize(path: str) -> Any:
        with open(path, "rb") as f:
            data = f.read()
        _, payload = cbor.loads(data, kind=_SNAPSHOT_KIND, max_version=_VERSION)
        box.state = sm.from_payload(payload["state"])
        # Our own file, written by serialize() above: pysyncobj's bookkeeping (entries, nodes).
        return pickle.loads(payload["internal"])

    return serialize, deserialize


@attrs.frozen(kw_only=True)
class RaftConfig:
    """pysyncobj knobs, tuned per reference/pysyncobj-verified.md §5 and §9."""

    password: str
    data_dir: Path
    append_entries_period_s: float = 0.05
    raft_min_timeout_s: float = 0.3
    raft_max_timeout_s: float = 0.6
    connection_retry_s: float = 0.5
    leader_fallback_timeout_s: float = 2.0
    log_compaction_min_entries: int = 1000
    commit_timeout_s: float = 3.0


def _check_bindable(addr: str) -> None:
    """Raise ``OSError`` (naming ``addr``) when nobody could listen on ``addr`` now."""
    host, _, port = addr.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pysyncobj binds
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot bind the controller's Raft port {addr}: {exc.strerror}"
            ) from None


class RaftNode:
    """One controller's Raft replica; ``submit`` runs a command through the log."""

    def __init__(self, self_addr: str, partners: Sequence[str], config: RaftConfig) -> None:
        if not config.password:
            raise ValueError("the controller's Raft port needs a shared secret (password)")
        self.self_addr = self_addr
        self.partners = list(partners)
        self.config = config
        self._box = _StateBox()
        self._obj: _ControllerSyncObj | None = None
        self._ready_term: int | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Build the SyncObj on this (the Trio) thread; binds the Raft port.

        Raises ``OSError`` when the Raft port cannot be bound: pysyncobj itself would retry
        the bind every second forever, silently, leaving a node that never joins.
        """
        install_durable_journal()
        _check_bindable(self.self_addr)
        c = self.config
        c.data_dir.mkdir(parents=True, exist_ok=True)
        serialize, deserialize = _make_serializers(self._box)
        conf = SyncObjConf(
            password=c.password,
            bindAddress=self.self_addr,
            journalFile=str(c.data_dir / JOURNAL_FILE),
            fullDumpFile=str(c.data_dir / SNAPSHOT_FILE),
            serializer=serialize,
            deserializer=deserialize,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=c.append_entries_period_s,
            raftMinTimeout=c.raft_min_timeout_s,
            raftMaxTimeout=c.raft_max_timeout_s,
            connectionRetryTime=c.connection_retry_s,
            connectionTimeout=max(c.raft_max_timeout_s, 1.0),
            leaderFallbackTimeout=c.leader_fallback_timeout_s,
            logCompactionMinEntries=c.log_compaction_min_entries,
            dynamicMembershipChange=False,
        )
        self._obj = _ControllerSyncObj(self.self_addr, self.partners, conf, self._box)

    async def close(self) -> None:
        obj, self._obj = self._obj, None
        if obj is not None:
            await trio.to_thread.run_sync(obj.destroy_synchronous)

    # --- state -------------------------------------------------------------------------

    @property
    def state(self) -> sm.ControllerState:
        """The last applied state (replaced atomically by the tick thread; read-only here)."""
        return self._box.state

    def _status(self) -> dict[str, Any]:
        assert self._obj is not None, "start() first"
        status: dict[str, Any] = self._obj.getStatus()
        return status

    @property
    def is_leader(self) -> bool:
        return self._obj is not None and bool(self._obj._isLeader())

    @property
    def leader_address(self) -> str | None:
        if self._obj is None:
            return None
        leader = self._obj._getLeader()
        return None if leader is None else str(leader.address)

    @property
    def term(self) -> int:
        return int(self._status()["raft_term"])

    def status(self) -> dict[str, Any]:
        status = self._status()
        return {
            "self": self.self_addr,
            "leader": self.leader_address,
            "is_leader": self.is_leader,
            "term": status.get("raft_term"),
            "commit_idx": status.get("commit_idx"),
            "last_applied": status.get("last_applied"),
            "has_quorum": status.get("has_quorum"),
            "partners": self.partners,
        }

    # --- commands ------------------------------------------------------------------------

    async def _replicate(self, payload: Any) -> Any:
        obj = self._obj
        if obj is None or not self.is_leader:
            raise ControllerNotLeader(self.leader_address or "")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        outcome: list[Any] = []

        def callback(result: Any, error: int) -> None:  # runs in pysyncobj's tick thread
            def deliver() -> None:
                outcome.append((result, error))
                done.set()

            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(deliver)

        try:
            data = cbor.dumps(_COMMAND_KIND, _VERSION, payload)
        except UnicodeEncodeError as exc:
            # A lone surrogate from a JSON "\\ud800" escape (legal JSON, and Java strings
            # hold them) cannot go into a log entry: refused before anything is proposed.
            raise ServerError(
                f"a field of the request holds text that is not valid UTF-8 ({exc.reason})",
                code=ResponseCode.CONTROLLER_INVALID_REQUEST,
            ) from None
        obj.apply_command(data, callback=callback)
        with trio.move_on_after(self.config.commit_timeout_s):
            await done.wait()
        if not outcome:
            raise RemotingTimeout(
                f"controller command not committed within {self.config.commit_timeout_s} s "
                "(no quorum?)"
            )
        result, error = outcome[0]
        if error != 0:
            raise ControllerNotLeader(self.leader_address or "")
        return result

    async def submit(self, command: sm.Command) -> sm.Result:
        """Commit ``command`` through the log and return its result (leader only)."""
        result = await self._replicate(sm.command_to_payload(command))
        if not isinstance(result, sm.Result):
            raise MalformedBody(f"controller apply returned {result!r}")
        return result

    async def wait_leader_ready(self) -> bool:
        """True once this leader committed a no-op of its current term (so it applied
        everything committed before it); False if it is not the leader."""
        if not self.is_leader:
            self._ready_term = None
            return False
        term = self.term
        if self._ready_term == term:
            return True
        try:
            await self._replicate(_NOOP)
        except (ControllerNotLeader, RemotingTimeout):
            return False
        self._ready_term = term
        return True
