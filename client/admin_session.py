"""What every admin area builds on: the NameServer list, the calls to NameServers and
brokers, and the NameServer views (``AdminSession``), plus building blocks for callers
that hold their own client (``parse_namesrv_list``, ``call_any``, ``get_cluster_info``,
``get_topic_route``).

Rules:
- Every request runs under the admin's ``timeout_s``; a NameServer list
  (``"a:9876;b:9876"``) is tried in order until one answers, as RocketMQ's clients do.
  Requests to several brokers run concurrently (``_gather``), each under its own deadline.
- Transport errors get a hint added (which address, what to check); server answers keep
  their ``ServerError`` class with the broker added to the remark; usage problems are
  ``AdminError``. A change that reached only some brokers says which (``_all_ok``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from protocol.bodies import TopicList
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    ConnectionLost,
    NetworkError,
    RemotingTimeout,
    RocketError,
    ServerError,
    SubscriptionGroupNotExist,
    TopicNotExist,
    error_for_response,
)
from protocol.headers import GetRouteInfoRequestHeader, GetTopicsByClusterRequestHeader
from protocol.route import BrokerData, ClusterInfo, TopicRouteData, master_address
from protocol.rpc import RemotingClient, check_success, split_address

R = TypeVar("R")
K = TypeVar("K")


class AdminError(RocketError):
    """An admin request cannot be carried out as asked; the message says what to do."""


# --- building blocks (kept for callers with their own client) ----------------------------


def _tls_hint(exc: RocketError, client: RemotingClient) -> str:
    """A plain client whose connection the server closed at once may have met a TLS port."""
    if client.tls is None and isinstance(exc, ConnectionLost):
        return " (or it takes TLS only: rmq admin --tls, $RMQ_TLS=1)"
    return ""


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


def read_address(data: BrokerData) -> str | None:
    """Where to read a broker group's data: its master, else its lowest-id slave."""
    master = master_address(data)
    if master is not None:
        return master
    if not data.broker_addrs:
        return None
    return data.broker_addrs[min(data.broker_addrs)]


def _check_address(addr: str, what: str) -> None:
    try:
        split_address(addr)
    except ValueError:
        raise AdminError(f"{what} {addr!r} is not host:port (e.g. 127.0.0.1:10911)") from None


def _with_note(error: RocketError, note: str) -> RocketError:
    """The same kind of error with ``note`` appended to its message."""
    if isinstance(error, ServerError):
        return error_for_response(error.code, f"{error.remark} ({note})")
    return type(error)(f"{error} ({note})")


def _group_hint(error: SubscriptionGroupNotExist, group: str) -> SubscriptionGroupNotExist:
    return SubscriptionGroupNotExist(
        f"{error.remark}; create the group first: rmq admin updateSubGroup -g {group} -c CLUSTER"
    )


class AdminSession:
    """One admin's NameServer list, client and deadline; the base of ``Admin``."""

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
                + _tls_hint(exc, self._client)
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
