"""Configuration of the message store (one frozen value, units in every name).

Defaults follow RocketMQ's ``MessageStoreConfig`` (reference/rocketmq-wire.md §3.7–3.10); tests
shrink the file sizes (``segment_bytes``, ``cq_entries_per_file``, index counts) to exercise
rolling with a few messages.
"""

from __future__ import annotations

import enum

import attrs

GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024

#: RocketMQ's ``messageDelayLevel`` (levels 1..18), in seconds.
DEFAULT_DELAY_LEVELS_S: tuple[float, ...] = (
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
)  # fmt: skip


class FlushMode(enum.Enum):
    """When appended CommitLog bytes are fsynced (RocketMQ ``FlushDiskType``)."""

    #: Sends wait (``wait_flushed``) until one group fsync covers them.
    SYNC_FLUSH = "SYNC_FLUSH"
    #: A background task fsyncs every ``flush_interval_s``.
    ASYNC_FLUSH = "ASYNC_FLUSH"


def _positive(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


@attrs.frozen(kw_only=True)
class StoreConfig:
    """Everything the store needs to know besides its directory."""

    #: Size of every CommitLog segment file (RocketMQ ``mappedFileSizeCommitLog``).
    segment_bytes: int = attrs.field(default=GIB, validator=_positive)
    #: Entries per ConsumeQueue file (20 bytes each).
    cq_entries_per_file: int = attrs.field(default=300_000, validator=_positive)
    #: IndexFile hash slots and entries per file (RocketMQ ``maxHashSlotNum``/``maxIndexNum``).
    index_slots: int = attrs.field(default=5_000_000, validator=_positive)
    index_entries: int = attrs.field(default=20_000_000, validator=_positive)
    #: Index files are sparse by default (420 MB each at the default counts). A write through
    #: the map into a hole on a full disk would fault (SIGBUS); ``min_free_disk_bytes`` stops
    #: appends well before that. True allocates the blocks at creation instead.
    index_preallocate: bool = False
    #: Largest record body accepted by ``put_message`` (RocketMQ ``maxMessageSize``).
    max_message_bytes: int = attrs.field(default=4 * MIB, validator=_positive)
    flush_mode: FlushMode = FlushMode.ASYNC_FLUSH
    #: ASYNC_FLUSH period; also the idle flush period under SYNC_FLUSH.
    flush_interval_s: float = 0.5
    #: At most this many ``wait_flushed`` callers are parked; more are answered False at once.
    max_flush_waiters: int = attrs.field(default=65_536, validator=_positive)
    #: Period of the checkpoint round (fsync ConsumeQueue + index, write ``checkpoint``).
    checkpoint_interval_s: float = 1.0
    #: CommitLog segments whose newest message is older than this are deleted.
    file_reserved_time_s: float = 72 * 3600.0
    retention_check_interval_s: float = 10.0
    #: Segments deleted per retention round (bounded work per round).
    max_segments_deleted_per_round: int = attrs.field(default=10, validator=_positive)
    #: Appends fail with ``DiskFull`` while the store's filesystem has less free space.
    min_free_disk_bytes: int = 256 * MIB
    #: How often the put path re-reads the free space (statvfs).
    disk_check_interval_s: float = 0.5
    #: Controller mode: ConsumeQueue/index only see data below ``confirm_offset``.
    dispatch_confirmed_only: bool = False
    #: SYNC_FLUSH: ConsumeQueue/index only see fsynced data, so no consumer reads (and
    #: commits an offset past) a message a power loss can still take (issue 19 finding 1;
    #: RocketMQ's reput dispatches from the page cache). No effect under ASYNC_FLUSH.
    dispatch_flushed_only: bool = True
    #: Address stamped into records as STOREHOST (IPv4 only, see wire §3.3).
    store_host: tuple[str, int] = ("127.0.0.1", 10911)
    #: ConsumeQueue entries one pull may scan past filtered-out messages
    #: (RocketMQ ``maxFilterMessageSize`` 16000 bytes / 20).
    max_scan_entries: int = attrs.field(default=800, validator=_positive)
    #: Verify body CRCs while recovering and when accepting replicated bytes.
    check_crc: bool = True
    #: On open, re-verify this many segments ending with the one holding the checkpoint,
    #: so a damaged record below the durable point refuses start instead of being served
    #: (RocketMQ re-checks its last 3 files). 0 trusts everything below the checkpoint.
    verify_segments_on_open: int = 3
    #: On open, also walk every older segment (each record's size, magic, PHYSICALOFFSET
    #: and body CRC, without decoding it: about 250 MB/s), so damage anywhere is found at
    #: start (issue 13 row 8). One read of the whole CommitLog per start; False trusts the
    #: segments below the verified ones, as RocketMQ does.
    check_old_segments_on_open: bool = True
    #: Damaged CommitLog bytes refuse start unless this is set: then each damaged range is
    #: logged with its file and offset, skipped, and never served (``skipDamagedSegments``).
    skip_damaged_segments: bool = False
    #: On open, the newest entries of each ConsumeQueue checked (structure; the newest
    #: deep against the CommitLog); a damaged queue is rebuilt from the CommitLog.
    cq_verify_entries_on_open: int = attrs.field(default=300_000, validator=_positive)
    delay_levels_s: tuple[float, ...] = DEFAULT_DELAY_LEVELS_S
    #: Prefix of every log line (the broker's name).
    node_name: str = "store"

    def __attrs_post_init__(self) -> None:
        # A segment must hold at least one maximal record plus the 8-byte blank marker.
        assert self.segment_bytes >= 64, "segment_bytes is absurdly small"
        assert self.index_entries >= 2, "index entry 0 is reserved"
