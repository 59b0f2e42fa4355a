"""The NameServer process: the pure route table behind a remoting server.

Rules:
- All route state lives in ``namesrv.registry``; this module only parses requests, calls
  the table with the current time, and encodes answers. Handlers never await while they
  touch the table, so every request sees and leaves it consistent, with one designed
  exception: REGISTER_BROKER decodes its body and applies a master's topic configs in
  bounded slices (``run_steps``), each of which leaves the table consistent, so route
  lookups are answered while 100,000 topics are being registered.
- Limits (``NameServerConfig``): the registry's (topics per broker, brokers per cluster
  and in all, topic routes in all, queues per topic), the JSON register body's size, the
  inflated size of a compressed one, and how many registrations are decoded at once (the
  others wait; their bytes stay in the transport's budget). A registration over a limit
  is answered SYSTEM_ERROR with a remark naming it, and logged.
- A broker is forgotten when its connection closes or after its heartbeat timeout
  (120 s by default), checked every ``scan_interval_s``.
- NameServers never talk to each other: each holds every route its brokers register.
- Trust (issue 16, protocol/trust.py): with ``cluster_secret`` set, REGISTER_BROKER,
  UNREGISTER_BROKER and BROKER_HEARTBEAT need the cluster signature (else NO_PERMISSION,
  logged); with ``tls`` every connection speaks TLS (protocol/tls.py).
"""

from __future__ import annotations

import logging
import ssl
import zlib

import attrs
import trio

from namesrv.metrics import NameServerMetrics
from namesrv.registry import DEFAULT_HEARTBEAT_TIMEOUT_MS, RegistryLimits, RouteRegistry
from protocol import trust
from protocol.acl_guard import open_guard, protect, warn_if_exposed
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import LimitExceeded, MalformedBody, TopicNotExist
from protocol.headers import (
    AddWritePermOfBrokerRequestHeader,
    AddWritePermOfBrokerResponseHeader,
    BrokerHeartbeatRequestHeader,
    DeleteTopicFromNamesrvRequestHeader,
    GetRouteInfoRequestHeader,
    GetTopicsByClusterRequestHeader,
    RegisterBrokerRequestHeader,
    RegisterBrokerResponseHeader,
    UnregisterBrokerRequestHeader,
    WipeWritePermOfBrokerRequestHeader,
    WipeWritePermOfBrokerResponseHeader,
)
from protocol.register_body import RegisterSummary, decode_summary_steps
from protocol.route import dumps_json
from protocol.rpc import (
    Connection,
    Handler,
    RemotingServer,
    ThrottledLog,
    TransportConfig,
    run_steps,
)
from protocol.steps import Steps

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class NameServerConfig:
    host: str = "127.0.0.1"
    port: int = 9876
    scan_interval_s: float = 5.0
    #: ACL 1.0 (protocol/acl.py): every request must be signed by an account of the
    #: plain-access file ``acl_file`` (``rmq namesrv --acl-enable --acl-file FILE``).
    acl_enable: bool = False
    acl_file: str | None = None
    transport: TransportConfig = attrs.field(factory=TransportConfig)
    limits: RegistryLimits = attrs.field(factory=RegistryLimits)
    #: Largest uncompressed (JSON) REGISTER_BROKER body. It is parsed in one call, so this
    #: bounds that pause (4 MiB: ~24,000 topics, ~40 ms); brokers with more topics register
    #: compressed (Java's compressedRegister=true), which is decoded in slices.
    max_register_json_bytes: int = 4 * 1024 * 1024
    #: Largest inflated size of a compressed REGISTER_BROKER body.
    max_register_inflated_bytes: int = 32 * 1024 * 1024
    #: Registrations decoded and applied at once; later ones wait their turn.
    max_concurrent_registrations: int = 2
    #: The cluster secret (``--cluster-secret-file``): when set, REGISTER_BROKER,
    #: UNREGISTER_BROKER and BROKER_HEARTBEAT need its signature (protocol/trust.py).
    cluster_secret: bytes | None = attrs.field(default=None, repr=False)
    #: TLS server context (``--tls-cert``/``--tls-key``): every client must speak TLS.
    tls: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)


def _now_ms() -> int:
    return int(trio.current_time() * 1000)


class NameServer:
    """Route registry server. ``serve`` binds and reports the bound port."""

    def __init__(self, config: NameServerConfig | None = None) -> None:
        self.config = config or NameServerConfig()
        self.registry = RouteRegistry(limits=self.config.limits)
        self.metrics = NameServerMetrics(self.registry, now_s=trio.current_time)
        self.name = f"namesrv:{self.config.port}"
        self._registrations = trio.CapacityLimiter(self.config.max_concurrent_registrations)
        self._refusals = ThrottledLog(self.config.transport.log_interval_s)
        self.acl = open_guard(self.config.acl_enable, self.config.acl_file, name=self.name)
        handlers: dict[int, Handler] = {
            RequestCode.REGISTER_BROKER: self._register_broker,
            RequestCode.UNREGISTER_BROKER: self._unregister_broker,
            RequestCode.BROKER_HEARTBEAT: self._broker_heartbeat,
            RequestCode.GET_ROUTEINFO_BY_TOPIC: self._get_route,
            RequestCode.GET_BROKER_CLUSTER_INFO: self._get_cluster_info,
            RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER: self._get_all_topics,
            RequestCode.GET_TOPICS_BY_CLUSTER: self._get_topics_by_cluster,
            RequestCode.DELETE_TOPIC_IN_NAMESRV: self._delete_topic,
            RequestCode.WIPE_WRITE_PERM_OF_BROKER: self._wipe_write_perm,
            RequestCode.ADD_WRITE_PERM_OF_BROKER: self._add_write_perm,
        }
        if self.config.cluster_secret is not None:
            handlers = trust.guard_handlers(
                handlers,
                trust.NAMESRV_INTERNAL_CODES,
                node="namesrv",
                secret=self.config.cluster_secret,
                now_ms=trust.wall_ms,
                warn=self._refusals.warning,
            )
        self.server = RemotingServer(
            self.metrics.requests.instrument(protect(self.acl, handlers)),
            name=self.name,
            host=self.config.host,
            port=self.config.port,
            config=self.config.transport,
            on_disconnect=self._connection_closed,
            tls=self.config.tls,
        )

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(self.server.serve)
            self.name = self.server.name = f"namesrv:{port}"
            nursery.start_soon(self._scan_expired_brokers)
            if self.acl is not None:
                nursery.start_soon(self.acl.watch)
            warn_if_exposed(self.config.host, self.acl, name=self.name)
            log.info("%s: serving on %s:%d", self.name, self.config.host, port)
            task_status.started(port)

    async def _scan_expired_brokers(self) -> None:
        while True:
            await trio.sleep(self.config.scan_interval_s)
            for removed in self.registry.scan_expired(_now_ms()):
                log.info(
                    "%s: broker %s expired (no registration for its timeout)", self.name, removed
                )

    def _connection_closed(self, conn: Connection) -> None:
        for removed in self.registry.channel_closed(conn.id):
            log.info("%s: broker %s removed: its connection closed", self.name, removed)

    # --- brokers ---------------------------------------------------------------------

    async def _register_broker(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        header = RegisterBrokerRequestHeader.from_ext_fields(request.ext_fields)
        if header.body_crc32 != 0 and _java_crc32(request.body) != header.body_crc32:
            return request.respond(
                ResponseCode.SYSTEM_ERROR,
                f"register body CRC32 mismatch from {header.broker_addr}: body corrupted in transit",
            )
        async with self._registrations:
            try:
                body = await run_steps(self._decode_steps(request.body, header.compressed))
            except LimitExceeded as exc:
                return self._refuse(request, header, f"registration refused: {exc}")
            except MalformedBody as exc:
                return request.respond(ResponseCode.SYSTEM_ERROR, f"bad register body: {exc}")
            result = await run_steps(
                self.registry.register_steps(
                    cluster=header.cluster_name,
                    broker_name=header.broker_name,
                    broker_addr=header.broker_addr,
                    broker_id=header.broker_id,
                    ha_server_addr=header.ha_server_addr,
                    data_version=body.data_version,
                    topic_queues=body.topic_queues,
                    channel_id=conn.id,
                    heartbeat_timeout_ms=header.heartbeat_timeout_millis
                    or DEFAULT_HEARTBEAT_TIMEOUT_MS,
                    now_ms=_now_ms(),
                )
            )
        if result.rejected_reason is not None:
            return self._refuse(request, header, result.rejected_reason)
        response_header = RegisterBrokerResponseHeader(
            ha_server_addr=result.ha_server_addr, master_addr=result.master_addr
        )
        return request.respond(ext_fields=response_header.to_ext_fields())

    def _decode_steps(self, body: bytes, compressed: bool) -> Steps[RegisterSummary]:
        return decode_summary_steps(
            body,
            compressed,
            max_topics=self.config.limits.max_topics_per_broker,
            max_inflated_bytes=self.config.max_register_inflated_bytes,
            max_json_bytes=self.config.max_register_json_bytes,
        )

    def _refuse(
        self, request: RemotingCommand, header: RegisterBrokerRequestHeader, reason: str
    ) -> RemotingCommand:
        self._refusals.warning(
            "%s: rejected registration of %s (%s): %s",
            self.name,
            header.broker_name,
            header.broker_addr,
            reason,
        )
        return request.respond(ResponseCode.SYSTEM_ERROR, reason)

    async def _unregister_broker(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        header = UnregisterBrokerRequestHeader.from_ext_fields(request.ext_fields)
        self.registry.unregister_broker(
            cluster=header.cluster_name,
            broker_name=header.broker_name,
            broker_addr=header.broker_addr,
            broker_id=header.broker_id,
        )
        log.info(
            "%s: broker %s (%s) unregistered", self.name, header.broker_name, header.broker_addr
        )
        return request.respond()

    async def _broker_heartbeat(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        header = BrokerHeartbeatRequestHeader.from_ext_fields(request.ext_fields)
        self.registry.touch(header.broker_addr, _now_ms())
        return request.respond()

    # --- clients and admin -----------------------------------------------------------

    async def _get_route(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        header = GetRouteInfoRequestHeader.from_ext_fields(request.ext_fields)
        route = self.registry.topic_route(header.topic)
        if route is None:
            raise TopicNotExist(f"No topic route info in name server for the topic: {header.topic}")
        return request.respond(body=route.to_bytes())

    async def _get_cluster_info(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        return request.respond(body=self.registry.cluster_info().to_bytes())

    async def _get_all_topics(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        return request.respond(body=dumps_json({"topicList": sorted(self.registry.all_topics())}))

    async def _get_topics_by_cluster(
        self, request: RemotingCommand, conn: Connection
    ) -> RemotingCommand:
        header = GetTopicsByClusterRequestHeader.from_ext_fields(request.ext_fields)
        topics = sorted(self.registry.topics_by_cluster(header.cluster))
        return request.respond(body=dumps_json({"topicList": topics}))

    async def _delete_topic(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        header = DeleteTopicFromNamesrvRequestHeader.from_ext_fields(request.ext_fields)
        self.registry.delete_topic(header.topic, cluster=header.cluster_name)
        log.info("%s: topic %s deleted", self.name, header.topic)
        return request.respond()

    async def _wipe_write_perm(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        header = WipeWritePermOfBrokerRequestHeader.from_ext_fields(request.ext_fields)
        count = self.registry.wipe_write_perm(header.broker_name)
        log.info("%s: wiped write perm of %s on %d topics", self.name, header.broker_name, count)
        reply = WipeWritePermOfBrokerResponseHeader(wipe_topic_count=count)
        return request.respond(ext_fields=reply.to_ext_fields())

    async def _add_write_perm(self, request: RemotingCommand, conn: Connection) -> RemotingCommand:
        header = AddWritePermOfBrokerRequestHeader.from_ext_fields(request.ext_fields)
        count = self.registry.add_write_perm(header.broker_name)
        log.info("%s: added write perm of %s on %d topics", self.name, header.broker_name, count)
        reply = AddWritePermOfBrokerResponseHeader(add_topic_count=count)
        return request.respond(ext_fields=reply.to_ext_fields())


def _java_crc32(data: bytes) -> int:
    """RocketMQ's ``UtilAll.crc32``: CRC32 masked to a non-negative int."""
    return zlib.crc32(data) & 0x7FFFFFFF
