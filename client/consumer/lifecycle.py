"""The ``open_*`` context managers: build a consumer, start it, shut it down on exit.

Rules:
- Leaving the block shuts the consumer down gracefully and shielded from cancellation
  (bounded by the config's timeouts): stop pulling, let listeners finish, commit,
  unregister.
- NOTIFY_CONSUMER_IDS_CHANGED from a broker triggers a rebalance at once.
- Client ids are ``ip@instance`` for a named instance, else ``ip@pid#n``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import trio

from client.consumer.lite_pull import LitePullConsumer
from client.consumer.pull import PullConsumer
from client.consumer.push import PushConsumer
from client.consumer.rebalancing import _RebalancingConsumer
from client.consumer.types import (
    ConsumeFrom,
    ConsumerConfig,
    Listener,
    MessageModel,
    MessageSelector,
)
from client.message import MAX_MESSAGE_BYTES
from client.producer import local_ip
from client.routes import RouteCache
from protocol.acl_client import open_client
from protocol.acl_sign import Credentials
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.rpc import Connection, Handler, RemotingClient, background_nursery

log = logging.getLogger(__name__)


@functools.cache
def _host_ip() -> str:
    return local_ip()


_instances = itertools.count(1)


def make_consumer_client_id(instance: str | None) -> str:
    """``ip@instance`` for a named instance, else ``ip@pid#n`` (unique in this process)."""
    if instance:
        return f"{_host_ip()}@{instance}"
    return f"{_host_ip()}@{os.getpid()}#{next(_instances)}"


def _namesrv_list(namesrv: str | Sequence[str]) -> list[str]:
    addrs = [namesrv] if isinstance(namesrv, str) else list(namesrv)
    out = [a.strip() for part in addrs for a in part.replace(",", ";").split(";") if a.strip()]
    if not out:
        raise ValueError("at least one NameServer address is needed")
    return out


class _NotifySignal:
    """NOTIFY_CONSUMER_IDS_CHANGED → rebalance now (the consumer is set once it exists)."""

    def __init__(self) -> None:
        self.consumer: _RebalancingConsumer | None = None

    async def handle(self, request: RemotingCommand, conn: Connection) -> RemotingCommand | None:
        if self.consumer is not None:
            log.debug("%s: consumer ids changed (from %s)", self.consumer.group, conn.peer)
            self.consumer.request_rebalance()
        return None


@asynccontextmanager
async def _running(
    namesrv: str | Sequence[str],
    config: ConsumerConfig,
    subscriptions: Mapping[str, str | MessageSelector] | None,
    build: Callable[[RemotingClient, RouteCache, str, trio.Nursery], _RebalancingConsumer],
) -> AsyncIterator[_RebalancingConsumer]:
    addrs = _namesrv_list(namesrv)
    client_id = make_consumer_client_id(config.instance)
    signal = _NotifySignal()
    handlers: dict[int, Handler] = {RequestCode.NOTIFY_CONSUMER_IDS_CHANGED: signal.handle}
    async with open_client(
        name=f"consumer {config.group}",
        handlers=handlers,
        default_timeout_s=config.timeout_s,
        tls=config.tls,
        credentials=config.credentials,
    ) as client:
        routes = RouteCache(
            client,
            addrs,
            request_timeout_s=config.timeout_s,
            refresh_interval_s=config.route_refresh_interval_s,
        )
        async with background_nursery() as nursery:
            consumer = build(client, routes, client_id, nursery)
            signal.consumer = consumer
            for topic, expression in (subscriptions or {}).items():
                consumer.subscribe(topic, expression)
            await consumer.start()
            clean = False
            try:
                yield consumer
                clean = True
            finally:
                with trio.CancelScope(shield=True):
                    await consumer.shutdown(finish_polled=clean)


def _config(group: str, kwargs: Mapping[str, object]) -> ConsumerConfig:
    try:
        return ConsumerConfig(group=group, **kwargs)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"bad consumer option: {exc}") from None


@asynccontextmanager
async def open_push_consumer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str,
    listener: Listener,
    subscriptions: Mapping[str, str | MessageSelector] | None = None,
    message_model: MessageModel = MessageModel.CLUSTERING,
    consume_from: ConsumeFrom = ConsumeFrom.LAST,
    consume_timestamp_ms: int | None = None,
    orderly: bool = False,
    max_inflight_per_queue: int = 1000,
    consume_batch_size: int = 1,
    consume_concurrency: int = 20,
    max_reconsume_times: int = 16,
    pull_batch_size: int = 32,
    rebalance_interval_s: float = 20.0,
    heartbeat_interval_s: float = 30.0,
    persist_interval_s: float = 5.0,
    suspend_timeout_s: float = 15.0,
    **options: object,
) -> AsyncIterator[PushConsumer]:
    """A started push consumer; it shuts down gracefully when the block exits.

    ``options`` are further ``ConsumerConfig`` fields (``timeout_s``, ``shutdown_timeout_s``,
    ``offset_store_dir``, ``instance``, ...). ``subscribe()`` adds topics at any time.
    """
    config = _config(
        group,
        {
            "message_model": message_model,
            "consume_from": consume_from,
            "consume_timestamp_ms": consume_timestamp_ms,
            "orderly": orderly,
            "max_inflight_per_queue": max_inflight_per_queue,
            "consume_batch_size": consume_batch_size,
            "consume_concurrency": consume_concurrency,
            "max_reconsume_times": max_reconsume_times,
            "pull_batch_size": pull_batch_size,
            "rebalance_interval_s": rebalance_interval_s,
            "heartbeat_interval_s": heartbeat_interval_s,
            "persist_interval_s": persist_interval_s,
            "suspend_timeout_s": suspend_timeout_s,
            **options,
        },
    )

    def build(
        client: RemotingClient, routes: RouteCache, client_id: str, nursery: trio.Nursery
    ) -> PushConsumer:
        return PushConsumer(client, routes, config, listener, client_id=client_id, nursery=nursery)

    async with _running(namesrv, config, subscriptions, build) as consumer:
        assert isinstance(consumer, PushConsumer)
        yield consumer


@asynccontextmanager
async def open_lite_pull_consumer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str,
    subscriptions: Mapping[str, str | MessageSelector] | None = None,
    message_model: MessageModel = MessageModel.CLUSTERING,
    consume_from: ConsumeFrom = ConsumeFrom.LAST,
    poll_batch_size: int = 10,
    max_inflight_per_queue: int = 1000,
    persist_interval_s: float = 5.0,
    **options: object,
) -> AsyncIterator[LitePullConsumer]:
    """A started lite pull consumer: ``subscribe`` then ``await poll()``.

    ``max_inflight_per_queue`` bounds the messages buffered or polled-and-unfinished per
    queue. ``options`` are further ``ConsumerConfig`` fields.
    """
    config = _config(
        group,
        {
            "message_model": message_model,
            "consume_from": consume_from,
            "max_inflight_per_queue": max_inflight_per_queue,
            "persist_interval_s": persist_interval_s,
            **options,
        },
    )

    def build(
        client: RemotingClient, routes: RouteCache, client_id: str, nursery: trio.Nursery
    ) -> LitePullConsumer:
        return LitePullConsumer(
            client,
            routes,
            config,
            client_id=client_id,
            nursery=nursery,
            poll_batch_size=poll_batch_size,
        )

    async with _running(namesrv, config, subscriptions, build) as consumer:
        assert isinstance(consumer, LitePullConsumer)
        yield consumer


@asynccontextmanager
async def open_pull_consumer(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    group: str,
    timeout_s: float = 3.0,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    tls: ssl.SSLContext | None = None,
    credentials: Credentials | None = None,
) -> AsyncIterator[PullConsumer]:
    """An explicit pull consumer (no rebalance, no background tasks but routes).

    A compressed body inflating past ``max_message_bytes`` is skipped, unread. ``tls``: a
    context to connect with (None: as ``$RMQ_TLS*`` say).
    """
    addrs = _namesrv_list(namesrv)
    async with open_client(
        name=f"pull consumer {group}",
        default_timeout_s=timeout_s,
        tls=tls,
        credentials=credentials,
    ) as client:
        routes = RouteCache(client, addrs, request_timeout_s=timeout_s)
        yield PullConsumer(
            client, routes, group=group, timeout_s=timeout_s, max_message_bytes=max_message_bytes
        )
