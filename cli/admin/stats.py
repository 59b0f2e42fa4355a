"""``rmq admin statsAll``: every topic's in and out rates and 24-hour counts, per consumer
group (mqadmin's ``stats`` section, StatsAllSubCommand's columns and rules).

Rules (as mqadmin): retry and DLQ topics are skipped; in = TOPIC_PUT_NUMS and out =
GROUP_GET_NUMS ``topic@group`` of each master (VIEW_BROKER_STATS_DATA, 315), the minute's
TPS and the 24-hour sum (the day's, else the hour's, else the minute's); a master without
the item counts 0. Accumulation is the group's lag on the topic. A topic nobody consumes
has one row ``NO_CONSUMER``. ``-a`` keeps only topics with traffic in 24 hours. The groups
of a topic are those its masters name (QUERY_TOPIC_CONSUME_BY_WHO, 300), lag from their
GET_BROKER_CONSUME_STATS (317).
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import attrs
import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    JsonOpt,
    NamesrvOpt,
    TimeoutOpt,
    _print_json,
    run,
)
from client.admin import Admin
from client.admin_stats import GROUP_GET_NUMS, TOPIC_PUT_NUMS, BrokerConsumeStats
from protocol.errors import RocketError
from protocol.group_topics import is_group_topic
from protocol.route import MASTER_ID

app = typer.Typer()

NO_CONSUMER = "NO_CONSUMER"


@attrs.frozen(kw_only=True)
class StatsRow:
    topic: str
    group: str | None
    accumulation: int
    in_tps: float
    out_tps: float | None
    in_msg_24h: int
    out_msg_24h: int | None


async def _item(admin: Admin, masters: list[str], name: str, key: str) -> tuple[float, int]:
    """Minute TPS and 24-hour sum of one item over ``masters`` (an absent item adds 0)."""
    tps, total = 0.0, 0
    for addr in masters:
        try:
            data = await admin.view_broker_stats(addr, name, key)
        except RocketError:
            continue
        tps += data.minute.tps
        total += data.sum_24h
    return tps, total


async def stats_all(admin: Admin, topic: str | None, active_only: bool) -> list[StatsRow]:
    consume: dict[str, BrokerConsumeStats] = {}
    rows: list[StatsRow] = []
    for name in sorted(await admin.topic_list()):
        if is_group_topic(name) or (topic and name != topic):
            continue
        try:
            route = await admin.topic_route(name)
        except RocketError:
            continue  # a system topic without a route, or one deleted meanwhile
        masters = [a for b in route.broker_datas if (a := b.broker_addrs.get(MASTER_ID))]
        for addr in masters:
            if addr not in consume:
                try:
                    consume[addr] = await admin.broker_consume_stats(addr)
                except RocketError:
                    continue
        in_tps, in_24h = await _item(admin, masters, TOPIC_PUT_NUMS, name)
        lag: dict[str, int] = {}
        for addr in masters:
            with contextlib.suppress(RocketError):  # as mqadmin: a broker that fails adds none
                lag.update(dict.fromkeys(await admin.consumed_by(addr, name), 0))
        for addr in masters:
            for group, per_topic in consume[addr].groups.items() if addr in consume else ():
                for t in per_topic:
                    if t.topic == name:
                        lag[group] = lag.get(group, 0) + max(0, t.diff)
        if not lag:
            if not active_only or in_24h > 0:
                rows.append(StatsRow(topic=name, group=None, accumulation=0, in_tps=in_tps,
                                     out_tps=None, in_msg_24h=in_24h, out_msg_24h=None))  # fmt: skip
            continue
        for group in sorted(lag):
            out_tps, out_24h = await _item(admin, masters, GROUP_GET_NUMS, f"{name}@{group}")
            if not active_only or in_24h > 0 or out_24h > 0:
                rows.append(StatsRow(topic=name, group=group, accumulation=lag[group],
                                     in_tps=in_tps, out_tps=out_tps, in_msg_24h=in_24h,
                                     out_msg_24h=out_24h))  # fmt: skip
    return rows


def format_row(r: StatsRow) -> str:
    if r.group is None:
        return (
            f"{r.topic:<64}  {'':<64} {0:>12d} {r.in_tps:>11.2f} {'':>11} "
            f"{r.in_msg_24h:>14d} {NO_CONSUMER:>14}"
        )
    return (
        f"{r.topic:<64}  {r.group:<64} {r.accumulation:>12d} {r.in_tps:>11.2f} "
        f"{r.out_tps or 0.0:>11.2f} {r.in_msg_24h:>14d} {r.out_msg_24h or 0:>14d}"
    )


HEADER = (
    f"{'#Topic':<64}  {'#Consumer Group':<64} {'#Accumulation':>12} {'#InTPS':>11} "
    f"{'#OutTPS':>11} {'#InMsg24Hour':>14} {'#OutMsg24Hour':>14}"
)


@app.command("statsAll")
def stats_all_command(
    topic: Annotated[
        str | None, typer.Option("-t", "--topic", help="Print this topic only.")
    ] = None,
    active: Annotated[
        bool, typer.Option("-a", "--active-topic", help="Only topics with traffic in 24 hours.")
    ] = False,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Topic and consumer TPS stats: in/out per second and messages in 24 hours."""
    rows = run(namesrv, timeout, lambda a: stats_all(a, topic, active))
    if as_json:
        doc: list[dict[str, Any]] = [attrs.asdict(r) for r in rows]
        _print_json(doc)
        return
    print("\n".join([HEADER, *map(format_row, rows)]))
