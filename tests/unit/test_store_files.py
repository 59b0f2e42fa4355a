"""``reading``: a file that cannot be parsed becomes one line, ``<path>: <what is wrong>``."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.store.files import UnreadableFile, reading
from protocol.errors import MalformedBody, StorageError


@pytest.mark.parametrize(
    ("raised", "problem"),
    [
        (MalformedBody("not valid CBOR: error decoding map"), "not valid CBOR: error decoding map"),
        (StorageError("cannot load topic configs from {p}: bad"), "cannot load topic configs: bad"),
        (MalformedBody("{p}: delay offsets must map level to offset"), "delay offsets must map"),
        (ValueError("bad value in {p}"), "bad value"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "can't decode"),
        (PermissionError(13, "Permission denied"), "Permission denied"),
        (MalformedBody("a\nmultiline\n  message"), "a multiline message"),
    ],
)
def test_the_path_comes_first_and_once(tmp_path: Path, raised: Exception, problem: str) -> None:
    path = tmp_path / "config" / "topics.cbor"
    if isinstance(raised, MalformedBody | StorageError | ValueError) and not isinstance(
        raised, UnicodeDecodeError
    ):
        raised = type(raised)(str(raised).format(p=path))
    with pytest.raises(UnreadableFile) as info, reading(path):
        raise raised
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert text.count(str(path)) == 1 and "\n" not in text
    assert problem in text
    assert info.value.path == path


def test_an_unreadable_file_error_passes_through(tmp_path: Path) -> None:
    inner = UnreadableFile(tmp_path / "a", "bad")
    with pytest.raises(UnreadableFile) as info, reading(tmp_path / "b"):
        raise inner
    assert info.value is inner


def test_programming_errors_are_not_hidden(tmp_path: Path) -> None:
    with pytest.raises(KeyError), reading(tmp_path / "x"):
        raise KeyError("a bug, not a damaged file")
