"""Configuration of the HA (replication) engine: one frozen value, every timer a knob.

Defaults follow RocketMQ's ``MessageStoreConfig`` (reference/rocketmq-controller.md §4.4–4.7,
§6); tests shrink the timers to fractions of a second.
"""

from __future__ import annotations

import ssl

import attrs


def _positive_int(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _non_negative(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _non_negative_s(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


@attrs.frozen(kw_only=True)
class HAConfig:
    """Timers, sizes and the replication policy shared by ``HAMaster`` and ``HASlave``."""

    #: Controller mode: SyncStateSet changes are proposals applied only once the controller
    #: confirms them (``apply_confirmed``); static mode applies them at once.
    controller_mode: bool = False
    #: A sync write needs the ack of every SyncStateSet member (``allAckInSyncStateSet``);
    #: False counts acks of any connection against ``in_sync_replicas``.
    all_ack_in_sync_state_set: bool = True
    #: Replicas (master included) that must hold a write in count mode (``inSyncReplicas``).
    in_sync_replicas: int = attrs.field(default=2, validator=_positive_int)
    #: Master → slave: an empty transfer after this long without sending
    #: (``haSendHeartbeatInterval``).
    heartbeat_interval_s: float = attrs.field(default=5.0, validator=_positive)
    #: A moved confirm offset rides the next transfer when one goes out within this long;
    #: otherwise an empty transfer carries it then. 0: an empty transfer at once. RocketMQ
    #: waits for the next transfer or ``haSendHeartbeatInterval`` (5 s); a per-change
    #: heartbeat doubled the master's sends and the slaves' wake-ups per sync write.
    confirm_linger_s: float = attrs.field(default=0.01, validator=_non_negative_s)
    #: Either side drops a connection it read nothing from for this long
    #: (``haHousekeepingInterval``).
    housekeeping_timeout_s: float = attrs.field(default=20.0, validator=_positive)
    #: A SyncStateSet member not caught up for this long is removed
    #: (``haMaxTimeSlaveNotCatchup``).
    max_time_slave_not_catchup_s: float = attrs.field(default=15.0, validator=_positive)
    #: Period of the master's SyncStateSet check (``checkSyncStateSetPeriod``).
    check_interval_s: float = attrs.field(default=5.0, validator=_positive)
    #: Largest transfer body (``haTransferBatchSize``).
    batch_bytes: int = attrs.field(default=32 * 1024, validator=_positive_int)
    #: Deadline of one send (a slave that does not drain its socket is dropped).
    send_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    #: Deadline of a slave's TCP connect.
    connect_timeout_s: float = attrs.field(default=3.0, validator=_positive)
    #: Slave → master: an ack at least this often even without new data.
    ack_interval_s: float = attrs.field(default=5.0, validator=_positive)
    #: Slave reconnect backoff: doubles from the first value up to the second.
    reconnect_backoff_min_s: float = attrs.field(default=0.1, validator=_positive)
    reconnect_backoff_max_s: float = attrs.field(default=5.0, validator=_positive)
    #: Slave wait before retrying a master whose log shares no epoch with ours.
    inconsistent_retry_s: float = attrs.field(default=2.0, validator=_positive)
    #: At most this many handshaken slave connections; more are closed at once, except that a
    #: known slave (a SyncStateSet member now or before) takes the place of one never in
    #: sync (``haMaxConnections``).
    max_connections: int = attrs.field(default=16, validator=_positive_int)
    #: A connection must send its handshake within this, or it is closed
    #: (``haHandshakeTimeout``; issue 13: idle sockets held every slot).
    handshake_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    #: At most this many connections waiting for their handshake; a new one closes the
    #: oldest (``haMaxPendingConnections``).
    max_pending_connections: int = attrs.field(default=16, validator=_positive_int)
    #: A slave refuses a consistent point more than this many bytes below the highest
    #: CommitLog offset its store held since it opened, and retries later
    #: (``haMaxTruncateBytes``): whatever master it follows, it throws away at most this.
    #: The cut a failover needs is the deposed master's unreplicated tail (seconds of
    #: writes); an unclean election may need more.
    max_truncate_bytes: int = attrs.field(default=1024 * 1024 * 1024, validator=_non_negative)
    #: A replicated record's queue id must lie in [0, this): the broker's cap on a topic's
    #: queue count.
    max_queue_nums: int = attrs.field(default=1024, validator=_positive_int)
    #: At most this many ``wait_replicated`` callers parked; more get TIMEOUT at once.
    max_waiters: int = attrs.field(default=65_536, validator=_positive_int)
    #: Window of the per-slave transfer speed shown by ``status()``.
    speed_window_s: float = attrs.field(default=5.0, validator=_positive)
    #: The cluster secret: when set, a slave must answer the master's challenge with it
    #: before anything is replicated (broker/ha/auth.py). None: no challenge.
    cluster_secret: bytes | None = attrs.field(default=None, repr=False)
    #: TLS: the master accepts slaves with this context, a slave connects with the other
    #: (handshake under ``handshake_timeout_s``). None: plain TCP.
    server_tls: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)
    client_tls: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        assert self.reconnect_backoff_min_s <= self.reconnect_backoff_max_s
        # A slave acks at least every ack_interval_s; a slower ack would look like silence.
        assert self.ack_interval_s < self.housekeeping_timeout_s
        assert self.heartbeat_interval_s < self.housekeeping_timeout_s
