"""TLS on the remoting transport over real loopback sockets (issue 16 part 3).

Certificates come from launcher/certs.py (a real CA, real keys); servers and clients are
protocol/rpc.py's, with the contexts protocol/tls.py builds. Real time, every wait bounded.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from launcher.certs import (
    CA_CERT,
    CLIENT_CERT,
    CLIENT_KEY,
    NODE_CERT,
    NODE_KEY,
    make_test_pki,
    write_test_pki,
)
from protocol.command import RemotingCommand
from protocol.errors import NetworkError
from protocol.rpc import Connection, Handler, RemotingServer, open_client
from protocol.tls import TlsError, TlsFiles, client_context, server_context

WAIT_S = 15.0
ECHO = 7001


async def echo(request: RemotingCommand, conn: Connection) -> RemotingCommand:
    return request.respond(body=request.body)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    write_test_pki(directory, make_test_pki(now=datetime.datetime.now(datetime.UTC)))
    return directory


def server_files(pki: Path, *, verify_client: bool = False) -> TlsFiles:
    return TlsFiles(
        cert_file=str(pki / NODE_CERT),
        key_file=str(pki / NODE_KEY),
        ca_file=str(pki / CA_CERT),
        verify_client=verify_client,
    )


@asynccontextmanager
async def serving(ctx: ssl.SSLContext, **kwargs: Any) -> AsyncIterator[tuple[RemotingServer, str]]:
    handlers: dict[int, Handler] = {ECHO: echo}
    async with trio.open_nursery() as nursery:
        server = RemotingServer(handlers, name="tls-server", tls=ctx, **kwargs)
        port = await nursery.start(server.serve)
        yield server, f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def test_tls_calls_large_and_pipelined(pki_dir: Path) -> None:
    """Frames bigger than a TLS record and many in flight at once all come back whole:
    bytes decrypted ahead of the reader are never stranded behind a socket wait."""
    with trio.fail_after(WAIT_S):
        async with (
            serving(server_context(server_files(pki_dir))) as (server, addr),
            open_client(tls=client_context(ca_file=str(pki_dir / CA_CERT))) as client,
        ):
            big = bytes(range(256)) * 4096  # 1 MiB: 64 TLS records
            response = await client.call(addr, RemotingCommand.request(ECHO, body=big))
            assert response.body == big
            results: dict[int, bytes] = {}

            async def one(i: int) -> None:
                body = str(i).encode() * (1 + i * 37)
                got = await client.call(addr, RemotingCommand.request(ECHO, body=body))
                results[i] = got.body
                assert got.body == body

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one, i)
            assert len(results) == 200
            assert len(server.connections) == 1


async def test_plain_client_is_refused_and_logged_once(
    pki_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain TCP to a TLS port: closed at once, one log line, a TLS client unharmed."""
    ctx = server_context(server_files(pki_dir))
    with trio.fail_after(WAIT_S):
        async with (
            serving(ctx) as (server, addr),
            open_client(tls=client_context(ca_file=str(pki_dir / CA_CERT))) as good,
        ):
            await good.call(addr, RemotingCommand.request(ECHO, body=b"before"))
            with caplog.at_level(logging.WARNING, logger="protocol.rpc"):
                for _ in range(3):
                    async with open_client(name="plain") as plain:
                        with pytest.raises(NetworkError):
                            await plain.call(
                                addr, RemotingCommand.request(ECHO, body=b"x"), timeout_s=5.0
                            )
                while server.refused_connections < 3:  # noqa: ASYNC110 (a counter, no event)
                    await trio.sleep(0.01)
            lines = [r for r in caplog.records if "refused a connection" in r.getMessage()]
            assert len(lines) == 1, [r.getMessage() for r in lines]
            assert "TLS handshake" in lines[0].getMessage()
            got = await good.call(addr, RemotingCommand.request(ECHO, body=b"after"))
            assert got.body == b"after"


async def test_silent_peer_is_closed_at_the_handshake_deadline(
    pki_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket that connects and sends nothing holds its slot only until the deadline."""
    monkeypatch.setattr(
        "protocol.rpc.tls_accept",
        _accept_with(0.5),
    )
    with trio.fail_after(WAIT_S):
        async with serving(server_context(server_files(pki_dir))) as (server, _addr):
            sock = trio.socket.socket()
            with sock:
                await sock.connect(("127.0.0.1", server.port))
                start = trio.current_time()
                data = await sock.recv(100)  # the server closes: EOF
                assert data == b""
                assert trio.current_time() - start < 5.0
            while server.refused_connections < 1:  # noqa: ASYNC110 (counted after the close)
                await trio.sleep(0.01)


def _accept_with(timeout_s: float) -> Any:
    from protocol import tls

    async def accept(stream: trio.SocketStream, ctx: ssl.SSLContext) -> tls.TlsStream:
        return await tls.tls_accept(stream, ctx, timeout_s=timeout_s)

    return accept


async def test_client_verification(pki_dir: Path) -> None:
    """With verify_client the server takes only clients with a certificate of its CA."""
    ctx = server_context(server_files(pki_dir, verify_client=True))
    ca = str(pki_dir / CA_CERT)
    with trio.fail_after(WAIT_S):
        async with serving(ctx) as (_server, addr):
            with_cert = client_context(
                ca_file=ca,
                cert_file=str(pki_dir / CLIENT_CERT),
                key_file=str(pki_dir / CLIENT_KEY),
            )
            async with open_client(tls=with_cert) as client:
                got = await client.call(addr, RemotingCommand.request(ECHO, body=b"ok"))
                assert got.body == b"ok"
            async with open_client(tls=client_context(ca_file=ca)) as client:
                # TLS 1.3: the server's refusal arrives after the client's handshake ends,
                # so the call fails on the dead connection rather than at connect.
                with pytest.raises(NetworkError):
                    await client.call(addr, RemotingCommand.request(ECHO, body=b"no"))


async def test_client_refuses_unknown_server(pki_dir: Path, tmp_path: Path) -> None:
    """A server whose certificate does not chain to the client's CA is refused."""
    other = tmp_path / "other"
    write_test_pki(other, make_test_pki(now=datetime.datetime.now(datetime.UTC)))
    with trio.fail_after(WAIT_S):
        async with (
            serving(server_context(server_files(pki_dir))) as (_server, addr),
            open_client(tls=client_context(ca_file=str(other / CA_CERT))) as client,
        ):
            with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.call(addr, RemotingCommand.request(ECHO, body=b"x"))


def test_half_set_configuration_is_refused(pki_dir: Path) -> None:
    with pytest.raises(TlsError, match="both"):
        server_context(TlsFiles(cert_file=str(pki_dir / NODE_CERT)))
    with pytest.raises(TlsError, match="CA file"):
        server_context(
            TlsFiles(
                cert_file=str(pki_dir / NODE_CERT),
                key_file=str(pki_dir / NODE_KEY),
                verify_client=True,
            )
        )
    with pytest.raises(TlsError, match="not found"):
        client_context(ca_file=str(pki_dir / "missing.pem"))


async def test_open_client_follows_the_environment(pki_dir: Path) -> None:
    """``open_client()`` without ``tls`` connects as $RMQ_TLS* say; ``tls=False`` never."""
    from protocol.tls import client_context_from_env

    assert client_context_from_env({}) is None
    assert client_context_from_env({"RMQ_TLS": "0"}) is None
    env = {"RMQ_TLS": "1", "RMQ_TLS_CA_FILE": str(pki_dir / CA_CERT)}
    ctx = client_context_from_env(env)
    assert ctx is not None and ctx is client_context_from_env(dict(env))  # cached
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with trio.fail_after(WAIT_S):
            async with (
                serving(server_context(server_files(pki_dir))) as (_server, addr),
                open_client() as client,
            ):
                got = await client.call(addr, RemotingCommand.request(ECHO, body=b"env"))
                assert got.body == b"env"
            async with open_client(tls=False) as plain:
                assert plain.tls is None


async def test_a_raising_before_write_drops_a_tls_connection_unwritten(pki_dir: Path) -> None:
    """The server's ``before_write`` (the broker's CommitLog commit) failing on a TLS
    connection drops it with its answer unwritten, as on a plain one: the caller sees the
    connection end, and the server goes on serving new connections."""
    fail = True

    def before_write() -> None:
        if fail:
            raise RuntimeError("the CommitLog write failed")

    with trio.fail_after(WAIT_S):
        async with serving(server_context(server_files(pki_dir))) as (server, addr):
            server.before_write = before_write
            async with open_client(tls=client_context(ca_file=str(pki_dir / CA_CERT))) as client:
                with pytest.raises(NetworkError):
                    await client.call(addr, RemotingCommand.request(ECHO, body=b"lost"))
            fail = False
            async with open_client(tls=client_context(ca_file=str(pki_dir / CA_CERT))) as client:
                response = await client.call(addr, RemotingCommand.request(ECHO, body=b"kept"))
                assert response.body == b"kept"
