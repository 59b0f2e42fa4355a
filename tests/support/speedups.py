"""Run code with and without a compiled fast path (protocol/_speedups.c) to compare them."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any


def with_and_without(module: ModuleType, name: str, run: Callable[[], Any]) -> tuple[Any, Any]:
    """``run()`` as the module is (its compiled function ``name`` in use where built),
    then again with ``name`` set to None, the pure-Python path: both results."""
    compiled = run()
    saved = getattr(module, name)
    setattr(module, name, None)
    try:
        pure = run()
    finally:
        setattr(module, name, saved)
    return compiled, pure
