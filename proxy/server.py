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

import grpc
import trio
from rocketmq.grpc_protocol import service_pb2_grpc as sv_grpc

from client.producer import open_producer
from client.routes import RouteCache
from protocol.rpc import open_client
from proxy.bridge import GrpcThread, TrioPortal
from proxy.core import ProxyConfig, ProxyCore
from proxy.service import MessagingService

log = logging.getLogger(__name__)


class ProxyServer:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.core: ProxyCore | None = None
        self.port: int | None = None
        #: The bridge to the gRPC thread, while serving (``in_flight`` for tests and stats).
        self.portal: TrioPortal | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        async with (
            open_client(name="proxy", default_timeout_s=config.timeout_s) as client,
            open_producer(
                list(config.namesrv), group="PROXY_PRODUCER_GROUP", timeout_s=config.timeout_s
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
            portal = TrioPortal(
                trio.lowlevel.current_trio_token(), nursery, max_in_flight=config.max_in_flight
            )
            self.portal = portal
            holder: dict[str, ProxyCore] = {}

            def register(server: grpc.aio.Server) -> None:
                sv_grpc.add_MessagingServiceServicer_to_server(
                    MessagingService(portal, holder["core"]), server
                )

            # The core needs the bound port (routes name it) and the servicer the core:
            # the port is known before any request can arrive.
            grpc_thread = GrpcThread(register, host=config.host, port=config.port)
            core = ProxyCore(
                config, client=client, routes=routes, producer=producer, port=config.port
            )
            holder["core"] = core
            port = await nursery.start(grpc_thread.serve)
            core.port = port
            self.core, self.port = core, port
            log.info("proxy: serving gRPC at %s:%d", config.host, port)
            task_status.started(port)
