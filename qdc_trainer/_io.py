"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one.

A file is written to a temporary file in the same folder, flushed and fsynced, then renamed over the
final path with :func:`os.replace` (atomic on POSIX and Windows when both lie on one filesystem). A
process killed during the write leaves at most a stray ``.<name>.*.tmp`` file, never a truncated
``<name>``. The file gets the mode of any new file (``0o666`` less the process umask), not the ``0o600`` of
:func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "atomic_savez", "read_json", "write_json"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on a clean exit, fsync it and rename it to ``path``.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes); ``open_kwargs`` go to :func:`open` (e.g. ``encoding``).
    If the body raises, the temporary file is removed and ``path`` is left as it was.

    >>> import json, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(folder, "state.json")) as f:
    ...     json.dump({"step": 3}, f)
    >>> sorted(os.listdir(folder))
    ['state.json']
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def atomic_savez(path: str | os.PathLike, **arrays: Any) -> None:
    """:func:`numpy.savez` to ``path`` exactly (no ``.npz`` appended), atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def write_json(path: str | os.PathLike, value: Any, indent: int = 1) -> None:
    """``value`` as JSON into ``path``, atomically (see :func:`atomic_write`)."""
    with atomic_write(path, encoding="utf-8") as f:
        json.dump(value, f, indent=indent)


def read_json(path: str | os.PathLike, hint: str = "") -> Any:
    """The JSON value in ``path``; a file that is not JSON (cut short, or not UTF-8) raises a ``ValueError`` that
    names it, followed by ``hint`` (what to do about it).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.json")
    >>> with open(path, "w") as f:
    ...     _ = f.write('[{"round": 1')
    >>> read_json(path, "delete it")
    Traceback (most recent call last):
        ...
    ValueError: .../rows.json is not valid JSON (cut short or damaged: ...); delete it
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{os.fspath(path)} is not valid JSON (cut short or damaged: {err})" + (f"; {hint}" if hint else "")
        ) from None


def _umask() -> int:
    """The process umask (read by setting it and putting it back: the OS offers no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable where the OS allows it (not on Windows)."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
