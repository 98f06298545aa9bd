"""Atomic writes: a file or directory appears whole under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from privet.errors import UsageError


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only when the block exits without error.

    The temporary file lives beside ``path`` (same file system, so the rename is atomic) and is removed
    if anything fails, so an interrupted write leaves the old file, or nothing, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``path`` when the block exits without error.

    ``path`` must not exist yet: a directory is never half-replaced, nor an existing one merged into.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path} already exists", "Choose a new directory.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        if path.exists() or path.is_symlink():  # appeared while we were writing: never replace it
            raise UsageError(f"{path} appeared while it was being written", "Choose a new directory.")
        tmp.rename(path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
