"""ACL decisions (protocol/acl.py): plain_acl.yml parsing, address patterns, per-code
resources and permissions, as RocketMQ's PlainPermissionManager decides them."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from protocol.acl import (
    ADMIN_CODES,
    DENY,
    PUB,
    SUB,
    AclConfig,
    AclConfigError,
    AddressPattern,
    decide,
    parse_perm,
    peer_ip,
    perm_allows,
    resources,
)
from protocol.acl_sign import Credentials, signed_content, signed_ext_fields
from protocol.codes import RequestCode

PLAIN_ACL = """
globalWhiteRemoteAddresses:
  - 10.10.103.*
  - 192.168.0.*
accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    whiteRemoteAddress:
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - topicA=DENY
      - topicB=PUB|SUB
      - topicC=SUB
      - topicP=PUB
    groupPerms:
      - groupA=DENY
      - groupB=PUB|SUB
      - groupC=SUB
  - accessKey: rocketmq2
    secretKey: 12345678
    whiteRemoteAddress: 192.168.1.*
    admin: true
"""
CONFIG = AclConfig.from_document(yaml.safe_load(PLAIN_ACL))
USER = Credentials(access_key="RocketMQ", secret_key="12345678")
ADMIN = Credentials(access_key="rocketmq2", secret_key="12345678")
HERE = "127.0.0.1"


def _decide(
    code: int,
    ext: Mapping[str, str],
    body: bytes = b"",
    *,
    creds: Credentials | None = USER,
    ip: str = HERE,
) -> str | None:
    signed = signed_ext_fields(ext, body, creds) if creds else dict(ext)
    return decide(CONFIG, code, signed, body, ip).reason


def test_document_parses_as_rocketmq_reads_it() -> None:
    user = CONFIG.accounts["RocketMQ"]
    assert user.secret_key == "12345678"  # YAML reads it as a number; RocketMQ as text
    assert (user.admin, user.default_topic_perm, user.default_group_perm) == (False, DENY, SUB)
    assert user.resource_perms == {
        "topicA": DENY,
        "topicB": PUB | SUB,
        "topicC": SUB,
        "topicP": PUB,
        "%RETRY%groupA": DENY,
        "%RETRY%groupB": PUB | SUB,
        "%RETRY%groupC": SUB,
    }
    assert CONFIG.accounts["rocketmq2"].admin
    assert [p.text for p in CONFIG.global_white] == ["10.10.103.*", "192.168.0.*"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("[1, 2]", "not a mapping"),
        ("accounts: 3", "accounts is not a list"),
        ("accounts: [{accessKey: short, secretKey: 12345678}]", "accessKey must be text longer"),
        ("accounts: [{accessKey: longenough}]", "secretKey must be text"),
        ("accounts: [{accessKey: abcdefg, secretKey: abcdefg, admin: yes please}]", "admin"),
        ("accounts: [{accessKey: abcdefg, secretKey: abcdefg, topicPerms: [T]}]", "name=PERM"),
        ("globalWhiteRemoteAddresses: 3", "globalWhiteRemoteAddresses"),
        (
            "accounts: [{accessKey: abcdefg, secretKey: abcdefg},"
            " {accessKey: abcdefg, secretKey: hijklmn}]",
            "repeats",
        ),
    ],
)
def test_bad_documents_are_named(doc: str, message: str) -> None:
    with pytest.raises(AclConfigError, match=message):
        AclConfig.from_document(yaml.safe_load(doc))


def test_empty_document_has_no_accounts() -> None:
    assert AclConfig.from_document(None).accounts == {}


@pytest.mark.parametrize(
    ("text", "perm"),
    [
        ("PUB", PUB),
        ("SUB", SUB),
        ("PUB|SUB", PUB | SUB),
        ("SUB|PUB", PUB | SUB),
        (" DENY ", DENY),
        ("pub", DENY),
        (None, DENY),
        (3, DENY),
    ],
)
def test_parse_perm(text: object, perm: int) -> None:
    assert parse_perm(text) == perm


def test_perm_allows_as_rocketmq_checks() -> None:
    assert perm_allows(PUB, PUB | SUB) and perm_allows(SUB, SUB)
    assert not perm_allows(SUB, PUB)
    assert not perm_allows(PUB, DENY | PUB)
    assert perm_allows(2, SUB) and not perm_allows(2, DENY)  # ANY


@pytest.mark.parametrize(
    ("pattern", "ip", "matches"),
    [
        ("*", "1.2.3.4", True),
        ("*.*.*.*", "1.2.3.4", True),
        ("192.168.0.1", "192.168.0.1", True),
        ("192.168.0.1", "192.168.0.2", False),
        ("192.168.0.1,10.0.0.1", "10.0.0.1", True),
        ("192.168.0.{1,2}", "192.168.0.2", True),
        ("192.168.0.{1,2}", "192.168.0.3", False),
        ("192.168.*", "192.168.7.9", True),
        ("192.168.1-10.*", "192.168.10.9", True),
        ("192.168.1-10.*", "192.168.11.9", False),
        ("10.0.0.0/8", "10.200.0.1", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("::1", "::1", True),
        ("", "1.2.3.4", False),
    ],
)
def test_address_patterns(pattern: str, ip: str, matches: bool) -> None:
    assert AddressPattern(pattern).matches(ip) is matches


def test_peer_ip_strips_the_port() -> None:
    assert peer_ip("127.0.0.1:5555") == "127.0.0.1"
    assert peer_ip("::1:5555") == "::1"


def test_signed_user_may_publish_where_allowed() -> None:
    assert _decide(RequestCode.SEND_MESSAGE_V2, {"a": "P", "b": "topicB"}) is None
    assert _decide(RequestCode.SEND_MESSAGE, {"topic": "topicP"}) is None


def test_unsigned_unknown_and_forged_requests_are_refused() -> None:
    reason = _decide(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"}, creds=None)
    assert reason is not None and "no AccessKey" in reason
    stranger = Credentials(access_key="stranger", secret_key="12345678")
    reason = _decide(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"}, creds=stranger)
    assert reason == "ACL: no account for AccessKey stranger"
    forged = Credentials(access_key="RocketMQ", secret_key="87654321")
    reason = _decide(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"}, creds=forged)
    assert reason == "ACL: signature check failed for AccessKey RocketMQ"
    # A signature over other content (a field changed after signing) fails too.
    ext = signed_ext_fields({"topic": "topicB"}, b"", USER)
    ext["topic"] = "topicA"
    assert decide(CONFIG, RequestCode.QUERY_MESSAGE, ext, b"", HERE).reason is not None


def test_topic_permissions_and_defaults() -> None:
    reason = _decide(RequestCode.SEND_MESSAGE_V2, {"b": "topicC"})
    assert reason == "ACL: AccessKey RocketMQ may not publish to topic topicC"
    assert _decide(RequestCode.SEND_MESSAGE_V2, {"b": "topicA"}) is not None
    assert _decide(RequestCode.SEND_MESSAGE_V2, {"b": "other"}) is not None  # default DENY


def test_pub_only_account_cannot_subscribe() -> None:
    pull = {"topic": "topicP", "consumerGroup": "groupB"}
    reason = _decide(RequestCode.PULL_MESSAGE, pull)
    assert reason == "ACL: AccessKey RocketMQ may not subscribe to topic topicP"
    assert _decide(RequestCode.PULL_MESSAGE, {"topic": "topicB", "consumerGroup": "groupB"}) is None
    reason = _decide(RequestCode.PULL_MESSAGE, {"topic": "topicB", "consumerGroup": "groupA"})
    assert reason == "ACL: AccessKey RocketMQ may not subscribe to group groupA"
    # Groups without an entry take defaultGroupPerm (SUB).
    assert _decide(RequestCode.PULL_MESSAGE, {"topic": "topicC", "consumerGroup": "any"}) is None


def test_heartbeat_subscriptions_are_checked() -> None:
    def body(topic: str) -> bytes:
        sub = {"topic": topic, "subString": "*"}
        consumer = {"groupName": "groupB", "subscriptionDataSet": [sub]}
        return json.dumps({"clientID": "c1", "consumerDataSet": [consumer]}).encode()

    assert _decide(RequestCode.HEART_BEAT, {}, body("topicC")) is None
    assert _decide(RequestCode.HEART_BEAT, {}, body("topicP")) is not None
    reason = _decide(RequestCode.HEART_BEAT, {}, b"{not json")
    assert reason is not None and reason.startswith("ACL: cannot tell what the request touches")


def test_admin_codes_need_an_admin_account() -> None:
    for code in (
        RequestCode.UPDATE_AND_CREATE_TOPIC,
        RequestCode.DELETE_TOPIC_IN_NAMESRV,
        RequestCode.WIPE_WRITE_PERM_OF_BROKER,
        RequestCode.REGISTER_BROKER,
        RequestCode.CLEAN_BROKER_DATA,
        RequestCode.CONTROLLER_ELECT_MASTER,
    ):
        assert code in ADMIN_CODES
        reason = _decide(code, {"topic": "topicB"})
        assert reason is not None and "needs an admin account" in reason, code
        assert _decide(code, {"topic": "topicB"}, creds=ADMIN) is None


def test_white_lists_skip_the_signature() -> None:
    # Globally white-listed: anything, even unsigned (RocketMQ's rule).
    assert _decide(RequestCode.DELETE_TOPIC_IN_NAMESRV, {}, creds=None, ip="10.10.103.7") is None
    # The account's own white list: its AccessKey without a valid signature.
    ext = {"AccessKey": "rocketmq2", "Signature": "wrong"}
    assert decide(CONFIG, RequestCode.SEND_MESSAGE, ext, b"", "192.168.1.9").reason is None
    assert decide(CONFIG, RequestCode.SEND_MESSAGE, ext, b"", "192.168.2.9").reason is not None


def test_trace_topic_is_always_writable() -> None:
    assert _decide(RequestCode.SEND_MESSAGE_V2, {"b": "RMQ_SYS_TRACE_TOPIC"}) is None


def test_retry_send_needs_group_sub() -> None:
    assert resources(RequestCode.SEND_MESSAGE_V2, {"b": "%RETRY%g"}, b"") == [("%RETRY%g", SUB)]
    assert _decide(RequestCode.SEND_MESSAGE_V2, {"b": "%RETRY%groupA"}) is not None
    assert _decide(RequestCode.CONSUMER_SEND_MSG_BACK, {"group": "groupC"}) is None


def test_send_back_needs_sub_on_the_messages_topic_too() -> None:
    # Beyond RocketMQ: the broker holds originTopic to the record, so checking it here
    # keeps a group's member from copying another topic's message into its retry topic.
    ext = {"group": "groupC", "originTopic": "topicC"}
    assert resources(RequestCode.CONSUMER_SEND_MSG_BACK, ext, b"") == [
        ("%RETRY%groupC", SUB),
        ("topicC", SUB),
    ]
    assert _decide(RequestCode.CONSUMER_SEND_MSG_BACK, ext) is None
    assert _decide(RequestCode.CONSUMER_SEND_MSG_BACK, {**ext, "originTopic": "topicA"}) is not None


@pytest.mark.parametrize(
    "code",
    [
        RequestCode.LITE_PULL_MESSAGE,
        RequestCode.POP_MESSAGE,
        RequestCode.PEEK_MESSAGE,
        RequestCode.ACK_MESSAGE,
        RequestCode.CHANGE_MESSAGE_INVISIBLETIME,
        RequestCode.NOTIFICATION,
    ],
)
def test_pop_and_lite_pull_need_sub_like_pull(code: int) -> None:
    assert _decide(code, {"topic": "topicB", "consumerGroup": "groupB"}) is None
    assert _decide(code, {"topic": "topicP", "consumerGroup": "groupB"}) is not None
    assert _decide(code, {"topic": "topicB", "consumerGroup": "groupA"}) is not None


def test_unregister_without_a_group_needs_nothing() -> None:
    assert resources(RequestCode.UNREGISTER_CLIENT, {"producerGroup": "P"}, b"") == []
    assert _decide(RequestCode.UNREGISTER_CLIENT, {"producerGroup": "P"}) is None
    assert _decide(RequestCode.UNREGISTER_CLIENT, {"consumerGroup": "groupA"}) is not None


_text = st.text(max_size=12)
_ext = st.dictionaries(st.sampled_from(["topic", "b", "consumerGroup", "group", "AccessKey",
                                        "Signature", "x"]) | _text, _text, max_size=6)  # fmt: skip


@given(
    code=st.sampled_from(list(RequestCode)) | st.integers(-(2**15), 2**15),
    ext=_ext,
    body=st.binary(max_size=64) | st.sampled_from([b"{", b"[]", b'{"clientID": 1}', b"\xff"]),
    ip=st.sampled_from(["127.0.0.1", "192.168.0.7", "::1", "?"]),
)
def test_decide_never_raises(code: int, ext: dict[str, str], body: bytes, ip: str) -> None:
    decision = decide(CONFIG, code, ext, body, ip)
    assert decision.allowed or (decision.reason or "").startswith("ACL: ")


@given(ext=_ext, body=st.binary(max_size=64), key=_text, value=_text)
def test_signature_roundtrip_and_tamper(
    ext: dict[str, str], body: bytes, key: str, value: str
) -> None:
    signed = signed_ext_fields(ext, body, USER)
    assert decide(CONFIG, RequestCode.GET_ROUTEINFO_BY_TOPIC, signed, body, HERE).allowed
    tampered = {**signed, key: value}
    if key == "Signature" or signed_content(tampered, body) == signed_content(signed, body):
        return  # RocketMQ's scheme signs the values in key order, not the keys (module doc)
    assert not decide(CONFIG, RequestCode.GET_ROUTEINFO_BY_TOPIC, tampered, body, HERE).allowed


def test_queue_locks_need_sub_on_group_and_topics() -> None:
    def body(group: str, topic: str) -> bytes:
        mq = {"topic": topic, "brokerName": "broker-a", "queueId": 0}
        return json.dumps({"consumerGroup": group, "clientId": "c1", "mqSet": [mq]}).encode()

    for code in (RequestCode.LOCK_BATCH_MQ, RequestCode.UNLOCK_BATCH_MQ):
        assert _decide(code, {}, body("groupB", "topicB")) is None
        reason = _decide(code, {}, body("groupA", "topicB"))
        assert reason == "ACL: AccessKey RocketMQ may not subscribe to group groupA"
        assert _decide(code, {}, body("groupB", "topicP")) is not None
        assert _decide(code, {}, b"[]") is not None
