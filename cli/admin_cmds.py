"""``rmq admin``: mqadmin's commands, with its names, flags and columns, on ``client.admin``.

Rules:
- Each command is one ``Admin`` call under one overall deadline (``--timeout`` per request,
  ten times that for the whole command).
- Tables are borderless rich tables (columns two or more spaces apart, headers as mqadmin
  prints them); ``--json`` prints the same data as JSON for scripts. Data cells are plain
  text, never rich markup: a message body may well contain ``[red]``.
- ``-n/--namesrv`` defaults to ``$NAMESRV_ADDR``, then 127.0.0.1:9876, as mqadmin does.
- A failure is one line on stderr (``error: ...``, saying what to do) and exit status 1,
  never a traceback.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

import trio
import typer
from rich.table import Table
from rich.text import Text

from cli.output import fail, out
from client.admin import (
    DEFAULT_CONSUME_COUNT,
    DEFAULT_PERM,
    DEFAULT_QUERY_MAX_NUM,
    DEFAULT_QUEUE_NUMS,
    MAX_TIMESTAMP_MS,
    TOOLS_CONSUMER_GROUP,
    Admin,
    AdminError,
    BrokerEpochs,
    BrokerRuntime,
    ControllerMetadata,
    ElectMasterResult,
    HAStatus,
    open_admin,
    parse_timestamp,
    perm_to_string,
)
from client.message import ReceivedMessage
from protocol.bodies import SubscriptionGroupConfig
from protocol.controller_bodies import OPEN_END_OFFSET, BrokerReplicasInfo, EpochEntry
from protocol.errors import RocketError
from protocol.group_topics import is_group_topic
from protocol.route import TopicConfig, is_readable, is_writeable

T = TypeVar("T")

admin_app = typer.Typer(no_args_is_help=True, help="mqadmin-style administration commands.")

# Wide enough that no table row ever wraps (rows are parsed by scripts and tests).
_out = out

#: The whole command may take this many request deadlines.
DEADLINE_FACTOR = 10

NamesrvOpt = Annotated[
    str,
    typer.Option(
        "-n",
        "--namesrv",
        envvar="NAMESRV_ADDR",
        help="NameServer address(es), host:port[;host:port...].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Per-request deadline in seconds.")]
TopicOpt = Annotated[str, typer.Option("-t", "--topic", help="Topic name.")]
GroupOpt = Annotated[str, typer.Option("-g", "--group", help="Consumer group name.")]
ClusterOpt = Annotated[str | None, typer.Option("-c", "--cluster", help="Cluster name.")]
BrokerAddrOpt = Annotated[
    str | None, typer.Option("-b", "--broker-addr", help="Broker address host:port.")
]
DEFAULT_NAMESRV = "127.0.0.1:9876"


# --- plumbing --------------------------------------------------------------------------------


def run(namesrv: str, timeout_s: float, fn: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``fn`` with an ``Admin`` under the command's deadline; errors become one line."""
    deadline_s = timeout_s * DEADLINE_FACTOR

    async def main() -> T:
        with trio.fail_after(deadline_s):
            async with open_admin(namesrv, timeout_s=timeout_s) as admin:
                return await fn(admin)

    try:
        return trio.run(main)
    except RocketError as exc:
        raise fail(str(exc)) from None
    except trio.TooSlowError:
        raise fail(
            f"the command did not finish within {deadline_s:g} s; check that the NameServer "
            "and brokers are up, or raise --timeout"
        ) from None


def _bool(value: str | None, flag: str) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise fail(f"{flag} takes true or false, not {value!r}")
    return text == "true"


def _table(*columns: str) -> Table:
    return Table(*columns, box=None)


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(Text(str(c)) for c in cells))


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False))


def _human_ms(ms: int, *, millis: bool = True) -> str:
    """Local time as mqadmin prints it (``yyyy-MM-dd HH:mm:ss,SSS``); N/A for 0."""
    if ms <= 0:
        return "N/A"
    text = datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text},{ms % 1000:03d}" if millis else text


def _java_repr(name: str, obj: Mapping[str, Any]) -> str:
    """``Name [a=1, b=true]``, Java toString style."""
    parts = []
    for key, value in obj.items():
        text = json.dumps(value) if isinstance(value, bool | dict) else str(value)
        parts.append(f"{key}={text}")
    return f"{name} [{', '.join(parts)}]"


def _body_text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def message_json(m: ReceivedMessage) -> dict[str, Any]:
    """A received message as ``--json`` prints it (body as text and as base64)."""
    return {
        "msgId": m.msg_id,
        "offsetMsgId": m.offset_msg_id,
        "topic": m.topic,
        "brokerName": m.queue.broker_name,
        "queueId": m.queue.queue_id,
        "queueOffset": m.queue_offset,
        "commitLogOffset": m.commit_log_offset,
        "tags": m.tags,
        "keys": list(m.keys),
        "properties": dict(m.properties),
        "bornTimestamp": m.born_timestamp_ms,
        "storeTimestamp": m.store_timestamp_ms,
        "bornHost": f"{m.born_host[0]}:{m.born_host[1]}",
        "storeHost": f"{m.store_host[0]}:{m.store_host[1]}",
        "reconsumeTimes": m.reconsume_times,
        "sysFlag": m.sys_flag,
        "flag": m.flag,
        "body": _body_text(m.body),
        "bodyBase64": base64.b64encode(m.body).decode("ascii"),
    }


def _print_message(m: ReceivedMessage) -> None:
    """mqadmin's printMsg block: one ``Label: value`` line per field, body last."""
    properties = ", ".join(f"{k}={v}" for k, v in sorted(m.properties.items()))
    lines = [
        ("OffsetID:", m.offset_msg_id),
        ("Topic:", m.topic),
        ("Tags:", f"[{m.tags or ''}]"),
        ("Keys:", f"[{' '.join(m.keys)}]"),
        ("Queue ID:", m.queue.queue_id),
        ("Queue Offset:", m.queue_offset),
        ("CommitLog Offset:", m.commit_log_offset),
        ("Reconsume Times:", m.reconsume_times),
        ("Born Timestamp:", _human_ms(m.born_timestamp_ms)),
        ("Store Timestamp:", _human_ms(m.store_timestamp_ms)),
        ("Born Host:", f"{m.born_host[0]}:{m.born_host[1]}"),
        ("Store Host:", f"{m.store_host[0]}:{m.store_host[1]}"),
        ("System Flag:", m.sys_flag),
        ("Properties:", f"{{{properties}}}"),
        ("Message Body:", _body_text(m.body)),
    ]
    for label, value in lines:
        print(f"{label:<20} {value}")


def _print_messages(messages: Sequence[ReceivedMessage], as_json: bool) -> None:
    if as_json:
        _print_json([message_json(m) for m in messages])
        return
    for index, message in enumerate(messages):
        if index:
            print()
        _print_message(message)


# --- cluster and brokers -----------------------------------------------------------------------


def _runtime_json(b: BrokerRuntime) -> dict[str, Any]:
    return {
        "cluster": b.cluster,
        "brokerName": b.broker_name,
        "brokerId": b.broker_id,
        "addr": b.addr,
        "version": b.version,
        "role": b.role,
        "inTotalToday": b.in_total_today,
        "outTotalToday": b.out_total_today,
        "activated": b.active,
        "runtime": None if b.table is None else dict(b.table),
        "error": b.error,
    }


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


@admin_app.command("clusterList")
def cluster_list(
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """List clusters, their brokers and each broker's version, role and traffic."""
    brokers = run(namesrv, timeout, lambda a: a.cluster_list(cluster))
    if as_json:
        _print_json([_runtime_json(b) for b in brokers])
        return
    table = _table(
        "#Cluster Name",
        "#Broker Name",
        "#BID",
        "#Addr",
        "#Version",
        "#Role",
        "#InTotalToday",
        "#OutTotalToday",
        "#ACTIVATED",
    )
    for b in sorted(brokers, key=lambda b: (b.cluster, b.broker_name, b.broker_id)):
        _row(
            table,
            b.cluster,
            b.broker_name,
            b.broker_id,
            b.addr,
            _or_dash(b.version),
            _or_dash(b.role),
            _or_dash(b.in_total_today),
            _or_dash(b.out_total_today),
            "true" if b.active else "false",
        )
    _out.print(table)


@admin_app.command("brokerStatus")
def broker_status(
    broker_addr: BrokerAddrOpt = None,
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Print a broker's runtime status table (-b ADDR), or every broker's of a cluster (-c)."""
    if (broker_addr is None) == (cluster is None):
        raise fail("name either a broker address (-b) or a cluster (-c)")

    async def fetch(admin: Admin) -> list[tuple[str, Mapping[str, str] | None, str | None]]:
        if broker_addr is not None:
            return [(broker_addr, await admin.broker_status(broker_addr), None)]
        return [(b.addr, b.table, b.error) for b in await admin.cluster_list(cluster)]

    results = run(namesrv, timeout, fetch)
    errors = [f"broker {addr}: {error}" for addr, table, error in results if table is None]
    if as_json:
        _print_json({addr: None if table is None else dict(table) for addr, table, _ in results})
    else:
        for addr, table, _ in results:
            prefix = f"{addr:<24} " if cluster is not None else ""
            for key, value in sorted((table or {}).items()):
                print(f"{prefix}{key:<32}: {value}")
    if errors:
        raise fail("; ".join(errors))


@admin_app.command("haStatus")
def ha_status(
    broker_addr: BrokerAddrOpt = None,
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show replication: a master's slaves (ack offset, diff, speed, in-sync), or a slave's
    link to its master (-b ADDR), or every master's of a cluster (-c)."""
    if (broker_addr is None) == (cluster is None):
        raise fail("name either a broker address (-b) or a cluster (-c)")

    async def fetch(admin: Admin) -> list[HAStatus | RocketError]:
        if broker_addr is not None:
            return [await admin.ha_status(broker_addr)]
        return await admin.cluster_ha_status(cluster or "")

    results = run(namesrv, timeout, fetch)
    statuses = [r for r in results if isinstance(r, HAStatus)]
    errors = [str(r) for r in results if isinstance(r, RocketError)]
    if as_json:
        _print_json([dict(st.raw, brokerAddr=st.broker_addr) for st in statuses])
    else:
        for st in statuses:
            _print_ha_status(st)
    if errors:
        raise fail("; ".join(errors))


def _print_ha_status(st: HAStatus) -> None:
    if not st.master:
        client = st.client or {}
        print(f"#SlaveAddr: {st.broker_addr}  #BrokerName: {st.broker_name}  #BID: {st.broker_id}")
        table = _table(
            "#MasterAddr", "#Status", "#MaxOffset", "#MasterMaxOffset", "#TransferSpeed(KB/s)"
        )
        _row(
            table,
            _or_dash(client.get("masterAddr")),
            _or_dash(client.get("status")),
            _or_dash(client.get("maxOffset")),
            st.max_offset,
            f"{int(client.get('transferredByteInSecond') or 0) / 1024:.1f}",
        )
        _out.print(table)
        return
    print(
        f"#MasterAddr: {st.broker_addr}  #BrokerName: {st.broker_name}  "
        f"#MasterCommitLogMaxOffset: {st.max_offset}  #SlaveNum: {len(st.connections)}  "
        f"#InSyncSlaveNum: {st.in_sync_slave_nums}"
    )
    table = _table(
        "#SlaveAddr",
        "#SlaveId",
        "#SlaveAckOffset",
        "#Diff",
        "#TransferSpeed(KB/s)",
        "#Status",
        "#InSync",
    )
    for c in st.connections:
        _row(
            table,
            c.addr,
            c.broker_id,
            c.ack_offset,
            c.diff,
            f"{c.transfer_bytes_per_s / 1024:.1f}",
            c.status,
            "true" if c.in_sync else "false",
        )
    _out.print(table)


# --- topics ------------------------------------------------------------------------------------


@admin_app.command("topicList")
def topic_list(
    cluster_model: Annotated[
        bool, typer.Option("-c", "--cluster-model", help="Show each topic's cluster.")
    ] = False,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """List every topic the NameServer knows (-c: with its cluster, retry/DLQ topics left out)."""

    async def fetch(admin: Admin) -> list[tuple[str, str]]:
        if not cluster_model:
            return [("", t) for t in await admin.topic_list()]
        clusters = sorted((await admin.cluster_info()).cluster_addr_table)
        rows = []
        for cluster in clusters:
            for topic in await admin.topics_of_cluster(cluster):
                if not is_group_topic(topic):
                    rows.append((cluster, topic))
        return rows

    rows = run(namesrv, timeout, fetch)
    if as_json:
        if cluster_model:
            _print_json([{"cluster": c, "topic": t} for c, t in rows])
        else:
            _print_json([t for _, t in rows])
        return
    if not cluster_model:
        for _, topic in rows:
            print(topic)
        return
    table = _table("#Cluster Name", "#Topic")
    for cluster, topic in rows:
        _row(table, cluster, topic)
    _out.print(table)


@admin_app.command("topicRoute")
def topic_route(
    topic: TopicOpt,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show a topic's route (--json: the raw TopicRouteData)."""
    route = run(namesrv, timeout, lambda a: a.topic_route(topic))
    if as_json:
        _print_json(route.to_json())
        return
    groups = {b.broker_name: b for b in route.broker_datas}
    table = _table(
        "#ClusterName", "#BrokerName", "#BrokerAddrs", "#ReadQueue", "#WriteQueue", "#Perm"
    )
    for qd in sorted(route.queue_datas, key=lambda q: q.broker_name):
        bd = groups.get(qd.broker_name)
        addrs = ", ".join(f"{i}={a}" for i, a in sorted(bd.broker_addrs.items())) if bd else "-"
        perm = ("R" if is_readable(qd.perm) else "-") + ("W" if is_writeable(qd.perm) else "-")
        _row(
            table,
            bd.cluster if bd else "-",
            qd.broker_name,
            addrs,
            qd.read_queue_nums,
            qd.write_queue_nums,
            f"{perm} ({qd.perm})",
        )
    _out.print(table)


@admin_app.command("topicStatus")
def topic_status(
    topic: TopicOpt,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show every queue of a topic: min and max offset, time of the newest message."""
    offsets = run(namesrv, timeout, lambda a: a.topic_status(topic))
    if as_json:
        _print_json(
            [
                {
                    "brokerName": o.queue.broker_name,
                    "queueId": o.queue.queue_id,
                    "minOffset": o.min_offset,
                    "maxOffset": o.max_offset,
                    "lastUpdateTimestamp": o.last_update_ms,
                }
                for o in offsets
            ]
        )
        return
    table = _table("#Broker Name", "#QID", "#Min Offset", "#Max Offset", "#Last Updated")
    for o in offsets:
        _row(
            table,
            o.queue.broker_name,
            o.queue.queue_id,
            o.min_offset,
            o.max_offset,
            _human_ms(o.last_update_ms),
        )
    _out.print(table)


@admin_app.command("updateTopic")
def update_topic(
    topic: TopicOpt,
    cluster: ClusterOpt = None,
    broker_addr: BrokerAddrOpt = None,
    read_queues: Annotated[
        int, typer.Option("-r", "--read-queue-nums", help="Read queues.")
    ] = DEFAULT_QUEUE_NUMS,
    write_queues: Annotated[
        int, typer.Option("-w", "--write-queue-nums", help="Write queues.")
    ] = DEFAULT_QUEUE_NUMS,
    perm: Annotated[
        int, typer.Option("-p", "--perm", help="2 (W), 4 (R) or 6 (RW).")
    ] = DEFAULT_PERM,
    order: Annotated[
        str, typer.Option("-o", "--order", metavar="true|false", help="Ordered topic.")
    ] = "false",
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Create or update a topic on every master of a cluster (-c) or on one broker (-b)."""
    is_order = bool(_bool(order, "-o/--order"))
    addrs = run(
        namesrv,
        timeout,
        lambda a: a.create_topic(
            topic,
            cluster=cluster,
            broker_addr=broker_addr,
            read_queue_nums=read_queues,
            write_queue_nums=write_queues,
            perm=perm,
            order=is_order,
        ),
    )
    config = TopicConfig(
        topic_name=topic,
        read_queue_nums=read_queues,
        write_queue_nums=write_queues,
        perm=perm,
        order=is_order,
    )
    if as_json:
        _print_json({"brokers": addrs, "topicConfig": config.to_json()})
        return
    for addr in addrs:
        print(f"create topic to {addr} success.")
    shown = config.to_json()
    shown["perm"] = perm_to_string(perm)
    print(_java_repr("TopicConfig", shown))


@admin_app.command("deleteTopic")
def delete_topic(
    topic: TopicOpt,
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Delete a topic from its brokers (every broker of -c CLUSTER) and every NameServer."""
    deleted = run(namesrv, timeout, lambda a: a.delete_topic(topic, cluster=cluster))
    if as_json:
        _print_json({"brokers": list(deleted.brokers), "namesrvs": list(deleted.namesrvs)})
        return
    if cluster is not None:
        print(f"delete topic [{topic}] from cluster [{cluster}] success.")
    else:
        print(f"delete topic [{topic}] from brokers [{', '.join(deleted.brokers)}] success.")
    print(f"delete topic [{topic}] from NameServer success.")


# --- subscription groups and consumers ---------------------------------------------------------


@admin_app.command("updateSubGroup")
def update_sub_group(
    group: GroupOpt,
    cluster: ClusterOpt = None,
    broker_addr: BrokerAddrOpt = None,
    consume_enable: Annotated[
        str | None, typer.Option("-s", "--consume-enable", metavar="true|false")
    ] = None,
    from_min: Annotated[
        str | None, typer.Option("-m", "--consume-from-min-enable", metavar="true|false")
    ] = None,
    broadcast: Annotated[
        str | None, typer.Option("-d", "--consume-broadcast-enable", metavar="true|false")
    ] = None,
    orderly: Annotated[
        str | None, typer.Option("-o", "--consume-message-orderly", metavar="true|false")
    ] = None,
    retry_queues: Annotated[
        int | None, typer.Option("-q", "--retry-queue-nums", help="Retry queues.")
    ] = None,
    retry_max: Annotated[
        int | None, typer.Option("-r", "--retry-max-times", help="Retries before the DLQ.")
    ] = None,
    broker_id: Annotated[
        int | None, typer.Option("-i", "--broker-id", help="Consume from this broker id.")
    ] = None,
    slowly: Annotated[
        int | None,
        typer.Option("-w", "--which-broker-when-consume-slowly", help="Broker id when slow."),
    ] = None,
    notify: Annotated[
        str | None, typer.Option("-a", "--notify-consumer-ids-changed", metavar="true|false")
    ] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Create or update a subscription group on a cluster's masters (-c) or one broker (-b).

    Settings not given keep their current value (RocketMQ's defaults for a new group).
    """
    enable = _bool(consume_enable, "-s")
    min_enable = _bool(from_min, "-m")
    broadcast_enable = _bool(broadcast, "-d")
    orderly_enable = _bool(orderly, "-o")
    notify_enable = _bool(notify, "-a")
    configs = run(
        namesrv,
        timeout,
        lambda a: a.update_subscription_group(
            group,
            cluster=cluster,
            broker_addr=broker_addr,
            consume_enable=enable,
            consume_from_min_enable=min_enable,
            consume_broadcast_enable=broadcast_enable,
            consume_message_orderly=orderly_enable,
            retry_queue_nums=retry_queues,
            retry_max_times=retry_max,
            broker_id=broker_id,
            which_broker_when_consume_slowly=slowly,
            notify_consumer_ids_changed_enable=notify_enable,
        ),
    )
    _print_group_configs(configs, as_json)


def _print_group_configs(configs: Mapping[str, SubscriptionGroupConfig], as_json: bool) -> None:
    if as_json:
        _print_json({addr: c.to_json() for addr, c in configs.items()})
        return
    for addr, config in configs.items():
        print(f"create subscription group to {addr} success.")
        print(_java_repr("SubscriptionGroupConfig", config.to_json()))


@admin_app.command("deleteSubGroup")
def delete_sub_group(
    group: GroupOpt,
    cluster: ClusterOpt = None,
    broker_addr: BrokerAddrOpt = None,
    remove_offset: Annotated[
        str, typer.Option("-r", "--remove-offset", metavar="true|false", help="Drop offsets.")
    ] = "false",
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Delete a subscription group from a cluster's masters (-c) or one broker (-b)."""
    clean = bool(_bool(remove_offset, "-r/--remove-offset"))
    addrs = run(
        namesrv,
        timeout,
        lambda a: a.delete_subscription_group(
            group, cluster=cluster, broker_addr=broker_addr, clean_offset=clean
        ),
    )
    if as_json:
        _print_json({"brokers": addrs, "removeOffset": clean})
        return
    for addr in addrs:
        print(f"delete subscription group [{group}] from broker [{addr}] success.")


@admin_app.command("consumerProgress")
def consumer_progress(
    group: GroupOpt,
    topic: Annotated[str | None, typer.Option("-t", "--topic", help="Only this topic.")] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show a consumer group's offsets and lag per queue, with the owning client if online."""
    progress = run(namesrv, timeout, lambda a: a.consumer_progress(group, topic))
    if as_json:
        _print_json(
            {
                "group": progress.group,
                "consumeTps": progress.consume_tps,
                "diffTotal": progress.diff_total,
                "queues": [
                    {
                        "topic": q.queue.topic,
                        "brokerName": q.queue.broker_name,
                        "queueId": q.queue.queue_id,
                        "brokerOffset": q.broker_offset,
                        "consumerOffset": q.consumer_offset,
                        "clientId": q.client_id,
                        "diff": q.diff,
                        "lastTimestamp": q.last_timestamp_ms,
                    }
                    for q in progress.queues
                ],
            }
        )
        return
    table = _table(
        "#Topic",
        "#Broker Name",
        "#QID",
        "#Broker Offset",
        "#Consumer Offset",
        "#Client IP",
        "#Diff",
        "#LastTime",
    )
    for q in progress.queues:
        _row(
            table,
            q.queue.topic,
            q.queue.broker_name,
            q.queue.queue_id,
            q.broker_offset,
            q.consumer_offset,
            q.client_id or "N/A",
            q.diff,
            _human_ms(q.last_timestamp_ms, millis=False),
        )
    _out.print(table)
    print()
    print(f"Consume TPS: {progress.consume_tps:.2f}")
    print(f"Consume Diff Total: {progress.diff_total}")


@admin_app.command("resetOffsetByTime")
def reset_offset_by_time(
    group: GroupOpt,
    topic: TopicOpt,
    timestamp: Annotated[
        str,
        typer.Option(
            "-s", "--timestamp", help="now, ms since the epoch, or yyyy-MM-dd#HH:mm:ss:SSS."
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Reset even though consumers are online.")
    ] = False,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Reset a group's offsets on a topic to the first message stored at or after a time.

    Stop the group's consumers first: our brokers cannot yet tell running consumers to drop
    their in-memory offsets, so they would write them back. The command refuses while any
    consumer of the group is online, unless --force.
    """
    try:
        ts_ms = parse_timestamp(timestamp, now_ms=int(time.time() * 1000))
    except AdminError as exc:
        raise fail(str(exc)) from None
    resets = run(
        namesrv, timeout, lambda a: a.reset_offset_by_time(group, topic, ts_ms, force=force)
    )
    if as_json:
        _print_json(
            {
                "group": group,
                "topic": topic,
                "timestamp": ts_ms,
                "offsets": [
                    {
                        "brokerName": r.queue.broker_name,
                        "queueId": r.queue.queue_id,
                        "oldOffset": r.old_offset,
                        "offset": r.new_offset,
                    }
                    for r in resets
                ],
            }
        )
        return
    print(
        f"start reset consumer offset by specified, group[{group}], topic[{topic}], "
        f"force[{str(force).lower()}], timestamp(string)[{timestamp}], timestamp(long)[{ts_ms}]"
    )
    table = _table("#brokerName", "#queueId", "#offset")
    for r in resets:
        _row(table, r.queue.broker_name, r.queue.queue_id, r.new_offset)
    _out.print(table)


# --- messages ----------------------------------------------------------------------------------


@admin_app.command("queryMsgById")
def query_msg_by_id(
    topic: TopicOpt,
    msg_id: Annotated[str, typer.Option("-i", "--msg-id", help="Message id or offset id.")],
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show the message with this id (client UNIQ_KEY id, or the broker's offset id)."""
    messages = run(namesrv, timeout, lambda a: a.query_by_id(topic, msg_id.strip()))
    _print_messages(messages, as_json)


@admin_app.command("queryMsgByKey")
def query_msg_by_key(
    topic: TopicOpt,
    key: Annotated[str, typer.Option("-k", "--msg-key", help="Message key.")],
    max_num: Annotated[
        int, typer.Option("-m", "--max-num", help="Most messages to return.")
    ] = DEFAULT_QUERY_MAX_NUM,
    begin: Annotated[
        int, typer.Option("-b", "--begin-timestamp", help="Stored at or after (ms).")
    ] = 0,
    end: Annotated[
        int, typer.Option("-e", "--end-timestamp", help="Stored at or before (ms).")
    ] = MAX_TIMESTAMP_MS,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """List the messages of a topic that carry a key, from every broker group."""
    messages = run(
        namesrv,
        timeout,
        lambda a: a.query_by_key(topic, key, max_num=max_num, begin_ms=begin, end_ms=end),
    )
    if as_json:
        _print_json([message_json(m) for m in messages])
        return
    table = _table("#Message ID", "#QID", "#Offset")
    for m in messages:
        _row(table, m.msg_id, m.queue.queue_id, m.queue_offset)
    _out.print(table)


@admin_app.command("queryMsgByOffset")
def query_msg_by_offset(
    topic: TopicOpt,
    broker_name: Annotated[str, typer.Option("-b", "--broker-name", help="Broker name.")],
    queue_id: Annotated[int, typer.Option("-i", "--queue-id", help="Queue id.")],
    offset: Annotated[int, typer.Option("-o", "--offset", help="Queue offset.")],
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show the message at one offset of one queue."""
    message = run(
        namesrv, timeout, lambda a: a.query_by_offset(topic, broker_name, queue_id, offset)
    )
    _print_messages([message], as_json)


@admin_app.command("sendMessage")
def send_message(
    topic: TopicOpt,
    body: Annotated[str, typer.Option("-p", "--body", help="Message body (UTF-8 text).")],
    keys: Annotated[str | None, typer.Option("-k", "--key", help="Keys, space-separated.")] = None,
    tags: Annotated[str | None, typer.Option("-c", "--tags", help="Message tag.")] = None,
    broker_name: Annotated[
        str | None, typer.Option("-b", "--broker", help="Send to this broker (with -i).")
    ] = None,
    queue_id: Annotated[
        int | None, typer.Option("-i", "--qid", help="Send to this queue (with -b).")
    ] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Send one message and print where it was stored."""
    if (broker_name is None) != (queue_id is None):
        raise fail("-b BROKER and -i QUEUE_ID go together")
    result = run(
        namesrv,
        timeout,
        lambda a: a.send(
            topic,
            body.encode("utf-8"),
            keys=(keys or "").split(),
            tags=tags,
            broker_name=broker_name,
            queue_id=queue_id,
        ),
    )
    if as_json:
        _print_json(
            {
                "brokerName": result.queue.broker_name,
                "queueId": result.queue.queue_id,
                "queueOffset": result.queue_offset,
                "sendStatus": result.status.value,
                "msgId": result.msg_id,
                "offsetMsgId": result.offset_msg_id,
            }
        )
        return
    table = _table("#Broker Name", "#QID", "#Send Result", "#MsgId")
    _row(table, result.queue.broker_name, result.queue.queue_id, result.status.value, result.msg_id)
    _out.print(table)


@admin_app.command("consumeMessage")
def consume_message(
    topic: TopicOpt,
    group: Annotated[
        str, typer.Option("-g", "--consumer-group", help="Pull as this group.")
    ] = TOOLS_CONSUMER_GROUP,
    broker_name: Annotated[
        str | None, typer.Option("-b", "--broker-name", help="Only this broker.")
    ] = None,
    queue_id: Annotated[
        int | None, typer.Option("-i", "--queue-id", help="Only this queue.")
    ] = None,
    offset: Annotated[
        int | None, typer.Option("-o", "--offset", help="Start at this queue offset.")
    ] = None,
    count: Annotated[
        int, typer.Option("-c", "--count", help="Most messages to print.")
    ] = DEFAULT_CONSUME_COUNT,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Pull and print messages (nothing is committed: the group's offsets do not move)."""
    messages = run(
        namesrv,
        timeout,
        lambda a: a.consume(
            topic,
            broker_name=broker_name,
            queue_id=queue_id,
            offset=offset,
            count=count,
            group=group,
        ),
    )
    if as_json:
        _print_json([message_json(m) for m in messages])
        return
    table = _table("#Broker Name", "#QID", "#Offset", "#MsgId", "#Tags", "#Keys", "#Body")
    for m in messages:
        _row(
            table,
            m.queue.broker_name,
            m.queue.queue_id,
            m.queue_offset,
            m.msg_id,
            m.tags or "",
            " ".join(m.keys),
            _one_line(_body_text(m.body)),
        )
    _out.print(table)


# --- controller (mqadmin getControllerMetaData, getSyncStateSet, electMaster, ...) ------------

ControllerOpt = Annotated[
    str,
    typer.Option(
        "-a",
        "--controllerAddress",
        envvar="CONTROLLER_ADDR",
        help="Controller address(es), host:port[;host:port...]: the leader is found from any.",
    ),
]


def _metadata_json(m: ControllerMetadata) -> dict[str, Any]:
    return {
        "address": m.address,
        "group": m.group,
        "controllerLeaderId": m.leader_id,
        "controllerLeaderAddress": m.leader_address,
        "isLeader": m.is_leader,
        "peers": [{"id": i, "address": a} for i, a in m.peers],
    }


@admin_app.command("getControllerMetaData")
def get_controller_metadata(
    controller: ControllerOpt,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show the controller quorum: its group, its leader and its peers."""
    meta = run(namesrv, timeout, lambda a: a.controller_metadata(controller))
    if as_json:
        _print_json(_metadata_json(meta))
        return
    print(f"#ControllerGroup\t{_or_dash(meta.group)}")
    print(f"#ControllerLeaderId\t{_or_dash(meta.leader_id)}")
    print(f"#ControllerLeaderAddress\t{_or_dash(meta.leader_address)}")
    for node_id, addr in meta.peers:
        print(f"#Peer:\t{node_id}:{addr}")


def _replicas_json(info: BrokerReplicasInfo) -> dict[str, Any]:
    return {
        name: {
            "masterBrokerId": r.master_broker_id,
            "masterAddress": r.master_address,
            "masterEpoch": r.master_epoch,
            "syncStateSetEpoch": r.sync_state_set_epoch,
            "inSyncReplicas": [i.to_json() for i in r.in_sync_replicas],
            "notInSyncReplicas": [i.to_json() for i in r.not_in_sync_replicas],
        }
        for name, r in sorted(info.replicas_info_table.items())
    }


@admin_app.command("getSyncStateSet")
def get_sync_state_set(
    controller: ControllerOpt,
    broker_name: Annotated[
        str | None, typer.Option("-b", "--brokerName", help="Broker group name.")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("-c", "--clusterName", help="Every group of this cluster.")
    ] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show a broker group's master, epochs and SyncStateSet (-b), or every group's (-c)."""
    info = run(
        namesrv,
        timeout,
        lambda a: a.sync_state_set(controller, broker_name=broker_name, cluster=cluster),
    )
    if as_json:
        _print_json(_replicas_json(info))
        return
    if not info.replicas_info_table:
        raise fail("the controller knows none of these broker groups")
    for name, r in sorted(info.replicas_info_table.items()):
        print(f"#brokerName\t{name}")
        print(f"#MasterBrokerId\t{_or_dash(r.master_broker_id)}")
        print(f"#MasterAddr\t{_or_dash(r.master_address)}")
        print(f"#MasterEpoch\t{r.master_epoch}")
        print(f"#SyncStateSetEpoch\t{r.sync_state_set_epoch}")
        print(f"#SyncStateSetNums\t{len(r.in_sync_replicas)}")
        for member in r.in_sync_replicas:
            print(f"InSyncReplica:\t{member}")
        for member in r.not_in_sync_replicas:
            print(f"NotInSyncReplica:\t{member}")
        print()


def _epochs_json(e: BrokerEpochs) -> dict[str, Any]:
    cache = e.cache
    return {
        "brokerAddr": e.address,
        "error": e.error,
        "clusterName": cache.cluster_name if cache else None,
        "brokerName": cache.broker_name if cache else None,
        "brokerId": cache.broker_id if cache else None,
        "maxOffset": cache.max_offset if cache else None,
        "epochList": [x.to_json() for x in cache.epoch_list] if cache else [],
    }


@admin_app.command("getBrokerEpoch")
def get_broker_epoch(
    broker_name: Annotated[
        str | None, typer.Option("-b", "--brokerName", help="Broker group name.")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("-c", "--clusterName", help="Every group of this cluster.")
    ] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show each broker's epoch entries (epoch, start and end offset) of a group or cluster."""
    results = run(
        namesrv, timeout, lambda a: a.broker_epochs(broker_name=broker_name, cluster=cluster)
    )
    if as_json:
        _print_json([_epochs_json(e) for e in results])
        return
    for e in results:
        if e.cache is None:
            print(f"#brokerAddr\t{e.address}\t(skipped: {e.error})")
            continue
        c = e.cache
        print(f"#clusterName\t{c.cluster_name}")
        print(f"#brokerName\t{c.broker_name}")
        print(f"#brokerAddr\t{e.address}")
        print(f"#brokerId\t{c.broker_id}")
        for i, entry in enumerate(c.epoch_list):
            shown = entry
            if i == len(c.epoch_list) - 1 and entry.end_offset == OPEN_END_OFFSET:
                # The open last entry ends at the broker's max offset, as mqadmin prints it.
                shown = EpochEntry(
                    epoch=entry.epoch, start_offset=entry.start_offset, end_offset=c.max_offset
                )
            print(f"#Epoch: {shown}")
        print()


def _elect_json(r: ElectMasterResult) -> dict[str, Any]:
    return {
        "clusterName": r.cluster,
        "brokerName": r.broker_name,
        "masterBrokerId": r.master_broker_id,
        "masterAddress": r.master_address,
        "masterEpoch": r.master_epoch,
        "syncStateSetEpoch": r.sync_state_set_epoch,
        "syncStateSet": sorted(r.sync_state_set),
        "brokerAddrs": {str(i): a for i, a in sorted(r.broker_addrs.items())},
        "changed": r.changed,
    }


@admin_app.command("electMaster")
def elect_master(
    controller: ControllerOpt,
    broker_id: Annotated[
        int, typer.Option("-b", "--brokerId", help="The broker id that should become master.")
    ],
    broker_name: Annotated[str, typer.Option("-bn", "--brokerName", help="Broker group name.")],
    cluster: Annotated[str, typer.Option("-c", "--clusterName", help="Cluster name.")],
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Re-elect: make broker BROKER_ID the master of its group (it must be alive and, with
    unclean election off, in the SyncStateSet)."""
    result = run(
        namesrv,
        timeout,
        lambda a: a.elect_master(
            controller, cluster=cluster, broker_name=broker_name, broker_id=broker_id
        ),
    )
    if as_json:
        _print_json(_elect_json(result))
        return
    print(f"#ClusterName\t{result.cluster}")
    print(f"#BrokerName\t{result.broker_name}")
    print(f"#BrokerMasterAddr\t{_or_dash(result.master_address)}")
    print(f"#MasterEpoch\t{_or_dash(result.master_epoch)}")
    print(f"#SyncStateSetEpoch\t{_or_dash(result.sync_state_set_epoch)}")
    for i, addr in sorted(result.broker_addrs.items()):
        print(f"\t#Broker\t{i}\t{addr}")
    if not result.changed:
        print(f"broker {broker_id} already is the master of {broker_name}; nothing changed")


@admin_app.command("cleanBrokerMetadata")
def clean_broker_metadata(
    controller: ControllerOpt,
    broker_name: Annotated[str, typer.Option("-bn", "--brokerName", help="Broker group name.")],
    broker_ids: Annotated[
        str | None,
        typer.Option(
            "-b",
            "--brokerControllerIdsToClean",
            help="Broker ids to drop, e.g. '1;2' (default: the whole group).",
        ),
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("-c", "--clusterName", help="Cluster name.")
    ] = None,
    clean_living: Annotated[
        bool,
        typer.Option("-l", "--cleanLivingBroker", help="Also drop brokers that are alive."),
    ] = False,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Drop brokers (or a whole group) from the controller's metadata."""
    ids: list[int] | None = None
    if broker_ids is not None:
        try:
            ids = [int(part) for part in broker_ids.split(";") if part.strip()]
        except ValueError:
            raise fail(
                f"-b takes broker ids separated by ';' (e.g. '1;2'), not {broker_ids!r}"
            ) from None
    run(
        namesrv,
        timeout,
        lambda a: a.clean_broker_metadata(
            controller,
            broker_name=broker_name,
            cluster=cluster,
            broker_ids=ids,
            clean_living=clean_living,
        ),
    )
    print(f"clear broker {broker_name} metadata from controller success!")
