"""The dashboard's saved page and ready line, as reports and ``rmq cluster up`` read them."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from dashboard.model import Dashboard, GroupRow, Observation, ReplicaRow
from dashboard.server import READY
from dashboard.snapshot import snapshot_html, write_snapshot
from launcher.plans import DASHBOARD_SNAPSHOT, dashboard_node
from launcher.ready import DASHBOARD, parse_metrics_address, parse_ready


def _state(text: str) -> dict[str, object]:
    dashboard = Dashboard()
    group = GroupRow(
        broker_name="broker-a", master_id=1, master_address="127.0.0.1:1", master_epoch=1,
        sync_state_set_epoch=1,
        replicas=(ReplicaRow(broker_id=1, address="127.0.0.1:1", alive=True, in_sync=True),),
    )  # fmt: skip
    dashboard.update(Observation(now_ms=1, namesrv=("127.0.0.1:9876",), groups=(group,)))
    dashboard.timeline.append({"t": 2, "text": text})
    return dashboard.state()


def test_the_snapshot_is_one_page_with_the_state_embedded_and_no_server_needed() -> None:
    hostile = "</script><script>alert(1)</script>"
    page = snapshot_html(_state(hostile))
    assert "/static/" not in page  # style and script inlined
    assert page.count("</script>") == 2  # the state's script and app.js, nothing else
    embedded = re.search(r"window\.RMQ_SNAPSHOT = (.*?);</script>", page, re.S)
    assert embedded is not None
    state = json.loads(embedded.group(1))
    assert state["timeline"][0]["text"] == hostile
    assert state["groups"][0]["syncStateSet"] == [1]
    assert 'id="timeline"' in page  # reports link #timeline


def test_write_snapshot_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "d" / DASHBOARD_SNAPSHOT
    write_snapshot(path, _state("first-event"))
    write_snapshot(path, _state("second-event"))
    assert "second-event" in path.read_text() and "first-event" not in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == [DASHBOARD_SNAPSHOT]


def test_the_dashboard_ready_line_is_what_rmq_cluster_up_reads(tmp_path: Path) -> None:
    line = READY.format(url="http://127.0.0.1:40123/")
    ready = parse_ready(DASHBOARD, f"noise\n{line}\n")
    assert ready is not None and ready.address == "127.0.0.1:40123"
    text = "The controller[n0, 127.0.0.1:1] boot success.\nmetrics: http://127.0.0.1:5557/metrics\n"
    assert parse_metrics_address(text) == "127.0.0.1:5557"
    assert parse_metrics_address("no metrics here") is None
    node = dashboard_node(
        tmp_path, port=0, namesrv_addr="127.0.0.1:9876", controllers=["a:1", "b:2"],
        controller_metrics=["a:3"], rmq=["rmq"],
    )  # fmt: skip
    assert node.kind == DASHBOARD and node.node_dir == tmp_path / "dashboard"
    assert node.argv[:6] == ["rmq", "dashboard", "-n", "127.0.0.1:9876", "--port", "0"]
    assert "--controllers" in node.argv
    assert "--controller-metrics" not in node.argv  # one per controller, or none


def test_a_snapshot_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dashboard.server import save

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    dashboard = Dashboard()
    dashboard.update(Observation(now_ms=1, namesrv=("127.0.0.1:9876",)))
    with caplog.at_level(logging.WARNING, logger="dashboard.server"):
        save(blocker / DASHBOARD_SNAPSHOT, dashboard)
    assert "cannot save the dashboard" in caplog.text
