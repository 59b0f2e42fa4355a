"""Admin operations against NameServers and brokers (the SDK side of ``rmq admin``).

Use: ``async with open_admin("127.0.0.1:9876") as admin: await admin.topic_status("T")``.

Rules:
- Every request runs under the admin's ``timeout_s``; a NameServer list
  (``"a:9876;b:9876"``) is tried in order until one answers, as RocketMQ's clients do.
  Requests to several brokers run concurrently, each under its own deadline.
- Every error raised is a ``RocketError`` whose message names what failed and what to do.
  Server answers keep their ``ServerError`` class (TOPIC_NOT_EXIST stays ``TopicNotExist``)
  with the broker and a hint added to the remark; usage problems are ``AdminError``.
- Broker choice follows mqadmin: changes (topics, groups, offsets) go to the masters of a
  cluster or to one broker address; reads go to each broker group's master, or to a slave
  while the group has none.
- ``reset_offset_by_time`` writes committed offsets on the brokers. Our broker does not
  push RESET_CONSUMER_CLIENT_OFFSET to live consumers yet, so a running consumer would
  overwrite the reset with its in-memory offsets: stop the group's consumers first (the
  call refuses while any is online, unless ``force=True``).
- The module functions ``parse_namesrv_list``, ``call_any``, ``get_cluster_info`` and
  ``get_topic_route`` are building blocks for callers that hold their own client.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from client.message import Message, ReceivedMessage, SendResult
from protocol.bodies import (
    BROADCASTING,
    ConsumerConnection,
    SubscriptionGroupConfig,
    SubscriptionGroupWrapper,
    TopicList,
)
from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.controller_bodies import (
    BrokerReplicasInfo,
    ElectMasterResponseBody,
    EpochEntryCache,
    broker_names_body,
)
from protocol.errors import (
    MalformedBody,
    NetworkError,
    RemotingTimeout,
    RequestCodeNotSupported,
    RocketError,
    ServerError,
    SubscriptionGroupNotExist,
    TopicNotExist,
    error_for_response,
)
from protocol.headers import (
    CleanControllerBrokerDataRequestHeader,
    CreateTopicRequestHeader,
    DeleteSubscriptionGroupRequestHeader,
    DeleteTopicFromNamesrvRequestHeader,
    DeleteTopicRequestHeader,
    ElectMasterRequestHeader,
    ElectMasterResponseHeader,
    GetConsumeStatsRequestHeader,
    GetMaxOffsetRequestHeader,
    GetMetaDataResponseHeader,
    GetMinOffsetRequestHeader,
    GetRouteInfoRequestHeader,
    GetTopicsByClusterRequestHeader,
    GetTopicStatsInfoRequestHeader,
    OffsetResponseHeader,
    PullMessageRequestHeader,
    PullMessageResponseHeader,
    QueryConsumerOffsetRequestHeader,
    QueryMessageRequestHeader,
    SearchOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader,
    ViewMessageRequestHeader,
)
from protocol.message import PROPERTY_UNIQ_KEY, iter_records, parse_offset_msg_id
from protocol.route import (
    BrokerData,
    ClusterInfo,
    MessageQueue,
    TopicRouteData,
    loads_fastjson,
    master_address,
    subscribe_queues,
)
from protocol.rpc import RemotingClient, check_success, open_client, split_address

R = TypeVar("R")
K = TypeVar("K")

#: mqadmin's defaults for updateTopic (-r/-w 8, -p 6).
DEFAULT_QUEUE_NUMS = 8
DEFAULT_PERM = PERM_READ | PERM_WRITE
#: The consumer group mqadmin pulls with (MixAll.TOOLS_CONSUMER_GROUP).
TOOLS_CONSUMER_GROUP = "TOOLS_CONSUMER"
#: The producer group ``send`` uses.
TOOLS_PRODUCER_GROUP = "TOOLS_PRODUCER"
#: queryMsgByKey's default maxNum (mqadmin -m).
DEFAULT_QUERY_MAX_NUM = 64
#: QUERY_MESSAGE by UNIQ_KEY: the broker caps maxNum at defaultQueryMaxNum (32).
UNIQ_KEY_QUERY_MAX_NUM = 32
#: Latest timestamp a query may name (Java's Long.MAX_VALUE).
MAX_TIMESTAMP_MS = 2**63 - 1
#: The template topic updateTopic names as ``defaultTopic``.
TEMPLATE_TOPIC = "TBW102"
#: consumeMessage's default count (mqadmin -c).
DEFAULT_CONSUME_COUNT = 128
#: Messages one PULL may return.
PULL_BATCH = 32

_TOPIC_NAME = re.compile(r"[%|a-zA-Z0-9_-]{1,127}")
_SUBSCRIPTION_ALL = 0x4  # PullSysFlag: use the header's subscription ("*")
_DATE_FORMAT = re.compile(r"(\d{4})-(\d{2})-(\d{2})#(\d{2}):(\d{2}):(\d{2}):(\d{3})")
#: PULL response code → Java's PullStatus name.
_PULL_STATUS: dict[int, str] = {
    ResponseCode.SUCCESS: "FOUND",
    ResponseCode.PULL_NOT_FOUND: "NO_NEW_MSG",
    ResponseCode.PULL_RETRY_IMMEDIATELY: "NO_MATCHED_MSG",
    ResponseCode.PULL_OFFSET_MOVED: "OFFSET_ILLEGAL",
}


class AdminError(RocketError):
    """An admin request cannot be carried out as asked; the message says what to do."""


class MessageNotFound(AdminError):
    """No message matches the key, id or queue offset asked for."""


# --- building blocks (kept for callers with their own client) ----------------------------


def parse_namesrv_list(text: str) -> list[str]:
    """``"a:1;b:2"`` → ``["a:1", "b:2"]`` (also accepts commas); raises ValueError if empty."""
    addrs = [part.strip() for part in text.replace(",", ";").split(";") if part.strip()]
    if not addrs:
        raise ValueError("no NameServer address given (expected host:port[;host:port...])")
    return addrs


async def call_any(
    client: RemotingClient,
    addrs: Sequence[str],
    request: RemotingCommand,
    *,
    timeout_s: float | None = None,
) -> RemotingCommand:
    """Send ``request`` to the first of ``addrs`` that answers; raise the last transport error."""
    last: RocketError | None = None
    for addr in addrs:
        try:
            return await client.call(addr, request, timeout_s=timeout_s)
        except (NetworkError, RemotingTimeout) as exc:
            last = exc
    assert last is not None
    raise last


async def get_cluster_info(client: RemotingClient, namesrv: Sequence[str]) -> ClusterInfo:
    request = RemotingCommand.request(RequestCode.GET_BROKER_CLUSTER_INFO)
    response = check_success(await call_any(client, namesrv, request))
    return ClusterInfo.from_bytes(response.body)


async def get_topic_route(
    client: RemotingClient, namesrv: Sequence[str], topic: str
) -> TopicRouteData:
    """The topic's route; raises ``TopicNotExist`` when no NameServer knows it."""
    header = GetRouteInfoRequestHeader(topic=topic, accept_standard_json_only=True)
    request = RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, header.to_ext_fields())
    response = check_success(await call_any(client, namesrv, request))
    return TopicRouteData.from_bytes(response.body)


# --- controllers (building blocks) -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ControllerMetadata:
    """One controller's CONTROLLER_GET_METADATA_INFO answer (mqadmin getControllerMetaData)."""

    #: The controller that answered.
    address: str
    group: str | None
    leader_id: str | None
    #: The leader's remoting address, as this controller knows it (None: no leader known).
    leader_address: str | None
    #: Whether the controller that answered is the leader.
    is_leader: bool
    #: ``(node id, remoting address)`` of every node of the quorum.
    peers: tuple[tuple[str, str], ...]


@attrs.frozen(kw_only=True)
class ElectMasterResult:
    """The answer of CONTROLLER_ELECT_MASTER (mqadmin electMaster)."""

    cluster: str
    broker_name: str
    master_broker_id: int | None
    master_address: str | None
    master_epoch: int | None
    sync_state_set_epoch: int | None
    sync_state_set: frozenset[int]
    #: Every registered broker of the group: id → address.
    broker_addrs: Mapping[int, str]
    #: False when the asked broker already was the master (CONTROLLER_MASTER_STILL_EXIST).
    changed: bool


@attrs.frozen(kw_only=True)
class BrokerEpochs:
    """One broker's GET_BROKER_EPOCH_CACHE answer, or why there is none."""

    address: str
    cache: EpochEntryCache | None
    error: str | None = None


def parse_controller_list(text: str) -> list[str]:
    """``"a:1;b:2"`` → ``["a:1", "b:2"]``; raises ``AdminError`` when empty or malformed."""
    addrs = [part.strip() for part in text.replace(",", ";").split(";") if part.strip()]
    if not addrs:
        raise AdminError("no controller address given: pass -a host:port[;host:port...]")
    for addr in addrs:
        _check_address(addr, "controller address")
    return addrs


def _parse_peers(text: str | None) -> tuple[tuple[str, str], ...]:
    peers = []
    for item in (text or "").split(";"):
        node_id, sep, addr = item.strip().partition(":")
        if sep:
            peers.append((node_id, addr))
    return tuple(peers)


async def get_controller_metadata(
    client: RemotingClient, addr: str, *, timeout_s: float | None = None
) -> ControllerMetadata:
    """Ask one controller who leads; any controller answers, leader or not."""
    request = RemotingCommand.request(RequestCode.CONTROLLER_GET_METADATA_INFO)
    response = check_success(await client.call(addr, request, timeout_s=timeout_s))
    header = GetMetaDataResponseHeader.from_ext_fields(response.ext_fields)
    return ControllerMetadata(
        address=addr,
        group=header.group,
        leader_id=header.controller_leader_id,
        leader_address=header.controller_leader_address or None,
        is_leader=bool(header.is_leader),
        peers=_parse_peers(header.peers),
    )


async def find_controller_leader(
    client: RemotingClient, controllers: Sequence[str], *, timeout_s: float | None = None
) -> str:
    """The leader's remoting address: the controller that says it leads, else the one the
    others name. Raises ``AdminError`` when no controller answers or none knows a leader."""
    named: list[str] = []
    errors: list[str] = []
    for addr in controllers:
        try:
            meta = await get_controller_metadata(client, addr, timeout_s=timeout_s)
        except RocketError as exc:
            errors.append(f"{addr}: {exc}")
            continue
        if meta.is_leader:
            return addr
        if meta.leader_address:
            named.append(meta.leader_address)
    if named:
        return max(set(named), key=named.count)
    why = "; ".join(errors) if errors else "none of them knows a leader"
    raise AdminError(
        f"no controller leader found at {';'.join(controllers)} ({why}); "
        "is a majority of the quorum up?"
    )


async def controller_call(
    client: RemotingClient,
    controllers: Sequence[str],
    request: RemotingCommand,
    *,
    timeout_s: float | None = None,
) -> RemotingCommand:
    """Send ``request`` to the controller leader (found with GetMetaData, then followed once
    through a CONTROLLER_NOT_LEADER answer); the response, whatever its code."""
    leader = await find_controller_leader(client, controllers, timeout_s=timeout_s)
    response = await client.call(leader, request, timeout_s=timeout_s)
    redirect = response.remark or ""
    if response.code == ResponseCode.CONTROLLER_NOT_LEADER and redirect not in ("", leader):
        response = await client.call(redirect, request, timeout_s=timeout_s)
    return response


# --- pure helpers ----------------------------------------------------------------------------


def parse_timestamp(text: str, *, now_ms: int) -> int:
    """mqadmin's ``-s``: ``now``, milliseconds since the epoch, or ``yyyy-MM-dd#HH:mm:ss:SSS``
    (local time, as Java's SimpleDateFormat reads it)."""
    value = text.strip()
    if value == "now":
        return now_ms
    if value.isdigit():
        return int(value)
    match = _DATE_FORMAT.fullmatch(value)
    if match is not None:
        year, month, day, hour, minute, second, millis = (int(g) for g in match.groups())
        try:
            local = datetime.datetime(year, month, day, hour, minute, second, millis * 1000)
        except ValueError:
            pass  # e.g. month 13: refused below like any other text
        else:
            return int(local.astimezone().timestamp() * 1000)
    raise AdminError(
        f"bad timestamp {text!r}: give 'now', milliseconds since the epoch, "
        "or yyyy-MM-dd#HH:mm:ss:SSS (local time), e.g. 2024-05-01#13:30:00:000"
    )


def allocate_averagely(
    queues: Sequence[MessageQueue], client_ids: Sequence[str]
) -> dict[MessageQueue, str]:
    """Which client owns each queue under AllocateMessageQueueAveragely (the clustering
    consumers' default): queues and client ids sorted, contiguous blocks, the first
    ``len(queues) % len(clients)`` clients taking one queue more."""
    mqs = sorted(set(queues))
    cids = sorted(set(client_ids))
    n, m = len(mqs), len(cids)
    owners: dict[MessageQueue, str] = {}
    if n == 0 or m == 0:
        return owners
    mod = n % m
    for index, cid in enumerate(cids):
        bigger = mod > 0 and index < mod
        average = 1 if n <= m else n // m + (1 if bigger else 0)
        start = index * average if bigger else index * average + mod
        for i in range(min(average, n - start)):
            owners[mqs[(start + i) % n]] = cid
    return owners


def read_address(data: BrokerData) -> str | None:
    """Where to read a broker group's data: its master, else its lowest-id slave."""
    master = master_address(data)
    if master is not None:
        return master
    if not data.broker_addrs:
        return None
    return data.broker_addrs[min(data.broker_addrs)]


def perm_to_string(perm: int) -> str:
    """PermName.perm2String: ``RW-`` for 6, ``R--`` for 4, ``RWX`` for 7."""
    return (
        ("R" if perm & PERM_READ else "-")
        + ("W" if perm & PERM_WRITE else "-")
        + ("X" if perm & 0x1 else "-")
    )


def _check_topic_name(topic: str) -> None:
    if not _TOPIC_NAME.fullmatch(topic):
        raise AdminError(
            f"topic name {topic!r} is not valid: use 1 to 127 letters, digits, '%', '|', '_' or '-'"
        )


def _check_address(addr: str, what: str) -> None:
    try:
        split_address(addr)
    except ValueError:
        raise AdminError(f"{what} {addr!r} is not host:port (e.g. 127.0.0.1:10911)") from None


# --- values ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class HAConnection:
    """One slave connection of a master (a row of ``mqadmin haStatus``)."""

    addr: str
    broker_id: int
    #: The HA connection's state: HANDSHAKE, TRANSFER.
    status: str
    ack_offset: int
    #: The master's max CommitLog offset minus the ack.
    diff: int
    transfer_bytes_per_s: int
    in_sync: bool


@attrs.frozen(kw_only=True)
class HAStatus:
    """GET_BROKER_HA_STATUS of one broker: a master's slaves, or a slave's master link."""

    broker_addr: str
    broker_name: str
    broker_id: int
    master: bool
    #: The master's max CommitLog offset (a slave: as its master last said).
    max_offset: int
    in_sync_slave_nums: int
    connections: tuple[HAConnection, ...]
    #: A slave's view of its master link (RocketMQ's haClientRuntimeInfo), else None.
    client: Mapping[str, Any] | None
    #: The whole body, for ``--json``.
    raw: Mapping[str, Any]

    @classmethod
    def from_body(cls, addr: str, body: bytes) -> HAStatus:
        what = f"HA status of {addr}"
        doc = _json_body(body, what)
        rows = doc.get("haConnectionInfo") or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise MalformedBody(f"{what}: haConnectionInfo must be a list of objects")
        client = doc.get("haClientRuntimeInfo")
        return cls(
            broker_addr=addr,
            broker_name=str(doc.get("brokerName", "")),
            broker_id=_int_of(doc, "brokerId", what),
            master=bool(doc.get("master")),
            max_offset=_int_of(doc, "masterCommitLogMaxOffset", what),
            in_sync_slave_nums=int(doc.get("inSyncSlaveNums") or 0),
            connections=tuple(
                HAConnection(
                    addr=str(r.get("addr", "")),
                    broker_id=_int_of(r, "brokerId", what),
                    status=str(r.get("status", "")),
                    ack_offset=_int_of(r, "slaveAckOffset", what),
                    diff=_int_of(r, "diff", what),
                    transfer_bytes_per_s=_int_of(r, "transferredByteInSecond", what),
                    in_sync=bool(r.get("inSync")),
                )
                for r in rows
            ),
            client=dict(client) if isinstance(client, dict) else None,
            raw=doc,
        )


@attrs.frozen(kw_only=True)
class BrokerRuntime:
    """One broker of a cluster and its GET_BROKER_RUNTIME_INFO table (None if it did not
    answer; ``error`` then says why)."""

    cluster: str
    broker_name: str
    broker_id: int
    addr: str
    table: Mapping[str, str] | None
    error: str | None = None

    def _get(self, key: str) -> str | None:
        return None if self.table is None else self.table.get(key)

    @property
    def version(self) -> str | None:
        return self._get("brokerVersionDesc")

    @property
    def role(self) -> str | None:
        return self._get("brokerRole")

    @property
    def active(self) -> bool:
        return self._get("brokerActive") == "true"

    def _int(self, key: str) -> int | None:
        value = self._get(key)
        return int(value) if value is not None and value.lstrip("-").isdigit() else None

    @property
    def in_total_today(self) -> int | None:
        """Messages put today (``msgPutTotalTodayNow``; our broker counts since boot)."""
        return self._int("msgPutTotalTodayNow")

    @property
    def out_total_today(self) -> int | None:
        """Messages read today (``msgGetTotalTodayNow``); None when the broker omits it."""
        return self._int("msgGetTotalTodayNow")


@attrs.frozen(kw_only=True)
class TopicOffset:
    """One queue of a topic: offsets held and the store time of its newest message."""

    queue: MessageQueue
    min_offset: int
    max_offset: int
    #: 0 when the queue never held a message.
    last_update_ms: int


@attrs.frozen(kw_only=True)
class QueueProgress:
    """How far a consumer group got in one queue."""

    queue: MessageQueue
    broker_offset: int
    consumer_offset: int
    #: Store time of the last consumed message (0 = none).
    last_timestamp_ms: int
    #: The client that owns the queue under average allocation, when known.
    client_id: str | None = None

    @property
    def diff(self) -> int:
        """Messages not consumed yet (mqadmin's #Diff)."""
        return self.broker_offset - self.consumer_offset


@attrs.frozen(kw_only=True)
class ConsumerProgress:
    group: str
    queues: tuple[QueueProgress, ...]
    consume_tps: float = 0.0

    @property
    def diff_total(self) -> int:
        return sum(q.diff for q in self.queues)


@attrs.frozen(kw_only=True)
class OffsetReset:
    """One queue's committed offset before (None = none stored) and after a reset."""

    queue: MessageQueue
    old_offset: int | None
    new_offset: int


@attrs.frozen(kw_only=True)
class TopicDeleted:
    """Where a topic was deleted: broker addresses, then NameServers."""

    brokers: tuple[str, ...]
    namesrvs: tuple[str, ...]


@attrs.frozen(kw_only=True)
class PullPage:
    """One PULL answer: Java's PullStatus name, the messages, the queue's offsets."""

    queue: MessageQueue
    status: str
    messages: tuple[ReceivedMessage, ...]
    next_begin_offset: int
    min_offset: int
    max_offset: int


# --- body readers ----------------------------------------------------------------------------


def _json_body(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = loads_fastjson(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedBody(f"{what}: body is not UTF-8") from None
    if not isinstance(obj, dict):
        raise MalformedBody(f"{what}: expected a JSON object")
    return obj


def _int_of(entry: Mapping[str, Any], key: str, what: str) -> int:
    value = entry.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedBody(f"{what}: {key!r} must be an integer, got {value!r}")
    return value


def _offset_entries(body: bytes, what: str) -> list[tuple[MessageQueue, Mapping[str, Any]]]:
    """Our TopicStatsTable / ConsumeStats form: ``{"offsetTable": [{"messageQueue": ...}]}``."""
    table = _json_body(body, what).get("offsetTable") or []
    if not isinstance(table, list):
        raise MalformedBody(
            f"{what}: offsetTable is not a list (a Java broker's MessageQueue-keyed map "
            "is not supported)"
        )
    out: list[tuple[MessageQueue, Mapping[str, Any]]] = []
    for entry in table:
        if not isinstance(entry, dict):
            raise MalformedBody(f"{what}: offsetTable entries must be objects")
        out.append((MessageQueue.from_json(entry.get("messageQueue")), entry))
    return out


def _runtime_table(body: bytes) -> dict[str, str]:
    table = _json_body(body, "broker runtime info").get("table")
    if not isinstance(table, dict):
        raise MalformedBody("broker runtime info: missing 'table' object")
    return {str(k): str(v) for k, v in table.items()}


# --- the admin -------------------------------------------------------------------------------


class Admin:
    """Administration of one RocketMQ deployment; build it with ``open_admin``."""

    def __init__(
        self, client: RemotingClient, namesrv: Sequence[str], *, timeout_s: float = 3.0
    ) -> None:
        assert namesrv, "at least one NameServer address"
        self._client = client
        self.namesrv = list(namesrv)
        self.timeout_s = timeout_s

    # --- transport -------------------------------------------------------------------

    async def _namesrv_call(self, request: RemotingCommand, addr: str | None = None) -> bytes:
        """Ask ``addr`` (default: the first NameServer that answers); the SUCCESS body."""
        try:
            if addr is None:
                response = await call_any(
                    self._client, self.namesrv, request, timeout_s=self.timeout_s
                )
            else:
                response = await self._client.call(addr, request, timeout_s=self.timeout_s)
        except (NetworkError, RemotingTimeout) as exc:
            where = addr or ";".join(self.namesrv)
            raise type(exc)(
                f"{exc}; no NameServer answered at {where}: check -n and that it is running"
            ) from None
        return check_success(response).body

    async def _broker_call(
        self, addr: str, request: RemotingCommand, *, ok: Sequence[int] = (ResponseCode.SUCCESS,)
    ) -> RemotingCommand:
        """One request to a broker; transport errors and codes outside ``ok`` raise."""
        try:
            response = await self._client.call(addr, request, timeout_s=self.timeout_s)
        except (NetworkError, RemotingTimeout) as exc:
            raise type(exc)(
                f"broker {addr}: {exc}; is it running? (rmq admin clusterList lists the brokers)"
            ) from None
        if response.code not in ok:
            raise error_for_response(response.code, f"{response.remark} (broker {addr})")
        return response

    async def _gather(
        self, items: Sequence[K], fn: Callable[[K], Awaitable[R]]
    ) -> list[R | RocketError]:
        """``fn`` of every item concurrently; a RocketError is returned in its item's place."""
        done: dict[int, R | RocketError] = {}

        async def one(index: int, item: K) -> None:
            try:
                done[index] = await fn(item)
            except RocketError as exc:
                done[index] = exc

        async with trio.open_nursery() as nursery:
            for index, item in enumerate(items):
                nursery.start_soon(one, index, item)
        return [done[i] for i in range(len(items))]

    @staticmethod
    def _all_ok(items: Sequence[str], results: Sequence[R | RocketError], what: str) -> list[R]:
        """The results, or the first error; when some items succeeded (a partial change) the
        error names them, so the operator knows to run the command again."""
        ok = [r for r in results if not isinstance(r, RocketError)]
        failed = [(i, r) for i, r in zip(items, results, strict=True) if isinstance(r, RocketError)]
        if not failed:
            return ok
        item, error = failed[0]
        succeeded = [
            i for i, r in zip(items, results, strict=True) if not isinstance(r, RocketError)
        ]
        if not succeeded:
            raise error
        raise _with_note(
            error, f"{what} on {', '.join(succeeded)} only; run again once {item} is back"
        )

    # --- NameServer views ------------------------------------------------------------

    async def cluster_info(self) -> ClusterInfo:
        body = await self._namesrv_call(
            RemotingCommand.request(RequestCode.GET_BROKER_CLUSTER_INFO)
        )
        return ClusterInfo.from_bytes(body)

    async def topic_route(self, topic: str) -> TopicRouteData:
        """The topic's route; ``TopicNotExist`` (with a hint) when no NameServer knows it."""
        header = GetRouteInfoRequestHeader(topic=topic, accept_standard_json_only=True)
        request = RemotingCommand.request(
            RequestCode.GET_ROUTEINFO_BY_TOPIC, header.to_ext_fields()
        )
        try:
            body = await self._namesrv_call(request)
        except TopicNotExist as exc:
            raise TopicNotExist(
                f"{exc.remark}; check the name (rmq admin topicList) or create it with "
                f"rmq admin updateTopic -t {topic} -c CLUSTER"
            ) from None
        return TopicRouteData.from_bytes(body)

    async def topic_list(self) -> list[str]:
        """Every topic the NameServer knows, sorted."""
        request = RemotingCommand.request(RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)
        return sorted(TopicList.from_bytes(await self._namesrv_call(request)).topic_list)

    async def topics_of_cluster(self, cluster: str) -> list[str]:
        """Topics hosted by the brokers of ``cluster``, sorted."""
        header = GetTopicsByClusterRequestHeader(cluster=cluster)
        request = RemotingCommand.request(RequestCode.GET_TOPICS_BY_CLUSTER, header.to_ext_fields())
        return sorted(TopicList.from_bytes(await self._namesrv_call(request)).topic_list)

    async def _cluster_groups(self, cluster: str | None) -> list[BrokerData]:
        """The broker groups of ``cluster`` (None: of every cluster), by name."""
        info = await self.cluster_info()
        if cluster is None:
            names = sorted(info.broker_addr_table)
        elif cluster in info.cluster_addr_table:
            names = sorted(info.cluster_addr_table[cluster])
        else:
            known = ", ".join(sorted(info.cluster_addr_table)) or "none"
            raise AdminError(
                f"cluster {cluster!r} is not known to the NameServer (known: {known}); check -c"
            )
        return [info.broker_addr_table[n] for n in names if n in info.broker_addr_table]

    async def _masters(self, cluster: str) -> list[str]:
        addrs = [a for a in map(master_address, await self._cluster_groups(cluster)) if a]
        if not addrs:
            raise AdminError(
                f"cluster {cluster!r} has no master broker now; start one or name a broker with -b"
            )
        return addrs

    async def _targets(self, cluster: str | None, broker_addr: str | None) -> list[str]:
        """The brokers a change goes to: one address, or every master of a cluster."""
        if cluster is None and broker_addr is None:
            raise AdminError("name a cluster (-c CLUSTER) or a broker address (-b HOST:PORT)")
        if cluster is not None and broker_addr is not None:
            raise AdminError("name a cluster (-c) or a broker address (-b), not both")
        if broker_addr is not None:
            _check_address(broker_addr, "broker address")
            return [broker_addr]
        assert cluster is not None
        return await self._masters(cluster)

    # --- brokers ---------------------------------------------------------------------

    async def broker_status(self, addr: str) -> dict[str, str]:
        """The broker's runtime info table (mqadmin brokerStatus)."""
        _check_address(addr, "broker address")
        request = RemotingCommand.request(RequestCode.GET_BROKER_RUNTIME_INFO)
        return _runtime_table((await self._broker_call(addr, request)).body)

    async def cluster_list(self, cluster: str | None = None) -> list[BrokerRuntime]:
        """Every broker (of ``cluster``) with its runtime info; unreachable ones say why."""
        members = [
            (data, broker_id, addr)
            for data in await self._cluster_groups(cluster)
            for broker_id, addr in sorted(data.broker_addrs.items())
        ]
        tables = await self._gather([addr for _, _, addr in members], self.broker_status)
        return [
            BrokerRuntime(
                cluster=data.cluster,
                broker_name=data.broker_name,
                broker_id=broker_id,
                addr=addr,
                table=None if isinstance(table, RocketError) else table,
                error=str(table) if isinstance(table, RocketError) else None,
            )
            for (data, broker_id, addr), table in zip(members, tables, strict=True)
        ]

    async def ha_status(self, addr: str) -> HAStatus:
        """GET_BROKER_HA_STATUS of one broker (mqadmin haStatus -b)."""
        _check_address(addr, "broker address")
        request = RemotingCommand.request(RequestCode.GET_BROKER_HA_STATUS)
        return HAStatus.from_body(addr, (await self._broker_call(addr, request)).body)

    async def cluster_ha_status(self, cluster: str) -> list[HAStatus | RocketError]:
        """The HA status of every master of ``cluster`` (mqadmin haStatus -c); a master that
        did not answer has its error in its place."""
        addrs = await self._masters(cluster)
        return await self._gather(addrs, self.ha_status)

    # --- topics ----------------------------------------------------------------------

    async def create_topic(
        self,
        topic: str,
        *,
        cluster: str | None = None,
        broker_addr: str | None = None,
        read_queue_nums: int = DEFAULT_QUEUE_NUMS,
        write_queue_nums: int = DEFAULT_QUEUE_NUMS,
        perm: int = DEFAULT_PERM,
        order: bool = False,
    ) -> list[str]:
        """Create or update ``topic`` on every master of ``cluster`` or on ``broker_addr``;
        the addresses changed. The brokers announce it to the NameServers at once."""
        _check_topic_name(topic)
        if read_queue_nums < 1 or write_queue_nums < 1:
            raise AdminError(
                f"queue numbers must be at least 1 (read {read_queue_nums}, "
                f"write {write_queue_nums})"
            )
        if perm & ~(PERM_READ | PERM_WRITE | 0x1) or not perm & (PERM_READ | PERM_WRITE):
            raise AdminError(f"perm {perm} is not valid: use 2 (W), 4 (R) or 6 (RW)")
        addrs = await self._targets(cluster, broker_addr)
        header = CreateTopicRequestHeader(
            topic=topic,
            default_topic=TEMPLATE_TOPIC,
            read_queue_nums=read_queue_nums,
            write_queue_nums=write_queue_nums,
            perm=perm,
            topic_filter_type="SINGLE_TAG",
            topic_sys_flag=0,
            order=order,
        )
        request = RemotingCommand.request(
            RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext_fields()
        )
        results = await self._gather(addrs, lambda a: self._broker_call(a, request))
        self._all_ok(addrs, results, f"topic {topic} created")
        return addrs

    async def delete_topic(self, topic: str, *, cluster: str | None = None) -> TopicDeleted:
        """Delete ``topic`` on every broker hosting it (of ``cluster``: every broker of that
        cluster), then on every NameServer."""
        if cluster is not None:
            groups = await self._cluster_groups(cluster)
        else:
            groups = (await self.topic_route(topic)).broker_datas
        addrs = sorted({a for g in groups for a in g.broker_addrs.values()})
        if not addrs:
            raise AdminError(f"no broker hosts topic {topic}; nothing to delete")
        request = RemotingCommand.request(
            RequestCode.DELETE_TOPIC_IN_BROKER,
            DeleteTopicRequestHeader(topic=topic).to_ext_fields(),
        )
        results = await self._gather(addrs, lambda a: self._broker_call(a, request))
        self._all_ok(addrs, results, f"topic {topic} deleted")
        ns_header = DeleteTopicFromNamesrvRequestHeader(topic=topic, cluster_name=cluster)
        ns_request = RemotingCommand.request(
            RequestCode.DELETE_TOPIC_IN_NAMESRV, ns_header.to_ext_fields()
        )
        ns_results = await self._gather(self.namesrv, lambda a: self._namesrv_call(ns_request, a))
        self._all_ok(self.namesrv, ns_results, f"topic {topic} deleted")
        return TopicDeleted(brokers=tuple(addrs), namesrvs=tuple(self.namesrv))

    async def topic_status(self, topic: str) -> list[TopicOffset]:
        """Every queue of ``topic``: min/max offset and last update, sorted by queue."""
        route = await self.topic_route(topic)
        addrs = [a for a in map(read_address, route.broker_datas) if a]
        request = RemotingCommand.request(
            RequestCode.GET_TOPIC_STATS_INFO,
            GetTopicStatsInfoRequestHeader(topic=topic).to_ext_fields(),
        )

        async def one(addr: str) -> list[TopicOffset]:
            body = (await self._broker_call(addr, request)).body
            return [
                TopicOffset(
                    queue=mq,
                    min_offset=_int_of(e, "minOffset", "topic stats"),
                    max_offset=_int_of(e, "maxOffset", "topic stats"),
                    last_update_ms=_int_of(e, "lastUpdateTimestamp", "topic stats"),
                )
                for mq, e in _offset_entries(body, "topic stats")
            ]

        pages = self._all_ok(addrs, await self._gather(addrs, one), "topic stats read")
        return sorted((o for page in pages for o in page), key=lambda o: o.queue)

    # --- subscription groups -----------------------------------------------------------

    async def subscription_groups(self, addr: str) -> dict[str, SubscriptionGroupConfig]:
        """Every subscription group config of one broker."""
        request = RemotingCommand.request(RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
        body = (await self._broker_call(addr, request)).body
        return dict(SubscriptionGroupWrapper.from_bytes(body).subscription_group_table)

    async def update_subscription_group(
        self,
        group: str,
        *,
        cluster: str | None = None,
        broker_addr: str | None = None,
        consume_enable: bool | None = None,
        consume_from_min_enable: bool | None = None,
        consume_broadcast_enable: bool | None = None,
        consume_message_orderly: bool | None = None,
        retry_queue_nums: int | None = None,
        retry_max_times: int | None = None,
        broker_id: int | None = None,
        which_broker_when_consume_slowly: int | None = None,
        notify_consumer_ids_changed_enable: bool | None = None,
    ) -> dict[str, SubscriptionGroupConfig]:
        """Create or update a group on every master of ``cluster`` or on ``broker_addr``.

        Settings left None keep the broker's current value (or RocketMQ's default for a new
        group), unlike mqadmin, which resets them. Returns the config written, by address.
        """
        if retry_queue_nums is not None and retry_queue_nums < 1:
            raise AdminError(f"retry queue nums must be at least 1, not {retry_queue_nums}")
        if retry_max_times is not None and retry_max_times < -1:
            raise AdminError(f"retry max times must be -1 or more, not {retry_max_times}")
        changes: dict[str, Any] = {
            k: v
            for k, v in {
                "consume_enable": consume_enable,
                "consume_from_min_enable": consume_from_min_enable,
                "consume_broadcast_enable": consume_broadcast_enable,
                "consume_message_orderly": consume_message_orderly,
                "retry_queue_nums": retry_queue_nums,
                "retry_max_times": retry_max_times,
                "broker_id": broker_id,
                "which_broker_when_consume_slowly": which_broker_when_consume_slowly,
                "notify_consumer_ids_changed_enable": notify_consumer_ids_changed_enable,
            }.items()
            if v is not None
        }
        addrs = await self._targets(cluster, broker_addr)

        async def one(addr: str) -> SubscriptionGroupConfig:
            current = (await self.subscription_groups(addr)).get(group)
            config = attrs.evolve(current or SubscriptionGroupConfig(group_name=group), **changes)
            request = RemotingCommand.request(
                RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, body=config.to_bytes()
            )
            await self._broker_call(addr, request)
            return config

        configs = self._all_ok(addrs, await self._gather(addrs, one), f"group {group} updated")
        return dict(zip(addrs, configs, strict=True))

    async def delete_subscription_group(
        self,
        group: str,
        *,
        cluster: str | None = None,
        broker_addr: str | None = None,
        clean_offset: bool = False,
    ) -> list[str]:
        """Delete a group (and, with ``clean_offset``, its offsets); the addresses changed."""
        addrs = await self._targets(cluster, broker_addr)
        header = DeleteSubscriptionGroupRequestHeader(group_name=group, clean_offset=clean_offset)
        request = RemotingCommand.request(
            RequestCode.DELETE_SUBSCRIPTIONGROUP, header.to_ext_fields()
        )
        results = await self._gather(addrs, lambda a: self._broker_call(a, request))
        self._all_ok(addrs, results, f"group {group} deleted")
        return addrs

    # --- consumers -------------------------------------------------------------------

    async def consumer_connection(self, group: str) -> ConsumerConnection | None:
        """The group's live consumers as every reachable broker knows them (merged);
        None when no broker has one online."""
        addrs = [a for a in map(read_address, await self._cluster_groups(None)) if a]
        request = RemotingCommand.request(
            RequestCode.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": group}
        )
        ok = (ResponseCode.SUCCESS, ResponseCode.CONSUMER_NOT_ONLINE)
        results = await self._gather(addrs, lambda a: self._broker_call(a, request, ok=ok))
        listings = [
            ConsumerConnection.from_bytes(r.body)
            for r in results
            if not isinstance(r, RocketError) and r.code == ResponseCode.SUCCESS
        ]
        if not listings:
            return None
        connections = {c.client_id: c for cc in listings for c in cc.connection_set}
        subscriptions = {t: s for cc in listings for t, s in cc.subscription_table.items()}
        return attrs.evolve(
            listings[0],
            connection_set=tuple(connections[c] for c in sorted(connections)),
            subscription_table=subscriptions,
        )

    async def consumer_progress(self, group: str, topic: str | None = None) -> ConsumerProgress:
        """Broker offset, consumer offset and lag of every queue the group consumes
        (of ``topic`` only, when given), with the owning client when it can be told."""
        if topic is not None:
            groups = (await self.topic_route(topic)).broker_datas
        else:
            groups = await self._cluster_groups(None)
        addrs = [a for a in map(read_address, groups) if a]
        header = GetConsumeStatsRequestHeader(consumer_group=group, topic=topic)
        request = RemotingCommand.request(RequestCode.GET_CONSUME_STATS, header.to_ext_fields())

        async def one(addr: str) -> tuple[float, list[QueueProgress]]:
            body = (await self._broker_call(addr, request)).body
            tps = _json_body(body, "consume stats").get("consumeTps") or 0.0
            queues = [
                QueueProgress(
                    queue=mq,
                    broker_offset=_int_of(e, "brokerOffset", "consume stats"),
                    consumer_offset=_int_of(e, "consumerOffset", "consume stats"),
                    last_timestamp_ms=_int_of(e, "lastTimestamp", "consume stats"),
                )
                for mq, e in _offset_entries(body, "consume stats")
            ]
            return float(tps), queues

        pages = self._all_ok(addrs, await self._gather(addrs, one), "consume stats read")
        queues = sorted((q for _, page in pages for q in page), key=lambda q: q.queue)
        if not queues:
            where = f" on topic {topic}" if topic else ""
            raise AdminError(
                f"consumer group {group} has no consume offsets{where}; check the group name "
                "(its consumers commit offsets every few seconds once they consume)"
            )
        owners = await self._owners(group, [q.queue for q in queues])
        return ConsumerProgress(
            group=group,
            queues=tuple(attrs.evolve(q, client_id=owners.get(q.queue)) for q in queues),
            consume_tps=sum(tps for tps, _ in pages),
        )

    async def _owners(self, group: str, queues: Sequence[MessageQueue]) -> dict[MessageQueue, str]:
        """Best effort: the average allocation over the group's live clustering consumers."""
        try:
            listing = await self.consumer_connection(group)
        except RocketError:
            return {}
        if listing is None or listing.message_model == BROADCASTING:
            return {}
        client_ids = [c.client_id for c in listing.connection_set]
        owners: dict[MessageQueue, str] = {}
        for topic in sorted({q.topic for q in queues}):
            if listing.subscription_table and topic not in listing.subscription_table:
                continue
            try:
                mqs = subscribe_queues(topic, await self.topic_route(topic))
            except RocketError:
                mqs = [q for q in queues if q.topic == topic]
            owners.update(allocate_averagely(mqs, client_ids))
        return owners

    async def reset_offset_by_time(
        self, group: str, topic: str, timestamp_ms: int, *, force: bool = False
    ) -> list[OffsetReset]:
        """Set the group's committed offset of every queue of ``topic`` to the first message
        stored at or after ``timestamp_ms`` (the queue's end if none).

        Stop the group's consumers first: they keep offsets in memory and would write them
        back, because our broker does not push RESET_CONSUMER_CLIENT_OFFSET to them yet.
        Refuses while consumers are online unless ``force``.
        """
        route = await self.topic_route(topic)
        if not force:
            listing = await self.consumer_connection(group)
            if listing is not None and listing.connection_set:
                ids = ", ".join(c.client_id for c in listing.connection_set)
                raise AdminError(
                    f"consumer group {group} has live consumers ({ids}); they would overwrite "
                    "the reset with their own offsets: stop them and run this again "
                    "(or pass --force to reset anyway)"
                )
        readable = {q.broker_name: q.read_queue_nums for q in route.queue_datas}
        targets: list[tuple[str, str, int]] = []
        for data in route.broker_datas:
            master = master_address(data)
            if data.broker_name not in readable:
                continue
            if master is None:
                raise AdminError(
                    f"broker group {data.broker_name} has no master now; offsets can be "
                    "reset only on a master: retry once it is back"
                )
            targets.append((data.broker_name, master, readable[data.broker_name]))

        async def one(target: tuple[str, str, int]) -> list[OffsetReset]:
            name, addr, count = target
            out = []
            for queue_id in range(count):
                mq = MessageQueue(topic=topic, broker_name=name, queue_id=queue_id)
                out.append(await self._reset_queue(addr, group, mq, timestamp_ms))
            return out

        names = [t[0] for t in targets]
        pages = self._all_ok(names, await self._gather(targets, one), "offsets reset")
        return sorted((r for page in pages for r in page), key=lambda r: r.queue)

    async def _reset_queue(
        self, addr: str, group: str, mq: MessageQueue, timestamp_ms: int
    ) -> OffsetReset:
        new_offset = await self.search_offset(addr, mq, timestamp_ms)
        query = QueryConsumerOffsetRequestHeader(
            consumer_group=group, topic=mq.topic, queue_id=mq.queue_id, set_zero_if_not_found=False
        )
        response = await self._broker_call(
            addr,
            RemotingCommand.request(RequestCode.QUERY_CONSUMER_OFFSET, query.to_ext_fields()),
            ok=(ResponseCode.SUCCESS, ResponseCode.QUERY_NOT_FOUND),
        )
        old = None
        if response.code == ResponseCode.SUCCESS:
            old = OffsetResponseHeader.from_ext_fields(response.ext_fields).offset
        update = UpdateConsumerOffsetRequestHeader(
            consumer_group=group, topic=mq.topic, queue_id=mq.queue_id, commit_offset=new_offset
        )
        request = RemotingCommand.request(
            RequestCode.UPDATE_CONSUMER_OFFSET, update.to_ext_fields()
        )
        try:
            await self._broker_call(addr, request)
        except SubscriptionGroupNotExist as exc:
            raise _group_hint(exc, group) from None
        return OffsetReset(queue=mq, old_offset=old, new_offset=new_offset)

    # --- offsets ---------------------------------------------------------------------

    async def _offset(self, addr: str, code: int, ext: Mapping[str, str]) -> int:
        response = await self._broker_call(addr, RemotingCommand.request(code, ext))
        return OffsetResponseHeader.from_ext_fields(response.ext_fields).offset

    async def search_offset(self, addr: str, mq: MessageQueue, timestamp_ms: int) -> int:
        """The first offset of ``mq`` stored at or after ``timestamp_ms`` (end if none)."""
        header = SearchOffsetRequestHeader(
            topic=mq.topic, queue_id=mq.queue_id, timestamp=timestamp_ms
        )
        return await self._offset(
            addr, RequestCode.SEARCH_OFFSET_BY_TIMESTAMP, header.to_ext_fields()
        )

    async def min_offset(self, addr: str, mq: MessageQueue) -> int:
        header = GetMinOffsetRequestHeader(topic=mq.topic, queue_id=mq.queue_id)
        return await self._offset(addr, RequestCode.GET_MIN_OFFSET, header.to_ext_fields())

    async def max_offset(self, addr: str, mq: MessageQueue) -> int:
        header = GetMaxOffsetRequestHeader(topic=mq.topic, queue_id=mq.queue_id)
        return await self._offset(addr, RequestCode.GET_MAX_OFFSET, header.to_ext_fields())

    # --- message queries -------------------------------------------------------------

    async def _query(
        self, addr: str, broker_name: str, header: QueryMessageRequestHeader, *, uniq: bool
    ) -> list[ReceivedMessage]:
        ext = header.to_ext_fields()
        if uniq:
            ext["_UNIQUE_KEY_QUERY"] = "true"
        response = await self._broker_call(
            addr,
            RemotingCommand.request(RequestCode.QUERY_MESSAGE, ext),
            ok=(ResponseCode.SUCCESS, ResponseCode.QUERY_NOT_FOUND),
        )
        if response.code != ResponseCode.SUCCESS:
            return []
        return [ReceivedMessage.from_record(r, broker_name) for r in iter_records(response.body)]

    async def _query_all(
        self, topic: str, key: str, max_num: int, begin_ms: int, end_ms: int, *, uniq: bool
    ) -> list[ReceivedMessage]:
        route = await self.topic_route(topic)
        targets = [(d.broker_name, a) for d in route.broker_datas if (a := read_address(d))]
        header = QueryMessageRequestHeader(
            topic=topic, key=key, max_num=max_num, begin_timestamp=begin_ms, end_timestamp=end_ms
        )
        results = await self._gather(targets, lambda t: self._query(t[1], t[0], header, uniq=uniq))
        pages = self._all_ok([a for _, a in targets], results, "query")
        found = {(m.queue.broker_name, m.commit_log_offset): m for p in pages for m in p}
        return sorted(found.values(), key=lambda m: (m.store_timestamp_ms, m.queue))

    async def query_by_key(
        self,
        topic: str,
        key: str,
        *,
        max_num: int = DEFAULT_QUERY_MAX_NUM,
        begin_ms: int = 0,
        end_ms: int = MAX_TIMESTAMP_MS,
    ) -> list[ReceivedMessage]:
        """Messages of ``topic`` with ``key`` among their KEYS, from every broker group,
        oldest first (at most ``max_num``); keys are re-checked, as the index hashes them."""
        messages = await self._query_all(topic, key, max_num, begin_ms, end_ms, uniq=False)
        matching = [
            m
            for m in messages
            if m.topic == topic and key in m.keys and begin_ms <= m.store_timestamp_ms <= end_ms
        ]
        return matching[:max_num]

    async def query_by_id(self, topic: str, msg_id: str) -> list[ReceivedMessage]:
        """The message(s) with this id: a client id (UNIQ_KEY; a retried send may have
        stored it twice) or a broker offset id (store address + CommitLog offset)."""
        route = await self.topic_route(topic)
        offset_id = _parse_offset_id(msg_id)
        names = {a: d.broker_name for d in route.broker_datas for a in d.broker_addrs.values()}
        if offset_id is not None and offset_id[0] in names:
            return [
                await self.view_message(offset_id[0], offset_id[1], broker_name=names[offset_id[0]])
            ]
        found = await self._query_all(
            topic, msg_id, UNIQ_KEY_QUERY_MAX_NUM, 0, MAX_TIMESTAMP_MS, uniq=True
        )
        found = [m for m in found if m.properties.get(PROPERTY_UNIQ_KEY) == msg_id]
        if found:
            return found
        if offset_id is not None:  # an offset id of a broker the route no longer names
            return [await self.view_message(offset_id[0], offset_id[1])]
        raise MessageNotFound(
            f"no message with id {msg_id} in topic {topic}; check the id and the topic "
            "(sendMessage prints both ids; queryMsgByKey lists ids by key)"
        )

    async def view_message(
        self, addr: str, commit_log_offset: int, *, broker_name: str = ""
    ) -> ReceivedMessage:
        """The message at ``commit_log_offset`` of the broker at ``addr`` (VIEW_MESSAGE_BY_ID)."""
        header = ViewMessageRequestHeader(offset=commit_log_offset)
        request = RemotingCommand.request(RequestCode.VIEW_MESSAGE_BY_ID, header.to_ext_fields())
        try:
            response = await self._broker_call(addr, request)
        except RocketError as exc:
            if isinstance(exc, NetworkError | RemotingTimeout):
                raise
            raise MessageNotFound(
                f"no message at CommitLog offset {commit_log_offset} of broker {addr} ({exc}); "
                "the id may be wrong or the message already deleted by retention"
            ) from None
        records = list(iter_records(response.body))
        if not records:
            raise MessageNotFound(f"broker {addr} returned no message at {commit_log_offset}")
        return ReceivedMessage.from_record(records[0], broker_name)

    async def _queue_address(self, topic: str, broker_name: str) -> str:
        route = await self.topic_route(topic)
        for data in route.broker_datas:
            if data.broker_name == broker_name:
                addr = read_address(data)
                if addr is None:
                    break
                return addr
        names = ", ".join(sorted(d.broker_name for d in route.broker_datas)) or "none"
        raise AdminError(
            f"topic {topic} has no live broker group named {broker_name!r} "
            f"(its groups: {names}); check -b"
        )

    async def pull(
        self,
        mq: MessageQueue,
        offset: int,
        *,
        max_nums: int = PULL_BATCH,
        group: str = TOOLS_CONSUMER_GROUP,
        addr: str | None = None,
    ) -> PullPage:
        """One PULL of up to ``max_nums`` messages from ``offset``; commits nothing."""
        addr = addr or await self._queue_address(mq.topic, mq.broker_name)
        header = PullMessageRequestHeader(
            consumer_group=group,
            topic=mq.topic,
            queue_id=mq.queue_id,
            queue_offset=offset,
            max_msg_nums=max_nums,
            sys_flag=_SUBSCRIPTION_ALL,
            commit_offset=0,
            suspend_timeout_millis=0,
            sub_version=0,
            subscription="*",
            expression_type="TAG",
        )
        request = RemotingCommand.request(RequestCode.PULL_MESSAGE, header.to_ext_fields())
        try:
            response = await self._broker_call(addr, request, ok=tuple(_PULL_STATUS))
        except SubscriptionGroupNotExist as exc:
            raise _group_hint(exc, group) from None
        reply = PullMessageResponseHeader.from_ext_fields(response.ext_fields)
        messages: tuple[ReceivedMessage, ...] = ()
        if response.code == ResponseCode.SUCCESS:
            messages = tuple(
                ReceivedMessage.from_record(r, mq.broker_name) for r in iter_records(response.body)
            )
        return PullPage(
            queue=mq,
            status=_PULL_STATUS[response.code],
            messages=messages,
            next_begin_offset=reply.next_begin_offset,
            min_offset=reply.min_offset,
            max_offset=reply.max_offset,
        )

    async def query_by_offset(
        self, topic: str, broker_name: str, queue_id: int, offset: int
    ) -> ReceivedMessage:
        """The message at ``offset`` of one queue."""
        mq = MessageQueue(topic=topic, broker_name=broker_name, queue_id=queue_id)
        page = await self.pull(mq, offset, max_nums=1)
        for message in page.messages:
            if message.queue_offset == offset:
                return message
        raise MessageNotFound(
            f"no message at offset {offset} of {broker_name} queue {queue_id} of {topic} "
            f"(it holds offsets {page.min_offset} to {page.max_offset - 1}); "
            "rmq admin topicStatus shows each queue's range"
        )

    async def consume(
        self,
        topic: str,
        *,
        broker_name: str | None = None,
        queue_id: int | None = None,
        offset: int | None = None,
        count: int = DEFAULT_CONSUME_COUNT,
        group: str = TOOLS_CONSUMER_GROUP,
    ) -> list[ReceivedMessage]:
        """Read up to ``count`` messages without committing: every readable queue (or the
        one named) from its first offset (or ``offset``), queue after queue."""
        if count < 1:
            raise AdminError(f"count must be at least 1, not {count}")
        route = await self.topic_route(topic)
        queues = [
            q
            for q in subscribe_queues(topic, route)
            if broker_name in (None, q.broker_name) and queue_id in (None, q.queue_id)
        ]
        if not queues:
            raise AdminError(
                f"topic {topic} has no readable queue matching broker {broker_name or 'any'} "
                f"queue {queue_id if queue_id is not None else 'any'}; check -b and -i "
                "(rmq admin topicRoute lists them)"
            )
        addrs = {d.broker_name: read_address(d) for d in route.broker_datas}
        out: list[ReceivedMessage] = []
        for mq in queues:
            addr = addrs.get(mq.broker_name)
            if addr is None or len(out) >= count:
                continue
            start = max(offset or 0, await self.min_offset(addr, mq))
            out.extend(await self._read_queue(addr, mq, start, count - len(out), group))
        return out

    async def _read_queue(
        self, addr: str, mq: MessageQueue, offset: int, count: int, group: str
    ) -> list[ReceivedMessage]:
        out: list[ReceivedMessage] = []
        while len(out) < count:  # every FOUND page adds at least one message
            page = await self.pull(
                mq, offset, max_nums=min(PULL_BATCH, count - len(out)), group=group, addr=addr
            )
            if page.status not in ("FOUND", "NO_MATCHED_MSG") or page.next_begin_offset <= offset:
                break
            out.extend(page.messages[: count - len(out)])
            offset = page.next_begin_offset
        return out

    # --- controller ------------------------------------------------------------------

    async def _controller(
        self,
        controller: str | Sequence[str],
        request: RemotingCommand,
        *,
        ok: Sequence[int] = (ResponseCode.SUCCESS,),
    ) -> RemotingCommand:
        addrs = parse_controller_list(
            controller if isinstance(controller, str) else ";".join(controller)
        )
        response = await controller_call(self._client, addrs, request, timeout_s=self.timeout_s)
        if response.code not in ok:
            raise error_for_response(response.code, response.remark)
        return response

    async def controller_metadata(self, controller: str | Sequence[str]) -> ControllerMetadata:
        """GetMetaData from the first of ``controller`` that answers."""
        addrs = parse_controller_list(
            controller if isinstance(controller, str) else ";".join(controller)
        )
        last: RocketError | None = None
        for addr in addrs:
            try:
                return await get_controller_metadata(self._client, addr, timeout_s=self.timeout_s)
            except (NetworkError, RemotingTimeout) as exc:
                last = exc
        assert last is not None
        raise type(last)(f"{last}; is the controller running? (check -a)") from None

    async def _broker_names(self, broker_name: str | None, cluster: str | None) -> list[str]:
        if (broker_name is None) == (cluster is None):
            raise AdminError("name a broker group (-b BROKER_NAME) or a cluster (-c CLUSTER)")
        if broker_name is not None:
            return [broker_name]
        return [data.broker_name for data in await self._cluster_groups(cluster)]

    async def sync_state_set(
        self,
        controller: str | Sequence[str],
        *,
        broker_name: str | None = None,
        cluster: str | None = None,
    ) -> BrokerReplicasInfo:
        """Master, epochs and (not) in-sync replicas of a group, or of every group of a
        cluster (the groups come from the NameServer), from the controller leader."""
        names = await self._broker_names(broker_name, cluster)
        request = RemotingCommand.request(
            RequestCode.CONTROLLER_GET_SYNC_STATE_DATA, body=broker_names_body(names)
        )
        response = await self._controller(controller, request)
        return BrokerReplicasInfo.from_bytes(response.body)

    async def elect_master(
        self, controller: str | Sequence[str], *, cluster: str, broker_name: str, broker_id: int
    ) -> ElectMasterResult:
        """Make ``broker_id`` the master of ``broker_name`` (an admin-designated election:
        refused unless that broker is alive and, with unclean election off, in the
        SyncStateSet)."""
        header = ElectMasterRequestHeader(
            cluster_name=cluster, broker_name=broker_name, broker_id=broker_id, designate_elect=True
        )
        request = RemotingCommand.request(
            RequestCode.CONTROLLER_ELECT_MASTER, header.to_ext_fields()
        )
        ok = (ResponseCode.SUCCESS, ResponseCode.CONTROLLER_MASTER_STILL_EXIST)
        response = await self._controller(controller, request, ok=ok)
        reply = ElectMasterResponseHeader.from_ext_fields(response.ext_fields)
        body = ElectMasterResponseBody.from_bytes(response.body) if response.body else None
        group = body.broker_member_group if body is not None else None
        return ElectMasterResult(
            cluster=cluster,
            broker_name=broker_name,
            master_broker_id=reply.master_broker_id,
            master_address=reply.master_address,
            master_epoch=reply.master_epoch,
            sync_state_set_epoch=reply.sync_state_set_epoch,
            sync_state_set=body.sync_state_set if body is not None else frozenset(),
            broker_addrs=dict(group.broker_addrs) if group is not None else {},
            changed=response.code == ResponseCode.SUCCESS,
        )

    async def clean_broker_metadata(
        self,
        controller: str | Sequence[str],
        *,
        broker_name: str,
        cluster: str | None = None,
        broker_ids: Sequence[int] | None = None,
        clean_living: bool = False,
    ) -> None:
        """Drop brokers (default: the whole group) from the controller's metadata; refused
        for live brokers (and, for the whole group, while it has a master) unless
        ``clean_living``."""
        if not clean_living and not cluster:
            raise AdminError("without --cleanLivingBroker (-l) name the cluster (-c CLUSTER)")
        header = CleanControllerBrokerDataRequestHeader(
            cluster_name=cluster,
            broker_name=broker_name,
            broker_controller_ids_to_clean=";".join(str(i) for i in broker_ids)
            if broker_ids
            else None,
            is_clean_living_broker=clean_living,
        )
        request = RemotingCommand.request(RequestCode.CLEAN_BROKER_DATA, header.to_ext_fields())
        await self._controller(controller, request)

    async def broker_epochs(
        self, *, broker_name: str | None = None, cluster: str | None = None
    ) -> list[BrokerEpochs]:
        """GET_BROKER_EPOCH_CACHE of every broker (master and slaves) of a group or cluster.
        A broker that does not answer, or does not serve the request yet, has the reason in
        ``error`` instead of failing the whole call."""
        names = await self._broker_names(broker_name, cluster)
        info = await self.cluster_info()
        addrs = sorted(
            {
                addr
                for name in names
                if name in info.broker_addr_table
                for addr in info.broker_addr_table[name].broker_addrs.values()
            }
        )
        if not addrs:
            raise AdminError(f"the NameServer knows no broker of {', '.join(names)}")

        async def one(addr: str) -> BrokerEpochs:
            request = RemotingCommand.request(RequestCode.GET_BROKER_EPOCH_CACHE)
            try:
                response = await self._broker_call(addr, request)
            except RequestCodeNotSupported:
                return BrokerEpochs(
                    address=addr, cache=None, error="does not serve GET_BROKER_EPOCH_CACHE"
                )
            return BrokerEpochs(address=addr, cache=EpochEntryCache.from_bytes(response.body))

        results = await self._gather(addrs, one)
        return [
            r if isinstance(r, BrokerEpochs) else BrokerEpochs(address=a, cache=None, error=str(r))
            for a, r in zip(addrs, results, strict=True)
        ]

    # --- sending ---------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        body: bytes,
        *,
        keys: Sequence[str] = (),
        tags: str | None = None,
        broker_name: str | None = None,
        queue_id: int | None = None,
    ) -> SendResult:
        """Send one message (to one queue when ``broker_name`` and ``queue_id`` are given)."""
        from client.producer import open_producer  # the producer pulls in more than admin needs

        message = Message(topic=topic, body=body, keys=tuple(keys), tags=tags or None)

        def pick(queues: Sequence[MessageQueue], _key: str) -> MessageQueue:
            for q in queues:
                if q.broker_name == broker_name and q.queue_id == queue_id:
                    return q
            raise AdminError(
                f"topic {topic} has no writable queue {queue_id} on broker {broker_name}; "
                "check -b and -i (rmq admin topicRoute lists them)"
            )

        selector = pick if broker_name is not None and queue_id is not None else None
        async with open_producer(
            self.namesrv, group=TOOLS_PRODUCER_GROUP, timeout_s=self.timeout_s
        ) as producer:
            try:
                return await producer.send(message, selector=selector)
            except TopicNotExist as exc:
                raise TopicNotExist(
                    f"{exc.remark}; create it first: rmq admin updateTopic -t {topic} -c CLUSTER"
                ) from None


def _group_hint(error: SubscriptionGroupNotExist, group: str) -> SubscriptionGroupNotExist:
    return SubscriptionGroupNotExist(
        f"{error.remark}; create the group first: rmq admin updateSubGroup -g {group} -c CLUSTER"
    )


def _with_note(error: RocketError, note: str) -> RocketError:
    """The same kind of error with ``note`` appended to its message."""
    if isinstance(error, ServerError):
        return error_for_response(error.code, f"{error.remark} ({note})")
    return type(error)(f"{error} ({note})")


def _parse_offset_id(msg_id: str) -> tuple[str, int] | None:
    """``(store address, CommitLog offset)`` when ``msg_id`` reads as a broker offset id."""
    try:
        ip, port, offset = parse_offset_msg_id(msg_id)
    except ValueError:
        return None
    if not 0 < port <= 0xFFFF:
        return None
    return f"{ip}:{port}", offset


@asynccontextmanager
async def open_admin(
    namesrv: str | Sequence[str] = "127.0.0.1:9876", *, timeout_s: float = 3.0
) -> AsyncIterator[Admin]:
    """An ``Admin`` whose connections live exactly as long as this block.

    Raises ``AdminError`` at once when the NameServer list is empty or malformed.
    """
    text = namesrv if isinstance(namesrv, str) else ";".join(namesrv)
    try:
        addrs = parse_namesrv_list(text)
    except ValueError as exc:
        raise AdminError(f"{exc}; pass -n host:port") from None
    for addr in addrs:
        _check_address(addr, "NameServer address")
    async with open_client(name="rmq-admin", default_timeout_s=timeout_s) as client:
        yield Admin(client, addrs, timeout_s=timeout_s)
