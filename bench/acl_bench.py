"""ACL benchmark: send throughput and broker CPU per message with ACL 1.0 off and on.

Both runs happen in one invocation, one after the other, each with its own fresh
NameServer and ASYNC_FLUSH broker (real processes): ACL off, then ``aclEnable`` with a
plain-access file, the client signing every SEND_MESSAGE_V2 with a PUB account (so the
signature check and the topic permission check both run on every request). The load is
broker_bench's phase (a): ``--concurrency`` requests in flight over ``--connections``
connections, ``--size`` bodies, ``--duration`` seconds after a 1 s warm-up.

The figure to compare is the broker's CPU µs per message (steadier than msg/s on a shared
machine); the client's is shown too (signing costs it an HMAC per request).

Usage:
    python -m bench.acl_bench [--duration 10] [--concurrency 64] [--size 1024]
        [--connections 1] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from bench.broker_bench import Load, run_load, send_worker
from bench.servers import BROKER_READY, NAMESRV_READY, Server, rmq_argv, server_process
from bench.wire import CALL_TIMEOUT_S, SendRequests, create_topic
from protocol.acl_client import open_client
from protocol.acl_sign import Credentials
from protocol.rpc import RemotingClient

TOPIC = "BenchAcl"
ADMIN = Credentials(access_key="bench_admin", secret_key="bench_admin_secret")
PUBLISHER = Credentials(access_key="bench_publisher", secret_key="bench_pub_secret")
PLAIN_ACL = f"""
accounts:
  - accessKey: {ADMIN.access_key}
    secretKey: {ADMIN.secret_key}
    admin: true
  - accessKey: {PUBLISHER.access_key}
    secretKey: {PUBLISHER.secret_key}
    topicPerms: ["{TOPIC}=PUB"]
"""


@asynccontextmanager
async def servers(root: Path, *, acl: bool) -> AsyncIterator[Server]:
    """A NameServer and an ASYNC_FLUSH broker; with ``acl`` both check every request."""
    root.mkdir(parents=True)
    ns_args: list[str] = []
    broker_args: list[str] = []
    if acl:
        acl_file = root / "plain_acl.yml"
        acl_file.write_text(PLAIN_ACL)
        conf = root / "broker.toml"
        conf.write_text(
            f'aclEnable = true\naclFilePath = "{acl_file}"\n'
            f'accessKey = "{ADMIN.access_key}"\nsecretKey = "{ADMIN.secret_key}"\n'
        )
        ns_args = ["--acl-enable", "--acl-file", str(acl_file)]
        broker_args = ["-c", str(conf)]
    ns_argv = rmq_argv("namesrv", "--port", "0", "--log-level", "WARNING", *ns_args)
    async with server_process("namesrv", ns_argv, NAMESRV_READY) as namesrv:
        argv = rmq_argv(
            "broker", "-n", namesrv.addr, "--port", "0", "--dir", str(root / "store"),
            "--flush", "ASYNC_FLUSH", "--log-level", "WARNING", *broker_args,
        )  # fmt: skip
        async with server_process("broker", argv, BROKER_READY) as broker:
            yield broker


async def one_run(args: argparse.Namespace, root: Path, *, acl: bool) -> dict[str, Any]:
    label = "acl on" if acl else "acl off"
    print(f"--- {label}: SEND_MESSAGE_V2 {args.size} B, {args.concurrency} in flight", flush=True)
    async with servers(root / label.replace(" ", "-"), acl=acl) as broker, AsyncExitStack() as st:
        clients: list[RemotingClient] = [
            await st.enter_async_context(
                open_client(
                    name=f"bench-{i}",
                    default_timeout_s=CALL_TIMEOUT_S,
                    credentials=PUBLISHER if acl else None,
                )
            )
            for i in range(args.connections)
        ]
        async with open_client(
            name="bench-admin", default_timeout_s=CALL_TIMEOUT_S, credentials=ADMIN if acl else None
        ) as admin:
            await create_topic(admin, broker.addr, TOPIC, args.queues)
        requests = SendRequests(TOPIC, args.size, args.queues, 1)
        load = Load(
            label=label,
            kind="Send",
            concurrency=args.concurrency,
            duration_s=args.duration,
            worker=send_worker(requests.single, 1, args.size, args.timeout),
        )
        return await run_load(load, clients, broker)


_SHOWN = ("msg_per_s", "broker_us_per_msg", "client_us_per_msg", "response_failed", "p99_ms")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="acl-bench-") as tmp:
        off = await one_run(args, Path(tmp), acl=False)
        on = await one_run(args, Path(tmp), acl=True)
    print(f"{'':10}" + "".join(f"{k:>20}" for k in _SHOWN))
    for label, figures in (("acl off", off), ("acl on", on)):
        print(f"{label:10}" + "".join(f"{figures.get(k)!s:>20}" for k in _SHOWN))
    return {"acl_off": off, "acl_on": on}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--size", type=int, default=1024, help="body bytes")
    p.add_argument("--queues", type=int, default=8)
    p.add_argument("--timeout", type=float, default=5.0, help="per-request deadline (s)")
    p.add_argument("--out", type=Path, help="write the figures as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = trio.run(run, args)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
