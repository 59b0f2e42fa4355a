"""``rmq dashboard`` in a real browser: headless Chromium (Debian's, driven by Playwright)
loads the dashboard of a running controller-mode cluster, the master gets SIGKILL, and
the page shows the new master and the shrunk SyncStateSet.

Skipped, with the reason, only when no Chromium or no Playwright can be found (``.ci/run``
installs Debian's ``chromium``; Playwright never downloads a browser here). Screenshots
before and after the kill are saved under the test's ``tmp_path``; with
``RMQ_DOCS_SCREENSHOT=PATH`` the second one is also copied there (README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import kill_leftovers, rmq_argv, run_command_sync

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
#: Flags for a quiet, sandbox-less headless run in a container (no GPU, no network chatter).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
UP_TIMEOUT_S = 120.0
#: Page waits (ms): the first render, and the failover as the page shows it.
FIRST_RENDER_MS = 30_000
FAILOVER_MS = 30_000


def chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    return None


@pytest.fixture
def browser_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[dev]')")
    path = chromium()
    if path is None:
        pytest.skip("no Chromium found (apt-get install chromium)")
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``rmq cluster up`` (controller mode, free ports): its directory and dashboard URL."""
    root = tmp_path / "cluster"
    try:
        done = run_command_sync(
            rmq_argv("cluster", "up", "--dir", str(root), "--namesrv-port", "0"),
            timeout_s=UP_TIMEOUT_S,
        )
        assert done.returncode == 0, done.describe()
        url = re.search(r"^dashboard (http://\S+/)$", done.stdout, re.M)
        assert url, done.describe()
        yield root, url.group(1)
    finally:
        run_command_sync(rmq_argv("cluster", "down", "--dir", str(root), "--timeout", "5"))
        kill_leftovers(root)


def _pid_of(root: Path, address: str) -> int:
    nodes = json.loads((root / "cluster.json").read_text())["nodes"]
    (pid,) = [int(n["pid"]) for n in nodes if n["address"] == address]
    return pid


def _group(page: Any) -> dict[str, str]:
    return {
        "master": page.inner_text(".group .master-id"),
        "epoch": page.inner_text(".group .master-epoch"),
        "sss": page.inner_text(".group .sss"),
    }


def test_the_page_shows_the_new_master_and_sync_state_set_after_a_kill(
    tmp_path: Path, browser_path: str, cluster: tuple[Path, str]
) -> None:
    from playwright.sync_api import sync_playwright

    root, url = cluster
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # new and empty
            executable_path=browser_path,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.new_page()
            page.goto(url, timeout=FIRST_RENDER_MS)
            # The broker set as the controller leader sees it: a master, all three in sync.
            page.wait_for_function(
                "() => document.querySelector('.group .sss')?.textContent === '[1, 2, 3]'",
                timeout=FIRST_RENDER_MS,
            )
            page.wait_for_function(
                "() => /leader n\\d/.test(document.querySelector('#leader').textContent)",
                timeout=FIRST_RENDER_MS,
            )
            before = _group(page)
            assert before["master"] in ("1", "2", "3"), before
            assert page.locator("#controllers tbody tr").count() == 3
            assert re.fullmatch(r"NameServer 127\.0\.0\.1:\d+", page.inner_text("#namesrv"))
            roles = page.inner_text("#brokers tbody")
            assert roles.count("broker-a") == 3, roles
            page.screenshot(path=str(tmp_path / "dashboard-before.png"), full_page=True)

            state = json.loads(page.evaluate("() => fetch('/api/state').then(r => r.text())"))
            master_address = state["groups"][0]["masterAddress"]
            os.kill(_pid_of(root, master_address), signal.SIGKILL)

            old = before["master"]
            page.wait_for_function(
                """(old) => {
                    const id = document.querySelector('.group .master-id')?.textContent;
                    const sss = document.querySelector('.group .sss')?.textContent || '';
                    return id && id !== old && id !== '-' && !sss.includes(old)
                        && sss.split(',').length === 2;
                }""",
                arg=old,
                timeout=FAILOVER_MS,
            )
            page.wait_for_function(
                "() => /became master of broker-a/.test(document.querySelector('#timeline').textContent)",
                timeout=FAILOVER_MS,
            )
            after = _group(page)
            assert after["master"] != old and int(after["epoch"]) == int(before["epoch"]) + 1
            assert old not in after["sss"] and after["master"] in after["sss"], after
            dead = page.locator(f".group .badge.dead[data-broker-id='{old}']")
            dead.wait_for(timeout=FAILOVER_MS)  # the killed replica is shown dead
            shot = tmp_path / "dashboard-after.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            docs = os.environ.get("RMQ_DOCS_SCREENSHOT")
            if docs:
                shutil.copyfile(shot, docs)
        finally:
            context.close()
