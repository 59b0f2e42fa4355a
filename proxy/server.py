"""The gRPC proxy process (RocketMQ proxy's cluster mode): MessagingService over the SDK.

Rules:
- ``ProxyServer.serve`` opens the SDK side first (a remoting client, routes, a producer)
  in its nursery, then binds the gRPC port on its own thread (``proxy/bridge.py``) and
  reports it; cancelling ``serve`` stops the gRPC server (bounded), then the SDK side.
- The proxy is one more client of the cluster: it imports the SDK (client/) and the wire
  (protocol/) only, never server code.
"""

from __future__ import annotations

import logging
import os
import resource
import ssl
from pathlib import Path
from typing import Literal

import grpc
import trio
from rocketmq.grpc_protocol import service_pb2_grpc as sv_grpc

from client.producer import open_producer
from client.routes import RouteCache
from protocol.acl_client import open_client
from protocol.acl_guard import open_guard
from protocol.acl_sign import Credentials
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.limits import default_max_connections
from protocol.rpc import Connection
from proxy.bridge import GrpcThread, TrioPortal
from proxy.core import ProxyConfig, ProxyCore
from proxy.service import MessagingService
from proxy.transactions import ProducerStreams, TransactionRelay

log = logging.getLogger(__name__)


def grpc_server_options(config: ProxyConfig, fd_soft_limit: int) -> list[tuple[str, int]]:
    """grpc core's own limits on the port's connections: a cap (``max_connections``, by
    default half of ``fd_soft_limit``), a handshake deadline and an idle time. Without
    them a connection that never sends a byte was held 120 s (grpc's handshake default),
    so ~20,000 idle connections took every descriptor and no client got in.

    And on each connection's calls (``max_streams_per_connection``): grpc's default is
    no limit, so one connection could open 20,000 calls, take every in-flight slot of
    the ``TrioPortal`` (other clients were told TOO_MANY_REQUESTS or timed out), or
    hold ~4 MB for each call whose request never ended (400 calls: +1.4 GB). grpc's
    overload protection (on by default, set here so it stays on) counts a call until
    the proxy has let go of it, not until the client saw it end: that is what stops a
    client that opens and resets calls as fast as it can (CVE-2023-44487), at the cost
    that a client keeping more than the cap in flight may have a call refused
    (REFUSED_STREAM, UNAVAILABLE to grpc-core clients, safe to retry)."""
    cap = config.max_connections or default_max_connections(fd_soft_limit)
    return [
        ("grpc.max_allowed_incoming_connections", cap),
        ("grpc.server_handshake_timeout_ms", round(config.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", round(config.max_idle_s * 1000)),
        ("grpc.max_concurrent_streams", config.max_streams_per_connection),
        ("grpc.http.overload_protection", 1),
    ]


def grpc_credentials(config: ProxyConfig) -> grpc.ServerCredentials | None:
    """The gRPC port's TLS credentials (None: plaintext); ``OSError`` for a file that
    cannot be read, ``ValueError`` for half a setting."""
    if not (config.tls_cert_file or config.tls_key_file):
        return None
    if not (config.tls_cert_file and config.tls_key_file):
        raise ValueError("TLS on the gRPC port needs both a certificate and a key file")
    key = Path(config.tls_key_file).read_bytes()
    chain = Path(config.tls_cert_file).read_bytes()
    return grpc.ssl_server_credentials([(key, chain)])


class ProxyServer:
    """``remoting_tls``: the context to reach NameServers and brokers with; None: as
    ``$RMQ_TLS*`` say (protocol/tls.py); False: plain TCP."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        remoting_tls: ssl.SSLContext | Literal[False] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.config = config
        self.remoting_tls = remoting_tls
        self.grpc_credentials = grpc_credentials(config)
        #: The proxy's own ACL account: it signs every request to the cluster with it.
        self.credentials = credentials
        #: Raises ``AclConfigError`` for a bad file: the proxy does not start.
        self.guard = open_guard(bool(config.acl_file), config.acl_file, name="proxy")
        self.core: ProxyCore | None = None
        self.port: int | None = None
        #: The bridge to the gRPC thread, while serving (``in_flight`` for tests and stats).
        self.portal: TrioPortal | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        streams = ProducerStreams(max_streams=config.max_in_flight)
        relay: list[TransactionRelay] = []

        async def on_check(request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
            # A check before the relay exists: dropped, the broker checks again.
            return await relay[0].on_check(request, conn) if relay else None

        async with (
            open_client(
                name="proxy",
                default_timeout_s=config.timeout_s,
                handlers={RequestCode.CHECK_TRANSACTION_STATE: on_check},
                tls=self.remoting_tls,
                credentials=self.credentials,
            ) as client,
            open_producer(
                list(config.namesrv),
                group="PROXY_PRODUCER_GROUP",
                timeout_s=config.timeout_s,
                tls=self.remoting_tls or None,  # None: $RMQ_TLS*, as the client above
                credentials=self.credentials,
            ) as producer,
            trio.open_nursery() as nursery,
        ):
            routes = RouteCache(
                client,
                list(config.namesrv),
                request_timeout_s=config.timeout_s,
                refresh_interval_s=config.route_refresh_s,
            )
            nursery.start_soon(routes.run_refresh_loop)
            transactions = TransactionRelay(
                client=client,
                routes=routes,
                producer=producer,
                streams=streams,
                client_id=f"proxy@{config.advertised_host}@{os.getpid()}",
                timeout_s=config.timeout_s,
            )
            relay.append(transactions)
            nursery.start_soon(transactions.run_heartbeats)
            if self.guard is not None:
                nursery.start_soon(self.guard.watch)
            portal = TrioPortal(
                trio.lowlevel.current_trio_token(), nursery, max_in_flight=config.max_in_flight
            )
            self.portal = portal
            holder: dict[str, ProxyCore] = {}

            def register(server: grpc.aio.Server) -> None:
                sv_grpc.add_MessagingServiceServicer_to_server(
                    MessagingService(portal, holder["core"], streams, self.guard), server
                )

            # The core needs the bound port (routes name it) and the servicer the core:
            # the port is known before any request can arrive.
            grpc_thread = GrpcThread(
                register,
                host=config.host,
                port=config.port,
                credentials=self.grpc_credentials,
                options=grpc_server_options(config, resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
            )
            core = ProxyCore(
                config,
                client=client,
                routes=routes,
                producer=producer,
                port=config.port,
                transactions=transactions,
            )
            holder["core"] = core
            port = await nursery.start(grpc_thread.serve)
            core.port = port
            self.core, self.port = core, port
            log.info("proxy: serving gRPC at %s:%d", config.host, port)
            task_status.started(port)
