"""Route values: JSON shapes, fastjson tolerance, REGISTER_BROKER bodies, client views."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LimitExceeded, MalformedBody
from protocol.route import (
    MAX_QUEUE_NUMS,
    BrokerData,
    ClusterInfo,
    DataVersion,
    MessageQueue,
    QueueData,
    RegisterBrokerBody,
    TopicConfig,
    TopicRouteData,
    dumps_json,
    loads_fastjson,
    master_address,
    publish_queues,
    subscribe_queues,
)

# --- strategies ---------------------------------------------------------------------------

names = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N"], include_characters="%_-|"),
    min_size=1,
    max_size=12,
)
texts = st.text(max_size=12)
ints = st.integers(min_value=-(2**31), max_value=2**31 - 1)
longs = st.integers(min_value=0, max_value=2**63 - 1)
# Attribute keys/values without spaces: the compressed (text) form splits on spaces.
attr_text = st.text(alphabet=st.characters(exclude_characters=" "), max_size=8)


@st.composite
def topic_configs(draw: st.DrawFn, *, text_safe: bool = False) -> TopicConfig:
    return TopicConfig(
        topic_name=draw(names),
        read_queue_nums=draw(ints),
        write_queue_nums=draw(ints),
        perm=draw(st.integers(0, 15)),
        topic_filter_type=draw(st.sampled_from(["SINGLE_TAG", "MULTI_TAG"])),
        topic_sys_flag=0 if text_safe else draw(ints),
        order=False if text_safe else draw(st.booleans()),
        attributes=draw(st.dictionaries(attr_text if text_safe else texts, attr_text)),
    )


data_versions = st.builds(DataVersion, counter=longs, state_version=longs, timestamp_ms=longs)
queue_nums = st.integers(min_value=-(2**31), max_value=MAX_QUEUE_NUMS)
queue_datas = st.builds(
    QueueData,
    broker_name=names,
    read_queue_nums=queue_nums,
    write_queue_nums=queue_nums,
    perm=st.integers(0, 15),
    topic_sys_flag=ints,
)
broker_datas = st.builds(
    BrokerData,
    cluster=names,
    broker_name=names,
    broker_addrs=st.dictionaries(st.integers(0, 2**40), texts, max_size=4),
    enable_acting_master=st.booleans(),
    zone_name=st.none() | texts,
)
routes = st.builds(
    TopicRouteData,
    queue_datas=st.lists(queue_datas, max_size=4),
    broker_datas=st.lists(broker_datas, max_size=4),
    filter_server_table=st.dictionaries(texts, st.lists(texts, max_size=3), max_size=2),
    order_topic_conf=st.none() | texts,
)
cluster_infos = st.builds(
    ClusterInfo,
    broker_addr_table=st.dictionaries(names, broker_datas, max_size=3),
    cluster_addr_table=st.dictionaries(
        names, st.lists(names, max_size=3, unique=True).map(sorted), max_size=3
    ),
)


@st.composite
def register_bodies(draw: st.DrawFn, *, text_safe: bool = False) -> RegisterBrokerBody:
    configs = draw(st.lists(topic_configs(text_safe=text_safe), max_size=5))
    return RegisterBrokerBody(
        topic_config_table={c.topic_name: c for c in configs},
        data_version=draw(data_versions),
        filter_server_list=draw(st.lists(texts, max_size=3)),
    )


def through_json(obj: dict[str, Any]) -> Any:
    return json.loads(json.dumps(obj))


# --- JSON round trips ---------------------------------------------------------------------


@given(topic_configs())
def test_topic_config_json_round_trip(config: TopicConfig) -> None:
    assert TopicConfig.from_json(through_json(config.to_json())) == config


@given(data_versions)
def test_data_version_json_round_trip(version: DataVersion) -> None:
    assert DataVersion.from_json(through_json(version.to_json())) == version


@given(queue_datas)
def test_queue_data_json_round_trip(qd: QueueData) -> None:
    assert QueueData.from_json(through_json(qd.to_json())) == qd


@given(broker_datas)
def test_broker_data_json_round_trip(bd: BrokerData) -> None:
    assert BrokerData.from_json(through_json(bd.to_json())) == bd


@given(routes)
def test_route_bytes_round_trip(route: TopicRouteData) -> None:
    assert TopicRouteData.from_bytes(route.to_bytes()) == route


@given(cluster_infos)
def test_cluster_info_bytes_round_trip(info: ClusterInfo) -> None:
    assert ClusterInfo.from_bytes(info.to_bytes()) == info


@given(st.builds(MessageQueue, topic=names, broker_name=names, queue_id=ints))
def test_message_queue_json_round_trip(mq: MessageQueue) -> None:
    assert MessageQueue.from_json(through_json(mq.to_json())) == mq


@given(register_bodies())
def test_register_body_json_round_trip(body: RegisterBrokerBody) -> None:
    assert RegisterBrokerBody.decode(body.encode(compressed=False), compressed=False) == body


@given(register_bodies(text_safe=True))
def test_register_body_compressed_round_trip(body: RegisterBrokerBody) -> None:
    assert RegisterBrokerBody.decode(body.encode(compressed=True), compressed=True) == body


def test_compressed_form_drops_sys_flag_and_order_like_java() -> None:
    plain = TopicConfig(topic_name="T", read_queue_nums=4, write_queue_nums=4)
    for config in (attrs.evolve(plain, topic_sys_flag=3), attrs.evolve(plain, order=True)):
        body = RegisterBrokerBody(topic_config_table={"T": config})
        decoded = RegisterBrokerBody.decode(body.encode(compressed=True), compressed=True)
        assert decoded.topic_config_table == {"T": plain}


# --- exact JSON ---------------------------------------------------------------------------

EXAMPLE_ROUTE = (
    '{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911"},"brokerName":"broker-a",'
    '"cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},'
    '"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,'
    '"writeQueueNums":4}]}'
)
EXAMPLE = TopicRouteData(
    queue_datas=[QueueData(broker_name="broker-a", read_queue_nums=4, write_queue_nums=4, perm=6)],
    broker_datas=[
        BrokerData(
            cluster="DefaultCluster", broker_name="broker-a", broker_addrs={0: "127.0.0.1:10911"}
        )
    ],
)


def test_route_example_of_wire_doc_is_exact() -> None:
    assert EXAMPLE.to_bytes() == EXAMPLE_ROUTE.encode()
    assert TopicRouteData.from_bytes(EXAMPLE_ROUTE.encode()) == EXAMPLE


def test_cluster_info_exact_json() -> None:
    info = ClusterInfo(
        broker_addr_table={"broker-a": EXAMPLE.broker_datas[0]},
        cluster_addr_table={"DefaultCluster": ["broker-b", "broker-a"]},
    )
    assert info.to_bytes() == (
        b'{"brokerAddrTable":{"broker-a":{"brokerAddrs":{"0":"127.0.0.1:10911"},'
        b'"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}},'
        b'"clusterAddrTable":{"DefaultCluster":["broker-a","broker-b"]}}'
    )


def test_zone_name_and_order_conf_are_emitted_only_when_set() -> None:
    bd = BrokerData(cluster="c", broker_name="b", broker_addrs={1: "x", 0: "y"}, zone_name="z")
    assert bd.to_json() == {
        "cluster": "c",
        "brokerName": "b",
        "brokerAddrs": {"0": "y", "1": "x"},
        "enableActingMaster": False,
        "zoneName": "z",
    }
    route = TopicRouteData(order_topic_conf="b:2")
    assert route.to_json()["orderTopicConf"] == "b:2"


def test_non_ascii_is_escaped() -> None:
    assert dumps_json({"k": "é"}) == b'{"k":"\\u00e9"}'


def test_topic_config_text_form() -> None:
    config = TopicConfig(
        topic_name="T",
        read_queue_nums=4,
        write_queue_nums=8,
        perm=6,
        attributes={"message.type": "FIFO"},
    )
    assert config.to_text() == 'T 4 8 6 SINGLE_TAG {"message.type":"FIFO"}'
    assert TopicConfig.from_text(config.to_text()) == config
    # 4.x brokers wrote no attributes; 5.x with null attributes leaves a trailing space.
    for text in ("T 4 8 6 SINGLE_TAG", "T 4 8 6 SINGLE_TAG "):
        assert TopicConfig.from_text(text) == TopicConfig(
            topic_name="T", read_queue_nums=4, write_queue_nums=8, perm=6
        )
    # Java ignores attributes it cannot parse (a space inside them splits the JSON).
    assert TopicConfig.from_text("T 1 1 6 MULTI_TAG {bad").attributes == {}
    assert TopicConfig.from_text('T 1 1 6 MULTI_TAG {"a":"b c"}').attributes == {"a": "b c"}


@pytest.mark.parametrize(
    "text", ["", "T 4 8 6", "T x 8 6 SINGLE_TAG", "T 4 8 6 OTHER_TAG", "T 4  8 6 SINGLE_TAG"]
)
def test_topic_config_text_errors(text: str) -> None:
    with pytest.raises(MalformedBody):
        TopicConfig.from_text(text)


# --- tolerant parsing -----------------------------------------------------------------------


def test_missing_fields_take_java_defaults_and_extra_fields_are_ignored() -> None:
    assert TopicConfig.from_json({"topicName": "T", "whatever": [1]}) == TopicConfig(
        topic_name="T",
        read_queue_nums=16,
        write_queue_nums=16,
        perm=6,
        topic_filter_type="SINGLE_TAG",
        topic_sys_flag=0,
        order=False,
        attributes={},
    )
    assert DataVersion.from_json({}) == DataVersion(counter=0, state_version=0, timestamp_ms=0)
    assert TopicRouteData.from_json({"topicQueueMappingByBroker": {"b": {}}}) == TopicRouteData()
    assert BrokerData.from_json({"brokerName": "b", "zoneName": None}) == BrokerData(
        cluster="", broker_name="b"
    )
    assert ClusterInfo.from_json({}) == ClusterInfo()
    assert RegisterBrokerBody.from_json({}) == RegisterBrokerBody()


def test_topic_syn_flag_spelling_is_accepted() -> None:
    old = {"brokerName": "b", "perm": 6, "readQueueNums": 8, "topicSynFlag": 1, "writeQueueNums": 8}
    assert QueueData.from_json(old).topic_sys_flag == 1
    assert TopicConfig.from_json({"topicName": "T", "topicSynFlag": 2}).topic_sys_flag == 2
    both = {**old, "topicSysFlag": 3}
    assert QueueData.from_json(both).topic_sys_flag == 3


def test_register_body_json_uses_table_key_when_topic_name_missing() -> None:
    body = {
        "topicConfigSerializeWrapper": {
            "topicConfigTable": {"T": {"readQueueNums": 2, "writeQueueNums": 2}},
            "dataVersion": {"counter": 3, "stateVersion": 1, "timestamp": 5},
            "topicQueueMappingInfoMap": {},
        },
        "filterServerList": [],
    }
    decoded = RegisterBrokerBody.decode(json.dumps(body).encode(), compressed=False)
    assert decoded == RegisterBrokerBody(
        topic_config_table={
            "T": TopicConfig(topic_name="T", read_queue_nums=2, write_queue_nums=2)
        },
        data_version=DataVersion(counter=3, state_version=1, timestamp_ms=5),
    )


@pytest.mark.parametrize(
    ("cls", "obj"),
    [
        (TopicConfig, {"readQueueNums": 1}),  # no topicName
        (TopicConfig, {"topicName": "T", "perm": "6"}),
        (TopicConfig, {"topicName": "T", "readQueueNums": True}),
        (TopicConfig, {"topicName": "T", "order": 1}),
        (TopicConfig, {"topicName": "T", "attributes": {"a": 1}}),
        (TopicConfig, {"topicName": "T", "topicFilterType": "NOPE"}),
        (DataVersion, [1, 2]),
        (QueueData, {"perm": 6}),
        (BrokerData, {"brokerName": "b", "brokerAddrs": {"master": "x"}}),
        (BrokerData, {"brokerName": "b", "brokerAddrs": {" 1": "x"}}),
        (BrokerData, {"brokerName": "b", "brokerAddrs": {"0": 5}}),
        (BrokerData, {"brokerName": "b", "brokerAddrs": []}),
        (TopicRouteData, {"queueDatas": {}}),
        (TopicRouteData, {"brokerDatas": [1]}),
        (TopicRouteData, {"filterServerTable": {"a": "b"}}),
        (ClusterInfo, {"clusterAddrTable": {"c": "b"}}),
        (RegisterBrokerBody, {"filterServerList": [1]}),
        (MessageQueue, {"topic": "T", "brokerName": "b"}),
    ],
)
def test_wrong_shapes_raise_malformed_body(cls: Any, obj: Any) -> None:
    with pytest.raises(MalformedBody):
        cls.from_json(obj)


@pytest.mark.parametrize("data", [b"\xff", b"{", b"[]", b"null", b'{"queueDatas":NaN}'])
def test_bad_route_bytes_raise_malformed_body(data: bytes) -> None:
    with pytest.raises(MalformedBody):
        TopicRouteData.from_bytes(data)


# --- fastjson bare keys ---------------------------------------------------------------------


def test_fastjson_route_with_bare_integer_keys() -> None:
    text = (
        '{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},'
        '"brokerName":"broker-a","cluster":"DefaultCluster"}],"filterServerTable":{},'
        '"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,'
        '"topicSynFlag":0,"writeQueueNums":4}]}'
    )
    route = TopicRouteData.from_bytes(text.encode())
    assert route.broker_datas[0].broker_addrs == {0: "10.0.0.1:10911", 1: "10.0.0.2:10911"}
    assert route.queue_datas == EXAMPLE.queue_datas


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{0:"a"}', {"0": "a"}),
        ('{ 0 : "a" , -12 :{3:[]}}', {"0": "a", "-12": {"3": []}}),
        ("{\n\t7:1}", {"7": 1}),
        # Text inside strings that looks like a bare key is left exactly as it was.
        ('{"s":"{0:\\"x\\"}, 1:y",2:"{3:z}"}', {"s": '{0:"x"}, 1:y', "2": "{3:z}"}),
        ('{"k\\\\":"v",4:"\\\\"}', {"k\\": "v", "4": "\\"}),
        ('["{0:1}",{5:",6:"}]', ["{0:1}", {"5": ",6:"}]),
        ('{"0":"a"}', {"0": "a"}),
    ],
)
def test_loads_fastjson(text: str, expected: Any) -> None:
    assert loads_fastjson(text) == expected


@pytest.mark.parametrize("text", ["{0:}", "[0:1]", '{0:"a"', '{"a":"b', "{0x1:2}", "", "NaN"])
def test_loads_fastjson_rejects_invalid_text(text: str) -> None:
    with pytest.raises(MalformedBody):
        loads_fastjson(text)


def test_loads_fastjson_rejects_deep_nesting() -> None:
    with pytest.raises(MalformedBody):
        loads_fastjson("{0:" * 100_000)


json_leaves = st.none() | st.booleans() | st.integers() | st.text(alphabet='{}[]:,"\\ 0123abc')
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.integers().map(str) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


def fastjson_dumps(value: Any) -> str:
    """An independent renderer of fastjson's form: integer-like keys written bare."""
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            bare = key.lstrip("-").isdigit() and key.lstrip("-").isascii() and key == str(int(key))
            items.append(f"{key if bare else json.dumps(key)}:{fastjson_dumps(item)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(fastjson_dumps(v) for v in value) + "]"
    return json.dumps(value)


@given(json_values)
def test_loads_fastjson_agrees_with_json_on_fastjson_text(value: Any) -> None:
    assert loads_fastjson(fastjson_dumps(value)) == value
    assert loads_fastjson(json.dumps(value)) == value


# --- REGISTER_BROKER bodies -----------------------------------------------------------------


def java_compressed(
    *, version: bytes, topics: list[bytes], filters: bytes, mappings: list[bytes] | None
) -> bytes:
    """Build a body the way RegisterBrokerBody.encode(true) writes it, field by field."""
    out = struct.pack(">i", len(version)) + version + struct.pack(">i", len(topics))
    for topic in topics:
        out += struct.pack(">i", len(topic)) + topic
    out += struct.pack(">i", len(filters)) + filters
    if mappings is not None:
        out += struct.pack(">i", len(mappings))
        for mapping in mappings:
            out += struct.pack(">i", len(mapping)) + mapping
    return zlib.compress(out, 9)


HAND_BUILT_EXPECTED = RegisterBrokerBody(
    topic_config_table={
        "TopicTest": TopicConfig(
            topic_name="TopicTest",
            read_queue_nums=4,
            write_queue_nums=4,
            perm=6,
            attributes={"message.type": "NORMAL"},
        ),
        "TBW102": TopicConfig(topic_name="TBW102", read_queue_nums=8, write_queue_nums=8, perm=7),
        "%RETRY%g": TopicConfig(
            topic_name="%RETRY%g",
            read_queue_nums=1,
            write_queue_nums=1,
            perm=6,
            topic_filter_type="MULTI_TAG",
        ),
    },
    data_version=DataVersion(counter=7, state_version=3, timestamp_ms=1_700_000_000_123),
    filter_server_list=["10.0.0.9:30000"],
)


@pytest.mark.parametrize("mappings", [None, [], [b'{"topic":"S","bname":"broker-a"}']])
def test_decode_hand_built_compressed_body(mappings: list[bytes] | None) -> None:
    body = java_compressed(
        version=b'{"counter":7,"stateVersion":3,"timestamp":1700000000123}',
        topics=[
            b'TopicTest 4 4 6 SINGLE_TAG {"message.type":"NORMAL"}',
            b"TBW102 8 8 7 SINGLE_TAG {}",
            b"%RETRY%g 1 1 6 MULTI_TAG ",
        ],
        filters=b'["10.0.0.9:30000"]',
        mappings=mappings,
    )
    assert RegisterBrokerBody.decode(body, compressed=True) == HAND_BUILT_EXPECTED


def test_encode_compressed_matches_java_layout() -> None:
    body = RegisterBrokerBody(
        topic_config_table={
            "T": TopicConfig(topic_name="T", read_queue_nums=2, write_queue_nums=2)
        },
        data_version=DataVersion(counter=1, state_version=2, timestamp_ms=3),
    )
    expected = java_compressed(
        version=b'{"counter":1,"stateVersion":2,"timestamp":3}',
        topics=[b"T 2 2 6 SINGLE_TAG {}"],
        filters=b"[]",
        mappings=[],
    )
    assert zlib.decompress(body.encode(compressed=True)) == zlib.decompress(expected)


def test_encode_uncompressed_matches_java_field_names() -> None:
    body = RegisterBrokerBody(
        topic_config_table={"T": TopicConfig(topic_name="T", read_queue_nums=2)},
        data_version=DataVersion(counter=1, state_version=2, timestamp_ms=3),
        filter_server_list=["f"],
    )
    assert json.loads(body.encode(compressed=False)) == {
        "topicConfigSerializeWrapper": {
            "topicConfigTable": {
                "T": {
                    "topicName": "T",
                    "readQueueNums": 2,
                    "writeQueueNums": 16,
                    "perm": 6,
                    "topicFilterType": "SINGLE_TAG",
                    "topicSysFlag": 0,
                    "order": False,
                    "attributes": {},
                }
            },
            "dataVersion": {"counter": 1, "stateVersion": 2, "timestamp": 3},
            "topicQueueMappingInfoMap": {},
        },
        "filterServerList": ["f"],
    }


GOOD_VERSION = b'{"counter":1,"stateVersion":0,"timestamp":0}'
EMPTY_BODY = zlib.decompress(
    java_compressed(version=GOOD_VERSION, topics=[], filters=b"[]", mappings=[])
)


@pytest.mark.parametrize(
    "body",
    [
        b"not zlib at all",
        zlib.compress(EMPTY_BODY)[:-3],  # truncated stream
        zlib.compress(struct.pack(">i", 100) + GOOD_VERSION),  # length past the end
        zlib.compress(struct.pack(">i", -1)),  # negative length
        zlib.compress(struct.pack(">i", len(GOOD_VERSION)) + GOOD_VERSION),  # no topic count
        java_compressed(version=b"[1]", topics=[], filters=b"[]", mappings=None),
        java_compressed(version=GOOD_VERSION, topics=[b"T 1"], filters=b"[]", mappings=None),
        java_compressed(version=GOOD_VERSION, topics=[b"\xff"], filters=b"[]", mappings=None),
        java_compressed(version=GOOD_VERSION, topics=[], filters=b"{}", mappings=None),
        zlib.compress(EMPTY_BODY + b"\x00"),  # trailing bytes after the mappings
    ],
)
def test_bad_compressed_bodies_raise_malformed_body(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        RegisterBrokerBody.decode(body, compressed=True)


def test_compressed_body_inflation_is_capped() -> None:
    bomb = zlib.compress(b"\x00" * 1_000_000)
    with pytest.raises(LimitExceeded, match="inflates past 100000 bytes"):
        RegisterBrokerBody.decode(bomb, compressed=True, max_inflated_bytes=100_000)


# --- client views ---------------------------------------------------------------------------


def mq(broker: str, queue_id: int, topic: str = "T") -> MessageQueue:
    return MessageQueue(topic=topic, broker_name=broker, queue_id=queue_id)


ROUTE = TopicRouteData(
    queue_datas=[
        QueueData(broker_name="c", read_queue_nums=1, write_queue_nums=1, perm=6),
        QueueData(broker_name="a", read_queue_nums=3, write_queue_nums=2, perm=6),
        QueueData(broker_name="b", read_queue_nums=2, write_queue_nums=2, perm=6),  # no master
        QueueData(broker_name="d", read_queue_nums=1, write_queue_nums=1, perm=4),  # read-only
        QueueData(broker_name="e", read_queue_nums=1, write_queue_nums=1, perm=2),  # write-only
        QueueData(broker_name="f", read_queue_nums=1, write_queue_nums=1, perm=6),  # no group
    ],
    broker_datas=[
        BrokerData(cluster="x", broker_name="a", broker_addrs={0: "A0", 1: "A1"}),
        BrokerData(cluster="x", broker_name="b", broker_addrs={1: "B1"}),
        BrokerData(cluster="x", broker_name="c", broker_addrs={0: "C0"}),
        BrokerData(cluster="x", broker_name="d", broker_addrs={0: "D0"}),
        BrokerData(cluster="x", broker_name="e", broker_addrs={0: "E0"}),
    ],
)


def test_publish_queues_need_write_perm_and_a_master() -> None:
    assert publish_queues("T", ROUTE) == [mq("a", 0), mq("a", 1), mq("c", 0), mq("e", 0)]


def test_subscribe_queues_need_read_perm_only() -> None:
    assert subscribe_queues("T", ROUTE) == [
        mq("a", 0),
        mq("a", 1),
        mq("a", 2),
        mq("b", 0),
        mq("b", 1),
        mq("c", 0),
        mq("d", 0),
        mq("f", 0),
    ]


def test_order_topic_conf_replaces_publish_derivation() -> None:
    route = TopicRouteData(
        queue_datas=ROUTE.queue_datas,
        broker_datas=ROUTE.broker_datas,
        order_topic_conf="z:2;a:1",
    )
    assert publish_queues("T", route) == [mq("z", 0), mq("z", 1), mq("a", 0)]
    with pytest.raises(MalformedBody):
        publish_queues("T", TopicRouteData(order_topic_conf="z"))


def test_message_queues_sort_like_java() -> None:
    queues = [mq("b", 0, "T"), mq("a", 10, "T"), mq("a", 2, "T"), mq("z", 0, "S")]
    assert sorted(queues) == [mq("z", 0, "S"), mq("a", 2, "T"), mq("a", 10, "T"), mq("b", 0, "T")]


def test_master_address() -> None:
    assert master_address(ROUTE.broker_datas[0]) == "A0"
    assert master_address(ROUTE.broker_datas[1]) is None
