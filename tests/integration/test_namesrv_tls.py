"""A TLS NameServer and broker as real processes, quickly (the full cluster runs are in
test_cluster_tls.py, marked slow): ``rmq admin --tls`` works, plain TCP is refused and
logged once, the broker registers over TLS with its cluster secret."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import trio

from client.admin import open_admin
from launcher.certs import CA_CERT, NODE_CERT, NODE_KEY, make_test_pki, write_test_pki
from protocol import trust
from protocol.tls import client_context
from tests.integration.broker_wire import broker_process
from tests.support.processes import namesrv_process, rmq_argv, run_command

pytestmark = pytest.mark.integration


async def test_tls_namesrv_and_broker(tmp_path: Path) -> None:
    pki = tmp_path / "tls"
    write_test_pki(pki, make_test_pki(now=datetime.datetime.now(datetime.UTC)))
    secret = tmp_path / "cluster.secret"
    trust.write_secret(secret, "t" * 32)
    conf = tmp_path / "broker.toml"
    conf.write_text(
        "[broker]\n"
        f'clusterSecretFile = "{secret}"\n'
        f'tlsServerCertPath = "{pki / NODE_CERT}"\n'
        f'tlsServerKeyPath = "{pki / NODE_KEY}"\n'
        f'tlsServerTrustCertPath = "{pki / CA_CERT}"\n'
    )
    tls_args = ["--tls-cert", str(pki / NODE_CERT), "--tls-key", str(pki / NODE_KEY)]
    with trio.fail_after(90):
        async with (
            namesrv_process(*tls_args, "--cluster-secret-file", str(secret)) as ns,
            broker_process(ns.address, tmp_path / "store", "--config", str(conf)) as broker,
        ):
            admin = ["--tls", "--tls-ca", str(pki / CA_CERT)]
            listed = ""
            while broker.address not in listed:
                done = await run_command(rmq_argv("admin", *admin, "clusterList", "-n", ns.address))
                assert done.returncode == 0, done.describe()
                listed = done.stdout
                await trio.sleep(0.2)
            for _ in range(3):
                plain = await run_command(rmq_argv("admin", "clusterList", "-n", ns.address))
                assert plain.returncode == 1 and plain.stderr.startswith("error: ")
            topic = ["updateTopic", "-t", "T", "-b", broker.address, "-n", ns.address]
            to_broker = await run_command(rmq_argv("admin", *admin, *topic))
            assert to_broker.returncode == 0, to_broker.describe()
            await ns.wait_for_line("refused a connection: TLS handshake", timeout_s=10)
            # The SDK with an explicit context (no $RMQ_TLS in this process).
            sdk_tls = client_context(ca_file=str(pki / CA_CERT))
            async with open_admin(ns.address, tls=sdk_tls) as sdk:
                info = await sdk.cluster_info()
            assert info.broker_addr_table["broker-a"].broker_addrs[0] == broker.address
    refusals = [line for line in ns.stderr.lines if "refused a connection" in line]
    assert len(refusals) == 1, refusals  # three plain clients, one line (throttled)
    assert "t" * 32 not in ns.stderr.text + broker.stderr.text
