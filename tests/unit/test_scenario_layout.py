"""Layout options of ``rmq cluster up`` used by the chaos harness (broker settings,
per-broker controller addresses, controller ports), and the new-master metadata verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import load_toml
from cli.cluster import LayoutOptions, parse_setting, write_broker_settings
from launcher.plans import BROKERS_BY_MODE
from launcher.record import ClusterError
from scenarios.faults import BrokerMetadata, metadata_kept


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("allAckInSyncStateSet=false", ("allAckInSyncStateSet", False)),
        ("inSyncReplicas = 1", ("inSyncReplicas", 1)),
        ("accessMessageInMemoryMaxRatio=12.5", ("accessMessageInMemoryMaxRatio", 12.5)),
        ("brokerClusterName=ChaosCluster", ("brokerClusterName", "ChaosCluster")),
        ('brokerClusterName="a b"', ("brokerClusterName", "a b")),
    ],
)
def test_a_setting_is_parsed_as_toml_reads_it(text: str, expected: tuple[str, object]) -> None:
    assert parse_setting(text) == expected


@pytest.mark.parametrize("text", ["allAckInSyncStateSet", "=1", ""])
def test_a_setting_without_key_and_value_is_refused(text: str) -> None:
    with pytest.raises(ClusterError, match="KEY=VALUE"):
        parse_setting(text)


def test_the_default_layout_fits_every_mode() -> None:
    for mode in BROKERS_BY_MODE:
        LayoutOptions().check(mode)


@pytest.mark.parametrize(
    ("options", "mode", "message"),
    [
        (LayoutOptions(broker_settings=(("brokerRole", "SLAVE"),)), "controller", "up sets it"),
        (LayoutOptions(broker_settings=(("listenPort", 1),)), "single", "up sets it"),
        (LayoutOptions(broker_settings=(("noSuchKey", 1),)), "controller", "noSuchKey"),
        (
            LayoutOptions(broker_settings=(("inSyncReplicas", "x"),)),
            "controller",
            "must be a number",
        ),
        (LayoutOptions(broker_settings=(("inSyncReplicas", 0),)), "controller", "> 0"),
        (LayoutOptions(controller_base_port=20000), "sync", "need --mode controller"),
        (
            LayoutOptions(broker_controller_addrs=(("broker-a", "127.0.0.1:1"),)),
            "controller",
            "names no broker",
        ),
        (LayoutOptions(controller_base_port=65533), "controller", "no room"),
        (LayoutOptions(controller_base_port=0), "controller", "no room"),
    ],
)
def test_options_that_do_not_fit_are_refused_before_anything_starts(
    options: LayoutOptions, mode: str, message: str
) -> None:
    with pytest.raises(ClusterError, match=message):
        options.check(mode)


def test_broker_settings_round_trip_through_the_brokers_own_toml_reader(tmp_path: Path) -> None:
    settings = (
        ("allAckInSyncStateSet", False),
        ("inSyncReplicas", 1),
        ("brokerClusterName", 'Chaos "one"'),
        ("slaveTimeout", 2500),
    )
    path = tmp_path / "n" / "broker.toml"
    write_broker_settings(path, settings)
    config = load_toml(path)
    assert config.all_ack_in_sync_state_set is False
    assert config.in_sync_replicas == 1
    assert config.cluster_name == 'Chaos "one"'
    assert config.slave_timeout_s == 2.5


# --- new master metadata ---------------------------------------------------------------------


def meta(queues: int | None, offsets: dict[int, int]) -> BrokerMetadata:
    return BrokerMetadata(address="127.0.0.1:1", write_queues=queues, offsets=offsets)


def test_a_new_master_with_the_topic_and_the_offsets_passes() -> None:
    ok, detail = metadata_kept(meta(6, {0: 40, 1: 38}), meta(6, {0: 35, 1: 38}), write_queues=6)
    assert ok, detail
    assert detail == "queues=6 offsets=2 max_behind=5"


def test_without_the_old_masters_view_only_the_topic_is_judged() -> None:
    assert metadata_kept(None, meta(6, {}), write_queues=6)[0]


@pytest.mark.parametrize(
    ("after", "problem"),
    [
        (meta(None, {0: 40, 1: 38}), "topic has None write queues, not 6"),
        (meta(4, {0: 40, 1: 38}), "topic has 4 write queues, not 6"),  # auto-created
        (meta(6, {0: 40}), "queue 1 offset missing (was 38)"),
        (meta(6, {0: 40, 1: 0}), "queue 1 offset missing (was 38)"),
    ],
)
def test_a_new_master_that_lost_the_topic_or_an_offset_fails(
    after: BrokerMetadata, problem: str
) -> None:
    ok, detail = metadata_kept(meta(6, {0: 40, 1: 38, 2: 0}), after, write_queues=6)
    assert not ok
    assert problem in detail
