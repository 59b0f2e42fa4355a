"""RoleState: the broker's role now, apart from its frozen configuration."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig
from broker.role import RoleState


def test_static_roles_come_from_the_config_and_are_not_fenced() -> None:
    master = RoleState.from_config(BrokerConfig(broker_role="SYNC_MASTER"))
    assert master == RoleState(broker_role="SYNC_MASTER", broker_id=0)
    assert master.is_master and master.is_sync_master and not master.fenced
    slave = RoleState.from_config(BrokerConfig(broker_role="SLAVE", broker_id=2))
    assert slave == RoleState(broker_role="SLAVE", broker_id=2)
    assert not slave.is_master and not slave.is_sync_master


def test_controller_mode_starts_as_a_fenced_slave() -> None:
    config = BrokerConfig(controller_addrs=("127.0.0.1:9878",), broker_role="ASYNC_MASTER")
    role = RoleState.from_config(config)
    assert role == RoleState(broker_role="SLAVE", broker_id=0, fenced=True)
    assert config.broker_role == "ASYNC_MASTER"  # the config keeps what was configured


def test_role_changes_under_the_controller() -> None:
    role = RoleState(broker_role="SLAVE", broker_id=0, fenced=True, controller_id=3)
    role.to_slave("127.0.0.1:10911")
    assert role == RoleState(
        broker_role="SLAVE",
        broker_id=3,
        fenced=True,
        controller_id=3,
        master_addr="127.0.0.1:10911",
    )
    role.to_master()
    assert role == RoleState(broker_role="SYNC_MASTER", broker_id=0, fenced=True, controller_id=3)
    assert role.is_sync_master


def test_a_slave_needs_the_controllers_id_first() -> None:
    role = RoleState(broker_role="SLAVE", broker_id=0, fenced=True)
    with pytest.raises(AssertionError):
        role.to_slave(None)
    assert role == RoleState(broker_role="SLAVE", broker_id=0, fenced=True)
