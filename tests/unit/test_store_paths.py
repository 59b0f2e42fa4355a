"""The path guard: no name the store turns into a path leads outside its root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.store.paths import UnsafeName, child_path, name_problem, queue_path

#: Characters that make path tricks, mixed with ordinary ones.
_TRICKY = st.sampled_from(["/", "\\", "\0", ".", "..", "~", " ", "%", "|", "a", "é", "\udcff"])
NAMES = st.one_of(
    st.text(max_size=300),
    st.lists(_TRICKY, max_size=12).map("".join),
    st.text(alphabet="./\\", max_size=10),
)


@given(name=NAMES, queue_id=st.integers(min_value=-(2**31), max_value=2**31 - 1))
@settings(max_examples=500)
def test_no_name_escapes_the_root(
    tmp_path_factory: pytest.TempPathFactory, name: str, queue_id: int
) -> None:
    root = tmp_path_factory.getbasetemp() / "store" / "consumequeue"
    try:
        path = queue_path(root, name, queue_id)
    except UnsafeName:
        return
    # Accepted: exactly two plain components under the root, and it resolves there too.
    assert path.parent.parent == root
    assert path.name == str(queue_id) and path.parent.name == name
    assert path.resolve().is_relative_to(root.resolve())
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "../../x", "/etc", "a/b", "a\\b", "a\0b", "x" * 256, "é" * 128],
)
def test_refused_names(tmp_path: Path, name: str) -> None:
    assert name_problem(name) is not None
    with pytest.raises(UnsafeName):
        child_path(tmp_path, name)


@pytest.mark.parametrize("name", ["T", "%RETRY%g", "a|b", "...", "a..b", "x" * 255, ".hidden"])
def test_plain_names_pass(tmp_path: Path, name: str) -> None:
    assert child_path(tmp_path, name) == tmp_path / name


def test_a_negative_queue_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeName, match="negative"):
        queue_path(tmp_path, "T", -1)


def test_a_symlink_leading_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "T")
    with pytest.raises(UnsafeName, match="resolves outside"):
        queue_path(root, "T", 0)


def test_a_symlinked_root_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert queue_path(tmp_path / "link", "T", 3) == tmp_path / "link" / "T" / "3"
