"""``rmq admin`` cluster and broker commands: clusterList, brokerStatus, haStatus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    BrokerAddrOpt,
    ClusterOpt,
    JsonOpt,
    NamesrvOpt,
    TimeoutOpt,
    _or_dash,
    _out,
    _print_json,
    _row,
    _table,
    require_one_target,
    run,
)
from cli.output import fail
from client.admin import Admin, BrokerRuntime, HAStatus
from protocol.errors import RocketError

app = typer.Typer()


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


@app.command("clusterList")
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


@app.command("brokerStatus")
def broker_status(
    broker_addr: BrokerAddrOpt = None,
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Print a broker's runtime status table (-b ADDR), or every broker's of a cluster (-c)."""
    require_one_target(broker_addr, cluster)

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


@app.command("haStatus")
def ha_status(
    broker_addr: BrokerAddrOpt = None,
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show replication: a master's slaves (ack offset, diff, speed, in-sync), or a slave's
    link to its master (-b ADDR), or every master's of a cluster (-c)."""
    require_one_target(broker_addr, cluster)

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
