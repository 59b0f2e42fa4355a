"""Admin operations against NameServers and brokers (the SDK side of ``rmq admin``).

Use: ``async with open_admin("127.0.0.1:9876") as admin: await admin.topic_status("T")``.

Rules:
- Every request runs under the admin's ``timeout_s``; a NameServer list
  (``"a:9876;b:9876"``) is tried in order until one answers, as RocketMQ's clients do.
  Requests to several brokers run concurrently, each under its own deadline.
- Every error raised is a ``RocketError`` whose message names what failed and what to do.
  Server answers keep their ``ServerError`` class (TOPIC_NOT_EXIST stays ``TopicNotExist``)
  with the broker and a hint added to the remark; usage problems are ``AdminError``.
- Broker choice follows mqadmin: changes (topics, groups, offsets) go to the masters of a
  cluster or to one broker address; reads go to each broker group's master, or to a slave
  while the group has none.
- ``reset_offset_by_time`` writes committed offsets on the brokers. Our broker does not
  push RESET_CONSUMER_CLIENT_OFFSET to live consumers yet, so a running consumer would
  overwrite the reset with its in-memory offsets: stop the group's consumers first (the
  call refuses while any is online, unless ``force=True``).
- The module functions ``parse_namesrv_list``, ``call_any``, ``get_cluster_info`` and
  ``get_topic_route`` are building blocks for callers that hold their own client.
- Where things live: ``Admin`` (here) does brokers, topics, subscription groups and
  consumers. It inherits queue offsets and messages from ``MessageAdmin``
  (``client/admin_messages.py``), the controller commands from ``ControllerAdmin``
  (``client/controller_admin.py``), and the transport and NameServer views from
  ``AdminSession`` (``client/admin_session.py``); what the calls return is in
  ``client/admin_values.py``. Every public name of those modules is importable from here.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from client.admin_messages import (
    DEFAULT_CONSUME_COUNT,
    DEFAULT_QUERY_MAX_NUM,
    MAX_TIMESTAMP_MS,
    PULL_BATCH,
    TOOLS_CONSUMER_GROUP,
    TOOLS_PRODUCER_GROUP,
    UNIQ_KEY_QUERY_MAX_NUM,
    MessageAdmin,
    MessageNotFound,
)
from client.admin_session import (
    AdminError,
    _check_address,
    _group_hint,
    call_any,
    get_cluster_info,
    get_topic_route,
    parse_namesrv_list,
    read_address,
)
from client.admin_stats import StatsAdmin
from client.admin_values import (
    BrokerRuntime,
    ConsumerProgress,
    HAConnection,
    HAStatus,
    OffsetReset,
    PullPage,
    QueueProgress,
    TopicDeleted,
    TopicOffset,
    _int_of,
    _json_body,
    _offset_entries,
    _runtime_table,
)
from client.consumer.core import allocate_averagely as queues_of_client
from client.controller_admin import (
    BrokerEpochs,
    ControllerAdmin,
    ControllerMetadata,
    ElectMasterResult,
    controller_call,
    find_controller_leader,
    get_controller_metadata,
    parse_controller_list,
)
from protocol.acl_client import open_client
from protocol.acl_sign import Credentials
from protocol.bodies import (
    BROADCASTING,
    ConsumerConnection,
    SubscriptionGroupConfig,
    SubscriptionGroupWrapper,
)
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RocketError, SubscriptionGroupNotExist
from protocol.headers import (
    CreateTopicRequestHeader,
    DeleteSubscriptionGroupRequestHeader,
    DeleteTopicFromNamesrvRequestHeader,
    DeleteTopicRequestHeader,
    GetConsumeStatsRequestHeader,
    GetTopicStatsInfoRequestHeader,
    OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader,
)
from protocol.route import MessageQueue, master_address, subscribe_queues

#: mqadmin's defaults for updateTopic (-r/-w 8, -p 6).
DEFAULT_QUEUE_NUMS = 8
DEFAULT_PERM = PERM_READ | PERM_WRITE
#: The template topic updateTopic names as ``defaultTopic``.
TEMPLATE_TOPIC = "TBW102"
#: How long ``create_topic`` waits, at least, for the NameServer to route a new topic.
_ROUTE_WAIT_S = 10.0
_ROUTE_POLL_S = 0.05

_TOPIC_NAME = re.compile(r"[%|a-zA-Z0-9_-]{1,127}")


# --- pure helpers ----------------------------------------------------------------------------


def allocate_averagely(
    queues: Sequence[MessageQueue], client_ids: Sequence[str]
) -> dict[MessageQueue, str]:
    """Which client owns each queue under AllocateMessageQueueAveragely (the clustering
    consumers' default): queues and client ids sorted, contiguous blocks, the first
    ``len(queues) % len(clients)`` clients taking one queue more. The consumers' own
    allocation decides, so the admin shows what they do."""
    cids = sorted(set(client_ids))
    return {q: cid for cid in cids for q in queues_of_client(queues, cids, cid)}


def _check_topic_name(topic: str) -> None:
    if not _TOPIC_NAME.fullmatch(topic):
        raise AdminError(
            f"topic name {topic!r} is not valid: use 1 to 127 letters, digits, '%', '|', '_' or '-'"
        )


# --- the admin -------------------------------------------------------------------------------


class Admin(ControllerAdmin, MessageAdmin, StatsAdmin):
    """Administration of one RocketMQ deployment; build it with ``open_admin``."""

    # --- brokers ---------------------------------------------------------------------

    async def broker_status(self, addr: str) -> dict[str, str]:
        """The broker's runtime info table (mqadmin brokerStatus)."""
        _check_address(addr, "broker address")
        request = RemotingCommand.request(RequestCode.GET_BROKER_RUNTIME_INFO)
        return _runtime_table((await self._broker_call(addr, request)).body)

    async def cluster_list(self, cluster: str | None = None) -> list[BrokerRuntime]:
        """Every broker (of ``cluster``) with its runtime info; unreachable ones say why."""
        members = [
            (data, broker_id, addr)
            for data in await self._cluster_groups(cluster)
            for broker_id, addr in sorted(data.broker_addrs.items())
        ]
        tables = await self._gather([addr for _, _, addr in members], self.broker_status)
        return [
            BrokerRuntime(
                cluster=data.cluster,
                broker_name=data.broker_name,
                broker_id=broker_id,
                addr=addr,
                table=None if isinstance(table, RocketError) else table,
                error=str(table) if isinstance(table, RocketError) else None,
            )
            for (data, broker_id, addr), table in zip(members, tables, strict=True)
        ]

    async def ha_status(self, addr: str) -> HAStatus:
        """GET_BROKER_HA_STATUS of one broker (mqadmin haStatus -b)."""
        _check_address(addr, "broker address")
        request = RemotingCommand.request(RequestCode.GET_BROKER_HA_STATUS)
        return HAStatus.from_body(addr, (await self._broker_call(addr, request)).body)

    async def cluster_ha_status(self, cluster: str) -> list[HAStatus | RocketError]:
        """The HA status of every master of ``cluster`` (mqadmin haStatus -c); a master that
        did not answer has its error in its place."""
        addrs = await self._masters(cluster)
        return await self._gather(addrs, self.ha_status)

    # --- topics ----------------------------------------------------------------------

    async def create_topic(
        self,
        topic: str,
        *,
        cluster: str | None = None,
        broker_addr: str | None = None,
        read_queue_nums: int = DEFAULT_QUEUE_NUMS,
        write_queue_nums: int = DEFAULT_QUEUE_NUMS,
        perm: int = DEFAULT_PERM,
        order: bool = False,
        attributes: str | None = None,
    ) -> list[str]:
        """Create or update ``topic`` on every master of ``cluster`` or on ``broker_addr``;
        the addresses changed. The brokers announce it to the NameServers at once.
        ``attributes``: RocketMQ 5's ``+key=value,-key`` (``+message.type=FIFO``)."""
        _check_topic_name(topic)
        if read_queue_nums < 1 or write_queue_nums < 1:
            raise AdminError(
                f"queue numbers must be at least 1 (read {read_queue_nums}, "
                f"write {write_queue_nums})"
            )
        if perm & ~(PERM_READ | PERM_WRITE | 0x1) or not perm & (PERM_READ | PERM_WRITE):
            raise AdminError(f"perm {perm} is not valid: use 2 (W), 4 (R) or 6 (RW)")
        addrs = await self._targets(cluster, broker_addr)
        header = CreateTopicRequestHeader(
            topic=topic,
            default_topic=TEMPLATE_TOPIC,
            read_queue_nums=read_queue_nums,
            write_queue_nums=write_queue_nums,
            perm=perm,
            topic_filter_type="SINGLE_TAG",
            topic_sys_flag=0,
            order=order,
            attributes=attributes,
        )
        request = RemotingCommand.request(
            RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext_fields()
        )
        results = await self._gather(addrs, lambda a: self._broker_call(a, request))
        self._all_ok(addrs, results, f"topic {topic} created")
        await self._wait_routed(topic, addrs, read_queue_nums, write_queue_nums)
        return addrs

    async def _wait_routed(
        self, topic: str, addrs: Sequence[str], read_queue_nums: int, write_queue_nums: int
    ) -> None:
        """Return once the NameServer routes ``topic`` to every broker in ``addrs`` with
        these queue numbers, so a send right after ``create_topic`` finds its route (the
        brokers register the change on their own, shortly after answering)."""
        wanted = set(addrs)
        with trio.move_on_after(max(self.timeout_s, _ROUTE_WAIT_S)):
            while True:
                with contextlib.suppress(RocketError):
                    route = await self.topic_route(topic)
                    nums = {
                        q.broker_name: (q.read_queue_nums, q.write_queue_nums)
                        for q in route.queue_datas
                    }
                    routed = {
                        addr
                        for group in route.broker_datas
                        if nums.get(group.broker_name) == (read_queue_nums, write_queue_nums)
                        for addr in group.broker_addrs.values()
                    }
                    if wanted <= routed:
                        return
                await trio.sleep(_ROUTE_POLL_S)
        raise AdminError(
            f"topic {topic} was created on {', '.join(sorted(wanted))}, but no NameServer "
            f"routes it there yet after {max(self.timeout_s, _ROUTE_WAIT_S):g} s; check that "
            "the brokers reach the NameServers (rmq admin clusterList)"
        )

    async def delete_topic(self, topic: str, *, cluster: str | None = None) -> TopicDeleted:
        """Delete ``topic`` on every broker hosting it (of ``cluster``: every broker of that
        cluster), then on every NameServer."""
        if cluster is not None:
            groups = await self._cluster_groups(cluster)
        else:
            groups = (await self.topic_route(topic)).broker_datas
        addrs = sorted({a for g in groups for a in g.broker_addrs.values()})
        if not addrs:
            raise AdminError(f"no broker hosts topic {topic}; nothing to delete")
        request = RemotingCommand.request(
            RequestCode.DELETE_TOPIC_IN_BROKER,
            DeleteTopicRequestHeader(topic=topic).to_ext_fields(),
        )
        results = await self._gather(addrs, lambda a: self._broker_call(a, request))
        self._all_ok(addrs, results, f"topic {topic} deleted")
        ns_header = DeleteTopicFromNamesrvRequestHeader(topic=topic, cluster_name=cluster)
        ns_request = RemotingCommand.request(
            RequestCode.DELETE_TOPIC_IN_NAMESRV, ns_header.to_ext_fields()
        )
        ns_results = await self._gather(self.namesrv, lambda a: self._namesrv_call(ns_request, a))
        self._all_ok(self.namesrv, ns_results, f"topic {topic} deleted")
        return TopicDeleted(brokers=tuple(addrs), namesrvs=tuple(self.namesrv))

    async def topic_status(self, topic: str) -> list[TopicOffset]:
        """Every queue of ``topic``: min/max offset and last update, sorted by queue."""
        route = await self.topic_route(topic)
        addrs = [a for a in map(read_address, route.broker_datas) if a]
        request = RemotingCommand.request(
            RequestCode.GET_TOPIC_STATS_INFO,
            GetTopicStatsInfoRequestHeader(topic=topic).to_ext_fields(),
        )

        async def one(addr: str) -> list[TopicOffset]:
            body = (await self._broker_call(addr, request)).body
            return [
                TopicOffset(
                    queue=mq,
                    min_offset=_int_of(e, "minOffset", "topic stats"),
                    max_offset=_int_of(e, "maxOffset", "topic stats"),
                    last_update_ms=_int_of(e, "lastUpdateTimestamp", "topic stats"),
                )
                for mq, e in _offset_entries(body, "topic stats")
            ]

        pages = self._all_ok(addrs, await self._gather(addrs, one), "topic stats read")
        return sorted((o for page in pages for o in page), key=lambda o: o.queue)

    # --- subscription groups -----------------------------------------------------------

    async def subscription_groups(self, addr: str) -> dict[str, SubscriptionGroupConfig]:
        """Every subscription group config of one broker."""
        request = RemotingCommand.request(RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
        body = (await self._broker_call(addr, request)).body
        return dict(SubscriptionGroupWrapper.from_bytes(body).subscription_group_table)

    async def update_subscription_group(
        self,
        group: str,
        *,
        cluster: str | None = None,
        broker_addr: str | None = None,
        consume_enable: bool | None = None,
        consume_from_min_enable: bool | None = None,
        consume_broadcast_enable: bool | None = None,
        consume_message_orderly: bool | None = None,
        retry_queue_nums: int | None = None,
        retry_max_times: int | None = None,
        broker_id: int | None = None,
        which_broker_when_consume_slowly: int | None = None,
        notify_consumer_ids_changed_enable: bool | None = None,
    ) -> dict[str, SubscriptionGroupConfig]:
        """Create or update a group on every master of ``cluster`` or on ``broker_addr``.

        Settings left None keep the broker's current value (or RocketMQ's default for a new
        group), unlike mqadmin, which resets them. Returns the config written, by address.
        """
        if retry_queue_nums is not None and retry_queue_nums < 1:
            raise AdminError(f"retry queue nums must be at least 1, not {retry_queue_nums}")
        if retry_max_times is not None and retry_max_times < -1:
            raise AdminError(f"retry max times must be -1 or more, not {retry_max_times}")
        changes: dict[str, Any] = {
            k: v
            for k, v in {
                "consume_enable": consume_enable,
                "consume_from_min_enable": consume_from_min_enable,
                "consume_broadcast_enable": consume_broadcast_enable,
                "consume_message_orderly": consume_message_orderly,
                "retry_queue_nums": retry_queue_nums,
                "retry_max_times": retry_max_times,
                "broker_id": broker_id,
                "which_broker_when_consume_slowly": which_broker_when_consume_slowly,
                "notify_consumer_ids_changed_enable": notify_consumer_ids_changed_enable,
            }.items()
            if v is not None
        }
        addrs = await self._targets(cluster, broker_addr)

        async def one(addr: str) -> SubscriptionGroupConfig:
            current = (await self.subscription_groups(addr)).get(group)
            config = attrs.evolve(current or SubscriptionGroupConfig(group_name=group), **changes)
            request = RemotingCommand.request(
                RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=config.to_bytes()
            )
            await self._broker_call(addr, request)
            return config

        configs = self._all_ok(addrs, await self._gather(addrs, one), f"group {group} updated")
        return dict(zip(addrs, configs, strict=True))

    async def delete_subscription_group(
        self,
        group: str,
        *,
        cluster: str | None = None,
        broker_addr: str | None = None,
        clean_offset: bool = False,
    ) -> list[str]:
        """Delete a group (and, with ``clean_offset``, its offsets); the addresses changed."""
        addrs = await self._targets(cluster, broker_addr)
        header = DeleteSubscriptionGroupRequestHeader(group_name=group, clean_offset=clean_offset)
        request = RemotingCommand.request(
            RequestCode.DELETE_SUBSCRIPTIONGROUP, header.to_ext_fields()
        )
        results = await self._gather(addrs, lambda a: self._broker_call(a, request))
        self._all_ok(addrs, results, f"group {group} deleted")
        return addrs

    # --- consumers -------------------------------------------------------------------

    async def consumer_connection(self, group: str) -> ConsumerConnection | None:
        """The group's live consumers as every reachable broker knows them (merged);
        None when no broker has one online."""
        addrs = [a for a in map(read_address, await self._cluster_groups(None)) if a]
        request = RemotingCommand.request(
            RequestCode.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": group}
        )
        ok = (ResponseCode.SUCCESS, ResponseCode.CONSUMER_NOT_ONLINE)
        results = await self._gather(addrs, lambda a: self._broker_call(a, request, ok=ok))
        listings = [
            ConsumerConnection.from_bytes(r.body)
            for r in results
            if not isinstance(r, RocketError) and r.code == ResponseCode.SUCCESS
        ]
        if not listings:
            return None
        connections = {c.client_id: c for cc in listings for c in cc.connection_set}
        subscriptions = {t: s for cc in listings for t, s in cc.subscription_table.items()}
        return attrs.evolve(
            listings[0],
            connection_set=tuple(connections[c] for c in sorted(connections)),
            subscription_table=subscriptions,
        )

    async def consumer_progress(self, group: str, topic: str | None = None) -> ConsumerProgress:
        """Broker offset, consumer offset and lag of every queue the group consumes
        (of ``topic`` only, when given), with the owning client when it can be told."""
        if topic is not None:
            groups = (await self.topic_route(topic)).broker_datas
        else:
            groups = await self._cluster_groups(None)
        addrs = [a for a in map(read_address, groups) if a]
        header = GetConsumeStatsRequestHeader(consumer_group=group, topic=topic)
        request = RemotingCommand.request(RequestCode.GET_CONSUME_STATS, header.to_ext_fields())

        async def one(addr: str) -> tuple[float, list[QueueProgress]]:
            body = (await self._broker_call(addr, request)).body
            tps = _json_body(body, "consume stats").get("consumeTps") or 0.0
            queues = [
                QueueProgress(
                    queue=mq,
                    broker_offset=_int_of(e, "brokerOffset", "consume stats"),
                    consumer_offset=_int_of(e, "consumerOffset", "consume stats"),
                    last_timestamp_ms=_int_of(e, "lastTimestamp", "consume stats"),
                )
                for mq, e in _offset_entries(body, "consume stats")
            ]
            return float(tps), queues

        pages = self._all_ok(addrs, await self._gather(addrs, one), "consume stats read")
        queues = sorted((q for _, page in pages for q in page), key=lambda q: q.queue)
        if not queues:
            where = f" on topic {topic}" if topic else ""
            raise AdminError(
                f"consumer group {group} has no consume offsets{where}; check the group name "
                "(its consumers commit offsets every few seconds once they consume)"
            )
        owners = await self._owners(group, [q.queue for q in queues])
        return ConsumerProgress(
            group=group,
            queues=tuple(attrs.evolve(q, client_id=owners.get(q.queue)) for q in queues),
            consume_tps=sum(tps for tps, _ in pages),
        )

    async def _owners(self, group: str, queues: Sequence[MessageQueue]) -> dict[MessageQueue, str]:
        """Best effort: the average allocation over the group's live clustering consumers."""
        try:
            listing = await self.consumer_connection(group)
        except RocketError:
            return {}
        if listing is None or listing.message_model == BROADCASTING:
            return {}
        client_ids = [c.client_id for c in listing.connection_set]
        owners: dict[MessageQueue, str] = {}
        for topic in sorted({q.topic for q in queues}):
            if listing.subscription_table and topic not in listing.subscription_table:
                continue
            try:
                mqs = subscribe_queues(topic, await self.topic_route(topic))
            except RocketError:
                mqs = [q for q in queues if q.topic == topic]
            owners.update(allocate_averagely(mqs, client_ids))
        return owners

    async def reset_offset_by_time(
        self, group: str, topic: str, timestamp_ms: int, *, force: bool = False
    ) -> list[OffsetReset]:
        """Set the group's committed offset of every queue of ``topic`` to the first message
        stored at or after ``timestamp_ms`` (the queue's end if none).

        Stop the group's consumers first: they keep offsets in memory and would write them
        back, because our broker does not push RESET_CONSUMER_CLIENT_OFFSET to them yet.
        Refuses while consumers are online unless ``force``.
        """
        route = await self.topic_route(topic)
        if not force:
            listing = await self.consumer_connection(group)
            if listing is not None and listing.connection_set:
                ids = ", ".join(c.client_id for c in listing.connection_set)
                raise AdminError(
                    f"consumer group {group} has live consumers ({ids}); they would overwrite "
                    "the reset with their own offsets: stop them and run this again "
                    "(or pass --force to reset anyway)"
                )
        readable = {q.broker_name: q.read_queue_nums for q in route.queue_datas}
        targets: list[tuple[str, str, int]] = []
        for data in route.broker_datas:
            master = master_address(data)
            if data.broker_name not in readable:
                continue
            if master is None:
                raise AdminError(
                    f"broker group {data.broker_name} has no master now; offsets can be "
                    "reset only on a master: retry once it is back"
                )
            targets.append((data.broker_name, master, readable[data.broker_name]))

        async def one(target: tuple[str, str, int]) -> list[OffsetReset]:
            name, addr, count = target
            out = []
            for queue_id in range(count):
                mq = MessageQueue(topic=topic, broker_name=name, queue_id=queue_id)
                out.append(await self._reset_queue(addr, group, mq, timestamp_ms))
            return out

        names = [t[0] for t in targets]
        pages = self._all_ok(names, await self._gather(targets, one), "offsets reset")
        return sorted((r for page in pages for r in page), key=lambda r: r.queue)

    async def _reset_queue(
        self, addr: str, group: str, mq: MessageQueue, timestamp_ms: int
    ) -> OffsetReset:
        new_offset = await self.search_offset(addr, mq, timestamp_ms)
        query = QueryConsumerOffsetRequestHeader(
            consumer_group=group, topic=mq.topic, queue_id=mq.queue_id, set_zero_if_not_found=False
        )
        response = await self._broker_call(
            addr,
            RemotingCommand.request(RequestCode.QUERY_CONSUMER_OFFSET, query.to_ext_fields()),
            ok=(ResponseCode.SUCCESS, ResponseCode.QUERY_NOT_FOUND),
        )
        old = None
        if response.code == ResponseCode.SUCCESS:
            old = OffsetResponseHeader.from_ext_fields(response.ext_fields).offset
        update = UpdateConsumerOffsetRequestHeader(
            consumer_group=group, topic=mq.topic, queue_id=mq.queue_id, commit_offset=new_offset
        )
        request = RemotingCommand.request(
            RequestCode.UPDATE_CONSUMER_OFFSET, update.to_ext_fields()
        )
        try:
            await self._broker_call(addr, request)
        except SubscriptionGroupNotExist as exc:
            raise _group_hint(exc, group) from None
        return OffsetReset(queue=mq, old_offset=old, new_offset=new_offset)


@asynccontextmanager
async def open_admin(
    namesrv: str | Sequence[str] = "127.0.0.1:9876",
    *,
    timeout_s: float = 3.0,
    tls: ssl.SSLContext | None = None,
    credentials: Credentials | None = None,
) -> AsyncIterator[Admin]:
    """An ``Admin`` whose connections live exactly as long as this block.

    ``tls``: a context to connect with; None: as ``$RMQ_TLS*`` say (plain when unset).
    With ``credentials`` every request is signed (ACL 1.0, protocol/acl_sign.py).

    Raises ``AdminError`` at once when the NameServer list is empty or malformed.
    """
    text = namesrv if isinstance(namesrv, str) else ";".join(namesrv)
    try:
        addrs = parse_namesrv_list(text)
    except ValueError as exc:
        raise AdminError(f"{exc}; pass -n host:port") from None
    for addr in addrs:
        _check_address(addr, "NameServer address")
    async with open_client(
        name="rmq-admin", default_timeout_s=timeout_s, tls=tls, credentials=credentials
    ) as client:
        yield Admin(client, addrs, timeout_s=timeout_s)


__all__ = [
    "DEFAULT_CONSUME_COUNT",
    "DEFAULT_PERM",
    "DEFAULT_QUERY_MAX_NUM",
    "DEFAULT_QUEUE_NUMS",
    "MAX_TIMESTAMP_MS",
    "PULL_BATCH",
    "TEMPLATE_TOPIC",
    "TOOLS_CONSUMER_GROUP",
    "TOOLS_PRODUCER_GROUP",
    "UNIQ_KEY_QUERY_MAX_NUM",
    "Admin",
    "AdminError",
    "BrokerEpochs",
    "BrokerRuntime",
    "ConsumerProgress",
    "ControllerMetadata",
    "ElectMasterResult",
    "HAConnection",
    "HAStatus",
    "MessageNotFound",
    "OffsetReset",
    "PullPage",
    "QueueProgress",
    "TopicDeleted",
    "TopicOffset",
    "allocate_averagely",
    "call_any",
    "controller_call",
    "find_controller_leader",
    "get_cluster_info",
    "get_controller_metadata",
    "get_topic_route",
    "open_admin",
    "parse_controller_list",
    "parse_namesrv_list",
    "read_address",
]
