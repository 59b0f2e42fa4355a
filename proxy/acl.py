"""ACL 1.0 on the gRPC port: the client's signature and the resources each request touches.

Rules (RocketMQ 5 proxy with ACL 1.0: PlainAccessResource.parse for gRPC, AuthorizationHeader;
the official clients' Signature):
- A client signs each call with gRPC metadata ``x-mq-date-time`` (``yyyyMMdd'T'HHmmss'Z'``)
  and ``authorization``: ``MQv2-HMAC-SHA1 Credential=<AK>[/...], SignedHeaders=x-mq-date-time,
  Signature=<hex>``, the hex HMAC-SHA1 of the date-time under the account's secret key.
  The date-time is not checked against the clock (RocketMQ does not, and the Python client
  sends local time marked Z).
- The accounts are the plain-access file's (``protocol.acl``, the same as brokers'): a
  globally white-listed peer passes; else the request names a known AccessKey; a peer in
  that account's ``whiteRemoteAddress`` passes; else the signature must match. A failure
  here is UNAUTHORIZED. Then each resource needs its permission (``check_resources``):
  FORBIDDEN when one is missing.
- Resources as RocketMQ's proxy reads them: a send and EndTransaction PUB on the topic;
  Telemetry settings PUB on the topics published, SUB on the group and topics subscribed;
  receive, ack, change invisible duration, dead-lettering and QueryAssignment SUB on the
  topic and the group; a Heartbeat and NotifyClientTermination SUB on the group they name.
  Groups are checked as ``%RETRY%<group>``, as remoting does (RocketMQ's gRPC path looks
  the bare group name up, which a ``groupPerms`` entry never matches).
- Pure: the metadata and the peer come in as values.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from rocketmq.grpc_protocol import definition_pb2 as pb

from protocol.acl import PUB, SUB, AclConfig, check_resources
from protocol.group_topics import retry_topic

AUTH_SCHEME = "MQv2-HMAC-SHA1"
#: Longest authorization value read (an AK and a 40-digit signature need ~150).
MAX_AUTHORIZATION_CHARS = 1024

Resources = list[tuple[str, int]]


def _name(resource: Any) -> str:
    """A ``pb.Resource``'s name with its namespace (``ns%name``), as RocketMQ wraps it."""
    namespace = resource.resource_namespace
    return f"{namespace}%{resource.name}" if namespace else str(resource.name)


def _group(resource: Any) -> tuple[str, int]:
    return retry_topic(_name(resource)), SUB


def parse_authorization(value: str) -> tuple[str, str] | None:
    """(access key, signature hex) of an ``authorization`` value; None when malformed."""
    if len(value) > MAX_AUTHORIZATION_CHARS:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme != AUTH_SCHEME:
        return None
    items: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, item = part.strip().partition("=")
        if eq:
            items[key] = item.strip()
    access_key = items.get("Credential", "").split("/")[0]
    signature = items.get("Signature", "")
    if not access_key or not signature:
        return None
    return access_key, signature


def sign(secret_key: str, date_time: str) -> str:
    """The signature a client sends: hex HMAC-SHA1 of the date-time."""
    return hmac.new(secret_key.encode(), date_time.encode(), hashlib.sha1).hexdigest()


def refusal(
    config: AclConfig,
    metadata: Mapping[str, str],
    remote_ip: str,
    needed: Iterable[tuple[str, int]],
) -> tuple[int, str] | None:
    """None when the call may proceed; else (API code, why)."""
    if any(pattern.matches(remote_ip) for pattern in config.global_white):
        return None
    parsed = parse_authorization(metadata.get("authorization", ""))
    if parsed is None:
        return pb.UNAUTHORIZED, "ACL: the call carries no MQv2-HMAC-SHA1 authorization"
    access_key, signature = parsed
    account = config.accounts.get(access_key)
    if account is None:
        return pb.UNAUTHORIZED, f"ACL: no account for AccessKey {access_key[:64]}"
    white = account.white_remote_address
    if white is None or not white.matches(remote_ip):
        expected = sign(account.secret_key, metadata.get("x-mq-date-time", ""))
        if not hmac.compare_digest(expected, signature.lower()):
            return pb.UNAUTHORIZED, f"ACL: signature check failed for AccessKey {access_key}"
    decision = check_resources(account, list(needed))
    if decision.reason is not None:
        return pb.FORBIDDEN, decision.reason
    return None


def peer_host(peer: str) -> str:
    """The address of a grpc peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host, _, _ = rest.rpartition(":")
    return host.strip("[]")


# --- what each request touches ---------------------------------------------------------


def send_resources(request: Any) -> Resources:
    return [(_name(m.topic), PUB) for m in request.messages[:1]]


def end_transaction_resources(request: Any) -> Resources:
    return [(_name(request.topic), PUB)]


def consume_resources(request: Any) -> Resources:
    """Ack, ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue, QueryAssignment."""
    return [(_name(request.topic), SUB), _group(request.group)]


def receive_resources(request: Any) -> Resources:
    return [(_name(request.message_queue.topic), SUB), _group(request.group)]


def group_resources(request: Any) -> Resources:
    """Heartbeat, NotifyClientTermination: the group when they name one."""
    return [_group(request.group)] if request.HasField("group") and request.group.name else []


def settings_resources(settings: Any) -> Resources:
    out: Resources = [(_name(t), PUB) for t in settings.publishing.topics]
    if settings.HasField("subscription"):
        sub = settings.subscription
        if sub.group.name:
            out.append(_group(sub.group))
        out += [(_name(e.topic), SUB) for e in sub.subscriptions]
    return out


def no_resources(request: Any) -> Resources:
    """QueryRoute: the signature only (RocketMQ checks no resource)."""
    return []
