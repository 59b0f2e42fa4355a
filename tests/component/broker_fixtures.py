"""A NameServer and a Broker in this Trio process, and a client that speaks the wire to them.

Rules:
- Everything binds 127.0.0.1 port 0; the broker's store lives under the test's tmp_path with
  small CommitLog segments, and ``restart()`` serves a new Broker on the same store dir.
- Tests talk to the broker only through ``RemotingClient`` requests, as a RocketMQ client
  would (counters such as held pulls come from GET_BROKER_RUNTIME_INFO); of the server
  objects only the broker's address and the NameServer's invariant check are used.
- Every helper call has a deadline (``CALL_TIMEOUT_S``); ``wait_until`` polls a condition
  under ``trio.fail_after`` (a deadline, never a sleep standing in for synchronisation).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import trio

from broker.config import BrokerConfig
from broker.server import Broker
from namesrv.server import NameServer, NameServerConfig
from protocol.bodies import (
    BROADCASTING,
    CLUSTERING,
    ConsumerData,
    HeartbeatData,
    ProducerData,
    parse_subscription,
)
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder, encode_frame
from protocol.headers import (
    CreateTopicRequestHeader,
    GetRouteInfoRequestHeader,
    Header,
    PullMessageRequestHeader,
    SendMessageRequestHeader,
    SendMessageRequestHeaderV2,
)
from protocol.message import MessageRecord, iter_records, properties_to_string
from protocol.rpc import Handler, RemotingClient, open_client, split_address

#: Deadline of one request/response.
CALL_TIMEOUT_S = 5.0
#: Deadline of a whole test body (everything here is local and small).
TEST_DEADLINE_S = 30.0
#: 18 delay levels of one second each: delayed delivery and retries in about a second.
FAST_DELAY_LEVELS = " ".join(["1s"] * 18)
#: CommitLog segment size of test brokers: big enough for a 1 MiB body, small to roll.
SEGMENT_BYTES = 4 * 1024 * 1024

FLAG_COMMIT_OFFSET = 0x1
FLAG_SUSPEND = 0x2
FLAG_SUBSCRIPTION = 0x4

PERM_RW = PERM_READ | PERM_WRITE

#: Ext field names every PULL response must carry, whatever its code (wire.md §2.4).
PULL_OFFSET_FIELDS = ("suggestWhichBrokerId", "nextBeginOffset", "minOffset", "maxOffset")


def now_ms() -> int:
    return int(time.time() * 1000)


def expect(response: RemotingCommand, code: int) -> RemotingCommand:
    """Assert the response code, naming the remark when it is not the expected one."""
    assert response.code == code, (
        f"expected {ResponseCode(code).name}, got {response.code} ({response.remark})"
    )
    return response


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout_s: float = 5.0,
    poll_s: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s``."""
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


async def raw_exchange(addr: str, frame: bytes, *, answers: int = 1) -> list[RemotingCommand]:
    """Write raw bytes on a fresh TCP connection and read ``answers`` responses back.

    For what our own client would never send: JSON numbers in extFields, broken headers.
    Requests the broker pushes meanwhile (NOTIFY_CONSUMER_IDS_CHANGED) are skipped: with
    write combining they can share a read with the response.
    """
    host, port = split_address(addr)
    decoder = FrameDecoder()
    out: list[RemotingCommand] = []
    with trio.fail_after(CALL_TIMEOUT_S):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(frame)
            while len(out) < answers:
                data = await stream.receive_some(65536)
                if not data:
                    break
                commands = (RemotingCommand.from_frame(f) for f in decoder.feed(data))
                out.extend(c for c in commands if c.is_response)
    return out[:answers]


def json_frame(header: Mapping[str, Any], body: bytes = b"") -> bytes:
    """A JSON-header frame built from a raw header object (values as given, not coerced)."""
    return encode_frame(json.dumps(header).encode(), body)


T = TypeVar("T")


class Arrivals(Generic[T]):
    """Results that background tasks hand in; the test waits for a count under a deadline."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = trio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int, *, timeout_s: float) -> list[T]:
        """The items once there are ``count``; fails after ``timeout_s``."""
        try:
            with trio.fail_after(timeout_s):
                while len(self.items) < count:
                    await self._changed.wait()
        except trio.TooSlowError:
            raise AssertionError(
                f"{len(self.items)} of {count} results within {timeout_s} s"
            ) from None
        return self.items


@attrs.frozen(kw_only=True)
class Sent:
    """The response ext fields of a successful send."""

    msg_id: str
    queue_id: int
    queue_offset: int
    response: RemotingCommand


@attrs.frozen(kw_only=True)
class Pulled:
    """A PULL answer with its records decoded."""

    response: RemotingCommand
    records: tuple[MessageRecord, ...]

    @property
    def code(self) -> int:
        return self.response.code

    @property
    def next_begin_offset(self) -> int:
        return int(self.response.ext_fields["nextBeginOffset"])

    @property
    def min_offset(self) -> int:
        return int(self.response.ext_fields["minOffset"])

    @property
    def max_offset(self) -> int:
        return int(self.response.ext_fields["maxOffset"])


def send_header(
    topic: str,
    *,
    properties: Mapping[str, str] | None = None,
    queue_id: int = 0,
    producer_group: str = "PG",
    default_topic: str = "TBW102",
    default_topic_queue_nums: int = 4,
    reconsume_times: int | None = None,
    max_reconsume_times: int | None = None,
    batch: bool | None = None,
    flag: int = 0,
) -> SendMessageRequestHeader:
    return SendMessageRequestHeader(
        producer_group=producer_group,
        topic=topic,
        default_topic=default_topic,
        default_topic_queue_nums=default_topic_queue_nums,
        queue_id=queue_id,
        sys_flag=0,
        born_timestamp=now_ms(),
        flag=flag,
        properties=properties_to_string(properties) if properties else None,
        reconsume_times=reconsume_times,
        max_reconsume_times=max_reconsume_times,
        batch=batch,
    )


def message_properties(
    *,
    tags: str | None = None,
    keys: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    props: dict[str, str] = {}
    if tags is not None:
        props["TAGS"] = tags
    if keys is not None:
        props["KEYS"] = keys
    props.update(extra or {})
    return props


def heartbeat_body(
    client_id: str,
    *,
    group: str | None = None,
    topics: Mapping[str, str] | None = None,
    producer_group: str | None = None,
    broadcasting: bool = False,
) -> bytes:
    """A HEART_BEAT body like ali-ons sends: ``topics`` maps topic → subscription expression."""
    consumers: tuple[ConsumerData, ...] = ()
    if group is not None:
        subs = tuple(
            attrs.evolve(parse_subscription(expr, topic=topic), sub_version=now_ms())
            for topic, expr in (topics or {}).items()
        )
        consumers = (
            ConsumerData(
                group_name=group,
                message_model=BROADCASTING if broadcasting else CLUSTERING,
                subscription_data_set=subs,
            ),
        )
    producers = (ProducerData(group_name=producer_group),) if producer_group else ()
    data = HeartbeatData(
        client_id=client_id, producer_data_set=producers, consumer_data_set=consumers
    )
    return data.to_bytes()


class BrokerEnv:
    """A running NameServer + Broker and a client connected to both."""

    def __init__(
        self,
        nursery: trio.Nursery,
        client: RemotingClient,
        namesrv: NameServer,
        namesrv_addr: str,
        config: BrokerConfig,
    ) -> None:
        self.nursery = nursery
        self.client = client
        self.namesrv = namesrv
        self.namesrv_addr = namesrv_addr
        self.config = config
        self.broker: Broker | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    # --- lifecycle -------------------------------------------------------------------

    @property
    def b(self) -> Broker:
        assert self.broker is not None, "the broker is not running"
        return self.broker

    @property
    def addr(self) -> str:
        return self.b.address

    async def start(self, **overrides: Any) -> Broker:
        """Serve a new Broker (same store dir unless overridden) until ``stop``."""
        assert self.broker is None, "stop the running broker first"
        self.config = attrs.evolve(self.config, **overrides)
        broker = Broker(self.config)
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    await broker.serve(task_status=task_status)
            finally:
                stopped.set()

        self._stopped = stopped
        with trio.fail_after(CALL_TIMEOUT_S * 2):
            await self.nursery.start(run)
        self.broker = broker
        return broker

    async def stop(self) -> None:
        """Cancel the broker and wait for its clean shutdown (offsets persisted, store closed)."""
        assert self._scope is not None and self._stopped is not None
        addr = self.addr
        self._scope.cancel()
        with trio.fail_after(CALL_TIMEOUT_S * 2):
            await self._stopped.wait()
        self.client.close_connection(addr)
        self.broker = None
        self._scope = None

    async def restart(self, **overrides: Any) -> Broker:
        await self.stop()
        return await self.start(**overrides)

    # --- raw requests ----------------------------------------------------------------

    async def call(
        self,
        code: int,
        header: Header | Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        client: RemotingClient | None = None,
        addr: str | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> RemotingCommand:
        """One request to the broker (or ``addr``); returns the response, whatever its code."""
        if header is None:
            ext: Mapping[str, str] = {}
        elif isinstance(header, Header):
            ext = header.to_ext_fields()
        else:
            ext = header
        request = RemotingCommand.request(code, ext, body)
        with trio.fail_after(timeout_s + 1.0):
            return await (client or self.client).call(
                addr or self.addr, request, timeout_s=timeout_s
            )

    # --- topics and routes -----------------------------------------------------------

    async def create_topic(
        self, topic: str, queues: int = 4, *, perm: int = PERM_RW, order: bool = False
    ) -> None:
        header = CreateTopicRequestHeader(
            topic=topic,
            default_topic="TBW102",
            read_queue_nums=queues,
            write_queue_nums=queues,
            perm=perm,
            topic_filter_type="SINGLE_TAG",
            order=order,
        )
        expect(await self.call(RequestCode.UPDATE_AND_CREATE_TOPIC, header), ResponseCode.SUCCESS)

    async def route(self, topic: str) -> dict[str, Any] | None:
        """The NameServer's route JSON of ``topic``, None on TOPIC_NOT_EXIST."""
        response = await self.call(
            RequestCode.GET_ROUTEINFO_BY_TOPIC,
            GetRouteInfoRequestHeader(topic=topic),
            addr=self.namesrv_addr,
        )
        if response.code == ResponseCode.TOPIC_NOT_EXIST:
            return None
        expect(response, ResponseCode.SUCCESS)
        route: dict[str, Any] = json.loads(response.body)
        return route

    async def wait_route(self, topic: str, *, queues: int | None = None) -> dict[str, Any]:
        """Wait until the NameServer routes ``topic`` to this broker (with ``queues`` queues)."""
        found: dict[str, Any] = {}

        async def routed() -> bool:
            route = await self.route(topic)
            if route is None:
                return False
            for qd in route["queueDatas"]:
                if qd["brokerName"] == self.config.broker_name and (
                    queues is None or qd["writeQueueNums"] == queues
                ):
                    found.update(route)
                    return True
            return False

        await wait_until(routed, what=f"route of {topic} on the NameServer")
        return found

    # --- send ------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        body: bytes = b"hello",
        *,
        tags: str | None = None,
        keys: str | None = None,
        properties: Mapping[str, str] | None = None,
        queue_id: int = 0,
        v1: bool = False,
        client: RemotingClient | None = None,
        **header_fields: Any,
    ) -> RemotingCommand:
        """SEND_MESSAGE_V2 (or V1) of one message; the raw response."""
        props = message_properties(tags=tags, keys=keys, extra=properties)
        header = send_header(topic, properties=props, queue_id=queue_id, **header_fields)
        if v1:
            return await self.call(RequestCode.SEND_MESSAGE, header, body, client=client)
        v2 = SendMessageRequestHeaderV2.from_v1(header)
        return await self.call(RequestCode.SEND_MESSAGE_V2, v2, body, client=client)

    async def send_ok(self, topic: str, body: bytes = b"hello", **kwargs: Any) -> Sent:
        response = expect(await self.send(topic, body, **kwargs), ResponseCode.SUCCESS)
        ext = response.ext_fields
        return Sent(
            msg_id=ext["msgId"],
            queue_id=int(ext["queueId"]),
            queue_offset=int(ext["queueOffset"]),
            response=response,
        )

    # --- pull ------------------------------------------------------------------------

    async def pull(
        self,
        topic: str,
        queue_id: int = 0,
        offset: int = 0,
        *,
        group: str = "CG",
        subscription: str | None = "*",
        max_nums: int = 32,
        sys_flag: int | None = None,
        suspend_ms: int = 0,
        commit_offset: int = 0,
        client: RemotingClient | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
        expression_type: str = "TAG",
    ) -> Pulled:
        flag = sys_flag
        if flag is None:
            flag = FLAG_SUBSCRIPTION if subscription is not None else 0
            if suspend_ms:
                flag |= FLAG_SUSPEND
        header = PullMessageRequestHeader(
            consumer_group=group,
            topic=topic,
            queue_id=queue_id,
            queue_offset=offset,
            max_msg_nums=max_nums,
            sys_flag=flag,
            commit_offset=commit_offset,
            suspend_timeout_millis=suspend_ms,
            sub_version=now_ms(),
            subscription=subscription,
            expression_type=expression_type if subscription is not None else None,
        )
        response = await self.call(
            RequestCode.PULL_MESSAGE, header, client=client, timeout_s=timeout_s
        )
        for name in PULL_OFFSET_FIELDS:
            assert name in response.ext_fields, (name, response.code, response.ext_fields)
        records = tuple(iter_records(response.body)) if response.body else ()
        return Pulled(response=response, records=records)

    async def pull_all(self, topic: str, queue_id: int = 0, **kwargs: Any) -> list[MessageRecord]:
        """Every message of a queue from offset 0 (FOUND pages until PULL_NOT_FOUND)."""
        out: list[MessageRecord] = []
        offset = 0
        for _ in range(1000):
            pulled = await self.pull(topic, queue_id, offset, **kwargs)
            if pulled.code != ResponseCode.SUCCESS:
                assert pulled.code == ResponseCode.PULL_NOT_FOUND, (
                    pulled.code,
                    pulled.response.remark,
                )
                return out
            out.extend(pulled.records)
            offset = pulled.next_begin_offset
        raise AssertionError("queue never ended")

    # --- clients ---------------------------------------------------------------------

    async def heartbeat(
        self,
        client_id: str,
        *,
        group: str | None = None,
        topics: Mapping[str, str] | None = None,
        producer_group: str | None = None,
        client: RemotingClient | None = None,
        broadcasting: bool = False,
    ) -> RemotingCommand:
        body = heartbeat_body(
            client_id,
            group=group,
            topics=topics,
            producer_group=producer_group,
            broadcasting=broadcasting,
        )
        return expect(
            await self.call(RequestCode.HEART_BEAT, None, body, client=client),
            ResponseCode.SUCCESS,
        )

    async def runtime_info(self) -> dict[str, str]:
        response = expect(
            await self.call(RequestCode.GET_BROKER_RUNTIME_INFO), ResponseCode.SUCCESS
        )
        table: dict[str, str] = json.loads(response.body)["table"]
        return table


@asynccontextmanager
async def broker_env(
    tmp_path: Path,
    *,
    client_handlers: Mapping[int, Handler] | None = None,
    **overrides: Any,
) -> AsyncIterator[BrokerEnv]:
    """A NameServer and a Broker on port 0 with a store under ``tmp_path``, and a client.

    ``overrides`` are BrokerConfig fields (e.g. ``message_delay_level=FAST_DELAY_LEVELS``).
    """
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        namesrv = NameServer(NameServerConfig(port=0))
        with trio.fail_after(CALL_TIMEOUT_S):
            port = await nursery.start(namesrv.serve)
        namesrv_addr = f"127.0.0.1:{port}"
        config = BrokerConfig(
            namesrv_addrs=(namesrv_addr,),
            listen_port=0,
            store_dir=tmp_path / "store",
            commitlog_segment_bytes=SEGMENT_BYTES,
            min_free_disk_bytes=0,
        )
        config = attrs.evolve(config, **overrides)
        async with open_client(
            name="test-client", handlers=client_handlers, default_timeout_s=CALL_TIMEOUT_S
        ) as client:
            env = BrokerEnv(nursery, client, namesrv, namesrv_addr, config)
            await env.start()
            try:
                yield env
            except BaseException as exc:  # re-raised below, outside the nursery
                body_error = exc
            finally:
                with trio.CancelScope(shield=True):
                    if env.broker is not None:
                        await env.stop()
            namesrv.registry.check_invariants()
        nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
