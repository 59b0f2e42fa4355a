"""README's SDK example runs as written against a real NameServer and broker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from tests.support.processes import managed_process, namesrv_process, rmq_argv

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart.py"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index("<!-- example: examples/quickstart.py -->"))
    body_start = start + len("```python\n")
    return text[body_start : text.index("```", body_start)]


def test_readme_shows_the_example_file_verbatim() -> None:
    assert readme_example() == EXAMPLE.read_text()


async def test_example_runs_as_written(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with namesrv_process() as ns:
            argv = rmq_argv("broker", "-n", ns.address, "--port", "0", "--dir", str(tmp_path / "b"))
            async with managed_process(argv, ready=r"boot success"):
                env = {**os.environ, "NAMESRV_ADDR": ns.address}
                result = await trio.run_process(
                    [sys.executable, str(EXAMPLE)],
                    env=env,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert out.count("sent ") == 10, out
    assert "10 messages consumed" in out, out
