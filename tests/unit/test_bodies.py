"""Client-management and admin JSON bodies: real client bodies, tolerance, round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.bodies import (
    BROADCASTING,
    CLUSTERING,
    CONSUME_ACTIVELY,
    CONSUME_FROM_FIRST_OFFSET,
    CONSUME_FROM_LAST_OFFSET,
    CONSUME_FROM_WHERES,
    CONSUME_PASSIVELY,
    CONSUME_TYPES,
    MESSAGE_MODELS,
    Connection,
    ConsumerConnection,
    ConsumerData,
    ConsumerListBody,
    HeartbeatData,
    LockBatchRequestBody,
    LockBatchResponseBody,
    ProducerConnection,
    ProducerData,
    SubscriptionData,
    SubscriptionGroupConfig,
    SubscriptionGroupWrapper,
    TopicConfigSerializeWrapper,
    TopicList,
    UnlockBatchRequestBody,
    parse_subscription,
)
from protocol.errors import MalformedBody
from protocol.message import java_string_hash
from protocol.route import DataVersion, MessageQueue, TopicConfig

# Produced by ali-ons' own code (node, ali-ons 6.x): MQPushConsumer.buildSubscriptionData for
# ("TagA || TagB") and ("*") on the %RETRY% topic, then MQClient._prepareHeartbeatData, then
# JSON.stringify exactly as mq_client_api.js sendHearbeat does. subVersion pinned.
ALIONS_HEARTBEAT = (
    '{"clientID":"10.0.0.5@12345","consumerDataSet":[{"groupName":"GID_alions",'
    '"consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING",'
    '"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","subscriptionDataSet":['
    '{"topic":"TP_alions_test_topic","subString":"TagA || TagB","classFilterMode":false,'
    '"tagsSet":["TagA","TagB"],"codeSet":[2598919,2598920],"subVersion":1700000000123},'
    '{"topic":"%RETRY%GID_alions","subString":"*","classFilterMode":false,"tagsSet":[],'
    '"codeSet":[],"subVersion":1700000000123}],"unitMode":false}],'
    '"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"},{"groupName":"PID_GXCSOCCER"}]}'
)

# What a Java 5.x push consumer's fastjson writes: fields sorted, nulls omitted, the boolean
# getter isWithoutSub() named "withoutSub", heartbeat V2 fingerprint set.
JAVA_HEARTBEAT = (
    '{"clientID":"192.168.1.7@31337#8812441535541","consumerDataSet":[{"consumeFromWhere":'
    '"CONSUME_FROM_FIRST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"cg-orders",'
    '"messageModel":"BROADCASTING","subscriptionDataSet":[{"classFilterMode":false,'
    '"codeSet":[1028554472],"expressionType":"TAG","subString":"created","subVersion":'
    '1712345678901,"tagsSet":["created"],"topic":"orders"}],"unitMode":false}],'
    '"heartbeatFingerprint":-1046382151,"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}],'
    '"withoutSub":true}'
)


def test_alions_heartbeat_parses() -> None:
    hb = HeartbeatData.from_bytes(ALIONS_HEARTBEAT.encode())
    assert hb == HeartbeatData(
        client_id="10.0.0.5@12345",
        producer_data_set=(
            ProducerData(group_name="CLIENT_INNER_PRODUCER"),
            ProducerData(group_name="PID_GXCSOCCER"),
        ),
        consumer_data_set=(
            ConsumerData(
                group_name="GID_alions",
                consume_type=CONSUME_PASSIVELY,
                message_model=CLUSTERING,
                consume_from_where=CONSUME_FROM_LAST_OFFSET,
                subscription_data_set=(
                    SubscriptionData(
                        topic="TP_alions_test_topic",
                        sub_string="TagA || TagB",
                        tags_set=("TagA", "TagB"),
                        code_set=(2598919, 2598920),
                        sub_version=1700000000123,
                    ),
                    SubscriptionData(
                        topic="%RETRY%GID_alions", sub_string="*", sub_version=1700000000123
                    ),
                ),
            ),
        ),
    )
    # ali-ons's utils.hashCode agrees with ours, and so with the ConsumeQueue tag codes.
    assert [java_string_hash(t) for t in ("TagA", "TagB")] == [2598919, 2598920]
    # What ali-ons sends is exactly what parse_subscription builds from the same expression.
    sub = hb.consumer_data_set[0].subscription_data_set[0]
    assert parse_subscription("TagA || TagB", topic=sub.topic, sub_version=sub.sub_version) == sub


def test_java_fastjson_heartbeat_parses() -> None:
    hb = HeartbeatData.from_bytes(JAVA_HEARTBEAT.encode())
    assert hb.client_id == "192.168.1.7@31337#8812441535541"
    assert hb.heartbeat_fingerprint == -1046382151
    assert hb.without_sub is True
    assert hb.producer_data_set == (ProducerData(group_name="CLIENT_INNER_PRODUCER"),)
    (consumer,) = hb.consumer_data_set
    assert consumer == ConsumerData(
        group_name="cg-orders",
        consume_type=CONSUME_PASSIVELY,
        message_model=BROADCASTING,
        consume_from_where=CONSUME_FROM_FIRST_OFFSET,
        subscription_data_set=(
            SubscriptionData(
                topic="orders",
                sub_string="created",
                tags_set=("created",),
                code_set=(java_string_hash("created"),),
                sub_version=1712345678901,
            ),
        ),
    )


def test_both_spellings_of_without_sub() -> None:
    for key in ("withoutSub", "isWithoutSub"):
        body = json.dumps({"clientID": "c", key: True}).encode()
        assert HeartbeatData.from_bytes(body).without_sub is True
    assert HeartbeatData.from_bytes(b'{"clientID":"c"}').without_sub is False


def test_missing_optional_fields_take_defaults() -> None:
    hb = HeartbeatData.from_bytes(
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g",'
        b'"subscriptionDataSet":[{"topic":"t"}]}],"producerDataSet":null}'
    )
    assert hb == HeartbeatData(
        client_id="c",
        consumer_data_set=(
            ConsumerData(group_name="g", subscription_data_set=(SubscriptionData(topic="t"),)),
        ),
    )
    assert hb.consumer_data_set[0].subscription_data_set[0].is_sub_all


def test_heartbeat_round_trips_through_our_encoding() -> None:
    for text in (ALIONS_HEARTBEAT, JAVA_HEARTBEAT):
        hb = HeartbeatData.from_bytes(text.encode())
        assert HeartbeatData.from_bytes(hb.to_bytes()) == hb
        # our output uses Java's field names
        assert set(json.loads(hb.to_bytes())) == {
            "clientID",
            "producerDataSet",
            "consumerDataSet",
            "heartbeatFingerprint",
            "withoutSub",
        }


def test_unknown_fields_are_ignored_and_duplicates_dropped() -> None:
    hb = HeartbeatData.from_json(
        {
            "clientID": "c",
            "language": "JAVA",
            "producerDataSet": [{"groupName": "p"}, {"groupName": "p"}],
            "consumerDataSet": [
                {
                    "groupName": "g",
                    "subscriptionDataSet": [
                        {"topic": "t", "filterClassSource": "x", "tagsSet": ["a", "a"]}
                    ],
                }
            ],
        }
    )
    assert hb.producer_data_set == (ProducerData(group_name="p"),)
    assert hb.consumer_data_set[0].subscription_data_set[0].tags_set == ("a",)


MALFORMED_HEARTBEATS: list[tuple[bytes, str]] = [
    (b"\xff\xfe", "not UTF-8"),
    (b"{", "invalid JSON"),
    (b"[]", "expected a JSON object"),
    (b"{}", "missing 'clientID'"),
    (b'{"clientID":7}', "'clientID' must be a string"),
    (b'{"clientID":"c","consumerDataSet":{}}', "'consumerDataSet' must be a JSON array"),
    (b'{"clientID":"c","producerDataSet":[{}]}', "ProducerData: missing 'groupName'"),
    (b'{"clientID":"c","consumerDataSet":[{}]}', "ConsumerData: missing 'groupName'"),
    (b'{"clientID":"c","consumerDataSet":[7]}', "ConsumerData: expected a JSON object"),
    (
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g","messageModel":"P2P"}]}',
        "'messageModel' is 'P2P'",
    ),
    (
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g","consumeType":"PUSH"}]}',
        "'consumeType' is 'PUSH'",
    ),
    (
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g","consumeFromWhere":1}]}',
        "'consumeFromWhere' must be a string",
    ),
    (
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g","unitMode":"no"}]}',
        "'unitMode' must be a boolean",
    ),
    (
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g","subscriptionDataSet":[{}]}]}',
        "SubscriptionData: missing 'topic'",
    ),
    (
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g","subscriptionDataSet":'
        b'[{"topic":"t","codeSet":["1"]}]}]}',
        "items of 'codeSet' must be an integer",
    ),
    (
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g","subscriptionDataSet":'
        b'[{"topic":"t","tagsSet":[1]}]}]}',
        "items of 'tagsSet' must be strings",
    ),
    (
        b'{"clientID":"c","consumerDataSet":[{"groupName":"g","subscriptionDataSet":'
        b'[{"topic":"t","subVersion":"1"}]}]}',
        "'subVersion' must be an integer",
    ),
    (b'{"clientID":"c","heartbeatFingerprint":true}', "'heartbeatFingerprint' must be an integer"),
    (b'{"clientID":"c","withoutSub":1}', "'withoutSub' must be a boolean"),
    (b'{"clientID":"c","x":NaN}', "NaN"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED_HEARTBEATS)
def test_malformed_heartbeat_raises_clear_error(body: bytes, message: str) -> None:
    with pytest.raises(MalformedBody, match=message.replace("(", r"\(")):
        HeartbeatData.from_bytes(body)


# --- parse_subscription ---------------------------------------------------------------------

SUBSCRIPTIONS: list[tuple[str | None, str, tuple[str, ...]]] = [
    # expression, stored subString, tags
    ("*", "*", ()),
    ("", "*", ()),
    (None, "*", ()),
    ("  *  ", "*", ()),
    ("TagA", "TagA", ("TagA",)),
    ("TagA || TagB", "TagA || TagB", ("TagA", "TagB")),
    ("TagA||TagB||", "TagA||TagB||", ("TagA", "TagB")),
    ("  TagA  ||  TagA ||TagC", "  TagA  ||  TagA ||TagC", ("TagA", "TagC")),
    ("null", "null", ("null",)),  # ali-ons' TAGS=null messages
    ("标签", "标签", ("标签",)),
]


@pytest.mark.parametrize(("expression", "sub_string", "tags"), SUBSCRIPTIONS)
def test_parse_subscription(expression: str | None, sub_string: str, tags: tuple[str, ...]) -> None:
    sub = parse_subscription(expression, topic="T", sub_version=5)
    assert sub == SubscriptionData(
        topic="T",
        sub_string=sub_string,
        tags_set=tags,
        code_set=tuple(java_string_hash(t) for t in tags),
        sub_version=5,
    )
    assert sub.is_sub_all == (not tags)


def test_parse_subscription_rejects_expression_without_tags() -> None:
    for expression in ("||", " || ", "|| ||"):
        with pytest.raises(MalformedBody, match="no tag"):
            parse_subscription(expression)


def test_parse_subscription_sql92() -> None:
    sub = parse_subscription("a > 1", topic="T", expression_type="SQL92")
    assert sub == SubscriptionData(topic="T", sub_string="a > 1", expression_type="SQL92")
    assert not sub.is_sub_all
    assert sub.matches_tags_code(12345)  # not a TAG filter: decided elsewhere
    with pytest.raises(MalformedBody, match="SQL92 expression must not be empty"):
        parse_subscription("  ", expression_type="SQL92")


def test_matches_tags_code() -> None:
    every = parse_subscription("*")
    some = parse_subscription("TagA || TagB")
    for code, every_ok, some_ok in [
        (java_string_hash("TagA"), True, True),
        (java_string_hash("TagB"), True, True),
        (java_string_hash("TagC"), True, False),
        (0, True, False),
    ]:
        assert every.matches_tags_code(code) is every_ok
        assert some.matches_tags_code(code) is some_ok


# --- other bodies ---------------------------------------------------------------------------

MQ_A0 = MessageQueue(topic="T", broker_name="broker-a", queue_id=0)
MQ_A1 = MessageQueue(topic="T", broker_name="broker-a", queue_id=1)


def test_lock_bodies_parse_java_json_and_round_trip() -> None:
    java = (
        b'{"clientId":"10.0.0.5@1","consumerGroup":"g","mqSet":[{"brokerName":"broker-a",'
        b'"queueId":0,"topic":"T"},{"brokerName":"broker-a","queueId":1,"topic":"T"}],'
        b'"onlyThisBroker":true}'
    )
    for cls in (LockBatchRequestBody, UnlockBatchRequestBody):
        body = cls.from_bytes(java)
        assert body == cls(
            consumer_group="g", client_id="10.0.0.5@1", only_this_broker=True, mq_set=(MQ_A0, MQ_A1)
        )
        assert cls.from_bytes(body.to_bytes()) == body
    assert LockBatchRequestBody.from_json({"consumerGroup": "g", "clientId": "c"}) == (
        LockBatchRequestBody(consumer_group="g", client_id="c")
    )
    resp = LockBatchResponseBody(lock_ok_mq_set=(MQ_A1,))
    assert resp.to_json() == {
        "lockOKMQSet": [{"topic": "T", "brokerName": "broker-a", "queueId": 1}]
    }
    assert LockBatchResponseBody.from_bytes(resp.to_bytes()) == resp
    assert LockBatchResponseBody.from_bytes(b"{}") == LockBatchResponseBody()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"clientId": "c"}, "missing 'consumerGroup'"),
        ({"consumerGroup": "g"}, "missing 'clientId'"),
        ({"consumerGroup": "g", "clientId": "c", "mqSet": [{"topic": "T"}]}, "brokerName"),
        ({"consumerGroup": "g", "clientId": "c", "mqSet": "T"}, "must be a JSON array"),
        ({"consumerGroup": "g", "clientId": "c", "onlyThisBroker": "yes"}, "must be a boolean"),
    ],
)
def test_malformed_lock_body(body: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedBody, match=message):
        LockBatchRequestBody.from_json(body)


def test_consumer_list_and_topic_list() -> None:
    body = ConsumerListBody(consumer_id_list=("10.0.0.5@1", "10.0.0.6@2"))
    assert body.to_bytes() == b'{"consumerIdList":["10.0.0.5@1","10.0.0.6@2"]}'
    assert ConsumerListBody.from_bytes(body.to_bytes()) == body
    with pytest.raises(MalformedBody, match="must be strings"):
        ConsumerListBody.from_json({"consumerIdList": [1]})

    topics = TopicList(topic_list=("a", "b"))
    assert topics.to_json() == {"topicList": ["a", "b"]}
    assert TopicList.from_bytes(topics.to_bytes()) == topics
    with_addr = TopicList(topic_list=("a",), broker_addr="10.0.0.1:10911")
    assert TopicList.from_bytes(with_addr.to_bytes()) == with_addr


def test_topic_config_wrapper_parses_java_and_round_trips() -> None:
    java = (
        b'{"dataVersion":{"counter":7,"stateVersion":2,"timestamp":1700000000000},'
        b'"topicConfigTable":{"T":{"order":false,"perm":6,"readQueueNums":4,'
        b'"topicFilterType":"SINGLE_TAG","topicName":"T","topicSysFlag":0,"writeQueueNums":4},'
        b'"U":{"perm":7,"readQueueNums":8,"writeQueueNums":8}},'
        b'"topicQueueMappingInfoMap":{}}'
    )
    wrapper = TopicConfigSerializeWrapper.from_bytes(java)
    assert wrapper == TopicConfigSerializeWrapper(
        topic_config_table={
            "T": TopicConfig(topic_name="T", read_queue_nums=4, write_queue_nums=4),
            "U": TopicConfig(topic_name="U", read_queue_nums=8, write_queue_nums=8, perm=7),
        },
        data_version=DataVersion(counter=7, state_version=2, timestamp_ms=1700000000000),
    )
    assert TopicConfigSerializeWrapper.from_bytes(wrapper.to_bytes()) == wrapper
    assert TopicConfigSerializeWrapper.from_bytes(b"{}") == TopicConfigSerializeWrapper()


def test_subscription_group_config_json() -> None:
    java = (
        b'{"attributes":{},"brokerId":0,"consumeBroadcastEnable":true,"consumeEnable":true,'
        b'"consumeFromMinEnable":true,"consumeMessageOrderly":false,"consumeTimeoutMinute":15,'
        b'"groupName":"GID_x","groupRetryPolicy":{"type":"CUSTOMIZED"},"groupSysFlag":0,'
        b'"notifyConsumerIdsChangedEnable":false,"retryMaxTimes":3,"retryQueueNums":2,'
        b'"whichBrokerWhenConsumeSlowly":1}'
    )
    config = SubscriptionGroupConfig.from_bytes(java)
    assert config == SubscriptionGroupConfig(
        group_name="GID_x",
        notify_consumer_ids_changed_enable=False,
        retry_max_times=3,
        retry_queue_nums=2,
    )
    assert SubscriptionGroupConfig.from_bytes(config.to_bytes()) == config
    assert SubscriptionGroupConfig.from_json({"groupName": "g"}) == SubscriptionGroupConfig(
        group_name="g"
    )
    assert set(config.to_json()) >= {
        "groupName",
        "consumeEnable",
        "consumeFromMinEnable",
        "consumeBroadcastEnable",
        "retryQueueNums",
        "retryMaxTimes",
        "brokerId",
        "whichBrokerWhenConsumeSlowly",
        "notifyConsumerIdsChangedEnable",
        "groupSysFlag",
        "consumeMessageOrderly",
    }
    with pytest.raises(MalformedBody, match="missing 'groupName'"):
        SubscriptionGroupConfig.from_json({})
    with pytest.raises(MalformedBody, match="'retryQueueNums' must be an integer"):
        SubscriptionGroupConfig.from_json({"groupName": "g", "retryQueueNums": "1"})
    with pytest.raises(MalformedBody, match="attribute 'a' must be a string"):
        SubscriptionGroupConfig.from_json({"groupName": "g", "attributes": {"a": 1}})

    wrapper = SubscriptionGroupWrapper(
        subscription_group_table={"GID_x": config}, data_version=DataVersion(counter=3)
    )
    assert SubscriptionGroupWrapper.from_bytes(wrapper.to_bytes()) == wrapper
    keyed_only = SubscriptionGroupWrapper.from_json({"subscriptionGroupTable": {"g": {}}})
    assert keyed_only.subscription_group_table == {"g": SubscriptionGroupConfig(group_name="g")}


def test_connection_bodies_round_trip() -> None:
    conns = (
        Connection(client_id="a@1", client_addr="10.0.0.5:5001", language="JAVA", version=121),
        Connection(client_id="b@2", client_addr="10.0.0.6:5002", language="PYTHON", version=0),
    )
    consumer = ConsumerConnection(
        connection_set=conns,
        subscription_table={"T": parse_subscription("TagA", topic="T")},
        consume_type=CONSUME_ACTIVELY,
        message_model=CLUSTERING,
        consume_from_where=CONSUME_FROM_LAST_OFFSET,
    )
    assert ConsumerConnection.from_bytes(consumer.to_bytes()) == consumer
    assert "consumeType" not in ConsumerConnection().to_json()
    producer = ProducerConnection(connection_set=conns)
    assert ProducerConnection.from_bytes(producer.to_bytes()) == producer


# --- property: any heartbeat survives our encoding --------------------------------------------

names = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N"], include_characters="%_-|@"),
    min_size=1,
    max_size=10,
)
ints32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)

subscriptions = st.builds(
    SubscriptionData,
    topic=names,
    sub_string=st.text(max_size=10),
    tags_set=st.lists(names, max_size=3, unique=True).map(tuple),
    code_set=st.lists(ints32, max_size=3, unique=True).map(tuple),
    sub_version=st.integers(min_value=0, max_value=2**63 - 1),
    class_filter_mode=st.booleans(),
    expression_type=st.sampled_from(["TAG", "SQL92"]),
)
consumers = st.builds(
    ConsumerData,
    group_name=names,
    consume_type=st.sampled_from(sorted(CONSUME_TYPES)),
    message_model=st.sampled_from(sorted(MESSAGE_MODELS)),
    consume_from_where=st.sampled_from(sorted(CONSUME_FROM_WHERES)),
    subscription_data_set=st.lists(subscriptions, max_size=3, unique=True).map(tuple),
    unit_mode=st.booleans(),
)
heartbeats = st.builds(
    HeartbeatData,
    client_id=names,
    producer_data_set=st.lists(
        st.builds(ProducerData, group_name=names), max_size=3, unique=True
    ).map(tuple),
    consumer_data_set=st.lists(consumers, max_size=3, unique=True).map(tuple),
    heartbeat_fingerprint=ints32,
    without_sub=st.booleans(),
)


@given(heartbeats)
def test_any_heartbeat_round_trips(hb: HeartbeatData) -> None:
    assert HeartbeatData.from_bytes(hb.to_bytes()) == hb
