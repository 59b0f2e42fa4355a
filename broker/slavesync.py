"""A slave copies its master's metadata every few seconds (RocketMQ's SlaveSynchronize).

Rules (reference/rocketmq-controller.md §4.3, §9 #9804):
- Every ``slave_sync_interval_s`` the slave asks its master, over the master's normal
  client port, for GET_ALL_TOPIC_CONFIG, GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
  GET_ALL_CONSUMER_OFFSET and GET_ALL_DELAY_OFFSET (standard JSON bodies), each under
  ``request_timeout_s``, and installs what changed. A failure (master down, bad body) is
  logged once per outage and retried next round; nothing is installed from a bad body.
- Topics and groups: the master's table replaces ours whole when its DataVersion differs
  (RocketMQ clears and refills), so a topic deleted on the master goes from the slave too.
  Each change is written within ``flushMetadataInterval`` (``broker/persistence.py``), so
  a slave restarted as master serves the topics its master had (apache/rocketmq#9804:
  metadata reaches slaves only through this copy).
- Consumer offsets: the master's entries overwrite ours queue by queue; entries the master
  does not have stay (RocketMQ's ``putAll``). Commits a client made to this slave while the
  master was down are therefore replaced by the master's values when it returns: clients
  commit to the master again once they see it, and a consumer that restarts in between
  consumes some messages twice, never skips one (apache/rocketmq#1094 is this trade-off).
- Delay offsets and the timer checkpoint (GET_TIMER_CHECK_POINT): the master's replace
  ours (the slave delivers nothing itself).
- Only the master named by the NameServer (``RoleState.master_addr``) is asked.
- A record naming a topic or queue the slave's table lacks asks for a round at once
  (``soon``; the broker's new-queue listener), at most one per ``SOON_GAP_S``: a topic
  created on the master reaches its slaves within a round trip, not a period.
- ``covered``: the store's queue ends when the last good round began. The master's topic
  table it installed covers every record below them; records past them may name a topic
  this slave has no config for yet, which it takes from its data if it becomes master
  (``TopicConfigManager.cover_stored_queues``). The broker also moves it where its own
  table covers everything stored: at start (what the loaded table covers) and at each
  role change.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

import trio

from broker.groups import SubscriptionGroupManager
from broker.offsets import ConsumerOffsetManager
from broker.persistence import MetadataFiles
from broker.role import BrokerIdentity
from broker.schedule import ScheduleService
from broker.store.store import MessageStore
from broker.timers import TimerCheckpoint
from broker.timerstore import TimerService
from broker.topics import TopicConfigManager
from protocol.bodies import SubscriptionGroupWrapper, TopicConfigSerializeWrapper
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import MalformedBody, RocketError
from protocol.rpc import RemotingClient, check_success

log = logging.getLogger(__name__)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedBody(f"{what}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedBody(f"{what}: expected a JSON object")
    return value


def _int_key(key: object, what: str) -> int:
    if isinstance(key, str) and key.isascii() and key.isdigit():
        return int(key)
    raise MalformedBody(f"{what}: key {key!r} is not a non-negative integer")


def _offset(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise MalformedBody(f"{what}: offset {value!r} is not a non-negative integer")


def parse_consumer_offsets(body: bytes) -> dict[tuple[str, str], dict[int, int]]:
    """GET_ALL_CONSUMER_OFFSET: ``{"offsetTable": {"topic@group": {"0": 15}}}``."""
    what = "consumer offsets"
    table = _json_object(body, what).get("offsetTable", {})
    if not isinstance(table, dict):
        raise MalformedBody(f"{what}: offsetTable must be an object")
    out: dict[tuple[str, str], dict[int, int]] = {}
    for key, queues in table.items():
        topic, sep, group = key.rpartition("@")
        if not sep or not topic or not group or not isinstance(queues, dict):
            raise MalformedBody(f"{what}: bad entry {key!r}")
        out[(topic, group)] = {_int_key(q, what): _offset(o, what) for q, o in queues.items()}
    return out


def parse_delay_offsets(body: bytes) -> dict[int, int]:
    """GET_ALL_DELAY_OFFSET: ``{"offsetTable": {"1": 5}}`` (delay level → queue offset)."""
    what = "delay offsets"
    table = _json_object(body, what).get("offsetTable", {})
    if not isinstance(table, dict):
        raise MalformedBody(f"{what}: offsetTable must be an object")
    return {_int_key(level, what): _offset(off, what) for level, off in table.items()}


def parse_timer_checkpoint(body: bytes) -> TimerCheckpoint:
    """GET_TIMER_CHECK_POINT: ``{"scanFrom": 0, "enqueued": 5, "deliveredThroughMs": 1}``."""
    try:
        return TimerCheckpoint.from_json(_json_object(body, "timer checkpoint"))
    except ValueError as exc:
        raise MalformedBody(str(exc)) from None


class BrokerForSlaveSync(BrokerIdentity, Protocol):
    """What ``SlaveSynchronizer`` uses of its broker (``Broker`` satisfies it structurally);
    it replaces the topic and group tables whole, so those two are writable."""

    topics: TopicConfigManager
    groups: SubscriptionGroupManager

    @property
    def client(self) -> RemotingClient: ...
    @property
    def store(self) -> MessageStore: ...
    @property
    def metadata(self) -> MetadataFiles: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def schedule(self) -> ScheduleService: ...
    @property
    def timers(self) -> TimerService: ...


#: Rounds that ``soon`` asks for start at least this long after the one before.
SOON_GAP_S = 1.0


class SlaveSynchronizer:
    """Copies topics, groups, consumer and delay offsets from the master to this slave."""

    def __init__(self, broker: BrokerForSlaveSync) -> None:
        self.broker = broker
        #: Completed rounds, and the last failure ("" after a good round).
        self.rounds = 0
        self.last_error = ""
        #: (topic, queue id) → the store's queue end the topic table covers (module rules).
        self.covered: dict[tuple[str, int], int] = {}
        self._soon = trio.Event()

    def soon(self) -> None:
        """Start the next round now, or ``SOON_GAP_S`` after the last one began."""
        self._soon.set()

    def cover_stored(self) -> None:
        """The topic table covers everything stored now."""
        self.covered = self.broker.store.queue_ends()

    def highest_uncovered_queues(self) -> dict[str, int]:
        """Topic → the highest queue id holding records past ``covered``."""
        covered = self.covered
        highest: dict[str, int] = {}
        for (topic, queue_id), end in self.broker.store.queue_ends().items():
            if end > covered.get((topic, queue_id), 0) and queue_id > highest.get(topic, -1):
                highest[topic] = queue_id
        return highest

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sync every ``slave_sync_interval_s`` until cancelled."""
        task_status.started()
        while True:
            self._soon = trio.Event()  # a record stored during the round asks again
            await self.sync_once()
            with trio.move_on_after(self.broker.config.slave_sync_interval_s):
                await trio.sleep(SOON_GAP_S)
                await self._soon.wait()

    async def sync_once(self) -> bool:
        """One round against the current master; False when it could not be done."""
        broker = self.broker
        master = broker.role.master_addr
        if master is None:
            return False
        ends = broker.store.queue_ends()  # the master has every record below these
        try:
            topics = await self._fetch(master, RequestCode.GET_ALL_TOPIC_CONFIG)
            groups = await self._fetch(master, RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
            offsets = await self._fetch(master, RequestCode.GET_ALL_CONSUMER_OFFSET)
            delays = await self._fetch(master, RequestCode.GET_ALL_DELAY_OFFSET)
            timers = await self._fetch(master, RequestCode.GET_TIMER_CHECK_POINT)
            self._install_topics(TopicConfigSerializeWrapper.from_bytes(topics))
            self._install_groups(SubscriptionGroupWrapper.from_bytes(groups))
            self._install_offsets(parse_consumer_offsets(offsets))
            broker.schedule.install_offsets(parse_delay_offsets(delays))
            broker.timers.install_checkpoint(parse_timer_checkpoint(timers))
            broker.metadata.offsets_changed()
        except RocketError as exc:
            if not self.last_error:
                log.warning("%s: metadata sync from master %s failed: %s", broker.name, master, exc)
            self.last_error = str(exc) or type(exc).__name__
            return False
        if self.last_error or not self.rounds:
            log.info("%s: metadata synced from master %s", broker.name, master)
        self.last_error = ""
        self.rounds += 1
        self.covered = ends
        return True

    async def _fetch(self, master: str, code: int) -> bytes:
        broker = self.broker
        client = broker.client
        request = RemotingCommand.request(code)
        timeout_s = broker.config.request_timeout_s
        with trio.move_on_after(timeout_s + 1.0):
            return check_success(await client.call(master, request, timeout_s=timeout_s)).body
        raise RocketError(f"{RequestCode(code).name} to {master} not answered in time")

    def _install_topics(self, wrapper: TopicConfigSerializeWrapper) -> None:
        broker = self.broker
        if wrapper.data_version == broker.topics.data_version:
            return
        old = broker.topics
        new = TopicConfigManager(
            cluster_name=old.cluster_name,
            broker_name=old.broker_name,
            auto_create_topic_enable=old.auto_create_topic_enable,
            default_topic_queue_nums=old.default_topic_queue_nums,
            max_queue_nums=old.max_queue_nums,
        )
        new.restore(
            {
                "topics": [c.to_json() for c in wrapper.topic_config_table.values()],
                "dataVersion": wrapper.data_version.to_json(),
            }
        )
        broker.topics = new
        broker.metadata.topics.changed()
        log.info(
            "%s: %d topic configs copied from the master (version %d)",
            broker.name,
            len(wrapper.topic_config_table),
            wrapper.data_version.counter,
        )

    def _install_groups(self, wrapper: SubscriptionGroupWrapper) -> None:
        broker = self.broker
        if wrapper.data_version == broker.groups.data_version:
            return
        new = SubscriptionGroupManager(max_queue_nums=broker.groups.max_queue_nums)
        new.restore(
            {
                "groups": [c.to_json() for c in wrapper.subscription_group_table.values()],
                "dataVersion": wrapper.data_version.to_json(),
            }
        )
        broker.groups = new
        broker.metadata.groups.changed()

    def _install_offsets(self, table: dict[tuple[str, str], dict[int, int]]) -> None:
        offsets = self.broker.offsets
        for (topic, group), queues in table.items():
            mine = offsets.offsets(topic, group)
            changed = {q: o for q, o in queues.items() if mine.get(q) != o}
            if changed:
                offsets.reset_to(topic, group, changed)
