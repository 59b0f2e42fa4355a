"""Broker configuration: one frozen value, from flags or a TOML file.

Rules:
- TOML keys are RocketMQ's own ``broker.conf`` names (``brokerClusterName``, ``brokerName``,
  ``brokerId``, ``namesrvAddr``, ``listenPort``, ``storePathRootDir``, ``flushDiskType``,
  ``brokerRole``, ...) so an existing config carries over; snake_case names work too.
- An unknown key or a value of the wrong type is an error naming the key, never ignored.
  RocketMQ's millisecond keys (``slaveTimeout``, ``haHousekeepingInterval``...) are
  converted to our ``*_s`` fields; the snake_case names take seconds.
- Roles as RocketMQ's BrokerStartup enforces them: a master (ASYNC_MASTER, SYNC_MASTER) is
  broker id 0, a SLAVE has an id > 0. A bad combination is a ``ConfigError``, not a guess.
  In controller mode (``controller_addrs`` set) both come from the controller instead and
  ``brokerId``/``brokerRole`` are ignored. The role the broker holds at runtime is
  ``broker.role.RoleState``; this value is never rewritten.
- Pure: ``load_toml`` reads a file; nothing else here does I/O.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from broker.ha.config import HAConfig
from broker.store.config import FlushMode, StoreConfig
from protocol.acl_sign import Credentials
from protocol.jsonbody import shown
from protocol.limits import TransportConfig

ROLES = ("ASYNC_MASTER", "SYNC_MASTER", "SLAVE")
#: Highest ``maxTopicQueueNums``: what one topic may declare in a NameServer route.
MAX_QUEUE_NUMS_CEILING = 65_536
#: Highest ``maxBatchMessageNums``: a batch's answer lists 33 bytes of msgId per message.
MAX_BATCH_MESSAGE_NUMS_CEILING = 100_000
FLUSH_TYPES = ("ASYNC_FLUSH", "SYNC_FLUSH")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def _one_of(options: tuple[str, ...]) -> Any:
    def check(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in options:
            raise ConfigError(
                f"{attribute.name} must be one of {', '.join(options)}, not {value!r}"
            )

    return check


@attrs.frozen(kw_only=True)
class BrokerConfig:
    """Everything a broker process needs to know before it starts."""

    cluster_name: str = "DefaultCluster"
    broker_name: str = "broker-a"
    broker_id: int = 0
    broker_role: str = attrs.field(default="ASYNC_MASTER", validator=_one_of(ROLES))
    namesrv_addrs: tuple[str, ...] = ("127.0.0.1:9876",)
    #: Address to bind; ``advertised_ip`` is what clients and the NameServer are told.
    host: str = "127.0.0.1"
    advertised_ip: str = "127.0.0.1"
    listen_port: int = 10911
    #: HA (replication) port of a master; None means listen_port + 1 (a free one when
    #: listen_port is 0), 0 picks a free one. The bound port is what gets advertised.
    ha_port: int | None = None
    #: A slave's fallback ``host:haPort`` of its master (``haMasterAddress``), used until a
    #: NameServer registration answer names the master's HA address.
    master_ha_addr: str | None = None
    store_dir: Path = Path("store")
    flush_disk_type: str = attrs.field(default="ASYNC_FLUSH", validator=_one_of(FLUSH_TYPES))
    sync_flush_timeout_s: float = 5.0
    async_flush_interval_s: float = 0.5
    commitlog_segment_bytes: int = 1024 * 1024 * 1024
    max_message_bytes: int = 4 * 1024 * 1024
    file_reserved_time_h: float = 72.0
    #: Appends are refused (SERVICE_NOT_AVAILABLE) while the store's filesystem has less
    #: free space than this; reads go on.
    min_free_disk_bytes: int = 256 * 1024 * 1024
    auto_create_topic_enable: bool = True
    auto_create_subscription_group: bool = True
    default_topic_queue_nums: int = 4
    register_interval_s: float = 30.0
    register_timeout_s: float = 6.0
    #: Long polling: re-check held pulls this often even without arrivals.
    long_polling_check_interval_s: float = 5.0
    client_expiry_s: float = 120.0
    #: Transactions (broker/transaction/): a half message is first checked this long after
    #: it was stored (``transactionTimeOut``, ms in TOML), then every
    #: ``transactionCheckInterval``, at most ``transactionCheckMax`` times.
    transaction_timeout_s: float = attrs.field(default=6.0, validator=attrs.validators.gt(0))
    transaction_check_interval_s: float = attrs.field(
        default=30.0, validator=attrs.validators.gt(0)
    )
    transaction_check_max: int = attrs.field(default=15, validator=attrs.validators.ge(0))
    #: ``messageDelayLevel``: delay of each level, 1-based.
    message_delay_level: str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
    max_reconsume_times: int = 16
    #: Timer messages (broker/timers.py): off → a timer message is refused
    #: (``timerWheelEnable``); the longest delay accepted (``timerMaxDelaySec``); pending
    #: timers held in memory at most (the rest stay on disk in the timer ConsumeQueue).
    timer_wheel_enable: bool = True
    timer_max_delay_s: int = attrs.field(default=3 * 24 * 3600, validator=attrs.validators.gt(0))
    timer_index_capacity: int = attrs.field(default=100_000, validator=attrs.validators.gt(0))
    #: SQL92 subscriptions are served (``enablePropertyFilter``); off → refused.
    enable_property_filter: bool = True
    request_timeout_s: float = 3.0

    # --- controller mode (reference/rocketmq-controller.md §4; DESIGN.md §6) ---------------
    #: Controller remoting addresses; non-empty enables controller mode: the broker id and
    #: the role come from the controller, not from ``broker_id``/``broker_role``.
    controller_addrs: tuple[str, ...] = ()
    #: How often the broker heartbeats every controller (``brokerHeartbeatInterval``).
    heartbeat_interval_s: float = 0.3
    #: The silence after which the controllers take this broker for dead, sent with every
    #: heartbeat (``controllerHeartBeatTimeoutMills``; RocketMQ's default is 10 s).
    controller_heartbeat_timeout_s: float = 1.2
    #: Deadline of one heartbeat write to one controller (``sendHeartbeatTimeoutMillis``).
    send_heartbeat_timeout_s: float = 1.0
    #: A master that has not heard the controller leader confirm it for this long stops
    #: acknowledging writes (apache/rocketmq#7017), unless allAckInSyncStateSet holds every
    #: ack for other SyncStateSet members (then a deposal already stops its acks). Shorter
    #: than ``controller_heartbeat_timeout_s``: the lease runs out before any controller
    #: may take this master for dead (README, "the lease").
    lease_s: float = 1.0
    #: Lower wins among equally up-to-date candidates (``brokerElectionPriority``).
    election_priority: int = 0

    # --- replication (reference/rocketmq-controller.md §4.4-4.7, §6) ---------------------
    #: SYNC_MASTER: how long a send waits for the slaves' acks (``slaveTimeout``) before it
    #: is answered FLUSH_SLAVE_TIMEOUT (the message stays stored).
    slave_timeout_s: float = 3.0
    #: Writes are refused (SYSTEM_ERROR "in-sync replicas not enough") while the in-sync set,
    #: master included, is smaller than this (``minInSyncReplicas``; SYNC_MASTER only).
    min_in_sync_replicas: int = 1
    #: A sync write needs every in-sync slave's ack (``allAckInSyncStateSet``). RocketMQ's
    #: default is false; ours is true, the no-loss choice. False counts acks of any slave
    #: against ``in_sync_replicas``.
    all_ack_in_sync_state_set: bool = True
    #: Count mode: replicas, master included, that must hold a write (``inSyncReplicas``).
    in_sync_replicas: int = 2
    #: Master → slave heartbeat when idle, and the slave's periodic ack
    #: (``haSendHeartbeatInterval``).
    ha_send_heartbeat_interval_s: float = 5.0
    #: Either side drops an HA connection silent this long (``haHousekeepingInterval``).
    ha_housekeeping_interval_s: float = 20.0
    #: An in-sync slave not caught up for this long leaves the set
    #: (``haMaxTimeSlaveNotCatchup``).
    ha_max_time_slave_not_catchup_s: float = 15.0
    #: Period of the master's in-sync set check (``checkSyncStateSetPeriod``).
    check_sync_state_set_period_s: float = 5.0
    #: Largest HA transfer (``haTransferBatchSize``).
    ha_transfer_batch_bytes: int = 32 * 1024
    #: The master redirects a consumer that is far behind to a slave
    #: (``whichBrokerWhenConsumeSlowly`` of its group) and a slave keeps such a consumer
    #: (``slaveReadEnable``). Whatever its value, a slave serves pulls, and consumers read
    #: from it while the master is down.
    slave_read_enable: bool = False
    #: "Far behind": more unread CommitLog bytes after the pulled messages than this
    #: percentage of physical memory (``accessMessageInMemoryMaxRatio``)...
    access_message_in_memory_max_ratio: float = 40.0
    #: ...or than this many bytes, when set (tests; not a RocketMQ key).
    slave_read_behind_bytes: int | None = None
    #: A slave not connected to a master re-registers this often, to learn a (new) master's
    #: HA address from the NameServer sooner than ``register_interval_s``.
    slave_register_interval_s: float = 5.0
    #: A slave copies topics, groups, consumer and delay offsets from its master this often.
    slave_sync_interval_s: float = 3.0

    # --- metrics (RocketMQ 5's exporter keys; cli/metrics_http.py serves them) -----------
    #: ``PROM`` serves Prometheus' text format on ``metricsPromExporterPort``; ``DISABLE``
    #: (RocketMQ's default) serves nothing. ``rmq broker --metrics-port P`` sets both.
    metrics_exporter_type: str = attrs.field(
        default="DISABLE", validator=_one_of(("DISABLE", "PROM"))
    )
    metrics_prom_exporter_port: int = 5557
    #: Address the exporter binds ("": the broker's ``host``).
    metrics_prom_exporter_host: str = ""

    # --- limits on what a request may ask, and metadata writes (issue 13; README "Limits") --
    #: Read or write queues of one topic (``maxTopicQueueNums``; RocketMQ has no such cap):
    #: UPDATE_AND_CREATE_TOPIC, auto-created and retry topics and a group's retryQueueNums
    #: are refused past it, and a topic file holding more is served with this many.
    max_topic_queue_nums: int = 1024
    #: Messages in one SEND_BATCH_MESSAGE, counted before any is decoded
    #: (``maxBatchMessageNums``); the batch body itself must fit ``max_message_bytes``.
    max_batch_message_nums: int = 10_000
    #: Long polling: pulls held at once (``maxHeldPullNums``) and the request bytes they
    #: hold (``maxHeldPullBytes``); a pull past either is answered SYSTEM_BUSY at once.
    max_held_pull_nums: int = 10_000
    max_held_pull_bytes: int = 32 * 1024 * 1024
    #: Pop consumption: queues of the revive log ``rmq_sys_REVIVE_LOG_<cluster>``
    #: (``reviveQueueNum``; ``broker/pop/``).
    revive_queue_num: int = 8
    #: QUERY_MESSAGE answers at most this many records (``maxMsgsNumBatch``).
    max_msgs_num_batch: int = 64
    #: Characters of a PULL's subscription expression (``maxSubscriptionLength``).
    max_subscription_length: int = 65_536
    #: Message queues in one LOCK_BATCH_MQ / UNLOCK_BATCH_MQ body (``maxLockBatchQueues``).
    max_lock_batch_queues: int = 8192
    #: Consumer plus producer groups, and subscriptions, in one HEART_BEAT
    #: (``maxHeartbeatGroups``, ``maxHeartbeatSubscriptions``).
    max_heartbeat_groups: int = 1024
    max_heartbeat_subscriptions: int = 8192
    #: Consumer offsets are written at most this often (``flushConsumerOffsetInterval``).
    flush_consumer_offset_interval_s: float = 5.0
    #: Topic and group changes no request waits for (auto-created topics and groups, retry
    #: topics, a slave's copies) are written at most this often (``flushMetadataInterval``).
    flush_metadata_interval_s: float = 1.0
    #: Topic changes are announced to the NameServers at most this often: a burst of
    #: creates is one registration (``registerMinInterval``).
    register_min_interval_s: float = 1.0
    #: A background task that runs out of file descriptors retries after this long.
    fd_exhausted_retry_s: float = 1.0

    # --- untrusted replication and recovery (issue 13) -----------------------------------
    #: A slave refuses to cut its CommitLog more than this many bytes below the highest
    #: offset it held since it started, whatever its master asks (``haMaxTruncateBytes``).
    ha_max_truncate_bytes: int = attrs.field(
        default=1024 * 1024 * 1024, validator=attrs.validators.ge(0)
    )
    #: A master serves at most this many slaves on its HA port; a SyncStateSet member takes
    #: the slot of a slave never in sync (``haMaxConnections``).
    ha_max_connections: int = attrs.field(default=16, validator=attrs.validators.gt(0))
    #: ...and keeps at most this many connections waiting for their handshake, closing the
    #: oldest for a new one (``haMaxPendingConnections``)...
    ha_max_pending_connections: int = attrs.field(default=16, validator=attrs.validators.gt(0))
    #: ...each for at most this long (``haHandshakeTimeout``, milliseconds in TOML).
    ha_handshake_timeout_s: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    #: Damaged CommitLog bytes found at start refuse it unless this is set; then each damaged
    #: range is logged with its file and offset and never served (``skipDamagedSegments``,
    #: ``rmq broker --skip-damaged-segments``).
    skip_damaged_segments: bool = False
    #: At start, walk every CommitLog segment older than the three re-verified ones
    #: (record headers and body CRCs, about 250 MB/s), so damage there is found at start
    #: (``checkOldSegmentsOnStart``); false trusts them, as RocketMQ does.
    check_old_segments_on_start: bool = True
    #: Client connections the remoting port keeps at once; 0: half the process's
    #: descriptor limit, at most 10,000 (``serverMaxConnections``). More are refused.
    #: Register with the NameServers in RocketMQ's compressed form always
    #: (``compressedRegister``); otherwise only when the JSON form passes 1 MiB.
    compressed_register: bool = False
    server_max_connections: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: ...and from one remote IP (``serverMaxConnectionsPerPeer``).
    server_max_connections_per_peer: int = attrs.field(
        default=1_000, validator=attrs.validators.gt(0)
    )
    #: ACL 1.0 (protocol/acl.py): every request must be signed by an account of the
    #: plain-access file ``acl_file_path`` (``aclEnable``, ``aclFilePath``).
    acl_enable: bool = False
    acl_file_path: str = ""
    #: The account this broker signs its own requests with (NameServers, controllers, its
    #: master); with ACL on there it must be an admin account (``accessKey``, ``secretKey``).
    #: The secret is never listed by GET_BROKER_CONFIG nor shown in ``repr``.
    access_key: str = ""
    secret_key: str = attrs.field(default="", repr=False)

    # --- cluster trust and TLS (issue 16; README "TLS and cluster secrets") -------------
    #: File holding the cluster secret: registrations, controller calls and the HA
    #: handshake are then signed with it (``clusterSecretFile``). Empty: none.
    cluster_secret_file: str = ""
    #: The client port and the HA port speak TLS with this certificate and key (PEM) when
    #: both are set; the broker's own connections (NameServers, controllers, its master)
    #: then use TLS too, trusting ``tls_ca_file`` (``tlsServerCertPath``...).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    #: Clients must present a certificate that chains to ``tls_ca_file``
    #: (``tlsServerNeedClientAuth``).
    tls_verify_client: bool = False

    def __attrs_post_init__(self) -> None:
        if self.controller_addrs:
            pass  # the controller assigns the id and the role
        elif self.broker_role == "SLAVE" and self.broker_id <= 0:
            raise ConfigError(f"a SLAVE needs a broker id > 0 (brokerId), not {self.broker_id}")
        elif self.broker_role != "SLAVE" and self.broker_id != 0:
            raise ConfigError(
                f"a master ({self.broker_role}) has broker id 0 (brokerId), not {self.broker_id}; "
                "a slave is brokerRole SLAVE"
            )
        positive = {
            "slave_timeout_s": self.slave_timeout_s,
            "ha_send_heartbeat_interval_s": self.ha_send_heartbeat_interval_s,
            "ha_housekeeping_interval_s": self.ha_housekeeping_interval_s,
            "ha_max_time_slave_not_catchup_s": self.ha_max_time_slave_not_catchup_s,
            "check_sync_state_set_period_s": self.check_sync_state_set_period_s,
            "ha_transfer_batch_bytes": self.ha_transfer_batch_bytes,
            "slave_register_interval_s": self.slave_register_interval_s,
            "slave_sync_interval_s": self.slave_sync_interval_s,
            "min_in_sync_replicas": self.min_in_sync_replicas,
            "in_sync_replicas": self.in_sync_replicas,
            "lease_s": self.lease_s,
            **self._limits(),
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "controller_heartbeat_timeout_s": self.controller_heartbeat_timeout_s,
            "send_heartbeat_timeout_s": self.send_heartbeat_timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, not {value}")
        self._check_ceilings()
        self._check_liveness_timing()
        if self.ha_send_heartbeat_interval_s >= self.ha_housekeeping_interval_s:
            raise ConfigError(
                "haSendHeartbeatInterval must be shorter than haHousekeepingInterval "
                f"({self.ha_send_heartbeat_interval_s} s >= {self.ha_housekeeping_interval_s} s): "
                "an idle connection would be dropped"
            )
        if not 0 < self.access_message_in_memory_max_ratio <= 100:
            raise ConfigError("accessMessageInMemoryMaxRatio must be a percentage in (0, 100]")

    def _limits(self) -> dict[str, float]:
        """The request limits and intervals by their key names (all must be > 0)."""
        return {
            "maxTopicQueueNums": self.max_topic_queue_nums,
            "maxBatchMessageNums": self.max_batch_message_nums,
            "maxHeldPullNums": self.max_held_pull_nums,
            "maxHeldPullBytes": self.max_held_pull_bytes,
            "reviveQueueNum": self.revive_queue_num,
            "maxMsgsNumBatch": self.max_msgs_num_batch,
            "maxSubscriptionLength": self.max_subscription_length,
            "maxLockBatchQueues": self.max_lock_batch_queues,
            "maxHeartbeatGroups": self.max_heartbeat_groups,
            "maxHeartbeatSubscriptions": self.max_heartbeat_subscriptions,
            "flushConsumerOffsetInterval": self.flush_consumer_offset_interval_s,
            "flushMetadataInterval": self.flush_metadata_interval_s,
            "registerMinInterval": self.register_min_interval_s,
            "fd_exhausted_retry_s": self.fd_exhausted_retry_s,
        }

    def _check_ceilings(self) -> None:
        if self.max_topic_queue_nums > MAX_QUEUE_NUMS_CEILING:
            raise ConfigError(
                f"maxTopicQueueNums must be <= {MAX_QUEUE_NUMS_CEILING}, "
                f"not {self.max_topic_queue_nums}"
            )
        if self.max_batch_message_nums > MAX_BATCH_MESSAGE_NUMS_CEILING:
            raise ConfigError(
                f"maxBatchMessageNums must be <= {MAX_BATCH_MESSAGE_NUMS_CEILING} (the answer "
                f"lists every message id in one frame), not {self.max_batch_message_nums}"
            )
        if not 0 < self.default_topic_queue_nums <= self.max_topic_queue_nums:
            raise ConfigError(
                f"defaultTopicQueueNums must be in 1..maxTopicQueueNums "
                f"({self.max_topic_queue_nums}), not {self.default_topic_queue_nums}"
            )

    def _check_liveness_timing(self) -> None:
        """The lease must run out before the controllers may take the master for dead,
        and heartbeats must come several times within that timeout."""
        timeout_s = self.controller_heartbeat_timeout_s
        if self.lease_s >= timeout_s:
            raise ConfigError(
                f"lease_s ({self.lease_s} s) must be shorter than "
                f"controllerHeartBeatTimeoutMills ({timeout_s} s): a deposed master could "
                "otherwise still acknowledge writes after another was elected"
            )
        if 2 * self.heartbeat_interval_s > timeout_s:
            raise ConfigError(
                f"brokerHeartbeatInterval ({self.heartbeat_interval_s} s) must be at most half "
                f"of controllerHeartBeatTimeoutMills ({timeout_s} s): one late heartbeat "
                "would otherwise look like a dead broker"
            )

    @property
    def address(self) -> str:
        return f"{self.advertised_ip}:{self.listen_port}"

    @property
    def credentials(self) -> Credentials | None:
        """The broker's own ACL account, when both keys are set."""
        if not self.access_key or not self.secret_key:
            return None
        return Credentials(access_key=self.access_key, secret_key=self.secret_key)

    @property
    def controller_mode(self) -> bool:
        return bool(self.controller_addrs)

    def store_config(
        self, *, store_host: tuple[str, int], delay_levels_s: tuple[float, ...], node_name: str
    ) -> StoreConfig:
        """The message store's settings, with what the running broker adds."""
        return StoreConfig(
            segment_bytes=self.commitlog_segment_bytes,
            max_message_bytes=self.max_message_bytes,
            flush_mode=FlushMode(self.flush_disk_type),
            flush_interval_s=self.async_flush_interval_s,
            file_reserved_time_s=self.file_reserved_time_h * 3600,
            min_free_disk_bytes=self.min_free_disk_bytes,
            store_host=store_host,
            delay_levels_s=delay_levels_s,
            node_name=node_name,
            # Controller mode (RocketMQ's readUnCommitted=false): consumers see only what
            # the SyncStateSet holds (the confirm offset). A deposed or isolated master's
            # unreplicated tail is then never read, so no consumer commits an offset past
            # data the new master gives the same ConsumeQueue offsets (#7689).
            dispatch_confirmed_only=self.controller_mode,
            skip_damaged_segments=self.skip_damaged_segments,
            check_old_segments_on_open=self.check_old_segments_on_start,
        )

    def ha_config(self) -> HAConfig:
        """The replication engine's settings (static roles: the master owns its in-sync set;
        controller mode: SyncStateSet changes wait for the controller)."""
        heartbeat_s = self.ha_send_heartbeat_interval_s
        return HAConfig(
            controller_mode=self.controller_mode,
            all_ack_in_sync_state_set=self.all_ack_in_sync_state_set,
            in_sync_replicas=self.in_sync_replicas,
            heartbeat_interval_s=heartbeat_s,
            housekeeping_timeout_s=self.ha_housekeeping_interval_s,
            max_time_slave_not_catchup_s=self.ha_max_time_slave_not_catchup_s,
            check_interval_s=self.check_sync_state_set_period_s,
            batch_bytes=self.ha_transfer_batch_bytes,
            # RocketMQ's slave reports its offset every haSendHeartbeatInterval too.
            ack_interval_s=heartbeat_s,
            connect_timeout_s=self.request_timeout_s,
            reconnect_backoff_max_s=min(5.0, heartbeat_s),
            reconnect_backoff_min_s=min(0.1, heartbeat_s),
            inconsistent_retry_s=min(2.0, heartbeat_s),
            max_truncate_bytes=self.ha_max_truncate_bytes,
            max_connections=self.ha_max_connections,
            max_pending_connections=self.ha_max_pending_connections,
            handshake_timeout_s=self.ha_handshake_timeout_s,
            max_queue_nums=self.max_topic_queue_nums,
        )

    @property
    def transport(self) -> TransportConfig:
        """The remoting server's limits (the rest keep the transport's defaults)."""
        return TransportConfig(
            max_connections=self.server_max_connections or None,
            max_connections_per_peer=self.server_max_connections_per_peer,
        )


#: RocketMQ ``broker.conf`` names → our field names.
_ALIASES = {
    "brokerClusterName": "cluster_name",
    "brokerName": "broker_name",
    "brokerId": "broker_id",
    "brokerRole": "broker_role",
    "namesrvAddr": "namesrv_addrs",
    "aclEnable": "acl_enable",
    "aclFilePath": "acl_file_path",
    "accessKey": "access_key",
    "secretKey": "secret_key",
    "brokerIP1": "advertised_ip",
    "listenPort": "listen_port",
    "haListenPort": "ha_port",
    "storePathRootDir": "store_dir",
    "flushDiskType": "flush_disk_type",
    "haMasterAddress": "master_ha_addr",
    "minInSyncReplicas": "min_in_sync_replicas",
    "inSyncReplicas": "in_sync_replicas",
    "allAckInSyncStateSet": "all_ack_in_sync_state_set",
    "haTransferBatchSize": "ha_transfer_batch_bytes",
    "slaveReadEnable": "slave_read_enable",
    "accessMessageInMemoryMaxRatio": "access_message_in_memory_max_ratio",
    "mappedFileSizeCommitLog": "commitlog_segment_bytes",
    "maxMessageSize": "max_message_bytes",
    "fileReservedTime": "file_reserved_time_h",
    "autoCreateTopicEnable": "auto_create_topic_enable",
    "autoCreateSubscriptionGroup": "auto_create_subscription_group",
    "transactionCheckMax": "transaction_check_max",
    "defaultTopicQueueNums": "default_topic_queue_nums",
    "messageDelayLevel": "message_delay_level",
    "maxReconsumeTimes": "max_reconsume_times",
    "timerWheelEnable": "timer_wheel_enable",
    "timerMaxDelaySec": "timer_max_delay_s",
    "enablePropertyFilter": "enable_property_filter",
    "controllerAddr": "controller_addrs",
    "brokerElectionPriority": "election_priority",
    "metricsExporterType": "metrics_exporter_type",
    "metricsPromExporterPort": "metrics_prom_exporter_port",
    "metricsPromExporterHost": "metrics_prom_exporter_host",
    "maxTopicQueueNums": "max_topic_queue_nums",
    "maxBatchMessageNums": "max_batch_message_nums",
    "maxHeldPullNums": "max_held_pull_nums",
    "maxHeldPullBytes": "max_held_pull_bytes",
    "reviveQueueNum": "revive_queue_num",
    "maxMsgsNumBatch": "max_msgs_num_batch",
    "maxSubscriptionLength": "max_subscription_length",
    "maxLockBatchQueues": "max_lock_batch_queues",
    "maxHeartbeatGroups": "max_heartbeat_groups",
    "maxHeartbeatSubscriptions": "max_heartbeat_subscriptions",
    "haMaxTruncateBytes": "ha_max_truncate_bytes",
    "haMaxConnections": "ha_max_connections",
    "haMaxPendingConnections": "ha_max_pending_connections",
    "skipDamagedSegments": "skip_damaged_segments",
    "checkOldSegmentsOnStart": "check_old_segments_on_start",
    "compressedRegister": "compressed_register",
    "serverMaxConnections": "server_max_connections",
    "serverMaxConnectionsPerPeer": "server_max_connections_per_peer",
    "clusterSecretFile": "cluster_secret_file",
    "tlsServerCertPath": "tls_cert_file",
    "tlsServerKeyPath": "tls_key_file",
    "tlsServerTrustCertPath": "tls_ca_file",
    "tlsServerNeedClientAuth": "tls_verify_client",
}

#: RocketMQ keys in milliseconds → our fields in seconds.
_MILLIS = {
    "syncFlushTimeout": "sync_flush_timeout_s",
    "slaveTimeout": "slave_timeout_s",
    "transactionTimeOut": "transaction_timeout_s",
    "transactionCheckInterval": "transaction_check_interval_s",
    "haSendHeartbeatInterval": "ha_send_heartbeat_interval_s",
    "haHousekeepingInterval": "ha_housekeeping_interval_s",
    "haMaxTimeSlaveNotCatchup": "ha_max_time_slave_not_catchup_s",
    "checkSyncStateSetPeriod": "check_sync_state_set_period_s",
    "registerNameServerPeriod": "register_interval_s",
    "flushConsumerOffsetInterval": "flush_consumer_offset_interval_s",
    "flushMetadataInterval": "flush_metadata_interval_s",
    "registerMinInterval": "register_min_interval_s",
    "haHandshakeTimeout": "ha_handshake_timeout_s",
    "brokerHeartbeatInterval": "heartbeat_interval_s",
    "controllerHeartBeatTimeoutMills": "controller_heartbeat_timeout_s",
    "sendHeartbeatTimeoutMillis": "send_heartbeat_timeout_s",
}


def config_from_mapping(
    values: Mapping[str, Any], base: BrokerConfig | None = None
) -> BrokerConfig:
    """Apply ``values`` (RocketMQ or snake_case names) over ``base``; errors name the key."""
    known = {f.name: f for f in attrs.fields(BrokerConfig)}
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        name = _ALIASES.get(key, key)
        value = raw
        if key in _MILLIS:
            name, value = _MILLIS[key], _number(key, raw) / 1000
        if name not in known:
            raise ConfigError(f"unknown broker config key {key!r}")
        changes[name] = _coerce(key, name, value)
    try:
        return attrs.evolve(base or BrokerConfig(), **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def load_toml(path: Path, base: BrokerConfig | None = None) -> BrokerConfig:
    """The config in ``path`` over ``base``; every error starts with the path."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    section = data.get("broker", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [broker] must be a table")
    try:
        return config_from_mapping(section, base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


#: Numeric settings that may be negative (every other one is a count, size, port or time).
_SIGNED = frozenset({"election_priority"})
#: Java's long: no setting holds more (a 400-digit value does not become a float overflow).
_LONG_MAX = 2**63 - 1


def _number(key: str, value: Any) -> int | float:
    """``value`` if it is a finite number within a Java long's magnitude, else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"broker config key {key!r} must be a number, not {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"broker config key {key!r} must be a finite number, not {value!r}")
    if abs(value) > _LONG_MAX:
        raise ConfigError(f"broker config key {key!r} is out of range: {shown(value)}")
    return value


def _coerce(key: str, name: str, value: Any) -> Any:
    coerced = _coerce_type(key, name, value)
    if (
        isinstance(coerced, int | float)
        and not isinstance(coerced, bool)
        and coerced < 0
        and name not in _SIGNED
    ):
        raise ConfigError(f"broker config key {key!r} must not be negative, got {shown(coerced)}")
    return coerced


def _coerce_type(key: str, name: str, value: Any) -> Any:
    default = getattr(BrokerConfig(), name)
    if name in ("namesrv_addrs", "controller_addrs"):
        if isinstance(value, str):
            return tuple(a.strip() for a in value.replace(",", ";").split(";") if a.strip())
        if isinstance(value, list) and all(isinstance(a, str) for a in value):
            return tuple(value)
        raise ConfigError(f"broker config key {key!r} must be 'host:port;host:port' or a list")
    if name == "store_dir":
        if not isinstance(value, str | Path):
            raise ConfigError(f"broker config key {key!r} must be a path")
        return Path(value)
    if name == "ha_port":
        return None if value is None else int(_number(key, value))
    if name == "slave_read_behind_bytes":
        return None if value is None else int(_number(key, value))
    if name == "master_ha_addr":
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"broker config key {key!r} must be 'host:port'")
        return value or None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"broker config key {key!r} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        number = _number(key, value)
        if number != int(number):
            raise ConfigError(f"broker config key {key!r} must be an integer, not {value!r}")
        return int(number)
    if isinstance(default, float):
        return float(_number(key, value))
    if not isinstance(value, str):
        raise ConfigError(f"broker config key {key!r} must be a string, not {value!r}")
    return value


def parse_delay_levels(text: str) -> tuple[float, ...]:
    """``"1s 5s 1m 2h"`` → delays in seconds, level 1 first."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    delays: list[float] = []
    for token in text.split():
        unit = units.get(token[-1:])
        if unit is None or not (token[:-1].isascii() and token[:-1].isdigit()):
            raise ConfigError(f"delay level {token!r} is not <number><s|m|h|d>")
        delays.append(int(token[:-1]) * unit)
    if not delays:
        raise ConfigError("messageDelayLevel is empty")
    return tuple(delays)


def field_name(key: str) -> str:
    """The field a RocketMQ or snake_case key sets (an unknown key names itself)."""
    return _MILLIS.get(key) or _ALIASES.get(key, key)


def config_properties(config: BrokerConfig) -> dict[str, str]:
    """Every setting as GET_BROKER_CONFIG lists it: RocketMQ's key (snake_case where it has
    none) → the value as text, milliseconds for RocketMQ's millisecond keys."""
    names = {field: key for key, field in _ALIASES.items()}
    millis = {field: key for key, field in _MILLIS.items()}
    out: dict[str, str] = {}
    for field in attrs.fields(BrokerConfig):
        if field.name == "secret_key":
            continue  # a credential, not a setting to show
        value = getattr(config, field.name)
        if field.name in millis:
            out[millis[field.name]] = str(round(value * 1000))
            continue
        if isinstance(value, tuple):
            text = ";".join(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        out[names.get(field.name, field.name)] = text
    return dict(sorted(out.items()))
