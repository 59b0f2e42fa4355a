"""A saved copy of the dashboard: one self-contained HTML file that opens without a server.

Rules:
- ``snapshot_html(state)`` is the page with its style and script inlined and the state
  (``Dashboard.state()``) embedded as ``window.RMQ_SNAPSHOT``; the script renders that
  once instead of polling (``static/app.js``). Pure: the state in, the HTML out.
- ``write_snapshot`` replaces the file atomically (temp file, rename), so a reader never
  sees half a page. ``server.py`` writes one whenever the timeline grows and at exit, so
  the chaos and demo reports can link the failover's timeline after the cluster is gone.
- The embedded JSON cannot close the script element: every ``<`` is written ``\\u003c``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any


def _static(name: str) -> str:
    return (resources.files("dashboard") / "static" / name).read_text(encoding="utf-8")


def snapshot_html(state: dict[str, Any]) -> str:
    data = json.dumps(state).replace("<", "\\u003c")
    page = _static("index.html")
    page = page.replace(
        '<link rel="stylesheet" href="/static/style.css">',
        f"<style>\n{_static('style.css')}</style>",
    )
    script = _static("app.js").replace("</script", "<\\/script")
    return page.replace(
        '<script src="/static/app.js"></script>',
        f"<script>window.RMQ_SNAPSHOT = {data};</script>\n<script>\n{script}</script>",
    )


def write_snapshot(path: Path, state: dict[str, Any]) -> None:
    """Write the snapshot of ``state`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(snapshot_html(state), encoding="utf-8")
    os.replace(tmp, path)
