"""DESIGN.md §9's import rules, checked on the source tree (no imports executed).

- namesrv/, controller/, broker/ and client/ import protocol/ and never each other;
  protocol/ imports none of the project's packages;
- launcher/ starts and stops processes and imports no server code;
- cli/ is the one package that imports everything;
- dashboard/ (rmq dashboard) uses the SDK and protocol/ only;
- scenarios/ and bench/ use the SDK, launcher/ and real processes, never server internals
  or the CLI; the micro-benchmarks under bench/micro/ are the documented exception;
- no cycle between packages (scenarios/ may use bench/measure.py, so bench/ never imports
  scenarios/).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "protocol",
    "namesrv",
    "controller",
    "broker",
    "client",
    "launcher",
    "cli",
    "scenarios",
    "bench",
    "dashboard",
    "proxy",
)
#: Per package: the project packages it may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset(),
    "namesrv": frozenset({"protocol"}),
    "controller": frozenset({"protocol"}),
    "broker": frozenset({"protocol"}),
    "client": frozenset({"protocol"}),
    "launcher": frozenset({"protocol", "client"}),
    "cli": frozenset(PACKAGES) - {"cli"},
    "scenarios": frozenset({"protocol", "client", "launcher", "bench"}),
    "bench": frozenset({"protocol", "client", "launcher"}),
    # The web dashboard sees the cluster over the wire, as any admin tool would.
    "dashboard": frozenset({"protocol", "client"}),
    # The gRPC proxy is one more client of the cluster: the SDK and the wire only.
    "proxy": frozenset({"protocol", "client"}),
}
#: Micro-benchmarks of one component (bench/micro/README): may also import that component.
MICRO_BENCH_EXTRA = frozenset({"broker", "controller", "namesrv"})


def _imported_packages(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                yield node.lineno, top


def _violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        allowed = ALLOWED[package]
        if path.is_relative_to(ROOT / "bench" / "micro"):
            allowed = allowed | MICRO_BENCH_EXTRA
        for line, imported in _imported_packages(path):
            if imported != package and imported not in allowed:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_follow_design(package: str) -> None:
    assert _violations(package) == []


def test_allowed_imports_have_no_cycle() -> None:
    # The rules themselves must not allow a cycle (so the tree cannot have one).
    def reaches(start: str, target: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt}))
            for nxt in ALLOWED[start]
        )

    assert [p for p in PACKAGES if reaches(p, p)] == []


def test_a_violation_is_reported(tmp_path: Path) -> None:
    # The checker must be able to fail: a client module importing the broker is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("from broker.server import Broker\nimport protocol.frame\n")
    assert list(_imported_packages(bad)) == [(1, "broker"), (2, "protocol")]
