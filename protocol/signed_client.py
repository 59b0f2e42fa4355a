"""A remoting client that signs every request with an ACL 1.0 account.

Rules:
- ``SignedClient`` is a ``RemotingClient`` whose ``call`` and ``oneway`` sign the request
  (protocol/acl_sign.py) before it is sent; opaque and flag are set afterwards by the
  transport and are not signed, as in RocketMQ.
- ``open_client(credentials=None, ...)`` is ``protocol.rpc.open_client`` when there are no
  credentials (nothing changes, nothing costs), else the same with a ``SignedClient``.
- The secret stays in ``Credentials`` (hidden from ``repr``); nothing here logs it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from protocol import rpc
from protocol.acl_sign import Credentials, sign_request
from protocol.command import RemotingCommand


class SignedClient(rpc.RemotingClient):
    """Signs each request it sends with ``credentials``."""

    def __init__(self, nursery: trio.Nursery, *, credentials: Credentials, **kwargs: Any):
        super().__init__(nursery, **kwargs)
        self.credentials = credentials

    async def call(
        self, addr: str, request: RemotingCommand, *, timeout_s: float | None = None
    ) -> RemotingCommand:
        signed = sign_request(request, self.credentials)
        return await super().call(addr, signed, timeout_s=timeout_s)

    async def oneway(self, addr: str, request: RemotingCommand) -> None:
        await super().oneway(addr, sign_request(request, self.credentials))


@asynccontextmanager
async def open_client(
    *, credentials: Credentials | None = None, **kwargs: Any
) -> AsyncIterator[rpc.RemotingClient]:
    """``protocol.rpc.open_client``, signing every request when ``credentials`` are given."""
    if credentials is None:
        async with rpc.open_client(**kwargs) as plain:
            yield plain
        return
    async with rpc.background_nursery() as nursery:
        client = SignedClient(nursery, credentials=credentials, **kwargs)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()


__all__ = ["SignedClient", "open_client"]
