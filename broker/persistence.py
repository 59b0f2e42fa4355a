"""The broker's metadata files: topics, subscription groups, consumer and delay offsets.

Rules (issue 13 row 7: 6,000 pipelined topic creates each rewrote and fsynced the whole
topic file on the event loop; another client's send waited 41.9 s):
- Each file has one ``DocumentWriter`` (``broker/store/metadata.py``): the payload is
  built, encoded, written and fsynced in a worker thread, and changes are coalesced.
- A topic or group change made by an admin request (UPDATE_AND_CREATE_TOPIC,
  DELETE_TOPIC_IN_BROKER, UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, DELETE_SUBSCRIPTIONGROUP) is
  on disk before it is answered, as in RocketMQ; concurrent requests share one write.
- Changes nobody waits for are written within an interval: auto-created topics and
  groups, retry and DLQ topics and a slave's copies within ``flushMetadataInterval``
  (1 s); consumer and delay offsets within ``flushConsumerOffsetInterval`` (5 s).
- What a crash (kill -9, power loss) can lose: those interval-written changes of the last
  interval. Auto-created topics and groups come back with the next send or heartbeat that
  needs them; lost offset commits make consumers receive those messages again (at least
  once), as a lost RocketMQ offset flush does. Nothing answered to an admin request is
  lost. A clean stop writes everything pending first.
- The managers are read through the broker at each write, so a slave that replaces its
  topic or group table (``broker/slavesync.py``) needs no new writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import trio

from broker import groups as groups_module
from broker import offsets as offsets_module
from broker import schedule as schedule_module
from broker import topics as topics_module
from broker.config import BrokerConfig
from broker.groups import SubscriptionGroupManager
from broker.offsets import ConsumerOffsetManager
from broker.schedule import ScheduleService
from broker.store.metadata import DocumentWriter, Snapshot
from broker.topics import TopicConfigManager
from protocol.errors import StorageError, SystemError_


class BrokerForMetadata(Protocol):
    """What ``MetadataFiles`` reads of its broker (``Broker`` satisfies it structurally)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> BrokerConfig: ...
    @property
    def topics(self) -> TopicConfigManager: ...
    @property
    def groups(self) -> SubscriptionGroupManager: ...
    @property
    def offsets(self) -> ConsumerOffsetManager: ...
    @property
    def schedule(self) -> ScheduleService: ...


class MetadataFiles:
    """One background writer per metadata file of a broker."""

    def __init__(self, broker: BrokerForMetadata, config_dir: Path) -> None:
        self.broker = broker
        config = broker.config
        metadata_s = config.flush_metadata_interval_s
        offsets_s = config.flush_consumer_offset_interval_s
        self.topics_path = config_dir / "topics.cbor"
        self.groups_path = config_dir / "subscriptionGroup.cbor"
        self.offsets_path = config_dir / "consumerOffset.cbor"
        # Each snapshot reads the manager through the broker at write time: a slave
        # replaces its topic and group tables whole.
        self.topics = self._writer(
            self.topics_path,
            topics_module.FILE_KIND,
            topics_module.FILE_VERSION,
            self._topics_snapshot,
            metadata_s,
        )
        self.groups = self._writer(
            self.groups_path,
            groups_module.FILE_KIND,
            groups_module.FILE_VERSION,
            self._groups_snapshot,
            metadata_s,
        )
        self.offsets = self._writer(
            self.offsets_path,
            offsets_module.FILE_KIND,
            offsets_module.FILE_VERSION,
            self._offsets_snapshot,
            offsets_s,
        )
        self.delay_offsets = self._writer(
            broker.schedule.path,
            schedule_module.FILE_KIND,
            schedule_module.FILE_VERSION,
            self._delay_offsets_snapshot,
            offsets_s,
        )
        self.all = (self.topics, self.groups, self.offsets, self.delay_offsets)

    def _writer(
        self, path: Path, kind: str, version: int, snapshot: Snapshot, interval_s: float
    ) -> DocumentWriter:
        return DocumentWriter(
            path,
            kind=kind,
            version=version,
            snapshot=snapshot,
            interval_s=interval_s,
            node=self._node,
        )

    def _node(self) -> str:
        return self.broker.name

    def _topics_snapshot(self) -> Callable[[], Any]:
        return self.broker.topics.payload_snapshot()

    def _groups_snapshot(self) -> Callable[[], Any]:
        return self.broker.groups.payload_snapshot()

    def _offsets_snapshot(self) -> Callable[[], Any]:
        return self.broker.offsets.payload_snapshot()

    def _delay_offsets_snapshot(self) -> Callable[[], Any]:
        return self.broker.schedule.payload_snapshot()

    def offsets_changed(self) -> None:
        """Note consumer and delay offset changes since the last call (cheap: flags)."""
        if self.broker.offsets.dirty:
            self.broker.offsets.dirty = False
            self.offsets.changed()
        if self.broker.schedule.take_dirty():
            self.delay_offsets.changed()

    async def persisted(self, writer: DocumentWriter) -> None:
        """Wait until ``writer``'s file holds every change made so far (an admin answer);
        a write that fails or hangs is SYSTEM_ERROR (the change stays, and is retried)."""
        try:
            await writer.persisted(self.broker.config.request_timeout_s)
        except StorageError as exc:
            raise SystemError_(f"changed, but not yet persisted: {exc}") from None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every writer, and note offset changes each ``flushConsumerOffsetInterval``."""
        async with trio.open_nursery() as nursery:
            for writer in self.all:
                await nursery.start(writer.run)
            task_status.started()
            while True:
                await trio.sleep(self.broker.config.flush_consumer_offset_interval_s)
                self.offsets_changed()

    async def close(self) -> None:
        """Write everything pending (clean shutdown)."""
        self.offsets_changed()
        for writer in self.all:
            await writer.close()
