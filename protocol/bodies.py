"""JSON bodies of client management and admin requests, as RocketMQ and ali-ons send them.

Rules:
- Pure: bytes or parsed JSON in, frozen values out, and back.
- Field names are RocketMQ's (``HeartbeatData.java`` & co., wire.md §2.8–§2.12);
  ``to_json()`` returns a dict for ``dumps_json``, ``to_bytes()`` the body we put on the wire.
- Parsing is tolerant the way fastjson is: missing optional fields take Java's defaults (a
  missing ``subVersion`` is 0, since Java's default is "now" and this module has no clock),
  unknown fields are ignored, ``isWithoutSub`` is read as ``withoutSub``. Bodies are read
  with ``loads_fastjson``: ali-ons sends standard JSON (``JSON.stringify``), Java tools may
  send fastjson's bare integer keys. A value of the wrong type, an unknown enum name, or a
  missing required field raises ``MalformedBody`` naming the body and the field.
- Java ``Set``s travel as JSON arrays; we keep them as tuples in the order received
  (duplicates dropped) so a body round-trips byte for byte.
- ``parse_subscription`` is FilterAPI.buildSubscriptionData: "*" (or empty) subscribes to
  everything, otherwise tags split on "||", trimmed, empties dropped; each tag's code is
  Java's ``String.hashCode`` (what the ConsumeQueue stores as tag code).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from protocol.errors import MalformedBody
from protocol.javanum import INT32_RANGE
from protocol.jsonbody import (
    as_object,
    bool_field,
    check_int,
    field,
    int_field,
    load_json_body,
    opt_str_field,
    shown,
    str_field,
)
from protocol.message import java_string_hash
from protocol.route import DataVersion, MessageQueue, TopicConfig, dumps_json

#: SubscriptionData.SUB_ALL.
SUB_ALL = "*"

#: ExpressionType names.
EXPRESSION_TAG = "TAG"
EXPRESSION_SQL92 = "SQL92"

#: ConsumeType names (sent by name).
CONSUME_ACTIVELY = "CONSUME_ACTIVELY"
CONSUME_PASSIVELY = "CONSUME_PASSIVELY"
CONSUME_POP = "CONSUME_POP"
CONSUME_TYPES = frozenset({CONSUME_ACTIVELY, CONSUME_PASSIVELY, CONSUME_POP})

#: MessageModel names.
CLUSTERING = "CLUSTERING"
BROADCASTING = "BROADCASTING"
MESSAGE_MODELS = frozenset({CLUSTERING, BROADCASTING})

#: ConsumeFromWhere names (the three middle ones are deprecated in Java but still accepted).
CONSUME_FROM_LAST_OFFSET = "CONSUME_FROM_LAST_OFFSET"
CONSUME_FROM_FIRST_OFFSET = "CONSUME_FROM_FIRST_OFFSET"
CONSUME_FROM_TIMESTAMP = "CONSUME_FROM_TIMESTAMP"
CONSUME_FROM_WHERES = frozenset(
    {
        CONSUME_FROM_LAST_OFFSET,
        "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
        "CONSUME_FROM_MIN_OFFSET",
        "CONSUME_FROM_MAX_OFFSET",
        CONSUME_FROM_FIRST_OFFSET,
        CONSUME_FROM_TIMESTAMP,
    }
)


# --- tolerant readers --------------------------------------------------------------------


def _list(obj: Mapping[str, Any], key: str, what: str) -> list[Any]:
    """An optional array field: missing or null is empty."""
    value = field(obj, key, [])
    if not isinstance(value, list):
        raise MalformedBody(f"{what}: {key!r} must be a JSON array, got {shown(value)}")
    return value


def _enum(
    obj: Mapping[str, Any], key: str, default: str, allowed: frozenset[str], what: str
) -> str:
    value = str_field(obj, key, default, what)
    if value not in allowed:
        raise MalformedBody(f"{what}: {key!r} is {shown(value)}, expected one of {sorted(allowed)}")
    return value


def _unique(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _str_items(obj: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    items = _list(obj, key, what)
    for item in items:
        if not isinstance(item, str):
            raise MalformedBody(f"{what}: items of {key!r} must be strings, got {shown(item)}")
    return _unique(items)


def _int32_items(obj: Mapping[str, Any], key: str, what: str) -> tuple[int, ...]:
    items = _list(obj, key, what)
    for item in items:
        check_int(item, f"{what}: items of {key!r}", INT32_RANGE)
    return _unique(items)


def _mqs(obj: Mapping[str, Any], key: str, what: str) -> tuple[MessageQueue, ...]:
    return _unique(MessageQueue.from_json(item) for item in _list(obj, key, what))


def _mq_list(mqs: Iterable[MessageQueue]) -> list[dict[str, Any]]:
    return [mq.to_json() for mq in mqs]


# --- heartbeat ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SubscriptionData:
    """One topic subscription of a consumer group (heartbeat/SubscriptionData.java)."""

    topic: str
    sub_string: str = SUB_ALL
    tags_set: tuple[str, ...] = ()
    code_set: tuple[int, ...] = ()
    sub_version: int = 0
    class_filter_mode: bool = False
    expression_type: str = EXPRESSION_TAG

    @property
    def is_sub_all(self) -> bool:
        """True when the subscription takes every message of the topic."""
        return self.expression_type == EXPRESSION_TAG and self.sub_string == SUB_ALL

    def matches_tags_code(self, tags_code: int) -> bool:
        """The broker's ConsumeQueue-level TAG filter (ExpressionMessageFilter)."""
        if self.expression_type != EXPRESSION_TAG:
            return True  # other expression types are evaluated elsewhere (or not at all)
        return self.is_sub_all or tags_code in self.code_set

    @classmethod
    def from_json(cls, obj: Any) -> SubscriptionData:
        """Parse a SubscriptionData object; ``topic`` is required, ``filterClassSource`` dropped."""
        what = "SubscriptionData"
        o = as_object(obj, what)
        return cls(
            topic=str_field(o, "topic", None, what),
            sub_string=str_field(o, "subString", SUB_ALL, what),
            tags_set=_str_items(o, "tagsSet", what),
            code_set=_int32_items(o, "codeSet", what),
            sub_version=int_field(o, "subVersion", 0, what),
            class_filter_mode=bool_field(o, "classFilterMode", False, what),
            expression_type=str_field(o, "expressionType", EXPRESSION_TAG, what),
        )

    def to_json(self) -> dict[str, Any]:
        """The object fastjson writes (``filterClassSource`` is never serialized)."""
        return {
            "topic": self.topic,
            "subString": self.sub_string,
            "tagsSet": list(self.tags_set),
            "codeSet": list(self.code_set),
            "subVersion": self.sub_version,
            "classFilterMode": self.class_filter_mode,
            "expressionType": self.expression_type,
        }


def parse_subscription(
    sub_string: str | None,
    *,
    topic: str = "",
    sub_version: int = 0,
    expression_type: str | None = None,
) -> SubscriptionData:
    """Build the SubscriptionData for a subscription expression (FilterAPI.build).

    TAG (the default, also for ``None`` or ""): ``"*"``, ``""`` or ``None`` subscribe to every
    message; otherwise ``"TagA || TagB"`` splits on ``||``, each tag trimmed, empty tags and
    duplicates dropped. Whitespace around a lone ``*`` is tolerated (Java would treat
    ``" * "`` as a literal tag). Other expression types (SQL92) keep the expression as is and
    need a non-blank one.
    """
    kind = expression_type or EXPRESSION_TAG
    text = "" if sub_string is None else sub_string
    if kind != EXPRESSION_TAG:
        if not text.strip():
            raise MalformedBody(f"subscription: {kind} expression must not be empty")
        return SubscriptionData(
            topic=topic, sub_string=text, sub_version=sub_version, expression_type=kind
        )
    if text.strip() in ("", SUB_ALL):
        return SubscriptionData(topic=topic, sub_string=SUB_ALL, sub_version=sub_version)
    tags = _unique(tag.strip() for tag in text.split("||") if tag.strip())
    if not tags:
        raise MalformedBody(f"subscription: no tag in expression {shown(text)}")
    return SubscriptionData(
        topic=topic,
        sub_string=text,
        tags_set=tags,
        code_set=_unique(java_string_hash(tag) for tag in tags),
        sub_version=sub_version,
    )


@attrs.frozen(kw_only=True)
class ConsumerData:
    """One consumer group a client runs (heartbeat/ConsumerData.java).

    Missing enums default to what ali-ons and the Java push consumer send.
    """

    group_name: str
    consume_type: str = CONSUME_PASSIVELY
    message_model: str = CLUSTERING
    consume_from_where: str = CONSUME_FROM_LAST_OFFSET
    subscription_data_set: tuple[SubscriptionData, ...] = ()
    unit_mode: bool = False

    @classmethod
    def from_json(cls, obj: Any) -> ConsumerData:
        """Parse a ConsumerData object; ``groupName`` is required."""
        what = "ConsumerData"
        o = as_object(obj, what)
        subs = [SubscriptionData.from_json(s) for s in _list(o, "subscriptionDataSet", what)]
        return cls(
            group_name=str_field(o, "groupName", None, what),
            consume_type=_enum(o, "consumeType", CONSUME_PASSIVELY, CONSUME_TYPES, what),
            message_model=_enum(o, "messageModel", CLUSTERING, MESSAGE_MODELS, what),
            consume_from_where=_enum(
                o, "consumeFromWhere", CONSUME_FROM_LAST_OFFSET, CONSUME_FROM_WHERES, what
            ),
            subscription_data_set=_unique(subs),
            unit_mode=bool_field(o, "unitMode", False, what),
        )

    def to_json(self) -> dict[str, Any]:
        """The object fastjson writes."""
        return {
            "groupName": self.group_name,
            "consumeType": self.consume_type,
            "messageModel": self.message_model,
            "consumeFromWhere": self.consume_from_where,
            "subscriptionDataSet": [s.to_json() for s in self.subscription_data_set],
            "unitMode": self.unit_mode,
        }


@attrs.frozen(kw_only=True)
class ProducerData:
    """One producer group a client runs (heartbeat/ProducerData.java)."""

    group_name: str

    @classmethod
    def from_json(cls, obj: Any) -> ProducerData:
        """Parse ``{"groupName": ...}``."""
        return cls(
            group_name=str_field(as_object(obj, "ProducerData"), "groupName", None, "ProducerData")
        )

    def to_json(self) -> dict[str, Any]:
        """``{"groupName": ...}``."""
        return {"groupName": self.group_name}


@attrs.frozen(kw_only=True)
class HeartbeatData:
    """Body of HEART_BEAT (wire.md §2.8)."""

    client_id: str
    producer_data_set: tuple[ProducerData, ...] = ()
    consumer_data_set: tuple[ConsumerData, ...] = ()
    #: 0 = classic heartbeat; otherwise heartbeat V2 (subscriptions may be left out).
    heartbeat_fingerprint: int = 0
    #: V2 only: the client left subscriptions out because they did not change.
    without_sub: bool = False

    @classmethod
    def from_json(cls, obj: Any) -> HeartbeatData:
        """Parse a HeartbeatData object; ``clientID`` is required."""
        what = "HeartbeatData"
        o = as_object(obj, what)
        without_sub = bool_field(o, "withoutSub", False, what) or bool_field(
            o, "isWithoutSub", False, what
        )
        return cls(
            client_id=str_field(o, "clientID", None, what),
            producer_data_set=_unique(
                ProducerData.from_json(p) for p in _list(o, "producerDataSet", what)
            ),
            consumer_data_set=_unique(
                ConsumerData.from_json(c) for c in _list(o, "consumerDataSet", what)
            ),
            heartbeat_fingerprint=int_field(o, "heartbeatFingerprint", 0, what, INT32_RANGE),
            without_sub=without_sub,
        )

    def to_json(self) -> dict[str, Any]:
        """The object a Java 5.x client writes."""
        return {
            "clientID": self.client_id,
            "producerDataSet": [p.to_json() for p in self.producer_data_set],
            "consumerDataSet": [c.to_json() for c in self.consumer_data_set],
            "heartbeatFingerprint": self.heartbeat_fingerprint,
            "withoutSub": self.without_sub,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> HeartbeatData:
        """Parse a HEART_BEAT body."""
        return cls.from_json(load_json_body(data, "HeartbeatData"))

    def to_bytes(self) -> bytes:
        """The HEART_BEAT body as we send it."""
        return dumps_json(self.to_json())


# --- consumer list, locks, topic list -------------------------------------------------------


@attrs.frozen(kw_only=True)
class ConsumerListBody:
    """Body of a GET_CONSUMER_LIST_BY_GROUP answer: ``{"consumerIdList": [...]}``."""

    consumer_id_list: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> ConsumerListBody:
        """Parse the body; a missing list is empty."""
        o = as_object(obj, "ConsumerListBody")
        return cls(consumer_id_list=_str_items(o, "consumerIdList", "ConsumerListBody"))

    def to_json(self) -> dict[str, Any]:
        """``{"consumerIdList": [...]}``."""
        return {"consumerIdList": list(self.consumer_id_list)}

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsumerListBody:
        """Parse the body bytes."""
        return cls.from_json(load_json_body(data, "ConsumerListBody"))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


@attrs.frozen(kw_only=True)
class LockBatchRequestBody:
    """Body of LOCK_BATCH_MQ (wire.md §2.12); UNLOCK_BATCH_MQ has the same shape."""

    consumer_group: str
    client_id: str
    only_this_broker: bool = False
    mq_set: tuple[MessageQueue, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> LockBatchRequestBody:
        """Parse the body; ``consumerGroup`` and ``clientId`` are required."""
        what = cls.__name__
        o = as_object(obj, what)
        return cls(
            consumer_group=str_field(o, "consumerGroup", None, what),
            client_id=str_field(o, "clientId", None, what),
            only_this_broker=bool_field(o, "onlyThisBroker", False, what),
            mq_set=_mqs(o, "mqSet", what),
        )

    def to_json(self) -> dict[str, Any]:
        """The object fastjson writes."""
        return {
            "consumerGroup": self.consumer_group,
            "clientId": self.client_id,
            "onlyThisBroker": self.only_this_broker,
            "mqSet": _mq_list(self.mq_set),
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> LockBatchRequestBody:
        """Parse the body bytes."""
        return cls.from_json(load_json_body(data, cls.__name__))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


@attrs.frozen(kw_only=True)
class UnlockBatchRequestBody(LockBatchRequestBody):
    """Body of UNLOCK_BATCH_MQ (UnlockBatchRequestBody.java): same fields as the lock body."""


@attrs.frozen(kw_only=True)
class LockBatchResponseBody:
    """Body of a LOCK_BATCH_MQ answer: the queues now locked by the caller."""

    lock_ok_mq_set: tuple[MessageQueue, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> LockBatchResponseBody:
        """Parse ``{"lockOKMQSet": [...]}``."""
        what = "LockBatchResponseBody"
        return cls(lock_ok_mq_set=_mqs(as_object(obj, what), "lockOKMQSet", what))

    def to_json(self) -> dict[str, Any]:
        """``{"lockOKMQSet": [...]}``."""
        return {"lockOKMQSet": _mq_list(self.lock_ok_mq_set)}

    @classmethod
    def from_bytes(cls, data: bytes) -> LockBatchResponseBody:
        """Parse the body bytes."""
        return cls.from_json(load_json_body(data, "LockBatchResponseBody"))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


@attrs.frozen(kw_only=True)
class TopicList:
    """Body of topic-name listings (GET_TOPIC_NAME_LIST, GET_ALL_TOPIC_LIST_FROM_NAMESERVER)."""

    topic_list: tuple[str, ...] = ()
    broker_addr: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> TopicList:
        """Parse ``{"topicList": [...], "brokerAddr": ...}`` (``brokerAddr`` optional)."""
        what = "TopicList"
        o = as_object(obj, what)
        return cls(
            topic_list=_str_items(o, "topicList", what),
            broker_addr=opt_str_field(o, "brokerAddr", what),
        )

    def to_json(self) -> dict[str, Any]:
        """``brokerAddr`` is omitted when unset (fastjson omits nulls)."""
        out: dict[str, Any] = {"topicList": list(self.topic_list)}
        if self.broker_addr is not None:
            out["brokerAddr"] = self.broker_addr
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> TopicList:
        """Parse the body bytes."""
        return cls.from_json(load_json_body(data, "TopicList"))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


# --- broker metadata bodies ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TopicConfigSerializeWrapper:
    """A broker's topic table and its version (GET_ALL_TOPIC_CONFIG, topics.json)."""

    topic_config_table: dict[str, TopicConfig] = attrs.field(factory=dict)
    data_version: DataVersion = attrs.field(factory=DataVersion)

    @classmethod
    def from_json(cls, obj: Any) -> TopicConfigSerializeWrapper:
        """Parse ``{"topicConfigTable": {...}, "dataVersion": {...}}``; mapping fields ignored."""
        what = "TopicConfigSerializeWrapper"
        o = as_object(obj, what)
        raw_table = as_object(o.get("topicConfigTable") or {}, what + ".topicConfigTable")
        table: dict[str, TopicConfig] = {}
        for name, raw in raw_table.items():
            fields = dict(as_object(raw, "TopicConfig"))
            fields.setdefault("topicName", name)
            table[name] = TopicConfig.from_json(fields)
        version = o.get("dataVersion")
        return cls(
            topic_config_table=table,
            data_version=DataVersion() if version is None else DataVersion.from_json(version),
        )

    def to_json(self) -> dict[str, Any]:
        """The wrapper JSON, topics in name order."""
        return {
            "topicConfigTable": {
                name: self.topic_config_table[name].to_json()
                for name in sorted(self.topic_config_table)
            },
            "dataVersion": self.data_version.to_json(),
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> TopicConfigSerializeWrapper:
        """Parse the body bytes."""
        return cls.from_json(load_json_body(data, "TopicConfigSerializeWrapper"))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


@attrs.frozen(kw_only=True)
class SubscriptionGroupConfig:
    """A consumer group's broker-side settings (subscription/SubscriptionGroupConfig.java).

    ``groupRetryPolicy`` and ``subscriptionDataSet`` (5.x pop/proxy features) are not kept.
    """

    group_name: str
    consume_enable: bool = True
    consume_from_min_enable: bool = True
    consume_broadcast_enable: bool = True
    consume_message_orderly: bool = False
    retry_queue_nums: int = 1
    retry_max_times: int = 16
    broker_id: int = 0
    which_broker_when_consume_slowly: int = 1
    notify_consumer_ids_changed_enable: bool = True
    group_sys_flag: int = 0
    consume_timeout_minute: int = 15
    attributes: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> SubscriptionGroupConfig:
        """Parse a SubscriptionGroupConfig object; ``groupName`` is required."""
        what = "SubscriptionGroupConfig"
        o = as_object(obj, what)
        attributes = as_object(o.get("attributes") or {}, what + ".attributes")
        for key, value in attributes.items():
            if not isinstance(value, str):
                raise MalformedBody(
                    f"{what}: attribute {shown(key)} must be a string, got {shown(value)}"
                )
        return cls(
            group_name=str_field(o, "groupName", None, what),
            consume_enable=bool_field(o, "consumeEnable", True, what),
            consume_from_min_enable=bool_field(o, "consumeFromMinEnable", True, what),
            consume_broadcast_enable=bool_field(o, "consumeBroadcastEnable", True, what),
            consume_message_orderly=bool_field(o, "consumeMessageOrderly", False, what),
            retry_queue_nums=int_field(o, "retryQueueNums", 1, what, INT32_RANGE),
            retry_max_times=int_field(o, "retryMaxTimes", 16, what, INT32_RANGE),
            broker_id=int_field(o, "brokerId", 0, what),
            which_broker_when_consume_slowly=int_field(o, "whichBrokerWhenConsumeSlowly", 1, what),
            notify_consumer_ids_changed_enable=bool_field(
                o, "notifyConsumerIdsChangedEnable", True, what
            ),
            group_sys_flag=int_field(o, "groupSysFlag", 0, what, INT32_RANGE),
            consume_timeout_minute=int_field(o, "consumeTimeoutMinute", 15, what, INT32_RANGE),
            attributes=dict(attributes),
        )

    def to_json(self) -> dict[str, Any]:
        """The object fastjson writes."""
        return {
            "groupName": self.group_name,
            "consumeEnable": self.consume_enable,
            "consumeFromMinEnable": self.consume_from_min_enable,
            "consumeBroadcastEnable": self.consume_broadcast_enable,
            "consumeMessageOrderly": self.consume_message_orderly,
            "retryQueueNums": self.retry_queue_nums,
            "retryMaxTimes": self.retry_max_times,
            "brokerId": self.broker_id,
            "whichBrokerWhenConsumeSlowly": self.which_broker_when_consume_slowly,
            "notifyConsumerIdsChangedEnable": self.notify_consumer_ids_changed_enable,
            "groupSysFlag": self.group_sys_flag,
            "consumeTimeoutMinute": self.consume_timeout_minute,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> SubscriptionGroupConfig:
        """Parse an UPDATE_AND_CREATE_SUBSCRIPTIONGROUP body."""
        return cls.from_json(load_json_body(data, "SubscriptionGroupConfig"))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


@attrs.frozen(kw_only=True)
class SubscriptionGroupWrapper:
    """Every group config and its version (GET_ALL_SUBSCRIPTIONGROUP_CONFIG)."""

    subscription_group_table: dict[str, SubscriptionGroupConfig] = attrs.field(factory=dict)
    data_version: DataVersion = attrs.field(factory=DataVersion)

    @classmethod
    def from_json(cls, obj: Any) -> SubscriptionGroupWrapper:
        """Parse ``{"subscriptionGroupTable": {...}, "dataVersion": {...}}``."""
        what = "SubscriptionGroupWrapper"
        o = as_object(obj, what)
        raw_table = as_object(
            o.get("subscriptionGroupTable") or {}, what + ".subscriptionGroupTable"
        )
        table: dict[str, SubscriptionGroupConfig] = {}
        for name, raw in raw_table.items():
            fields = dict(as_object(raw, "SubscriptionGroupConfig"))
            fields.setdefault("groupName", name)
            table[name] = SubscriptionGroupConfig.from_json(fields)
        version = o.get("dataVersion")
        return cls(
            subscription_group_table=table,
            data_version=DataVersion() if version is None else DataVersion.from_json(version),
        )

    def to_json(self) -> dict[str, Any]:
        """The wrapper JSON, groups in name order."""
        return {
            "subscriptionGroupTable": {
                name: self.subscription_group_table[name].to_json()
                for name in sorted(self.subscription_group_table)
            },
            "dataVersion": self.data_version.to_json(),
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> SubscriptionGroupWrapper:
        """Parse the body bytes."""
        return cls.from_json(load_json_body(data, "SubscriptionGroupWrapper"))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


# --- connection listings (admin) ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Connection:
    """One client connection as admin listings show it (body/Connection.java)."""

    client_id: str
    client_addr: str
    language: str = "JAVA"
    version: int = 0

    @classmethod
    def from_json(cls, obj: Any) -> Connection:
        """Parse a Connection object."""
        what = "Connection"
        o = as_object(obj, what)
        return cls(
            client_id=str_field(o, "clientId", None, what),
            client_addr=str_field(o, "clientAddr", "", what),
            language=str_field(o, "language", "JAVA", what),
            version=int_field(o, "version", 0, what, INT32_RANGE),
        )

    def to_json(self) -> dict[str, Any]:
        """The object fastjson writes (language by enum name)."""
        return {
            "clientId": self.client_id,
            "clientAddr": self.client_addr,
            "language": self.language,
            "version": self.version,
        }


@attrs.frozen(kw_only=True)
class ConsumerConnection:
    """Body of a GET_CONSUMER_CONNECTION_LIST answer."""

    connection_set: tuple[Connection, ...] = ()
    subscription_table: dict[str, SubscriptionData] = attrs.field(factory=dict)
    consume_type: str | None = None
    message_model: str | None = None
    consume_from_where: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> ConsumerConnection:
        """Parse the body; missing enums stay ``None`` (Java leaves them null)."""
        what = "ConsumerConnection"
        o = as_object(obj, what)
        table = as_object(o.get("subscriptionTable") or {}, what + ".subscriptionTable")
        return cls(
            connection_set=_unique(
                Connection.from_json(c) for c in _list(o, "connectionSet", what)
            ),
            subscription_table={t: SubscriptionData.from_json(s) for t, s in table.items()},
            consume_type=opt_str_field(o, "consumeType", what),
            message_model=opt_str_field(o, "messageModel", what),
            consume_from_where=opt_str_field(o, "consumeFromWhere", what),
        )

    def to_json(self) -> dict[str, Any]:
        """The body; null enums omitted."""
        out: dict[str, Any] = {
            "connectionSet": [c.to_json() for c in self.connection_set],
            "subscriptionTable": {
                t: self.subscription_table[t].to_json() for t in sorted(self.subscription_table)
            },
        }
        for key, value in (
            ("consumeType", self.consume_type),
            ("messageModel", self.message_model),
            ("consumeFromWhere", self.consume_from_where),
        ):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsumerConnection:
        """Parse the body bytes."""
        return cls.from_json(load_json_body(data, "ConsumerConnection"))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


@attrs.frozen(kw_only=True)
class ProducerConnection:
    """Body of a GET_PRODUCER_CONNECTION_LIST answer."""

    connection_set: tuple[Connection, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> ProducerConnection:
        """Parse ``{"connectionSet": [...]}``."""
        what = "ProducerConnection"
        o = as_object(obj, what)
        return cls(
            connection_set=_unique(Connection.from_json(c) for c in _list(o, "connectionSet", what))
        )

    def to_json(self) -> dict[str, Any]:
        """``{"connectionSet": [...]}``."""
        return {"connectionSet": [c.to_json() for c in self.connection_set]}

    @classmethod
    def from_bytes(cls, data: bytes) -> ProducerConnection:
        """Parse the body bytes."""
        return cls.from_json(load_json_body(data, "ProducerConnection"))

    def to_bytes(self) -> bytes:
        """The body bytes."""
        return dumps_json(self.to_json())


@attrs.frozen(kw_only=True)
class CheckClientRequestBody:
    """CHECK_CLIENT_CONFIG's body (CheckClientRequestBody.java): a subscription to vet."""

    client_id: str = ""
    group: str = ""
    subscription_data: SubscriptionData | None = None

    @classmethod
    def from_json(cls, obj: Any) -> CheckClientRequestBody:
        what = "CheckClientRequestBody"
        o = as_object(obj, what)
        sub = o.get("subscriptionData")
        return cls(
            client_id=str_field(o, "clientId", "", what),
            group=str_field(o, "group", "", what),
            subscription_data=None if sub is None else SubscriptionData.from_json(sub),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"clientId": self.client_id, "group": self.group}
        if self.subscription_data is not None:
            out["subscriptionData"] = self.subscription_data.to_json()
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> CheckClientRequestBody:
        return cls.from_json(load_json_body(data, "CheckClientRequestBody"))

    def to_bytes(self) -> bytes:
        return dumps_json(self.to_json())
