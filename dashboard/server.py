"""``rmq dashboard``'s process: the poll loop and hypercorn's Trio server, one nursery.

Rules:
- Everything runs on the Trio thread: ``poll`` reads the cluster every ``interval_s``
  (each read under its own deadline, ``sources.py``) and feeds ``Dashboard.update``;
  hypercorn (its ``trio`` worker, no thread) serves the ASGI app. ``serve`` reports the
  bound URL through ``task_status`` once the socket is bound.
- The admin actions (create a topic, elect a master) exist only with an admin key, and
  go through the SDK like ``rmq admin updateTopic`` / ``electMaster``.
- With ``snapshot`` the page is also saved to that file (``snapshot.py``) whenever the
  timeline grows and when the server stops: reports link it after the cluster is gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from client.admin import Admin, open_admin
from dashboard.app import Action, DashboardApp, int_arg, text_arg
from dashboard.model import Dashboard
from dashboard.snapshot import write_snapshot
from dashboard.sources import Sources
from protocol.javanum import INT32_RANGE

log = logging.getLogger(__name__)

#: The ready line, worded as the other servers'.
READY = "The dashboard boot success. url={url}"


async def poll(
    sources: Sources, dashboard: Dashboard, interval_s: float, snapshot: Path | None = None
) -> None:
    """Read the cluster every ``interval_s`` until cancelled; with ``snapshot``, save the
    page there whenever the timeline grew, and once more when cancelled."""
    saved = -1
    try:
        while True:
            dashboard.update(await sources.observe(int(time.time() * 1000)))
            if snapshot is not None and dashboard.events != saved:
                saved = dashboard.events
                save(snapshot, dashboard)
            await trio.sleep(interval_s)
    finally:
        if snapshot is not None and dashboard.view:
            save(snapshot, dashboard)


def save(snapshot: Path, dashboard: Dashboard) -> None:
    """Write the snapshot; a failure (disk full, say) is logged, and the page still served."""
    try:
        write_snapshot(snapshot, dashboard.state())
    except OSError as exc:
        log.warning("cannot save the dashboard to %s: %s", snapshot, exc.strerror or exc)


def admin_actions(admin: Admin, controllers: Sequence[str]) -> dict[str, Action]:
    async def create_topic(args: dict[str, Any]) -> dict[str, Any]:
        topic = text_arg(args, "topic")
        queues = int_arg(args, "queues", default=4, low=1, high=INT32_RANGE[1])
        clusters = (await admin.cluster_info()).cluster_addr_table
        if not clusters:
            raise ValueError("no cluster is registered")
        cluster = next(iter(sorted(clusters)))
        await admin.create_topic(
            topic, cluster=cluster, read_queue_nums=queues, write_queue_nums=queues
        )
        return {"created": topic, "cluster": cluster, "queues": queues}

    async def elect(args: dict[str, Any]) -> dict[str, Any]:
        if not controllers:
            raise ValueError("no controllers given (--controllers)")
        name, broker_id = text_arg(args, "brokerName"), int_arg(args, "brokerId")
        info = await admin.cluster_info()
        group = info.broker_addr_table.get(name)
        cluster = group.cluster if group is not None else "DefaultCluster"
        result = await admin.elect_master(
            controllers, cluster=cluster, broker_name=name, broker_id=broker_id
        )
        return {"masterId": result.master_broker_id, "masterEpoch": result.master_epoch}

    return {"topic": create_topic, "elect": elect}


def hypercorn_config(host: str, port: int) -> Config:
    """hypercorn's settings for the dashboard. Its defaults bound slow clients: a request
    head must arrive within ``keep_alive_timeout`` (5 s; its idle timer runs until a whole
    head arrived), and over ``h11_max_incomplete_size`` (16 KiB) it is answered 431; the app
    bounds the body (``app.py``)."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = 1.0
    return config


async def serve(
    *,
    namesrv: Sequence[str],
    controllers: Sequence[str] = (),
    controller_metrics: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 8080,
    admin_key: str | None = None,
    interval_s: float = 1.0,
    timeout_s: float = 2.0,
    snapshot: Path | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poll and serve until cancelled; report the page's URL."""
    async with open_admin(list(namesrv), timeout_s=timeout_s) as admin:
        sources = Sources(
            admin,
            namesrv=namesrv,
            controllers=controllers,
            controller_metrics=controller_metrics,
            timeout_s=timeout_s,
        )
        dashboard = Dashboard()
        actions = admin_actions(admin, controllers) if admin_key else None
        app = DashboardApp(dashboard, admin_key=admin_key, actions=actions)
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(hypercorn_serve, app, hypercorn_config(host, port))
            nursery.start_soon(poll, sources, dashboard, interval_s, snapshot)
            bound = binds[0].removeprefix("http://")
            task_status.started(f"http://{bound}/")
