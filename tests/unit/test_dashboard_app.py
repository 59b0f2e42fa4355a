"""dashboard/app.py over ASGI: the page, its JSON, and admin actions only with the key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from client.admin_session import AdminError
from dashboard.app import MAX_BODY_BYTES, DashboardApp, int_arg, text_arg
from dashboard.model import Dashboard, Observation
from protocol.errors import ConnectionLost, InvalidParameter, RemotingTimeout


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


async def test_action_errors_are_json_with_the_reason() -> None:
    """Whatever an action raises for bad input or a refusal comes back as a JSON error
    (never hypercorn's bare 500): 400 for arguments and the cluster's refusals, 502 when
    the cluster does not answer."""
    raised: list[Exception] = [
        InvalidParameter("readQueueNums must be in 0..1024"),
        AdminError("topic name 'a b' is not valid"),
        RemotingTimeout("no answer from 127.0.0.1:1 within 2.0 s"),
        ConnectionLost("127.0.0.1:1 closed the connection"),
    ]

    async def topic(args: dict[str, Any]) -> dict[str, Any]:
        raise raised.pop(0)

    app = DashboardApp(_dashboard(), admin_key="k", actions={"topic": topic})
    key = [(b"x-admin-key", b"k")]
    answers = [await call(app, "POST", "/api/topic", b"{}", key) for _ in range(4)]
    assert [status for status, _ in answers] == [400, 400, 502, 502]
    errors = [json.loads(body)["error"] for _, body in answers]
    assert "readQueueNums must be in 0..1024" in errors[0]
    assert "is not valid" in errors[1]
    assert errors[2].startswith("the cluster did not answer: ") and "2.0 s" in errors[2]


def test_arguments_are_json_values_of_their_type_and_range() -> None:
    assert text_arg({"topic": "T"}, "topic") == "T"
    assert int_arg({"queues": 8}, "queues", low=1) == 8
    assert int_arg({}, "queues", default=4) == 4
    for bad in ({}, {"topic": 5}, {"topic": None}, {"topic": ["T"]}):
        with pytest.raises(ValueError, match="'topic' must be a string"):
            text_arg(bad, "topic")
    for value in (1e400, float("nan"), 2.5, 4.0, "4", True, None, [4], 0, 2**31):
        with pytest.raises(ValueError, match=r"'queues' must be an integer in 1\.\.2147483647"):
            int_arg({"queues": value}, "queues", low=1, high=2**31 - 1)
    with pytest.raises(ValueError, match=r"in 0\.\.9223372036854775807, got 9223372036854775808"):
        int_arg({"brokerId": 2**63}, "brokerId")
