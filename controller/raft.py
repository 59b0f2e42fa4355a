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
  and term/vote changes are fsynced (file and directory) before a vote is sent. Snapshots
  are fsynced before they replace the old one. What remains: pysyncobj's follower
  truncates already-applied entries when an append overlaps its log (not only on a term
  conflict) and re-adds the leader's copy; with a stable leader those copies are identical,
  but a leader crash in that window could shorten a follower's log below what it had
  acknowledged. With fsync on, a simultaneous crash (even a power loss) of every controller
  loses no command whose caller was told it committed, except through that window.
- pysyncobj runs its own tick thread; this is the only module that touches threads. The
  ``SyncObj`` is built on the Trio thread (its tick thread stops when the constructing
  thread exits), callbacks hop back with ``TrioToken.run_sync_soon``, and nothing
  unpicklable lives on the ``SyncObj`` subclass.
- A new leader serves only after it committed a no-op of its own term (``wait_leader_ready``),
  so it has applied everything committed before it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj import journal as pysyncobj_journal
from pysyncobj import syncobj as pysyncobj_syncobj

from controller import state as sm
from protocol import cbor
from protocol.codes import ResponseCode
from protocol.errors import ControllerNotLeader, MalformedBody, RemotingTimeout

log = logging.getLogger(__name__)

_COMMAND_KIND = "controller-command"
_SNAPSHOT_KIND = "controller-snapshot"
_VERSION = 1
_NOOP = "noop"


# --- durability: fsync what pysyncobj only writes ---------------------------------------------


def _fsync_path(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableFileJournal(pysyncobj_journal.FileJournal):  # type: ignore[misc]
    """pysyncobj's FileJournal with fsync after every change (see the module rules)."""

    def __init__(self, journal_file: str) -> None:
        self._path = journal_file
        super().__init__(journal_file)

    def _sync(self) -> None:
        self.flush()  # msync of the mmap
        _fsync_path(self._path)

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self._sync()

    def clear(self) -> None:
        super().clear()
        self._sync()

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        super().deleteEntriesFrom(entryFrom)
        self._sync()

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        super().setCurrentTerm(term, votedForNodeId)
        meta = self._path + ".meta"
        _fsync_path(meta)
        _fsync_path(os.path.dirname(os.path.abspath(meta)))


def _create_journal(journal_file: str | None = None) -> Any:
    if journal_file is None:
        return pysyncobj_journal.MemoryJournal()
    return DurableFileJournal(journal_file)


def install_durable_journal() -> None:
    """Make every SyncObj of this process use ``DurableFileJournal`` (idempotent)."""
    pysyncobj_syncobj.createJournal = _create_journal


# --- the replicated object ---------------------------------------------------------------------


class _StateBox:
    """Holds the applied state outside the SyncObj's pickled attributes."""

    def __init__(self) -> None:
        self.state = sm.ControllerState()
        self.applied = 0


class _ControllerSyncObj(SyncObj):  # type: ignore[misc]
    def __init__(self, self_addr: str, partners: Sequence[str], conf: Any, box: _StateBox) -> None:
        # Set before super().__init__ so pysyncobj's own snapshot never pickles it.
        self._box = box
        super().__init__(self_addr, list(partners), conf)

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
        """Build the SyncObj on this (the Trio) thread; binds the Raft port."""
        install_durable_journal()
        c = self.config
        c.data_dir.mkdir(parents=True, exist_ok=True)
        serialize, deserialize = _make_serializers(self._box)
        conf = SyncObjConf(
            password=c.password,
            bindAddress=self.self_addr,
            journalFile=str(c.data_dir / "raft.journal"),
            fullDumpFile=str(c.data_dir / "raft.snapshot"),
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

        data = cbor.dumps(_COMMAND_KIND, _VERSION, payload)
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
