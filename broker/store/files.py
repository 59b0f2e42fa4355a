"""Files a broker reads at start: the one error that names a file it cannot use.

Rules (issue 13 row 13: garbage in the epoch file gave a 157-line traceback naming the
file only on its last line):
- A file read at start that cannot be parsed (or read) raises ``UnreadableFile``, whose
  text is ``<path>: <what is wrong>`` on one line; ``rmq broker`` prints it after
  ``error:`` and exits non-zero. Nothing guesses a replacement for such a file.
- ``reading(path)`` wraps a loader: parse errors of any kind we raise or meet (our own
  ``RocketError``s, ``ValueError``/``UnicodeError``, ``OSError``: a loader that treats a
  missing file as empty catches that itself) become ``UnreadableFile``. The loader's own
  mention of the path is taken out of the message, so the path appears once, first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from protocol.errors import RocketError, StorageError


class UnreadableFile(StorageError):
    """A file read at start cannot be parsed or read; ``str()`` is ``<path>: <problem>``."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _problem(path: Path, exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split()) or type(exc).__name__
    for form in (f" from {path}", f" in {path}", f"{path}: "):
        text = text.replace(form, "")
    return text.replace(str(path), "the file").strip()


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Run a loader of ``path``; its parse or read failure becomes ``UnreadableFile``."""
    path = Path(path)
    try:
        yield
    except UnreadableFile:
        raise
    except (RocketError, ValueError, UnicodeError, OSError, RecursionError) as exc:
        raise UnreadableFile(path, _problem(path, exc)) from None
