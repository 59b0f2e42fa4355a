"""Consumers: push (``open_push_consumer``), lite pull (``open_lite_pull_consumer``) and
explicit pull (``open_pull_consumer``).

Guarantees (stated here so users can rely on them):
- **At least once.** A message is handed to the listener (or returned by ``poll``) at
  least once while its group consumes the topic. Duplicates are possible: after a crash,
  after a queue moves to another consumer while its messages are in flight, after a
  send-back whose answer was lost. De-duplicate by ``ReceivedMessage.msg_id`` when needed.
- **Position kept through failover.** While a broker group's master is down, its queues
  stay owned and are pulled from a slave (the route still lists it; a pull that fails at
  the master is tried at a slave next), and offsets are read from and committed to that
  slave. A queue is never started at a guessed offset: when no broker of the group
  answers, or only a slave that has no offset for the group, the queue starts later
  (the next rebalance round) instead of at 0 or at the end. An offset read from a slave
  that lags, or from a restarted master that lost recent commits, never puts a queue
  below the position this consumer itself had for it; a slave behind our position is
  waited for, not followed backwards. Once the master is back, pulls return to it (the
  slave says so) and commits reach it (a commit only a slave took is sent again).
- **Duplicates are bounded** by what was in flight (pulled, not yet settled) plus what
  was settled since the last commit (``persist_interval_s``; commits also ride on every
  pull to a master) on the queues that move: at a crash, at a queue moving between
  consumers, and while consumers disagree on a topic's queues. That disagreement is kept
  short: a route refresh that finds a subscribed topic's queues or brokers changed starts
  a rebalance at once (not only NOTIFY_CONSUMER_IDS_CHANGED or the 20 s timer), a lost
  connection to a broker of the route triggers a refresh within a second, and a degraded
  route (a group or a master missing) is polled every second until it heals. A change the
  NameServer alone sees (a broker's link to it cut) waits for ``route_refresh_interval_s``.
- **Offsets never run ahead of the listener.** A queue's committable offset is the lowest
  offset handed to the listener that has not finished (or, with nothing in flight, the
  next offset to pull). Only that offset is committed: every message before it returned
  SUCCESS, went to the retry topic, or (after ``max_reconsume_times``) to the DLQ (in
  broadcasting: or failed and was skipped).
  Offsets are committed every ``persist_interval_s``, when a queue is dropped by a
  rebalance, and on shutdown. A queue's start offset (see ``consume_from``) is committed
  like any other, so a group restarts where it began even if nothing arrived meanwhile.
- **Retries (clustering).** A listener that returns ``ConsumeResult.RETRY``, raises, or
  returns anything but ``ConsumeResult.SUCCESS`` has its messages sent back to the broker
  (CONSUMER_SEND_MSG_BACK): they return through ``%RETRY%<group>`` after the broker's delay,
  with ``reconsume_times`` one higher, and are delivered with their original topic
  (``ReceivedMessage.queue`` still names the retry queue). A message that already had
  ``max_reconsume_times`` retries is sent to ``%DLQ%<group>`` instead. If the send-back
  itself fails (broker unreachable) the message is consumed again locally after
  ``retry_backoff_s`` and its offset stays uncommitted until it is settled.
- **Broadcasting.** Every consumer gets every queue; offsets live in a local JSON file
  (``<offset_store_dir>/<client_id>/<group>/offsets.json``, default dir ``~/.rmq_offsets``);
  failed messages are not retried (logged and skipped), as in RocketMQ. Give a fixed
  ``instance`` so a restarted process has the same client id and resumes from its file.
- **Orderly** (``orderly=True``): one listener call at a time per queue, in queue order.
  In clustering the queue is locked on its broker (LOCK_BATCH_MQ, renewed every
  ``lock_interval_s``) before anything of it is consumed. A failed message is redelivered
  locally after ``orderly_suspend_s`` (``reconsume_times`` + 1) and nothing after it runs
  until it succeeds; after ``max_reconsume_times`` it goes to the DLQ.
- **A bad record never stops a queue.** A record that cannot be decoded (bad CRC,
  properties or sizes, a body that is not zlib, or inflates past ``max_message_bytes``,
  RocketMQ's maxMessageSize, 4 MiB by default) is skipped with a log line and counted
  (``ConsumerStatistics.skipped_records``); the other messages of the same pull are
  delivered. In clustering it is sent to ``%DLQ%<group>`` (CONSUMER_SEND_MSG_BACK: a
  retry could never decode it either); when it cannot be (its CommitLog offset is
  unreadable, or the broker refuses), or in broadcasting, its offset is committed past
  with a logged reason. Inflating never holds more than ``max_message_bytes``.
- **Flow control.** A queue never has more than ``max_inflight_per_queue`` messages pulled
  and not finished; its puller waits for the listener.
- **Shutdown** (leaving the ``async with``): pulling stops, listener calls in progress get
  up to ``shutdown_timeout_s`` to finish, offsets are committed, the client unregisters.
  Messages pulled but not yet started are not delivered; they are redelivered later.
- Every network call has a deadline; every network or server error raised is a
  ``RocketError`` (bad arguments raise ``ValueError``). Background failures (a pull, a
  commit, a heartbeat) are logged and retried, never raised into your code.

``consume_from`` (LAST, FIRST, TIMESTAMP) applies to queues the group has no offset for.
Unlike RocketMQ's default, the broker is asked not to answer "0" on its own for young
queues (``setZeroIfNotFound=false``), so a new group with LAST really starts at the end.

Where things live (every public name is importable from ``client.consumer`` itself):
``types`` (enums, ``PullResult``, statistics, ``ConsumerConfig``), ``core`` (the pure
rebalance/offset core), ``api`` (``BrokerApi``, the broker requests), ``rebalancing``
(what push and lite pull share), ``push``, ``lite_pull``, ``pull`` (the three consumer
kinds) and ``lifecycle`` (the ``open_*`` context managers).
"""

from __future__ import annotations

from client.consumer.api import BrokerApi
from client.consumer.core import (
    InflightOffsets,
    RouteHealth,
    accepts,
    allocate_averagely,
    check_pull_offsets,
    decode_pull_body,
    failover_broker_id,
    parse_pull_response,
    pull_replica,
    pull_target,
)
from client.consumer.lifecycle import (
    make_consumer_client_id,
    open_lite_pull_consumer,
    open_pull_consumer,
    open_push_consumer,
)
from client.consumer.lite_pull import LitePullConsumer
from client.consumer.pull import PullConsumer
from client.consumer.push import PushConsumer
from client.consumer.types import (
    ConsumeFrom,
    ConsumerConfig,
    ConsumeResult,
    ConsumerStatistics,
    Listener,
    MessageModel,
    MessageSelector,
    PullResult,
    PullStatus,
    QueueStatistics,
    SkippedRecord,
)
from protocol.group_topics import dlq_topic, retry_topic

__all__ = [
    "BrokerApi",
    "ConsumeFrom",
    "ConsumeResult",
    "ConsumerConfig",
    "ConsumerStatistics",
    "InflightOffsets",
    "Listener",
    "LitePullConsumer",
    "MessageModel",
    "MessageSelector",
    "PullConsumer",
    "PullResult",
    "PullStatus",
    "PushConsumer",
    "QueueStatistics",
    "RouteHealth",
    "SkippedRecord",
    "accepts",
    "allocate_averagely",
    "check_pull_offsets",
    "decode_pull_body",
    "dlq_topic",
    "failover_broker_id",
    "make_consumer_client_id",
    "open_lite_pull_consumer",
    "open_pull_consumer",
    "open_push_consumer",
    "parse_pull_response",
    "pull_replica",
    "pull_target",
    "retry_topic",
]
