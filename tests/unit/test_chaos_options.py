"""The load and the hosts as run options (``rmq chaos run --rate R --netns``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios import SCENARIOS
from scenarios.harness import RunOptions, replay_command
from scenarios.workload import WorkloadConfig


def test_a_rate_keeps_a_send_timeout_of_sends_in_flight() -> None:
    config = WorkloadConfig(producers=4, send_timeout_s=3.0).at_rate(2000.0)
    assert config.rate_per_s == 2000.0
    assert config.in_flight == 1501  # 500/s per producer for 3 s, and one more
    assert WorkloadConfig(in_flight=4000).at_rate(10.0).in_flight == 4000


def test_the_replay_command_names_the_load_and_the_hosts() -> None:
    scenario = SCENARIOS["master_kill_allack_no_loss"]
    options = RunOptions(seed=3, out_dir=Path("/x"), rate_per_s=2000.0, netns=True)
    command = replay_command(scenario, options, "controller")
    assert command.endswith("--out /x --rate 2000 --netns")
    assert "--rate" not in replay_command(scenario, RunOptions(out_dir=Path("/x")), "controller")
    with pytest.raises(ValueError, match="rate"):
        RunOptions(rate_per_s=0.0)
