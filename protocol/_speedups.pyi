from collections.abc import Callable, Mapping
from typing import Any

def split_properties(text: str, /) -> dict[str, str] | None: ...
def parse_header(
    cls: type, spec: tuple[Any, ...], required: object, ext: Mapping[str, str], /
) -> Any: ...
def java_frame(
    code: int, ext: Mapping[str, str], flag: int, opaque: int, version: int, body: bytes, /
) -> bytes | None: ...
def record_properties(
    text: str, cluster: str, new_uniq_key: Callable[[], str], /
) -> tuple[bytes, dict[str, str]] | None: ...
def build_slots(slots: tuple[Any, ...], /, *values: Any) -> Any: ...
def command_from_json(
    slots: tuple[Any, ...], header: Any, body: bytes, java: str, other: str, /
) -> Any: ...
def topic_key_hash(topic: str, key: str, /) -> int: ...
def cut_records(
    span: bytes,
    start: int,
    picked: list[tuple[int, int, int]],
    i: int,
    j: int,
    records: list[bytes],
    offsets: list[int],
    /,
) -> int | None: ...
def take_all(
    data: bytes, offset: int, max_count: int, max_bytes: int, min_physical: int, /
) -> tuple[int, int, list[tuple[int, int, int]]] | None: ...
def index_put(f: Any, key_hash: int, physical_offset: int, store_ms: int, /) -> bool | None: ...
def cut_frames(
    slots: tuple[Any, ...], data: bytes | bytearray, max_frame: int, /
) -> tuple[list[Any], int]: ...
def encode_record(
    topic: str,
    body: bytes,
    properties: bytes,
    born_host: bytes,
    store_host: bytes,
    queue_id: int,
    flag: int,
    queue_offset: int,
    physical_offset: int,
    sys_flag: int,
    born_timestamp_ms: int,
    store_timestamp_ms: int,
    reconsume_times: int,
    prepared_transaction_offset: int,
    /,
) -> bytes | None: ...
def parse_properties(text: str, /) -> dict[str, str]: ...
def read_stored_fields(
    buf: bytes | bytearray | memoryview, pos: int, check_crc: bool, max_size: int, /
) -> tuple[int, str, int, int, int, int, dict[str, str], int, int] | None: ...
def quick_messages(
    buf: bytes, pos: int, out: list[Any], last: int, next_begin_offset: int, ctx: tuple[Any, ...], /
) -> tuple[int, int]: ...
