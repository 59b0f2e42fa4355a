"""Helpers shared by component, integration and compat tests.

- ``FakeBroker``: what a broker says to a NameServer (REGISTER_BROKER / UNREGISTER_BROKER
  requests built from the wire layout of rocketmq-wire.md §2.16), and the route a client
  should then get back (§4.1). It talks over the real RPC client, never to server internals.
- ``processes``: child processes (``rmq namesrv``, CLI runs, node) under test control.
"""

from __future__ import annotations

import zlib
from typing import Any

import attrs

from protocol.codes import PERM_READ, PERM_WRITE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import RegisterBrokerRequestHeader, UnregisterBrokerRequestHeader
from protocol.route import DataVersion, RegisterBrokerBody, TopicConfig
from protocol.rpc import RemotingClient

PERM_RW = PERM_READ | PERM_WRITE


def java_crc32(data: bytes) -> int:
    """RocketMQ's ``UtilAll.crc32``: the CRC32 masked to a non-negative Java int."""
    return zlib.crc32(data) & 0x7FFFFFFF


def topic_config(name: str, queues: int = 4, perm: int = PERM_RW, **extra: Any) -> TopicConfig:
    """A TopicConfig with ``queues`` read and write queues."""
    return TopicConfig(
        topic_name=name, read_queue_nums=queues, write_queue_nums=queues, perm=perm, **extra
    )


@attrs.frozen(kw_only=True)
class FakeBroker:
    """One broker as a NameServer sees it: identity, topics, data version."""

    cluster: str = "DefaultCluster"
    name: str = "broker-a"
    broker_id: int = 0
    addr: str = "127.0.0.1:10911"
    ha_addr: str = "127.0.0.1:10912"
    topics: tuple[TopicConfig, ...] = ()
    state_version: int = 0
    counter: int = 1
    heartbeat_timeout_ms: int | None = None

    def body(self) -> RegisterBrokerBody:
        return RegisterBrokerBody(
            topic_config_table={t.topic_name: t for t in self.topics},
            data_version=DataVersion(
                counter=self.counter, state_version=self.state_version, timestamp_ms=1_700_000
            ),
        )

    def register_request(
        self, *, compressed: bool = False, crc: bool = True, body: bytes | None = None
    ) -> RemotingCommand:
        """REGISTER_BROKER as a Java broker sends it; ``body`` overrides the encoded body."""
        data = self.body().encode(compressed) if body is None else body
        header = RegisterBrokerRequestHeader(
            broker_name=self.name,
            broker_addr=self.addr,
            cluster_name=self.cluster,
            ha_server_addr=self.ha_addr,
            broker_id=self.broker_id,
            heartbeat_timeout_millis=self.heartbeat_timeout_ms,
            compressed=compressed,
            body_crc32=java_crc32(data) if crc else 0,
        )
        return RemotingCommand.request(RequestCode.REGISTER_BROKER, header.to_ext_fields(), data)

    def unregister_request(self) -> RemotingCommand:
        header = UnregisterBrokerRequestHeader(
            broker_name=self.name,
            broker_addr=self.addr,
            cluster_name=self.cluster,
            broker_id=self.broker_id,
        )
        return RemotingCommand.request(RequestCode.UNREGISTER_BROKER, header.to_ext_fields())

    async def register(
        self, client: RemotingClient, namesrv: str, *, compressed: bool = False
    ) -> RemotingCommand:
        """Register over ``client``'s connection to ``namesrv``; asserts SUCCESS."""
        response = await client.call(namesrv, self.register_request(compressed=compressed))
        assert response.code == ResponseCode.SUCCESS, (response.code, response.remark)
        return response

    def queue_data_json(self, topic: str) -> dict[str, Any]:
        """The QueueData this (master) broker's config of ``topic`` must publish."""
        config = next(t for t in self.topics if t.topic_name == topic)
        return {
            "brokerName": self.name,
            "readQueueNums": config.read_queue_nums,
            "writeQueueNums": config.write_queue_nums,
            "perm": config.perm,
            "topicSysFlag": config.topic_sys_flag,
        }

    def broker_data_json(self, *others: FakeBroker) -> dict[str, Any]:
        """The BrokerData of this broker's group, with ``others`` of the same group."""
        addrs = {str(b.broker_id): b.addr for b in (self, *others)}
        return {
            "cluster": self.cluster,
            "brokerName": self.name,
            "brokerAddrs": dict(sorted(addrs.items())),
            "enableActingMaster": False,
        }

    def route_json(self, topic: str, *slaves: FakeBroker) -> dict[str, Any]:
        """The whole standard-JSON TopicRouteData of a topic only this group hosts."""
        return {
            "queueDatas": [self.queue_data_json(topic)],
            "brokerDatas": [self.broker_data_json(*slaves)],
            "filterServerTable": {},
        }
