"""The ACL shell every server shares: load plain_acl.yml, watch it, guard a handler table.

Rules:
- The file is RocketMQ's plain_acl.yml, read with PyYAML's ``safe_load`` (never ``load``:
  no Python objects from a file) and parsed by the pure ``protocol.acl``.
- At start a missing or bad file is an ``AclConfigError`` (the server refuses to start
  with that message). Later, the file is polled every ``poll_interval_s``: a change of its
  mtime, size or inode reloads it; a bad or vanished file keeps the accounts in force and
  logs one line per change seen; a good one logs one line with the account count.
- ``protect`` wraps each handler of a table with the check; the table is untouched when
  ACL is off, so that costs nothing per request. A refused request gets NO_PERMISSION (16)
  with the reason as its remark and is logged (at most once per second per request code,
  with a count of those left out: a flood of bad requests must not flood the log, and
  each kind of refused request still shows).
- The decision itself is ``protocol.acl.decide`` on the config in force: pure, no await.
- Files that hold secrets (the plain-access file, a broker config with ``secretKey``) are
  checked at start: readable by group or others gets a warning naming the mode.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import trio
import yaml

from protocol import trust
from protocol.acl import AclConfig, AclConfigError, decide, peer_ip
from protocol.codes import ResponseCode
from protocol.command import RemotingCommand
from protocol.limits import LogThrottle
from protocol.rpc import Connection, Handler, LaterAnswer, request_name

log = logging.getLogger(__name__)

#: How often the file's mtime is looked at (RocketMQ's watcher: 500 ms; ours is cheaper
#: still at 2 s, and a changed file takes effect within that).
POLL_INTERVAL_S = 2.0
#: Largest plain-access file read (a file of 10,000 accounts is ~2 MiB).
MAX_FILE_BYTES = 16 * 1024 * 1024
_REFUSAL_LOG_INTERVAL_S = 1.0


def load_acl_file(path: Path) -> AclConfig:
    """Read and parse ``path``; ``AclConfigError`` starts with the path."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise AclConfigError(f"{path}: cannot read the ACL file: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise AclConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise AclConfigError(f"{path}: not valid YAML: {problem}") from None
    try:
        return AclConfig.from_document(doc)
    except AclConfigError as exc:
        raise AclConfigError(f"{path}: {exc}") from None


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class AclGuard:
    """The accounts in force for one server, and the check in front of its handlers."""

    def __init__(self, path: Path, *, name: str, poll_interval_s: float = POLL_INTERVAL_S):
        self.path = path
        self.name = name
        self.poll_interval_s = poll_interval_s
        self._stamp = _file_stamp(path)
        self.config = load_acl_file(path)
        trust.warn_if_others_can_read(path, f"{name}: ACL file", log.warning)
        self.refused = 0
        self.reloads = 0
        #: One per request code refused so far (bounded: only codes with a handler get here).
        self._refusal_throttles: dict[int, LogThrottle] = {}

    def check(self, request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
        """None when ``request`` may pass, else the NO_PERMISSION answer (and a log line)."""
        decision = decide(
            self.config, request.code, request.ext_fields, request.body, peer_ip(conn.peer)
        )
        if decision.reason is None:
            return None
        self.refused += 1
        throttle = self._refusal_throttles.get(request.code)
        if throttle is None:
            throttle = self._refusal_throttles[request.code] = LogThrottle(_REFUSAL_LOG_INTERVAL_S)
        suppressed = throttle.admit(trio.current_time())
        if suppressed is not None:
            log.warning(
                "%s: refused %s from %s: %s%s",
                self.name,
                request_name(request.code),
                conn.peer,
                decision.reason,
                f" ({suppressed} more refusals not logged)" if suppressed else "",
            )
        return request.respond(ResponseCode.NO_PERMISSION, decision.reason)

    def protect(self, handlers: Mapping[int, Handler]) -> dict[int, Handler]:
        """``handlers`` with the check in front of each one."""
        return {code: self._wrap(handler) for code, handler in handlers.items()}

    def _wrap(self, handler: Handler) -> Handler:
        check = self.check

        async def guarded(
            request: RemotingCommand, conn: Connection
        ) -> RemotingCommand | LaterAnswer | None:
            refusal = check(request, conn)
            if refusal is not None:
                return refusal
            return await handler(request, conn)

        return guarded

    def poll(self) -> bool:
        """Reload when the file changed; True when a new config took effect."""
        stamp = _file_stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            log.warning(
                "%s: ACL file %s is gone; keeping the accounts in force", self.name, self.path
            )
            return False
        try:
            config = load_acl_file(self.path)
        except AclConfigError as exc:
            log.warning(
                "%s: ACL file not reloaded, keeping the accounts in force: %s", self.name, exc
            )
            return False
        self.config = config
        self.reloads += 1
        log.info(
            "%s: ACL file %s reloaded: %d accounts, %d global white-list entries",
            self.name,
            self.path,
            len(config.accounts),
            len(config.global_white),
        )
        return True

    async def watch(self) -> None:
        """Poll the file until cancelled."""
        while True:
            await trio.sleep(self.poll_interval_s)
            self.poll()


def open_guard(enabled: bool, path: str | Path | None, *, name: str) -> AclGuard | None:
    """The guard a server runs with, or None when ACL is off; raises ``AclConfigError``."""
    if not enabled:
        return None
    if not path:
        raise AclConfigError(
            "ACL is enabled but no plain-access file is given (aclFilePath, --acl-file)"
        )
    guard = AclGuard(Path(path), name=name)
    log.info(
        "%s: ACL enabled with %s: %d accounts, %d global white-list entries",
        name,
        path,
        len(guard.config.accounts),
        len(guard.config.global_white),
    )
    return guard


def protect(guard: AclGuard | None, handlers: Mapping[int, Handler]) -> Mapping[int, Handler]:
    """``handlers`` guarded by ``guard``; the very same table when ACL is off."""
    return handlers if guard is None else guard.protect(handlers)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a port on this machine (names other than
    ``localhost`` count as reachable: what they resolve to may change)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, guard: AclGuard | None, *, name: str) -> bool:
    """Log a warning when ``host`` is not loopback and ACL is off (issue 16 part 4); True
    when it warned."""
    if guard is not None or is_loopback(host):
        return False
    log.warning(
        "%s: listening on %s without ACL: anyone who reaches this port can use it "
        "(turn ACL on with aclEnable and a plain-access file, or bind 127.0.0.1)",
        name,
        host or "every interface",
    )
    return True


__all__ = [
    "POLL_INTERVAL_S",
    "AclGuard",
    "is_loopback",
    "load_acl_file",
    "open_guard",
    "protect",
    "warn_if_exposed",
]
