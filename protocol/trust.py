"""Cluster-internal trust: the cluster secret, request signatures, the HA challenge.

Rules (issue 16 part 2):
- Off unless a secret is configured: a node without one signs nothing and checks nothing,
  so plain RocketMQ 4.x clients and brokers are unaffected.
- The secret lives in a file of its own (``load_secret``): at least ``MIN_SECRET_BYTES``
  bytes, surrounding whitespace ignored. A file others may read is used, with a warning
  (``others_can_read``); the secret itself never reaches argv, a log line or a record.
- Internal requests (``NAMESRV_INTERNAL_CODES``, ``CONTROLLER_INTERNAL_CODES``) carry two
  ext fields: ``ClusterTimestamp`` (ms) and ``ClusterSignature``, base64 of
  HMAC-SHA256(secret, content). The content is length-prefixed (no value can pose as a
  key): a version tag, the request code, every ext field by sorted key except the
  signature itself and ACL 1.0's ``AccessKey``/``Signature``/``SecurityToken``, then the
  body. So it composes with ACL either way round: an ACL signature made after ours covers
  our fields; ours never covers ACL's. A signature older or newer than ``MAX_SKEW_MS``
  is refused (a captured request replays for at most that long; TLS stops the capture).
- HA (``ha_challenge``/``ha_proof``): the master sends ``HA_CHALLENGE_MAGIC`` and a
  16-byte nonce first; the slave answers its 16-byte handshake followed by
  HMAC-SHA256(secret, tag || nonce || handshake) before the master sends anything else.
- Pure but for the edges: signing and checking take ``now_ms`` (``wall_ms`` is the clock
  the servers pass), the HA nonce comes in; the secret file is read and written by
  ``load_secret``/``write_secret`` alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import attrs

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.later_answer import LaterAnswer

SIGNATURE_FIELD = "ClusterSignature"
TIMESTAMP_FIELD = "ClusterTimestamp"
#: ACL 1.0's fields (issue 16 part 1): never covered by the cluster signature.
ACL_FIELDS = frozenset({"AccessKey", "Signature", "SecurityToken"})
_EXCLUDED = ACL_FIELDS | {SIGNATURE_FIELD}
#: A signed request is accepted this long either side of the receiver's clock.
MAX_SKEW_MS = 300_000
MIN_SECRET_BYTES = 16
#: Longest secret file read (a secret is a line of text; anything bigger is a mistake).
MAX_SECRET_FILE_BYTES = 4096

#: What a NameServer checks when the cluster secret is set: what only brokers send.
NAMESRV_INTERNAL_CODES = frozenset(
    {RequestCode.REGISTER_BROKER, RequestCode.UNREGISTER_BROKER, RequestCode.BROKER_HEARTBEAT}
)
#: What a controller checks: the codes brokers send, and the two that change a group's
#: master or forget brokers (an admin sends those with the secret too).
CONTROLLER_INTERNAL_CODES = frozenset(
    {
        RequestCode.BROKER_HEARTBEAT,
        RequestCode.CONTROLLER_REGISTER_BROKER,
        RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET,
        RequestCode.CONTROLLER_ELECT_MASTER,
        RequestCode.CLEAN_BROKER_DATA,
        RequestCode.CONTROLLER_GET_NEXT_BROKER_ID,
        RequestCode.CONTROLLER_APPLY_BROKER_ID,
    }
)

HA_CHALLENGE_MAGIC = b"RMQC"
HA_NONCE_BYTES = 16
HA_CHALLENGE_BYTES = len(HA_CHALLENGE_MAGIC) + HA_NONCE_BYTES
HA_PROOF_BYTES = hashlib.sha256().digest_size

_REQUEST_TAG = b"trio-rocketmq cluster request v1"
_HA_TAG = b"trio-rocketmq ha handshake v1"
_LEN = struct.Struct(">I")


class SecretError(ValueError):
    """The cluster secret file is missing, unreadable, too short or too long."""


# --- the secret file -------------------------------------------------------------------


def load_secret(path: Path) -> bytes:
    """The secret in ``path`` (whitespace around it stripped); ``SecretError`` names the file."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"cannot read cluster secret file {path}: {exc.strerror}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise SecretError(f"cluster secret file {path} is over {MAX_SECRET_FILE_BYTES} bytes")
    secret = raw.strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"cluster secret in {path} is {len(secret)} bytes; at least {MIN_SECRET_BYTES} needed"
        )
    return secret


def load_secret_warned(path: Path, warn: Callable[..., None]) -> bytes:
    """``load_secret``, warning through ``warn`` when others may read the file."""
    secret = load_secret(path)
    warn_if_others_can_read(path, "cluster secret file", warn)
    return secret


def others_can_read(path: Path) -> bool:
    """Whether group or others may read ``path`` (a secret file should be mode 0600)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRGRP | stat.S_IROTH))


def warn_if_others_can_read(path: Path, what: str, warn: Callable[..., None]) -> bool:
    """Warn through ``warn`` when group or others may read ``path``, a file holding secrets
    (``what`` names it: "ACL file", "broker config", ...); True when it warned. The one
    place that says so, for every kind of secret file."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False
    if not mode & (stat.S_IRGRP | stat.S_IROTH):
        return False
    warn("%s %s is readable by other users (mode %03o): chmod 600 it", what, path, mode)
    return True


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to a new file of mode 0600 (replacing any; never readable by others
    even for an instant: created 0600, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover temp file
        os.write(fd, secret.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --- request signatures ----------------------------------------------------------------


def _part(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


def signed_content(code: int, ext_fields: Mapping[str, str], body: bytes) -> bytes:
    """The bytes a cluster signature covers (see the rules)."""
    parts = [_part(_REQUEST_TAG), _part(str(code).encode())]
    for key in sorted(ext_fields):
        if key not in _EXCLUDED:
            parts += (_part(key.encode()), _part(ext_fields[key].encode()))
    parts.append(_part(body))
    return b"".join(parts)


def _signature(secret: bytes, code: int, ext_fields: Mapping[str, str], body: bytes) -> str:
    digest = hmac.new(secret, signed_content(code, ext_fields, body), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign(request: RemotingCommand, secret: bytes, *, now_ms: int) -> RemotingCommand:
    """``request`` with ``ClusterTimestamp`` and ``ClusterSignature`` set."""
    ext = dict(request.ext_fields)
    ext[TIMESTAMP_FIELD] = str(now_ms)
    ext.pop(SIGNATURE_FIELD, None)
    ext[SIGNATURE_FIELD] = _signature(secret, request.code, ext, request.body)
    return attrs.evolve(request, ext_fields=ext)


def check(request: RemotingCommand, secret: bytes, *, now_ms: int) -> str | None:
    """None when ``request`` carries a valid, fresh cluster signature; else why not."""
    given = request.ext_fields.get(SIGNATURE_FIELD)
    if given is None:
        return "no cluster signature (ClusterSignature): the sender lacks the cluster secret"
    stamp = request.ext_fields.get(TIMESTAMP_FIELD, "")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 16:
        return f"bad {TIMESTAMP_FIELD} {stamp[:32]!r}"
    skew_ms = abs(now_ms - int(stamp))
    if skew_ms > MAX_SKEW_MS:
        return f"cluster signature is {skew_ms} ms off this node's clock (at most {MAX_SKEW_MS})"
    expected = _signature(secret, request.code, request.ext_fields, request.body)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return "wrong cluster signature: the sender has another secret, or the request changed"
    return None


# --- guarded handler tables ------------------------------------------------------------


class _Peer(Protocol):
    peer: str


C = TypeVar("C", bound=_Peer)
_Handler = Callable[[RemotingCommand, C], Awaitable[RemotingCommand | LaterAnswer | None]]


def guard_handlers(
    handlers: Mapping[int, _Handler[C]],
    codes: frozenset[int],
    *,
    node: str,
    secret: bytes,
    now_ms: Callable[[], int],
    warn: Callable[..., None],
) -> dict[int, _Handler[C]]:
    """``handlers`` where each of ``codes`` first checks the cluster signature. A request
    that fails is answered NO_PERMISSION with the reason and logged through ``warn``
    (a throttled logger: a flood of forgeries costs one line per interval)."""

    def guarded(handler: _Handler[C]) -> _Handler[C]:
        async def checked(
            request: RemotingCommand, conn: C
        ) -> RemotingCommand | LaterAnswer | None:
            reason = check(request, secret, now_ms=now_ms())
            if reason is None:
                return await handler(request, conn)
            name = _code_name(request.code)
            warn("%s: refused %s from %s: %s", node, name, conn.peer, reason)
            return request.respond(ResponseCode.NO_PERMISSION, f"{name} refused: {reason}")

        return checked

    return {code: guarded(h) if code in codes else h for code, h in handlers.items()}


def wall_ms() -> int:
    """The wall clock in ms, as signatures carry it (for the I/O shells to pass in)."""
    return time.time_ns() // 1_000_000


def _code_name(code: int) -> str:
    try:
        return RequestCode(code).name
    except ValueError:
        return f"code {code}"


# --- the HA challenge ------------------------------------------------------------------


def ha_challenge(nonce: bytes) -> bytes:
    """What a master with a secret sends first on a new HA connection."""
    assert len(nonce) == HA_NONCE_BYTES
    return HA_CHALLENGE_MAGIC + nonce


def parse_ha_challenge(data: bytes) -> bytes:
    """The nonce of a challenge; ``ValueError`` when ``data`` is none."""
    if len(data) != HA_CHALLENGE_BYTES or not data.startswith(HA_CHALLENGE_MAGIC):
        raise ValueError("the master sent no cluster challenge (is its cluster secret set?)")
    return data[len(HA_CHALLENGE_MAGIC) :]


def ha_proof(secret: bytes, nonce: bytes, handshake: bytes) -> bytes:
    """The slave's answer: HMAC-SHA256(secret, tag || nonce || its handshake)."""
    return hmac.new(secret, _HA_TAG + nonce + handshake, hashlib.sha256).digest()


def ha_proof_valid(secret: bytes, nonce: bytes, handshake: bytes, proof: bytes) -> bool:
    return hmac.compare_digest(ha_proof(secret, nonce, handshake), proof)
