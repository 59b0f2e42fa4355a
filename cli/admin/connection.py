"""``rmq admin`` connection commands: consumerConnection, producerConnection (mqadmin's
``connection`` section, its columns: ``%03d  clientId addr language version``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    GroupOpt,
    JsonOpt,
    NamesrvOpt,
    TimeoutOpt,
    _print_json,
    run,
)
from cli.output import fail
from protocol.bodies import Connection

app = typer.Typer()

#: MQVersion.Version: from V4_0_0_SNAPSHOT (212) every x_y_z is a SNAPSHOT and a release,
#: ``z`` and ``y`` 0..9, so the ordinal gives the name (401 is V4_9_4, 479 V5_3_3).
_V4_0_0_SNAPSHOT = 212
_OLD_VERSIONS = {121: "V3_4_9"}  # what ali-ons announces


def version_desc(version: int) -> str:
    """MQVersion.getVersionDesc: the release a client announces, e.g. ``V5_3_3``."""
    if version in _OLD_VERSIONS:
        return _OLD_VERSIONS[version]
    if version < _V4_0_0_SNAPSHOT:
        return f"V{version}"
    step, snapshot = divmod(version - _V4_0_0_SNAPSHOT, 2)
    major, rest = divmod(step, 100)
    name = f"V{4 + major}_{rest // 10}_{rest % 10}"
    return name + ("_SNAPSHOT" if snapshot == 0 else "")


def _rows(connections: tuple[Connection, ...], width: int) -> list[str]:
    return [
        f"{i:0{width}d}  {c.client_id:<32} {c.client_addr:<22} {c.language:<8} "
        f"{version_desc(c.version)}"
        for i, c in enumerate(connections, 1)
    ]


def _connections_json(connections: tuple[Connection, ...]) -> list[dict[str, Any]]:
    return [dict(c.to_json(), versionDesc=version_desc(c.version)) for c in connections]


@app.command("consumerConnection")
def consumer_connection(
    group: GroupOpt,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Query a consumer group's connections, client versions and subscriptions."""
    cc = run(namesrv, timeout, lambda a: a.consumer_connection(group))
    if cc is None:
        raise fail(f"no consumer of group {group} is online (on any broker)")
    if as_json:
        _print_json(
            {
                "connectionSet": _connections_json(cc.connection_set),
                "subscriptionTable": {
                    t: s.to_json() for t, s in sorted(cc.subscription_table.items())
                },
                "consumeType": cc.consume_type,
                "messageModel": cc.message_model,
                "consumeFromWhere": cc.consume_from_where,
            }
        )
        return
    lines = _rows(cc.connection_set, 3)
    lines.append("")
    lines.append("Below is subscription:")
    for i, (topic, sd) in enumerate(sorted(cc.subscription_table.items()), 1):
        lines.append(f"{i:03d}  Topic: {topic:<40} SubExpression: {sd.sub_string}")
    lines.append("")
    lines.append(f"ConsumeType: {cc.consume_type}")
    lines.append(f"MessageModel: {cc.message_model}")
    lines.append(f"ConsumeFromWhere: {cc.consume_from_where}")
    print("\n".join(lines))


@app.command("producerConnection")
def producer_connection(
    group: Annotated[str, typer.Option("-g", "--group", help="Producer group name.")],
    topic: Annotated[
        str | None,
        typer.Option("-t", "--topic", help="Topic (mqadmin asks for it; brokers list by group)."),
    ] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Query a producer group's connections and client versions."""
    pc = run(namesrv, timeout, lambda a: a.producer_connection(group))
    if pc is None:
        raise fail(f"no producer of group {group} is online (on any broker)")
    if as_json:
        _print_json({"connectionSet": _connections_json(pc.connection_set)})
        return
    print("\n".join(_rows(pc.connection_set, 4)))
