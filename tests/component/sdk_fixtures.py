"""A NameServer and one or more Brokers in this Trio process, for SDK tests.

Rules:
- Everything binds 127.0.0.1 port 0; each broker's store lives under the test's tmp_path.
- Servers are started the way the CLI starts them: ``NameServer.serve`` and
  ``Broker(BrokerConfig(...)).serve`` in a nursery, each reporting its port through
  ``task_status``. A broker can be stopped (cancelled, clean shutdown) and started again
  on the same store.
- The SDK under test only ever talks to them over the wire. Test set-up (creating topics)
  also goes over the wire, as ``mqadmin updateTopic`` would.
- Every helper waits under a deadline; ``wait_until`` polls a condition (never a bare sleep
  standing in for synchronisation).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from broker.config import BrokerConfig
from broker.server import Broker
from namesrv.server import NameServer, NameServerConfig
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import CreateTopicRequestHeader, GetRouteInfoRequestHeader
from protocol.rpc import RemotingClient, open_client

#: Deadline of one set-up request.
CALL_TIMEOUT_S = 5.0
#: 18 delay levels of one second: retries come back in about a second.
FAST_DELAY_LEVELS = " ".join(["1s"] * 18)
#: Small CommitLog segments keep the tmp stores small.
SEGMENT_BYTES = 8 * 1024 * 1024


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout_s: float = 10.0,
    poll_s: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout_s``."""
    try:
        with trio.fail_after(timeout_s):
            while True:
                result = condition()
                if not isinstance(result, bool):
                    result = await result
                if result:
                    return
                await trio.sleep(poll_s)
    except trio.TooSlowError:
        raise AssertionError(f"{what} did not hold within {timeout_s} s") from None


@attrs.define
class RunningBroker:
    config: BrokerConfig
    broker: Broker
    scope: trio.CancelScope
    stopped: trio.Event

    @property
    def addr(self) -> str:
        return self.broker.address


class SdkCluster:
    """A NameServer and brokers by name; ``client`` is a raw remoting client for set-up."""

    def __init__(
        self,
        nursery: trio.Nursery,
        tmp_path: Path,
        namesrv: str,
        client: RemotingClient,
        overrides: dict[str, Any],
    ) -> None:
        self.nursery = nursery
        self.tmp_path = tmp_path
        self.namesrv = namesrv
        self.client = client
        self.overrides = overrides
        self.brokers: dict[str, RunningBroker] = {}
        self._configs: dict[str, BrokerConfig] = {}

    def addr(self, name: str) -> str:
        return self.brokers[name].addr

    def broker(self, name: str) -> Broker:
        return self.brokers[name].broker

    async def start_broker(self, name: str, **overrides: Any) -> Broker:
        """Serve broker ``name`` (on its previous store, if it ran before) until stopped."""
        assert name not in self.brokers, f"{name} is running"
        config = self._configs.get(name)
        if config is None:
            config = BrokerConfig(
                broker_name=name,
                namesrv_addrs=(self.namesrv,),
                listen_port=0,
                ha_port=0,
                store_dir=self.tmp_path / name,
                commitlog_segment_bytes=SEGMENT_BYTES,
                message_delay_level=FAST_DELAY_LEVELS,
            )
            config = attrs.evolve(config, **self.overrides)
        config = attrs.evolve(config, **overrides)
        self._configs[name] = config
        broker = Broker(config)
        stopped = trio.Event()
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await broker.serve(task_status=task_status)
            finally:
                stopped.set()

        with trio.fail_after(CALL_TIMEOUT_S * 2):
            await self.nursery.start(run)
        self.brokers[name] = RunningBroker(
            config=config, broker=broker, scope=scope, stopped=stopped
        )
        return broker

    async def stop_broker(self, name: str) -> None:
        """Cancel the broker and wait for its clean shutdown."""
        running = self.brokers.pop(name)
        running.scope.cancel()
        with trio.fail_after(CALL_TIMEOUT_S * 2):
            await running.stopped.wait()
        self.client.close_connection(running.addr)

    async def call(
        self, addr: str, code: int, ext: dict[str, str], body: bytes = b""
    ) -> RemotingCommand:
        request = RemotingCommand.request(code, ext, body)
        with trio.fail_after(CALL_TIMEOUT_S + 1):
            return await self.client.call(addr, request, timeout_s=CALL_TIMEOUT_S)

    async def create_topic(
        self, topic: str, queues: int = 4, *, brokers: list[str] | None = None
    ) -> None:
        """UPDATE_AND_CREATE_TOPIC on each broker, then wait until the NameServer routes it."""
        names = brokers or sorted(self.brokers)
        header = CreateTopicRequestHeader(
            topic=topic,
            default_topic="TBW102",
            read_queue_nums=queues,
            write_queue_nums=queues,
            perm=PERM_READ | PERM_WRITE,
            topic_filter_type="SINGLE_TAG",
        )
        for name in names:
            response = await self.call(
                self.addr(name), RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext_fields()
            )
            assert response.code == ResponseCode.SUCCESS, response.remark
        await self.wait_route(topic, {name: queues for name in names})

    async def route(self, topic: str) -> dict[str, Any] | None:
        header = GetRouteInfoRequestHeader(topic=topic)
        response = await self.call(
            self.namesrv, RequestCode.GET_ROUTEINFO_BY_TOPIC, header.to_ext_fields()
        )
        if response.code == ResponseCode.TOPIC_NOT_EXIST:
            return None
        assert response.code == ResponseCode.SUCCESS, response.remark
        route: dict[str, Any] = json.loads(response.body)
        return route

    async def wait_route(self, topic: str, queues_by_broker: dict[str, int]) -> None:
        """Until the route of ``topic`` has exactly these brokers with these queue counts."""

        async def routed() -> bool:
            route = await self.route(topic)
            if route is None:
                return False
            found = {qd["brokerName"]: qd["writeQueueNums"] for qd in route["queueDatas"]}
            return found == queues_by_broker

        await wait_until(routed, what=f"route of {topic} = {queues_by_broker}")


@asynccontextmanager
async def sdk_cluster(
    tmp_path: Path, *, brokers: tuple[str, ...] = ("broker-a",), **overrides: Any
) -> AsyncIterator[SdkCluster]:
    """A NameServer and ``brokers`` (BrokerConfig ``overrides`` apply to each)."""
    async with trio.open_nursery() as nursery:
        namesrv = NameServer(NameServerConfig(port=0))
        with trio.fail_after(CALL_TIMEOUT_S):
            port = await nursery.start(namesrv.serve)
        async with open_client(name="sdk-test-admin", default_timeout_s=CALL_TIMEOUT_S) as client:
            cluster = SdkCluster(nursery, tmp_path, f"127.0.0.1:{port}", client, overrides)
            for name in brokers:
                await cluster.start_broker(name)
            try:
                yield cluster
            finally:
                with trio.CancelScope(shield=True):
                    for name in list(cluster.brokers):
                        await cluster.stop_broker(name)
        nursery.cancel_scope.cancel()
