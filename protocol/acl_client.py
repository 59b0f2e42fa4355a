"""Remoting clients that sign every request with an ACL 1.0 account.

Rules:
- ``sign_requests(client, credentials)`` makes that ``RemotingClient`` sign each request
  its ``call`` and ``oneway`` send (protocol/acl_sign.py). Opaque and flag are set later by
  the transport and are not signed, as in RocketMQ. The client is otherwise untouched:
  however it was built (transport limits, handlers, TLS) stays as it was, so this composes
  with every option of ``protocol.rpc`` without repeating any of them.
- ``open_client(credentials=None, **options)`` is ``protocol.rpc.open_client(**options)``,
  signing when ``credentials`` are given; without them nothing changes and nothing costs.
- The secret stays in ``Credentials`` (hidden from ``repr``); nothing here logs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from protocol import rpc
from protocol.acl_sign import Credentials, sign_request
from protocol.command import RemotingCommand


def sign_requests(client: rpc.RemotingClient, credentials: Credentials) -> rpc.RemotingClient:
    """``client``, signing from now on every request it sends with ``credentials``.

    The two sending methods are replaced on this instance only (its class and every other
    client are unchanged); the originals do the sending.
    """
    plain_call, plain_oneway = client.call, client.oneway

    async def call(
        addr: str, request: RemotingCommand, *, timeout_s: float | None = None
    ) -> RemotingCommand:
        return await plain_call(addr, sign_request(request, credentials), timeout_s=timeout_s)

    async def oneway(addr: str, request: RemotingCommand) -> None:
        await plain_oneway(addr, sign_request(request, credentials))

    client.call = call  # type: ignore[method-assign]
    client.oneway = oneway  # type: ignore[method-assign]
    return client


@asynccontextmanager
async def open_client(
    *, credentials: Credentials | None = None, **options: Any
) -> AsyncIterator[rpc.RemotingClient]:
    """``protocol.rpc.open_client(**options)``, signing every request when ``credentials``
    are given."""
    async with rpc.open_client(**options) as client:
        yield client if credentials is None else sign_requests(client, credentials)


__all__ = ["open_client", "sign_requests"]
