"""``rmq admin`` topic commands: topicList, topicRoute, topicStatus, updateTopic,
deleteTopic."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    BrokerAddrOpt,
    ClusterOpt,
    JsonOpt,
    NamesrvOpt,
    TimeoutOpt,
    TopicOpt,
    _bool,
    _human_ms,
    _java_repr,
    _out,
    _print_json,
    _row,
    _table,
    perm_to_string,
    run,
)
from client.admin import DEFAULT_PERM, DEFAULT_QUEUE_NUMS, Admin
from protocol.group_topics import is_group_topic
from protocol.route import TopicConfig, is_readable, is_writeable

app = typer.Typer()


@app.command("topicList")
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


@app.command("topicRoute")
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


@app.command("topicStatus")
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


@app.command("updateTopic")
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
    attributes: Annotated[
        str | None,
        typer.Option(
            "-a",
            "--attributes",
            help="RocketMQ 5 topic attributes, e.g. +message.type=FIFO (NORMAL, FIFO, "
            "DELAY, TRANSACTION, MIXED).",
        ),
    ] = None,
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
            attributes=attributes,
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


@app.command("deleteTopic")
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
