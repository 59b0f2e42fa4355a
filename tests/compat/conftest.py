"""Fixtures for the ali-ons compatibility tests: a real NameServer + broker, and node drivers.

Rules:
- The servers are the real processes (``rmq namesrv --port 0``, ``rmq broker --port 0``)
  with a fresh store under ``tmp_path``; they are started and stopped by
  ``tests.support.processes`` (ready line, SIGTERM, bounded wait, SIGKILL).
- ali-ons runs unmodified in separate node processes (``alions_produce.js``,
  ``alions_consume.js``); each one is started under a deadline and killed by the test
  when the deadline passes or the test ends. They report facts as JSON lines on stdout.
- The test process only talks to the servers over the wire (topic creation, offset
  queries); it never reaches into server internals.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from client.admin import get_topic_route
from launcher.ready import BROKER_READY
from protocol.acl_client import open_client as open_signed_client
from protocol.acl_sign import Credentials
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import TopicNotExist
from protocol.headers import (
    CreateTopicRequestHeader,
    OffsetResponseHeader,
    QueryConsumerOffsetRequestHeader,
)
from protocol.rpc import RemotingClient
from tests.support.processes import (
    ManagedProcess,
    ProcessFailed,
    managed_process,
    namesrv_process,
    rmq_argv,
    run_command,
)

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")
ALIONS_PACKAGE = HERE / "node_modules" / "ali-ons" / "package.json"
PRODUCE_JS = HERE / "alions_produce.js"
CONSUME_JS = HERE / "alions_consume.js"

#: ali-ons' timers, shortened (its defaults: routes 30 s, heartbeat 30 s, offset commit 5 s,
#: rebalance 10 s). Route polling matters most: a consumer learns its ``%RETRY%`` topic's
#: route only on a poll after its first heartbeat made the broker create it.
FAST_TIMERS_MS = {
    "pollNameServer": 1000,
    "heartbeatBroker": 1000,
    "persistConsumerOffset": 500,
    "rebalance": 1000,
}

#: Delay level 3 is where a consumer's first retry waits (RocketMQ: 10 s); 2 s here, and
#: its neighbours far enough from it that a wrong level shows.
RETRY_DELAY_S = 2.0
MESSAGE_DELAY_LEVEL = "1s 1s 2s 10s 10s 10s 10s 10s 10s 10s 10s 20s 30s 1m 2m 5m 10m 1h"

#: One producer run (start-up, sends, close); generous for a slow 2-core machine.
PRODUCE_TIMEOUT_S = 30.0
#: How long a consumer may take to start (node, ali-ons' first route/heartbeat round).
CONSUMER_START_TIMEOUT_S = 20.0
#: How long a consumer may take to close (commit offsets, unregister) after SIGTERM.
CONSUMER_STOP_TIMEOUT_S = 10.0
#: How long the broker may take to show a commit ali-ons sent (oneway, every 500 ms).
COMMIT_TIMEOUT_S = 10.0

_ANY_LINE = re.compile("")
#: Server log lines that fail a test (the log format is ``time LEVEL [node] logger: text``).
_SERVER_ERROR = re.compile(r" (ERROR|CRITICAL) |^Traceback ")


# --- messages ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class OutMessage:
    """One message to send through ali-ons; ``tags=None`` is ali-ons' untagged form."""

    topic: str
    body: bytes
    tags: str | None = None
    keys: tuple[str, ...] = ()
    properties: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@attrs.frozen(kw_only=True)
class Sent:
    """A message and what ali-ons' ``send`` returned for it."""

    message: OutMessage
    msg_id: str
    queue_id: int
    queue_offset: int


# --- node driver processes ------------------------------------------------------------------


class DriverRun:
    """A running node driver: its JSON events on stdout, read as they come."""

    def __init__(self, name: str, proc: ManagedProcess) -> None:
        self.name = name
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._read = 0  # stdout lines parsed so far

    def _drain(self) -> None:
        out = self.proc.stdout
        lines = out.lines
        first = out.line_count - len(lines)
        for index in range(max(self._read, first), out.line_count):
            line = lines[index - first]
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                raise ProcessFailed(
                    self.proc.describe(f"{self.name}: stdout line is not JSON: {line!r}")
                ) from None
        self._read = out.line_count

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The events of one kind (``message``, ``pulled``, ``error``, ...) seen so far."""
        self._drain()
        return [e for e in self.events if e["event"] == kind]

    def messages(self, outcome: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.of("message") if outcome is None or m["outcome"] == outcome]

    async def wait_until(
        self, done: Callable[[DriverRun], bool], *, what: str, timeout_s: float
    ) -> None:
        """Wait until ``done(self)`` holds, reading events as they come; fail at the deadline."""
        with trio.move_on_after(timeout_s):
            while True:
                self._drain()
                if done(self):
                    return
                try:
                    await self.proc.stdout.wait_for(_ANY_LINE, after=self._read)
                except EOFError:
                    self._drain()
                    if done(self):
                        return
                    raise ProcessFailed(
                        self.proc.describe(f"{self.name} ended before {what}")
                    ) from None
        raise ProcessFailed(self.proc.describe(f"{self.name}: no {what} within {timeout_s} s"))

    async def wait_messages(self, count: int, *, outcome: str = "ok", timeout_s: float) -> None:
        await self.wait_until(
            lambda run: len(run.messages(outcome)) >= count,
            what=f"{count} {outcome!r} deliveries",
            timeout_s=timeout_s,
        )

    async def settle(self, quiet_s: float) -> None:
        """Let ``quiet_s`` pass so that a late extra delivery would still be seen."""
        await trio.sleep(quiet_s)
        self._drain()

    async def close(self) -> None:
        """SIGTERM: ali-ons ``close()`` commits offsets and unregisters; exit status 0."""
        status = await self.proc.stop(signal.SIGTERM, timeout_s=CONSUMER_STOP_TIMEOUT_S)
        self._drain()
        if status != 0 or not self.of("closed"):
            raise ProcessFailed(self.proc.describe(f"{self.name} did not close cleanly"))


# --- the servers ----------------------------------------------------------------------------


class AlionsCluster:
    """A live NameServer + broker pair and the ways the tests use them."""

    #: The broker's delay level 3 (a consumer's first retry).
    retry_delay_s = RETRY_DELAY_S

    def __init__(self, *, namesrv: str, broker: str, client: RemotingClient, workdir: Path) -> None:
        self.namesrv = namesrv
        self.broker = broker
        self.client = client
        self.workdir = workdir
        self._files = 0
        #: ACL: the account ali-ons drivers sign with (their accessKey/secretKey options).
        self.account: Credentials | None = None

    @staticmethod
    def message(
        *,
        topic: str,
        body: bytes,
        tags: str | None = None,
        keys: tuple[str, ...] = (),
        properties: Mapping[str, str] | None = None,
    ) -> OutMessage:
        """A message for ``produce`` (``tags=None``: ali-ons' untagged form)."""
        return OutMessage(topic=topic, body=body, tags=tags, keys=keys, properties=properties or {})

    def _file(self, stem: str, suffix: str) -> Path:
        self._files += 1
        return self.workdir / f"{self._files:03d}-{stem}{suffix}"

    def _spec(self, stem: str, spec: Mapping[str, Any]) -> Path:
        path = self._file(stem, ".json")
        account = {}
        if self.account is not None:
            account = {"accessKey": self.account.access_key, "secretKey": self.account.secret_key}
        path.write_text(
            json.dumps({"nameSrv": self.namesrv, "intervalsMs": FAST_TIMERS_MS, **account, **spec})
        )
        return path

    async def create_topic(self, topic: str, queues: int = 4) -> None:
        """UPDATE_AND_CREATE_TOPIC on the broker (as mqadmin updateTopic does), then wait
        until the NameServer routes it: ali-ons cannot send to a topic without a route."""
        header = CreateTopicRequestHeader(
            topic=topic,
            default_topic="TBW102",
            read_queue_nums=queues,
            write_queue_nums=queues,
            perm=PERM_READ | PERM_WRITE,
            topic_filter_type="SINGLE_TAG",
        )
        request = RemotingCommand.request(
            RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext_fields()
        )
        response = await self.client.call(self.broker, request)
        assert response.code == ResponseCode.SUCCESS, (response.code, response.remark)
        await self.wait_route(topic)

    async def wait_route(self, topic: str, timeout_s: float = 10.0) -> None:
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    await get_topic_route(self.client, [self.namesrv], topic)
                    return
                except TopicNotExist:
                    await trio.sleep(0.05)
        raise AssertionError(f"the NameServer has no route for {topic} after {timeout_s} s")

    async def has_route(self, topic: str) -> bool:
        try:
            await get_topic_route(self.client, [self.namesrv], topic)
        except TopicNotExist:
            return False
        return True

    async def produce(
        self, messages: Sequence[OutMessage], *, group: str = "PID_alions_compat"
    ) -> list[Sent]:
        """Send ``messages`` in order with one ali-ons Producer process; what it got back."""
        specs = []
        for message in messages:
            body_file = self._file("body", ".bin")
            body_file.write_bytes(message.body)
            specs.append(
                {
                    "topic": message.topic,
                    "tags": message.tags,
                    "keys": list(message.keys),
                    "properties": dict(message.properties),
                    "bodyFile": str(body_file),
                }
            )
        spec = self._spec("produce", {"producerGroup": group, "messages": specs})
        assert NODE is not None
        done = await run_command(
            [NODE, str(PRODUCE_JS), str(spec)], timeout_s=PRODUCE_TIMEOUT_S, cwd=HERE
        )
        assert done.returncode == 0, done.describe()
        events = [json.loads(line) for line in done.stdout.splitlines()]
        sent = [e for e in events if e["event"] == "sent"]
        assert [e["index"] for e in sent] == list(range(len(messages))), done.describe()
        assert events[-1] == {"event": "done"}, done.describe()
        assert all(e["sendStatus"] == "SEND_OK" for e in sent), done.describe()
        return [
            Sent(
                message=message,
                msg_id=e["msgId"],
                queue_id=int(e["queueId"]),
                queue_offset=int(e["queueOffset"]),
            )
            for message, e in zip(messages, sent, strict=True)
        ]

    @asynccontextmanager
    async def consumer(
        self,
        group: str,
        subscriptions: Iterable[tuple[str, str]],
        *,
        consume_from: str = "CONSUME_FROM_FIRST_OFFSET",
        broadcast: bool = False,
        fail_first_delivery: bool = False,
        instance_name: str | None = None,
    ) -> AsyncIterator[DriverRun]:
        """An ali-ons push consumer in its own node process, started and ready.

        It consumes until ``DriverRun.close`` (or the end of the block, which stops it
        the same way and kills it if it does not exit in time).
        """
        spec: dict[str, Any] = {
            "consumerGroup": group,
            "subscriptions": [{"topic": t, "expression": e} for t, e in subscriptions],
            "consumeFromWhere": consume_from,
            "broadcast": broadcast,
            "failFirstDelivery": fail_first_delivery,
        }
        if instance_name is not None:
            spec["instanceName"] = instance_name
        path = self._spec(f"consume-{group}", spec)
        assert NODE is not None
        name = f"ali-ons consumer {group}" + (f"/{instance_name}" if instance_name else "")
        async with managed_process(
            [NODE, str(CONSUME_JS), str(path)],
            name=name,
            ready=re.compile(r'^\{"event":"ready"\}$'),
            ready_stream="stdout",
            start_timeout_s=CONSUMER_START_TIMEOUT_S,
            stop_timeout_s=CONSUMER_STOP_TIMEOUT_S,
            cwd=HERE,
        ) as proc:
            yield DriverRun(name, proc)

    @staticmethod
    async def wait_until_all(
        runs: Sequence[DriverRun],
        done: Callable[[], bool],
        *,
        what: str,
        timeout_s: float,
    ) -> None:
        """Wait until ``done()`` holds for a condition over several drivers' events."""
        with trio.move_on_after(timeout_s):
            while True:  # polled: the events come from several processes' stdout
                if done():
                    return
                for run in runs:
                    if run.proc.returncode is not None:
                        raise ProcessFailed(run.proc.describe(f"{run.name} ended before {what}"))
                await trio.sleep(0.05)
        details = "\n".join(run.proc.describe(run.name) for run in runs)
        raise ProcessFailed(f"no {what} within {timeout_s} s\n{details}")

    async def committed_offsets(self, group: str, topic: str, queues: int) -> dict[int, int]:
        """The group's offsets the broker has stored, by queue (queues without one omitted).

        Asks with ``setZeroIfNotFound=false`` so that "no offset" is not answered as 0.
        """
        stored: dict[int, int] = {}
        for queue_id in range(queues):
            header = QueryConsumerOffsetRequestHeader(
                consumer_group=group, topic=topic, queue_id=queue_id, set_zero_if_not_found=False
            )
            request = RemotingCommand.request(
                RequestCode.QUERY_CONSUMER_OFFSET, header.to_ext_fields()
            )
            response = await self.client.call(self.broker, request)
            if response.code == ResponseCode.QUERY_NOT_FOUND:
                continue
            assert response.code == ResponseCode.SUCCESS, (response.code, response.remark)
            stored[queue_id] = OffsetResponseHeader.from_ext_fields(response.ext_fields).offset
        return stored

    async def wait_committed(
        self, group: str, topic: str, expected: Mapping[int, int], queues: int = 4
    ) -> None:
        """Wait until the broker stores exactly ``expected`` (queue → offset) for the group."""
        stored: dict[int, int] = {}
        with trio.move_on_after(COMMIT_TIMEOUT_S):
            while True:  # polled: ali-ons commits oneway, nothing to wait on
                stored = await self.committed_offsets(group, topic, queues)
                if stored == expected:
                    return
                await trio.sleep(0.1)
        raise AssertionError(
            f"{group} on {topic}: broker stores offsets {stored}, expected {dict(expected)} "
            f"(waited {COMMIT_TIMEOUT_S} s)"
        )


@pytest.fixture
def alions_installed() -> None:
    """Skip (with the reason) when node or ali-ons is missing.

    A plain fixture: pytest-trio runs async ones inside Trio, and a skip raised there loses
    its reason in the report.
    """
    if NODE is None:
        pytest.skip("node (Node.js) is not on PATH")
    if not ALIONS_PACKAGE.is_file():
        pytest.skip("ali-ons is not installed: run `npm ci` in tests/compat (.ci/run does)")


@pytest.fixture
async def alions(alions_installed: None, tmp_path: Path) -> AsyncIterator[AlionsCluster]:
    """``rmq namesrv`` + ``rmq broker`` (fresh store, short delay levels) as real processes."""
    async with alions_cluster(tmp_path) as cluster:
        yield cluster


@asynccontextmanager
async def alions_cluster(
    tmp_path: Path, *, acl_file: Path | None = None, admin: Credentials | None = None
) -> AsyncIterator[AlionsCluster]:
    """The servers of ``alions``; with ``acl_file`` both run with ACL on, and the broker
    and the test's own client sign as ``admin``."""
    config = tmp_path / "broker.toml"
    config.write_text(f'messageDelayLevel = "{MESSAGE_DELAY_LEVEL}"\n')
    namesrv_args: list[str] = []
    if acl_file is not None:
        assert admin is not None
        namesrv_args = ["--acl-enable", "--acl-file", str(acl_file)]
        with config.open("a") as f:
            f.write(f'aclEnable = true\naclFilePath = "{acl_file}"\n')
            f.write(f'accessKey = "{admin.access_key}"\nsecretKey = "{admin.secret_key}"\n')
    workdir = tmp_path / "alions"
    workdir.mkdir()
    async with namesrv_process(*namesrv_args) as namesrv:
        argv = rmq_argv(
            "broker",
            "-n",
            namesrv.address,
            "--port",
            "0",
            "--dir",
            str(tmp_path / "store"),
            "--config",
            str(config),
        )
        async with (
            managed_process(argv, name="broker", ready=BROKER_READY) as broker,
            open_signed_client(
                name="alions-test", default_timeout_s=5.0, credentials=admin
            ) as client,
        ):
            yield AlionsCluster(
                namesrv=namesrv.address, broker=broker.address, client=client, workdir=workdir
            )
    # Whatever ali-ons did, the servers stayed healthy: no error logged, clean SIGTERM exit.
    for proc in (broker, namesrv):
        errors = [line for line in proc.stderr.lines if _SERVER_ERROR.search(line)]
        assert not errors and proc.returncode == 0 and not proc.killed, proc.describe(
            f"{proc.name} logged errors or did not stop cleanly"
        )
