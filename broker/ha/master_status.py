"""What ``HAMaster.status`` reports (``mqadmin haStatus``): frozen values."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class SlaveStatus:
    """One line of ``mqadmin haStatus``."""

    address: str
    broker_id: int
    state: str
    ack_offset: int
    #: Master max offset minus the ack.
    diff_bytes: int
    transfer_bytes_per_s: float
    in_sync: bool
    #: Seconds since the slave last had everything; None if never.
    caught_up_s_ago: float | None


@attrs.frozen(kw_only=True)
class HAMasterStatus:
    node: str
    ha_port: int
    epoch: int
    epoch_start_offset: int
    max_offset: int
    confirm_offset: int
    sync_state_set: tuple[int, ...]
    sync_state_set_epoch: int
    proposal: tuple[int, ...] | None
    waiters: int
    waiters_refused: int
    slaves: tuple[SlaveStatus, ...]
    #: Connections waiting for their handshake.
    pending_connections: int = 0
    #: Connections closed before they became slaves (no or a bad handshake, no slot).
    refused_connections: int = 0
