"""The broker's topic table (TopicConfigManager.java).

Rules:
- Pure machine: every change takes ``now_ms`` and bumps ``data_version`` (counter + 1,
  stamped ``now_ms``) only when the table really changed; the I/O shell compares versions to
  know when to persist and re-register with the NameServers. File I/O happens only in
  ``load`` / ``save``.
- System topics are created at construction as Java's ``init()`` does (wire.md §3.4) and
  remembered, so admin can tell them apart; users cannot create, update or delete a system
  topic (INVALID_PARAMETER "... is conflict with system topic.", as
  ``validateSystemTopicWhenUpdateTopic`` does).
- Topic names: ``^[%|a-zA-Z0-9_-]+$``, at most 127 characters, 255 for ``%RETRY%`` / ``%DLQ%``
  topics (TopicValidator.validateTopic). An illegal request raises ``InvalidParameter`` with
  Java's remark and leaves the table unchanged.
- Auto-creation on send follows createTopicInSendMessageMethod: the template (usually TBW102)
  must carry PERM_INHERIT; the new topic gets min(requested, template write queues) queues
  and the template's perm without INHERIT.
- Retry and DLQ topics follow createTopicInSendMessageBackMethod: perm RW; DLQ has 1 queue.
  (RocketMQ 5.x creates DLQs readable; 4.x made them write-only.)
- Queue counts are capped (``max_queue_nums``, the broker's ``maxTopicQueueNums``): a
  create, update or auto-creation asking for more raises ``InvalidParameter``; retry topics
  are created with at most that many; a loaded (or copied) topic declaring more is kept
  with that many and named by ``restore`` (a file written before the cap existed, or by a
  broker with a higher one, must not make every per-queue loop run 10^20 times). System
  topics keep at least the queues the broker gives them (SCHEDULE_TOPIC_XXXX has 18).
- A new master covers the queues its replicated records name (``cover_stored_queues``):
  topics reach a slave only through the periodic metadata copy, so one created or widened
  on the old master since then would come back missing (auto-created with the default
  queues, its other queues refused and unread). Its data says how many queues it needs.
- Loading merges the file over the system topics (Java's ``putAll``), so a persisted change
  to a system topic survives restarts; the file's data version is adopted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from broker.store import metadata
from broker.store import results as results_module
from broker.store import store as store_module
from protocol.bodies import TopicConfigSerializeWrapper
from protocol.codes import PERM_INHERIT, PERM_PRIORITY, PERM_READ, PERM_WRITE
from protocol.errors import InvalidParameter, MalformedBody, StorageError
from protocol.group_topics import dlq_topic as dlq_topic  # broker/ imports it from here
from protocol.group_topics import is_group_topic
from protocol.group_topics import retry_topic as retry_topic  # broker/ imports it from here
from protocol.jsonbody import shown
from protocol.route import DEFAULT_QUEUE_NUMS, TOPIC_FILTER_TYPES, DataVersion, TopicConfig

log = logging.getLogger(__name__)

AUTO_CREATE_TOPIC_KEY_TOPIC = "TBW102"
SCHEDULE_TOPIC = store_module.SCHEDULE_TOPIC
TIMER_TOPIC = results_module.TIMER_TOPIC
BENCHMARK_TOPIC = "BenchmarkTest"
TRANS_HALF_TOPIC = "RMQ_SYS_TRANS_HALF_TOPIC"
TRANS_OP_HALF_TOPIC = "RMQ_SYS_TRANS_OP_HALF_TOPIC"
TRANS_CHECK_MAX_TIME_TOPIC = "TRANS_CHECK_MAX_TIME_TOPIC"
TRACE_TOPIC = "RMQ_SYS_TRACE_TOPIC"
SELF_TEST_TOPIC = "SELF_TEST_TOPIC"
OFFSET_MOVED_EVENT = "OFFSET_MOVED_EVENT"
ROCKSDB_OFFSET_TOPIC = "CHECKPOINT_TOPIC"
SYSTEM_TOPIC_PREFIX = "rmq_sys_"
REPLY_TOPIC_POSTFIX = "REPLY_TOPIC"

#: Queues of SCHEDULE_TOPIC_XXXX: one per delay level.
SCHEDULE_TOPIC_QUEUE_NUMS = 18
#: DLQ_NUMS_PER_GROUP.
DLQ_QUEUE_NUMS = 1
TOPIC_MAX_LENGTH = 127
RETRY_OR_DLQ_TOPIC_MAX_LENGTH = 255
#: Default of ``TopicConfigManager.max_queue_nums`` (BrokerConfig.max_topic_queue_nums).
MAX_QUEUE_NUMS = 1024

#: TopicValidator's SYSTEM_TOPIC_SET before any broker adds its own names.
SYSTEM_TOPICS = frozenset(
    {
        AUTO_CREATE_TOPIC_KEY_TOPIC,
        SCHEDULE_TOPIC,
        TIMER_TOPIC,
        BENCHMARK_TOPIC,
        TRANS_HALF_TOPIC,
        TRACE_TOPIC,
        TRANS_OP_HALF_TOPIC,
        TRANS_CHECK_MAX_TIME_TOPIC,
        SELF_TEST_TOPIC,
        OFFSET_MOVED_EVENT,
        ROCKSDB_OFFSET_TOPIC,
    }
)

#: Topics no client may send to (TopicValidator.NOT_ALLOWED_SEND_TOPIC_SET).
NOT_ALLOWED_SEND_TOPICS = frozenset(
    {
        SCHEDULE_TOPIC,
        TIMER_TOPIC,
        TRANS_HALF_TOPIC,
        TRANS_OP_HALF_TOPIC,
        TRANS_CHECK_MAX_TIME_TOPIC,
        SELF_TEST_TOPIC,
        OFFSET_MOVED_EVENT,
    }
)

#: Kind and schema version of the topics file.
FILE_KIND = "broker.topics"
FILE_VERSION = 1

_VALID_NAME = re.compile(r"[%|a-zA-Z0-9_-]+")
_PERM_ALL = PERM_INHERIT | PERM_READ | PERM_WRITE | PERM_PRIORITY
#: TopicSysFlag: FLAG_UNIT (1) and FLAG_UNIT_SUB (2), nothing else.
_TOPIC_SYS_FLAGS = 0x3


def validate_topic(topic: str) -> str | None:
    """Java's remark when ``topic`` is not a legal topic name, else ``None``."""
    if not topic or not topic.strip():
        return "The specified topic is blank."
    if not _VALID_NAME.fullmatch(topic):
        return (
            f"The specified topic: {topic}, contains illegal characters, "
            "allowing only ^[%|a-zA-Z0-9_-]+$"
        )
    if is_group_topic(topic):
        if len(topic) > RETRY_OR_DLQ_TOPIC_MAX_LENGTH:
            return (
                f"The specified topic is DLQ or Retry topic: {topic}, and it's longer than "
                f"topic max length: {RETRY_OR_DLQ_TOPIC_MAX_LENGTH}"
            )
    elif len(topic) > TOPIC_MAX_LENGTH:
        return f"The specified topic: {topic}, is longer than topic max length: {TOPIC_MAX_LENGTH}"
    return None


def _system_config(name: str, queue_nums: int, perm: int = PERM_READ | PERM_WRITE) -> TopicConfig:
    return TopicConfig(
        topic_name=name, read_queue_nums=queue_nums, write_queue_nums=queue_nums, perm=perm
    )


def _check_config(config: TopicConfig, max_queue_nums: int) -> None:
    """Raise ``InvalidParameter`` for values no broker should store."""
    for what, value in (
        ("readQueueNums", config.read_queue_nums),
        ("writeQueueNums", config.write_queue_nums),
    ):
        if not 0 <= value <= max_queue_nums:
            raise InvalidParameter(
                f"{what} of topic {config.topic_name} must be in 0..{max_queue_nums} "
                f"(maxTopicQueueNums), got {value}"
            )
    if config.perm & ~_PERM_ALL:
        raise InvalidParameter(f"perm of topic {config.topic_name} is invalid: {config.perm}")
    if config.topic_sys_flag & ~_TOPIC_SYS_FLAGS:
        raise InvalidParameter(
            f"topicSysFlag of topic {config.topic_name} is invalid: {config.topic_sys_flag}"
        )
    if config.topic_filter_type not in TOPIC_FILTER_TYPES:
        # Java's TopicFilterType.valueOf refuses it too; stored, it would make every
        # NameServer refuse this broker's whole registration (every topic's route).
        raise InvalidParameter(
            f"topicFilterType of topic {config.topic_name} must be one of "
            f"{', '.join(sorted(TOPIC_FILTER_TYPES))}, got {shown(config.topic_filter_type)}"
        )


def _queue_count(config: TopicConfig) -> int:
    return max(config.read_queue_nums, config.write_queue_nums)


def _capped(config: TopicConfig, max_queue_nums: int) -> TopicConfig:
    """``config`` with its queue counts cut to ``max_queue_nums`` (loading, copying)."""
    if _queue_count(config) <= max_queue_nums:
        return config
    return attrs.evolve(
        config,
        read_queue_nums=min(config.read_queue_nums, max_queue_nums),
        write_queue_nums=min(config.write_queue_nums, max_queue_nums),
    )


@attrs.define
class TopicConfigManager:
    """Topic name → TopicConfig, with RocketMQ's system topics and a data version."""

    cluster_name: str
    broker_name: str
    auto_create_topic_enable: bool = True
    #: Queue count of TBW102 (BrokerConfig.defaultTopicQueueNums).
    default_topic_queue_nums: int = 8
    cluster_topic_enable: bool = True
    broker_topic_enable: bool = True
    trace_topic_enable: bool = False
    trace_topic_name: str = TRACE_TOPIC
    #: Most read or write queues a topic may have (BrokerConfig.max_topic_queue_nums).
    max_queue_nums: int = MAX_QUEUE_NUMS
    data_version: DataVersion = attrs.field(factory=DataVersion)
    _table: dict[str, TopicConfig] = attrs.field(init=False, factory=dict)
    _system: set[str] = attrs.field(init=False, factory=set)
    #: The system topics as this broker creates them (their own queue counts, e.g. 18
    #: SCHEDULE_TOPIC_XXXX queues, are never capped).
    _builtin: dict[str, TopicConfig] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        for config in self._system_configs():
            self._table[config.topic_name] = config
            self._system.add(config.topic_name)
            self._builtin[config.topic_name] = config

    def _system_configs(self) -> Iterator[TopicConfig]:
        # Same order and values as TopicConfigManager.init(). Skipped: the POP revive topic,
        # the timer-wheel topic and rmq_sys_SYNC_BROKER_MEMBER_* (features we do not have).
        rw = PERM_READ | PERM_WRITE
        yield _system_config(SELF_TEST_TOPIC, 1)
        if self.auto_create_topic_enable:
            yield _system_config(
                AUTO_CREATE_TOPIC_KEY_TOPIC, self.default_topic_queue_nums, PERM_INHERIT | rw
            )
        yield _system_config(BENCHMARK_TOPIC, 1024)
        cluster_perm = PERM_INHERIT | (rw if self.cluster_topic_enable else 0)
        yield _system_config(self.cluster_name, DEFAULT_QUEUE_NUMS, cluster_perm)
        broker_perm = PERM_INHERIT | (rw if self.broker_topic_enable else 0)
        yield _system_config(self.broker_name, 1, broker_perm)
        yield _system_config(OFFSET_MOVED_EVENT, 1)
        yield _system_config(SCHEDULE_TOPIC, SCHEDULE_TOPIC_QUEUE_NUMS)
        yield _system_config(TIMER_TOPIC, 1)
        if self.trace_topic_enable:
            yield _system_config(self.trace_topic_name, 1)
        yield _system_config(f"{self.cluster_name}_{REPLY_TOPIC_POSTFIX}", 1)
        yield _system_config(TRANS_HALF_TOPIC, 1)
        yield _system_config(TRANS_OP_HALF_TOPIC, 1)

    # --- queries ------------------------------------------------------------------------

    def get(self, topic: str) -> TopicConfig | None:
        """The config of ``topic``, or ``None``."""
        return self._table.get(topic)

    def __contains__(self, topic: object) -> bool:
        return topic in self._table

    def __len__(self) -> int:
        return len(self._table)

    def topics(self) -> list[str]:
        """Every topic name, sorted."""
        return sorted(self._table)

    def configs(self) -> dict[str, TopicConfig]:
        """A copy of the whole table."""
        return dict(self._table)

    def is_system_topic(self, topic: str) -> bool:
        """True for RocketMQ's reserved names, ``rmq_sys_*`` and this broker's own topics."""
        return (
            topic in SYSTEM_TOPICS or topic in self._system or topic.startswith(SYSTEM_TOPIC_PREFIX)
        )

    def system_topics(self) -> list[str]:
        """The system topics created at start, sorted."""
        return sorted(self._system)

    def is_order_topic(self, topic: str) -> bool:
        """True when ``topic`` exists and is flagged ``order``."""
        config = self._table.get(topic)
        return config is not None and config.order

    def snapshot(self) -> TopicConfigSerializeWrapper:
        """The table and version for REGISTER_BROKER and GET_ALL_TOPIC_CONFIG."""
        return TopicConfigSerializeWrapper(
            topic_config_table=dict(self._table), data_version=self.data_version
        )

    # --- changes ------------------------------------------------------------------------

    def _bump(self, now_ms: int) -> None:
        self.data_version = self.data_version.next_version(now_ms=now_ms)

    def _put(self, config: TopicConfig, now_ms: int) -> bool:
        if self._table.get(config.topic_name) == config:
            return False
        self._table[config.topic_name] = config
        self._bump(now_ms)
        return True

    def _check_user_topic(self, topic: str) -> None:
        problem = validate_topic(topic)
        if problem is not None:
            raise InvalidParameter(problem)
        if self.is_system_topic(topic):
            raise InvalidParameter(f"The topic[{topic}] is conflict with system topic.")

    def set_state_version(self, state_version: int, *, now_ms: int) -> None:
        """Adopt a new master epoch as ``stateVersion`` (controller mode); bumps the counter."""
        if state_version != self.data_version.state_version:
            self.data_version = self.data_version.next_version(
                now_ms=now_ms, state_version=state_version
            )

    def cover_stored_queues(
        self, highest_queue_ids: Mapping[str, int], *, now_ms: int
    ) -> list[TopicConfig]:
        """Cover queues that received messages this table may not know of (a new master's
        replicated records since its last metadata copy): each user topic gets at least
        one queue past its highest such queue id, read and write; a missing one is created
        with that many (perm RW, no order), a narrower one widened. System topics and names
        no topic may have are left as they are; counts stop at ``max_queue_nums``.
        Returns the configs created or widened."""
        changed = []
        for topic, highest in sorted(highest_queue_ids.items()):
            if highest < 0 or self.is_system_topic(topic) or validate_topic(topic) is not None:
                continue
            need = min(highest + 1, self.max_queue_nums)
            existing = self._table.get(topic)
            if existing is None:
                config = TopicConfig(
                    topic_name=topic,
                    read_queue_nums=need,
                    write_queue_nums=need,
                    perm=PERM_READ | PERM_WRITE,
                )
            elif min(existing.read_queue_nums, existing.write_queue_nums) >= need:
                continue
            else:
                config = attrs.evolve(
                    existing,
                    read_queue_nums=max(existing.read_queue_nums, need),
                    write_queue_nums=max(existing.write_queue_nums, need),
                )
            self._put(config, now_ms)
            changed.append(config)
        return changed

    def create_or_update(self, config: TopicConfig, *, now_ms: int) -> bool:
        """UPDATE_AND_CREATE_TOPIC: store ``config``; False when it was already stored as is.

        Raises ``InvalidParameter`` (table unchanged) for an illegal or system topic name,
        queue counts outside ``0..max_queue_nums`` or unknown perm / sys flag bits.
        """
        self._check_user_topic(config.topic_name)
        _check_config(config, self.max_queue_nums)
        return self._put(config, now_ms)

    def delete(self, topic: str, *, now_ms: int) -> TopicConfig | None:
        """DELETE_TOPIC_IN_BROKER: remove ``topic``; returns its config, ``None`` if unknown.

        System topics cannot be deleted (``InvalidParameter``).
        """
        if not topic or not topic.strip():
            raise InvalidParameter("The specified topic is blank.")
        if self.is_system_topic(topic):
            raise InvalidParameter(f"The topic[{topic}] is conflict with system topic.")
        old = self._table.pop(topic, None)
        if old is not None:
            self._bump(now_ms)
        return old

    def auto_create_for_send(
        self,
        topic: str,
        default_topic: str,
        default_queue_nums: int,
        *,
        allow: bool,
        now_ms: int,
        topic_sys_flag: int = 0,
    ) -> TopicConfig | None:
        """The config to send to ``topic``, creating it from ``default_topic`` if ``allow``.

        Returns the existing config; else, when ``allow`` and the template exists with
        PERM_INHERIT, a new config with min(requested, template write queues) queues, the
        template's perm minus INHERIT and its filter type; else ``None``. An illegal or
        system topic name, or fewer than one requested queue, raises ``InvalidParameter``.
        """
        existing = self._table.get(topic)
        if existing is not None:
            return existing
        if not allow:
            return None
        self._check_user_topic(topic)
        template = self._table.get(default_topic)
        if template is None or not template.perm & PERM_INHERIT:
            return None
        if default_queue_nums < 1:
            raise InvalidParameter(
                f"defaultTopicQueueNums must be >= 1 to create topic {topic}, "
                f"got {default_queue_nums}"
            )
        queue_nums = min(default_queue_nums, template.write_queue_nums, self.max_queue_nums)
        config = TopicConfig(
            topic_name=topic,
            read_queue_nums=queue_nums,
            write_queue_nums=queue_nums,
            perm=template.perm & ~PERM_INHERIT,
            topic_filter_type=template.topic_filter_type,
            topic_sys_flag=topic_sys_flag,
        )
        self._put(config, now_ms)
        return config

    def _create_if_absent(
        self, topic: str, queue_nums: int, *, order: bool, topic_sys_flag: int, now_ms: int
    ) -> TopicConfig:
        problem = validate_topic(topic)
        if problem is not None:
            raise InvalidParameter(problem)
        existing = self._table.get(topic)
        if existing is not None:
            if existing.order != order:
                existing = attrs.evolve(existing, order=order)
                self._put(existing, now_ms)
            return existing
        queue_nums = max(0, min(queue_nums, self.max_queue_nums))
        config = TopicConfig(
            topic_name=topic,
            read_queue_nums=queue_nums,
            write_queue_nums=queue_nums,
            perm=PERM_READ | PERM_WRITE,
            topic_sys_flag=topic_sys_flag,
            order=order,
        )
        self._put(config, now_ms)
        return config

    def create_retry_topic(
        self,
        group: str,
        queue_nums: int = 1,
        *,
        now_ms: int,
        order: bool = False,
        topic_sys_flag: int = 0,
    ) -> TopicConfig:
        """``%RETRY%<group>`` with ``queue_nums`` queues (at most ``max_queue_nums``), perm RW
        (heartbeat, send-back).

        An existing retry topic is kept, except that its ``order`` flag follows ``order`` as
        Java does when a group subscribes to an order topic.
        """
        return self._create_if_absent(
            retry_topic(group),
            queue_nums,
            order=order,
            topic_sys_flag=topic_sys_flag,
            now_ms=now_ms,
        )

    def create_dlq_topic(self, group: str, *, now_ms: int) -> TopicConfig:
        """``%DLQ%<group>``: 1 queue, perm RW; an existing DLQ topic is returned as is."""
        existing = self._table.get(dlq_topic(group))
        if existing is not None:
            return existing
        return self._create_if_absent(
            dlq_topic(group), DLQ_QUEUE_NUMS, order=False, topic_sys_flag=0, now_ms=now_ms
        )

    def create_check_max_time_topic(self, *, now_ms: int) -> TopicConfig:
        """TRANS_CHECK_MAX_TIME_TOPIC (createTopicOfTranCheckMaxTime): 1 queue, perm RW."""
        return self._create_if_absent(
            TRANS_CHECK_MAX_TIME_TOPIC, 1, order=False, topic_sys_flag=0, now_ms=now_ms
        )

    # --- persistence --------------------------------------------------------------------

    def to_payload(self) -> dict[str, Any]:
        """The CBOR payload ``save`` writes."""
        return self.payload_snapshot()()

    def payload_snapshot(self) -> Callable[[], dict[str, Any]]:
        """The table as it is now, as a function that builds ``to_payload``'s value later
        (in a worker thread)."""
        return metadata.table_snapshot("topics", self._table, self.data_version)

    def restore(self, payload: Any) -> list[str]:
        """Merge a payload from ``to_payload`` over the table; raises ``MalformedBody``.

        The payload is checked whole before anything changes. Returns the topics that
        declared more than ``max_queue_nums`` queues: they are kept with that many.
        """
        configs, version = _parse_payload(payload)
        capped: list[str] = []
        builtin = {name: _queue_count(self._builtin[name]) for name in self._system}
        for config in configs:
            limit = max(self.max_queue_nums, builtin.get(config.topic_name, 0))
            kept = _capped(config, limit)
            if kept is not config:
                capped.append(config.topic_name)
            self._table[config.topic_name] = kept
        self.data_version = version
        return capped

    def save(self, path: Path) -> None:
        """Write the table atomically as a versioned CBOR document."""
        metadata.save_document(
            path, kind=FILE_KIND, version=FILE_VERSION, payload=self.to_payload()
        )

    def load(self, path: Path) -> bool:
        """Merge the table saved at ``path``; False when there is no file.

        A file that cannot be decoded raises ``StorageError`` naming it; the table is left
        as it was.
        """
        try:
            document = metadata.load_document(path, kind=FILE_KIND, max_version=FILE_VERSION)
            if document is None:
                return False
            capped = self.restore(document[1])
        except MalformedBody as exc:
            raise StorageError(f"cannot load topic configs from {path}: {exc}") from exc
        if capped:
            log.warning(
                "%s: %d topic(s) declare more than maxTopicQueueNums (%d) queues and are "
                "served with %d: %s",
                path,
                len(capped),
                self.max_queue_nums,
                self.max_queue_nums,
                ", ".join(capped[:10]) + (" ..." if len(capped) > 10 else ""),
            )
        return True


def _parse_payload(payload: Any) -> tuple[list[TopicConfig], DataVersion]:
    if not isinstance(payload, dict) or not isinstance(payload.get("topics"), list):
        raise MalformedBody("topics payload: expected {topics: [...], dataVersion: {...}}")
    configs = [TopicConfig.from_json(item) for item in payload["topics"]]
    version = DataVersion.from_json(payload.get("dataVersion") or {})
    return configs, version
