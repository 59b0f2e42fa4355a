"""``rmq admin`` subscription group and consumer commands: updateSubGroup, deleteSubGroup,
consumerProgress, resetOffsetByTime."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated

import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    BrokerAddrOpt,
    ClusterOpt,
    GroupOpt,
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
    parse_timestamp,
    run,
)
from cli.output import fail
from client.admin import AdminError
from protocol.bodies import SubscriptionGroupConfig

app = typer.Typer()


@app.command("updateSubGroup")
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


@app.command("deleteSubGroup")
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


@app.command("consumerProgress")
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


@app.command("resetOffsetByTime")
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
