"""Fuzz targets: every decoder of bytes a peer (or a file) can hand us, with seed inputs.

Rules:
- A target decodes one input and may fail only with the project's own errors
  (``protocol.errors.RocketError``); anything else escaping is a finding. A stream target
  is also fed its input split at random points (a decoder must not care where reads end).
- Inputs come from three sources, all deterministic from a ``random.Random``: random bytes,
  valid seed inputs with byte-level mutations (bit flips, interesting int32s, inserted,
  deleted and duplicated ranges, splices), and, for JSON targets, numbers swapped for
  hostile ones (4,300+ digits, beyond int64, NaN, 1e400).
- Used by test_fuzz_decoders.py (Hypothesis, a bounded number of examples in CI) and by
  run_many.py (a million inputs across all targets, once, with a findings report).
- broker/ha/wire.py belongs to the broker; its decoders are fuzzed here read-only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import struct
import zlib
from collections.abc import Callable, Sequence

import attrs

from broker.ha import wire as ha
from protocol import bodies, cbor, controller_bodies, route
from protocol.batch_body import BatchItem, decode_batch_body, encode_batch_body
from protocol.codes import RequestCode
from protocol.command import RemotingCommand
from protocol.errors import ProtocolError
from protocol.frame import Frame, FrameDecoder
from protocol.headers import ALL_HEADERS
from protocol.message import MessageRecord, decode_properties, encode_record, iter_records
from protocol.register_body import decode_summary_steps
from protocol.steps import finish

#: A frame cap small enough that mutated lengths often land on both sides of it.
FUZZ_MAX_FRAME_BYTES = 1 << 20


@attrs.frozen
class Target:
    """One decoder: ``run(data, rng)`` decodes ``data`` (``rng`` picks stream splits)."""

    name: str
    run: Callable[[bytes, random.Random], object]
    seeds: Sequence[bytes]
    json: bool = False


# --- helpers --------------------------------------------------------------------------------


def splits(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at a few random points (sometimes byte by byte for short inputs)."""
    if len(data) < 64 and rng.random() < 0.2:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(4)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


_INTERESTING_32 = [0, 1, -1, 4, 7, 8, 127, 128, 255, 32767, 65535, 2**31 - 1, -(2**31), 1 << 20]
_HOSTILE_NUMBERS = [
    "9" * 4301,
    "-" + "9" * 5000,
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "2147483648",
    "-2147483649",
    "1e400",
    "NaN",
    "Infinity",
    "-0",
    "0.5",
    "1_000",
]


def mutate(seed: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    """``seed`` with 1-4 random byte-level mutations."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # set a byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2 and len(data) >= 4:  # an interesting int32 over 4 bytes
            i = rng.randrange(len(data) - 3)
            data[i : i + 4] = struct.pack(">i", rng.choice(_INTERESTING_32))
        elif op == 3:  # insert random bytes
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and data:  # delete a range
            data[pos : pos + rng.randint(1, 32)] = b""
        elif op == 5 and data:  # duplicate a range
            end = min(len(data), pos + rng.randint(1, 64))
            data[pos:pos] = data[pos:end]
        elif op == 6:  # truncate
            del data[pos:]
        elif others:  # splice with another seed
            other = rng.choice(others)
            cut = rng.randrange(len(other) + 1)
            data[pos:] = other[cut:]
    return bytes(data)


def mutate_json(seed: bytes, rng: random.Random) -> bytes:
    """A JSON seed with its numbers, strings or structure swapped for hostile ones."""
    text = seed.decode("utf-8", "replace")
    op = rng.randrange(4)
    if op == 0:  # a number becomes a hostile one
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        if digits:
            i = rng.choice(digits)
            j = i
            while j < len(text) and text[j].isdigit():
                j += 1
            text = text[:i] + rng.choice(_HOSTILE_NUMBERS) + text[j:]
    elif op == 1:  # a value becomes a different JSON type
        colons = [i for i, c in enumerate(text) if c == ":"]
        if colons:
            i = rng.choice(colons) + 1
            replacement = rng.choice(['"x"', "[]", "{}", "null", "true", "-1", '[1,"a"]', "0.5"])
            end = i
            while end < len(text) and text[end] not in ",}]":
                end += 1
            text = text[:i] + replacement + text[end:]
    elif op == 2:  # deep nesting
        depth = rng.choice([50, 500, 5000])
        text = "[" * depth + text + "]" * depth
    else:  # quoted keys become bare (fastjson), or bare integers get quoted
        text = text.replace('"0":', "0:", 1) if rng.random() < 0.5 else text.replace(":1", ':"1"')
    return text.encode("utf-8", "surrogatepass")


def json_input(target: Target, rng: random.Random) -> bytes:
    """One input for ``target``: mostly mutated seeds, some random bytes or JSON values."""
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randrange(64))
    if roll < 0.15:
        return json.dumps(random_json(rng, 3)).encode()
    seed = rng.choice(target.seeds)
    if target.json and roll < 0.55:
        return mutate_json(seed, rng)
    return mutate(seed, rng, target.seeds)


def random_json(rng: random.Random, depth: int) -> object:
    leaves: list[Callable[[], object]] = [
        lambda: None,
        lambda: rng.random() < 0.5,
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.choice(["", "a", "TAG", "*", "\u0000", "\ud800", "x" * 300]),
        rng.random,
    ]
    if depth <= 0 or rng.random() < 0.4:
        return rng.choice(leaves)()
    if rng.random() < 0.5:
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    keys = ["topic", "brokerName", "queueId", "brokerAddrs", "0", "perm", "clientID", "x"]
    return {rng.choice(keys): random_json(rng, depth - 1) for _ in range(rng.randrange(5))}


# --- seeds ----------------------------------------------------------------------------------


def _commands() -> list[RemotingCommand]:
    examples = [RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "T"})]
    for cls in ALL_HEADERS:
        ext: dict[str, str] = {}
        for spec in cls._field_specs():
            ext[spec.wire] = {str: "x", int: "7", bool: "true"}[spec.kind]
        examples.append(RemotingCommand.request(cls.CODE or 0, ext, b"body"))
    examples.append(examples[0].respond(remark="remark", body=b"\x00\x01"))
    return examples


COMMANDS = _commands()


def _records() -> list[bytes]:
    base = MessageRecord(
        topic="TopicA",
        body=b"hello world",
        queue_id=3,
        born_timestamp_ms=1_700_000_000_000,
        born_host=("10.0.0.1", 4567),
        store_timestamp_ms=1_700_000_000_100,
        store_host=("10.0.0.2", 10911),
        queue_offset=42,
        physical_offset=4096,
        properties={"TAGS": "a", "KEYS": "k1 k2", "UNIQ_KEY": "ABC"},
    )
    long_topic = attrs.evolve(base, topic="t" * 200, body=b"", properties={})
    compressed = attrs.evolve(base, sys_flag=1, body=zlib.compress(b"x" * 1000))
    return [encode_record(r) for r in (base, long_topic, compressed)]


RECORDS = _records()
BATCHES = [
    encode_batch_body(
        [
            BatchItem(body=b"one", properties={"KEYS": "k"}),
            BatchItem(body=b"", flag=7),
            BatchItem(body=b"three" * 50, properties={"TAGS": "t", "UNIQ_KEY": "U"}),
        ]
    )
]

_TOPIC = route.TopicConfig(topic_name="TopicA", read_queue_nums=4, write_queue_nums=4)
_VERSION = route.DataVersion(counter=3, state_version=2, timestamp_ms=1_700_000_000_000)
_BROKER = route.BrokerData(cluster="c", broker_name="b", broker_addrs={0: "a:1", 1: "b:2"})
_QUEUE = route.QueueData(broker_name="b", read_queue_nums=4, write_queue_nums=4, perm=6)
_MQ = route.MessageQueue(topic="T", broker_name="b", queue_id=1)
_SUB = bodies.parse_subscription("TagA || TagB", topic="T", sub_version=5)
_CONSUMER = bodies.ConsumerData(group_name="g", subscription_data_set=(_SUB,))
_REGISTER = route.RegisterBrokerBody(
    topic_config_table={"TopicA": _TOPIC, "B": attrs.evolve(_TOPIC, topic_name="B")},
    data_version=_VERSION,
)
_REPLICA = controller_bodies.ReplicaIdentity(
    broker_name="b", broker_id=1, broker_address="a:1", alive=True
)


def _fastjson(body: bytes) -> bytes:
    """fastjson's bare integer keys, as Java peers send ``Map<Long, ...>``."""
    return body.replace(b'"0":', b"0:").replace(b'"1":', b"1:")


#: Body parsers and valid bodies for each.
BODY_SEEDS: dict[str, tuple[Callable[[bytes], object], list[bytes]]] = {
    "HeartbeatData": (
        bodies.HeartbeatData.from_bytes,
        [
            bodies.HeartbeatData(
                client_id="c",
                producer_data_set=(bodies.ProducerData(group_name="p"),),
                consumer_data_set=(_CONSUMER,),
            ).to_bytes()
        ],
    ),
    "ConsumerListBody": (
        bodies.ConsumerListBody.from_bytes,
        [bodies.ConsumerListBody(consumer_id_list=("a", "b")).to_bytes()],
    ),
    "LockBatchRequestBody": (
        bodies.LockBatchRequestBody.from_bytes,
        [bodies.LockBatchRequestBody(consumer_group="g", client_id="c", mq_set=(_MQ,)).to_bytes()],
    ),
    "LockBatchResponseBody": (
        bodies.LockBatchResponseBody.from_bytes,
        [bodies.LockBatchResponseBody(lock_ok_mq_set=(_MQ,)).to_bytes()],
    ),
    "TopicList": (bodies.TopicList.from_bytes, [bodies.TopicList(topic_list=("a",)).to_bytes()]),
    "SubscriptionGroupConfig": (
        bodies.SubscriptionGroupConfig.from_bytes,
        [bodies.SubscriptionGroupConfig(group_name="g", attributes={"a": "b"}).to_bytes()],
    ),
    "TopicConfigSerializeWrapper": (
        bodies.TopicConfigSerializeWrapper.from_bytes,
        [
            bodies.TopicConfigSerializeWrapper(
                topic_config_table={"TopicA": _TOPIC}, data_version=_VERSION
            ).to_bytes()
        ],
    ),
    "SubscriptionGroupWrapper": (
        bodies.SubscriptionGroupWrapper.from_bytes,
        [
            bodies.SubscriptionGroupWrapper(
                subscription_group_table={"g": bodies.SubscriptionGroupConfig(group_name="g")}
            ).to_bytes()
        ],
    ),
    "ConsumerConnection": (
        bodies.ConsumerConnection.from_bytes,
        [
            bodies.ConsumerConnection(
                connection_set=(bodies.Connection(client_id="c", client_addr="a"),),
                subscription_table={"T": _SUB},
                consume_type="CONSUME_PASSIVELY",
            ).to_bytes()
        ],
    ),
    "ProducerConnection": (
        bodies.ProducerConnection.from_bytes,
        [
            bodies.ProducerConnection(
                connection_set=(bodies.Connection(client_id="c", client_addr="a"),)
            ).to_bytes()
        ],
    ),
    "CheckClientRequestBody": (
        bodies.CheckClientRequestBody.from_bytes,
        [
            bodies.CheckClientRequestBody(
                client_id="c", group="g", subscription_data=_SUB
            ).to_bytes()
        ],
    ),
    "TopicRouteData": (
        lambda data: _route_views(route.TopicRouteData.from_bytes(data)),
        [
            route.TopicRouteData(queue_datas=[_QUEUE], broker_datas=[_BROKER]).to_bytes(),
            _fastjson(
                route.TopicRouteData(queue_datas=[_QUEUE], broker_datas=[_BROKER]).to_bytes()
            ),
            route.TopicRouteData(order_topic_conf="b:4;c:2", broker_datas=[_BROKER]).to_bytes(),
        ],
    ),
    "ClusterInfo": (
        route.ClusterInfo.from_bytes,
        [
            _fastjson(
                route.ClusterInfo(
                    broker_addr_table={"b": _BROKER}, cluster_addr_table={"c": ["b"]}
                ).to_bytes()
            )
        ],
    ),
    "RegisterBrokerBody": (
        lambda data: route.RegisterBrokerBody.decode(data, compressed=False),
        [_REGISTER.encode(compressed=False)],
    ),
    "SyncStateSet": (
        controller_bodies.SyncStateSet.from_bytes,
        [controller_bodies.SyncStateSet(sync_state_set=[1, 2], sync_state_set_epoch=3).to_bytes()],
    ),
    "ElectMasterResponseBody": (
        controller_bodies.ElectMasterResponseBody.from_bytes,
        [
            _fastjson(
                controller_bodies.ElectMasterResponseBody(
                    broker_member_group=controller_bodies.BrokerMemberGroup(
                        cluster="c", broker_name="b", broker_addrs={0: "a:1", 1: "b:1"}
                    ),
                    sync_state_set=[0, 1],
                ).to_bytes()
            )
        ],
    ),
    "BrokerReplicasInfo": (
        controller_bodies.BrokerReplicasInfo.from_bytes,
        [
            controller_bodies.BrokerReplicasInfo(
                replicas_info_table={
                    "b": controller_bodies.ReplicasInfo(
                        master_broker_id=0,
                        master_address="a:1",
                        master_epoch=2,
                        sync_state_set_epoch=3,
                        in_sync_replicas=(_REPLICA,),
                    )
                }
            ).to_bytes()
        ],
    ),
    "EpochEntryCache": (
        controller_bodies.EpochEntryCache.from_bytes,
        [
            controller_bodies.EpochEntryCache(
                cluster_name="c",
                broker_name="b",
                broker_id=1,
                epoch_list=(controller_bodies.EpochEntry(epoch=1, start_offset=0),),
                max_offset=10,
            ).to_bytes()
        ],
    ),
    "GetSyncStateData names": (controller_bodies.parse_broker_names, [b'["a","b"]']),
}


def body_classes() -> set[str]:
    """Names of the classes in protocol/ that parse a body with their own ``from_bytes``."""
    return {
        name
        for module in (bodies, route, controller_bodies)
        for name, value in vars(module).items()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and "from_bytes" in vars(value)
    }


def _route_views(parsed: route.TopicRouteData) -> None:
    """What the SDK does with a route next: its publish and subscribe queue lists."""
    route.publish_queues("T", parsed)
    route.subscribe_queues("T", parsed)


# --- targets --------------------------------------------------------------------------------


def _frames(data: bytes, rng: random.Random) -> None:
    decoder = FrameDecoder(max_frame_bytes=FUZZ_MAX_FRAME_BYTES)
    for chunk in splits(data, rng):
        for frame in decoder.feed(chunk):
            RemotingCommand.from_frame(frame)


def _header(serialize_type: int) -> Callable[[bytes, random.Random], object]:
    def run(data: bytes, rng: random.Random) -> None:
        command = RemotingCommand.from_frame(
            Frame(serialize_type=serialize_type, header=data, body=b"")
        )
        for cls in ALL_HEADERS:  # every typed header reads these ext fields
            with contextlib.suppress(ProtocolError):
                cls.from_ext_fields(command.ext_fields)

    return run


def _records_run(data: bytes, rng: random.Random) -> None:
    # iter_records decodes at every record boundary; a mutated length moves the next one.
    for _ in iter_records(data, check_crc=rng.random() < 0.5):
        pass


def _register_compressed(data: bytes, rng: random.Random) -> None:
    # Mutations of the inflated seed are compressed here, so they reach the parser;
    # mutations of the compressed seed (zlib's 0x78 first byte) test the inflater.
    if not data.startswith(b"\x78"):
        data = zlib.compress(data)
    finish(decode_summary_steps(data, True, max_topics=10_000, max_inflated_bytes=1 << 20))


def _ha_master_side(data: bytes, rng: random.Random) -> None:
    decoder = ha.MasterSideDecoder()
    for chunk in splits(data, rng):
        decoder.feed(chunk)


def _ha_slave_side(data: bytes, rng: random.Random) -> None:
    decoder = ha.SlaveSideDecoder(max_body_bytes=1 << 16)
    for chunk in splits(data, rng):
        decoder.feed(chunk)


def _cbor(data: bytes, rng: random.Random) -> None:
    cbor.loads(data, kind="fuzz", max_version=2)


def _topic_text(data: bytes, rng: random.Random) -> None:
    route.TopicConfig.from_text(data.decode("utf-8", "replace"))


def _subscription(data: bytes, rng: random.Random) -> None:
    text = data.decode("utf-8", "replace")
    bodies.parse_subscription(text, expression_type=rng.choice([None, "TAG", "SQL92"]))


CBOR_SEEDS = [
    cbor.dumps("fuzz", 1, {"a": [1, 2, {"b": b"x"}], "c": -(2**70), "d": 1.5, "e": None}),
    # tags a hostile file may carry: bignum, rational, datetime, regex, set, references
    bytes.fromhex(
        "a3646b696e6464667a7a7a6776657273696f6e016770617966c2 49 010000000000000000".replace(
            " ", ""
        )
    ),
    bytes.fromhex("a3646b696e6464667a7a7a6776657273696f6e01677061796cd8 23 6128".replace(" ", "")),
    bytes.fromhex(
        "a3646b696e6464667a7a7a6776657273696f6e01677061796cd9 0102 820101".replace(" ", "")
    ),
    bytes.fromhex(
        "a3646b696e6464667a7a7a6776657273696f6e01677061796cd8 1e 820100".replace(" ", "")
    ),
    bytes.fromhex("9b7fffffffffffffff"),
]

_INFLATED_REGISTER = zlib.decompress(_REGISTER.encode(compressed=True))


def all_targets() -> list[Target]:
    """Every target, frame and header decoders first."""
    frames = [c.encode() for c in COMMANDS[:8]] + [c.encode_binary() for c in COMMANDS[:8]]
    targets = [
        Target("frame", _frames, [b"".join(frames[:3]), *frames]),
        Target("header/json", _header(0), [c.header_json() for c in COMMANDS], json=True),
        Target("header/rocketmq", _header(1), [c.header_binary() for c in COMMANDS]),
        Target("record", _records_run, [*RECORDS, b"".join(RECORDS)]),
        Target("batch", lambda d, r: decode_batch_body(d), BATCHES),
        Target("properties", lambda d, r: decode_properties(d), [b"TAGS\x01a\x02KEYS\x01b\x02"]),
        Target(
            "body/RegisterBrokerBody(compressed)",
            _register_compressed,
            [_INFLATED_REGISTER, _REGISTER.encode(compressed=True)],
        ),
        Target("body/TopicConfig(text)", _topic_text, [_TOPIC.to_text().encode()]),
        Target("body/subscription", _subscription, [b"TagA || TagB", b"a > 1 AND b = 'x'"]),
        Target("cbor", _cbor, CBOR_SEEDS),
        Target(
            "ha/master-side",
            _ha_master_side,
            [ha.SlaveHandshake(slave_broker_id=2).encode() + ha.Ack(max_offset=99).encode() * 3],
        ),
        Target(
            "ha/slave-side",
            _ha_slave_side,
            [
                ha.MasterHandshake(max_offset=10, last_epoch=2, epochs=((1, 0), (2, 5))).encode()
                + ha.Transfer(
                    offset=0, epoch=2, epoch_start_offset=5, confirm_offset=3, data=RECORDS[0]
                ).encode()
            ],
        ),
    ]
    for name, (parse, seeds) in BODY_SEEDS.items():
        targets.append(Target(f"body/{name}", lambda d, r, p=parse: p(d), seeds, json=True))
    return targets


TARGETS = {t.name: t for t in all_targets()}


def one_input(target: Target, rng: random.Random) -> bytes:
    """A random input for ``target``."""
    return json_input(target, rng)
