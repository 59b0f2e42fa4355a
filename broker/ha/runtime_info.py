"""GET_BROKER_HA_STATUS's body: RocketMQ's HARuntimeInfo names, plus ours (pure)."""

from __future__ import annotations

from broker.ha.master_status import HAMasterStatus
from broker.ha.slave import HASlaveStatus


def ha_runtime_info(
    base: dict[str, object],
    *,
    master: HAMasterStatus | None,
    slave: HASlaveStatus | None,
    master_broker_addr: str | None,
) -> dict[str, object]:
    """``base`` (the broker's identity and offsets) with its master's or slave's HA state."""
    info = dict(base)
    if master is not None:
        connections = [
            {
                "addr": s.address,
                "brokerId": s.broker_id,
                "status": s.state,
                "slaveAckOffset": s.ack_offset,
                "diff": s.diff_bytes,
                "inSync": s.in_sync,
                "transferredByteInSecond": int(s.transfer_bytes_per_s),
                "caughtUpSecondsAgo": s.caught_up_s_ago,
            }
            for s in master.slaves
        ]
        info.update(
            epoch=master.epoch,
            epochStartOffset=master.epoch_start_offset,
            confirmOffset=master.confirm_offset,
            syncStateSet=list(master.sync_state_set),
            syncStateSetEpoch=master.sync_state_set_epoch,
            inSyncSlaveNums=len(master.sync_state_set) - 1,
            syncWaiters=master.waiters,
            haConnectionInfo=connections,
        )
    if slave is not None:
        info["masterCommitLogMaxOffset"] = slave.master_max_offset
        info["haClientRuntimeInfo"] = {
            "masterAddr": slave.master_address,
            "masterBrokerAddr": master_broker_addr,
            "status": slave.state,
            "isActivated": slave.state == "TRANSFER",
            "maxOffset": slave.max_offset,
            "ackOffset": slave.acked_offset,
            "lastEpoch": slave.last_epoch,
            "transferredByteInSecond": int(slave.transfer_bytes_per_s),
            "transferredBytes": slave.transferred_bytes,
            "lastReadSecondsAgo": slave.last_read_s_ago,
            "connects": slave.connects,
            "lastError": slave.last_error,
        }
    return info
