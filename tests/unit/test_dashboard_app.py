"""dashboard/app.py over ASGI: the page, its JSON, and admin actions only with the key."""

from __future__ import annotations

import json
from typing import Any

from dashboard.app import MAX_BODY_BYTES, DashboardApp
from dashboard.model import Dashboard, Observation


async def call(
    app: DashboardApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request through the ASGI app, as hypercorn would make it."""
    sent: list[dict[str, Any]] = []
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    await app(scope, receive, send)
    start, payload = sent
    return start["status"], payload["body"]


def _dashboard() -> Dashboard:
    dashboard = Dashboard()
    dashboard.update(Observation(now_ms=5, namesrv=("127.0.0.1:9876",)))
    return dashboard


async def test_the_page_its_files_and_its_state() -> None:
    app = DashboardApp(_dashboard())
    status, page = await call(app, "GET", "/")
    assert status == 200 and b'<script src="/static/app.js">' in page
    assert (await call(app, "GET", "/static/app.js"))[0] == 200
    assert (await call(app, "GET", "/static/../app.py"))[0] == 404
    assert (await call(app, "GET", "/static/.hidden"))[0] == 404
    status, body = await call(app, "GET", "/api/state")
    state = json.loads(body)
    assert status == 200 and state["namesrv"] == ["127.0.0.1:9876"] and state["admin"] is False
    assert (await call(app, "GET", "/nothing"))[0] == 404


async def test_admin_actions_need_the_key() -> None:
    done: list[dict[str, Any]] = []

    async def topic(args: dict[str, Any]) -> dict[str, Any]:
        created = {"created": args["topic"]}
        done.append(args)
        return created

    read_only = DashboardApp(_dashboard(), actions={"topic": topic})
    status, _ = await call(read_only, "POST", "/api/topic", b'{"topic": "T"}')
    assert status == 403 and done == []

    app = DashboardApp(_dashboard(), admin_key="s3cret", actions={"topic": topic})
    assert json.loads((await call(app, "GET", "/api/state"))[1])["admin"] is True
    wrong = [(b"x-admin-key", b"guess")]
    assert (await call(app, "POST", "/api/topic", b'{"topic": "T"}', wrong))[0] == 401
    assert (await call(app, "POST", "/api/topic", b'{"topic": "T"}'))[0] == 401
    assert done == []
    key = [(b"x-admin-key", b"s3cret")]
    status, body = await call(app, "POST", "/api/topic", b'{"topic": "T"}', key)
    assert status == 200 and json.loads(body) == {"created": "T"} and done == [{"topic": "T"}]
    assert (await call(app, "POST", "/api/topic", b"[1]", key))[0] == 400
    assert (await call(app, "POST", "/api/topic", b"{not json", key))[0] == 400
    assert (await call(app, "POST", "/api/topic", b"{}", key))[0] == 400  # KeyError: topic
    big = b'{"topic": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert (await call(app, "POST", "/api/topic", big, key))[0] == 413
    assert (await call(app, "POST", "/api/unknown", b"{}", key))[0] == 404
    assert len(done) == 1
