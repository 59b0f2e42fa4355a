"""``rmq admin`` broker commands: brokerConsumeStats, getBrokerConfig, updateBrokerConfig
(mqadmin's ``broker`` section, printed as mqadmin prints them).

updateBrokerConfig changes the running broker at once (UPDATE_BROKER_CONFIG, 25) for the
settings a broker reads at each use; any other key, an unknown key or a bad value is
refused by the broker with a remark naming it, shown as one ``error:`` line, and nothing
is changed.
"""

from __future__ import annotations

import datetime
from typing import Annotated

import attrs
import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    BrokerAddrOpt,
    ClusterOpt,
    JsonOpt,
    NamesrvOpt,
    TimeoutOpt,
    _print_json,
    require_one_target,
    run,
)
from cli.output import fail
from client.admin import Admin
from protocol.route import MASTER_ID

app = typer.Typer()


def _time(ms: int) -> str:
    """UtilAll.YYYY_MM_DD_HH_MM_SS of a local time."""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


@app.command("brokerConsumeStats")
def broker_consume_stats(
    broker_addr: Annotated[str, typer.Option("-b", "--broker-addr", help="Broker address.")],
    level: Annotated[
        int, typer.Option("-l", "--level", help="Print only queues at least this far behind.")
    ] = 0,
    order: Annotated[bool, typer.Option("-o", "--order", help="Order topics only.")] = False,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Every subscription group's progress on one broker, queue by queue."""
    stats = run(namesrv, timeout, lambda a: a.broker_consume_stats(broker_addr, is_order=order))
    if as_json:
        _print_json(
            {
                "brokerAddr": stats.broker_addr,
                "totalDiff": stats.total_diff,
                "groups": {
                    group: [attrs.asdict(t) for t in per_topic]
                    for group, per_topic in sorted(stats.groups.items())
                },
            }
        )
        return
    lines = [
        f"{'#Topic':<32}  {'#Group':<32}  {'#Broker Name':<32}  {'#QID':<4}  "
        f"{'#Broker Offset':<20}  {'#Consumer Offset':<20}  {'#Diff':<20}  #LastTime"
    ]
    for group, per_topic in sorted(stats.groups.items()):
        for q in (q for t in per_topic for q in t.queues):
            # As mqadmin: queues at least ``level`` behind that the group ever consumed.
            if q.diff < level or q.last_timestamp_ms <= 0:
                continue
            lines.append(
                f"{q.topic:<64}  {group:<32}  {q.broker_name:<32}  {q.queue_id:<4}  "
                f"{q.broker_offset:<20}  {q.consumer_offset:<20}  {q.diff:<20}  "
                f"{_time(q.last_timestamp_ms)}"
            )
    lines += ["", f"Diff Total: {stats.total_diff}"]
    print("\n".join(lines))


async def _config_targets(
    admin: Admin, cluster: str | None, broker_addr: str | None
) -> list[tuple[str, str]]:
    """(banner, address) of one broker, or of every broker of a cluster (masters, each
    followed by its slaves), as getBrokerConfig prints them."""
    if broker_addr is not None:
        return [(f"============{broker_addr}============", broker_addr)]
    out = []
    for group in await admin.cluster_groups(cluster):
        master = group.broker_addrs.get(MASTER_ID)
        if master is not None:
            out.append((f"============Master: {master}============", master))
        for broker_id, addr in sorted(group.broker_addrs.items()):
            if broker_id != MASTER_ID:
                out.append((f"============My Master: {master}=====Slave: {addr}============", addr))
    return out


@app.command("getBrokerConfig")
def get_broker_config(
    broker_addr: BrokerAddrOpt = None,
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Print a broker's settings (-b ADDR), or every broker's of a cluster (-c)."""
    require_one_target(broker_addr, cluster)

    async def fetch(admin: Admin) -> list[tuple[str, str, dict[str, str]]]:
        targets = await _config_targets(admin, cluster, broker_addr)
        return [(banner, addr, await admin.broker_config(addr)) for banner, addr in targets]

    results = run(namesrv, timeout, fetch)
    if as_json:
        _print_json({addr: config for _, addr, config in results})
        return
    for banner, _, config in results:
        print(banner)
        for key, value in config.items():
            print(f"{key:<50}=  {value}")
        print()


@app.command("updateBrokerConfig")
def update_broker_config(
    key: Annotated[str, typer.Option("-k", "--key", help="Setting name (broker.conf key).")],
    value: Annotated[str, typer.Option("-v", "--value", help="New value.")],
    broker_addr: BrokerAddrOpt = None,
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Change a setting of a running broker (-b) or of every master of a cluster (-c)."""
    require_one_target(broker_addr, cluster)
    name, text = key.strip(), value.strip()
    if not name or any(c in name for c in "=:\n\r#!") or "\n" in text or "\r" in text:
        raise fail(f"bad key or value {key!r}={value!r}: one broker.conf key and a one-line value")

    async def apply(admin: Admin) -> None:
        addrs = [broker_addr] if broker_addr is not None else await admin.masters_of(cluster or "")
        for addr in addrs:  # one at a time: the first refusal stops the rest, named after
            await admin.update_broker_config(addr, {name: text})  # those already changed
            print(f"update broker config success, {addr}", flush=True)

    run(namesrv, timeout, apply)
