"""TLS against plain TCP: the same send load on a plain broker and on a TLS one, one run.

A real NameServer and broker per variant (``rmq namesrv``/``rmq broker`` processes, the
TLS pair with a test CA from ``launcher/certs.py``); this process drives SEND_MESSAGE_V2
(``--size`` bodies, ``--concurrency`` in flight, ``--connections`` connections) for
``--duration`` seconds after a warm-up, with ``bench.broker_bench``'s load runner, and
prints for each variant: messages per second, p50/p99 latency, and the broker's and this
client's CPU µs per message (the steadier figure on a shared machine). Variants alternate
(plain, tls, plain, tls... ``--rounds`` times) so a neighbour's load hits both alike.

Usage:
    python -m bench.tls_bench [--duration 10] [--concurrency 64] [--size 1024]
        [--connections 1] [--rounds 1] [--out F.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from bench.broker_bench import Load, run_load, send_worker
from bench.servers import BROKER_READY, NAMESRV_READY, Server, rmq_argv, server_process
from bench.wire import SendRequests, create_topic, open_clients
from launcher.certs import CA_CERT, NODE_CERT, NODE_KEY, make_test_pki, write_test_pki
from protocol.tls import ENV_TLS, ENV_TLS_CA_FILE

TOPIC = "TlsBenchTopic"
QUEUES = 8


@asynccontextmanager
async def _pair(root: Path, tls_dir: Path | None) -> AsyncIterator[Server]:
    """A NameServer and an ASYNC_FLUSH broker (TLS only when ``tls_dir``); the broker."""
    tls_args: list[str] = []
    if tls_dir is not None:
        tls_args = ["--tls-cert", str(tls_dir / NODE_CERT), "--tls-key", str(tls_dir / NODE_KEY)]
    ns_argv = rmq_argv("namesrv", "--port", "0", "--log-level", "WARNING", *tls_args)
    async with server_process("namesrv", ns_argv, NAMESRV_READY) as namesrv:
        config = root / "broker.toml"
        lines = ["[broker]"]
        if tls_dir is not None:
            lines += [
                f'tlsServerCertPath = "{tls_dir / NODE_CERT}"',
                f'tlsServerKeyPath = "{tls_dir / NODE_KEY}"',
                f'tlsServerTrustCertPath = "{tls_dir / CA_CERT}"',
            ]
        config.write_text("\n".join(lines) + "\n")
        argv = rmq_argv(
            "broker", "-c", str(config), "-n", namesrv.addr, "--port", "0",
            "--dir", str(root / "store"), "--flush", "ASYNC_FLUSH", "--log-level", "WARNING",
        )  # fmt: skip
        async with server_process("broker", argv, BROKER_READY) as broker:
            yield broker


async def _variant(args: argparse.Namespace, root: Path, tls_dir: Path | None) -> dict[str, Any]:
    label = "tls" if tls_dir is not None else "plain"
    # This process's clients follow $RMQ_TLS* (protocol/tls.py), as the SDK does.
    os.environ.pop(ENV_TLS, None)
    os.environ.pop(ENV_TLS_CA_FILE, None)
    if tls_dir is not None:
        os.environ[ENV_TLS] = "1"
        os.environ[ENV_TLS_CA_FILE] = str(tls_dir / CA_CERT)
    async with _pair(root, tls_dir) as broker, open_clients(args.connections) as clients:
        await create_topic(clients[0], broker.addr, TOPIC, QUEUES)
        requests = SendRequests(TOPIC, args.size, QUEUES, 1)
        load = Load(
            label=f"{label} send",
            kind="Send",
            concurrency=args.concurrency,
            duration_s=args.duration,
            worker=send_worker(requests.single, 1, args.size, 10.0),
        )
        return {"variant": label} | await run_load(load, clients, broker)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rmq-tls-bench-") as tmp:
        base = Path(tmp)
        tls_dir = base / "tls"
        write_test_pki(tls_dir, make_test_pki(now=datetime.datetime.now(datetime.UTC)))
        for i in range(args.rounds):
            for variant_tls in (None, tls_dir):
                root = base / f"r{i}-{'tls' if variant_tls else 'plain'}"
                root.mkdir()
                results.append(await _variant(args, root, variant_tls))
    return results


def _summary(results: list[dict[str, Any]]) -> None:
    print(
        f"{'variant':8} {'msg/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'broker µs/msg':>14} {'client µs/msg':>14} {'failed':>7}"
    )
    for r in results:
        print(
            f"{r['variant']:8} {r['msg_per_s']:9,.0f} {r['p50_ms'] or 0:7.2f} "
            f"{r['p99_ms'] or 0:7.2f} {r['broker_us_per_msg'] or 0:14.1f} "
            f"{r['client_us_per_msg'] or 0:14.1f} {r['send_failed'] + r['response_failed']:7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = trio.run(run, args)
    _summary(results)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
