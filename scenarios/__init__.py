"""Chaos scenarios: ``rmq chaos list`` shows them, ``rmq chaos run NAME`` runs one.

Each scenario lives in its own module named after what it does, as one ``SCENARIO`` value
(``scenarios.harness.Scenario``); this registry lists them in the order ``list`` shows.
"""

from __future__ import annotations

import importlib

from scenarios.harness import Scenario

#: Module names, runnable today first, then the test-matrix rows of later modes.
_MODULES = (
    "master_kill_multi_master",
    "broker_restart_no_loss",
    "commitlog_torn_tail_restart",
    "master_pause_multi_master",
    "namesrv_link_partition",
    "slave_pause_sync_master_writes_resume",
    "master_kill_allack_no_loss",
    "master_kill_async_replication_loss",
    "master_and_controller_leader_kill",
    "syncstateset_expand_then_kill",
    "paused_old_master_fenced",
    "master_isolated_from_controllers",
    "controller_majority_down_data_path",
    "ordered_messages_through_failover",
    "topic_offsets_on_new_master",
    "master_netsplit_no_loss",
    "master_cut_from_controllers",
    "master_cut_from_slaves",
    "master_one_way_silent",
    "master_link_loss",
    "master_link_delay",
    "power_loss_single_flush",
    "power_loss_single_async_flush",
    "power_loss_master",
    "power_loss_group",
)


def _load() -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}
    for module_name in _MODULES:
        scenario = importlib.import_module(f"scenarios.{module_name}").SCENARIO
        assert isinstance(scenario, Scenario), module_name
        assert scenario.name == module_name, (scenario.name, module_name)
        out[scenario.name] = scenario
    return out


SCENARIOS: dict[str, Scenario] = _load()


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
