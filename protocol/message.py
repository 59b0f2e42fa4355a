"""Message records, properties and message ids, byte-compatible with RocketMQ.

SEND_BATCH_MESSAGE bodies are ``protocol/batch_body.py``.

Rules (reference/rocketmq-wire.md §2.3 and §3):
- Pure: no trio, sockets, files, clocks or global random. Time comes in as ``now_ms``
  arguments, randomness as a ``random.Random``. The only state is in ``UniqKeyGenerator``,
  which its owner holds.
- All integers are big-endian and signed, as Java writes them. Magic numbers are kept as the
  signed int32 that lies on disk (``MAGIC_V1 == -626843481`` is ``0xDAA320A7``).
- A record is laid out exactly like a CommitLog record (§3.2), so a PULL body is a slice of
  the log. We write IPv4 hosts only (``::ffff:a.b.c.d`` is stored as ``a.b.c.d``) and
  magic V1 whenever the UTF-8 topic fits in 127 bytes: ali-ons reads nothing else (§3.3).
  The decoder also reads magic V2 and IPv6 hosts, which a Java store may hold.
- The body is the stored body: compressed when ``sys_flag & SYSFLAG_COMPRESSED``; this module
  never compresses or inflates. Its CRC is ``zlib.crc32(body) & 0x7FFFFFFF``, like
  ``UtilAll.crc32`` (computed by ``protocol.crc.crc32``: the same values, faster).
- Bad bytes raise ``MalformedRecord`` naming the buffer offset and what is wrong; a value
  that cannot be encoded raises ``ValueError``. Nothing is repaired silently.
- Strings are UTF-8 and decoded strictly: Java and Node both only ever write valid UTF-8,
  so invalid bytes mean corruption.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import random
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping

import attrs

from protocol.crc import crc32
from protocol.errors import MalformedRecord
from protocol.slots import slot_builder
from protocol.speedups import encode_record as _c_encode_record
from protocol.speedups import parse_properties as _c_parse_properties

# --- constants ---------------------------------------------------------------------------

#: Record magic, 1-byte topic length (``0xDAA320A7`` as a signed int32).
MAGIC_V1 = -626843481
#: Record magic, 2-byte topic length (``0xDAA320AB``); Java uses it for topics over 127.
MAGIC_V2 = -626843477
#: End-of-segment blank marker (``0xCBD43194``).
BLANK_MAGIC = -875286124

# MessageSysFlag.java
SYSFLAG_COMPRESSED = 0x1
SYSFLAG_MULTI_TAGS = 0x2
SYSFLAG_TRANSACTION_NOT_TYPE = 0x0
SYSFLAG_TRANSACTION_PREPARED_TYPE = 0x4
SYSFLAG_TRANSACTION_COMMIT_TYPE = 0x8
SYSFLAG_TRANSACTION_ROLLBACK_TYPE = 0xC
SYSFLAG_TRANSACTION_MASK = 0xC
SYSFLAG_BORNHOST_V6 = 0x10
SYSFLAG_STOREHOST_V6 = 0x20
SYSFLAG_NEED_UNWRAP = 0x40
SYSFLAG_INNER_BATCH = 0x80
SYSFLAG_COMPRESSION_LZ4 = 0x100
SYSFLAG_COMPRESSION_ZSTD = 0x200
SYSFLAG_COMPRESSION_ZLIB = 0x300
SYSFLAG_COMPRESSION_MASK = 0x700

# MessageConst.java (Java spellings; ali-ons spells two keys differently, see below)
PROPERTY_KEYS = "KEYS"
PROPERTY_TAGS = "TAGS"
PROPERTY_WAIT = "WAIT"
PROPERTY_DELAY = "DELAY"
PROPERTY_RETRY_TOPIC = "RETRY_TOPIC"
PROPERTY_REAL_TOPIC = "REAL_TOPIC"
PROPERTY_REAL_QID = "REAL_QID"
PROPERTY_TRAN_MSG = "TRAN_MSG"
PROPERTY_PGROUP = "PGROUP"
PROPERTY_MIN_OFFSET = "MIN_OFFSET"
PROPERTY_MAX_OFFSET = "MAX_OFFSET"
PROPERTY_BUYER_ID = "BUYER_ID"
PROPERTY_ORIGIN_MESSAGE_ID = "ORIGIN_MESSAGE_ID"
PROPERTY_RECONSUME_TIME = "RECONSUME_TIME"
PROPERTY_MSG_REGION = "MSG_REGION"
PROPERTY_TRACE_ON = "TRACE_ON"
PROPERTY_UNIQ_KEY = "UNIQ_KEY"
PROPERTY_MAX_RECONSUME_TIMES = "MAX_RECONSUME_TIMES"
PROPERTY_CONSUME_START_TIME = "CONSUME_START_TIME"
PROPERTY_TRANSACTION_ID = "__transactionId__"
PROPERTY_TRANSACTION_CHECK_TIMES = "TRANSACTION_CHECK_TIMES"
PROPERTY_TRAN_PREPARED_QUEUE_OFFSET = "TRAN_PREPARED_QUEUE_OFFSET"
PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS = "CHECK_IMMUNITY_TIME_IN_SECONDS"
PROPERTY_CLUSTER = "CLUSTER"
PROPERTY_MSG_TYPE = "MSG_TYPE"
PROPERTY_INNER_NUM = "INNER_NUM"
PROPERTY_INNER_BASE = "INNER_BASE"
PROPERTY_TIMER_DELAY_SEC = "TIMER_DELAY_SEC"
PROPERTY_TIMER_DELIVER_MS = "TIMER_DELIVER_MS"
PROPERTY_TIMER_DELAY_MS = "TIMER_DELAY_MS"
#: Set by the broker on a parked timer message: its due time (epoch ms).
PROPERTY_TIMER_OUT_MS = "TIMER_OUT_MS"
#: Set by the broker when it delivers a timer message (epoch ms).
PROPERTY_TIMER_DEQUEUE_MS = "TIMER_DEQUEUE_MS"
PROPERTY_DLQ_ORIGIN_TOPIC = "DLQ_ORIGIN_TOPIC"
PROPERTY_DLQ_ORIGIN_MESSAGE_ID = "DLQ_ORIGIN_MESSAGE_ID"
PROPERTY_CRC32 = "__CRC32#"
#: Java's FIFO key. ali-ons writes ``__SHARDING_KEY`` instead (PROPERTY_SHARDING_KEY_ALIONS).
PROPERTY_SHARDING_KEY = "__SHARDINGKEY"
PROPERTY_SHARDING_KEY_ALIONS = "__SHARDING_KEY"
#: Aliyun ONS delivery time set by ali-ons ``setStartDeliverTime``; Apache RocketMQ ignores it.
PROPERTY_START_DELIVER_TIME = "__STARTDELIVERTIME"
#: Properties with this prefix are never stored by a Java broker.
PROPERTY_TRANSIENT_PREFIX = "__RMQ.TRANSIENT."

KEY_SEPARATOR = " "
NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"

#: Longest UTF-8 topic written with magic V1 (its length byte is signed).
MAX_TOPIC_LENGTH_V1 = 127
#: Longest UTF-8 topic any record can hold (magic V2, signed int16 length).
MAX_TOPIC_LENGTH_V2 = 32767
#: Longest encoded properties string (signed int16 length).
MAX_PROPERTIES_BYTES = 32767
#: Default cap on one record's TOTALSIZE when decoding; matches the 16 MiB frame cap, since a
#: record must fit in a PULL response.
MAX_RECORD_BYTES = 16 * 1024 * 1024

# --- layout ------------------------------------------------------------------------------

# Fields 1-14 of §3.2 plus the body length, IPv4 hosts: 88 bytes, the body starts right after.
_FIXED_V4 = struct.Struct(">iiiiiqqiq4siq4siiqi")
_FIXED_V4_SIZE = _FIXED_V4.size
#: ``_FIXED_V4`` with each host and its port as one 8-byte field (``_host_v4``): the same
#: bytes (big-endian, no padding), two arguments fewer to check and pack.
_FIXED_V4_HOSTS = struct.Struct(">iiiiiqqiq8sq8siqi")
assert _FIXED_V4_HOSTS.size == _FIXED_V4_SIZE
# The same fields cut where an IPv6 host may change their size (decoding only).
_HEAD_TO_BORN_HOST = struct.Struct(">iiiiiqqiq")
_HOST_V4 = struct.Struct(">4si")
_HOST_V6 = struct.Struct(">16si")
_INT64 = struct.Struct(">q")
_TAIL_AFTER_HOSTS = struct.Struct(">iqi")  # reconsume times, prepared tx offset, body length
_SIZE_MAGIC = struct.Struct(">ii")
_INT16 = struct.Struct(">h")
_UINT16_BE = struct.Struct(">H")
_INT32_BE = struct.Struct(">i")
_INT64_MAX = 2**63 - 1

_V6_HOST_FLAGS = SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6
# Smallest TOTALSIZE a record can declare: IPv4 hosts, empty body, topic and properties.
MIN_RECORD_BYTES = _FIXED_V4_SIZE + 1 + 2
BLANK_MARKER_BYTES = _SIZE_MAGIC.size

_CRC_MASK = 0x7FFFFFFF
_HEX_RE = re.compile(r"[0-9A-Fa-f]*")


# --- properties --------------------------------------------------------------------------

_INT_PROPERTY = re.compile(r"-?[0-9]{1,18}")


def int_property(text: str | None) -> int | None:
    """A property's integer (an optional ``-`` and 1-18 ASCII digits, a long), or None.
    Not ``str.isdigit``: it takes "²" and other digits ``int()`` refuses, and a client's
    property must never reach ``int()`` unchecked."""
    if text is None or _INT_PROPERTY.fullmatch(text) is None:
        return None
    return int(text)


def properties_to_string(properties: Mapping[str, str]) -> str:
    """Serialise properties as ``key 0x01 value 0x02`` pairs, in mapping order (§3.1).

    Pairs with an empty value are skipped: every RocketMQ decoder drops them anyway (Java's
    ``string2messageProperties`` needs a non-empty value), so writing them would only make
    the stored bytes disagree with what readers see.

    Raises:
        ValueError: a key is empty, or a key or value contains 0x01 or 0x02 (it would
            split into different pairs on the way back).
    """
    parts: list[str] = []
    for key, value in properties.items():
        if not value:
            continue
        if not key:
            raise ValueError(f"property with an empty key (value {value!r})")
        parts += (key, NAME_VALUE_SEPARATOR, value, PROPERTY_SEPARATOR)
    text = "".join(parts)
    pairs = len(parts) // 4
    # Each pair adds exactly one of each separator, so any surplus came from a key or value.
    if text.count(NAME_VALUE_SEPARATOR) != pairs or text.count(PROPERTY_SEPARATOR) != pairs:
        bad = next(
            k
            for k, v in properties.items()
            if v and (NAME_VALUE_SEPARATOR in k + v or PROPERTY_SEPARATOR in k + v)
        )
        raise ValueError(f"property {bad!r}: keys and values may not contain 0x01 or 0x02")
    return text


def properties_from_string_python(text: str) -> dict[str, str]:
    """Parse a properties string the way Java's ``string2messageProperties`` does (§3.1).

    Split on 0x02, split each piece at its first 0x01; a piece is kept only when both key
    and value are non-empty (Java's "at least 3 chars" rule). Later duplicates win.
    """
    result: dict[str, str] = {}
    for piece in text.split(PROPERTY_SEPARATOR):
        key, _, value = piece.partition(NAME_VALUE_SEPARATOR)
        if key and value:
            result[key] = value
    return result


#: ``properties_from_string_python``, compiled where it is built (protocol/_speedups.c).
properties_from_string: Callable[[str], dict[str, str]] = (
    _c_parse_properties or properties_from_string_python
)


def encode_properties(properties: Mapping[str, str]) -> bytes:
    """UTF-8 bytes of ``properties_to_string(properties)``; same errors."""
    return properties_to_string(properties).encode()


def decode_properties(data: bytes | bytearray | memoryview) -> dict[str, str]:
    """Parse stored properties bytes; tolerant like Java, but the bytes must be UTF-8.

    Raises:
        MalformedRecord: the bytes are not valid UTF-8.
    """
    try:
        text = bytes(data).decode()
    except UnicodeDecodeError as exc:
        raise MalformedRecord(f"properties are not valid UTF-8: {exc}") from None
    return properties_from_string(text)


# --- hashing -----------------------------------------------------------------------------


def java_string_hash(s: str) -> int:
    """Java ``String.hashCode()``: signed int32, computed over UTF-16 code units."""
    units: Iterable[int]
    if s.isascii():
        units = s.encode("ascii")
    else:
        data = s.encode("utf-16-be", "surrogatepass")
        units = struct.unpack(f">{len(data) // 2}H", data)
    h = 0
    for unit in units:
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - 0x100000000 if h & 0x80000000 else h


def tags_code(tags: str | None) -> int:
    """ConsumeQueue tag code: ``hashCode`` of the TAGS string, 0 when absent or empty.

    The string is taken as given. ali-ons writes ``TAGS=null`` for untagged messages, so they
    get ``java_string_hash("null") == 3392903`` exactly as on a Java broker, and a consumer
    subscribed to ``*`` still receives them.
    """
    if not tags:
        return 0
    return java_string_hash(tags)


# --- hosts -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _ip_packed(ip: str) -> bytes:
    """4 bytes for IPv4 (and IPv4-mapped IPv6), 16 bytes for other IPv6 addresses.

    Cached: every record written packs its born and store hosts and every id names the
    store host, always a handful of addresses, and an ``ipaddress`` parse is ~1.5 µs.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"not an IP address: {ip!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.packed
    return addr.packed


def _ipv4_packed(ip: str) -> bytes:
    packed = _ip_packed(ip)
    if len(packed) != 4:
        # ali-ons reads 4-byte hosts only; an IPv6 host would desync its decoder (§3.3).
        raise ValueError(f"{ip!r} is IPv6; records are written with IPv4 hosts only")
    return packed


@functools.lru_cache(maxsize=1024)
def _ip_text(packed: bytes) -> str:
    if len(packed) == 4:
        return f"{packed[0]}.{packed[1]}.{packed[2]}.{packed[3]}"
    return ipaddress.IPv6Address(packed).compressed


@functools.lru_cache(maxsize=1024)
def _host_v4(host: tuple[str, int]) -> bytes:
    """A record's 8-byte IPv4 host field: address, then port as int32 (cached: a record
    packs its born and store hosts, a handful of addresses; errors as ``_ipv4_packed``
    and ``_check_port``, which raise before anything is cached)."""
    ip, port = host
    return _HOST_V4.pack(_ipv4_packed(ip), _check_port(port))


def _check_port(port: int) -> int:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range 0..65535")
    return port


# --- message ids -------------------------------------------------------------------------


def offset_msg_id(store_ip: str, store_port: int, commit_offset: int) -> str:
    """Broker message id: upper hex of ``store IP | int32 port | int64 commit-log offset``.

    32 characters for IPv4 (and ``::ffff:a.b.c.d``), 56 for other IPv6 addresses (only
    found in records a Java store wrote; this project never writes IPv6 hosts).

    Raises:
        ValueError: bad address, port or offset.
    """
    prefix = _offset_id_prefix(store_ip, store_port)
    if not 0 <= commit_offset <= _INT64_MAX:
        what = "negative" if commit_offset < 0 else "out of range:"
        raise ValueError(f"{what} commit-log offset {commit_offset}")
    return f"{prefix}{commit_offset:016X}"


@functools.lru_cache(maxsize=256)
def _offset_id_prefix(store_ip: str, store_port: int) -> str:
    """The id's host part (upper hex of IP | int32 port), the same for a whole store."""
    return (_ip_packed(store_ip) + _INT32_BE.pack(_check_port(store_port))).hex().upper()


def parse_offset_msg_id(msg_id: str) -> tuple[str, int, int]:
    """Return ``(store_ip, store_port, commit_offset)`` from an offset message id.

    Accepts 32 (IPv4) or 56 (IPv6) hex digits in either case, like Java's
    ``MessageDecoder.decodeMessageId``.

    Raises:
        ValueError: wrong length, non-hex characters, port outside 0..65535 or a negative
            offset.
    """
    if len(msg_id) not in (32, 56) or not _HEX_RE.fullmatch(msg_id):
        raise ValueError(f"not an offset message id (32 or 56 hex digits): {msg_id!r}")
    raw = bytes.fromhex(msg_id)
    ip_len = len(raw) - 12
    port, offset = struct.unpack_from(">iq", raw, ip_len)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"offset message id {msg_id!r} has port {port}")
    if offset < 0:
        raise ValueError(f"offset message id {msg_id!r} has negative offset {offset}")
    return _ip_text(raw[:ip_len]), port, offset


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _ms_to_datetime(ms: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(milliseconds=ms)


def _datetime_to_ms(dt: datetime.datetime) -> int:
    return (dt - _EPOCH) // datetime.timedelta(milliseconds=1)


def start_of_month_ms(now_ms: int) -> int:
    """Epoch ms of 00:00:00.000 UTC on the first day of the month containing ``now_ms``.

    Java's ``MessageClientIDSetter`` uses the JVM's local time zone; we use UTC. The field
    only serves ``getNearlyTimeFromID`` (a rough time hint), not uniqueness or ordering.
    """
    dt = _ms_to_datetime(now_ms)
    return _datetime_to_ms(dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0))


def next_month_start_ms(now_ms: int) -> int:
    """Epoch ms of the first instant (UTC) of the month after the one containing ``now_ms``."""
    dt = _ms_to_datetime(start_of_month_ms(now_ms))
    year, month = divmod(dt.year * 12 + dt.month, 12)  # month is 0-based here
    return _datetime_to_ms(dt.replace(year=year, month=month + 1))


def _to_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


def _check_ip_bytes(_inst: object, _attr: object, value: bytes) -> None:
    if len(value) not in (4, 16):
        raise ValueError(f"client IP must be 4 or 16 bytes, got {len(value)}")


@attrs.define(on_setattr=attrs.setters.NO_OP)  # ``next_id`` sets the counter per message
class UniqKeyGenerator:
    """Makes ``UNIQ_KEY`` client message ids like Java's ``MessageClientIDSetter`` (§3.5).

    Layout (32 upper hex chars for an IPv4 client, 56 for IPv6): ``ip (4|16) | pid int16 |
    class-loader hash int32 | ms since start of month int32 | counter int16``. The first
    three parts are fixed for the generator; the counter starts at 0 and wraps at 65536.
    Pure: the caller passes the time. Not thread-safe (Trio tasks share it safely).
    """

    ip: bytes = attrs.field(validator=_check_ip_bytes)
    pid: int
    class_loader_hash: int
    month_start_ms: int
    counter: int = 0
    _prefix: str = attrs.field(init=False, repr=False)
    _next_month_start_ms: int = attrs.field(init=False, repr=False)
    #: The id's text up to the counter for ``_last_ms`` (ids of one millisecond share it).
    _last_ms: int | None = attrs.field(init=False, repr=False, default=None)
    _upto_counter: str = attrs.field(init=False, repr=False, default="")

    def __attrs_post_init__(self) -> None:
        fixed = struct.pack(">HI", self.pid & 0xFFFF, self.class_loader_hash & 0xFFFFFFFF)
        self._prefix = (self.ip + fixed).hex().upper()
        self._next_month_start_ms = next_month_start_ms(self.month_start_ms)

    def next_id(self, now_ms: int) -> str:
        """Return the next id for a message created at ``now_ms`` (epoch ms)."""
        if now_ms != self._last_ms:
            if now_ms >= self._next_month_start_ms:
                self.month_start_ms = start_of_month_ms(now_ms)
                self._next_month_start_ms = next_month_start_ms(self.month_start_ms)
            diff = _to_int32(now_ms - self.month_start_ms)
            if -1_000_000 < diff < 0:
                diff = 0  # the clock stepped back a little (NTP); Java clamps the same way
            self._upto_counter = f"{self._prefix}{diff & 0xFFFFFFFF:08X}"
            self._last_ms = now_ms
        count = self.counter
        self.counter = (count + 1) & 0xFFFF
        return f"{self._upto_counter}{count:04X}"


def make_uniq_key_generator(ip: str, pid: int, rng: random.Random, now_ms: int) -> UniqKeyGenerator:
    """Build a generator for this process: ``rng`` stands in for Java's class-loader hash.

    Raises:
        ValueError: ``ip`` is not an IP address.
    """
    return UniqKeyGenerator(
        ip=_ip_packed(ip),
        pid=pid,
        class_loader_hash=rng.getrandbits(32),
        month_start_ms=start_of_month_ms(now_ms),
    )


# --- records -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MessageRecord:
    """One CommitLog record (§3.2) with its body as stored (compressed if flagged).

    ``properties`` is a plain dict for speed; nothing in this module mutates it and callers
    must not either (use ``attrs.evolve`` with a new dict). It is left out of ``hash()``.
    Hosts are ``(ip, port)``; ``ip`` is dotted IPv4 (IPv6 text only when decoded from a Java
    store that wrote IPv6 hosts).
    """

    topic: str
    body: bytes
    queue_id: int
    born_timestamp_ms: int
    born_host: tuple[str, int]
    store_timestamp_ms: int
    store_host: tuple[str, int]
    flag: int = 0
    queue_offset: int = 0
    physical_offset: int = 0
    sys_flag: int = 0
    reconsume_times: int = 0
    prepared_transaction_offset: int = 0
    properties: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    @property
    def body_crc(self) -> int:
        """CRC32 of the stored body masked to 31 bits, as Java's ``UtilAll.crc32``."""
        return crc32(self.body) & _CRC_MASK

    @property
    def tags(self) -> str | None:
        """The TAGS property (``"null"`` for ali-ons messages sent without a tag)."""
        return self.properties.get(PROPERTY_TAGS)

    @property
    def keys(self) -> list[str]:
        """The KEYS property split on spaces, empty tokens dropped (as IndexService does)."""
        value = self.properties.get(PROPERTY_KEYS)
        return [k for k in value.split(KEY_SEPARATOR) if k] if value else []

    @property
    def uniq_key(self) -> str | None:
        """The client message id (UNIQ_KEY property), if any."""
        return self.properties.get(PROPERTY_UNIQ_KEY)

    @property
    def msg_id(self) -> str:
        """The offset message id: store host plus physical offset (what ali-ons calls msgId)."""
        return offset_msg_id(self.store_host[0], self.store_host[1], self.physical_offset)


_make_record = slot_builder(MessageRecord)


def record_size(topic_len: int, body_len: int, props_len: int) -> int:
    """TOTALSIZE of a record with IPv4 hosts and the given UTF-8 byte lengths."""
    topic_len_size = 1 if topic_len <= MAX_TOPIC_LENGTH_V1 else 2
    return _FIXED_V4_SIZE + body_len + topic_len_size + topic_len + 2 + props_len


def encode_record(rec: MessageRecord) -> bytes:
    """Return the CommitLog bytes of ``rec`` (§3.2): magic V1 unless the topic needs V2.

    Raises:
        ValueError: empty or over-long topic, properties over 32767 bytes or with bad
            characters, non-IPv4 host, IPv6 host bits in ``sys_flag``, or an integer field
            out of its Java range.
    """
    return encode_record_fields(
        topic=rec.topic,
        body=rec.body,
        queue_id=rec.queue_id,
        flag=rec.flag,
        queue_offset=rec.queue_offset,
        physical_offset=rec.physical_offset,
        sys_flag=rec.sys_flag,
        born_timestamp_ms=rec.born_timestamp_ms,
        born_host=rec.born_host,
        store_timestamp_ms=rec.store_timestamp_ms,
        store_host=rec.store_host,
        reconsume_times=rec.reconsume_times,
        prepared_transaction_offset=rec.prepared_transaction_offset,
        properties=rec.properties,
    )


@functools.lru_cache(maxsize=1024)
def _topic_part(topic: str) -> tuple[int, bytes]:
    """The record's magic and its topic length + topic bytes (a busy broker has few topics)."""
    raw = topic.encode()
    topic_len = len(raw)
    if topic_len <= MAX_TOPIC_LENGTH_V1:
        if not topic_len:
            raise ValueError("empty topic")
        return MAGIC_V1, bytes((topic_len,)) + raw
    if topic_len <= MAX_TOPIC_LENGTH_V2:
        return MAGIC_V2, topic_len.to_bytes(2, "big") + raw
    raise ValueError(f"topic of {topic_len} UTF-8 bytes exceeds {MAX_TOPIC_LENGTH_V2}")


def encode_record_fields(
    *,
    topic: str,
    body: bytes,
    queue_id: int,
    born_timestamp_ms: int,
    born_host: tuple[str, int],
    store_timestamp_ms: int,
    store_host: tuple[str, int],
    flag: int = 0,
    queue_offset: int = 0,
    physical_offset: int = 0,
    sys_flag: int = 0,
    reconsume_times: int = 0,
    prepared_transaction_offset: int = 0,
    properties: Mapping[str, str] | bytes,
) -> bytes:
    """``encode_record`` of the record with these fields, without building it.

    ``properties`` is a mapping, or the stored properties bytes themselves (UTF-8 of a
    string ``properties_to_string`` would write: see ``protocol/record_wire.py``).
    Checks and errors are ``encode_record``'s, in the same order.
    """
    if _c_encode_record is not None and type(properties) is bytes:
        # The code below, compiled (protocol/_speedups.c), for what it does not refuse;
        # None leaves the rest (and the errors) to it.
        try:
            born, store = _host_v4(born_host), _host_v4(store_host)
        except (TypeError, ValueError):
            pass  # the code below raises its error, in its order
        else:
            record = _c_encode_record(
                topic, body, properties, born, store, queue_id, flag, queue_offset,
                physical_offset, sys_flag, born_timestamp_ms, store_timestamp_ms,
                reconsume_times, prepared_transaction_offset,
            )  # fmt: skip
            if record is not None:
                return record
    if sys_flag & _V6_HOST_FLAGS:
        raise ValueError(
            f"sys_flag 0x{sys_flag:X} has IPv6 host bits; records are written with IPv4 hosts"
        )
    magic, topic_part = _topic_part(topic)
    props = properties if isinstance(properties, bytes) else encode_properties(properties)
    props_len = len(props)
    if props_len > MAX_PROPERTIES_BYTES:
        raise ValueError(f"properties of {props_len} bytes exceed {MAX_PROPERTIES_BYTES}")
    body_len = len(body)
    try:
        fixed = _FIXED_V4_HOSTS.pack(
            _FIXED_V4_SIZE + body_len + len(topic_part) + 2 + props_len,
            magic,
            crc32(body) & _CRC_MASK,
            queue_id,
            flag,
            queue_offset,
            physical_offset,
            sys_flag,
            born_timestamp_ms,
            _host_v4(born_host),
            store_timestamp_ms,
            _host_v4(store_host),
            reconsume_times,
            prepared_transaction_offset,
            body_len,
        )
    except struct.error as exc:
        raise ValueError(f"record field out of range: {exc}") from None
    # One pack for the fixed fields, one join: measured faster than a single Struct over
    # the whole record (its format depends on three lengths, so it must be looked up).
    return b"".join((fixed, body, topic_part, _UINT16_BE.pack(props_len), props))


def blank_marker(length: int) -> bytes:
    """The 8-byte end-of-segment marker: TOTALSIZE=``length`` (bytes left), BLANK_MAGIC."""
    if not BLANK_MARKER_BYTES <= length <= 0x7FFFFFFF:
        raise ValueError(f"blank marker length {length} out of range 8..2**31-1")
    return _SIZE_MAGIC.pack(length, BLANK_MAGIC)


def peek_record_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Return ``(total_size, magic)`` at ``pos`` without validating either.

    For recovery scans: ``magic == BLANK_MAGIC`` means the rest of the segment is padding.

    Raises:
        MalformedRecord: fewer than 8 bytes remain at ``pos``.
    """
    left = len(buf) - pos
    if pos < 0 or left < BLANK_MARKER_BYTES:
        raise MalformedRecord(f"record at offset {pos}: only {left} bytes left, need 8")
    size, magic = _SIZE_MAGIC.unpack_from(buf, pos)
    return size, magic


def _fixed_generic(
    buf: bytes | bytearray | memoryview, pos: int, sys_flag: int
) -> tuple[bytes, int, int, bytes, int, int, int, int, int]:
    """Hosts and the fields after them for records with IPv6 hosts (rare, Java-only)."""
    p = pos + _HEAD_TO_BORN_HOST.size
    born = _HOST_V6 if sys_flag & SYSFLAG_BORNHOST_V6 else _HOST_V4
    born_ip, born_port = born.unpack_from(buf, p)
    p += born.size
    (store_ts,) = _INT64.unpack_from(buf, p)
    p += _INT64.size
    store = _HOST_V6 if sys_flag & SYSFLAG_STOREHOST_V6 else _HOST_V4
    store_ip, store_port = store.unpack_from(buf, p)
    p += store.size
    reconsume, prepared, body_len = _TAIL_AFTER_HOSTS.unpack_from(buf, p)
    p += _TAIL_AFTER_HOSTS.size
    return born_ip, born_port, store_ts, store_ip, store_port, reconsume, prepared, body_len, p


def _checked_size(
    buf: bytes | bytearray | memoryview, pos: int, max_size: int, where: str
) -> tuple[int, int]:
    """Check magic and TOTALSIZE at ``pos``; return the size and the topic length's width."""
    size, magic = peek_record_header(buf, pos)
    if magic == MAGIC_V1:
        topic_len_size = 1
    elif magic == MAGIC_V2:
        topic_len_size = 2
    elif magic == BLANK_MAGIC:
        raise MalformedRecord(f"{where}: blank end-of-segment marker (size {size}), no message")
    else:
        raise MalformedRecord(f"{where}: bad magic 0x{magic & 0xFFFFFFFF:08X}")
    if size < MIN_RECORD_BYTES:
        raise MalformedRecord(f"{where}: size {size} is below the minimum {MIN_RECORD_BYTES}")
    if size > max_size:
        raise MalformedRecord(f"{where}: size {size} is above the maximum {max_size}")
    if pos + size > len(buf):
        raise MalformedRecord(
            f"{where}: truncated, size says {size} bytes but only {len(buf) - pos} remain"
        )
    return size, topic_len_size


def _variable_fields(
    buf: bytes | bytearray | memoryview,
    pos: int,
    size: int,
    p: int,
    *,
    body_len: int,
    topic_len_size: int,
) -> tuple[bytes, str, dict[str, str]]:
    """Body, topic and properties of the record at ``pos``, from ``p`` (the body) on."""
    where = f"record at offset {pos}"
    end = pos + size
    if body_len < 0 or p + body_len + topic_len_size > end:
        raise MalformedRecord(f"{where}: body length {body_len} overruns the record")
    body = bytes(buf[p : p + body_len])
    p += body_len
    if topic_len_size == 1:
        topic_len = buf[p]
        if topic_len > MAX_TOPIC_LENGTH_V1:
            raise MalformedRecord(f"{where}: topic length {topic_len} is invalid for magic V1")
    else:
        (topic_len,) = _INT16.unpack_from(buf, p)
    p += topic_len_size
    if topic_len <= 0 or p + topic_len + 2 > end:
        raise MalformedRecord(f"{where}: topic length {topic_len} is invalid or overruns")
    topic_raw = bytes(buf[p : p + topic_len])
    p += topic_len
    (props_len,) = _INT16.unpack_from(buf, p)
    p += 2
    if props_len < 0 or p + props_len > end:
        raise MalformedRecord(f"{where}: properties length {props_len} overruns the record")
    if p + props_len != end:
        raise MalformedRecord(
            f"{where}: size says {size} bytes but its fields take {p + props_len - pos}"
        )
    try:
        topic = topic_raw.decode()
        properties = decode_properties(buf[p:end]) if props_len else {}
    except UnicodeDecodeError:
        raise MalformedRecord(f"{where}: topic is not valid UTF-8") from None
    except MalformedRecord as exc:
        raise MalformedRecord(f"{where}: {exc}") from None
    return body, topic, properties


def decode_record(
    buf: bytes | bytearray | memoryview,
    pos: int = 0,
    *,
    check_crc: bool = True,
    max_size: int = MAX_RECORD_BYTES,
) -> tuple[MessageRecord, int]:
    """Decode the record at ``pos``; return it and its TOTALSIZE.

    Checks, in order: magic (V1 or V2; a blank marker is refused too), size bounds
    (``MIN_RECORD_BYTES``..``max_size``), that the record fits in ``buf``, host ports, that
    body, topic and properties lengths add up to exactly TOTALSIZE, UTF-8 of topic and
    properties, and the body CRC (unless ``check_crc`` is false).

    Raises:
        MalformedRecord: naming the offset in ``buf`` and the failed check.
    """
    where = f"record at offset {pos}"
    size, topic_len_size = _checked_size(buf, pos, max_size, where)
    (
        _,
        _,
        stored_crc,
        queue_id,
        flag,
        queue_offset,
        physical_offset,
        sys_flag,
        born_ts,
        born_ip,
        born_port,
        store_ts,
        store_ip,
        store_port,
        reconsume,
        prepared,
        body_len,
    ) = _FIXED_V4.unpack_from(buf, pos)
    p = pos + _FIXED_V4_SIZE
    if sys_flag & _V6_HOST_FLAGS:
        # Each IPv6 host is 12 bytes wider; all fixed fields must lie inside the record.
        wider = 12 * (bool(sys_flag & SYSFLAG_BORNHOST_V6) + bool(sys_flag & SYSFLAG_STOREHOST_V6))
        if size < MIN_RECORD_BYTES + wider:
            raise MalformedRecord(f"{where}: size {size} is too small for IPv6 hosts")
        born_ip, born_port, store_ts, store_ip, store_port, reconsume, prepared, body_len, p = (
            _fixed_generic(buf, pos, sys_flag)
        )
    if not (0 <= born_port <= 0xFFFF and 0 <= store_port <= 0xFFFF):
        # Java's InetSocketAddress refuses such ports, so its decoder fails here too.
        raise MalformedRecord(f"{where}: host port out of range ({born_port}, {store_port})")
    body, topic, properties = _variable_fields(
        buf, pos, size, p, body_len=body_len, topic_len_size=topic_len_size
    )
    if check_crc and (crc := crc32(body) & _CRC_MASK) != stored_crc:
        raise MalformedRecord(
            f"{where}: body CRC mismatch, stored 0x{stored_crc & 0xFFFFFFFF:08X}, "
            f"computed 0x{crc:08X}"
        )
    # Positional in MessageRecord's field order; every consumer decodes one per message.
    record = _make_record(
        topic,
        body,
        queue_id,
        born_ts,
        (_ip_text(born_ip), born_port),
        store_ts,
        (_ip_text(store_ip), store_port),
        flag,
        queue_offset,
        physical_offset,
        sys_flag,
        reconsume,
        prepared,
        properties,
    )
    return record, size


def iter_records(
    buf: bytes | bytearray | memoryview, *, check_crc: bool = True
) -> Iterator[MessageRecord]:
    """Yield each record of concatenated records (a PULL/QUERY body), front to back.

    Unlike the Java and ali-ons clients, which stop silently at the first bad record, a bad
    record raises ``MalformedRecord`` after the good ones before it were yielded.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        record, size = decode_record(buf, pos, check_crc=check_crc)
        yield record
        pos += size
