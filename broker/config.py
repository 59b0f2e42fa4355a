"""Broker configuration: one frozen value, from flags or a TOML file.

Rules:
- TOML keys are RocketMQ's own ``broker.conf`` names (``brokerClusterName``, ``brokerName``,
  ``brokerId``, ``namesrvAddr``, ``listenPort``, ``storePathRootDir``, ``flushDiskType``,
  ``brokerRole``, ...) so an existing config carries over; snake_case names work too.
- An unknown key or a value of the wrong type is an error naming the key, never ignored.
- Pure: ``load_toml`` reads a file; nothing else here does I/O.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

ROLES = ("ASYNC_MASTER", "SYNC_MASTER", "SLAVE")
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
    #: HA (replication) port; None means listen_port + 1, 0 picks a free one.
    ha_port: int | None = None
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
    #: ``messageDelayLevel``: delay of each level, 1-based.
    message_delay_level: str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
    max_reconsume_times: int = 16
    request_timeout_s: float = 3.0

    @property
    def address(self) -> str:
        return f"{self.advertised_ip}:{self.listen_port}"

    @property
    def is_master(self) -> bool:
        return self.broker_role != "SLAVE"


#: RocketMQ ``broker.conf`` names → our field names.
_ALIASES = {
    "brokerClusterName": "cluster_name",
    "brokerName": "broker_name",
    "brokerId": "broker_id",
    "brokerRole": "broker_role",
    "namesrvAddr": "namesrv_addrs",
    "brokerIP1": "advertised_ip",
    "listenPort": "listen_port",
    "haListenPort": "ha_port",
    "storePathRootDir": "store_dir",
    "flushDiskType": "flush_disk_type",
    "syncFlushTimeout": "sync_flush_timeout_ms",
    "mappedFileSizeCommitLog": "commitlog_segment_bytes",
    "maxMessageSize": "max_message_bytes",
    "fileReservedTime": "file_reserved_time_h",
    "autoCreateTopicEnable": "auto_create_topic_enable",
    "autoCreateSubscriptionGroup": "auto_create_subscription_group",
    "defaultTopicQueueNums": "default_topic_queue_nums",
    "messageDelayLevel": "message_delay_level",
    "maxReconsumeTimes": "max_reconsume_times",
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
        if name == "sync_flush_timeout_ms":
            name, value = "sync_flush_timeout_s", _number(key, raw) / 1000
        if name not in known:
            raise ConfigError(f"unknown broker config key {key!r}")
        changes[name] = _coerce(key, name, value)
    try:
        return attrs.evolve(base or BrokerConfig(), **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def load_toml(path: Path, base: BrokerConfig | None = None) -> BrokerConfig:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read broker config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"broker config {path} is not valid TOML: {exc}") from None
    section = data.get("broker", data)
    if not isinstance(section, dict):
        raise ConfigError(f"broker config {path}: [broker] must be a table")
    return config_from_mapping(section, base)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"broker config key {key!r} must be a number, not {value!r}")
    return float(value)


def _coerce(key: str, name: str, value: Any) -> Any:
    default = getattr(BrokerConfig(), name)
    if name == "namesrv_addrs":
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
        return _number(key, value)
    if not isinstance(value, str):
        raise ConfigError(f"broker config key {key!r} must be a string, not {value!r}")
    return value


def parse_delay_levels(text: str) -> tuple[float, ...]:
    """``"1s 5s 1m 2h"`` → delays in seconds, level 1 first."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    delays: list[float] = []
    for token in text.split():
        unit = units.get(token[-1:])
        if unit is None or not token[:-1].isdigit():
            raise ConfigError(f"delay level {token!r} is not <number><s|m|h|d>")
        delays.append(int(token[:-1]) * unit)
    if not delays:
        raise ConfigError("messageDelayLevel is empty")
    return tuple(delays)
