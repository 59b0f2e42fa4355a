"""``--metrics-port``: a server process's Prometheus registry over HTTP, served on Trio.

Rules:
- One tiny HTTP/1.1 handler per connection, on the process's Trio thread (never a thread:
  collectors read server state, which only the Trio thread may touch, so they run there).
  ``GET /metrics`` answers ``generate_latest(registry)`` (Prometheus' text format 0.0.4);
  every other path is 404, every other method 405. One request per connection
  (``Connection: close``), which is what a scraper does.
- Hostile peers are bounded: a connection lives at most ``head_timeout_s`` from accept
  (its request head and our response), a head over ``MAX_HEAD_BYTES`` is answered 431,
  and at most ``max_connections`` connections are held: a new one closes the oldest, so
  slow or silent peers (slowloris) neither hold descriptors nor keep a scraper waiting
  behind them (logged at most once per ``LOG_INTERVAL_S``, with a count).
- RocketMQ's exporter (``metricsExporterType=PROM``) listens on ``metricsPromExporterPort``
  (5557); here it is off unless a port is given, as in RocketMQ (``DISABLE`` by default).
  ``--metrics-port 0`` picks a free port; the bound address is printed on its own line
  after the server's ready line (``metrics: http://HOST:PORT/metrics``).
"""

from __future__ import annotations

import functools
import logging

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from protocol.limits import LogThrottle

log = logging.getLogger(__name__)

#: RocketMQ's metricsPromExporterPort default.
DEFAULT_METRICS_PORT = 5557
MAX_HEAD_BYTES = 8192
#: Connections held at once (a new one closes the oldest).
MAX_CONNECTIONS = 64
LOG_INTERVAL_S = 10.0


def metrics_line(host: str, port: int) -> str:
    """What a server prints once its exporter is bound."""
    return f"metrics: http://{host}:{port}/metrics"


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """What arrived up to the blank line ending the head, or past ``MAX_HEAD_BYTES``
    without it (``answer`` refuses that); None when the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) <= MAX_HEAD_BYTES:
        chunk = await stream.receive_some(MAX_HEAD_BYTES)
        if not chunk:
            return None
        data += chunk
    return data


def answer(head: bytes, registry: CollectorRegistry) -> bytes:
    """The whole HTTP response to one request head (pure but for the collectors)."""
    end = head.find(b"\r\n\r\n")
    if end < 0 or end + 4 > MAX_HEAD_BYTES:
        return _response(
            "431 Request Header Fields Too Large",
            f"request head over {MAX_HEAD_BYTES} bytes\n".encode(),
        )
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3:
        return _response("400 Bad Request", b"bad request line\n")
    method, target, _ = parts
    path = target.split("?", 1)[0]
    if path not in ("/metrics", "/"):
        return _response("404 Not Found", b"only /metrics is served here\n")
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"GET /metrics\n")
    body = generate_latest(registry)
    response = _response("200 OK", body, CONTENT_TYPE_LATEST)
    return response[: len(response) - len(body)] if method == "HEAD" else response


async def serve_metrics(
    registry: CollectorRegistry,
    *,
    host: str,
    port: int,
    head_timeout_s: float = 5.0,
    max_connections: int = MAX_CONNECTIONS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``registry`` on ``host:port`` until cancelled; report the bound port."""
    assert max_connections >= 1
    listeners = await trio.open_tcp_listeners(port, host=host)
    held: dict[trio.CancelScope, None] = {}  # one per connection, oldest first
    throttle = LogThrottle(LOG_INTERVAL_S)

    def make_room() -> None:
        """Close the oldest connections until one more fits."""
        while len(held) >= max_connections:
            oldest = next(iter(held))
            del held[oldest]
            oldest.cancel()
            if (left_out := throttle.admit(trio.current_time())) is not None:
                log.warning(
                    "closed a metrics connection: %d newer ones are open "
                    "(%d more like it not logged)",
                    max_connections,
                    left_out,
                )

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            # The deadline runs from accept, and a slot is never waited for: a queue of
            # slow peers would hold every descriptor and every scrape behind it.
            with trio.move_on_after(head_timeout_s) as scope:
                make_room()
                held[scope] = None
                try:
                    head = await _read_head(stream)
                    if head is not None:
                        await stream.send_all(answer(head, registry))
                except trio.BrokenResourceError:
                    pass  # the scraper went away; nothing to clean up
                finally:
                    held.pop(scope, None)

    async with trio.open_nursery() as nursery:
        started = await nursery.start(trio.serve_listeners, handle, listeners)
        bound = started[0].socket.getsockname()[1]
        log.info("metrics exporter on http://%s:%d/metrics", host, bound)
        task_status.started(bound)


async def start_exporter(
    nursery: trio.Nursery, registry: CollectorRegistry, *, host: str, port: int
) -> str:
    """Serve ``registry`` in ``nursery``; the line a server prints after its ready line."""
    bound = await nursery.start(functools.partial(serve_metrics, registry, host=host, port=port))
    return metrics_line(host, bound)
