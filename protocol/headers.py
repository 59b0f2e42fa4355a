"""Typed request and response headers: the ``extFields`` of the codes we serve.

Rules (reference/rocketmq-wire.md §2):
- A header is a frozen attrs class. Each field's wire name is RocketMQ's (camelCase of the
  Python name unless ``wire=`` says otherwise, e.g. SEND_MESSAGE_V2's one-letter names).
- A field without a default is required: ``from_ext_fields`` raises ``MissingHeaderField``
  when it is absent, ``InvalidHeaderField`` when it does not parse as its type.
- Only ``str``, ``int`` and ``bool`` (optionally ``| None``) fields exist, as on the wire.
  Booleans parse like Java's ``Boolean.parseBoolean`` (only "true", any case, is true).
- An ``int`` field is a Java ``Integer`` (int32) unless annotated ``Long`` (int64), and a
  value off the wire must fit its Java type: ASCII digits with an optional sign (Java's
  ``parseInt``/``parseLong``; surrounding blanks tolerated), never Python's ``1_000`` or
  non-ASCII digits. Anything else is ``InvalidHeaderField`` naming the field, which the
  transport answers SYSTEM_ERROR with that remark, as Java answers the NumberFormatException
  of its header decoding.
- Unknown ext fields are ignored (5.x clients add ``bname``, ``lo``, ``ns``, ...).
- Every request pays for its header, so each class gets its own ``from_ext_fields`` /
  ``to_ext_fields`` pair generated from its field specs on first use (one straight line
  per field, as attrs generates ``__init__``), with a fast path for plain decimal digits
  that cannot leave the Java range; anything else goes through the one general parser
  (``_parse``), which decides and words every error.
- Pure.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Self

import attrs

from protocol.codes import RequestCode
from protocol.errors import InvalidHeaderField, MissingHeaderField
from protocol.javanum import INT32_RANGE, INT64_RANGE, java_type_name, parse_java_int
from protocol.slots import slot_descriptors
from protocol.speedups import parse_header as _c_parse_header

#: Marks an ``int`` header field that Java declares ``Long``/``long`` (int64).
JAVA_LONG = "java.lang.Long"
Long = Annotated[int, JAVA_LONG]


def wire(name: str, **kwargs: Any) -> Any:
    """An attrs field whose ext-field name is ``name``."""
    metadata = kwargs.pop("metadata", {})
    return attrs.field(metadata={**metadata, "wire": name}, **kwargs)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@attrs.frozen(kw_only=True)
class _FieldSpec:
    attr: str
    wire: str
    kind: type
    required: bool
    #: Inclusive range of an ``int`` field (its Java type's); None for other kinds.
    int_range: tuple[int, int] | None = None


def _base_type(annotation: Any) -> tuple[type, tuple[int, int] | None]:
    """The field's base type and, for ``int``, its Java range (``Long`` or Integer)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(args) == 1, annotation
        annotation = args[0]
    int_range = INT32_RANGE
    if typing.get_origin(annotation) is Annotated:
        annotation, *extras = typing.get_args(annotation)
        assert annotation is int and extras == [JAVA_LONG], f"unsupported {extras!r}"
        int_range = INT64_RANGE
    assert annotation in (str, int, bool), f"unsupported header field type {annotation!r}"
    return typing.cast(type, annotation), int_range if annotation is int else None


class Header:
    """Base of every header class; subclasses are ``@attrs.frozen(kw_only=True)``."""

    #: The request code this header belongs to, for error messages.
    CODE: ClassVar[int | None] = None
    _specs: ClassVar[tuple[_FieldSpec, ...] | None] = None

    @classmethod
    def _field_specs(cls) -> tuple[_FieldSpec, ...]:
        specs = cls.__dict__.get("_specs")
        if specs is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            specs = tuple(
                _FieldSpec(
                    attr=f.name,
                    wire=f.metadata.get("wire", _camel(f.name)),
                    kind=kind,
                    required=f.default is attrs.NOTHING,
                    int_range=int_range,
                )
                for f in attrs.fields(cls)  # type: ignore[arg-type]
                for kind, int_range in (_base_type(hints[f.name]),)
            )
            cls._specs = specs
        return specs

    @classmethod
    def from_ext_fields(cls, ext: Mapping[str, str]) -> Self:
        """Parse ``ext`` (already coerced to strings) into this header."""
        codec = _CODECS.get(cls) or _compile_codec(cls)
        return codec.parse(ext)  # type: ignore[no-any-return]

    def to_ext_fields(self) -> dict[str, str]:
        """The ext fields to send: every non-None field as a string."""
        codec = _CODECS.get(type(self)) or _compile_codec(type(self))
        return codec.emit(self)

    @classmethod
    def _make(cls, *values: Any) -> Self:
        """``cls(**fields)`` from every field's value in declaration order, without the
        cost of attrs' ``__init__`` (these classes have no validators or converters)."""
        codec = _CODECS.get(cls) or _compile_codec(cls)
        return codec.make(*values)  # type: ignore[no-any-return]


@attrs.frozen
class _Codec:
    """A header class's generated functions."""

    parse: Callable[[Mapping[str, str]], Any]
    emit: Callable[[Any], dict[str, str]]
    make: Callable[..., Any]


_CODECS: dict[type[Header], _Codec] = {}

#: Longest digit string that always fits an int (2**31 - 1 has 10 digits) or a long (19).
_SAFE_DIGITS = {INT32_RANGE: 9, INT64_RANGE: 18}
#: ``int`` of the canonical decimal strings of 0..1023, for the generated parsers: most
#: int fields on the wire are small (queue ids, flags, counts), and one look-up replaces
#: the isascii / isdigit / len checks and ``int``, with the same result (such a string
#: passes those checks and fits any int range).
_SMALL_INTS = {str(n): n for n in range(1024)}


def _text(value: object) -> str:
    """A field value's ext-field text (Java's ``toString``; booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compile_codec(cls: type[Header], *, use_speedups: bool = True) -> _Codec:
    """Generate ``cls``'s functions, one straight line of code per field, as attrs does.

    ``make`` sets the frozen instance's slots directly, which is what attrs' ``__init__``
    does for fields without validators, converters or factories (asserted here). ``parse``
    reads each field, refuses a missing required one with the message the general path
    words, takes ``int(raw)`` for plain ASCII digits short enough to fit the field's Java
    type and hands anything else to ``_parse``. Names in the source are the field specs'
    own (Python identifiers) or ``repr`` literals, never peer input. Where the compiled
    parse is built (``protocol/_speedups.c``), ``parse`` tries it first; ``use_speedups``
    False gives the pure-Python functions, not registered (its tests' twin).
    """
    specs = cls._field_specs()
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    assert not hasattr(cls, "__attrs_post_init__"), cls
    namespace: dict[str, Any] = {
        "cls": cls,
        "code": cls.CODE,
        "specs": specs,
        "_parse": _parse,
        "small_ints": _SMALL_INTS,
        "_text": _text,
        "_new": object.__new__,
        "MissingHeaderField": MissingHeaderField,
    }
    vars_ = [f"v{n}" for n in range(len(specs))]
    make = [f"def make({', '.join(vars_)}):", "    self = _new(cls)"]
    defaults = [field.default for field in fields]
    compiled = _compiled_lines(namespace, cls, specs, defaults) if use_speedups else []
    parse = ["def parse(ext):", *compiled, "    get = ext.get"]
    emit = ["def emit(self):", "    ext = {}"]
    for n, (spec, field) in enumerate(zip(specs, fields, strict=True)):
        assert field.validator is None and field.converter is None and field.init, field
        namespace[f"set{n}"] = cls.__dict__[spec.attr].__set__
        make.append(f"    set{n}(self, v{n})")
        parse += _parse_lines(n, spec, field.default, cls.CODE)
        emit += [
            f"    v{n} = self.{spec.attr}",
            f"    if v{n} is not None:",
            f"        ext[{spec.wire!r}] = v{n} if type(v{n}) is str else _text(v{n})",
        ]
    make.append("    return self")
    parse.append(f"    return make({', '.join(vars_)})")
    emit.append("    return ext")
    source = "\n".join([*make, "", *parse, "", *emit, ""])
    exec(compile(source, f"<header codec {cls.__name__}>", "exec"), namespace)
    codec = _Codec(parse=namespace["parse"], emit=namespace["emit"], make=namespace["make"])
    if use_speedups:
        _CODECS[cls] = codec
    return codec


#: A required field's default in the compiled parse's spec (``protocol/_speedups.c``).
_REQUIRED = object()
_KIND_CODES = {str: 0, int: 1, bool: 2}


def _compiled_lines(
    namespace: dict[str, Any],
    target: type,
    specs: tuple[_FieldSpec, ...] | list[_FieldSpec],
    defaults: list[object],
) -> list[str]:
    """The generated parse's first lines: the compiled parse of the plain case (every
    field of ``target``, in its order, from ``specs[n]``'s wire field, kind and default),
    which answers None for anything else, when it is built; else none."""
    if _c_parse_header is None:
        return []
    namespace["c_parse"] = _c_parse_header
    namespace["c_cls"] = target
    namespace["c_required"] = _REQUIRED
    namespace["c_spec"] = tuple(
        (
            spec.wire,
            _KIND_CODES[spec.kind],
            _SAFE_DIGITS[spec.int_range] if spec.int_range is not None else 0,
            _REQUIRED if spec.required else default,
            descriptor,
        )
        for spec, default, descriptor in zip(specs, defaults, slot_descriptors(target), strict=True)
    )
    return [
        "    header = c_parse(c_cls, c_spec, c_required, ext)",
        "    if header is not None:",
        "        return header",
    ]


def _parse_lines(n: int, spec: _FieldSpec, default: object, code: int | None) -> list[str]:
    """Source lines that leave field ``n``'s value in ``v<n>``."""
    var = f"v{n}"
    convert: list[str] = []
    if spec.kind is int:
        assert spec.int_range is not None
        digits = _SAFE_DIGITS[spec.int_range]
        convert = [
            f"if {var} in small_ints:",
            f"    {var} = small_ints[{var}]",
            f"elif {var}.isascii() and {var}.isdigit() and len({var}) <= {digits}:",
            f"    {var} = int({var})",
            "else:",
            f"    {var} = _parse({var}, specs[{n}], code)",
        ]
    elif spec.kind is bool:
        # The exact spellings first (what clients send), without the two string copies.
        convert = [
            f"if {var} == 'false':",
            f"    {var} = False",
            f"elif {var} == 'true':",
            f"    {var} = True",
            "else:",
            f"    {var} = {var}.strip().lower() == 'true'",
        ]
    lines = [f"    {var} = get({spec.wire!r})", f"    if {var} is None:"]
    if spec.required:
        missing = f"required header field {spec.wire!r} is missing{_for_code(code)}"
        lines.append(f"        raise MissingHeaderField({missing!r})")
        lines += [f"    {line}" for line in convert]
    else:
        assert default is None or type(default) in (bool, int), (spec, default)
        lines.append(f"        {var} = {default!r}")
        if convert:
            lines += ["    else:", *(f"        {line}" for line in convert)]
    return lines


def _for_code(code: int | None) -> str:
    if code is None:
        return ""
    try:
        return f" for {RequestCode(code).name}"
    except ValueError:
        return f" for request code {code}"


def _parse(raw: str, spec: _FieldSpec, code: int | None) -> object:
    if spec.kind is str:
        return raw
    if spec.kind is bool:
        return raw.strip().lower() == "true"
    assert spec.int_range is not None
    value = parse_java_int(raw.strip(), spec.int_range)
    if value is None:
        low, high = spec.int_range
        shown = raw if len(raw) <= 40 else raw[:40] + f"... ({len(raw)} chars)"
        raise InvalidHeaderField(
            f"header field {spec.wire!r} must be an integer fitting a Java "
            f"{java_type_name(spec.int_range)} "
            f"({low}..{high}), got {shown!r}{_for_code(code)}"
        )
    return value


# --- NameServer --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class GetRouteInfoRequestHeader(Header):
    CODE = RequestCode.GET_ROUTEINFO_BY_TOPIC
    topic: str
    accept_standard_json_only: bool | None = None


@attrs.frozen(kw_only=True)
class RegisterBrokerRequestHeader(Header):
    CODE = RequestCode.REGISTER_BROKER
    broker_name: str
    broker_addr: str
    cluster_name: str
    ha_server_addr: str
    broker_id: Long
    heartbeat_timeout_millis: Long | None = None
    enable_acting_master: bool | None = None
    compressed: bool = False
    body_crc32: int = 0


@attrs.frozen(kw_only=True)
class RegisterBrokerResponseHeader(Header):
    ha_server_addr: str | None = None
    master_addr: str | None = None


@attrs.frozen(kw_only=True)
class UnregisterBrokerRequestHeader(Header):
    CODE = RequestCode.UNREGISTER_BROKER
    broker_name: str
    broker_addr: str
    cluster_name: str
    broker_id: Long


@attrs.frozen(kw_only=True)
class BrokerHeartbeatRequestHeader(Header):
    CODE = RequestCode.BROKER_HEARTBEAT
    cluster_name: str
    broker_addr: str
    broker_name: str
    broker_id: Long | None = None
    epoch: int | None = None
    max_offset: Long | None = None
    confirm_offset: Long | None = None
    heartbeat_timeout_mills: Long | None = None
    election_priority: int | None = None


@attrs.frozen(kw_only=True)
class DeleteTopicFromNamesrvRequestHeader(Header):
    CODE = RequestCode.DELETE_TOPIC_IN_NAMESRV
    topic: str
    cluster_name: str | None = None


@attrs.frozen(kw_only=True)
class WipeWritePermOfBrokerRequestHeader(Header):
    CODE = RequestCode.WIPE_WRITE_PERM_OF_BROKER
    broker_name: str


@attrs.frozen(kw_only=True)
class WipeWritePermOfBrokerResponseHeader(Header):
    wipe_topic_count: int


@attrs.frozen(kw_only=True)
class AddWritePermOfBrokerRequestHeader(Header):
    CODE = RequestCode.ADD_WRITE_PERM_OF_BROKER
    broker_name: str


@attrs.frozen(kw_only=True)
class AddWritePermOfBrokerResponseHeader(Header):
    add_topic_count: int


@attrs.frozen(kw_only=True)
class GetTopicsByClusterRequestHeader(Header):
    CODE = RequestCode.GET_TOPICS_BY_CLUSTER
    cluster: str


# --- send --------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SendMessageRequestHeader(Header):
    """SEND_MESSAGE (10) and, through ``SendMessageRequestHeaderV2``, codes 310 and 320."""

    CODE = RequestCode.SEND_MESSAGE
    producer_group: str
    topic: str
    default_topic: str
    default_topic_queue_nums: int
    queue_id: int
    sys_flag: int
    born_timestamp: Long
    flag: int
    properties: str | None = None
    reconsume_times: int | None = None
    unit_mode: bool | None = None
    batch: bool | None = None
    max_reconsume_times: int | None = None
    # Java's V1 header inherits its broker name from RpcRequestHeader, as field ``bname``.
    broker_name: str | None = wire("bname", default=None)


@attrs.frozen(kw_only=True)
class SendMessageRequestHeaderV2(Header):
    """SEND_MESSAGE_V2 (310) / SEND_BATCH_MESSAGE (320): one-letter names of the V1 fields."""

    CODE = RequestCode.SEND_MESSAGE_V2
    a: str  # producerGroup
    b: str  # topic
    c: str  # defaultTopic
    d: int  # defaultTopicQueueNums
    e: int  # queueId
    f: int  # sysFlag
    g: Long  # bornTimestamp
    h: int  # flag
    i: str | None = None  # properties
    j: int | None = None  # reconsumeTimes
    k: bool | None = None  # unitMode
    l: int | None = None  # maxReconsumeTimes  # noqa: E741 - the wire name
    m: bool | None = None  # batch
    n: str | None = None  # brokerName

    @classmethod
    def parse_v1(cls, ext: Mapping[str, str]) -> SendMessageRequestHeader:
        """``from_ext_fields(ext).to_v1()`` in one step (the send path's header): the V2
        fields parsed as ``from_ext_fields`` parses them, errors included, straight into
        the V1 header, without building the V2 one."""
        return SendMessageRequestHeaderV2.v1_parser()(ext)

    @staticmethod
    def v1_parser() -> Callable[[Mapping[str, str]], SendMessageRequestHeader]:
        """``parse_v1`` itself, for a caller that keeps it (the send handler: a frame less
        per send)."""
        return _V2_TO_V1 or _compile_v2_to_v1()

    def to_v1(self) -> SendMessageRequestHeader:
        # Positional in SendMessageRequestHeader's field order (note batch / max times).
        return SendMessageRequestHeader._make(
            self.a, self.b, self.c, self.d, self.e, self.f, self.g, self.h,
            self.i, self.j, self.k, self.m, self.l, self.n,
        )  # fmt: skip

    @classmethod
    def from_v1(cls, v1: SendMessageRequestHeader) -> SendMessageRequestHeaderV2:
        return cls(
            a=v1.producer_group,
            b=v1.topic,
            c=v1.default_topic,
            d=v1.default_topic_queue_nums,
            e=v1.queue_id,
            f=v1.sys_flag,
            g=v1.born_timestamp,
            h=v1.flag,
            i=v1.properties,
            j=v1.reconsume_times,
            k=v1.unit_mode,
            l=v1.max_reconsume_times,
            m=v1.batch,
            n=v1.broker_name,
        )


_V2_TO_V1: Callable[[Mapping[str, str]], SendMessageRequestHeader] | None = None


def _compile_v2_to_v1(
    *, use_speedups: bool = True
) -> Callable[[Mapping[str, str]], SendMessageRequestHeader]:
    """``SendMessageRequestHeaderV2.parse_v1``: V2's generated parse lines, then V1's make
    with the fields in ``to_v1``'s order."""
    global _V2_TO_V1
    v2 = SendMessageRequestHeaderV2
    specs = v2._field_specs()
    v1_make = (
        _CODECS.get(SendMessageRequestHeader) or _compile_codec(SendMessageRequestHeader)
    ).make
    namespace: dict[str, Any] = {
        "code": v2.CODE,
        "specs": specs,
        "_parse": _parse,
        "small_ints": _SMALL_INTS,
        "make": v1_make,
        "MissingHeaderField": MissingHeaderField,
    }
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(v2)
    # V1's fields in order, each from the V2 field to_v1 passes there: a..h, i, j, k,
    # then m (batch), l, n.
    position = {spec.attr: n for n, spec in enumerate(specs)}
    sources = [position[name] for name in "abcdefghijkmln"]
    compiled = (
        _compiled_lines(
            namespace,
            SendMessageRequestHeader,
            [specs[n] for n in sources],
            [fields[n].default for n in sources],
        )
        if use_speedups
        else []
    )
    lines = ["def parse(ext):", *compiled, "    get = ext.get"]
    for n, (spec, field) in enumerate(zip(specs, fields, strict=True)):
        lines += _parse_lines(n, spec, field.default, v2.CODE)
    lines.append(f"    return make({', '.join(f'v{n}' for n in sources)})")
    exec(compile("\n".join(lines) + "\n", "<header codec V2 -> V1>", "exec"), namespace)
    parse: Callable[[Mapping[str, str]], SendMessageRequestHeader] = namespace["parse"]
    if use_speedups:
        _V2_TO_V1 = parse
    return parse


@attrs.frozen(kw_only=True)
class SendMessageResponseHeader(Header):
    msg_id: str
    queue_id: int
    queue_offset: Long
    transaction_id: str | None = None
    batch_uniq_id: str | None = None


# --- pull and offsets --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PullMessageRequestHeader(Header):
    CODE = RequestCode.PULL_MESSAGE
    consumer_group: str
    topic: str
    queue_id: int
    queue_offset: Long
    max_msg_nums: int
    sys_flag: int
    commit_offset: Long
    suspend_timeout_millis: Long
    sub_version: Long
    subscription: str | None = None
    expression_type: str | None = None
    max_msg_bytes: int | None = None


@attrs.frozen(kw_only=True)
class PullMessageResponseHeader(Header):
    suggest_which_broker_id: Long
    next_begin_offset: Long
    min_offset: Long
    max_offset: Long
    offset_delta: Long | None = None
    topic_sys_flag: int | None = None
    group_sys_flag: int | None = None


@attrs.frozen(kw_only=True)
class QueryMessageRequestHeader(Header):
    CODE = RequestCode.QUERY_MESSAGE
    topic: str
    key: str
    max_num: int
    begin_timestamp: Long
    end_timestamp: Long


@attrs.frozen(kw_only=True)
class QueryMessageResponseHeader(Header):
    index_last_update_timestamp: Long
    index_last_update_phyoffset: Long


@attrs.frozen(kw_only=True)
class ViewMessageRequestHeader(Header):
    CODE = RequestCode.VIEW_MESSAGE_BY_ID
    offset: Long
    topic: str | None = None


@attrs.frozen(kw_only=True)
class QueryConsumerOffsetRequestHeader(Header):
    CODE = RequestCode.QUERY_CONSUMER_OFFSET
    consumer_group: str
    topic: str
    queue_id: int
    set_zero_if_not_found: bool | None = None


@attrs.frozen(kw_only=True)
class UpdateConsumerOffsetRequestHeader(Header):
    CODE = RequestCode.UPDATE_CONSUMER_OFFSET
    consumer_group: str
    topic: str
    queue_id: int
    commit_offset: Long


@attrs.frozen(kw_only=True)
class OffsetResponseHeader(Header):
    """Answer of QUERY_CONSUMER_OFFSET, GET_MAX/MIN_OFFSET and SEARCH_OFFSET_BY_TIMESTAMP."""

    offset: Long


@attrs.frozen(kw_only=True)
class GetMaxOffsetRequestHeader(Header):
    CODE = RequestCode.GET_MAX_OFFSET
    topic: str
    queue_id: int
    committed: bool | None = None


@attrs.frozen(kw_only=True)
class GetMinOffsetRequestHeader(Header):
    CODE = RequestCode.GET_MIN_OFFSET
    topic: str
    queue_id: int


@attrs.frozen(kw_only=True)
class SearchOffsetRequestHeader(Header):
    CODE = RequestCode.SEARCH_OFFSET_BY_TIMESTAMP
    topic: str
    queue_id: int
    timestamp: Long
    boundary_type: str | None = None


@attrs.frozen(kw_only=True)
class GetEarliestMsgStoretimeRequestHeader(Header):
    CODE = RequestCode.GET_EARLIEST_MSG_STORETIME
    topic: str
    queue_id: int


@attrs.frozen(kw_only=True)
class GetEarliestMsgStoretimeResponseHeader(Header):
    timestamp: Long


# --- clients and groups ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class UnregisterClientRequestHeader(Header):
    CODE = RequestCode.UNREGISTER_CLIENT
    client_id: str = wire("clientID")
    producer_group: str | None = None
    consumer_group: str | None = None


@attrs.frozen(kw_only=True)
class GetConsumerListByGroupRequestHeader(Header):
    CODE = RequestCode.GET_CONSUMER_LIST_BY_GROUP
    consumer_group: str


@attrs.frozen(kw_only=True)
class NotifyConsumerIdsChangedRequestHeader(Header):
    CODE = RequestCode.NOTIFY_CONSUMER_IDS_CHANGED
    consumer_group: str


@attrs.frozen(kw_only=True)
class ConsumerSendMsgBackRequestHeader(Header):
    CODE = RequestCode.CONSUMER_SEND_MSG_BACK
    offset: Long
    group: str
    delay_level: int
    origin_msg_id: str | None = None
    origin_topic: str | None = None
    unit_mode: bool | None = None
    max_reconsume_times: int | None = None


# --- topics and admin --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CreateTopicRequestHeader(Header):
    CODE = RequestCode.UPDATE_AND_CREATE_TOPIC
    topic: str
    default_topic: str
    read_queue_nums: int
    write_queue_nums: int
    perm: int
    topic_filter_type: str
    topic_sys_flag: int | None = None
    order: bool = False
    attributes: str | None = None
    force: bool | None = None


@attrs.frozen(kw_only=True)
class DeleteTopicRequestHeader(Header):
    CODE = RequestCode.DELETE_TOPIC_IN_BROKER
    topic: str


@attrs.frozen(kw_only=True)
class GetTopicStatsInfoRequestHeader(Header):
    CODE = RequestCode.GET_TOPIC_STATS_INFO
    topic: str


@attrs.frozen(kw_only=True)
class GetConsumeStatsRequestHeader(Header):
    CODE = RequestCode.GET_CONSUME_STATS
    consumer_group: str
    topic: str | None = None


@attrs.frozen(kw_only=True)
class DeleteSubscriptionGroupRequestHeader(Header):
    CODE = RequestCode.DELETE_SUBSCRIPTIONGROUP
    group_name: str
    clean_offset: bool | None = None


@attrs.frozen(kw_only=True)
class ResetOffsetRequestHeader(Header):
    CODE = RequestCode.INVOKE_BROKER_TO_RESET_OFFSET
    topic: str
    group: str
    timestamp: Long
    is_force: bool = False
    queue_id: int | None = None
    offset: Long | None = None


# --- controller (reference/rocketmq-controller.md §5) ---------------------------------------
# Field names are those of remoting/protocol/header/controller/**.java. ``invokeTime`` is
# accepted and ignored: the leader stamps what apply needs (the alive set) itself.


class ControllerExtFields:
    """Ext fields beyond RocketMQ's controller headers (DESIGN §6 "beyond RocketMQ").

    A broker may add ``haAddress`` (its ``host:haPort``) to BROKER_HEARTBEAT and
    CONTROLLER_REGISTER_BROKER; the controller then adds ``masterHaAddress`` to the answers
    of CONTROLLER_REGISTER_BROKER, CONTROLLER_ELECT_MASTER and CONTROLLER_GET_REPLICA_INFO
    and to NOTIFY_BROKER_ROLE_CHANGED when it knows the (live) master's. RocketMQ ignores
    unknown ext fields, so both directions stay compatible.

    The answer to CONTROLLER_GET_REPLICA_INFO also carries ``enableElectUncleanMaster``
    ("true"/"false"): a master may skip its lease only when it knows unclean election is
    off (``Broker.lease_holds``).
    """

    HA_ADDRESS = "haAddress"
    MASTER_HA_ADDRESS = "masterHaAddress"
    UNCLEAN_ELECTION = "enableElectUncleanMaster"


@attrs.frozen(kw_only=True)
class AlterSyncStateSetRequestHeader(Header):
    CODE = RequestCode.CONTROLLER_ALTER_SYNC_STATE_SET
    broker_name: str
    master_broker_id: Long
    master_epoch: int
    invoke_time: Long | None = None


@attrs.frozen(kw_only=True)
class AlterSyncStateSetResponseHeader(Header):
    new_sync_state_set_epoch: int


@attrs.frozen(kw_only=True)
class ElectMasterRequestHeader(Header):
    """brokerId -1 (or absent): controller-triggered; own id: broker-triggered; admin:
    the target id with designateElect=true."""

    CODE = RequestCode.CONTROLLER_ELECT_MASTER
    broker_name: str
    cluster_name: str | None = None
    broker_id: Long | None = None
    designate_elect: bool | None = None
    invoke_time: Long | None = None


@attrs.frozen(kw_only=True)
class ElectMasterResponseHeader(Header):
    master_broker_id: Long | None = None
    master_address: str | None = None
    master_epoch: int | None = None
    sync_state_set_epoch: int | None = None


@attrs.frozen(kw_only=True)
class RegisterBrokerToControllerRequestHeader(Header):
    CODE = RequestCode.CONTROLLER_REGISTER_BROKER
    cluster_name: str
    broker_name: str
    broker_id: Long
    broker_address: str
    invoke_time: Long | None = None


@attrs.frozen(kw_only=True)
class RegisterBrokerToControllerResponseHeader(Header):
    cluster_name: str | None = None
    broker_name: str | None = None
    master_broker_id: Long | None = None
    master_address: str | None = None
    master_epoch: int | None = None
    sync_state_set_epoch: int | None = None


@attrs.frozen(kw_only=True)
class GetReplicaInfoRequestHeader(Header):
    CODE = RequestCode.CONTROLLER_GET_REPLICA_INFO
    broker_name: str


@attrs.frozen(kw_only=True)
class GetReplicaInfoResponseHeader(Header):
    master_broker_id: Long | None = None
    master_address: str | None = None
    master_epoch: int | None = None


@attrs.frozen(kw_only=True)
class GetMetaDataResponseHeader(Header):
    """CONTROLLER_GET_METADATA_INFO's answer; ``peers`` is ``id:addr;id:addr;``."""

    group: str | None = None
    controller_leader_id: str | None = None
    controller_leader_address: str | None = None
    is_leader: bool | None = None
    peers: str | None = None


@attrs.frozen(kw_only=True)
class CleanControllerBrokerDataRequestHeader(Header):
    CODE = RequestCode.CLEAN_BROKER_DATA
    broker_name: str
    cluster_name: str | None = None
    #: ``"1;2;3"``; absent: the whole broker set.
    broker_controller_ids_to_clean: str | None = None
    is_clean_living_broker: bool = False
    invoke_time: Long | None = None


@attrs.frozen(kw_only=True)
class GetNextBrokerIdRequestHeader(Header):
    CODE = RequestCode.CONTROLLER_GET_NEXT_BROKER_ID
    cluster_name: str
    broker_name: str


@attrs.frozen(kw_only=True)
class GetNextBrokerIdResponseHeader(Header):
    cluster_name: str | None = None
    broker_name: str | None = None
    next_broker_id: Long | None = None


@attrs.frozen(kw_only=True)
class ApplyBrokerIdRequestHeader(Header):
    CODE = RequestCode.CONTROLLER_APPLY_BROKER_ID
    cluster_name: str
    broker_name: str
    applied_broker_id: Long
    #: ``"<brokerAddr>;<millis>"``: the controller takes the address from before the ';'.
    register_check_code: str


@attrs.frozen(kw_only=True)
class ApplyBrokerIdResponseHeader(Header):
    cluster_name: str | None = None
    broker_name: str | None = None


@attrs.frozen(kw_only=True)
class NotifyBrokerRoleChangedRequestHeader(Header):
    CODE = RequestCode.NOTIFY_BROKER_ROLE_CHANGED
    master_address: str | None = None
    master_epoch: int | None = None
    sync_state_set_epoch: int | None = None
    master_broker_id: Long | None = None


#: Every header class, for tests that must cover them all.
ALL_HEADERS: tuple[type[Header], ...] = tuple(
    cls
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, Header) and cls is not Header
)
