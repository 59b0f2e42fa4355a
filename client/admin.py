"""Admin operations against NameServers and brokers (the SDK side of ``rmq admin``).

Every call runs under the client's deadline; a NameServer list (``"a:9876;b:9876"``) is
tried in order until one answers, as RocketMQ's clients do.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import NetworkError, RemotingTimeout, RocketError
from protocol.headers import GetRouteInfoRequestHeader
from protocol.route import ClusterInfo, TopicRouteData
from protocol.rpc import RemotingClient, check_success


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
