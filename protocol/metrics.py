"""What every server's Prometheus registry shares: a fresh registry, and request counting.

Rules:
- Each server process has its own ``CollectorRegistry`` (never the library's global one),
  built by ``new_registry``; its metrics module (``namesrv/metrics.py``,
  ``controller/metrics.py``, ``broker/metrics.py``) registers into it and the CLI serves it
  (``cli/metrics_http.py``). ``*_created`` series are off: RocketMQ exports none.
- Requests are counted by wrapping the remoting handlers once, at construction
  (``RequestMetrics.instrument``): ``rocketmq_request_total`` and
  ``rocketmq_request_latency`` (microseconds, as RocketMQ's controller measures it) with
  RocketMQ 5's labels ``request_type`` (the request code's name in lower case, e.g.
  ``controller_elect_master``) and ``request_handle_status`` (``success``, ``failed``,
  ``timeout``). A handler's error is counted and re-raised unchanged.
- The clock comes in as an argument (``now_s``), so timers under ``autojump_clock`` agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import Counter, Histogram, disable_created_metrics
from prometheus_client.registry import CollectorRegistry

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import RemotingTimeout
from protocol.rpc import Connection, Handler, LaterAnswer

SUCCESS = "success"
FAILED = "failed"
TIMEOUT = "timeout"
#: Request latency buckets in microseconds (100 us .. 5 s).
LATENCY_BUCKETS_US = (
    100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0, 500_000.0,
    1_000_000.0, 5_000_000.0,
)  # fmt: skip


def new_registry() -> CollectorRegistry:
    """A process's own registry, with RocketMQ's series only (no ``*_created``)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return CollectorRegistry(auto_describe=True)


def request_type(code: int) -> str:
    """RocketMQ's ``request_type`` label: the code's name in lower case."""
    try:
        return RequestCode(code).name.lower()
    except ValueError:
        return f"code_{code}"


class RequestMetrics:
    """``rocketmq_request_total`` and ``rocketmq_request_latency`` of one server."""

    def __init__(self, registry: CollectorRegistry, now_s: Callable[[], float]) -> None:
        labels = ["request_type", "request_handle_status"]
        self._now_s = now_s
        self.total = Counter(
            "rocketmq_request", "Requests handled, by type and outcome.", labels, registry=registry
        )
        self.latency = Histogram(
            "rocketmq_request_latency",
            "Time to handle a request, in microseconds.",
            labels,
            buckets=LATENCY_BUCKETS_US,
            registry=registry,
        )

    def observe(self, code: int, status: str, elapsed_s: float) -> None:
        kind = request_type(code)
        self.total.labels(kind, status).inc()
        self.latency.labels(kind, status).observe(elapsed_s * 1e6)

    def instrument(self, handlers: Mapping[int, Handler]) -> dict[int, Handler]:
        """``handlers`` with each one counted and timed."""
        return {code: self._wrap(code, handler) for code, handler in handlers.items()}

    def _wrap(self, code: int, handler: Handler) -> Handler:
        async def counted(
            request: RemotingCommand, conn: Connection
        ) -> RemotingCommand | LaterAnswer | None:
            start = self._now_s()
            status: str | None = FAILED
            try:
                response = await handler(request, conn)
                if type(response) is LaterAnswer:  # counted when given
                    status = None
                    response.watch(lambda answer: observe_answer(answer, start))
                    return response
                ok = response is None or response.code == ResponseCode.SUCCESS  # type: ignore[union-attr]
                status = SUCCESS if ok else FAILED
                return response
            except RemotingTimeout:
                status = TIMEOUT
                raise
            finally:
                if status is not None:
                    self.observe(code, status, self._now_s() - start)

        def observe_answer(answer: RemotingCommand, start: float) -> None:
            status = SUCCESS if answer.code == ResponseCode.SUCCESS else FAILED
            self.observe(code, status, self._now_s() - start)

        return counted
