"""Master/slave replication: epoch file, HA wire codec, SyncStateSet core, master and slave.

The broker plugs it in through ``HAMaster`` (while master) and ``HASlave`` (while slave),
both over one ``EpochFile`` loaded next to the store.
"""

from broker.ha.config import HAConfig
from broker.ha.epoch import EpochCache, EpochEntry
from broker.ha.epochfile import EpochFile
from broker.ha.master import HAMaster
from broker.ha.master_status import HAMasterStatus, SlaveStatus
from broker.ha.slave import HASlave, HASlaveStatus
from broker.ha.syncstate import (
    ConfirmOffsetChanged,
    SyncState,
    SyncStateSetChanged,
    SyncStateSetProposed,
)
from broker.ha.waiters import ReplicaOutcome

__all__ = [
    "ConfirmOffsetChanged",
    "EpochCache",
    "EpochEntry",
    "EpochFile",
    "HAConfig",
    "HAMaster",
    "HAMasterStatus",
    "HASlave",
    "HASlaveStatus",
    "ReplicaOutcome",
    "SlaveStatus",
    "SyncState",
    "SyncStateSetChanged",
    "SyncStateSetProposed",
]
