"""Route values of RocketMQ: topic configs, data versions, topic routes, cluster info.

Rules:
- Pure: no I/O, no clock. Every value is a frozen attrs class; treat the dicts and lists
  inside them as read-only (the registry builds new ones instead of mutating).
- JSON uses RocketMQ's camelCase field names (rocketmq-wire.md §4.1). ``to_json()`` returns
  a dict ready for ``json.dumps``; ``dumps_json`` renders it as we put it on the wire:
  standard JSON, sorted keys, no spaces, non-ASCII escaped (fastjson's BrowserCompatible
  form). Integer map keys (``brokerAddrs``) are written as strings: ``{"0": "..."}``.
- Parsing is tolerant the way fastjson is: missing optional fields take Java's defaults,
  unknown fields are ignored, ``topicSynFlag`` (very old servers) is read as
  ``topicSysFlag``, and ``loads_fastjson`` accepts fastjson's bare integer keys
  (``{0:"a"}``). Anything of the wrong type raises ``MalformedBody``.
- ``RegisterBrokerBody`` speaks both REGISTER_BROKER body forms (wire.md §2.16): the JSON
  form and the zlib-compressed length-prefixed form of RegisterBrokerBody.java (decoded
  in bounded steps by protocol/register_body.py, which servers drive). The
  compressed form carries topic configs in TopicConfig.java's text encoding
  ``name readQ writeQ perm filterType attributesJSON``, which has no topicSysFlag and no
  order flag: those two decode as 0 / false, as they do in Java.
- Client views (``publish_queues``, ``subscribe_queues``) follow the Java client's
  ``topicRouteData2TopicPublishInfo`` / ``...SubscribeInfo`` (wire.md §4.2).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from protocol.codes import PERM_READ, PERM_WRITE
from protocol.errors import MalformedBody
from protocol.javanum import INT32_RANGE, INT64_RANGE, parse_java_int
from protocol.jsonbody import (
    as_array,
    as_object,
    bool_field,
    field,
    int_field,
    load_json_body,
    opt_str_field,
    shown,
    str_field,
    str_list,
    str_map,
)

# Re-exported: most callers meet these with the route bodies.
from protocol.jsonbody import dumps_json as dumps_json
from protocol.jsonbody import loads_fastjson as loads_fastjson
from protocol.steps import finish

#: Broker id of a group's master in ``BrokerData.broker_addrs`` (MixAll.MASTER_ID).
MASTER_ID = 0

#: Java's TopicConfig defaults (TopicConfig.defaultReadQueueNums/defaultWriteQueueNums).
DEFAULT_QUEUE_NUMS = 16

#: Values of TopicFilterType.java, sent by name.
TOPIC_FILTER_TYPES = frozenset({"SINGLE_TAG", "MULTI_TAG"})

#: Most queues a route may give one broker group for one topic. Java only bounds them by
#: ``int``, but a client builds one object per queue: a route claiming 2**31 of them (a
#: hostile or broken broker's registration) would exhaust any client's memory. Brokers cap
#: their own topics far lower (1,024 by default); this is the ceiling for anything a route
#: carries, checked by the NameServer on registration and by clients on parsing.
MAX_QUEUE_NUMS = 65_536


def is_readable(perm: int) -> bool:
    """True when ``perm`` has the READ bit (PermName.isReadable)."""
    return perm & PERM_READ == PERM_READ


def is_writeable(perm: int) -> bool:
    """True when ``perm`` has the WRITE bit (PermName.isWriteable)."""
    return perm & PERM_WRITE == PERM_WRITE


# --- values ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TopicConfig:
    """A broker's configuration of one topic (common/TopicConfig.java)."""

    topic_name: str
    read_queue_nums: int = DEFAULT_QUEUE_NUMS
    write_queue_nums: int = DEFAULT_QUEUE_NUMS
    perm: int = PERM_READ | PERM_WRITE
    topic_filter_type: str = "SINGLE_TAG"
    topic_sys_flag: int = 0
    order: bool = False
    attributes: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> TopicConfig:
        """Parse a TopicConfig JSON object (``topicName`` is required)."""
        what = "TopicConfig"
        o = as_object(obj, what)
        filter_type = str_field(o, "topicFilterType", "SINGLE_TAG", what)
        _check_filter_type(filter_type)
        return cls(
            topic_name=str_field(o, "topicName", None, what),
            read_queue_nums=int_field(o, "readQueueNums", DEFAULT_QUEUE_NUMS, what, INT32_RANGE),
            write_queue_nums=int_field(o, "writeQueueNums", DEFAULT_QUEUE_NUMS, what, INT32_RANGE),
            perm=int_field(o, "perm", PERM_READ | PERM_WRITE, what, INT32_RANGE),
            topic_filter_type=filter_type,
            topic_sys_flag=_sys_flag(o, what),
            order=bool_field(o, "order", False, what),
            attributes=str_map(field(o, "attributes", {}), what + ".attributes"),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object fastjson writes for this TopicConfig."""
        return {
            "topicName": self.topic_name,
            "readQueueNums": self.read_queue_nums,
            "writeQueueNums": self.write_queue_nums,
            "perm": self.perm,
            "topicFilterType": self.topic_filter_type,
            "topicSysFlag": self.topic_sys_flag,
            "order": self.order,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_text(cls, text: str) -> TopicConfig:
        """Parse TopicConfig.encode()'s text: ``name readQ writeQ perm filterType [attrs]``.

        Like TopicConfig.decode, unparsable attributes are dropped rather than refused (Java
        splits on spaces, so attributes containing a space never survive this form).
        """
        parts = text.split(" ")
        while parts and not parts[-1]:  # Java's String.split drops trailing empty strings
            parts.pop()
        if len(parts) < 5:
            raise MalformedBody(f"TopicConfig text needs 5 fields, got {shown(text)}")
        read_q, write_q, perm = (parse_java_int(p, INT32_RANGE) for p in parts[1:4])
        if read_q is None or write_q is None or perm is None:
            raise MalformedBody(f"TopicConfig text has a bad number: {shown(text)}")
        _check_filter_type(parts[4])
        attributes: dict[str, str] = {}
        if len(parts) > 5 and parts[5:] != ["{}"]:  # the usual case, without json.loads
            try:
                attributes = str_map(json.loads(" ".join(parts[5:])), "attributes")
            except (ValueError, RecursionError, MalformedBody):
                attributes = {}
        return cls(
            topic_name=parts[0],
            read_queue_nums=read_q,
            write_queue_nums=write_q,
            perm=perm,
            topic_filter_type=parts[4],
            attributes=attributes,
        )

    def to_text(self) -> str:
        """TopicConfig.encode()'s text form (drops topic_sys_flag and order, as Java does)."""
        attributes = json.dumps(self.attributes, sort_keys=True, separators=(",", ":"))
        return (
            f"{self.topic_name} {self.read_queue_nums} {self.write_queue_nums} "
            f"{self.perm} {self.topic_filter_type} {attributes}"
        )


def _check_filter_type(value: str) -> None:
    if value not in TOPIC_FILTER_TYPES:
        raise MalformedBody(f"unknown topicFilterType {shown(value)}")


def _sys_flag(obj: Mapping[str, Any], what: str) -> int:
    if obj.get("topicSysFlag") is not None:
        return int_field(obj, "topicSysFlag", 0, what, INT32_RANGE)
    return int_field(obj, "topicSynFlag", 0, what, INT32_RANGE)


@attrs.frozen(kw_only=True)
class DataVersion:
    """Version of a broker's topic config; ``state_version`` is the master epoch in 5.x."""

    counter: int = 0
    state_version: int = 0
    timestamp_ms: int = 0

    @classmethod
    def from_json(cls, obj: Any) -> DataVersion:
        """Parse ``{"counter":n,"stateVersion":e,"timestamp":ms}``; missing fields are 0."""
        what = "DataVersion"
        o = as_object(obj, what)
        return cls(
            counter=int_field(o, "counter", 0, what),
            state_version=int_field(o, "stateVersion", 0, what),
            timestamp_ms=int_field(o, "timestamp", 0, what),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object fastjson writes for this DataVersion."""
        return {
            "counter": self.counter,
            "stateVersion": self.state_version,
            "timestamp": self.timestamp_ms,
        }

    def next_version(self, *, now_ms: int, state_version: int | None = None) -> DataVersion:
        """The next version (DataVersion.nextVersion): counter + 1, stamped ``now_ms``."""
        return DataVersion(
            counter=self.counter + 1,
            state_version=self.state_version if state_version is None else state_version,
            timestamp_ms=now_ms,
        )


@attrs.frozen(kw_only=True)
class QueueData:
    """One broker group's queues of a topic, as the NameServer publishes them."""

    broker_name: str
    read_queue_nums: int
    write_queue_nums: int
    perm: int
    topic_sys_flag: int = 0

    @classmethod
    def from_topic_config(cls, broker_name: str, config: TopicConfig) -> QueueData:
        """The queue data a master's TopicConfig yields (createAndUpdateQueueData)."""
        return cls(
            broker_name=broker_name,
            read_queue_nums=config.read_queue_nums,
            write_queue_nums=config.write_queue_nums,
            perm=config.perm,
            topic_sys_flag=config.topic_sys_flag,
        )

    @classmethod
    def from_json(cls, obj: Any) -> QueueData:
        """Parse a QueueData object; accepts ``topicSynFlag`` for ``topicSysFlag``."""
        what = "QueueData"
        o = as_object(obj, what)
        return cls(
            broker_name=str_field(o, "brokerName", None, what),
            read_queue_nums=_queue_nums(o, "readQueueNums", what),
            write_queue_nums=_queue_nums(o, "writeQueueNums", what),
            perm=int_field(o, "perm", 0, what, INT32_RANGE),
            topic_sys_flag=_sys_flag(o, what),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object of wire.md §4.1."""
        return {
            "brokerName": self.broker_name,
            "readQueueNums": self.read_queue_nums,
            "writeQueueNums": self.write_queue_nums,
            "perm": self.perm,
            "topicSysFlag": self.topic_sys_flag,
        }


def _queue_nums(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = int_field(obj, key, 0, what, INT32_RANGE)
    if value > MAX_QUEUE_NUMS:
        raise MalformedBody(f"{what}: {key!r} = {value} exceeds {MAX_QUEUE_NUMS} queues")
    return value


@attrs.frozen(kw_only=True)
class BrokerData:
    """A broker group: its cluster, name and addresses by broker id (0 = master)."""

    cluster: str
    broker_name: str
    broker_addrs: dict[int, str] = attrs.field(factory=dict)
    enable_acting_master: bool = False
    zone_name: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> BrokerData:
        """Parse a BrokerData object; ``brokerAddrs`` keys may be "0" or (fastjson) 0."""
        what = "BrokerData"
        o = as_object(obj, what)
        addrs: dict[int, str] = {}
        for key, addr in as_object(field(o, "brokerAddrs", {}), what + ".brokerAddrs").items():
            broker_id = parse_java_int(key, INT64_RANGE)
            if broker_id is None:
                raise MalformedBody(f"{what}: broker id {shown(key)} is not a Java long")
            if not isinstance(addr, str):
                raise MalformedBody(f"{what}: address of broker {key} must be a string")
            addrs[broker_id] = addr
        return cls(
            cluster=str_field(o, "cluster", "", what),
            broker_name=str_field(o, "brokerName", None, what),
            broker_addrs=addrs,
            enable_acting_master=bool_field(o, "enableActingMaster", False, what),
            zone_name=opt_str_field(o, "zoneName", what),
        )

    def to_json(self) -> dict[str, Any]:
        """Standard JSON: broker ids as string keys; ``zoneName`` omitted when unset."""
        out: dict[str, Any] = {
            "cluster": self.cluster,
            "brokerName": self.broker_name,
            "brokerAddrs": {str(k): v for k, v in sorted(self.broker_addrs.items())},
            "enableActingMaster": self.enable_acting_master,
        }
        if self.zone_name is not None:
            out["zoneName"] = self.zone_name
        return out


def master_address(broker_data: BrokerData) -> str | None:
    """The master's address (broker id 0) of a group, or None when it has none."""
    return broker_data.broker_addrs.get(MASTER_ID)


@attrs.frozen(kw_only=True)
class TopicRouteData:
    """The answer to GET_ROUTEINFO_BY_TOPIC (wire.md §4.1)."""

    queue_datas: list[QueueData] = attrs.field(factory=list)
    broker_datas: list[BrokerData] = attrs.field(factory=list)
    filter_server_table: dict[str, list[str]] = attrs.field(factory=dict)
    order_topic_conf: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> TopicRouteData:
        """Parse a route; ``topicQueueMappingByBroker`` (static topics) is ignored."""
        what = "TopicRouteData"
        o = as_object(obj, what)
        queue_datas = as_array(field(o, "queueDatas", []), what + ".queueDatas")
        broker_datas = as_array(field(o, "brokerDatas", []), what + ".brokerDatas")
        filter_servers = as_object(field(o, "filterServerTable", {}), what + ".filterServerTable")
        return cls(
            queue_datas=[QueueData.from_json(q) for q in queue_datas],
            broker_datas=[BrokerData.from_json(b) for b in broker_datas],
            filter_server_table={
                addr: str_list(servers, what + ".filterServerTable")
                for addr, servers in filter_servers.items()
            },
            order_topic_conf=opt_str_field(o, "orderTopicConf", what),
        )

    def to_json(self) -> dict[str, Any]:
        """Standard JSON; ``orderTopicConf`` omitted when unset (fastjson omits nulls)."""
        out: dict[str, Any] = {
            "queueDatas": [q.to_json() for q in self.queue_datas],
            "brokerDatas": [b.to_json() for b in self.broker_datas],
            "filterServerTable": {k: list(v) for k, v in self.filter_server_table.items()},
        }
        if self.order_topic_conf is not None:
            out["orderTopicConf"] = self.order_topic_conf
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> TopicRouteData:
        """Parse a route body (standard JSON or fastjson's bare integer keys)."""
        return cls.from_json(load_json_body(data, "TopicRouteData"))

    def to_bytes(self) -> bytes:
        """The route body as we send it."""
        return dumps_json(self.to_json())


@attrs.frozen(kw_only=True)
class ClusterInfo:
    """The answer to GET_BROKER_CLUSTER_INFO (wire.md §2.14)."""

    broker_addr_table: dict[str, BrokerData] = attrs.field(factory=dict)
    cluster_addr_table: dict[str, list[str]] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> ClusterInfo:
        """Parse ``{"brokerAddrTable":{name:BrokerData},"clusterAddrTable":{c:[names]}}``."""
        what = "ClusterInfo"
        o = as_object(obj, what)
        brokers = as_object(field(o, "brokerAddrTable", {}), what + ".brokerAddrTable")
        clusters = as_object(field(o, "clusterAddrTable", {}), what + ".clusterAddrTable")
        return cls(
            broker_addr_table={name: BrokerData.from_json(b) for name, b in brokers.items()},
            cluster_addr_table={
                name: sorted(str_list(members, what + ".clusterAddrTable"))
                for name, members in clusters.items()
            },
        )

    def to_json(self) -> dict[str, Any]:
        """Standard JSON; cluster members (a Java Set) as sorted arrays."""
        return {
            "brokerAddrTable": {k: v.to_json() for k, v in self.broker_addr_table.items()},
            "clusterAddrTable": {k: sorted(v) for k, v in self.cluster_addr_table.items()},
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> ClusterInfo:
        """Parse a cluster info body (standard JSON or fastjson)."""
        return cls.from_json(load_json_body(data, "ClusterInfo"))

    def to_bytes(self) -> bytes:
        """The cluster info body as we send it."""
        return dumps_json(self.to_json())


# --- REGISTER_BROKER body -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RegisterBrokerBody:
    """Body of REGISTER_BROKER: the broker's topic configs, their version, filter servers.

    Static-topic mapping info (``topicQueueMappingInfoMap``) is read past and never kept.
    """

    topic_config_table: dict[str, TopicConfig] = attrs.field(factory=dict)
    data_version: DataVersion = attrs.field(factory=DataVersion)
    filter_server_list: list[str] = attrs.field(factory=list)

    @classmethod
    def from_json(cls, obj: Any) -> RegisterBrokerBody:
        """Parse the JSON form ``{"topicConfigSerializeWrapper":{...},"filterServerList":[]}``."""
        from protocol.register_body import from_json_steps  # it builds this class

        return finish(from_json_steps(obj))

    def to_json(self) -> dict[str, Any]:
        """The JSON form as a Java broker sends it (empty static-topic mapping)."""
        return {
            "topicConfigSerializeWrapper": {
                "topicConfigTable": {
                    name: config.to_json() for name, config in self.topic_config_table.items()
                },
                "dataVersion": self.data_version.to_json(),
                "topicQueueMappingInfoMap": {},
            },
            "filterServerList": list(self.filter_server_list),
        }

    @classmethod
    def decode(
        cls, body: bytes, compressed: bool, *, max_inflated_bytes: int | None = None
    ) -> RegisterBrokerBody:
        """Decode either body form at once; ``compressed`` is the request header's flag.

        Servers decode with ``protocol.register_body.decode_steps`` (in steps, limited).
        """
        from protocol.register_body import MAX_INFLATED_BYTES, decode_steps

        inflated = MAX_INFLATED_BYTES if max_inflated_bytes is None else max_inflated_bytes
        return finish(decode_steps(body, compressed, max_inflated_bytes=inflated))

    def encode(self, compressed: bool) -> bytes:
        """Encode either body form (compressed: zlib level 9, as Deflater.BEST_COMPRESSION)."""
        if not compressed:
            return dumps_json(self.to_json())
        chunks = [_prefixed(dumps_json(self.data_version.to_json()))]
        chunks.append(struct.pack(">i", len(self.topic_config_table)))
        for name in sorted(self.topic_config_table):
            chunks.append(_prefixed(self.topic_config_table[name].to_text().encode("utf-8")))
        chunks.append(_prefixed(dumps_json(list(self.filter_server_list))))
        chunks.append(struct.pack(">i", 0))  # static-topic mapping count, always written
        return zlib.compress(b"".join(chunks), 9)


def _prefixed(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


# --- client views ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True, order=True, cache_hash=True)  # a dict key per message consumed
class MessageQueue:
    """One queue of a topic on one broker group; orders as Java's MessageQueue.compareTo."""

    topic: str
    broker_name: str
    queue_id: int

    @classmethod
    def from_json(cls, obj: Any) -> MessageQueue:
        """Parse ``{"topic":..,"brokerName":..,"queueId":..}``."""
        what = "MessageQueue"
        o = as_object(obj, what)
        return cls(
            topic=str_field(o, "topic", None, what),
            broker_name=str_field(o, "brokerName", None, what),
            queue_id=int_field(o, "queueId", None, what, INT32_RANGE),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object fastjson writes for a MessageQueue."""
        return {"topic": self.topic, "brokerName": self.broker_name, "queueId": self.queue_id}


def _queues(topic: str, broker_name: str, count: int) -> Iterable[MessageQueue]:
    return (MessageQueue(topic=topic, broker_name=broker_name, queue_id=i) for i in range(count))


def publish_queues(topic: str, route: TopicRouteData) -> list[MessageQueue]:
    """Queues a producer may send to (wire.md §4.2).

    ``orderTopicConf`` (``"broker-a:4;broker-b:4"``) replaces the derivation when set;
    otherwise every writeable QueueData whose group has a master yields its write queues.
    """
    if route.order_topic_conf:
        out: list[MessageQueue] = []
        for item in route.order_topic_conf.split(";"):
            name, sep, count_text = item.partition(":")
            count = parse_java_int(count_text) if sep else None
            if count is None or not 0 <= count <= MAX_QUEUE_NUMS:
                raise MalformedBody(f"bad orderTopicConf entry {shown(item)}")
            out.extend(_queues(topic, name, count))
        return out
    masters = {b.broker_name for b in route.broker_datas if master_address(b) is not None}
    out = []
    for qd in sorted(route.queue_datas, key=lambda q: q.broker_name):
        if is_writeable(qd.perm) and qd.broker_name in masters:
            out.extend(_queues(topic, qd.broker_name, qd.write_queue_nums))
    return out


def subscribe_queues(topic: str, route: TopicRouteData) -> list[MessageQueue]:
    """Queues a consumer may pull from: every readable QueueData's read queues, sorted."""
    out: list[MessageQueue] = []
    for qd in route.queue_datas:
        if is_readable(qd.perm):
            out.extend(_queues(topic, qd.broker_name, qd.read_queue_nums))
    return sorted(out)
