"""Controller node configuration: one frozen value, from a TOML file or built in code.

Rules:
- Every node of a quorum knows every node (``peers``: node id → Raft address and remoting
  address) in advance: Raft peers dial each other's Raft port, and a follower names the
  leader's *remoting* address (where brokers and admins talk) in CONTROLLER_NOT_LEADER and
  GetMetaData answers, so it maps the Raft leader it knows to that.
- The shared secret (``password``) protects the Raft port (pysyncobj encrypts and
  authenticates every peer message with it); it is required, and a config file holding it
  is written with mode 0600.
- TOML: snake_case keys under ``[controller]`` (or at top level), RocketMQ's names accepted
  for the ones it has (``controllerDLegerGroup``, ``controllerDLegerSelfId``,
  ``controllerStorePath``, ``enableElectUncleanMaster``, ``notifyBrokerRoleChanged``,
  ``electMasterMaxRetryCount``; ``scanNotActiveBrokerInterval`` and
  ``scanInactiveMasterInterval`` in milliseconds), and ``[peers.<id>]`` tables with
  ``raft`` and ``remoting`` addresses. A relative ``data_dir`` is relative to the file.
  An unknown key or a value of the wrong type is a ``ConfigError`` naming it.
- ``load_toml`` reads a file and ``write_toml`` writes one; nothing else here does I/O.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from controller.raft import RaftConfig

#: The default Raft group name (RocketMQ's ``controllerDLegerGroup`` has none).
DEFAULT_GROUP = "trio-rocketmq-controller"


class ConfigError(ValueError):
    """A controller configuration value is missing, unknown or of the wrong type."""


def _check_address(addr: str, what: str) -> None:
    host, sep, port = addr.rpartition(":")
    digits = port.isascii() and port.isdigit()
    if not sep or not host or not digits or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {addr!r} is not host:port")


@attrs.frozen(kw_only=True)
class Peer:
    """One node of the quorum: where its Raft port and its remoting port listen."""

    node_id: str
    raft_address: str
    remoting_address: str


def _freeze_peers(value: Mapping[str, Peer]) -> Mapping[str, Peer]:
    return dict(sorted(value.items()))


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name} must be positive, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ConfigError(f"{attribute.name} must not be negative, got {value!r}")


@attrs.frozen(kw_only=True)
class ControllerConfig:
    """Everything one controller node needs to know before it starts."""

    node_id: str
    peers: Mapping[str, Peer] = attrs.field(converter=_freeze_peers)
    password: str = attrs.field(repr=False)
    data_dir: Path
    group: str = DEFAULT_GROUP
    # --- ACL 1.0 (protocol/acl.py; ``aclEnable``, ``aclFilePath``) ----------------------
    #: Every remoting request must be signed by an account of the plain-access file; the
    #: codes that change the cluster (elect, clean broker data, register...) by an admin.
    acl_enable: bool = False
    #: The plain-access file (RocketMQ's plain_acl.yml format); relative to the config file.
    acl_file_path: str = ""
    # --- liveness and elections (reference §2.4, §6) ----------------------------------
    #: Silent brokers are expired the moment their timeout ends (the scan sleeps until the
    #: earliest deadline); this is the longest the scan sleeps when none is due sooner
    #: (scanNotActiveBrokerInterval, RocketMQ's fixed scan period).
    scan_not_active_broker_interval_s: float = attrs.field(default=5.0, validator=_positive)
    #: A scan that wakes this much later than it meant to means this node itself did not
    #: run (CPU starvation, a pause): its sockets hold heartbeats it has not read yet...
    stall_tolerance_s: float = attrs.field(default=0.2, validator=_positive)
    #: ...so silence-based elections wait this long after such a wake-up.
    stall_settle_s: float = attrs.field(default=0.5, validator=_positive)
    #: How often the leader looks for groups with a dead master (scanInactiveMasterInterval).
    scan_inactive_master_interval_s: float = attrs.field(default=5.0, validator=_positive)
    #: A node that has just started has heard no heartbeats yet: it looks for dead masters
    #: only after this long (brokers heartbeat every second), so a full controller restart
    #: never deposes a live master it simply has not heard from yet.
    election_warmup_s: float = attrs.field(default=3.0, validator=_positive)
    #: Tries of a controller-triggered election that did not commit (electMasterMaxRetryCount).
    elect_master_max_retry_count: int = 3
    elect_master_retry_interval_s: float = attrs.field(default=1.0, validator=_positive)
    enable_elect_unclean_master: bool = False
    #: After a group-wide outage (no master, members back one by one) an election waits
    #: up to this long for every SyncStateSet member to heartbeat again, so the longest
    #: log wins (controller/election.py ``OutageHold``); 0 elects the first one back.
    #: Beyond RocketMQ, which elects the first live member.
    elect_wait_for_sync_state_set_s: float = attrs.field(default=6.0, validator=_non_negative)
    notify_broker_role_changed: bool = True
    #: Deadline of one role-change notification write.
    notify_timeout_s: float = attrs.field(default=3.0, validator=_positive)
    #: How often the node checks whether it became or stopped being the Raft leader.
    leader_poll_interval_s: float = attrs.field(default=0.05, validator=_positive)
    # --- Raft (reference/pysyncobj-verified.md §5) --------------------------------------
    #: How long a command may take to commit before the caller gets an error.
    commit_timeout_s: float = attrs.field(default=3.0, validator=_positive)
    raft_min_timeout_s: float = 0.3
    raft_max_timeout_s: float = 0.6
    append_entries_period_s: float = 0.05
    connection_retry_s: float = 0.5
    leader_fallback_timeout_s: float = 2.0
    log_compaction_min_entries: int = 1000
    # --- metrics (RocketMQ's exporter keys; rmq controller serves them) -----------------
    #: ``PROM`` serves Prometheus' text format on ``metrics_prom_exporter_port`` (0: a free
    #: port) at the remoting address's host; ``DISABLE``, RocketMQ's default, serves none.
    metrics_exporter_type: str = "DISABLE"
    metrics_prom_exporter_port: int = 5557
    # --- cluster trust and TLS (issue 16; README "TLS and cluster secrets") -------------
    #: File holding the cluster secret: broker codes (register, heartbeat, SyncStateSet,
    #: elections, clean broker data) then need its signature. Empty: no check.
    cluster_secret_file: str = ""
    #: The remoting port speaks TLS with this certificate and key (PEM) when both are set.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: CA (PEM) that client certificates must chain to; with ``tls_verify_client`` a client
    #: without one is refused.
    tls_ca_file: str = ""
    tls_verify_client: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.node_id:
            raise ConfigError("node_id is empty")
        if self.node_id not in self.peers:
            known = ", ".join(self.peers) or "none"
            raise ConfigError(f"node {self.node_id!r} is not among the peers ({known})")
        if not self.password:
            raise ConfigError(
                "password (the quorum's shared secret) is empty: the Raft port needs one"
            )
        seen: dict[str, str] = {}
        for node_id, peer in self.peers.items():
            if peer.node_id != node_id:
                raise ConfigError(f"peer {node_id!r} names itself {peer.node_id!r}")
            for what, addr in (("raft", peer.raft_address), ("remoting", peer.remoting_address)):
                _check_address(addr, f"peer {node_id} {what} address")
                if addr in seen:
                    raise ConfigError(f"address {addr} is used twice ({seen[addr]}, {node_id})")
                seen[addr] = node_id
        if self.metrics_exporter_type not in ("DISABLE", "PROM"):
            raise ConfigError(
                f"metrics_exporter_type must be DISABLE or PROM, not {self.metrics_exporter_type!r}"
            )
        if self.elect_master_max_retry_count < 1:
            raise ConfigError("elect_master_max_retry_count must be at least 1")

    # --- derived -------------------------------------------------------------------------

    @property
    def self_peer(self) -> Peer:
        return self.peers[self.node_id]

    @property
    def raft_address(self) -> str:
        return self.self_peer.raft_address

    @property
    def remoting_address(self) -> str:
        return self.self_peer.remoting_address

    @property
    def partners(self) -> list[str]:
        """The other nodes' Raft addresses."""
        return [p.raft_address for n, p in self.peers.items() if n != self.node_id]

    @property
    def controller_addrs(self) -> str:
        """Every node's remoting address, ``a;b;c``: what brokers pass as controller list."""
        return ";".join(p.remoting_address for p in self.peers.values())

    def raft_config(self) -> RaftConfig:
        return RaftConfig(
            password=self.password,
            data_dir=self.data_dir / "raft",
            append_entries_period_s=self.append_entries_period_s,
            raft_min_timeout_s=self.raft_min_timeout_s,
            raft_max_timeout_s=self.raft_max_timeout_s,
            connection_retry_s=self.connection_retry_s,
            leader_fallback_timeout_s=self.leader_fallback_timeout_s,
            log_compaction_min_entries=self.log_compaction_min_entries,
            commit_timeout_s=self.commit_timeout_s,
        )

    def for_node(self, node_id: str, data_dir: Path) -> ControllerConfig:
        """The same quorum as seen by ``node_id``."""
        return attrs.evolve(self, node_id=node_id, data_dir=data_dir)


# --- TOML ---------------------------------------------------------------------------------

#: RocketMQ ``controller.conf`` names → our field names.
_ALIASES = {
    "controllerDLegerGroup": "group",
    "controllerDLegerSelfId": "node_id",
    "controllerStorePath": "data_dir",
    "enableElectUncleanMaster": "enable_elect_unclean_master",
    "notifyBrokerRoleChanged": "notify_broker_role_changed",
    "electMasterMaxRetryCount": "elect_master_max_retry_count",
    "metricsExporterType": "metrics_exporter_type",
    "metricsPromExporterPort": "metrics_prom_exporter_port",
    "aclEnable": "acl_enable",
    "aclFilePath": "acl_file_path",
}
#: RocketMQ keys in milliseconds → our fields in seconds.
_MILLIS = {
    "scanNotActiveBrokerInterval": "scan_not_active_broker_interval_s",
    "scanInactiveMasterInterval": "scan_inactive_master_interval_s",
}
_TOML_FIELDS = [f for f in attrs.fields(ControllerConfig) if f.name != "peers"]


def _coerce(key: str, field: attrs.Attribute[Any], value: Any, base_dir: Path) -> Any:
    if field.name == "data_dir":
        if not isinstance(value, str):
            raise ConfigError(f"controller config key {key!r} must be a path string")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base_dir / path
    if field.name == "acl_file_path" and isinstance(value, str) and value:
        return str(base_dir / Path(value).expanduser())  # an absolute one stays as it is
    default = field.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"controller config key {key!r} must be true or false")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"controller config key {key!r} must be an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"controller config key {key!r} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"controller config key {key!r} must be a string")
    return value


def _peers(raw: Any) -> dict[str, Peer]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("[peers] must hold one table per node: [peers.n0] raft=... remoting=...")
    peers: dict[str, Peer] = {}
    for node_id, table in raw.items():
        if not isinstance(table, dict) or set(table) != {"raft", "remoting"}:
            raise ConfigError(f"[peers.{node_id}] must have exactly 'raft' and 'remoting'")
        if not all(isinstance(v, str) for v in table.values()):
            raise ConfigError(f"[peers.{node_id}] addresses must be strings")
        peers[node_id] = Peer(
            node_id=node_id, raft_address=table["raft"], remoting_address=table["remoting"]
        )
    return peers


def config_from_mapping(values: Mapping[str, Any], *, base_dir: Path) -> ControllerConfig:
    """Build a config from TOML-shaped ``values``; errors name the key."""
    fields = {f.name: f for f in _TOML_FIELDS}
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key == "peers":
            kwargs["peers"] = _peers(raw)
            continue
        name, value = _ALIASES.get(key, key), raw
        if key in _MILLIS:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ConfigError(f"controller config key {key!r} must be a number of ms")
            name, value = _MILLIS[key], raw / 1000
        if name not in fields:
            raise ConfigError(f"unknown controller config key {key!r}")
        kwargs[name] = _coerce(key, fields[name], value, base_dir)
    missing = [n for n in ("node_id", "peers", "password", "data_dir") if n not in kwargs]
    if missing:
        raise ConfigError(f"controller config lacks {', '.join(missing)}")
    try:
        return ControllerConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def load_toml(path: Path) -> ControllerConfig:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read controller config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"controller config {path} is not valid TOML: {exc}") from None
    section = data.get("controller", data)
    if not isinstance(section, dict):
        raise ConfigError(f"controller config {path}: [controller] must be a table")
    if "peers" in data and section is not data:
        section = {**section, "peers": data["peers"]}
    try:
        return config_from_mapping(section, base_dir=path.parent.absolute())
    except ConfigError as exc:
        raise ConfigError(f"controller config {path}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def dumps_toml(config: ControllerConfig) -> str:
    """The TOML text of ``config`` (every field, so the file documents the knobs)."""
    lines = [
        "# trio-rocketmq controller node. Holds the quorum's shared secret: keep it 0600.",
        "[controller]",
    ]
    for field in _TOML_FIELDS:
        lines.append(f"{field.name} = {_toml_value(getattr(config, field.name))}")
    for node_id, peer in config.peers.items():
        lines += [
            "",
            f"[peers.{node_id}]",
            f"raft = {_toml_value(peer.raft_address)}",
            f"remoting = {_toml_value(peer.remoting_address)}",
        ]
    return "\n".join(lines) + "\n"


def write_toml(path: Path, config: ControllerConfig) -> None:
    """Write ``config`` to ``path`` with mode 0600 (atomically: temp, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover temp file
        os.write(fd, dumps_toml(config).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
