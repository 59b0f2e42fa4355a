"""The broker's consumer-group settings (SubscriptionGroupManager.java).

Rules:
- Pure machine: changes take ``now_ms`` and bump ``data_version`` when the table changed;
  file I/O only in ``load`` / ``save``.
- RocketMQ's predefined groups (TOOLS_CONSUMER, SELF_TEST_C_GROUP, CID_ONSAPI_*, ...) exist
  from the start, as in Java's ``init()``.
- ``find_or_create`` is findSubscriptionGroupConfig: an unknown group is created with the
  defaults when auto-creation is on, or when it is a system group (``CID_RMQ_SYS_*``) and
  ``create_sys_group`` is on (Java's enableCreateSysGroup), and only if its name is legal
  (``^[%|a-zA-Z0-9_-]+$``, at most 120 characters); otherwise it answers ``None`` and the
  caller replies SUBSCRIPTION_GROUP_NOT_EXIST.
- ``update`` with an illegal name, or retry settings out of range (``retryQueueNums``
  above ``max_queue_nums``, the broker's ``maxTopicQueueNums``), raises
  ``InvalidParameter`` and changes nothing.
- Loading merges the file over the predefined groups and adopts the file's data version.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from broker.store import metadata
from protocol.bodies import SubscriptionGroupConfig, SubscriptionGroupWrapper
from protocol.errors import InvalidParameter, MalformedBody, StorageError
from protocol.route import DataVersion

__all__ = [
    "FILE_KIND",
    "FILE_VERSION",
    "PREDEFINED_GROUPS",
    "SubscriptionGroupConfig",
    "SubscriptionGroupManager",
    "is_sys_consumer_group",
    "validate_group",
]

TOOLS_CONSUMER_GROUP = "TOOLS_CONSUMER"
FILTERSRV_CONSUMER_GROUP = "FILTERSRV_CONSUMER"
SELF_TEST_CONSUMER_GROUP = "SELF_TEST_C_GROUP"
ONS_HTTP_PROXY_GROUP = "CID_ONS-HTTP-PROXY"
CID_ONSAPI_PULL_GROUP = "CID_ONSAPI_PULL"
CID_ONSAPI_PERMISSION_GROUP = "CID_ONSAPI_PERMISSION"
CID_ONSAPI_OWNER_GROUP = "CID_ONSAPI_OWNER"
CID_SYS_RMQ_TRANS = "CID_RMQ_SYS_TRANS"
CID_RMQ_SYS_PREFIX = "CID_RMQ_SYS_"
GROUP_MAX_LENGTH = 120

#: Groups SubscriptionGroupManager.init() creates, in its order.
PREDEFINED_GROUPS = (
    TOOLS_CONSUMER_GROUP,
    FILTERSRV_CONSUMER_GROUP,
    SELF_TEST_CONSUMER_GROUP,
    ONS_HTTP_PROXY_GROUP,
    CID_ONSAPI_PULL_GROUP,
    CID_ONSAPI_PERMISSION_GROUP,
    CID_ONSAPI_OWNER_GROUP,
    CID_SYS_RMQ_TRANS,
)

FILE_KIND = "broker.subscription-groups"
FILE_VERSION = 1

_VALID_NAME = re.compile(r"[%|a-zA-Z0-9_-]+")


def is_sys_consumer_group(group: str) -> bool:
    """MixAll.isSysConsumerGroup: ``CID_RMQ_SYS_*``."""
    return group.startswith(CID_RMQ_SYS_PREFIX)


def validate_group(group: str) -> str | None:
    """Java's remark when ``group`` is not a legal group name (validateGroup), else ``None``."""
    if not group or not group.strip():
        return "The specified group is blank."
    if not _VALID_NAME.fullmatch(group):
        return (
            f"The specified group: {group}, contains illegal characters, "
            "allowing only ^[%|a-zA-Z0-9_-]+$"
        )
    if len(group) > GROUP_MAX_LENGTH:
        return f"The specified group: {group}, is longer than group max length: {GROUP_MAX_LENGTH}"
    return None


@attrs.define
class SubscriptionGroupManager:
    """Group name → SubscriptionGroupConfig, with a data version."""

    data_version: DataVersion = attrs.field(factory=DataVersion)
    #: Most queues a group's retry topic may have (BrokerConfig.max_topic_queue_nums).
    max_queue_nums: int = 1024
    _table: dict[str, SubscriptionGroupConfig] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        for name in PREDEFINED_GROUPS:
            self._table[name] = SubscriptionGroupConfig(group_name=name)

    def _bump(self, now_ms: int) -> None:
        self.data_version = self.data_version.next_version(now_ms=now_ms)

    # --- queries ------------------------------------------------------------------------

    def get(self, group: str) -> SubscriptionGroupConfig | None:
        """The config of ``group`` without creating it."""
        return self._table.get(group)

    def __contains__(self, group: object) -> bool:
        return group in self._table

    def __len__(self) -> int:
        return len(self._table)

    def groups(self) -> list[str]:
        """Every group name, sorted."""
        return sorted(self._table)

    def configs(self) -> dict[str, SubscriptionGroupConfig]:
        """A copy of the whole table."""
        return dict(self._table)

    def snapshot(self) -> SubscriptionGroupWrapper:
        """The table and version for GET_ALL_SUBSCRIPTIONGROUP_CONFIG."""
        return SubscriptionGroupWrapper(
            subscription_group_table=dict(self._table), data_version=self.data_version
        )

    # --- changes ------------------------------------------------------------------------

    def find_or_create(
        self, group: str, *, auto_create: bool, now_ms: int, create_sys_group: bool = True
    ) -> SubscriptionGroupConfig | None:
        """The group's config; an unknown group is created when allowed (see module rules)."""
        config = self._table.get(group)
        if config is not None:
            return config
        if not (auto_create or (create_sys_group and is_sys_consumer_group(group))):
            return None
        if validate_group(group) is not None:
            return None
        config = SubscriptionGroupConfig(group_name=group)
        self._table[group] = config
        self._bump(now_ms)
        return config

    def update(self, config: SubscriptionGroupConfig, *, now_ms: int) -> bool:
        """UPDATE_AND_CREATE_SUBSCRIPTIONGROUP; False when stored unchanged already.

        Raises ``InvalidParameter`` (table unchanged) for an illegal group name or negative
        retry settings.
        """
        problem = validate_group(config.group_name)
        if problem is not None:
            raise InvalidParameter(problem)
        if not 0 <= config.retry_queue_nums <= self.max_queue_nums or config.retry_max_times < -1:
            raise InvalidParameter(
                f"group {config.group_name}: retryQueueNums must be in 0..{self.max_queue_nums} "
                f"(maxTopicQueueNums) and retryMaxTimes >= -1, got {config.retry_queue_nums} / "
                f"{config.retry_max_times}"
            )
        if self._table.get(config.group_name) == config:
            return False
        self._table[config.group_name] = config
        self._bump(now_ms)
        return True

    def delete(self, group: str, *, now_ms: int) -> SubscriptionGroupConfig | None:
        """DELETE_SUBSCRIPTIONGROUP: remove ``group``; returns its config, ``None`` if unknown."""
        old = self._table.pop(group, None)
        if old is not None:
            self._bump(now_ms)
        return old

    def disable_consume(self, group: str, *, now_ms: int) -> bool:
        """Turn ``consumeEnable`` off for ``group``; False if unknown or already off."""
        config = self._table.get(group)
        if config is None or not config.consume_enable:
            return False
        self._table[group] = attrs.evolve(config, consume_enable=False)
        self._bump(now_ms)
        return True

    # --- persistence --------------------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """The CBOR payload ``save`` writes."""
        return self.payload_snapshot()()

    def payload_snapshot(self) -> Callable[[], dict[str, Any]]:
        """The table as it is now, as a function that builds ``to_payload``'s value later
        (in a worker thread)."""
        return metadata.table_snapshot("groups", self._table, self.data_version)

    def restore(self, payload: Any) -> None:
        """Merge a payload from ``to_payload``; checked whole first (``MalformedBody``)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("groups"), list):
            raise MalformedBody("groups payload: expected {groups: [...], dataVersion: {...}}")
        configs = [SubscriptionGroupConfig.from_json(item) for item in payload["groups"]]
        version = DataVersion.from_json(payload.get("dataVersion") or {})
        for config in configs:
            self._table[config.group_name] = config
        self.data_version = version

    def save(self, path: Path) -> None:
        """Write the table atomically as a versioned CBOR document."""
        metadata.save_document(
            path, kind=FILE_KIND, version=FILE_VERSION, payload=self.to_payload()
        )

    def load(self, path: Path) -> bool:
        """Merge the table saved at ``path``; False when there is no file.

        A file that cannot be decoded raises ``StorageError`` naming it, table unchanged.
        """
        try:
            document = metadata.load_document(path, kind=FILE_KIND, max_version=FILE_VERSION)
            if document is None:
                return False
            self.restore(document[1])
        except MalformedBody as exc:
            raise StorageError(f"cannot load subscription groups from {path}: {exc}") from exc
        return True
