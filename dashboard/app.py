"""The dashboard's ASGI app: the page, its JSON, and the admin actions behind a key.

Rules:
- Plain ASGI 3 (no framework: three routes and two actions do not need one), served by
  hypercorn's Trio worker (``server.py``); every handler runs on the Trio thread.
- ``GET /`` the page, ``GET /static/<file>`` its script and style (files of
  ``static/`` only, by name), ``GET /api/state`` the latest ``Dashboard.state()``.
- Read-only unless the app was given an admin key: then ``POST /api/topic``
  (``{"topic", "queues"}``) and ``POST /api/elect`` (``{"brokerName", "brokerId"}``) act
  through the SDK, and only for a request whose ``X-Admin-Key`` header matches (compared in
  constant time). Without a key both answer 403; with a wrong one 401. Bodies over
  ``MAX_BODY_BYTES`` are refused (413, at once when their Content-Length says so), and a
  body must arrive within ``body_timeout_s`` of its head (408): hypercorn's keep-alive
  timer stops once a head arrived and it has no body deadline of its own, so a client
  that announces a body and sends it slowly, or never, would hold its connection forever.
- An action's error is JSON ``{"error": ...}``, never a bare 500: 400 for arguments the
  action refuses (``text_arg``, ``int_arg``) or the cluster refuses (a broker's or the
  controller's remark), 502 when the cluster does not answer in time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import trio

from dashboard.model import Dashboard
from protocol.errors import NetworkError, RemotingTimeout, RocketError
from protocol.javanum import INT64_RANGE

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: An admin action: the request's JSON object in, a JSON-ready result out.
Action = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 10.0
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def text_arg(args: Mapping[str, Any], name: str) -> str:
    """Argument ``name``, which must be a JSON string (ValueError naming it if not)."""
    value = args.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name!r} must be a string, got {json.dumps(value)[:40]}")
    return value


def int_arg(
    args: Mapping[str, Any],
    name: str,
    *,
    default: int | None = None,
    low: int = 0,
    high: int = INT64_RANGE[1],
) -> int:
    """Argument ``name``, which must be a JSON integer in ``low..high`` (or absent, when it
    has a default): 1e400, 2.5, "4" and true are refused, not rounded or converted."""
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        shown = json.dumps(value)[:40] if not isinstance(value, float) else repr(value)
        raise ValueError(f"{name!r} must be an integer in {low}..{high}, got {shown}")
    return value


def _static(name: str) -> bytes | None:
    if "/" in name or name.startswith("."):
        return None
    path = resources.files("dashboard") / "static" / name
    return path.read_bytes() if path.is_file() else None


class DashboardApp:
    """ASGI callable over a ``Dashboard`` and the admin actions (None: read-only)."""

    def __init__(
        self,
        dashboard: Dashboard,
        *,
        admin_key: str | None = None,
        actions: Mapping[str, Action] | None = None,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.dashboard = dashboard
        self._admin_key = admin_key
        self._actions = dict(actions or {})
        self._body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/":
            await _reply(send, 200, _static("index.html") or b"", "text/html")
        elif method == "GET" and path.startswith("/static/"):
            name = path.removeprefix("/static/")
            body = _static(name)
            kind = _TYPES.get(name[name.rfind(".") :], "application/octet-stream")
            await _reply(send, 200 if body else 404, body or b"not found\n", kind)
        elif method == "GET" and path == "/api/state":
            state = {**self.dashboard.state(), "admin": self._admin_key is not None}
            await _json(send, 200, state)
        elif method == "POST" and path.startswith("/api/") and path[5:] in self._actions:
            await self._act(scope, receive, send, path[5:])
        else:
            await _reply(send, 404, b"not found\n", "text/plain")

    async def _act(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        if self._admin_key is None:
            await _json(send, 403, {"error": "read-only dashboard: start it with --admin-key"})
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-admin-key", b"")
        if not hmac.compare_digest(given, self._admin_key.encode()):
            await _json(send, 401, {"error": "wrong or missing X-Admin-Key"})
            return
        body = None
        if _announced_bytes(headers) <= MAX_BODY_BYTES:
            with trio.move_on_after(self._body_timeout_s) as waited:
                body = await _body(receive)
            if waited.cancelled_caught:
                error = f"body not received within {self._body_timeout_s:g} s"
                await _json(send, 408, {"error": error})
                return
        if body is None:
            await _json(send, 413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ValueError("expected a JSON object")
            result = await self._actions[name](args)
        except (NetworkError, RemotingTimeout) as exc:
            await _json(send, 502, {"error": f"the cluster did not answer: {exc}"})
            return
        except KeyError as exc:
            await _json(send, 400, {"error": f"missing argument {exc}"})
            return
        except (ValueError, TypeError, RocketError) as exc:
            await _json(send, 400, {"error": str(exc)})
            return
        await _json(send, 200, result)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _announced_bytes(headers: Mapping[bytes, bytes]) -> int:
    """The request's Content-Length; 0 when absent or not a number (the body read is capped
    anyway)."""
    text = headers.get(b"content-length", b"")
    return int(text) if text.isdigit() and len(text) <= 20 else 0


async def _body(receive: Receive) -> bytes | None:
    data = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body"):
            return data


async def _reply(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, doc: Any) -> None:
    await _reply(send, status, json.dumps(doc).encode(), "application/json")
