"""The dashboard's reads: the SDK's admin calls and the controllers' ``/metrics``.

Rules:
- Only the wire: ``client.admin`` (NameServer routes, brokers' runtime info and consume
  stats, the controller leader's replica info and every controller's metadata) and an
  HTTP GET of each controller's Prometheus endpoint. No server internals.
- One ``observe`` reads everything once, every read under ``timeout_s``; a part that
  fails (a dead controller, a broker killed a moment ago) becomes an ``error`` on its row
  or in ``Observation.errors``, never an exception: the page keeps showing the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from prometheus_client.parser import text_string_to_metric_families

from client.admin import Admin
from dashboard.model import (
    BrokerRow,
    ControllerRow,
    GroupRow,
    Observation,
    ReplicaRow,
    Samples,
)
from protocol.controller_bodies import ReplicasInfo
from protocol.errors import RocketError
from protocol.route import MASTER_ID

MAX_METRICS_BYTES = 4 * 1024 * 1024


async def scrape(address: str, timeout_s: float) -> Samples:
    """GET http://address/metrics, parsed into (name, labels) → value."""
    host, _, port = address.rpartition(":")
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(f"GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
                if len(data) > MAX_METRICS_BYTES:
                    raise ValueError(f"{address}/metrics is larger than {MAX_METRICS_BYTES} bytes")
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        raise ValueError(f"{address}/metrics answered {status!r}")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _group_row(name: str, info: ReplicasInfo) -> GroupRow:
    replicas = [
        ReplicaRow(broker_id=r.broker_id, address=r.broker_address, alive=r.alive, in_sync=True)
        for r in info.in_sync_replicas
    ] + [
        ReplicaRow(broker_id=r.broker_id, address=r.broker_address, alive=r.alive, in_sync=False)
        for r in info.not_in_sync_replicas
    ]
    return GroupRow(
        broker_name=name,
        master_id=info.master_broker_id,
        master_address=info.master_address,
        master_epoch=info.master_epoch,
        sync_state_set_epoch=info.sync_state_set_epoch,
        replicas=tuple(sorted(replicas, key=lambda r: r.broker_id)),
    )


class Sources:
    """Where the cluster is: NameServers, controllers and their metrics endpoints."""

    def __init__(
        self,
        admin: Admin,
        *,
        namesrv: Sequence[str],
        controllers: Sequence[str] = (),
        controller_metrics: Sequence[str] = (),
        timeout_s: float = 2.0,
    ) -> None:
        self.admin = admin
        self.namesrv = tuple(namesrv)
        self.controllers = tuple(controllers)
        self.controller_metrics = tuple(controller_metrics)
        self.timeout_s = timeout_s

    async def observe(self, now_ms: int) -> Observation:
        errors: list[str] = []
        brokers = await self._brokers(errors)
        masters = [b.addr for b in brokers if b.broker_id == MASTER_ID and b.table is not None]
        return Observation(
            now_ms=now_ms,
            namesrv=self.namesrv,
            brokers=tuple(brokers),
            controllers=await self._controllers(),
            groups=await self._groups(brokers, errors),
            topics=await self._topics(errors),
            consumer_groups=await self._consumer_groups(masters, errors),
            errors=tuple(errors),
        )

    async def _brokers(self, errors: list[str]) -> list[BrokerRow]:
        try:
            runtimes = await self.admin.cluster_list()
        except RocketError as exc:
            errors.append(f"cluster list: {exc}")
            return []
        return [
            BrokerRow(
                cluster=r.cluster,
                broker_name=r.broker_name,
                broker_id=r.broker_id,
                addr=r.addr,
                table=r.table,
                error=r.error,
            )
            for r in runtimes
        ]

    async def _groups(self, brokers: list[BrokerRow], errors: list[str]) -> tuple[GroupRow, ...]:
        names = sorted({b.broker_name for b in brokers})
        if not self.controllers or not names:
            return ()
        rows = []
        for name in names:  # one at a time: a group unknown to the controller fails alone
            try:
                info = await self.admin.sync_state_set(self.controllers, broker_name=name)
            except RocketError as exc:
                errors.append(f"SyncStateSet of {name}: {exc}")
                continue
            rows += [_group_row(n, i) for n, i in sorted(info.replicas_info_table.items())]
        return tuple(rows)

    async def _controllers(self) -> tuple[ControllerRow, ...]:
        rows: list[ControllerRow | None] = [None] * len(self.controllers)

        async def one(i: int, address: str) -> None:
            metrics = self.controller_metrics[i] if i < len(self.controller_metrics) else None
            samples, error = None, None
            try:
                meta = await self.admin.controller_metadata([address])
                node_id, is_leader = (
                    meta.leader_id if meta.is_leader else _node_id(meta.peers, address),
                    meta.is_leader,
                )
            except RocketError as exc:
                node_id, is_leader, error = None, None, str(exc)
            if metrics is not None:
                try:
                    samples = await scrape(metrics, self.timeout_s)
                except (OSError, ValueError, trio.TooSlowError) as exc:
                    error = error or f"metrics: {exc or type(exc).__name__}"
            rows[i] = ControllerRow(
                address=address,
                node_id=node_id,
                is_leader=is_leader,
                metrics_address=metrics,
                samples=samples,
                error=error,
            )

        async with trio.open_nursery() as nursery:
            for i, address in enumerate(self.controllers):
                nursery.start_soon(one, i, address)
        return tuple(r for r in rows if r is not None)

    async def _topics(self, errors: list[str]) -> tuple[str, ...]:
        try:
            return tuple(sorted(await self.admin.topic_list()))
        except RocketError as exc:
            errors.append(f"topic list: {exc}")
            return ()

    async def _consumer_groups(
        self, masters: list[str], errors: list[str]
    ) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for addr in masters:
            try:
                stats = await self.admin.broker_consume_stats(addr)
            except RocketError as exc:
                errors.append(f"consume stats of {addr}: {exc}")
                continue
            for group, per_topic in stats.groups.items():
                diff, tps = out.get(group, (0, 0.0))
                out[group] = (
                    diff + sum(t.diff for t in per_topic),
                    tps + sum(t.consume_tps for t in per_topic),
                )
        return out


def _node_id(peers: Sequence[tuple[str, str]], address: str) -> str | None:
    return next((node for node, addr in peers if addr == address), None)
