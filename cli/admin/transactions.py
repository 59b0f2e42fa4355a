"""``rmq admin transactionStatus``: open half messages, checks sent and discards per broker.

Read from each broker's GET_BROKER_RUNTIME_INFO (``transactionHalfOpenNums``,
``transactionChecksSent``, ``transactionHalfDiscarded``; broker/transaction/). A slave
keeps no transaction state and shows ``-``; so does a master still rebuilding it.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    ClusterOpt,
    JsonOpt,
    NamesrvOpt,
    TimeoutOpt,
    _or_dash,
    _out,
    _print_json,
    _row,
    _table,
    run,
)
from client.admin import BrokerRuntime

app = typer.Typer()


def _number(b: BrokerRuntime, key: str) -> int | None:
    raw = None if b.table is None else b.table.get(key)
    if raw is None or not raw.lstrip("-").isdigit() or int(raw) < 0:
        return None
    return int(raw)


def _status(b: BrokerRuntime) -> dict[str, Any]:
    return {
        "cluster": b.cluster,
        "brokerName": b.broker_name,
        "brokerId": b.broker_id,
        "addr": b.addr,
        "role": b.role,
        "halfOpen": _number(b, "transactionHalfOpenNums"),
        "checksSent": _number(b, "transactionChecksSent"),
        "discarded": _number(b, "transactionHalfDiscarded"),
        "error": b.error,
    }


@app.command("transactionStatus")
def transaction_status(
    cluster: ClusterOpt = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Per broker: half messages not yet committed or rolled back, checks sent, discards."""
    brokers = run(namesrv, timeout, lambda a: a.cluster_list(cluster))
    rows = [_status(b) for b in sorted(brokers, key=lambda b: (b.broker_name, b.broker_id))]
    if as_json:
        _print_json(rows)
        return
    table = _table(
        "#Broker Name", "#BID", "#Addr", "#Role", "#Half Open", "#Checks Sent", "#Discarded"
    )
    for r in rows:
        _row(
            table,
            r["brokerName"],
            r["brokerId"],
            r["addr"],
            _or_dash(r["role"]),
            _or_dash(r["halfOpen"]),
            _or_dash(r["checksSent"]),
            _or_dash(r["discarded"]),
        )
    _out.print(table)
    total = sum(r["halfOpen"] or 0 for r in rows)
    print()
    print(f"Half Messages Open Total: {total}")
