"""grpcio's asyncio server on its own thread, bridged to the Trio loop without blocking it.

Rules:
- grpc.aio runs on one thread with its own asyncio loop (``GrpcThread``); the Trio loop
  never waits on it except at start (the bound port) and stop (bounded by
  ``stop_timeout_s``, then the thread is left to finish as a daemon).
- A handler on the asyncio loop hands its work to Trio with ``TrioPortal.run``: the
  coroutine is started in the proxy's Trio nursery (``TrioToken.run_sync_soon``) and its
  outcome comes back through ``loop.call_soon_threadsafe``. No thread blocks per request,
  so thousands of long-polling receives and telemetry streams cost no threads.
- In-flight bridged calls are capped (``max_in_flight``): past it a call fails at once
  with ``PortalBusy`` (the service answers TOO_MANY_REQUESTS), never queues unbounded.
- A gRPC call the client cancels (or whose deadline passes) cancels its Trio task.
- The only module of the proxy that touches threads or asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import outcome
import trio

from protocol.errors import SystemBusy

log = logging.getLogger(__name__)

T = TypeVar("T")


class PortalBusy(SystemBusy):
    """Too many gRPC requests are being served at once."""


class PortalClosed(RuntimeError):
    """The Trio side stopped."""


class TrioPortal:
    """Runs coroutine functions in a Trio nursery on behalf of asyncio code."""

    def __init__(
        self, token: trio.lowlevel.TrioToken, nursery: trio.Nursery, *, max_in_flight: int
    ) -> None:
        self._token = token
        self._nursery = nursery
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the Trio loop; call from the asyncio loop."""
        if self.in_flight >= self.max_in_flight:
            raise PortalBusy(f"{self.in_flight} requests in flight; retry later")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
        scope = trio.CancelScope()

        def deliver(result: outcome.Outcome[T]) -> None:
            if not done.done():
                done.set_result(result)

        async def task() -> None:
            result: outcome.Outcome[T] = outcome.Error(PortalClosed("the proxy is stopping"))
            try:
                with scope:
                    try:
                        result = outcome.Value(await fn(*args))
                    except Exception as exc:  # handed to the gRPC side, which answers it
                        result = outcome.Error(exc)
            finally:
                # A closed asyncio loop raises RuntimeError: nobody waits any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(deliver, result)

        self.in_flight += 1
        try:
            try:
                self._token.run_sync_soon(self._nursery.start_soon, task)
            except trio.RunFinishedError:
                raise PortalClosed("the proxy is stopping") from None
            try:
                result = await done
            except asyncio.CancelledError:
                with contextlib.suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(scope.cancel)
                raise
        finally:
            self.in_flight -= 1
        return result.unwrap()


class GrpcThread:
    """A grpc.aio server with ``register`` applied, served on its own thread (TLS only
    when ``credentials`` are given; grpc core ``options`` such as its connection limits)."""

    def __init__(
        self,
        register: Callable[[grpc.aio.Server], None],
        *,
        host: str,
        port: int,
        credentials: grpc.ServerCredentials | None = None,
        options: Sequence[tuple[str, int]] = (),
        stop_timeout_s: float = 5.0,
    ) -> None:
        self._register = register
        self._options = list(options)
        self._host = host
        self._port = port
        self._credentials = credentials
        self.stop_timeout_s = stop_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind and serve; report the bound port; stop the server when cancelled."""
        token = trio.lowlevel.current_trio_token()
        bound = trio.Event()
        report: dict[str, Any] = {}

        def started(port: int | None, error: BaseException | None) -> None:
            report.update(port=port, error=error)
            bound.set()

        def main() -> None:
            with contextlib.suppress(trio.RunFinishedError):
                asyncio.run(self._amain(lambda p, e: token.run_sync_soon(started, p, e)))

        thread = threading.Thread(target=main, name="grpc-proxy", daemon=True)
        thread.start()
        try:
            await bound.wait()
            if report["error"] is not None:
                raise OSError(f"cannot serve gRPC on {self._host}:{self._port}: {report['error']}")
            task_status.started(report["port"])
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                loop, stop = self._loop, self._stop
                if loop is not None and stop is not None:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(stop.set)
                with trio.move_on_after(self.stop_timeout_s):
                    await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)

    async def _amain(self, started: Callable[[int | None, BaseException | None], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server(options=self._options)
        self._register(server)
        try:
            address = f"{self._host}:{self._port}"
            if self._credentials is not None:
                port = server.add_secure_port(address, self._credentials)
            else:
                port = server.add_insecure_port(address)
            await server.start()
        except Exception as exc:  # bind failures come as RuntimeError from grpc
            started(None, exc)
            return
        started(port, None)
        try:
            await self._stop.wait()
        finally:
            await server.stop(grace=1.0)
