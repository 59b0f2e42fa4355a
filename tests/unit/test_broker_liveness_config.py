"""The broker's controller-liveness timing (broker/config.py): RocketMQ's key names, and
the lease shorter than the heartbeat timeout the controllers judge it by."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig, ConfigError, config_from_mapping


def test_defaults_detect_a_silent_master_within_one_and_a_half_seconds() -> None:
    config = BrokerConfig()
    assert config.heartbeat_interval_s <= 0.3
    assert config.controller_heartbeat_timeout_s <= 1.5
    assert config.lease_s < config.controller_heartbeat_timeout_s


def test_rocketmq_keys_are_milliseconds() -> None:
    config = config_from_mapping(
        {
            "brokerHeartbeatInterval": 500,
            "controllerHeartBeatTimeoutMills": 10_000,
            "sendHeartbeatTimeoutMillis": 1000,
            "lease_s": 6.0,
        }
    )
    assert config.heartbeat_interval_s == 0.5
    assert config.controller_heartbeat_timeout_s == 10.0
    assert config.send_heartbeat_timeout_s == 1.0


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"lease_s": 1.2}, "lease_s .* must be shorter"),
        ({"controllerHeartBeatTimeoutMills": 900}, "lease_s .* must be shorter"),
        ({"brokerHeartbeatInterval": 700}, "at most half"),
        ({"brokerHeartbeatInterval": 0}, "heartbeat_interval_s must be > 0"),
    ],
)
def test_timings_that_break_the_lease_argument_are_refused(
    settings: dict[str, float], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        config_from_mapping(settings)
