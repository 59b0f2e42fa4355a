"""Who may replicate: TLS and the cluster-secret challenge on the HA port (issue 16).

Rules:
- Off unless ``HAConfig.cluster_secret`` is set, and then on both ends: the master sends
  a challenge (``protocol.trust.ha_challenge``: magic and a fresh 16-byte nonce) the moment
  it takes a connection; the slave answers its 16-byte handshake followed by
  HMAC-SHA256(secret, tag || nonce || handshake). The master checks it before it sends
  anything else: a peer without the secret never sees an epoch list or a CommitLog byte,
  and never becomes a slave (so it cannot ack a sync write).
- Both waits are bounded: the master's by the handshake deadline of its admission rule
  (a peer that never answers holds a pending slot for ``handshake_timeout_s`` at most), the
  slave's by ``handshake_timeout_s``. A wrong answer closes the connection at once.
- TLS, when configured, comes first (``secure_accept``/``secure_connect``), its handshake
  under ``handshake_timeout_s`` too; a peer that fails it is closed and logged like any
  connection that never became a slave.
"""

from __future__ import annotations

import secrets

import trio

from broker.ha.config import HAConfig
from broker.ha.stream import receive_until, send_all
from broker.ha.wire import SLAVE_HANDSHAKE_BYTES
from protocol import trust
from protocol.errors import ProtocolError, RemotingTimeout
from protocol.tls import TlsRefused, tls_accept, tls_connect

_ANSWER_BYTES = SLAVE_HANDSHAKE_BYTES + trust.HA_PROOF_BYTES


async def challenge_slave(
    stream: trio.abc.Stream, secret: bytes, *, deadline: float, send_timeout_s: float, what: str
) -> bytes | None:
    """Master side: challenge, then check the answer. The bytes for the handshake decoder
    (the handshake and whatever followed the proof), or None when ``deadline`` passed."""
    nonce = secrets.token_bytes(trust.HA_NONCE_BYTES)
    await send_all(stream, trust.ha_challenge(nonce), timeout_s=send_timeout_s, what=what)
    data = b""
    while len(data) < _ANSWER_BYTES:
        chunk = await receive_until(stream, deadline, what=what)
        if chunk is None:
            return None
        data += chunk
    hello, proof = data[:SLAVE_HANDSHAKE_BYTES], data[SLAVE_HANDSHAKE_BYTES:_ANSWER_BYTES]
    if not trust.ha_proof_valid(secret, nonce, hello, proof):
        raise ProtocolError(f"{what} failed the cluster challenge (no or another cluster secret)")
    return hello + data[_ANSWER_BYTES:]


async def answer_master(
    stream: trio.abc.Stream,
    secret: bytes,
    hello: bytes,
    *,
    timeout_s: float,
    send_timeout_s: float,
    what: str,
) -> None:
    """Slave side: wait for the master's challenge, send ``hello`` with its proof."""
    deadline = trio.current_time() + timeout_s
    data = b""
    while len(data) < trust.HA_CHALLENGE_BYTES:
        chunk = await receive_until(stream, deadline, what=what)
        if chunk is None:
            raise RemotingTimeout(
                f"{what} sent no cluster challenge in {timeout_s:.1f} s "
                "(is the cluster secret set on it?)"
            )
        data += chunk
    try:
        nonce = trust.parse_ha_challenge(data)
    except ValueError as exc:
        raise ProtocolError(f"{what}: {exc}") from None
    answer = hello + trust.ha_proof(secret, nonce, hello)
    await send_all(stream, answer, timeout_s=send_timeout_s, what=what)


async def secure_accept(stream: trio.SocketStream, config: HAConfig, what: str) -> trio.abc.Stream:
    """Master side: ``stream`` as the slave will speak it (TLS when configured)."""
    if config.server_tls is None:
        return stream
    try:  # the caller's handshake deadline bounds this too
        return await tls_accept(stream, config.server_tls, timeout_s=config.handshake_timeout_s)
    except TlsRefused as exc:
        raise ProtocolError(f"{what}: {exc}") from None


async def secure_connect(
    stream: trio.SocketStream, address: str, config: HAConfig, what: str
) -> trio.abc.Stream:
    """Slave side: ``stream`` to the master at ``address`` (TLS when configured)."""
    if config.client_tls is None:
        return stream
    try:
        return await tls_connect(
            stream,
            config.client_tls,
            host=address.rpartition(":")[0].strip("[]"),
            timeout_s=config.handshake_timeout_s,
        )
    except TlsRefused as exc:
        raise ProtocolError(f"{what}: {exc}") from None
