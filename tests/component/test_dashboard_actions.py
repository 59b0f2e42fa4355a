"""The dashboard's admin actions (dashboard/server.py's ``admin_actions`` behind
dashboard/app.py) against a real NameServer and broker in this process (port 0).

Hostile or mistaken arguments and the cluster's refusals come back as a JSON error with
the reason (400), never hypercorn's bare 500 with a traceback in the log; good ones act.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from client.admin import open_admin
from dashboard.app import DashboardApp
from dashboard.model import Dashboard
from dashboard.server import admin_actions
from tests.component.sdk_fixtures import sdk_cluster
from tests.unit.test_dashboard_app import call

DEADLINE_S = 20.0
KEY = [(b"x-admin-key", b"k")]


async def test_topic_action_answers_bad_arguments_and_refusals_with_their_reason(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with (
            sdk_cluster(tmp_path) as c,
            open_admin(c.namesrv, timeout_s=5.0) as admin,
        ):
            app = DashboardApp(Dashboard(), admin_key="k", actions=admin_actions(admin, ()))

            async def topic(body: bytes) -> tuple[int, str]:
                status, answer = await call(app, "POST", "/api/topic", body, KEY)
                doc = json.loads(answer)
                return status, doc.get("error") or json.dumps(doc)

            refused = {
                b'{"topic": "bad topic!"}': "is not valid",
                b'{"topic": "T\\ud800"}': "is not valid",
                b'{"topic": 7}': "'topic' must be a string",
                b'{"topic": "T1", "queues": 1e400}': "'queues' must be an integer",
                b'{"topic": "T1", "queues": 99999999999999999999999}': "'queues' must be",
                b'{"topic": "T1", "queues": -5}': "'queues' must be an integer in 1..",
                b'{"topic": "T1", "queues": "4"}': "'queues' must be an integer",
                b'{"topic": "TBW102"}': "conflict with system topic",
                b'{"topic": "T2", "queues": 100000}': "maxTopicQueueNums",
            }
            for body, reason in refused.items():
                status, error = await topic(body)
                assert status == 400 and reason in error, (body, status, error)
            status, done = await topic(b'{"topic": "T3", "queues": 2}')
            assert status == 200, done
            assert json.loads(done) == {"created": "T3", "cluster": "DefaultCluster", "queues": 2}
            await c.wait_route("T3", {"broker-a": 2})
            status, error = await call(app, "POST", "/api/elect", b'{"brokerName": "b"}', KEY)
            assert status == 400 and b"no controllers given" in error
