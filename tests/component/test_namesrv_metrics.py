"""NameServer metrics follow its route table and the requests it served."""

from __future__ import annotations

import functools
from pathlib import Path

import trio

from cli.metrics_http import serve_metrics
from tests.component.broker_fixtures import broker_env
from tests.support.scrape import samples, scrape_text, value


async def test_namesrv_metrics_count_routes_brokers_and_requests(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with broker_env(tmp_path) as env, trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(
                    serve_metrics, env.namesrv.metrics.registry, host="127.0.0.1", port=0
                )
            )
            await env.create_topic("T", queues=2)
            await env.wait_route("T")
            found = samples(await scrape_text(f"127.0.0.1:{port}"))
            routes = len(env.namesrv.registry.all_topics())
            assert value(found, "rocketmq_namesrv_topic_number") == routes > 0
            group = {"cluster": "DefaultCluster", "broker_set": "broker-a"}
            assert value(found, "rocketmq_namesrv_broker_number", **group) == 1
            assert value(found, "rocketmq_namesrv_broker_set_master", **group) == 1
            registered = value(
                found,
                "rocketmq_request_total",
                request_type="register_broker",
                request_handle_status="success",
            )
            assert registered >= 2  # at start, and when the topic was created
            nursery.cancel_scope.cancel()
