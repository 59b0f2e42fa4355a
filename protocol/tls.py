"""TLS on any port: contexts from PEM files, the handshake under a deadline, the stream.

Rules (issue 16 part 3):
- The standard library's ``ssl`` with Trio's ``SSLStream``; TLS 1.2 at least. A server
  has a certificate and key, and with ``verify_client`` demands a client certificate
  that chains to its CA file. A client verifies the server against its CA file (the
  system's CAs without one) and checks the host name or IP it dialled.
- Every handshake runs under a deadline (``HANDSHAKE_TIMEOUT_S`` by default) on a
  connection already counted against the server's caps. A peer that speaks plain TCP to
  a TLS port fails the handshake at its first bytes and is closed (``TlsRefused``); one
  that sends nothing is closed at the deadline.
- ``TlsStream`` is what protocol/rpc.py's ``Connection`` reads: it says when decrypted
  bytes wait inside the TLS layer (``wait_readable``), so a reader that first waits for
  the socket never sleeps on data already received. Its ``aclose`` sends close_notify
  for at most ``CLOSE_TIMEOUT_S``, then drops the socket: a peer that does not read can
  never hold a closing connection.
- Context building reads the PEM files (I/O at start, once per process); nothing here
  keeps a secret in memory beyond what ``ssl`` holds.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Mapping
from pathlib import Path

import attrs
import trio

#: SDK and ``rmq admin`` without an explicit choice: TLS when ``$RMQ_TLS`` is 1/true/yes/on
#: or ``$RMQ_TLS_CA_FILE`` is set; the other two name a client certificate and key.
ENV_TLS = "RMQ_TLS"
ENV_TLS_CA_FILE = "RMQ_TLS_CA_FILE"
ENV_TLS_CERT_FILE = "RMQ_TLS_CERT_FILE"
ENV_TLS_KEY_FILE = "RMQ_TLS_KEY_FILE"
#: Deadline of one TLS handshake (either side).
HANDSHAKE_TIMEOUT_S = 10.0
#: How long a closing TLS connection may spend sending close_notify.
CLOSE_TIMEOUT_S = 1.0

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class TlsError(ValueError):
    """A TLS setting is unusable (missing file, key not matching the certificate...)."""


class TlsRefused(Exception):
    """A TLS handshake failed or timed out (the reason in the message)."""


@attrs.frozen(kw_only=True)
class TlsFiles:
    """Where a node's TLS material lives (PEM); empty strings mean "not set"."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    verify_client: bool = False

    @property
    def enabled(self) -> bool:
        """A server speaks TLS when it has a certificate and key."""
        return bool(self.cert_file and self.key_file)

    def check(self) -> None:
        """Raise ``TlsError`` for a half-set configuration."""
        if bool(self.cert_file) != bool(self.key_file):
            raise TlsError("TLS needs both a certificate file and a key file")
        if self.verify_client and not self.ca_file:
            raise TlsError("verifying client certificates needs a CA file")
        if (self.ca_file or self.verify_client) and not self.enabled:
            raise TlsError("a TLS CA file or client verification needs a certificate and key")


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The context a TLS server accepts with; ``TlsError`` names a bad file."""
    files.check()
    assert files.enabled, "a server context needs a certificate and key"
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, files.cert_file, files.key_file)
    if files.verify_client:
        _load_ca(ctx, files.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    *, ca_file: str = "", cert_file: str = "", key_file: str = "", check_hostname: bool = True
) -> ssl.SSLContext:
    """The context a TLS client connects with: the server verified against ``ca_file``
    (the system's CAs when empty); ``cert_file``/``key_file`` for servers that verify
    clients."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        _load_ca(ctx, ca_file)
    if cert_file or key_file:
        if not (cert_file and key_file):
            raise TlsError("a TLS client certificate needs both a certificate and a key file")
        _load_chain(ctx, cert_file, key_file)
    ctx.check_hostname = check_hostname
    return ctx


def client_context_from_env(environ: Mapping[str, str] | None = None) -> ssl.SSLContext | None:
    """The client context ``$RMQ_TLS*`` ask for, or None (plain TCP) when they are unset.
    One context per distinct setting (building one reads files and costs milliseconds)."""
    env = os.environ if environ is None else environ
    on = env.get(ENV_TLS, "").strip().lower() in ("1", "true", "yes", "on")
    ca_file = env.get(ENV_TLS_CA_FILE, "")
    if not (on or ca_file):
        return None
    return _cached_client_context(
        ca_file, env.get(ENV_TLS_CERT_FILE, ""), env.get(ENV_TLS_KEY_FILE, "")
    )


@functools.lru_cache(maxsize=8)
def _cached_client_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    return client_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file)


def _load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise TlsError(f"TLS certificate or key not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"TLS certificate {cert_file} / key {key_file} unusable: {exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca_file: str) -> None:
    if not Path(ca_file).is_file():
        raise TlsError(f"TLS CA file not found: {ca_file}")
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"TLS CA file {ca_file} unusable: {exc}") from None


class TlsStream(trio.abc.Stream):
    """A handshaken ``trio.SSLStream`` over a TCP socket, as ``Connection`` reads it."""

    def __init__(self, ssl_stream: trio.SSLStream[trio.SocketStream]) -> None:
        self._ssl = ssl_stream
        self.socket: trio.socket.SocketType = ssl_stream.transport_stream.socket
        # Inside SSLStream: received ciphertext not yet decrypted, and the SSLObject
        # (decrypted bytes of the current record). Either may hold data the socket no
        # longer shows as readable.
        self._incoming = ssl_stream._incoming
        self._ssl_object = ssl_stream._ssl_object

    async def wait_readable(self) -> None:
        """Return when ``receive_some`` has something to work on."""
        if self._incoming.pending or self._ssl_object.pending():
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.wait_readable(self.socket)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self._ssl.receive_some(max_bytes)
        return data if isinstance(data, bytes) else bytes(data)  # SSLObject.read: bytes

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._ssl.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._ssl.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            try:
                await self._ssl.aclose()  # on cancellation it drops the socket itself
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                # The socket was closed under the stream (``Connection.drop``: answers that
                # must not leave), or the peer went: no close_notify to send.
                await trio.aclose_forcefully(self._ssl.transport_stream)
            return
        await trio.aclose_forcefully(self._ssl.transport_stream)

    @property
    def peer_certificate(self) -> dict[str, object] | None:
        cert = self._ssl.getpeercert()
        return dict(cert) if cert else None


async def _handshake(
    ssl_stream: trio.SSLStream[trio.SocketStream], timeout_s: float, what: str
) -> TlsStream:
    """``ssl_stream`` handshaken; on any failure (ours, the peer's, a cancellation) its
    socket is closed before the error leaves."""
    try:
        with trio.move_on_after(timeout_s):
            try:
                await ssl_stream.do_handshake()
            except (*_TRANSPORT_ERRORS, ssl.SSLError) as exc:
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
                raise TlsRefused(f"TLS handshake with {what} failed: {_reason(cause)}") from None
            return TlsStream(ssl_stream)
        raise TlsRefused(f"TLS handshake with {what} not done in {timeout_s} s")
    except BaseException:
        await trio.aclose_forcefully(ssl_stream.transport_stream)
        raise


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} ({exc.library or 'ssl'})"
    return repr(exc)


async def tls_accept(
    stream: trio.SocketStream, ctx: ssl.SSLContext, *, timeout_s: float = HANDSHAKE_TIMEOUT_S
) -> TlsStream:
    """Server side: the handshake on an accepted socket; ``TlsRefused`` (socket closed)."""
    return await _handshake(trio.SSLStream(stream, ctx, server_side=True), timeout_s, _peer(stream))


async def tls_connect(
    stream: trio.SocketStream,
    ctx: ssl.SSLContext,
    *,
    host: str,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> TlsStream:
    """Client side: the handshake on a connected socket, verifying ``host``."""
    ssl_stream = trio.SSLStream(stream, ctx, server_hostname=host)
    return await _handshake(ssl_stream, timeout_s, _peer(stream))


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


__all__ = [
    "CLOSE_TIMEOUT_S",
    "HANDSHAKE_TIMEOUT_S",
    "TlsError",
    "TlsFiles",
    "TlsRefused",
    "TlsStream",
    "client_context",
    "client_context_from_env",
    "server_context",
    "tls_accept",
    "tls_connect",
]
