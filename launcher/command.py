"""How to run ``rmq``, and the environment every child process gets.

Rules:
- ``rmq`` is the console script beside this interpreter (so a virtualenv's own copy runs),
  else ``python -m cli.app``: children run the same code as their parent.
- Children print plain, unbuffered text (no colour codes), because their output is parsed
  (``launcher/ready.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def rmq_command() -> list[str]:
    """How to run ``rmq``: the console script beside this interpreter, else ``-m``."""
    script = Path(sys.executable).with_name("rmq")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cli.app"]


def rmq_argv(*args: str) -> list[str]:
    """The command line of ``rmq ARGS``."""
    return [*rmq_command(), *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment, with output made plain and unbuffered for parsing."""
    env = dict(os.environ)
    for name in ("FORCE_COLOR", "CLICOLOR_FORCE", "PY_COLORS"):
        env.pop(name, None)
    env.update({"NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "TERM": "dumb"})
    if extra:
        env.update(extra)
    return env
