"""The HA port with the cluster secret and TLS (broker/ha/auth.py): real slaves replicate,
a peer without the secret or without TLS gets nothing of the log."""

from __future__ import annotations

import datetime
from pathlib import Path

import attrs
import trio

from broker.ha.config import HAConfig
from broker.ha.wire import SlaveHandshake
from launcher.certs import CA_CERT, NODE_CERT, NODE_KEY, make_test_pki, write_test_pki
from protocol import trust
from protocol.tls import TlsFiles, client_context, server_context, tls_connect
from tests.component.ha_fixtures import HA_CFG, caught_up, cluster, nodes, until

SECRET = b"a cluster secret of 32 bytes...."


def secured(tmp_path: Path, *, secret: bytes | None = SECRET, tls: bool = True) -> HAConfig:
    config = attrs.evolve(HA_CFG, cluster_secret=secret, handshake_timeout_s=1.0)
    if not tls:
        return config
    pki = tmp_path / "pki"
    if not pki.exists():
        write_test_pki(pki, make_test_pki(now=datetime.datetime.now(datetime.UTC)))
    files = TlsFiles(cert_file=str(pki / NODE_CERT), key_file=str(pki / NODE_KEY))
    return attrs.evolve(
        config,
        server_tls=server_context(files),
        client_tls=client_context(ca_file=str(pki / CA_CERT)),
    )


async def _everything(stream: trio.abc.Stream, timeout_s: float = 5.0) -> bytes:
    got = b""
    with trio.move_on_after(timeout_s):
        try:
            while data := await stream.receive_some(65536):
                got += data
        except trio.BrokenResourceError:
            pass
    return got


async def test_slave_with_the_secret_replicates_over_tls(tmp_path: Path) -> None:
    config = secured(tmp_path)
    async with nodes(tmp_path, "m", "s") as (m, s):
        m.put(50)
        async with cluster(m, config) as c:
            await c.add_slave(s, 1, config)
            await until(caught_up(m, s))
            assert s.log_bytes() == m.log_bytes()


async def test_slave_with_another_secret_gets_nothing(tmp_path: Path) -> None:
    config = secured(tmp_path, tls=False)
    async with nodes(tmp_path, "m", "s") as (m, s):
        m.put(50)
        async with cluster(m, config) as c:
            await c.add_slave(s, 1, attrs.evolve(config, cluster_secret=b"x" * 32))
            await trio.sleep(1.5)
            assert s.store.max_physical_offset == 0
            assert not c.master.status().slaves


async def test_plain_handshake_gets_the_challenge_only(tmp_path: Path) -> None:
    """RocketMQ's 16-byte handshake and acks, no secret: the challenge, then a close."""
    config = secured(tmp_path, tls=False)
    async with nodes(tmp_path, "m") as (m,):
        m.put(50)
        async with cluster(m, config) as c:
            stream = await trio.open_tcp_stream("127.0.0.1", c.port)
            async with stream:
                await stream.send_all(SlaveHandshake(slave_broker_id=1).encode())
                got = await _everything(stream)
            assert len(got) == trust.HA_CHALLENGE_BYTES
            assert got.startswith(trust.HA_CHALLENGE_MAGIC)
            assert not c.master.status().slaves


async def test_plain_tcp_to_a_tls_ha_port_gets_nothing(tmp_path: Path) -> None:
    config = secured(tmp_path)
    async with nodes(tmp_path, "m") as (m,):
        m.put(50)
        async with cluster(m, config) as c:
            stream = await trio.open_tcp_stream("127.0.0.1", c.port)
            async with stream:
                await stream.send_all(SlaveHandshake(slave_broker_id=1).encode())
                got = await _everything(stream)
            assert not got.startswith(trust.HA_CHALLENGE_MAGIC)
            assert b"RMQC" not in got and len(got) < 64  # a TLS alert at most
            # A TLS peer without the secret gets the challenge, encrypted, and no more.
            tcp = await trio.open_tcp_stream("127.0.0.1", c.port)
            assert config.client_tls is not None
            tls = await tls_connect(tcp, config.client_tls, host="127.0.0.1")
            async with tls:
                await tls.send_all(SlaveHandshake(slave_broker_id=1).encode())
                got = await _everything(tls)
            assert len(got) == trust.HA_CHALLENGE_BYTES
