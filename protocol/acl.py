"""ACL 1.0 decisions: the plain-access file's accounts, and whether one request may pass.

Rules (RocketMQ 4.x PlainAccessValidator / PlainPermissionManager, acl module):
- The plain-access document (plain_acl.yml) has ``globalWhiteRemoteAddresses`` and
  ``accounts``; an account has ``accessKey``, ``secretKey`` (each longer than 6
  characters), ``whiteRemoteAddress``, ``admin``, ``defaultTopicPerm``,
  ``defaultGroupPerm``, ``topicPerms`` and ``groupPerms`` (lists of ``"name=PERM"``, PERM
  one of DENY, PUB, SUB, PUB|SUB; anything else is DENY, absent defaults are DENY).
- A request passes, in this order: when the peer's address is globally white-listed; else
  it must name a known AccessKey; it passes when the peer matches that account's
  ``whiteRemoteAddress``; else its Signature must match; then an admin code needs an admin
  account, and every resource the request touches needs the permission its code implies
  (``resources``), from the account's per-topic / per-group entry or else its default.
  Groups are checked as their ``%RETRY%group`` topic, as RocketMQ does.
- Beyond RocketMQ's list of admin codes (topic and group create/delete, broker config), the
  codes that change the cluster's shape at a NameServer or controller are admin codes too
  (register/unregister a broker, wipe/add write perm, delete a topic's route, KV config,
  elect a master, clean broker data, alter a SyncStateSet, broker heartbeats): issue 16's
  attacks used exactly these. A broker's own account must therefore be an admin account.
- Address patterns as RocketMQ writes them: ``*``; an exact address; ``a,b,c``;
  ``192.168.0.{1,2}``; segments with ``*`` or ``lo-hi`` (``192.168.1-10.*``); and, beyond
  RocketMQ, CIDR (``10.0.0.0/8``).
- Beyond RocketMQ too: lite pull, pop, peek, ack, change invisible time and pop
  notification need SUB on the topic and the group, as a pull does; so do LOCK_BATCH_MQ
  and UNLOCK_BATCH_MQ on the group and the queues' topics (another group's orderly
  consumers could be locked out otherwise).
- Pure: the document comes in already parsed (the YAML shell is protocol/acl_guard.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from protocol.acl_sign import ACCESS_KEY, signature_matches
from protocol.bodies import HeartbeatData, LockBatchRequestBody
from protocol.codes import RequestCode
from protocol.errors import ProtocolError
from protocol.group_topics import is_retry_topic, retry_topic

DENY = 1
ANY = 2
PUB = 4
SUB = 8

_PERM_NAMES = {"DENY": DENY, "PUB": PUB, "SUB": SUB, "PUB|SUB": PUB | SUB, "SUB|PUB": PUB | SUB}
_MIN_KEY_CHARS = 7  # RocketMQ refuses keys of 6 characters or fewer
TRACE_TOPIC = "RMQ_SYS_TRACE_TOPIC"

#: RocketMQ's Permission.ADMIN_CODE (those we serve).
ROCKETMQ_ADMIN_CODES = frozenset(
    {
        RequestCode.UPDATE_AND_CREATE_TOPIC,
        RequestCode.UPDATE_BROKER_CONFIG,
        RequestCode.DELETE_TOPIC_IN_BROKER,
        RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
        RequestCode.DELETE_SUBSCRIPTIONGROUP,
        RequestCode.UPDATE_AND_CREATE_STATIC_TOPIC,
    }
)
#: Ours: the rest of the codes that change topics, groups, offsets in bulk or the cluster.
CLUSTER_ADMIN_CODES = frozenset(
    {
        RequestCode.UPDATE_AND_CREATE_TOPIC_LIST,
        RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP_LIST,
        RequestCode.TRIGGER_DELETE_FILES,
        RequestCode.INVOKE_BROKER_TO_RESET_OFFSET,
        RequestCode.CLEAN_EXPIRED_CONSUMEQUEUE,
        RequestCode.CLEAN_UNUSED_TOPIC,
        RequestCode.DELETE_EXPIRED_COMMITLOG,
        RequestCode.RESET_MASTER_FLUSH_OFFSET,
        RequestCode.UPDATE_AND_GET_GROUP_FORBIDDEN,
        RequestCode.PUT_KV_CONFIG,
        RequestCode.DELETE_KV_CONFIG,
        RequestCode.REGISTER_BROKER,
        RequestCode.UNREGISTER_BROKER,
        RequestCode.WIPE_WRITE_PERM_OF_BROKER,
        RequestCode.ADD_WRITE_PERM_OF_BROKER,
        RequestCode.DELETE_TOPIC_IN_NAMESRV,
        RequestCode.REGISTER_TOPIC_IN_NAMESRV,
        RequestCode.UPDATE_NAMESRV_CONFIG,
        RequestCode.ADD_BROKER,
        RequestCode.REMOVE_BROKER,
        RequestCode.BROKER_HEARTBEAT,
        RequestCode.NOTIFY_MIN_BROKER_ID_CHANGE,
        RequestCode.EXCHANGE_BROKER_HA_INFO,
        RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET,
        RequestCode.CONTROLLER_ELECT_MASTER,
        RequestCode.CONTROLLER_REGISTER_BROKER,
        RequestCode.UPDATE_CONTROLLER_CONFIG,
        RequestCode.CLEAN_BROKER_DATA,
        RequestCode.CONTROLLER_GET_NEXT_BROKER_ID,
        RequestCode.CONTROLLER_APPLY_BROKER_ID,
    }
)
ADMIN_CODES = ROCKETMQ_ADMIN_CODES | CLUSTER_ADMIN_CODES


class AclConfigError(ValueError):
    """The plain-access document is not usable; the message names the bad entry."""


def parse_perm(text: object) -> int:
    """Permission.parsePermFromString: PUB, SUB, PUB|SUB (SUB|PUB); anything else DENY."""
    if not isinstance(text, str):
        return DENY
    return _PERM_NAMES.get(text.strip(), DENY)


def perm_allows(needed: int, owned: int) -> bool:
    """Permission.checkPermission: DENY wins; ANY needs PUB or SUB; else a common bit."""
    if owned & DENY:
        return False
    if needed & ANY:
        return bool(owned & (PUB | SUB))
    return bool(needed & owned)


# --- addresses ----------------------------------------------------------------------------


def _segment_matches(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    lo, dash, hi = pattern.partition("-")
    if dash:
        return all(t.isascii() and t.isdigit() for t in (value, lo, hi)) and int(lo) <= int(
            value
        ) <= int(hi)
    return pattern == value


def _dotted_matches(pattern: str, ip: str) -> bool:
    if "{" in pattern and pattern.endswith("}"):
        prefix, _, choices = pattern[:-1].partition("{")
        return any(ip == prefix + choice.strip() for choice in choices.split(","))
    pattern_parts = pattern.split(".")
    ip_parts = ip.split(".")
    if len(pattern_parts) < len(ip_parts) and pattern_parts[-1] == "*":
        pattern_parts += ["*"] * (len(ip_parts) - len(pattern_parts))
    if len(pattern_parts) != len(ip_parts):
        return False
    return all(_segment_matches(p, v) for p, v in zip(pattern_parts, ip_parts, strict=True))


@attrs.frozen
class AddressPattern:
    """One white-list entry (RemoteAddressStrategyFactory's forms, plus CIDR)."""

    text: str

    def matches(self, ip: str) -> bool:
        text = self.text.strip()
        if text in ("*", "*.*.*.*"):
            return True
        if not text:
            return False
        if "{" not in text and "," in text:
            return any(AddressPattern(part).matches(ip) for part in text.split(","))
        if "/" in text:
            try:
                return ipaddress.ip_address(ip) in ipaddress.ip_network(text, strict=False)
            except ValueError:
                return False
        if ":" in text or ":" in ip:
            return text == ip  # IPv6: exact only
        return _dotted_matches(text, ip)


def peer_ip(peer: str) -> str:
    """The address part of ``host:port`` (PlainAccessResource strips the port the same way)."""
    host, sep, _ = peer.rpartition(":")
    return host.strip("[]") if sep else peer


# --- the document -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Account:
    """One entry of ``accounts``."""

    access_key: str
    secret_key: str = attrs.field(repr=False)
    white_remote_address: AddressPattern | None = None
    admin: bool = False
    default_topic_perm: int = DENY
    default_group_perm: int = DENY
    #: Topic name or ``%RETRY%group`` → permission bits.
    resource_perms: Mapping[str, int] = attrs.field(factory=dict)

    def owned_perm(self, resource: str) -> int:
        perm = self.resource_perms.get(resource)
        if perm is not None:
            return perm
        return self.default_group_perm if is_retry_topic(resource) else self.default_topic_perm


@attrs.frozen(kw_only=True)
class AclConfig:
    """A parsed plain-access document."""

    global_white: tuple[AddressPattern, ...] = ()
    accounts: Mapping[str, Account] = attrs.field(factory=dict)

    @classmethod
    def from_document(cls, doc: object) -> AclConfig:
        """Parse a loaded plain_acl.yml; ``AclConfigError`` names what is wrong."""
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise AclConfigError("the document is not a mapping")
        white = _str_list(doc.get("globalWhiteRemoteAddresses"), "globalWhiteRemoteAddresses")
        raw_accounts = doc.get("accounts") or []
        if not isinstance(raw_accounts, list):
            raise AclConfigError("accounts is not a list")
        accounts: dict[str, Account] = {}
        for index, raw in enumerate(raw_accounts):
            account = _account(raw, f"accounts[{index}]")
            if account.access_key in accounts:
                raise AclConfigError(f"accounts[{index}]: accessKey {account.access_key} repeats")
            accounts[account.access_key] = account
        return cls(global_white=tuple(AddressPattern(w) for w in white), accounts=accounts)


def _str_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AclConfigError(f"{what} is not a list of strings")
    return list(value)


def _key(raw: Mapping[str, Any], name: str, what: str) -> str:
    value = raw.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads 12345678 as a number; RocketMQ takes it as text
    if not isinstance(value, str) or len(value) < _MIN_KEY_CHARS:
        raise AclConfigError(f"{what}: {name} must be text longer than 6 characters")
    return value


def _account(raw: object, what: str) -> Account:
    if not isinstance(raw, Mapping):
        raise AclConfigError(f"{what} is not a mapping")
    white = raw.get("whiteRemoteAddress")
    if white is not None and not isinstance(white, str):
        raise AclConfigError(f"{what}: whiteRemoteAddress is not text")
    admin = raw.get("admin", False)
    if not isinstance(admin, bool):
        raise AclConfigError(f"{what}: admin is not true/false")
    perms: dict[str, int] = {}
    for field, as_resource in (("topicPerms", str), ("groupPerms", retry_topic)):
        for entry in _str_list(raw.get(field), f"{what}.{field}"):
            name, eq, perm = entry.partition("=")
            if not eq or not name.strip() or "=" in perm:
                raise AclConfigError(f"{what}.{field}: {entry!r} is not name=PERM")
            perms[as_resource(name.strip())] = parse_perm(perm)
    return Account(
        access_key=_key(raw, "accessKey", what),
        secret_key=_key(raw, "secretKey", what),
        white_remote_address=AddressPattern(white) if white else None,
        admin=admin,
        default_topic_perm=parse_perm(raw.get("defaultTopicPerm")),
        default_group_perm=parse_perm(raw.get("defaultGroupPerm")),
        resource_perms=perms,
    )


# --- one request --------------------------------------------------------------------------


def resources(code: int, ext: Mapping[str, str], body: bytes) -> list[tuple[str, int]]:
    """The (resource, permission) pairs a request needs (PlainAccessResource.parse).

    Raises ``ProtocolError`` for a HEART_BEAT body that does not parse.
    """
    if code == RequestCode.SEND_MESSAGE:
        return [_send_resource(ext.get("topic", ""))]
    if code in (RequestCode.SEND_MESSAGE_V2, RequestCode.SEND_BATCH_MESSAGE):
        return [_send_resource(ext.get("b", ""))]
    if code == RequestCode.RECALL_MESSAGE:
        return [(ext.get("topic", ""), PUB)]
    if code == RequestCode.CONSUMER_SEND_MSG_BACK:
        # Beyond RocketMQ (which checks the group only): the message's topic too, which
        # the broker holds to the record at the offset (SendProcessor.send_back).
        origin = ext.get("originTopic")
        return [(retry_topic(ext.get("group", "")), SUB)] + ([(origin, SUB)] if origin else [])
    if code in _CONSUMING_CODES:
        return [(ext.get("topic", ""), SUB), (retry_topic(ext.get("consumerGroup", "")), SUB)]
    if code == RequestCode.QUERY_MESSAGE:
        return [(ext.get("topic", ""), SUB)]
    if code == RequestCode.HEART_BEAT:
        return _heartbeat_resources(HeartbeatData.from_bytes(body))
    if code in (RequestCode.LOCK_BATCH_MQ, RequestCode.UNLOCK_BATCH_MQ):
        locks = LockBatchRequestBody.from_bytes(body)
        topics = sorted({queue.topic for queue in locks.mq_set})
        return [(retry_topic(locks.consumer_group), SUB)] + [(t, SUB) for t in topics]
    if code == RequestCode.UNREGISTER_CLIENT and not ext.get("consumerGroup"):
        return []  # a producer leaving (RocketMQ would check group "null")
    if code in (RequestCode.UNREGISTER_CLIENT, RequestCode.GET_CONSUMER_LIST_BY_GROUP):
        return [(retry_topic(ext.get("consumerGroup", "")), SUB)]
    if code == RequestCode.UPDATE_CONSUMER_OFFSET:
        return [(retry_topic(ext.get("consumerGroup", "")), SUB), (ext.get("topic", ""), SUB)]
    return []


#: Requests that read a topic for a group: RocketMQ maps PULL_MESSAGE; the others (lite
#: pull, pop, peek, ack, change invisible time, pop notification) read or settle messages
#: the same way, so a PUB-only account must not send them either (RocketMQ's remoting
#: ACL leaves them unchecked).
_CONSUMING_CODES = frozenset(
    {
        RequestCode.PULL_MESSAGE,
        RequestCode.LITE_PULL_MESSAGE,
        RequestCode.POP_MESSAGE,
        RequestCode.PEEK_MESSAGE,
        RequestCode.ACK_MESSAGE,
        RequestCode.CHANGE_MESSAGE_INVISIBLETIME,
        RequestCode.NOTIFICATION,
    }
)


def _send_resource(topic: str) -> tuple[str, int]:
    # A send to %RETRY%group is a consumer's (its group's SUB), as in RocketMQ 5.
    return (topic, SUB if is_retry_topic(topic) else PUB)


def _heartbeat_resources(data: HeartbeatData) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for consumer in data.consumer_data_set:
        out.append((retry_topic(consumer.group_name), SUB))
        out.extend((sub.topic, SUB) for sub in consumer.subscription_data_set)
    return out


@attrs.frozen
class Decision:
    """Whether a request may pass; ``reason`` says why not (None when it may)."""

    reason: str | None
    access_key: str | None = None

    @property
    def allowed(self) -> bool:
        return self.reason is None


ALLOWED = Decision(None)


def _describe(resource: str) -> str:
    if is_retry_topic(resource):
        return f"group {resource[len('%RETRY%') :]}"
    return f"topic {resource}"


def decide(
    config: AclConfig, code: int, ext: Mapping[str, str], body: bytes, remote_ip: str
) -> Decision:
    """PlainPermissionManager.validate for one request from ``remote_ip``."""
    if _any_match(config.global_white, remote_ip):
        return ALLOWED
    access_key = ext.get(ACCESS_KEY)
    if not access_key:
        return Decision("ACL: no AccessKey in the request (sign it with an ACL account)")
    account = config.accounts.get(access_key)
    if account is None:
        return Decision(f"ACL: no account for AccessKey {access_key}", access_key)
    if account.white_remote_address is not None and account.white_remote_address.matches(remote_ip):
        return ALLOWED
    if not signature_matches(ext, body, account.secret_key):
        return Decision(f"ACL: signature check failed for AccessKey {access_key}", access_key)
    return _check_perm(account, code, ext, body)


def _check_perm(account: Account, code: int, ext: Mapping[str, str], body: bytes) -> Decision:
    if code in ADMIN_CODES and not account.admin:
        name = RequestCode(code).name
        return Decision(
            f"ACL: request {name} ({code}) needs an admin account; "
            f"AccessKey {account.access_key} is not one",
            account.access_key,
        )
    try:
        needed = resources(code, ext, body)
    except ProtocolError as exc:
        return Decision(f"ACL: cannot tell what the request touches: {exc}", account.access_key)
    return check_resources(account, needed)


def check_resources(account: Account, needed: Sequence[tuple[str, int]]) -> Decision:
    """Whether ``account`` owns each (resource, permission) of ``needed`` (a topic, or a
    group as its ``%RETRY%group`` topic); shared by remoting and the gRPC proxy."""
    if (TRACE_TOPIC, PUB) in needed:
        return ALLOWED  # RocketMQ lets every account write message traces
    for resource, perm in needed:
        if not perm_allows(perm, account.owned_perm(resource)):
            verb = "publish to" if perm == PUB else "subscribe to"
            return Decision(
                f"ACL: AccessKey {account.access_key} may not {verb} {_describe(resource)}",
                account.access_key,
            )
    return ALLOWED


def _any_match(patterns: Sequence[AddressPattern] | Iterable[AddressPattern], ip: str) -> bool:
    return any(pattern.matches(ip) for pattern in patterns)


__all__ = [
    "ADMIN_CODES",
    "ALLOWED",
    "ANY",
    "DENY",
    "PUB",
    "SUB",
    "Account",
    "AclConfig",
    "AclConfigError",
    "AddressPattern",
    "Decision",
    "check_resources",
    "decide",
    "parse_perm",
    "peer_ip",
    "perm_allows",
    "resources",
]
